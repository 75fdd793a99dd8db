"""Against a real OpenAI-compatible server: llama-cpp-python serving Gemma 3 270M.

The model is weak, so these tests check the protocol and ragline's guarantees
(streaming, budgeting by the server's own token counts, citation validation, errors),
not the wording of its answers.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import LLM_N_CTX as N_CTX
from tests.conftest import free_port as _free_port
from tests.conftest import start_llama_server as _start

from ragline.generate.grounded import GroundedGenerator, new_boundary, render_messages
from ragline.generate.llm import ChatClient, LLMError
from ragline.types import Answer, Chunk, Hit

pytestmark = [pytest.mark.llm, pytest.mark.slow]


@pytest.fixture(scope="module")
def llm(llama_server):
    return llama_server  # the session's server (tests/conftest.py)


def passage(i: int, words: int = 60) -> Hit:
    text = f"Passage {i}. " + " ".join(f"fact{i}x{j}" for j in range(words)) + "."
    return Hit(Chunk(id=f"c{i}", doc_id=f"d{i}", source=f"/docs/{i}.txt", text=text, start=0, end=len(text),
                     ordinal=0), 1.0 / (i + 1))


def test_streaming_yields_pieces_then_a_validated_answer(llm):
    client = ChatClient(llm, "gemma")
    hits = [Hit(Chunk(id="m", doc_id="m", source="/docs/mars.txt", text="Mars has two moons, Phobos and Deimos.",
                      start=0, end=38, ordinal=0), 1.0)]
    gen = GroundedGenerator(client, N_CTX, 48, 0.0, lambda t: len(t.split()))
    items = list(gen.stream("How many moons does Mars have?", hits))
    pieces = [i for i in items if isinstance(i, str)]
    final = items[-1]
    assert isinstance(final, Answer) and final.generator == "gemma"
    assert len(pieces) >= 2, "tokens arrive as several server-sent events"
    assert all(1 <= c.n <= len(final.hits) for c in final.citations)
    assert gen._exact is True  # prompt sizes came from the server's tokenizer


def test_budget_keeps_the_prompt_inside_the_context_window(llm):
    client = ChatClient(llm, "gemma")
    hits = [passage(i) for i in range(40)]  # far more than fits in 1,024 tokens
    # control: everything at once overflows the server's window and it refuses
    msgs = render_messages("Which fact is first?", hits, new_boundary())
    with pytest.raises(LLMError) as exc:
        client.complete(msgs, max_tokens=32)
    assert "400" in str(exc.value) or "context" in str(exc.value).lower()
    gen = GroundedGenerator(client, N_CTX, 64, 0.0, lambda t: len(t.split()))
    answer = gen.answer("Which fact is first?", hits)
    assert 0 < len(answer.hits) < 40
    assert [h.chunk.id for h in answer.hits] == [f"c{i}" for i in range(len(answer.hits))]  # lowest ranks dropped


def test_server_errors_become_clear_llm_errors(llm):
    with pytest.raises(LLMError, match="answered 404"):
        ChatClient(llm.replace("/v1", "/nope"), "gemma").complete([{"role": "user", "content": "hi"}])
    with pytest.raises(LLMError, match="unreachable"):
        ChatClient(f"http://127.0.0.1:{_free_port()}/v1", "gemma", timeout_s=5).complete(
            [{"role": "user", "content": "hi"}])


def test_cli_ask_streams_through_a_configured_llm(llm, cli, corpus):
    cli.run("ingest", str(corpus))
    cli.env.update({"RAGLINE_LLM__BASE_URL": llm, "RAGLINE_LLM__MODEL": "gemma",
                    "RAGLINE_LLM__CONTEXT_WINDOW": str(N_CTX), "RAGLINE_LLM__MAX_TOKENS": "48"})
    data = cli.json("ask", "How many moons does Mars have?")
    assert data["generator"] == "gemma"
    assert all(c["n"] >= 1 for c in data["citations"])
    proc = cli.run("ask", "How many moons does Mars have?")
    assert proc.returncode == 0 and proc.stdout.strip()
    cli.env["RAGLINE_LLM__BASE_URL"] = f"http://127.0.0.1:{_free_port()}/v1"
    bad = cli.run("ask", "anything", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: LLM endpoint") and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def embed_server(tmp_path_factory):
    proc, base = _start(tmp_path_factory, "--n_ctx", "512", "--embedding", "true")
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def test_openai_compatible_embeddings_endpoint(embed_server, embedder):
    from ragline.embed.openai import OpenAIEmbedder

    # llama-cpp-python mixes up per-token rows across inputs of one request for models without
    # pooling, so this server is asked one text per request (embed.batch_size = 1)
    emb = OpenAIEmbedder(embed_server, "gemma", embedder.tokenizer, max_tokens=500, batch_size=1)
    vecs = emb.embed_documents(["Mars has two moons.", "Mars has two moons.", "Bread needs yeast."])
    assert vecs.shape == (3, emb.dim) and emb.dim > 100
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert np.allclose(vecs[0], vecs[1], atol=1e-5)
    from ragline.embed.base import EmbedError

    with pytest.raises(EmbedError, match="answered 404|unreachable"):
        OpenAIEmbedder(embed_server.replace("/v1", "/missing"), "gemma", embedder.tokenizer)


def test_an_answer_carries_the_endpoints_token_usage(llm):
    gen = GroundedGenerator(ChatClient(llm, "gemma"), N_CTX, 32, 0.0, lambda t: len(t.split()))
    answer = gen.answer("How many moons does Mars have?", [passage(0, 20)])
    u = answer.usage
    assert u is not None and u["calls"] == 1
    assert u["prompt_tokens"] > 20 and 0 < u["completion_tokens"] <= 32  # the server's own counts
    streamed = list(gen.stream("How many moons does Mars have?", [passage(0, 20)]))[-1]
    assert streamed.usage is None  # a stream reports no usage: unknown, not 0


def test_eval_answers_reports_the_answering_llms_tokens_and_cost(llm, cli, corpus, tmp_path):
    import json as _json

    cli.run("ingest", str(corpus))
    qa = tmp_path / "qa.jsonl"
    qa.write_text(_json.dumps({"id": "q1", "question": "How many moons does Mars have?"}) + "\n"
                  + _json.dumps({"id": "q2", "question": "What is in the tea guide?"}) + "\n")
    cli.env.update({"RAGLINE_LLM__BASE_URL": llm, "RAGLINE_LLM__MODEL": "gemma", "RAGLINE_LLM__CONTEXT_WINDOW": str(N_CTX),
                    "RAGLINE_LLM__MAX_TOKENS": "32", "RAGLINE_LLM__PRICE_INPUT_PER_1K": "0.5",
                    "RAGLINE_LLM__PRICE_OUTPUT_PER_1K": "1.5"})
    out = cli.json("eval", "answers", str(qa), "-k", "2", "--output", str(tmp_path / "items.json"))
    u = out["answer_usage"]
    assert u["calls"] == 2 and u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
    expected = (u["prompt_tokens"] * 0.5 + u["completion_tokens"] * 1.5) / 1000
    assert abs(u["cost"] - expected) < 1e-6 and abs(u["cost_per_query"] - expected / 2) < 1e-6
    items = _json.loads((tmp_path / "items.json").read_text())["items"]
    assert all(it["answer_usage"]["prompt_tokens"] > 0 for it in items)
