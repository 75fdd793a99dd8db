"""The HTTP reranker client and ragline's own /v1/rerank and /v1/embeddings, over real HTTP.

Against a real `ragline serve` (rerank.method=minilm) for the Cohere shape and the embeddings;
against a small real HTTP server in this module that speaks text-embeddings-inference's wire
format for the TEI shape and for the failures a remote endpoint can produce (TEI itself cannot
be reached offline)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from ragline.embed.openai import OpenAIEmbedder
from ragline.rerank.base import RerankError
from ragline.rerank.http import HTTPReranker
from tests.serve.conftest import free_port, start_server, stop_server

pytestmark = pytest.mark.slow

QUERY = "At what temperature does water boil on a mountain?"
DOCS = [
    "Mars has two small moons named Phobos and Deimos.",
    "The stock market closed higher on Friday after a volatile week.",
    "At high altitude the air pressure is lower, so water boils at a lower temperature on a mountain.",
    "A recipe for chocolate cake needs flour, sugar, eggs and cocoa.",
    "The violin has four strings tuned in perfect fifths.",
    "Penguins live in the southern hemisphere and cannot fly.",
    "Football is played by two teams of eleven players.",
]
RELEVANT = 2


# ------------------------------------------------------------------------------------ ragline serve
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A real `ragline serve` with the bundled MiniLM reranker, and a tenant key for it."""
    srv = start_server(tmp_path_factory.mktemp("rerank-serve"), {
        "RAGLINE_RERANK__METHOD": "minilm", "RAGLINE_SERVE__RATE_LIMIT_PER_MINUTE": "100000",
        "RAGLINE_SERVE__RATE_LIMIT_BURST": "10000"})
    srv.tenant("rr")
    yield srv, srv.key("rr", "user:alice")
    stop_server(srv)


def client(served, **kw) -> HTTPReranker:
    srv, key = served
    return HTTPReranker(srv.url + "/v1/rerank", api="cohere", model="ignored", api_key=key, **kw)


def test_cohere_client_against_ragline_ranks_the_relevant_document_first(served):
    scored = client(served).rerank(QUERY, DOCS)
    assert scored[0].index == RELEVANT
    assert sorted(s.index for s in scored) == list(range(len(DOCS)))
    assert [s.score for s in scored] == sorted((s.score for s in scored), reverse=True)


def test_top_n_keeps_the_best(served):
    whole = client(served).rerank(QUERY, DOCS)
    top = client(served).rerank(QUERY, DOCS, top_n=2)
    assert [s.index for s in top] == [s.index for s in whole[:2]]


def test_the_endpoint_speaks_cohere_shape(served):
    srv, key = served
    docs = [{"text": d} for d in DOCS[:3]] + DOCS[3:]  # Cohere v1 clients send objects
    r = srv.client(key).post("/v1/rerank", json={"model": "rerank-v3.5", "query": QUERY, "documents": docs,
                                                 "top_n": 3, "return_documents": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] and body["meta"]["reranker"] == "minilm" and body["meta"]["documents"] == len(DOCS)
    assert len(body["results"]) == 3 and body["results"][0]["index"] == RELEVANT
    assert set(body["results"][0]) == {"index", "relevance_score"}


def test_a_bad_key_is_refused(served):
    srv, _ = served
    r = srv.client("rl_not-a-key").post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    with pytest.raises(RerankError) as err:
        HTTPReranker(srv.url + "/v1/rerank", api_key="rl_not-a-key").rerank(QUERY, DOCS)
    assert "HTTP 401" in str(err.value) and "rerank.api_key" in str(err.value) and srv.url in str(err.value)
    assert "rl_not-a-key" not in str(err.value)
    assert srv.client(None).post("/v1/embeddings", json={"input": "x"}).status_code == 401


@pytest.mark.parametrize("documents, fragment", [
    ([], "at least one document"),
    (["a"] * 1001, "at most 1000"),
    (["short", "x" * 32_001], "documents[1] has 32001 characters"),
])
def test_rerank_sizes_are_checked(served, documents, fragment):
    srv, key = served
    r = srv.client(key).post("/v1/rerank", json={"query": QUERY, "documents": documents})
    assert r.status_code == 422 and fragment in r.json()["error"]["message"], r.text


def test_openai_embedder_against_ragline_matches_the_local_model(served, embedder):
    srv, key = served
    remote = OpenAIEmbedder(srv.url + "/v1", "ignored", embedder.tokenizer, api_key=key, batch_size=3)
    assert remote.dim == embedder.dim
    cos = np.sum(remote.embed_documents(DOCS) * embedder.embed_documents(DOCS), axis=1)
    assert cos.min() > 0.999


def test_embeddings_shape_and_usage(served, embedder):
    srv, key = served
    r = srv.client(key).post("/v1/embeddings", json={"input": "water boils", "model": "text-embedding-3-small"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == embedder.model_id
    assert [d["index"] for d in body["data"]] == [0] and body["data"][0]["object"] == "embedding"
    assert len(body["data"][0]["embedding"]) == embedder.dim
    n = embedder.tokenizer.count("water boils")
    assert body["usage"] == {"prompt_tokens": n, "total_tokens": n}


def test_an_input_over_the_window_is_refused_not_truncated(served, embedder):
    srv, key = served
    long = "water boils at altitude " * 200  # about 800 word pieces; the window is 254
    r = srv.client(key).post("/v1/embeddings", json={"input": ["short", long]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "input_too_long" and f"{embedder.max_tokens}-token window" in err["message"]


def test_a_server_without_a_reranker_says_which_setting_to_set(tmp_path):
    srv = start_server(tmp_path / "home")
    try:
        srv.tenant("t")
        key = srv.key("t", "user:bob")
        r = srv.client(key).post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        assert r.status_code == 501, r.text
        err = r.json()["error"]
        assert err["code"] == "rerank_not_configured" and "rerank.method" in err["message"]
        with pytest.raises(RerankError, match="HTTP 501"):
            HTTPReranker(srv.url + "/v1/rerank", api_key=key).rerank(QUERY, DOCS)
    finally:
        stop_server(srv)


# ------------------------------------------------------------------------------------ a TEI-speaking server
class TEI(BaseHTTPRequestHandler):
    """Text-embeddings-inference's /rerank wire format (Cohere's on other paths, to see what a
    Cohere-shaped client sends); ``mode`` makes it fail in one way.
    Scores a text by the query words it contains (a real, if simple, relevance function)."""

    mode = "ok"
    seen: list[tuple[str, dict, str]] = []  # (path, JSON body, Authorization header)

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        auth = self.headers.get("Authorization", "")
        TEI.seen.append((self.path, body, auth))
        if self.mode == "500":
            return self.reply(500, json.dumps({"error": f"model crashed for {auth}", "error_type": "Backend"}))
        if self.mode == "not json":
            return self.reply(200, "<html>gateway</html>")
        texts = body.get("texts", body.get("documents"))
        words = set(body["query"].lower().split())
        ranks = sorted(({"index": i, "score": float(len(words & set(t.lower().split())))}
                        for i, t in enumerate(texts)), key=lambda r: -r["score"])
        if self.mode == "missing score":
            ranks = [{"index": r["index"]} for r in ranks]
        elif self.mode == "repeated index":
            ranks = [{**r, "index": 0} for r in ranks]
        elif self.mode == "too few":
            ranks = ranks[:-1]
        if self.path != "/rerank" or self.mode == "cohere shape":  # /v1/rerank, /v2/rerank: Cohere's shape
            out: object = {"id": "x", "results": [{"index": r["index"], "relevance_score": r.get("score")}
                                                 for r in ranks]}
        else:
            out = ranks
        self.reply(200, json.dumps(out))

    def reply(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def tei_url():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), TEI)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def tei(tei_url):
    TEI.mode, TEI.seen = "ok", []
    return tei_url


def test_tei_shape_batched_and_merged(tei):
    rr = HTTPReranker(tei + "/rerank", api="tei", api_key="sk-secret", batch_size=3)
    assert rr.name == "http:127.0.0.1"
    scored = rr.rerank(QUERY, DOCS, top_n=4)
    assert scored[0].index == RELEVANT and len(scored) == 4
    assert [len(b["texts"]) for _, b, _ in TEI.seen] == [3, 3, 1]
    assert all(b["truncate"] is True and b["query"] == QUERY and "documents" not in b for _, b, _ in TEI.seen)
    assert {a for _, _, a in TEI.seen} == {"Bearer sk-secret"}
    whole = HTTPReranker(tei + "/rerank", api="tei", batch_size=100).rerank(QUERY, DOCS)
    assert [(s.index, s.score) for s in scored] == [(s.index, s.score) for s in whole[:4]]


def test_max_tokens_per_doc_goes_only_to_cohere_v2(tei):
    HTTPReranker(tei + "/v2/rerank", model="rerank-v3.5", max_tokens=300).rerank(QUERY, DOCS[:2])
    HTTPReranker(tei + "/v1/rerank", model="jina-reranker-v2").rerank(QUERY, DOCS[:2])
    (_, v2, auth), (_, v1, _) = TEI.seen
    assert v2 == {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS[:2], "return_documents": False,
                  "max_tokens_per_doc": 300}
    assert "max_tokens_per_doc" not in v1 and v1["model"] == "jina-reranker-v2" and auth == ""


@pytest.mark.parametrize("mode, api, fragment", [
    ("500", "tei", "answered HTTP 500"),
    ("not json", "tei", "not JSON: <html>gateway</html>"),
    ("missing score", "tei", "unexpected body (expected [{'index', 'score'}]"),
    ("repeated index", "tei", "returned 3 results for 3 documents; bad or repeated indices: [0]"),
    ("too few", "tei", "returned 2 results for 3 documents"),
    ("cohere shape", "tei", "set rerank.api to 'cohere'"),
    ("ok", "cohere", "set rerank.api to 'tei'"),
])
def test_endpoint_failures_are_clear_and_never_show_the_key(tei, mode, api, fragment):
    TEI.mode = mode
    rr = HTTPReranker(tei + "/rerank", api=api, api_key="sk-secret")
    with pytest.raises(RerankError) as err:
        rr.rerank(QUERY, DOCS[:3])
    msg = str(err.value)
    assert fragment in msg and f"{tei}/rerank" in msg
    assert "sk-secret" not in msg
    if mode == "500":
        assert "model crashed for Bearer ***" in msg


def test_an_unreachable_endpoint_names_the_setting_and_hides_url_credentials():
    port = free_port()
    with pytest.raises(RerankError, match=r"unreachable .*check rerank.url") as err:
        HTTPReranker(f"http://user:pw@127.0.0.1:{port}/rerank?key=k1", api="tei").rerank(QUERY, DOCS)
    assert f"http://127.0.0.1:{port}/rerank " in str(err.value)
    assert "pw" not in str(err.value) and "k1" not in str(err.value)


# ------------------------------------------------------------------------------------ ragline in between
@pytest.fixture(scope="module")
def chained(tmp_path_factory, tei_url):
    """A real `ragline serve` whose reranker is the TEI-speaking server (rerank.method=http):
    scores of a cross-encoder kind, one per pair, whatever else is in the request."""
    srv = start_server(tmp_path_factory.mktemp("rerank-chained"), {
        "RAGLINE_RERANK__METHOD": "http", "RAGLINE_RERANK__API": "tei", "RAGLINE_RERANK__URL": tei_url + "/rerank"})
    srv.tenant("rr")
    yield srv, srv.key("rr", "user:alice")
    stop_server(srv)


def test_batches_give_the_same_ordering_as_one_request(chained, tei):
    whole = client(chained, batch_size=100).rerank(QUERY, DOCS)
    assert len(TEI.seen) == 1
    srv, key = chained
    meta = srv.client(key).post("/v1/rerank", json={"query": QUERY, "documents": DOCS[:2]}).json()["meta"]
    assert meta["reranker"] == "http"  # not "http:127.0.0.1": the upstream's host stays private
    del TEI.seen[1:]
    batched = client(chained, batch_size=2).rerank(QUERY, DOCS)  # four requests, offsets 0, 2, 4, 6
    assert [len(b["texts"]) for _, b, _ in TEI.seen[1:]] == [2, 2, 2, 1]
    assert whole[0].index == RELEVANT
    assert [(s.index, s.score) for s in batched] == [(s.index, s.score) for s in whole]


def test_a_failing_upstream_reranker_is_a_502_that_hides_its_address(chained, tei):
    srv, key = chained
    TEI.mode = "500"
    r = srv.client(key).post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "reranker_unavailable" and "server's log" in err["message"]
    assert "127.0.0.1" not in r.text and "crashed" not in r.text
    assert "answered HTTP 500" in srv.log.read_text()


def test_no_documents_make_no_request(tei):
    assert HTTPReranker(tei + "/rerank", api="tei").rerank(QUERY, []) == []
    assert TEI.seen == []
