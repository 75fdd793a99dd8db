"""Endpoints in other services' wire formats, so that their clients can use this server's models:
``POST /v1/rerank`` (Cohere's shape, with the configured reranker, ``[rerank]``) and
``POST /v1/embeddings`` (OpenAI's shape, with the embedding model every collection shares).

Any valid API key may call them (``caller``: its rate limit applies); they read no collection.
The routes are plain ``def``s: FastAPI runs them in its thread pool, so a slow model call holds
a worker thread, never the event loop. Failures of a model or of an upstream rerank endpoint
are logged; a client learns the kind of failure, never the endpoint's address or reply.
"""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from ragline.config import ConfigError
from ragline.embed.base import EmbedError
from ragline.rerank.base import Reranker, RerankError
from ragline.serve.deps import Caller, caller, ready, server_of
from ragline.serve.errors import ApiError
from ragline.serve.server import Server

log = logging.getLogger("ragline.serve")
router = APIRouter()

MAX_RERANK_DOCUMENTS = 1000  # Cohere takes up to 10,000; ragline's rerank.depth is at most 1,000
MAX_DOCUMENT_CHARS = 32_000  # one document (or one embedding input), before the model's own window
MAX_QUERY_CHARS = 4000  # as /query and /ask
MAX_EMBED_INPUTS = 2048  # OpenAI's limit on inputs per request


# --------------------------------------------------------------------------- request bodies
class RerankDocIn(BaseModel):
    text: str


class RerankIn(BaseModel):
    """Cohere's rerank request (v2; v1 clients send the same fields). Fields this server does not
    use (``return_documents``, ``max_tokens_per_doc``, ...) are accepted and ignored; ``model`` is
    ignored too: the server's configured reranker answers."""

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    documents: list[str | RerankDocIn] = Field(
        description=f"at most {MAX_RERANK_DOCUMENTS} strings or {{'text': str}} objects")
    top_n: int | None = Field(None, ge=1, description="return only the best top_n (default: all)")
    model: str | None = None


class EmbeddingsIn(BaseModel):
    """OpenAI's embeddings request: text input only (token arrays are refused)."""

    input: str | list[str]
    model: str | None = Field(None, description="ignored: the server's embedding model answers")
    encoding_format: str | None = Field(None, description="only 'float' is served")


# --------------------------------------------------------------------------- shared
def model_error(exc: EmbedError, what: str) -> ApiError:
    """An embedding model's refusal as the client's error: an input over the model's window is
    the request's fault (400, the model's message says by how much); any other failure is logged."""
    if "window" in str(exc):
        return ApiError(400, "input_too_long", str(exc))
    log.warning("%s failed: %s", what, exc)
    return ApiError(502, "model_unavailable", f"{what} failed; the error is in the server's log")


# --------------------------------------------------------------------------- rerank
def configured_reranker(server: Server) -> Reranker:
    """The server's reranker, or the error that says how to configure one."""
    method = server.settings.rerank.method
    if method == "none":
        raise ApiError(501, "rerank_not_configured",
                       "this server has no reranker: rerank.method is 'none'; set it (RAGLINE_RERANK__METHOD="
                       "minilm, cross-encoder, http or llm) to serve /v1/rerank")
    ready(server)
    try:
        reranker = server.engine.reranker
    except (ConfigError, RerankError, EmbedError) as exc:
        log.error("the reranker (rerank.method=%s) could not be built: %s", method, exc)
        raise ApiError(503, "reranker_unavailable", f"the configured reranker (rerank.method '{method}') could "
                                                    "not be loaded; the error is in the server's log") from None
    assert reranker is not None  # method is not "none"
    return reranker


def public_name(server: Server, reranker: Reranker) -> str:
    """The reranker's name as clients see it: an HTTP reranker's name may hold its endpoint's
    host, which stays private (``http`` or ``http:<model>``)."""
    r = server.settings.rerank
    if r.method == "http":
        return f"http:{r.model}" if r.model else "http"
    return reranker.name


def document_texts(documents: list[str | RerankDocIn]) -> list[str]:
    """The documents' texts, checked against the size limits (a 422 that names the document)."""
    if not documents:
        raise ApiError(422, "invalid_request", "documents: give at least one document")
    if len(documents) > MAX_RERANK_DOCUMENTS:
        raise ApiError(422, "invalid_request", f"documents: {len(documents)} documents; at most "
                                               f"{MAX_RERANK_DOCUMENTS} may be reranked in one request")
    texts = [d if isinstance(d, str) else d.text for d in documents]
    for i, text in enumerate(texts):
        if len(text) > MAX_DOCUMENT_CHARS:
            raise ApiError(422, "invalid_request", f"documents[{i}] has {len(text)} characters; at most "
                                                   f"{MAX_DOCUMENT_CHARS} are taken (split it)")
    return texts


@router.post("/v1/rerank", tags=["compat"])
def rerank(body: RerankIn, who: Caller = Depends(caller), server: Server = Depends(server_of)) -> dict:
    """Cohere-shaped rerank: ``results`` best first, each an input ``index`` and its ``relevance_score``."""
    texts = document_texts(body.documents)
    reranker = configured_reranker(server)
    name = public_name(server, reranker)
    t0 = time.perf_counter()
    try:
        scored = reranker.rerank(body.query, texts, body.top_n)
    except EmbedError as exc:
        raise model_error(exc, f"the reranker '{name}'") from None
    except RerankError as exc:
        log.warning("rerank failed (%s): %s", reranker.name, exc)
        raise ApiError(502, "reranker_unavailable", f"the reranker '{name}' failed; "
                                                    "the error is in the server's log") from None
    return {"id": str(uuid.uuid4()),
            "results": [{"index": s.index, "relevance_score": s.score} for s in scored],
            "meta": {"reranker": name, "documents": len(texts),
                     "took_ms": round((time.perf_counter() - t0) * 1000, 2)}}


# --------------------------------------------------------------------------- embeddings
def embedding_inputs(body: EmbeddingsIn) -> list[str]:
    """The inputs as a list, checked against the size limits (a 422 that names the input)."""
    if body.encoding_format not in (None, "float"):
        raise ApiError(422, "invalid_request", f"encoding_format '{body.encoding_format}' is not served; "
                                               "use 'float' (the default)")
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    if not inputs:
        raise ApiError(422, "invalid_request", "input: give at least one text")
    if len(inputs) > MAX_EMBED_INPUTS:
        raise ApiError(422, "invalid_request", f"input: {len(inputs)} texts; at most {MAX_EMBED_INPUTS} "
                                               "may be embedded in one request")
    for i, text in enumerate(inputs):
        if not text:
            raise ApiError(422, "invalid_request", f"input[{i}] is empty")
        if len(text) > MAX_DOCUMENT_CHARS:
            raise ApiError(422, "invalid_request", f"input[{i}] has {len(text)} characters; at most "
                                                   f"{MAX_DOCUMENT_CHARS} are taken")
    return inputs


@router.post("/v1/embeddings", tags=["compat"])
def embeddings(body: EmbeddingsIn, who: Caller = Depends(caller), server: Server = Depends(server_of)) -> dict:
    """OpenAI-shaped embeddings: L2-normalised vectors of the server's model; an input over the
    model's window is refused (400), never truncated."""
    inputs = embedding_inputs(body)
    ready(server)
    embedder = server.embedder
    try:
        vectors = embedder.embed_documents(inputs)
    except EmbedError as exc:
        raise model_error(exc, "the embedding model") from None
    tokens = sum(embedder.tokenizer.count(t) for t in inputs)
    return {"object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)],
            "model": embedder.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
