"""Issue 13, item 8 (the low findings on `ragline serve`), over real HTTP against a real server:
keys are checked before a body is read, every non-upload body has the JSON limit, bad filters
are 400s (never 500s), a same-name upload reveals nothing of a document the caller cannot read,
names in any script stay apart, no server path reaches a client, /docs loads nothing from
elsewhere, and no response may be framed."""

from __future__ import annotations

import json
import re
import socket
import unicodedata
from urllib.parse import urlsplit

import httpx
import pytest

from ragline.serve.collections import safe_filename
from tests.serve.test_api import base

pytestmark = pytest.mark.slow

NOTE = "# Lanterns\n\nPaper lanterns float on the river during the autumn festival in {who}'s town.\n"


def keyed(server, tenant: str, *principals: str) -> httpx.Client:
    return server.client(server.key(tenant, *principals))


def collection(server, tenant: str) -> None:
    server.tenant(tenant)
    server.collection(tenant, "docs")


def raw_partial_post(server, path: str, headers: dict[str, str], declared: int, sent: int) -> tuple[int, dict, bytes]:
    """POST with a Content-Length of ``declared`` bytes but send only ``sent`` of them, then read
    whatever the server answers (status, headers, body). A server that waits for the rest of
    the body answers nothing and the read times out."""
    u = urlsplit(server.url)
    head = [f"POST {path} HTTP/1.1", f"Host: {u.hostname}:{u.port}", f"Content-Length: {declared}",
            *(f"{k}: {v}" for k, v in headers.items())]
    # a well-formed start of a multipart upload, so that a parser reading it waits for the rest
    part = (b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n")
    with socket.create_connection((u.hostname, u.port), timeout=60) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + part + b"x" * (sent - len(part)))
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = s.recv(65536)  # socket.timeout here: the server is still reading the body
            if not chunk:
                break
            data += chunk
    head_bytes, body = data.split(b"\r\n\r\n", 1)
    lines = head_bytes.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return int(lines[0].split()[1]), fields, body


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return int(v)
    return 0


# ------------------------------------------------------------------------------ 1. key before body
@pytest.mark.parametrize("auth", [{}, {"Authorization": "Bearer rl_nope_nope"}, {"X-API-Key": "garbage"}])
def test_a_request_without_a_valid_key_is_refused_before_its_body_is_read(server, tenant_name, auth):
    collection(server, tenant_name)
    status, headers, body = raw_partial_post(
        server, base(tenant_name) + "/documents",
        {"Content-Type": "multipart/form-data; boundary=xyz", **auth}, declared=30 * 2**20, sent=64 * 1024)
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
    assert headers["www-authenticate"] == "Bearer" and headers["x-frame-options"] == "DENY"


def test_no_key_gets_401_not_413(server):
    # the key is checked before the size: a client without one learns nothing of the limits
    status, _, body = raw_partial_post(server, "/v1/tenants", {"Content-Type": "application/json"},
                                       declared=30 * 2**20, sent=10)
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"


def test_a_revoked_key_is_refused_before_the_body(server, tenant_name):
    collection(server, tenant_name)
    key = server.key(tenant_name)
    assert server.admin().delete(f"/v1/tenants/{tenant_name}/keys/{key.split('_')[1]}").status_code == 200
    status, _, body = raw_partial_post(
        server, base(tenant_name) + "/documents",
        {"Content-Type": "multipart/form-data; boundary=xyz", "Authorization": f"Bearer {key}"},
        declared=30 * 2**20, sent=1024)
    assert status == 401 and json.loads(body)["error"]["code"] == "key_revoked"


# ------------------------------------------------------------------------------ 2. JSON limit
@pytest.mark.parametrize("ctype", ["application/x+json", "text/plain", "application/octet-stream", None])
def test_every_non_multipart_body_has_the_json_limit(server, tenant_name, ctype):
    collection(server, tenant_name)
    c = keyed(server, tenant_name)
    body = json.dumps({"query": "lanterns", "filter": None, "pad": "x" * (3 * 2**20)}).encode()
    r = c.post(base(tenant_name) + "/query", content=body, headers={"content-type": ctype} if ctype else {})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text
    assert "KiB" in r.json()["error"]["message"]  # the JSON limit, not the upload one


def test_a_multipart_upload_keeps_the_upload_limit(server, tenant_name):
    collection(server, tenant_name)
    r = keyed(server, tenant_name).post(base(tenant_name) + "/documents",
                                        files=[("files", ("big.bin", b"\0" * (3 * 2**20)))])
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_type"  # read whole, then judged


# ------------------------------------------------------------------------------ 3. filters
@pytest.fixture
def indexed(server, tenant_name):
    collection(server, tenant_name)
    c = keyed(server, tenant_name, "user:ann")
    job = server.upload(c, tenant_name, "docs", {"lanterns.md": NOTE.format(who="Ann")})
    assert job["status"] == "succeeded", job
    return tenant_name, c


NESTED = "year = 1"
for _i in range(14):
    NESTED = f"type = 'a' {'and' if _i % 2 else 'or'} ({NESTED})"


@pytest.mark.parametrize("flt, fragment", [
    ("year = 99999999999999999999", "out of the 64-bit range"),
    ("year = 3000000000", "out of range for field 'year' (32-bit"),
    ("page in [1, -2147483649]", "out of range for field 'page'"),
    ("year = " + "9" * 1900, "out of the 64-bit range"),
    (NESTED, "nests and/or groups 14 deep"),
    ("year in [" + ",".join(["1"] * 990) + "]", None),  # 990 values are fine
])
def test_bad_filters_are_400_invalid_filter(indexed, flt, fragment):
    tenant, c = indexed
    r = c.post(base(tenant) + "/query", json={"query": "lanterns", "filter": flt})
    if fragment is None:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_filter", r.text
    assert fragment in r.json()["error"]["message"]


@pytest.mark.parametrize("flt", [
    " or ".join(f"year = {1900 + i}" for i in range(80)) + " or year is null",
    " or ".join(f"type = 't{i}'" for i in range(60)) + " or type = 'markdown'",
    " and ".join(f"type != 't{i}'" for i in range(100)),
    " or ".join(f"(page = {i} and type != 'pdf')" for i in range(60)) + " or page is null",
])
def test_long_chains_run(indexed, flt):
    tenant, c = indexed
    r = c.post(base(tenant) + "/query", json={"query": "lanterns", "filter": flt})
    assert r.status_code == 200, r.text
    assert [h["source"] for h in r.json()["hits"]][:1] == ["lanterns.md"]
    for mode in ("dense", "sparse"):
        assert c.post(base(tenant) + "/query", json={"query": "lanterns", "filter": flt, "mode": mode}).json()["hits"]


# ------------------------------------------------------------------------------ 4. no existence oracle
def test_a_same_name_upload_reveals_nothing_of_a_hidden_document(server, tenant_name):
    collection(server, tenant_name)
    ann, bob = keyed(server, tenant_name, "user:ann"), keyed(server, tenant_name, "user:bob")
    assert server.upload(ann, tenant_name, "docs", {"plan.md": NOTE.format(who="Ann")}, acl="user:ann")[
        "status"] == "succeeded"
    # bob uploads the same name twice, and a name nobody used: every answer looks alike
    jobs = [server.upload(bob, tenant_name, "docs", {name: NOTE.format(who=who)})
            for name, who in (("plan.md", "Bob"), ("plan.md", "Bob again"), ("fresh.md", "Bob"))]
    for job in jobs:
        assert job["status"] == "succeeded" and not job["errors"] and len(job["documents"]) == 1, job
    mine = bob.get(base(tenant_name) + "/documents").json()["documents"]
    assert sorted(d["name"] for d in mine) == ["fresh.md", "plan.md"]  # the re-upload replaced his own
    plan = next(d for d in mine if d["name"] == "plan.md")
    text = bob.get(base(tenant_name) + f"/documents/{plan['id']}", params={"text": "true"}).json()["text"]
    assert "Bob again" in text
    # ann's document is untouched; she can read both (bob's is readable by everyone)
    seen = {d["name"]: [] for d in ann.get(base(tenant_name) + "/documents").json()["documents"]}
    for d in ann.get(base(tenant_name) + "/documents").json()["documents"]:
        seen[d["name"]].append(ann.get(base(tenant_name) + f"/documents/{d['id']}", params={"text": "true"}).json())
    assert sorted(d["acl"][0] for d in seen["plan.md"]) == ["*", "user:ann"]
    assert any("Ann's" in d["text"] for d in seen["plan.md"] if d["acl"] == ["user:ann"])
    # deleting bob's copy removes its original from disk; ann's stays
    assert bob.delete(base(tenant_name) + f"/documents/{plan['id']}").status_code == 200
    files = server.home / "serve" / "tenants" / tenant_name / "collections" / "docs" / "files"
    texts = [p.read_text() for p in files.rglob("plan.md")]
    assert texts == [NOTE.format(who="Ann")]


def test_an_upload_still_replaces_a_readable_document_of_that_name(server, tenant_name):
    collection(server, tenant_name)
    ann = keyed(server, tenant_name, "user:ann", "group:team")
    bob = keyed(server, tenant_name, "user:bob", "group:team")
    server.upload(ann, tenant_name, "docs", {"shared.md": NOTE.format(who="Ann")}, acl="group:team")
    job = server.upload(bob, tenant_name, "docs", {"shared.md": NOTE.format(who="Bob")})
    assert job["status"] == "succeeded", job
    docs = ann.get(base(tenant_name) + "/documents").json()["documents"]
    assert [d["name"] for d in docs] == ["shared.md"] and docs[0]["acl"] == ["group:team"]  # one, its ACL kept
    text = ann.get(base(tenant_name) + f"/documents/{docs[0]['id']}", params={"text": "true"}).json()["text"]
    assert "Bob's" in text


# ------------------------------------------------------------------------------ 5. names in any script
def test_names_in_any_script_stay_apart(server, tenant_name):
    collection(server, tenant_name)
    c = keyed(server, tenant_name)
    names = ["é漢字.md", "日本語.md", "Ελληνικά.md", "a<b.md", "a_b.md", "a>b.md"]
    job = server.upload(c, tenant_name, "docs", {n: NOTE.format(who=n) for n in names})
    assert job["status"] == "succeeded" and len(set(job["documents"])) == len(names), job
    shown = sorted(d["name"] for d in c.get(base(tenant_name) + "/documents").json()["documents"])
    assert {"é漢字.md", "日本語.md", "Ελληνικά.md", "a_b.md"} <= set(shown)
    assert len(set(shown)) == len(names)
    # a decomposed é (as a Mac sends it) is the same name as a composed one: it replaces it
    job = server.upload(c, tenant_name, "docs", {unicodedata.normalize("NFD", "é漢字.md"): NOTE.format(who="NFD")})
    assert len(c.get(base(tenant_name) + "/documents").json()["documents"]) == len(names)


@pytest.mark.parametrize("name, stored", [
    ("é漢字.md", "é漢字.md"),
    ("C:\\Users\\ann\\report (final).pdf", "report (final).pdf"),
    ("../../etc/passwd.txt", "passwd.txt"),
    ("Q&A notes, v2.md", "Q&A notes, v2.md"),
])
def test_safe_filename_keeps_letters_of_any_script(name, stored):
    assert safe_filename(name) == stored


@pytest.mark.parametrize("name", ["a<b.md", "evil\u202egpj.md", "tab\there.md", "nul\0.md", "con.md", ".hidden.md",
                                  "漢" * 150 + ".md", "x" * 300 + ".pdf", "ｗｉｄｅ\u3000space.md", "\udcff.md",
                                  "...", ""])
def test_safe_filename_changes_are_hashed_safe_and_stable(name):
    out = safe_filename(name)
    assert out and out == safe_filename(out)  # idempotent: the API applies it twice
    assert len(out.encode()) <= 200 and not out.startswith((".", " ")) and "/" not in out
    assert not any(unicodedata.category(ch)[0] == "C" or ch in '<>:"\\|?*' for ch in out)
    if name.endswith((".md", ".pdf")):
        assert out.endswith(name[-4:] if name.endswith(".pdf") else ".md")
    # a name that had to change carries a hash of the original: it cannot collide with the plain
    # name it resembles ('a<b.md' is 'a_b-<hash>.md', never 'a_b.md')
    assert re.search(r"-[0-9a-f]{8}(\.[a-z]+)?$", out), out


# ------------------------------------------------------------------------------ 6. no server paths
def test_registered_documents_show_relative_to_their_folder(server, tenant_name, tmp_path):
    folder = tmp_path / "handbook"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "tides.md").write_text("# Tides\n\nSpring tides follow the full and new moon.\n")
    (folder / "top.md").write_text("# Ferries\n\nThe ferry leaves the harbour at dawn.\n")
    single = tmp_path / "alone.txt"
    single.write_text("A lighthouse keeper logs every passing ship.\n")
    collection(server, tenant_name)
    admin = server.admin()
    for paths in ([str(folder)], [str(single)]):
        r = admin.post(base(tenant_name) + "/documents/register", json={"paths": paths})
        assert r.status_code == 202, r.text
        job = server.wait_job(admin, tenant_name, "docs", r.json()["job"]["id"])
        assert job["status"] == "succeeded", job
        assert str(tmp_path) not in json.dumps(job)
    c = keyed(server, tenant_name)
    listing = c.get(base(tenant_name) + "/documents")
    assert sorted(d["name"] for d in listing.json()["documents"]) == ["alone.txt", "handbook/sub/tides.md",
                                                                      "handbook/top.md"]
    hits = c.post(base(tenant_name) + "/query", json={"query": "spring tides moon"})
    answer = c.post(base(tenant_name) + "/ask", json={"question": "When do spring tides happen?"})
    assert hits.json()["hits"][0]["source"] == "handbook/sub/tides.md"
    for r in (listing, hits, answer):
        assert str(tmp_path) not in r.text


# ------------------------------------------------------------------------------ 7, 8. docs and headers
def test_docs_load_nothing_from_elsewhere(server):
    r = httpx.get(server.url + "/docs")
    assert r.status_code == 200 and r.json()["openapi"] == "/openapi.json"
    assert "http" not in r.text and "<script" not in r.text
    assert httpx.get(server.url + "/docs/oauth2-redirect").status_code == 404
    assert httpx.get(server.url + "/openapi.json").json()["paths"]


def test_no_response_may_be_framed(server, tenant_name):
    collection(server, tenant_name)
    responses = [httpx.get(server.url + p) for p in ("/", "/healthz", "/readyz", "/openapi.json", "/docs",
                                                      "/ui/app.js", "/no-such-page")]
    responses += [httpx.get(server.url + f"/v1/tenants/{tenant_name}/collections"),  # 401
                  server.admin().get(f"/v1/tenants/{tenant_name}/collections"),
                  keyed(server, tenant_name).post(base(tenant_name) + "/query", content=b"x" * 300_000)]  # 413
    for r in responses:
        assert r.headers["x-frame-options"] == "DENY", r.url
        assert r.headers["referrer-policy"] == "no-referrer", r.url
        assert len(r.headers.get_list("content-security-policy")) == 1, r.url
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], r.url
    ui = responses[0]
    assert ui.status_code == 200 and "default-src 'self'" in ui.headers["content-security-policy"]
