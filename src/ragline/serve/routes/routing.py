"""Several collections in one question: collection profiles (description, metadata, retrieval
defaults) and the tenant-wide ``query`` and ``ask`` that route a question to the collections
most likely to answer it (``ragline.route.router``), search each with its own profile's
retrieval defaults under the caller's principals, and fuse the hit lists (reciprocal rank
fusion, each hit labelled with its collection).

Every collection is reached through ``Server.collection`` (an unknown name is a 404) and
searched through its own RAG flow with the caller's principals as a prefilter, exactly as the
per-collection routes do; a centroid used for routing covers only the documents the caller may
read. Multi-collection answers are not cached (the answer cache is per collection).
"""

from __future__ import annotations

import logging
import time
import weakref
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, field_validator

from ragline.acl import WRITER_ROLE
from ragline.config import ConfigError
from ragline.filters import FilterError
from ragline.generate.llm import ChatClient, LLMError
from ragline.retrieve.multi import fuse_rrf
from ragline.retrieve.search import QueryError
from ragline.route.router import (CentroidCache, DescriptionVectors, Routing, RouteError, Target, centroid,
                                  document_sums, parse_rules, route)
from ragline.serve.collections import Collection
from ragline.serve.deps import Caller, collection_of, control_call, flow, ready, reader, server_of, tenant_caller
from ragline.serve.errors import ApiError
from ragline.serve.routes.search import llm_message, retrieve
from ragline.serve.schemas import answer_json, hit_json
from ragline.serve.server import Server
from ragline.trace import Trace, maybe
from ragline.types import Answer, Hit

log = logging.getLogger("ragline.serve")
router = APIRouter()

MAX_METADATA = 50  # fields in one profile's metadata


# --------------------------------------------------------------------------- request bodies
class RetrieveDefaults(BaseModel):
    mode: Literal["hybrid", "dense", "sparse"] | None = Field(
        None, description="this collection's retrieval mode (e.g. 'sparse' for code) [default: retrieve.mode]")
    k: int | None = Field(None, ge=1, le=100, description="hits taken from this collection [default: the request's k]")


class ProfileIn(BaseModel):
    description: str = Field("", max_length=2000, description="what the collection holds; embedding and LLM "
                                                               "routing read it")
    metadata: dict[str, str | bool | int | float] = Field(
        default_factory=dict, description="fields for rules routing, e.g. {'language': 'python'}")
    retrieve: RetrieveDefaults = Field(default_factory=RetrieveDefaults)

    @field_validator("metadata")
    @classmethod
    def _small(cls, v: dict[str, Any]) -> dict[str, Any]:
        if len(v) > MAX_METADATA:
            raise ValueError(f"metadata holds at most {MAX_METADATA} fields")
        for key, value in v.items():
            if not 1 <= len(key) <= 64:
                raise ValueError("a metadata field name has 1 to 64 characters")
            if isinstance(value, str) and len(value) > 500:
                raise ValueError(f"metadata field '{key}' is longer than 500 characters")
        return v


class RoutedIn(BaseModel):
    collections: list[str] | None = Field(None, min_length=1, max_length=50,
                                          description="collections to route over [default: every one of the tenant]")
    route: Literal["all", "embedding", "rules", "llm"] = Field(
        "embedding", description="all: no routing; embedding: similarity to each description (or centroid); "
                                 "rules: metadata rules; llm: the chat model picks")
    rules: list[dict[str, Any]] = Field(default_factory=list, max_length=20,
                                        description="for route 'rules', e.g. [{'field': 'language', 'equals': "
                                                    "'python'}]; operators: equals, not_equals, in, contains, "
                                                    "gt, gte, lt, lte, exists")
    max_collections: int = Field(2, ge=1, le=50, description="collections searched at most")
    min_score: float | None = Field(None, description="a collection scoring below it is skipped (rules: "
                                                      "the share of rules met, default 1.0)")
    filter: str | None = Field(None, max_length=2000, description="a filter expression (docs/filters.md)")
    trace: bool = Field(False, description="return the route stage and each collection's retrieval")


class RoutedQueryIn(RoutedIn):
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(10, ge=1, le=100)


class RoutedAskIn(RoutedIn):
    question: str = Field(min_length=1, max_length=4000)
    k: int = Field(5, ge=1, le=50)


# --------------------------------------------------------------------------- profiles
def profile_json(server: Server, tenant: str, name: str) -> dict:
    stored = server.control.profile(tenant, name) or {"description": "", "metadata": {}, "retrieve": {},
                                                      "updated": None}
    return {"collection": name, **stored}


@router.put("/v1/tenants/{tenant}/collections/{collection}/profile", tags=["routing"])
def put_profile(tenant: str, body: ProfileIn, col: Collection = Depends(collection_of),
                who: Caller = Depends(tenant_caller), server: Server = Depends(server_of)) -> dict:
    """Set a collection's profile. It shapes every caller's routing and retrieval, so it needs the
    admin key or a key holding the writer role."""
    if not who.admin and WRITER_ROLE not in (who.principals or ()):
        raise ApiError(403, "forbidden", f"setting a collection profile needs the admin key or a key holding "
                                         f"'{WRITER_ROLE}'")
    profile = {"description": body.description.strip(), "metadata": body.metadata,
               "retrieve": body.retrieve.model_dump(exclude_none=True)}
    control_call(server.control.set_profile, tenant, col.name, profile)
    return profile_json(server, tenant, col.name)


@router.get("/v1/tenants/{tenant}/collections/{collection}/profile", tags=["routing"])
def get_profile(tenant: str, col: Collection = Depends(collection_of), server: Server = Depends(server_of)) -> dict:
    return profile_json(server, tenant, col.name)


# --------------------------------------------------------------------------- routing state
@dataclass
class _Parts:
    """The routing parts of one server: description vectors and the LLM client, built once."""

    describe: DescriptionVectors
    chat: ChatClient | None = None


_PARTS: weakref.WeakKeyDictionary[Server, _Parts] = weakref.WeakKeyDictionary()
CENTROIDS = CentroidCache()


def parts(server: Server) -> _Parts:
    found = _PARTS.get(server)
    if found is None:
        found = _PARTS.setdefault(server, _Parts(DescriptionVectors(server.embedder)))
    return found


def chat_client(server: Server) -> ChatClient:
    """The configured chat model's client, for LLM routing (400 when none is configured)."""
    p = parts(server)
    if p.chat is None:
        try:
            p.chat = server.engine.chat_client()
        except ConfigError as exc:
            raise ApiError(400, "invalid_request", f"route 'llm' needs a chat model: {exc}") from None
    return p.chat


def caller_centroid(server: Server, col: Collection, who: Caller) -> np.ndarray | None:
    """The mean chunk vector of the documents ``who`` may read in ``col``: per-document sums are
    built once per write version from the collection's embedding cache, then summed for the caller."""
    def build():
        model = server.embedder.model_id
        with col.rw.read():
            return document_sums(col.store.iter_chunks(), lambda hashes: col.engine.cache.get_many(model, hashes))

    sums = CENTROIDS.sums(col, col.write_version, build)
    visible = None if who.principals is None else [r.doc_id for r in col.documents(who.scope)]
    return centroid(sums, visible)


def targets_of(server: Server, tenant: str, who: Caller,
               names: list[str] | None) -> dict[str, tuple[Collection, Target, dict]]:
    """The collections routed over (every one of the tenant when ``names`` is None; an unknown name
    is a 404), each with its router target and its retrieval defaults."""
    names = list(dict.fromkeys(names)) if names else [c["name"] for c in server.control.collections(tenant)]
    if not names:
        raise ApiError(404, "not_found", f"tenant '{tenant}' has no collection")
    profiles = server.control.profiles(tenant)
    out = {}
    for name in names:
        col = server.collection(tenant, name)
        prof = profiles.get(name, {})
        target = Target(name, prof.get("description", ""), prof.get("metadata", {}),
                        lambda col=col: caller_centroid(server, col, who))
        out[name] = (col, target, prof.get("retrieve", {}))
    return out


# --------------------------------------------------------------------------- route, retrieve, fuse
@dataclass
class Routed:
    """A routed retrieval: the routing, the fused hits (each with its collection's own hit) and the
    collections searched."""

    routing: Routing
    hits: list[tuple[Hit, Hit, Collection]]  # (fused hit, the collection's hit, its collection)
    cols: dict[str, Collection]


def decide(server: Server, text: str, body: RoutedIn, found: dict, trace: Trace | None) -> Routing:
    """The route stage: which of ``found`` to search."""
    targets = [t for _, t, _ in found.values()]
    try:
        rules = parse_rules(body.rules) if body.route == "rules" else []
        chat = chat_client(server) if body.route == "llm" else None
        with maybe(trace, "route", len(targets), method=body.route) as st:
            routing = route(text, targets, body.route, embedder=server.embedder, describe=parts(server).describe,
                            rules=rules, chat=chat, max_collections=body.max_collections, min_score=body.min_score)
            st.outputs = len(routing.chosen)
            st.detail.update(routing.json())
    except RouteError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    return routing


def routed(server: Server, tenant: str, who: Caller, text: str, k: int, body: RoutedIn,
           trace: Trace | None) -> Routed:
    """Route ``text``, search each chosen collection with its retrieval defaults under the caller's
    principals, and fuse the lists (reciprocal rank fusion), cut to ``k``."""
    ready(server)
    found = targets_of(server, tenant, who, body.collections)
    routing = decide(server, text, body, found, trace)
    lists: dict[str, list[Hit]] = {}
    for name in routing.chosen:
        col, _, defaults = found[name]
        rag = flow(server, col)
        ck = int(defaults.get("k") or k)
        try:
            ask = rag.request(text, k=ck, mode=defaults.get("mode"), filter=body.filter, principals=who.principals)
        except FilterError as exc:
            raise ApiError(400, "invalid_filter", str(exc)) from None
        except (QueryError, ConfigError) as exc:
            raise ApiError(400, "invalid_request", str(exc)) from None
        sub = Trace() if trace else None
        with maybe(trace, "retrieve", None, collection=name, mode=ask.search.mode, k=ck) as st:
            lists[name] = retrieve(server, rag, ask, sub)
            st.outputs = len(lists[name])
            if sub is not None:
                st.detail["stages"] = sub.json()
    own = {h.chunk.id: (h, found[name][0]) for name, hits in lists.items() for h in hits}
    with maybe(trace, "fuse-collections", sum(map(len, lists.values())), method="rrf", lists=len(lists)) as st:
        fused = fuse_rrf(lists, server.settings.retrieve.rrf_k)[:k]
        st.outputs = len(fused)
    return Routed(routing, [(f, *own[f.chunk.id]) for f in fused], {n: found[n][0] for n in routing.chosen})


def document_url(tenant: str, col: Collection, doc_id: str) -> str:
    return f"/v1/tenants/{tenant}/collections/{col.name}/documents/{doc_id}"


def routed_hit(tenant: str, rank: int, fused: Hit, own: Hit, col: Collection) -> dict:
    """A fused hit: ``score`` is the fused one, ``collection_score`` and ``scores`` its collection's own."""
    return {**hit_json(col, rank, own), "score": round(fused.score, 6), "collection_score": round(own.score, 6),
            "collection": col.name, "document_url": document_url(tenant, col, own.chunk.doc_id)}


def routed_answer(tenant: str, question: str, answer: Answer, home: dict[str, Collection]) -> dict:
    """The answer JSON of ``answer_json``, each citation shown by its own collection and labelled with it."""
    first = next(iter(home.values()), None)
    out = answer_json(first, question, replace(answer, citations=())) if first else {
        "question": question, "answer": answer.text, "grounded": answer.grounded, "generator": answer.generator}
    cites = []
    for c in answer.citations:
        col = home[c.chunk.id]
        shown = answer_json(col, question, replace(answer, citations=(c,)))["citations"][0]
        cites.append({**shown, "collection": col.name, "document_url": document_url(tenant, col, c.chunk.doc_id)})
    out["citations"] = cites
    return out


# --------------------------------------------------------------------------- endpoints
@router.post("/v1/tenants/{tenant}/query", tags=["routing"])
def routed_query(tenant: str, body: RoutedQueryIn, who: Caller = Depends(reader),
                 server: Server = Depends(server_of)) -> dict:
    t0 = time.perf_counter()
    trace = Trace() if body.trace else None
    res = routed(server, tenant, who, body.query, body.k, body, trace)
    return {"query": body.query, "route": res.routing.json(),
            "hits": [routed_hit(tenant, i + 1, f, h, c) for i, (f, h, c) in enumerate(res.hits)],
            "took_ms": round((time.perf_counter() - t0) * 1000, 2), **({"trace": trace.json()} if trace else {})}


@router.post("/v1/tenants/{tenant}/ask", tags=["routing"])
def routed_ask(tenant: str, body: RoutedAskIn, who: Caller = Depends(reader),
               server: Server = Depends(server_of)) -> dict:
    """One answer over the fused hits of the routed collections, written by the server's answerer;
    each citation's page and heading come from its own collection's stored sections."""
    trace = Trace() if body.trace else None
    res = routed(server, tenant, who, body.question, body.k, body, trace)
    hits = [f for f, _, _ in res.hits]
    home = {f.chunk.id: c for f, _, c in res.hits}
    try:
        with trace.stage("generate", len(hits)) if trace else nullcontext():
            answer = server.answerer.answer(body.question, hits)
    except LLMError as exc:
        raise ApiError(502, "llm_unavailable", llm_message(server, exc)) from None
    for col in res.cols.values():  # each resolves its own documents' citations; others stay as they are
        answer = flow(server, col).cite(answer)
    out = routed_answer(tenant, body.question, answer, home)
    return {**out, "route": res.routing.json(), "cached": False, **({"trace": trace.json()} if trace else {})}
