"""Retrieval and answers over a collection: ``query`` (hits) and ``ask`` (a cited answer, or a
server-sent event stream of it). Every retrieval carries the caller's principals as a store
prefilter, and cached answers are keyed by them."""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext

from fastapi import APIRouter, Depends
from sse_starlette.sse import EventSourceResponse

from ragline.config import ConfigError
from ragline.filters import FilterError
from ragline.generate.llm import LLMError
from ragline.rag import RAG, Ask
from ragline.retrieve.search import QueryError
from ragline.serve.collections import Collection
from ragline.serve.deps import Caller, collection_of, flow, ready, reader, server_of
from ragline.serve.errors import ApiError
from ragline.serve.schemas import AskIn, QueryIn, RetrievalIn, answer_json, hit_json
from ragline.serve.server import Server
from ragline.trace import Trace
from ragline.types import Answer

log = logging.getLogger("ragline.serve")
router = APIRouter()


def request(server: Server, col: Collection, who: Caller, text: str, k: int, body: RetrievalIn,
            documents: bool = False) -> tuple[RAG, Ask]:
    """The collection's RAG flow and the caller's checked request (its principals a prefilter)."""
    ready(server)
    rag = flow(server, col)
    try:
        return rag, rag.request(text, k=k, mode=body.mode, filter=body.filter,
                                aggregate="document" if documents else None, principals=who.principals,
                                rerank=body.rerank, rerank_depth=body.rerank_depth, transform=body.transform)
    except ConfigError as exc:  # a transformation that needs the LLM this server does not have
        raise ApiError(400, "invalid_request", str(exc)) from None
    except FilterError as exc:
        raise ApiError(400, "invalid_filter", str(exc)) from None
    except QueryError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None


@router.post("/v1/tenants/{tenant}/collections/{collection}/query", tags=["search"])
def query(body: QueryIn, col: Collection = Depends(collection_of), who: Caller = Depends(reader),
          server: Server = Depends(server_of)) -> dict:
    t0 = time.perf_counter()
    rag, ask = request(server, col, who, body.query, body.k, body, body.documents)
    trace = Trace() if body.trace else None
    hits = retrieve(server, rag, ask, trace)
    return {"query": body.query, "hits": [hit_json(col, i + 1, h) for i, h in enumerate(hits)],
            "took_ms": round((time.perf_counter() - t0) * 1000, 2), **({"trace": trace.json()} if trace else {})}


def retrieve(server: Server, rag: RAG, ask: Ask, trace: Trace | None) -> list:
    """The ask's hits; a query transformation's LLM failing is a 502, as for an answer."""
    try:
        return rag.retrieve(ask, trace)
    except LLMError as exc:
        raise ApiError(502, "llm_unavailable", llm_message(server, exc)) from None


def llm_message(server: Server, exc: Exception) -> str:
    """What a client learns of an LLM failure: the kind, never the endpoint's address or reply."""
    log.warning("LLM call failed: %s", exc)
    if "timed out" in str(exc).lower() or "timeout" in type(exc.__cause__ or exc).__name__.lower():
        return f"the language model did not answer within {server.settings.serve.llm_timeout_s:g} s (timed out)"
    return "the language model is unavailable; the error is in the server's log"


def event(kind: str, data: dict) -> dict:
    return {"event": kind, "data": json.dumps(data)}


@router.post("/v1/tenants/{tenant}/collections/{collection}/ask", tags=["search"])
def ask(body: AskIn, col: Collection = Depends(collection_of), who: Caller = Depends(reader),
        server: Server = Depends(server_of)):
    chosen = strategy_for(col, body.strategy)
    if chosen.name != "standard":
        rag, question = request(server, col, who, body.question, body.k, body)
        return strategy_ask(server, col, rag, question, chosen, body)
    key = (who.principals, body.question.strip(), body.k, body.mode, body.filter, body.rerank, body.rerank_depth,
           body.transform)
    version = col.write_version  # read before retrieval: a write after it makes this answer stale
    cached = None if body.trace else col.answers.get(key)  # a traced ask runs every stage
    if cached is not None:
        if not body.stream:
            return {**cached, "cached": True}
        return EventSourceResponse(iter([event("token", {"text": cached["answer"]}),
                                         event("answer", {**cached, "cached": True}), event("done", {})]), ping=15)
    rag, question = request(server, col, who, body.question, body.k, body)
    trace = Trace() if body.trace else None
    hits = retrieve(server, rag, question, trace)
    traced = (lambda: {"trace": trace.json()}) if trace else dict
    if not body.stream:
        try:
            with trace.stage("generate", len(hits)) if trace else nullcontext():
                answer = rag.answer(question, hits)
        except LLMError as exc:
            raise ApiError(502, "llm_unavailable", llm_message(server, exc)) from None
        out = answer_json(col, body.question, answer)
        col.answers.put(key, out, version)
        return {**out, "cached": False, **traced()}

    def events():
        try:
            for item in rag.stream(question, hits):
                if not isinstance(item, Answer):
                    yield event("token", {"text": item})
                    continue
                out = answer_json(col, body.question, item)
                col.answers.put(key, out, version)
                if trace:
                    yield event("trace", {"stages": trace.json()})
                yield event("answer", {**out, "cached": False, **traced()})
            yield event("done", {})
        except LLMError as exc:
            yield event("error", {"code": "llm_unavailable", "message": llm_message(server, exc)})
        except Exception:
            log.exception("ask stream failed")
            yield event("error", {"code": "internal", "message": "the answer failed; the error is in the server's log"})

    return EventSourceResponse(events(), ping=15)


def strategy_for(col: Collection, name: str | None):
    from ragline.agentic.base import StrategyError

    try:
        return col.engine.strategy(name)
    except (StrategyError, ConfigError) as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None


def strategy_ask(server: Server, col: Collection, rag: RAG, question: Ask, chosen, body):
    """An ask through a strategy (agentic/): its steps in the reply, or as SSE ``step`` events
    while it runs, then the answer. Not cached: a loop's steps are part of what was asked for."""
    import queue
    import threading

    from ragline.agentic.base import Steps

    if not body.stream:
        steps = Steps()
        try:
            answer = chosen.run(rag, question, steps)
        except LLMError as exc:
            raise ApiError(502, "llm_unavailable", llm_message(server, exc)) from None
        return {**answer_json(col, body.question, answer), "strategy": chosen.name, "steps": steps.as_list(),
                "cached": False}
    found: queue.Queue = queue.Queue()
    steps = Steps(on_step=lambda s: found.put(("step", s.as_dict())))

    def work() -> None:
        try:
            found.put(("answer", chosen.run(rag, question, steps)))
        except LLMError as exc:
            found.put(("error", {"code": "llm_unavailable", "message": llm_message(server, exc)}))
        except Exception:
            log.exception("strategy ask failed")
            found.put(("error", {"code": "internal", "message": "the answer failed; the error is in the server's log"}))

    threading.Thread(target=work, name="ragline-strategy", daemon=True).start()

    def events():
        while True:
            kind, item = found.get()
            if kind == "step":
                yield event("step", item)
                continue
            if kind == "answer":
                yield event("token", {"text": item.text})
                yield event("answer", {**answer_json(col, body.question, item), "strategy": chosen.name,
                                       "steps": steps.as_list(), "cached": False})
            else:
                yield event("error", item)
            yield event("done", {})
            return

    return EventSourceResponse(events(), ping=15)
