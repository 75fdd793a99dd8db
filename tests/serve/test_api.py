"""The HTTP API over real HTTP against a real `ragline serve` process."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.serve.conftest import ADMIN, start_server, stop_server

pytestmark = pytest.mark.slow

KETTLE = ("# Boiling\n\nAt high altitude the air pressure is lower, so water boils at a lower temperature. "
          "A kettle on a mountain therefore reaches its boiling point sooner but cooks food more slowly.\n")
MOONS = "Mars has two small moons named Phobos and Deimos. Phobos orbits closer to Mars than Deimos does.\n"


def sse_events(resp: httpx.Response) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in resp.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:") and name:
            events.append((name, json.loads(line[5:].strip())))
            name = None
    return events


def base(tenant: str, collection: str = "docs") -> str:
    return f"/v1/tenants/{tenant}/collections/{collection}"


@pytest.fixture
def acme(server, tenant_name):
    """A tenant with one collection holding two documents, and a key for it."""
    server.tenant(tenant_name)
    server.collection(tenant_name, "docs")
    key = server.key(tenant_name, "user:alice")
    c = server.client(key)
    job = server.upload(c, tenant_name, "docs", {"kettle.md": KETTLE, "mars.txt": MOONS})
    assert job["status"] == "succeeded", job
    return tenant_name, c


# ------------------------------------------------------------------------------------ health
def test_health_ready_and_openapi(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").json()["status"] == "ready"
    spec = httpx.get(server.url + "/openapi.json").json()
    paths = spec["paths"]
    for p in ("/v1/tenants", "/v1/tenants/{tenant}/collections/{collection}/documents",
              "/v1/tenants/{tenant}/collections/{collection}/query", "/v1/tenants/{tenant}/collections/{collection}/ask",
              "/v1/tenants/{tenant}/collections/{collection}/evaluations"):
        assert p in paths, p


# ------------------------------------------------------------------------------------ the main flow
def test_upload_list_get_query_and_ask(server, acme):
    tenant, c = acme
    docs = c.get(base(tenant) + "/documents").json()["documents"]
    assert sorted(d["name"] for d in docs) == ["kettle.md", "mars.txt"]
    assert all(d["acl"] == ["*"] and d["chunks"] >= 1 for d in docs)
    mars = next(d for d in docs if d["name"] == "mars.txt")
    full = c.get(base(tenant) + f"/documents/{mars['id']}", params={"text": "true"}).json()
    assert "Phobos" in full["text"] and full["sections"]

    hits = c.post(base(tenant) + "/query", json={"query": "moons of Mars", "k": 3}).json()["hits"]
    assert hits[0]["source"] == "mars.txt" and hits[0]["rank"] == 1
    s, e = hits[0]["span"]
    assert full["text"][s:e] == hits[0]["text"]  # provenance points into the parsed text
    assert set(hits[0]["scores"]) == {"dense", "sparse"}

    ans = c.post(base(tenant) + "/ask", json={"question": "Why does water boil at a lower temperature at high altitude?"})
    body = ans.json()
    assert ans.status_code == 200 and body["grounded"] and body["cached"] is False
    assert body["citations"] and body["citations"][0]["source"] == "kettle.md"
    assert "pressure" in body["answer"]
    again = c.post(base(tenant) + "/ask", json={"question": "Why does water boil at a lower temperature at high altitude?"})
    assert again.json()["cached"] is True and again.json()["answer"] == body["answer"]


def test_ask_streams_tokens_then_the_answer_with_citations(server, acme):
    tenant, c = acme
    with c.stream("POST", base(tenant) + "/ask", json={"question": "What are the moons of Mars?", "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    kinds = [k for k, _ in events]
    assert kinds[0] == "token" and kinds[-2:] == ["answer", "done"]
    answer = dict(events)["answer"]
    assert "".join(d["text"] for k, d in events if k == "token").strip() == answer["answer"]
    assert answer["citations"][0]["source"] == "mars.txt" and "Phobos" in answer["answer"]


def test_reingest_and_replacing_an_upload(server, acme):
    tenant, c = acme
    job = server.upload(c, tenant, "docs", {"mars.txt": "Mars has no rings. Its day lasts 24.6 hours.\n"})
    assert job["status"] == "succeeded" and job["report"]["replaced"] == 1
    docs = c.get(base(tenant) + "/documents").json()["documents"]
    assert sorted(d["name"] for d in docs) == ["kettle.md", "mars.txt"]  # replaced, not duplicated
    hits = c.post(base(tenant) + "/query", json={"query": "Phobos Deimos", "mode": "sparse"}).json()["hits"]
    assert hits == []
    mars = next(d for d in docs if d["name"] == "mars.txt")
    r = c.post(base(tenant) + f"/documents/{mars['id']}/reingest")
    assert r.status_code == 202
    job = server.wait_job(c, tenant, "docs", r.json()["job"]["id"])
    assert job["status"] == "succeeded" and job["report"]["skipped"] == 1  # unchanged bytes: nothing redone


def test_a_bad_file_is_reported_and_never_stops_the_rest(server, acme):
    tenant, c = acme
    job = server.upload(c, tenant, "docs", {"broken.pdf": b"%PDF-1.4 this is not really a pdf",
                                             "good.txt": "Saturn has prominent rings made of ice.\n",
                                             "notes.exe": b"MZ"})
    assert job["status"] == "partial"
    errors = {e["file"]: e["reason"] for e in job["errors"]}
    assert set(errors) == {"broken.pdf", "notes.exe"}
    assert "unsupported file type" in errors["notes.exe"]
    names = {d["name"] for d in c.get(base(tenant) + "/documents").json()["documents"]}
    assert "good.txt" in names and "broken.pdf" not in names


def test_concurrent_uploads_of_the_same_document_leave_one_whole_version(server, acme):
    tenant, c = acme
    versions = {i: f"Version {i} of the ledger says the vault code is code{i}x{i}.\n" for i in range(5)}
    jobs, errors = [], []

    def send(i: int) -> None:
        try:
            jobs.append(server.upload(server.client(c.headers["authorization"][7:]), tenant, "docs",
                                      {"ledger.txt": versions[i]}, wait=False))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(5)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(jobs) == 5
    done = [server.wait_job(c, tenant, "docs", j["id"]) for j in jobs]
    assert all(j["status"] == "succeeded" for j in done), done
    docs = [d for d in c.get(base(tenant) + "/documents").json()["documents"] if d["name"] == "ledger.txt"]
    assert len(docs) == 1
    text = c.get(base(tenant) + f"/documents/{docs[0]['id']}", params={"text": "true"}).json()["text"]
    assert text in {v.strip() for v in versions.values()}
    found = set()
    for i in versions:
        hits = c.post(base(tenant) + "/query", json={"query": f"code{i}x{i}", "mode": "sparse"}).json()["hits"]
        found |= {h["text"] for h in hits if f"code{i}x{i}" in h["text"]}
    assert found == {text.strip()}  # chunks of exactly one version are indexed


# ------------------------------------------------------------------------------------ auth
def test_keys_are_confined_to_their_tenant(server, tenant_name):
    other = tenant_name + "-b"
    for t in (tenant_name, other):
        server.tenant(t)
        server.collection(t, "docs")
    key = server.key(tenant_name)
    c = server.client(key)
    assert c.get(f"/v1/tenants/{tenant_name}/collections").status_code == 200
    for path in (f"/v1/tenants/{other}/collections", base(other) + "/documents", "/v1/tenants/absent/collections"):
        r = c.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    # a tenant key cannot manage tenants, keys or collections' deletion
    assert c.post("/v1/tenants", json={"name": "mine"}).json()["error"]["code"] == "forbidden"
    assert c.post(f"/v1/tenants/{tenant_name}/keys", json={}).status_code == 403
    assert c.delete(base(tenant_name)).status_code == 403
    assert c.post(base(tenant_name) + "/documents/register", json={"paths": ["/etc"]}).status_code == 403


def test_missing_invalid_and_revoked_keys(server, tenant_name):
    server.tenant(tenant_name)
    r = httpx.get(server.url + f"/v1/tenants/{tenant_name}/collections")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    assert server.client("rl_nope_nope").get(f"/v1/tenants/{tenant_name}/collections").status_code == 401
    assert server.client("garbage").get(f"/v1/tenants/{tenant_name}/collections").status_code == 401
    key = server.key(tenant_name)
    c = server.client(key)
    assert c.get(f"/v1/tenants/{tenant_name}/collections").status_code == 200
    kid = key.split("_")[1]
    assert server.admin().delete(f"/v1/tenants/{tenant_name}/keys/{kid}").status_code == 200
    r = c.get(f"/v1/tenants/{tenant_name}/collections")
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_revoked"
    listed = server.admin().get(f"/v1/tenants/{tenant_name}/keys").json()["keys"]
    assert listed[0]["revoked"] is True and "hash" not in listed[0] and "key" not in listed[0]


def test_keys_are_stored_hashed(server, tenant_name):
    server.tenant(tenant_name)
    key = server.key(tenant_name)
    secret = key.split("_")[2].encode()
    db = (server.home / "serve" / "control.sqlite").read_bytes()
    wal = server.home / "serve" / "control.sqlite-wal"
    assert secret not in db and (not wal.exists() or secret not in wal.read_bytes())
    assert ADMIN.encode() not in db


def test_only_an_upstream_key_may_assert_principals(server, tenant_name):
    server.tenant(tenant_name)
    server.collection(tenant_name, "docs")
    key = server.key(tenant_name, "user:alice")
    r = server.client(key, **{"X-Ragline-Principals": "group:admins"}).get(f"/v1/tenants/{tenant_name}/whoami")
    assert r.status_code == 403
    r = server.client(ADMIN, **{"X-Ragline-Principals": "user:bob"}).get(f"/v1/tenants/{tenant_name}/whoami")
    assert r.status_code == 403  # the admin administers; it never speaks for a user
    up = server.upstream_key(tenant_name)
    who = server.client(up, **{"X-Ragline-Principals": "user:bob, group:eng"}).get(
        f"/v1/tenants/{tenant_name}/whoami").json()
    assert not who["admin"] and who["kind"] == "upstream" and who["principals"] == ["group:eng", "user:bob"]
    bad = server.client(up, **{"X-Ragline-Principals": "user:'; drop"}).get(f"/v1/tenants/{tenant_name}/whoami")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_principal"


# ------------------------------------------------------------------------------------ bad requests
def test_bad_requests_get_json_errors_with_stable_codes(server, acme):
    tenant, c = acme
    cases = [
        (c.post(base(tenant) + "/query", content=b"{not json", headers={"content-type": "application/json"}),
         422, "invalid_request"),
        (c.post(base(tenant) + "/query", json={"query": ""}), 422, "invalid_request"),
        (c.post(base(tenant) + "/query", json={"query": "x", "mode": "magic"}), 422, "invalid_request"),
        (c.post(base(tenant) + "/query", json={"query": "x", "filter": "year >>= 3"}), 400, "invalid_filter"),
        (c.post(base("absent") + "/query", json={"query": "x"}), 404, "not_found"),
        (c.post(base(tenant, "absent") + "/query", json={"query": "x"}), 404, "not_found"),
        (c.get(base(tenant) + "/documents/0123abcd"), 404, "not_found"),
        (c.get(base(tenant) + "/jobs/nope"), 404, "not_found"),
        (c.post(base(tenant) + "/documents", files=[("files", ("a.exe", b"MZ"))]), 415, "unsupported_type"),
        (c.post(base(tenant) + "/documents", files=[("files", ("a.txt", b"x"))], data={"acl": "user:a b"}),
         400, "invalid_principal"),
        (c.post(base(tenant) + "/documents"), 422, "invalid_request"),
        (c.post(f"/v1/tenants/{tenant}/collections", json={"name": "Not OK!"}), 400, "invalid_name"),
        (c.post(f"/v1/tenants/{tenant}/collections", json={"name": "docs"}), 409, "conflict"),
        (c.get("/v1/no-such-thing"), 404, "not_found"),
        (c.put(f"/v1/tenants/{tenant}/collections"), 405, "method_not_allowed"),
        (c.post(base(tenant) + "/query", json={"query": "x" * 300_000}), 413, "too_large"),
    ]
    for resp, status, code in cases:
        assert resp.status_code == status, (resp.request.url, resp.text)
        err = resp.json()["error"]
        assert err["code"] == code and err["message"], resp.text
        assert "Traceback" not in resp.text and 'File "/' not in resp.text and "site-packages" not in resp.text


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """A server with tiny limits: 3 requests burst, 1 MiB requests, 0.1 MiB files."""
    srv = start_server(tmp_path_factory.mktemp("strict"), {
        "RAGLINE_SERVE__RATE_LIMIT_PER_MINUTE": "6", "RAGLINE_SERVE__RATE_LIMIT_BURST": "3",
        "RAGLINE_SERVE__MAX_REQUEST_MB": "1", "RAGLINE_INGEST__MAX_FILE_MB": "0.1"})
    yield srv
    stop_server(srv)


def test_rate_limit_per_key(strict_server):
    s = strict_server
    s.tenant("rl")
    k1, k2 = s.key("rl"), s.key("rl")
    c1 = s.client(k1)
    codes = [c1.get("/v1/tenants/rl/collections").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[-1] == 429
    r = c1.get("/v1/tenants/rl/collections")
    assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
    assert s.client(k2).get("/v1/tenants/rl/collections").status_code == 200  # another key is not held back


def test_oversized_requests_and_files(strict_server):
    s = strict_server
    s.tenant("big")
    s.collection("big", "docs")
    c = s.admin()
    r = c.post(base("big") + "/documents", files=[("files", ("huge.txt", b"a" * (2 * 2**20)))])
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    r = c.post(base("big") + "/documents", files=[("files", ("mid.txt", b"word " * 40_000)),
                                                   ("files", ("small.txt", b"small file about owls"))])
    assert r.status_code == 202
    job = s.wait_job(c, "big", "docs", r.json()["job"]["id"])
    assert [e["file"] for e in job["errors"]] == ["mid.txt"] and "limit" in job["errors"][0]["reason"]
    assert [d["name"] for d in c.get(base("big") + "/documents").json()["documents"]] == ["small.txt"]


def test_admin_registers_a_server_side_folder(server, tenant_name, tmp_path):
    folder = tmp_path / "shared-drive"
    (folder / "sub").mkdir(parents=True)
    (folder / "owls.md").write_text("# Owls\n\nBarn owls hunt at night over open fields.\n")
    (folder / "sub" / "bats.txt").write_text("Bats navigate by echolocation.\n")
    (folder / "skip.bin").write_bytes(b"\x00\x01")
    server.tenant(tenant_name)
    server.collection(tenant_name, "docs")
    admin = server.admin()
    r = admin.post(base(tenant_name) + "/documents/register", json={"paths": [str(folder)], "acl": ["group:zoo"]})
    assert r.status_code == 202, r.text
    job = server.wait_job(admin, tenant_name, "docs", r.json()["job"]["id"])
    assert job["status"] == "succeeded" and len(job["documents"]) == 2
    docs = admin.get(base(tenant_name) + "/documents").json()["documents"]
    # shown relative to the registered folder, never as a server path
    assert sorted(d["name"] for d in docs) == sorted(["shared-drive/owls.md", "shared-drive/sub/bats.txt"])
    assert all(d["acl"] == ["group:zoo"] for d in docs)
    zoo = server.client(server.key(tenant_name, "group:zoo"))
    other = server.client(server.key(tenant_name, "group:farm"))
    assert zoo.post(base(tenant_name) + "/query", json={"query": "echolocation"}).json()["hits"]
    assert other.post(base(tenant_name) + "/query", json={"query": "echolocation"}).json()["hits"] == []
    # deleting a registered document leaves the server's own file alone
    bats = next(d for d in docs if d["name"].endswith("bats.txt"))
    assert zoo.delete(base(tenant_name) + f"/documents/{bats['id']}").status_code == 200
    assert (folder / "sub" / "bats.txt").exists()
    r = admin.post(base(tenant_name) + "/documents/register", json={"paths": [str(tmp_path / "absent")]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_files"
