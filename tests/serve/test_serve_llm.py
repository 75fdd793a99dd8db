"""`ask` through the API with a real OpenAI-compatible LLM, and with one that never answers."""

from __future__ import annotations

import socket
import threading

import pytest

from tests.generate.test_llm_server import _start
from tests.serve.conftest import start_server, stop_server
from tests.serve.test_api import base, sse_events

pytestmark = [pytest.mark.slow]


def _setup(srv, tenant: str):
    srv.tenant(tenant)
    srv.collection(tenant, "docs")
    c = srv.admin()
    job = srv.upload(c, tenant, "docs", {"mars.txt": "Mars has two small moons named Phobos and Deimos.\n"})
    assert job["status"] == "succeeded"
    return c


@pytest.mark.llm
def test_ask_streams_llm_tokens_with_validated_citations(tmp_path_factory):
    proc, llm_url = _start(tmp_path_factory, "--n_ctx", "2048", "--chat_format", "chatml")
    srv = start_server(tmp_path_factory.mktemp("serve-llm"), {
        "RAGLINE_LLM__BASE_URL": llm_url, "RAGLINE_LLM__MODEL": "gemma", "RAGLINE_LLM__CONTEXT_WINDOW": "2048",
        "RAGLINE_LLM__MAX_TOKENS": "48", "RAGLINE_LLM__TEMPERATURE": "0"})  # greedy: the same reply every run
    try:
        c = _setup(srv, "llm")
        with c.stream("POST", base("llm") + "/ask", json={"question": "How many moons does Mars have?",
                                                          "stream": True}) as r:
            events = sse_events(r)
        kinds = [k for k, _ in events]
        assert kinds.count("token") >= 2, kinds  # the model's tokens arrive one event at a time
        assert kinds[-2:] == ["answer", "done"]
        answer = dict(events)["answer"]
        assert answer["generator"] == "gemma"
        # whatever the weak model wrote, every citation kept points at a retrieved source
        assert all(x["source"] == "mars.txt" for x in answer["citations"])
        plain = c.post(base("llm") + "/ask", json={"question": "Name the moons of Mars."})
        assert plain.status_code == 200 and plain.json()["generator"] == "gemma"
    finally:
        stop_server(srv)
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def silent_llm():
    """A TCP endpoint that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held, stop = [], threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    stop.set()
    t.join()
    for conn in held:
        conn.close()
    sock.close()


def test_an_llm_that_never_answers_times_out_as_a_json_error(tmp_path_factory, silent_llm):
    srv = start_server(tmp_path_factory.mktemp("serve-silent"), {
        "RAGLINE_LLM__BASE_URL": silent_llm, "RAGLINE_SERVE__LLM_TIMEOUT_S": "1.5"})
    try:
        c = _setup(srv, "silent")
        r = c.post(base("silent") + "/ask", json={"question": "How many moons does Mars have?"})
        assert r.status_code == 502
        err = r.json()["error"]
        assert err["code"] == "llm_unavailable" and "timed out" in err["message"].lower()
        assert "127.0.0.1" not in err["message"]  # the endpoint's address stays in the server log
        with c.stream("POST", base("silent") + "/ask", json={"question": "Moons of Mars?", "stream": True}) as s:
            events = sse_events(s)
        assert events[-1][0] == "error" and events[-1][1]["code"] == "llm_unavailable"
        # the server is still fine: search works
        assert c.post(base("silent") + "/query", json={"query": "Phobos"}).json()["hits"]
    finally:
        stop_server(srv)
