"""The trust boundaries of docs/security.md, each proved over real HTTP against a real server
(and, for the answer-cache race, against a real collection with the real model)."""

from __future__ import annotations

import os

import pytest

from tests.serve.conftest import ADMIN
from tests.serve.test_api import base

pytestmark = pytest.mark.slow


def _marker_doc(marker: str) -> str:
    return f"Field notes {marker}.\n\nThe quartz ledger entry {marker} records the basalt shipment of the week.\n"


def _hits_text(client, tenant: str, query: str) -> str:
    r = client.post(base(tenant) + "/query", json={"query": query, "k": 20})
    assert r.status_code == 200, r.text
    return " ".join(h["text"] + " " + h["source"] for h in r.json()["hits"])


# ------------------------------------------------------------------ registered folders and symlinks
def _folder_linking_out(tmp_path, marker: str):
    """A folder to register, holding ``link.md``: a symlink to a secret file outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text(_marker_doc(marker))
    folder = tmp_path / "registered"
    folder.mkdir()
    os.symlink(outside / "secret.md", folder / "link.md")
    return folder, outside


def test_a_symlink_out_of_a_registered_folder_is_refused_and_the_acl_holds(server, tenant_name, tmp_path):
    folder, outside = _folder_linking_out(tmp_path, "mksecretout")
    (folder / "inside.md").write_text(_marker_doc("mkinsidein"))
    os.symlink(outside, folder / "linkdir")  # a link to a folder is not followed either
    server.tenant(tenant_name)
    server.collection(tenant_name, "docs")
    admin = server.admin()
    r = admin.post(base(tenant_name) + "/documents/register", json={"paths": [str(folder)], "acl": ["group:eng"]})
    assert r.status_code == 202, r.text
    job = server.wait_job(admin, tenant_name, "docs", r.json()["job"]["id"])
    # the link is refused and reported; the job says so (not a silent success)
    assert job["status"] == "partial", job
    assert [e["file"] for e in job["errors"]] == ["registered/link.md"]
    assert "outside the registered folder" in job["errors"][0]["reason"]
    names = [d["name"] for d in admin.get(base(tenant_name) + "/documents").json()["documents"]]
    assert not any("secret" in n for n in names), names
    assert len(names) == 1

    # the caller's ACL holds for what was indexed: no fallback to everyone
    eng = server.client(server.key(tenant_name, "group:eng"))
    other = server.client(server.key(tenant_name, "user:mallory"))
    assert "mkinsidein" in _hits_text(eng, tenant_name, "quartz ledger basalt shipment")
    seen = _hits_text(other, tenant_name, "quartz ledger basalt shipment mksecretout")
    assert "mkinsidein" not in seen and "mksecretout" not in seen
    assert "mksecretout" not in _hits_text(eng, tenant_name, "quartz ledger mksecretout")


def test_registering_only_a_symlink_out_is_refused(server, tenant_name, tmp_path):
    folder, _ = _folder_linking_out(tmp_path, "mksecretonly")
    server.tenant(tenant_name)
    server.collection(tenant_name, "docs")
    r = server.admin().post(base(tenant_name) + "/documents/register", json={"paths": [str(folder)]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_files"
    assert "outside the registered folder" in r.json()["error"]["message"]


# ------------------------------------------------------------------ who may write what
def test_an_uploader_may_not_create_a_document_it_could_not_read(server, tenant_name):
    server.tenant(tenant_name)
    server.collection(tenant_name, "docs")
    bob = server.client(server.key(tenant_name, "user:bob"))
    r = bob.post(base(tenant_name) + "/documents", files=[("files", ("x.md", b"# X\n\nSome text.\n"))],
                 data={"acl": "group:secret"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert "role:writer" in r.json()["error"]["message"]
    # naming one of its own principals, or everyone, is fine
    assert server.upload(bob, tenant_name, "docs", {"y.md": "# Y\n\nBob's text.\n"},
                         acl="user:bob,group:secret")["status"] == "succeeded"
    # a writer key may create documents for others
    writer = server.client(server.key(tenant_name, "role:writer"))
    assert server.upload(writer, tenant_name, "docs", {"z.md": "# Z\n\nFor the secret group.\n"},
                         acl="group:secret")["status"] == "succeeded"


# ------------------------------------------------------------------ the admin and upstream keys
def test_the_admin_administers_and_reads_documents_only_when_it_asks(server, tenant_name):
    server.tenant(tenant_name)
    server.collection(tenant_name, "docs")
    key = server.client(server.key(tenant_name, "user:ann"))
    server.upload(key, tenant_name, "docs", {"n.md": _marker_doc("mkadminread")})
    plain = server.client(ADMIN)
    for method, path, body in [("post", "/query", {"query": "quartz ledger"}),
                               ("post", "/ask", {"question": "What does the quartz ledger record?"}),
                               ("get", "/evaluations", None)]:
        r = getattr(plain, method)(base(tenant_name) + path, **({"json": body} if body else {}))
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_read_not_requested", (path, r.text)
    doc = plain.get(base(tenant_name) + "/documents").json()["documents"][0]  # administration: names, ids
    assert plain.get(base(tenant_name) + f"/documents/{doc['id']}").status_code == 200
    r = plain.get(base(tenant_name) + f"/documents/{doc['id']}", params={"text": "true"})
    assert r.status_code == 403
    # asking explicitly reads everything
    assert "mkadminread" in _hits_text(server.admin(), tenant_name, "quartz ledger")


def test_an_upstream_key_is_a_tenant_bound_non_admin_that_fails_closed(server, tenant_name):
    server.tenant(tenant_name)
    server.collection(tenant_name, "docs")
    other = tenant_name + "-x"
    server.tenant(other)
    server.collection(other, "docs")
    up = server.upstream_key(tenant_name)
    bare = server.client(up)
    r = bare.get(f"/v1/tenants/{tenant_name}/whoami")
    assert r.status_code == 400 and r.json()["error"]["code"] == "principals_required"
    assert bare.post(base(tenant_name) + "/query", json={"query": "quartz"}).status_code == 400

    bob = server.client(up, **{"X-Ragline-Principals": "user:bob"})
    ann = server.client(up, **{"X-Ragline-Principals": "user:ann"})
    # no administration
    assert bob.post("/v1/tenants", json={"name": tenant_name + "-new"}).status_code == 403
    assert bob.get("/v1/tenants").status_code == 403
    assert bob.post(f"/v1/tenants/{tenant_name}/keys", json={"name": "k"}).status_code == 403
    assert bob.post(base(tenant_name) + "/documents/register", json={"paths": ["/etc"]}).status_code == 403
    assert bob.delete(base(tenant_name)).status_code == 403
    assert bob.get(base(other) + "/documents").status_code == 404  # bound to its tenant
    # the asserted user's ACL applies, and one user's jobs are not another's
    job = server.upload(bob, tenant_name, "docs", {"bob.md": _marker_doc("mkbobonly")}, acl="user:bob")
    assert job["status"] == "succeeded"
    assert "mkbobonly" in _hits_text(bob, tenant_name, "quartz ledger")
    assert "mkbobonly" not in _hits_text(ann, tenant_name, "quartz ledger mkbobonly")
    assert ann.get(base(tenant_name) + "/jobs").json()["jobs"] == []
    assert ann.get(base(tenant_name) + f"/jobs/{job['id']}").status_code == 404
    assert [j["id"] for j in bob.get(base(tenant_name) + "/jobs").json()["jobs"]] == [job["id"]]
    # an upstream key has no principals of its own
    r = server.admin().post(f"/v1/tenants/{tenant_name}/keys",
                            json={"name": "p", "kind": "upstream", "principals": ["group:x"]})
    assert r.status_code == 400


# ------------------------------------------------------------------ the answer cache under writes
@pytest.fixture
def collection(tmp_path, embedder):
    from ragline.config import Settings
    from ragline.serve.collections import Collection

    settings = Settings(home=tmp_path / "home")
    return Collection("t", "c", tmp_path / "col", settings, embedder)


def test_an_answer_in_flight_during_a_delete_is_not_cached(collection, tmp_path, embedder):
    from ragline.generate.extractive import ExtractiveAnswerer

    path = tmp_path / "kettle.md"
    path.write_text("# Kettles\n\nA kettle boils water faster at sea level than on a mountain.\n")
    collection.ingest([path], None)
    doc_id = collection.documents(None)[0].doc_id
    key = ((), "Where does a kettle boil faster?", 5, None, None)

    version = collection.write_version  # the ask reads the version, then retrieves and answers...
    hits = collection.search(collection.retriever.request("Where does a kettle boil faster?", k=5))
    answer = ExtractiveAnswerer(embedder).answer("Where does a kettle boil faster?", hits)
    assert "sea level" in answer.text
    collection.delete([doc_id])  # ...while the document is deleted
    assert collection.answers.put(key, {"answer": answer.text}, version) is False
    assert collection.answers.get(key) is None  # never served from the cache afterwards

    # an ACL change (a re-ingest with another ACL) is a write too
    path.write_text("# Kettles\n\nA kettle boils water faster at sea level than on a mountain.\n")
    collection.ingest([path], ("group:a",))
    version = collection.write_version
    collection.ingest([path], ("group:b",))
    assert collection.answers.put(key, {"answer": "x"}, version) is False
    # with no write in between, answers are cached
    version = collection.write_version
    assert collection.answers.put(key, {"answer": "y"}, version) is True
    assert collection.answers.get(key) == {"answer": "y"}


def test_an_evaluation_citing_a_document_deleted_during_its_run_is_not_kept(collection, tmp_path):
    for name in ("a.md", "b.md"):
        (tmp_path / name).write_text(f"# {name}\n\nThe heron count at the reservoir for {name}.\n")
    collection.ingest([tmp_path / "a.md", tmp_path / "b.md"], None)
    ids = {collection.display(r.source).rsplit("/", 1)[-1]: r.doc_id for r in collection.documents(None)}
    cited = {collection.display(r.source) for r in collection.documents(None)}
    out = tmp_path / "results" / "e1.json"

    version = collection.write_version  # the run starts...
    collection.delete([ids["a.md"]])  # ...a document it cites is deleted meanwhile
    gone = collection.save_result(out, {"items": []}, version, None, cited)
    assert [g.rsplit("/", 1)[-1] for g in gone] == ["a.md"] and not out.exists()
    # a write that does not touch what it cites does not discard it
    version = collection.write_version
    (tmp_path / "c.md").write_text("# c\n\nAnother note.\n")
    collection.ingest([tmp_path / "c.md"], None)
    b_only = {n for n in cited if n.endswith("b.md")}
    assert collection.save_result(out, {"items": []}, version, None, b_only) == [] and out.exists()
    # a document the caller can no longer read counts as gone
    version = collection.write_version
    collection.ingest([tmp_path / "b.md"], ("group:other",))
    out.unlink()
    from ragline.acl import visible_to as acl_clause

    assert collection.save_result(out, {"items": []}, version, acl_clause(["user:x"]), b_only)
    assert not out.exists()
