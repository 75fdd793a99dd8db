"""Tenancy, document ACLs and deletion, proved through every endpoint of a real server."""

from __future__ import annotations

import itertools
import json
import sqlite3
import string

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.serve.test_api import base, sse_events

pytestmark = pytest.mark.slow

PRINCIPALS = ["user:ann", "user:bob", "group:red", "group:blue"]
TOPIC = "zircon harvest planning"
_seq = itertools.count()


def doc_text(marker: str) -> str:
    return (f"Report {marker}. The shared topic is {TOPIC} for the northern valley.\n\n"
            f"The {TOPIC} detail {marker} appears only in this report, with its own figures.\n")


def visible_to(key_principals: set[str], acls: dict[str, list[str]]) -> set[str]:
    mine = key_principals | {"*"}
    return {name for name, acl in acls.items() if mine & set(acl)}


def everything_seen(server, c, tenant: str, question_markers: list[str]) -> tuple[set[str], list[str]]:
    """Document names and raw texts a key gets back from every read endpoint of its collection."""
    names: set[str] = set()
    texts: list[str] = []
    docs = c.get(base(tenant) + "/documents").json()["documents"]
    names |= {d["name"] for d in docs}
    for d in docs:
        full = c.get(base(tenant) + f"/documents/{d['id']}", params={"text": "true"}).json()
        texts.append(full["text"])
    queries = [TOPIC] + [f"detail {m}" for m in question_markers]
    for q in queries:
        for mode in ("hybrid", "dense", "sparse"):
            for documents in (False, True):
                hits = c.post(base(tenant) + "/query", json={"query": q, "k": 50, "mode": mode,
                                                             "documents": documents}).json()["hits"]
                names |= {h["source"] for h in hits}
                texts += [h["text"] for h in hits]
    for q in (f"What is the {TOPIC} detail?", f"Which report mentions {question_markers[0]}?"):
        a = c.post(base(tenant) + "/ask", json={"question": q, "k": 10}).json()
        names |= {x["source"] for x in a["citations"]}
        texts += [a["answer"]] + [x["snippet"] for x in a["citations"]]
        with c.stream("POST", base(tenant) + "/ask", json={"question": q, "k": 10, "stream": True}) as r:
            for kind, data in sse_events(r):
                if kind == "answer":
                    names |= {x["source"] for x in data["citations"]}
                    texts += [data["answer"]] + [x["snippet"] for x in data["citations"]]
                elif kind == "token":
                    texts.append(data["text"])
    jobs = c.get(base(tenant) + "/jobs").json()["jobs"]  # this key submitted none
    assert jobs == []
    cols = c.get(f"/v1/tenants/{tenant}/collections").json()["collections"]
    assert [x["documents"] for x in cols if x["name"] == "docs"] == [len(docs)]
    return names, texts


scenario = st.fixed_dictionaries({
    "acls": st.lists(st.lists(st.sampled_from(["*"] + PRINCIPALS), min_size=1, max_size=3, unique=True),
                     min_size=2, max_size=5),
    "keys": st.lists(st.lists(st.sampled_from(PRINCIPALS), max_size=3, unique=True), min_size=2, max_size=3),
})


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenario, letters=st.text(string.ascii_lowercase, min_size=6, max_size=6))
def test_no_read_crosses_a_tenant_or_acl_boundary(server, sc, letters):
    n = next(_seq)
    tenant, other = f"prop{n}", f"prop{n}-other"
    markers = {f"doc{i}.md": f"mk{letters}{n}q{i}" for i in range(len(sc["acls"]))}
    acls = {name: acl for name, acl in zip(markers, sc["acls"])}
    for t in (tenant, other):
        server.tenant(t)
        server.collection(t, "docs")
    admin = server.admin()
    for name, acl in acls.items():  # one upload per ACL
        job = server.upload(admin, tenant, "docs", {name: doc_text(markers[name])}, acl=",".join(acl))
        assert job["status"] == "succeeded", job
    foreign = f"fx{letters}{n}"  # another tenant's public document on the same topic
    assert server.upload(admin, other, "docs", {"doc0.md": doc_text(foreign)})["status"] == "succeeded"

    for prins in sc["keys"] + [[]]:
        c = server.client(server.key(tenant, *prins))
        names, texts = everything_seen(server, c, tenant, list(markers.values()))
        visible = visible_to(set(prins), acls)
        assert names == visible, (prins, acls)  # everything visible is found, nothing else
        hidden = [markers[x] for x in markers if x not in visible] + [foreign]
        assert not [m for m in hidden for t in texts if m in t], (prins, acls)
        # a hidden document is indistinguishable from an absent one
        for d in admin.get(base(tenant) + "/documents").json()["documents"]:
            r = c.get(base(tenant) + f"/documents/{d['id']}")
            assert r.status_code == (200 if d["name"] in visible else 404)
            if d["name"] not in visible:
                assert c.delete(base(tenant) + f"/documents/{d['id']}").status_code == 404
                assert c.post(base(tenant) + f"/documents/{d['id']}/reingest").status_code == 404
        assert c.get(base(other) + "/documents").status_code == 404

    # an upstream key speaking for a user (a trusted upstream) sees what that user sees
    prins = sc["keys"][0]
    asserted = server.client(server.upstream_key(tenant), **{"X-Ragline-Principals": ",".join(prins) or "user:nobody"})
    docs = asserted.get(base(tenant) + "/documents").json()["documents"]
    assert {d["name"] for d in docs} == visible_to(set(prins) or {"user:nobody"}, acls)


def test_evaluation_results_are_read_only_by_the_same_principals(server, tenant_name):
    server.tenant(tenant_name)
    server.collection(tenant_name, "docs")
    admin = server.admin()
    server.upload(admin, tenant_name, "docs", {"red.md": doc_text("mkredonly")}, acl="group:red")
    red, blue = server.client(server.key(tenant_name, "group:red")), server.client(server.key(tenant_name, "group:blue"))
    r = red.post(base(tenant_name) + "/evaluations",
                 json={"items": [{"id": "q1", "question": f"What is the {TOPIC} detail?", "relevant_ids": ["red.md"]}]})
    assert r.status_code == 202, r.text
    job = server.wait_job(red, tenant_name, "docs", r.json()["job"]["id"])
    assert job["status"] == "succeeded", job
    mine = red.get(base(tenant_name) + "/evaluations/latest").json()
    assert mine["items"][0]["ranked_documents"][0] == "red.md" and mine["retrieval"]["recall@5"] == 1.0
    assert blue.get(base(tenant_name) + "/evaluations").json()["evaluations"] == []
    assert blue.get(base(tenant_name) + "/evaluations/latest").status_code == 404
    # blue's own run retrieves nothing of red's
    r = blue.post(base(tenant_name) + "/evaluations", json={"items": [{"id": "q1", "question": f"{TOPIC} detail?"}]})
    server.wait_job(blue, tenant_name, "docs", r.json()["job"]["id"])
    theirs = blue.get(base(tenant_name) + "/evaluations/latest").json()
    assert theirs["items"][0]["ranked_documents"] == [] and "mkredonly" not in json.dumps(theirs)


def _disk_files_with(root, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_deleting_a_document_removes_every_trace(server, tenant_name):
    t = tenant_name
    server.tenant(t)
    server.collection(t, "docs")
    c = server.client(server.key(t, "user:ann"))
    secret = "quokkazebra"
    server.upload(c, t, "docs", {"secret.md": f"# Vault\n\nThe vault password is {secret} and it opens the east door.\n",
                                 "other.md": "# Garden\n\nThe garden gate opens with a brass key.\n"})
    root = server.home / "serve" / "tenants" / t / "collections" / "docs"
    question = "What is the vault password?"
    # fill every cache: answers (plain and streamed), an evaluation, a job record
    first = c.post(base(t) + "/ask", json={"question": question}).json()
    assert secret in first["answer"] and first["citations"][0]["source"] == "secret.md"
    assert c.post(base(t) + "/ask", json={"question": question}).json()["cached"] is True
    r = c.post(base(t) + "/evaluations", json={"items": [{"id": "v", "question": question}]})
    server.wait_job(c, t, "docs", r.json()["job"]["id"])
    assert secret in json.dumps(c.get(base(t) + "/evaluations/latest").json())
    cache = root / "index" / "embeddings.sqlite"
    before = sqlite3.connect(cache).execute("select count(*) from vectors").fetchone()[0]
    assert _disk_files_with(root, secret.encode())  # it is on disk now (the original, the index)

    doc = next(d for d in c.get(base(t) + "/documents").json()["documents"] if d["name"] == "secret.md")
    assert c.delete(base(t) + f"/documents/{doc['id']}").json() == {"deleted": doc["id"]}

    seen = json.dumps([
        c.get(base(t) + "/documents").json(),
        c.get(base(t) + f"/documents/{doc['id']}").json(),
        c.post(base(t) + "/query", json={"query": secret, "k": 50}).json()["hits"],  # (not the echoed query)
        c.post(base(t) + "/query", json={"query": "vault password", "k": 50, "mode": "dense"}).json(),
        c.post(base(t) + "/query", json={"query": "vault password east door", "mode": "sparse"}).json(),
        c.post(base(t) + "/ask", json={"question": question}).json(),
        c.get(base(t) + "/jobs").json(),
        c.get(base(t) + "/evaluations").json(),
        server.admin().get(base(t) + "/documents").json(),
    ])
    with c.stream("POST", base(t) + "/ask", json={"question": question, "stream": True}) as r:
        seen += json.dumps(sse_events(r))
    assert secret not in seen and "secret.md" not in seen and doc["id"] not in seen.replace(
        f'"no document \'{doc["id"]}\'"', "")
    assert c.get(base(t) + f"/documents/{doc['id']}").status_code == 404
    # nothing on disk: not the original, not a chunk, a full-text posting or an older table version
    assert _disk_files_with(root, secret.encode()) == []
    after = sqlite3.connect(cache).execute("select count(*) from vectors").fetchone()[0]
    remaining = sum(d["chunks"] for d in c.get(base(t) + "/documents").json()["documents"])
    assert after < before and after == remaining  # its cached embeddings are gone, the other's stay


def test_deleting_a_tenant_removes_it_everywhere(server, tenant_name):
    t = tenant_name
    server.tenant(t)
    server.collection(t, "docs")
    key = server.key(t)
    c = server.client(key)
    server.upload(c, t, "docs", {"a.md": "# Note\n\nThe heron nests by the reservoir.\n"})
    assert (server.home / "serve" / "tenants" / t).exists()
    assert server.admin().delete(f"/v1/tenants/{t}").json() == {"deleted": t}
    assert not (server.home / "serve" / "tenants" / t).exists()
    assert c.get(f"/v1/tenants/{t}/collections").status_code == 401  # its keys are gone
    assert t not in json.dumps(server.admin().get("/v1/tenants").json())
    server.tenant(t)  # the name can be reused, and starts empty
    server.collection(t, "docs")
    assert server.admin().get(base(t) + "/documents").json() == {"documents": []}
    hits = server.admin().post(base(t) + "/query", json={"query": "heron reservoir"}).json()["hits"]
    assert hits == []
