"""The retrieval pipeline's per-request options through the real CLI and a real `ragline serve`:
rerank, query transformation and the stage trace."""

from __future__ import annotations

import pytest

from tests.serve.test_api import acme, base  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.slow
QUESTION = "Why does a kettle take longer to boil water at high altitude?"


@pytest.fixture
def indexed(cli, corpus):
    cli.run("ingest", str(corpus))
    return cli


def test_query_trace_names_every_stage_and_rerank_reorders(indexed):
    plain = indexed.json("query", "boiling point altitude", "-k", "3", "--trace")
    assert [s["stage"] for s in plain["trace"]] == ["sparse", "dense", "fusion", "fetch"]
    fusion = plain["trace"][2]
    assert fusion["detail"]["method"] == "minmax" and fusion["out"] >= len(plain["hits"])
    reranked = indexed.json("query", "boiling point altitude", "-k", "3", "--rerank", "minilm",
                            "--rerank-depth", "5", "--trace")
    stage = reranked["trace"][-1]
    assert stage["stage"] == "rerank" and stage["in"] == 5 and stage["out"] == 3
    assert stage["detail"]["reranker"] == "minilm" and stage["detail"]["depth"] == 5
    scores = [h["score"] for h in reranked["hits"]]
    assert scores == sorted(scores, reverse=True)
    assert all("rerank" in h["scores"] and "retrieval" in h["scores"] for h in reranked["hits"])
    # without --trace there is no trace
    assert "trace" not in indexed.json("query", "boiling point altitude", "-k", "3")


def test_prf_transform_runs_offline_and_llm_transforms_name_the_setting(indexed):
    out = indexed.json("query", "kettle altitude", "-k", "3", "--transform", "prf", "--trace")
    stages = [s["stage"] for s in out["trace"]]
    assert stages[0] == "transform" and "fuse-queries" in stages
    assert out["trace"][0]["detail"]["queries"][0] == "kettle altitude" and out["hits"]
    asked = indexed.json("ask", QUESTION, "--transform", "prf", "--trace")
    assert asked["trace"][0]["stage"] == "transform" and asked["trace"][-1]["stage"] == "generate"
    assert asked["trace"][-1]["detail"]["answerer"] == "extractive" and asked["citations"]
    proc = indexed.run("ask", QUESTION, "--transform", "hyde", check=False)
    assert proc.returncode == 2
    assert "needs an LLM" in proc.stderr and "llm.base_url" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_rerank_option_is_a_clear_error(indexed):
    proc = indexed.run("ask", QUESTION, "--rerank", "minilm", "--rerank-depth", "0", check=False)
    assert proc.returncode == 2 and "rerank.depth" in proc.stderr and "Traceback" not in proc.stderr
    proc = indexed.run("query", "kettle", "--rerank", "magic", check=False)
    assert proc.returncode == 2 and "rerank.method" in proc.stderr


def test_api_trace_rerank_and_transform_fields(server, acme):  # noqa: F811 - the fixture
    tenant, c = acme
    r = c.post(f"{base(tenant)}/query", json={"query": "boiling kettle", "k": 2, "trace": True})
    assert r.status_code == 200, r.text
    assert [s["stage"] for s in r.json()["trace"]][-1] == "fetch"
    # this server has no reranker: asking for one is refused, naming the setting
    r = c.post(f"{base(tenant)}/query", json={"query": "boiling kettle", "rerank": True})
    assert r.status_code == 400 and "rerank.method" in r.json()["error"]["message"]
    # an LLM transformation on a server without an LLM: refused, naming the setting
    r = c.post(f"{base(tenant)}/ask", json={"question": QUESTION, "transform": "multi-query"})
    assert r.status_code == 400 and "llm.base_url" in r.json()["error"]["message"]
    r = c.post(f"{base(tenant)}/ask", json={"question": QUESTION, "transform": "prf", "trace": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["trace"][0]["stage"] == "transform" and body["trace"][-1]["stage"] == "generate"
    assert body["citations"]
    r = c.post(f"{base(tenant)}/query", json={"query": "x", "transform": "telepathy"})
    assert r.status_code == 422
