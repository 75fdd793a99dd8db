"""Several collections in one question, over real HTTP against a real `ragline serve` process:
collection profiles, routing by description, centroid, metadata rules and a (scripted, real-HTTP)
LLM, per-collection retrieval defaults, fusion, and the caller's ACL on every collection."""

from __future__ import annotations

import pytest

from ragline.testing.scripted_llm import ScriptedLLM
from tests.serve.conftest import start_server, stop_server

pytestmark = pytest.mark.slow

BREAD = ("# Bread\n\nKnead the dough for ten minutes, then let it rise in a warm kitchen until doubled. "
         "Bake the loaf at 220 degrees until the crust is golden brown.\n")
SOUP = "Simmer onions, carrots and celery in stock, season the soup with salt, pepper and fresh thyme.\n"
MARS = "Mars has two small moons named Phobos and Deimos. Phobos orbits closer to Mars than Deimos does.\n"
JUPITER = "Jupiter is the largest planet in the solar system; its Great Red Spot is a giant storm.\n"
SECRET = "The Mars sample return mission budget is classified: launch of the secret probe Ares-7 is in 2031.\n"
CODE = ("def quicksort(items):\n    \"\"\"Sort a list with quicksort.\"\"\"\n"
        "    if len(items) <= 1:\n"
        "        return items\n    pivot = items[0]\n"
        "    lower = [x for x in items[1:] if x < pivot]\n"
        "    return quicksort(lower) + [pivot] + quicksort([x for x in items[1:] if x >= pivot])\n")

PROFILES = {
    "cooking": {"description": "Recipes and kitchen techniques: baking bread, cooking soups, seasoning food.",
                "metadata": {"topic": "food", "language": "en", "year": 2020}},
    "astronomy": {"description": "Planets, moons and stars of the solar system; space science.",
                  "metadata": {"topic": "space", "language": "en", "year": 2024}},
    "code": {"description": "Python source code: sorting algorithms and utilities.",
             "metadata": {"topic": "software", "language": "python", "year": 2024},
             "retrieve": {"mode": "sparse", "k": 3}},
}


def col(tenant: str, name: str) -> str:
    return f"/v1/tenants/{tenant}/collections/{name}"


@pytest.fixture(scope="module")
def library(server, tmp_path_factory):
    """A tenant with three collections (cooking, astronomy, code), a reader key (alice), a key
    that may read a restricted document (bob) and a writer key, with every profile set."""
    tenant = "routing"
    server.tenant(tenant)
    for name in PROFILES:
        server.collection(tenant, name)
    admin = server.admin()
    for name, files in (("cooking", {"bread.md": BREAD, "soup.txt": SOUP}),
                        ("astronomy", {"mars.txt": MARS, "jupiter.txt": JUPITER}), ("code", {"sort.py": CODE})):
        assert server.upload(admin, tenant, name, files)["status"] == "succeeded"
    secret = server.upload(admin, tenant, "astronomy", {"secret.txt": SECRET}, acl="user:bob")
    assert secret["status"] == "succeeded"
    writer = server.client(server.key(tenant, "user:wendy", "role:writer"))
    for name, profile in PROFILES.items():
        r = writer.put(col(tenant, name) + "/profile", json=profile)
        assert r.status_code == 200, r.text
    alice, bob = (server.client(server.key(tenant, who)) for who in ("user:alice", "user:bob"))
    return tenant, alice, bob, writer


def query(client, tenant: str, **body):
    r = client.post(f"/v1/tenants/{tenant}/query", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def stage(out: dict, name: str) -> list[dict]:
    return [s for s in out["trace"] if s["stage"] == name]


# ------------------------------------------------------------------------------------ profiles
def test_profile_needs_write_rights_and_reads_back(server, library):
    tenant, alice, _, writer = library
    got = alice.get(col(tenant, "code") + "/profile").json()
    assert got["collection"] == "code" and got["retrieve"] == {"mode": "sparse", "k": 3}
    assert got["metadata"] == PROFILES["code"]["metadata"] and got["description"].startswith("Python source")
    r = alice.put(col(tenant, "code") + "/profile", json={"description": "mine now"})
    assert r.status_code == 403 and "role:writer" in r.json()["error"]["message"]
    assert alice.get(col(tenant, "code") + "/profile").json()["description"].startswith("Python source")
    assert writer.put(col(tenant, "code") + "/profile", json={"retrieve": {"mode": "fuzzy"}}).status_code == 422
    assert writer.put(col(tenant, "nope") + "/profile", json={}).status_code == 404
    server.tenant("routing-other")
    other = server.client(server.key("routing-other", "user:eve"))
    assert other.get(col(tenant, "code") + "/profile").status_code == 404


# ------------------------------------------------------------------------------------ routing
def test_embedding_routing_sends_a_mars_question_to_astronomy(library):
    tenant, alice, _, _ = library
    out = query(alice, tenant, query="How many moons does Mars have?", route="embedding", max_collections=1,
                trace=True)
    assert out["route"]["chosen"] == ["astronomy"]
    assert out["hits"] and {h["collection"] for h in out["hits"]} == {"astronomy"}
    assert out["hits"][0]["source"] == "mars.txt"
    assert out["hits"][0]["document_url"] == f"/v1/tenants/{tenant}/collections/astronomy/documents/" \
                                             + out["hits"][0]["document_id"]
    (routed,) = stage(out, "route")
    scores = {r["collection"]: r for r in routed["detail"]["routes"]}
    assert set(scores) == {"cooking", "astronomy", "code"}
    assert scores["astronomy"]["chosen"] and scores["astronomy"]["reason"] == "description similarity"
    assert scores["astronomy"]["score"] > scores["cooking"]["score"] and not scores["cooking"]["chosen"]
    assert [s["detail"]["collection"] for s in stage(out, "retrieve")] == ["astronomy"]


def test_centroid_routing_without_descriptions(server, tenant_name):
    server.tenant(tenant_name)
    admin = server.admin()
    for name, files in (("kitchen", {"bread.md": BREAD, "soup.txt": SOUP}), ("sky", {"mars.txt": MARS})):
        server.collection(tenant_name, name)
        assert server.upload(admin, tenant_name, name, files)["status"] == "succeeded"
    alice = server.client(server.key(tenant_name, "user:alice"))
    out = query(alice, tenant_name, query="Which moons orbit the red planet?", route="embedding", max_collections=1)
    assert out["route"]["chosen"] == ["sky"]
    assert all(r["reason"].startswith("centroid similarity (no description)") for r in out["route"]["routes"])
    out = query(alice, tenant_name, query="How long should bread dough rise?", max_collections=1)
    assert out["route"]["chosen"] == ["kitchen"] and out["hits"][0]["source"] == "bread.md"


def test_rules_routing_by_metadata(library):
    tenant, alice, _, _ = library
    out = query(alice, tenant, query="sort a list", route="rules", rules=[{"field": "language", "equals": "python"}])
    assert out["route"]["chosen"] == ["code"] and {h["collection"] for h in out["hits"]} == {"code"}
    out = query(alice, tenant, query="anything", route="rules", max_collections=5,
                rules=[{"field": "year", "gte": 2024}, {"field": "topic", "not_equals": "software"}])
    assert out["route"]["chosen"] == ["astronomy"]
    bad = alice.post(f"/v1/tenants/{tenant}/query", json={"query": "x", "route": "rules",
                                                          "rules": [{"field": "year", "gte": "new"}]})
    assert bad.status_code == 400 and "takes a number" in bad.json()["error"]["message"]


def test_each_collection_is_searched_with_its_own_retrieval_defaults(library):
    tenant, alice, _, _ = library
    out = query(alice, tenant, query="quicksort pivot", route="all", k=10, trace=True)
    modes = {s["detail"]["collection"]: (s["detail"]["mode"], s["detail"]["k"]) for s in stage(out, "retrieve")}
    assert modes == {"code": ("sparse", 3), "cooking": ("hybrid", 10), "astronomy": ("hybrid", 10)}
    code_hits = [h for h in out["hits"] if h["collection"] == "code"]
    assert code_hits and all(set(h["scores"]) == {"sparse"} for h in code_hits)
    (fused,) = stage(out, "fuse-collections")
    assert fused["detail"] == {"method": "rrf", "lists": 3}
    assert [h["rank"] for h in out["hits"]] == list(range(1, len(out["hits"]) + 1))


def test_a_document_the_caller_may_not_read_never_appears(library):
    tenant, alice, bob, _ = library
    question = "What is the budget of the secret Mars sample return probe?"
    for route in ("all", "embedding"):
        out = query(alice, tenant, query=question, route=route, collections=["astronomy", "cooking"], k=20)
        assert all(h["source"] != "secret.txt" and "Ares-7" not in h["text"] for h in out["hits"]), route
    assert any(h["source"] == "secret.txt" for h in query(bob, tenant, query=question, route="all")["hits"])
    r = alice.post(f"/v1/tenants/{tenant}/ask", json={"question": question, "route": "all", "k": 10})
    assert r.status_code == 200 and "Ares-7" not in r.text


def test_ask_answers_over_the_fused_collections_with_labelled_citations(library):
    tenant, alice, _, _ = library
    r = alice.post(f"/v1/tenants/{tenant}/ask", json={"question": "What are the names of the moons of Mars?",
                                                      "route": "embedding", "trace": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["grounded"] and "Phobos" in body["answer"] and body["route"]["chosen"][0] == "astronomy"
    cite = body["citations"][0]
    assert cite["collection"] == "astronomy" and cite["source"] == "mars.txt"
    assert cite["document_url"].startswith(f"/v1/tenants/{tenant}/collections/astronomy/documents/")
    assert [s["stage"] for s in body["trace"]][0] == "route" and body["trace"][-1]["stage"] == "generate"


def test_unknown_or_foreign_collections_are_404(server, library):
    tenant, alice, _, _ = library
    r = alice.post(f"/v1/tenants/{tenant}/query", json={"query": "x", "collections": ["astronomy", "ghost"]})
    assert r.status_code == 404 and "ghost" in r.json()["error"]["message"]
    server.tenant("routing-foreign")
    eve = server.client(server.key("routing-foreign", "user:eve"))
    assert eve.post(f"/v1/tenants/{tenant}/query", json={"query": "moons"}).status_code == 404
    assert eve.post(f"/v1/tenants/{tenant}/ask", json={"question": "moons"}).status_code == 404
    # the admin reads documents only when it asks to, as on the per-collection routes
    assert server.client().post(f"/v1/tenants/{tenant}/query", json={"query": "moons"}).status_code == 403
    assert server.client().post(f"/v1/tenants/{tenant}/query", json={"query": "moons", "route": "llm"}).status_code \
        == 403


def test_llm_routing_without_a_model_is_a_clear_400(library):
    tenant, alice, _, _ = library
    r = alice.post(f"/v1/tenants/{tenant}/query", json={"query": "moons", "route": "llm"})
    assert r.status_code == 400 and "llm.base_url" in r.json()["error"]["message"]


# ------------------------------------------------------------------------------------ LLM routing
def test_llm_routing_picks_what_the_model_says_and_falls_back_on_garbage(tmp_path_factory):
    replies = ['{"collections": ["astronomy"]}', "I am not sure what you mean."]

    def script(request: dict) -> str:
        if "route a user's question" in request["messages"][0]["content"]:
            return replies.pop(0)
        return "Mars has two moons, Phobos and Deimos [1]."

    with ScriptedLLM(script) as llm:
        srv = start_server(tmp_path_factory.mktemp("serve-route-llm"), {"RAGLINE_LLM__BASE_URL": llm.url})
        try:
            srv.tenant("lr")
            admin = srv.admin()
            for name, files in (("cooking", {"bread.md": BREAD}), ("astronomy", {"mars.txt": MARS})):
                srv.collection("lr", name)
                assert srv.upload(admin, "lr", name, files)["status"] == "succeeded"
                assert admin.put(col("lr", name) + "/profile", json=PROFILES[name]).status_code == 200
            alice = srv.client(srv.key("lr", "user:alice"))
            out = query(alice, "lr", query="How many moons does Mars have?", route="llm", trace=True)
            assert out["route"]["chosen"] == ["astronomy"] and "fallback" not in out["route"]
            assert {h["collection"] for h in out["hits"]} == {"astronomy"}
            sent = llm.requests[0]["messages"][1]["content"]
            assert "| astronomy: Planets, moons" in sent and "| How many moons does Mars have?" in sent

            r = alice.post("/v1/tenants/lr/ask", json={"question": "How many moons does Mars have?", "route": "llm",
                                                       "trace": True})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["route"]["chosen"] == ["astronomy", "cooking"]  # every collection, in name order
            assert "named no listed collection" in body["route"]["fallback"]
            (routed,) = [s for s in body["trace"] if s["stage"] == "route"]
            assert "fallback" in routed["detail"]
            assert body["generator"] != "extractive" and "Phobos" in body["answer"]  # the chat model wrote it
            assert body["citations"] and {c["collection"] for c in body["citations"]} <= {"cooking", "astronomy"}
        finally:
            stop_server(srv)


def test_the_filter_applies_in_every_collection(library):
    tenant, alice, _, _ = library
    out = query(alice, tenant, query="moons and bread", route="all", filter='source contains "mars"')
    assert out["hits"] and {h["source"] for h in out["hits"]} == {"mars.txt"}
    bad = alice.post(f"/v1/tenants/{tenant}/query", json={"query": "x", "route": "all", "filter": "year >>= 3"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_filter"
