"""Retrieval for a transformed question: every search a ``Rewrite`` names, run with the request's
own options, and the hit lists fused into one ranking.

Each search goes through ``Retriever.search`` with the request's filter, principals and
aggregation (only its text and, for a one-sided text, its mode differ), so a transformation
cannot widen what the caller may read. The lists are fused by chunk id: reciprocal rank fusion
(an item several searches found ranks above one that one search found) or, for sub-questions,
an interleaving that keeps each list's best hits. When the request reranks, the searches skip
it and the fused candidates are reranked once, against the original question.

HyDE's dense side is a search of the hypothetical passage in dense mode beside the question's
own search, so no retrieval option is added to ``SearchRequest`` for it.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from typing import Callable, ContextManager, Mapping, Sequence

from ragline.rerank.base import rerank_hits
from ragline.retrieve.fusion import rrf
from ragline.retrieve.search import Retriever, SearchRequest
from ragline.store.base import Candidate
from ragline.trace import Trace, maybe
from ragline.transform.base import QueryTransform, Rewrite
from ragline.types import Hit

FUSION_DEPTH = 20  # hits kept per search before fusion (at least k): fusion needs depth to agree


def side_mode(req: SearchRequest, side: str | None) -> str:
    """The mode a search runs in: the request's own, or one side when the request's mode has it."""
    if side is None or req.mode == side or req.mode == "hybrid":
        return side or req.mode
    return req.mode


class Searches:
    """The request's searches, each run at most once: the first pass a transformation reads is
    the same search as the original question's list, not a second one."""

    def __init__(self, retriever: Retriever, req: SearchRequest, depth: int | None = None) -> None:
        self.retriever, self.req = retriever, req
        keep = max(req.k, req.rerank_depth or retriever.rerank_depth) if retriever.reranks(req) else req.k
        self.keep = keep
        self.depth = depth if depth is not None else max(keep, FUSION_DEPTH)
        self._done: dict[tuple[str, str], list[Hit]] = {}

    def run(self, text: str, side: str | None = None) -> list[Hit]:
        mode = side_mode(self.req, side)
        key = (text, mode)
        if key not in self._done:
            sub = replace(self.req, text=text, mode=mode, k=self.depth, rerank=False)
            self._done[key] = self.retriever.search(sub)
        return self._done[key]

    def first_pass(self) -> list[Hit]:
        """The original request's hits (unreranked, ``depth`` of them)."""
        return self.run(self.req.text)


MODE_SCORES = ("dense", "sparse")


def mode_scores(lists: Mapping[str, Sequence[Hit]]) -> dict[str, dict[str, float]]:
    """Per chunk id, its best raw score of each retrieval mode over every list that found it
    (what a later stage judges a hit by, e.g. the fallback's dense cosine)."""
    out: dict[str, dict[str, float]] = {}
    for hits in lists.values():
        for h in hits:
            mine = out.setdefault(h.chunk.id, {})
            for mode in MODE_SCORES:
                if mode in h.scores:
                    mine[mode] = max(mine.get(mode, float("-inf")), h.scores[mode])
    return out


def fuse_rrf(lists: Mapping[str, Sequence[Hit]], k: int = 60) -> list[Hit]:
    """Reciprocal rank fusion of hit lists keyed by chunk id; a hit's scores name each list that
    found it with its score there, and keep its best raw dense and sparse scores."""
    chunks = {h.chunk.id: h.chunk for hits in lists.values() for h in hits}
    modes = mode_scores(lists)
    fused = rrf({label: [Candidate(h.chunk.id, h.chunk.doc_id, h.score) for h in hits]
                 for label, hits in lists.items()}, k)
    return [Hit(chunks[f.key], f.score, {**f.scores, **modes[f.key]}) for f in fused]


def interleave(lists: Mapping[str, Sequence[Hit]]) -> list[Hit]:
    """Round robin by rank over the lists (in their order), each chunk once at its first place;
    a hit's score falls with its place (1, 1/2, 1/3 ...) and its scores name every list that found it."""
    found: dict[str, dict[str, float]] = {}
    for label, hits in lists.items():
        for h in hits:
            found.setdefault(h.chunk.id, {})[label] = h.score
    order: list[Hit] = []
    seen: set[str] = set()
    for rank in range(max((len(v) for v in lists.values()), default=0)):
        for hits in lists.values():
            if rank < len(hits) and hits[rank].chunk.id not in seen:
                seen.add(hits[rank].chunk.id)
                order.append(hits[rank])
    modes = mode_scores(lists)
    return [Hit(h.chunk, 1.0 / (i + 1), {**found[h.chunk.id], **modes[h.chunk.id]}) for i, h in enumerate(order)]


def best_per_document(hits: Sequence[Hit]) -> list[Hit]:
    """The first hit of each document, in order (document aggregation after fusion)."""
    first: dict[str, Hit] = {}
    for h in hits:
        first.setdefault(h.chunk.doc_id, h)
    return list(first.values())


def retrieve_rewrite(retriever: Retriever, req: SearchRequest, rewrite: Rewrite, trace: Trace | None = None,
                     searches: Searches | None = None) -> list[Hit]:
    """The request's hits for ``rewrite``: each of its searches, fused, reranked against the original
    question when the request reranks, cut to ``req.k``. ``searches`` reuses ones already run."""
    searches = searches or Searches(retriever, req)
    lists: dict[str, list[Hit]] = {}
    for label, text, side in rewrite.searches():
        with maybe(trace, "search", mode=side_mode(req, side), query=label) as st:
            lists[label] = searches.run(text, side)
            st.outputs = len(lists[label])
    with maybe(trace, "fuse-queries", sum(len(v) for v in lists.values()), method=rewrite.fusion,
               lists=len(lists)) as st:
        fused = interleave(lists) if rewrite.fusion == "interleave" else fuse_rrf(lists, retriever.settings.rrf_k)
        if req.aggregate == "document":
            fused = best_per_document(fused)
        fused = fused[: searches.keep]
        st.outputs = len(fused)
    if retriever.reranks(req) and fused:
        with maybe(trace, "rerank", len(fused), reranker=retriever.reranker.name) as st:
            fused = rerank_hits(retriever.reranker, req.text, fused)
            st.outputs = min(len(fused), req.k)
    return fused[: req.k]


def transformed_search(transform: QueryTransform, retriever: Retriever, req: SearchRequest,
                       trace: Trace | None = None,
                       reading: Callable[[], ContextManager] | None = None) -> tuple[list[Hit], Rewrite]:
    """The whole stage: transform ``req.text`` (a model call runs outside ``reading``, the store
    guard; a first pass inside it), then retrieve and fuse under it. Returns the hits and the rewrite."""
    reading = reading or nullcontext
    searches = Searches(retriever, req)

    def first_pass() -> list[Hit]:
        with reading():
            return searches.first_pass()

    with maybe(trace, "transform", 1, method=transform.name) as st:
        rewrite = transform.transform(req.text, first_pass)
        st.outputs = len(rewrite.searches())
        st.detail.update({k: v for k, v in rewrite.detail.items() if k != "method"})
        if rewrite.sub_questions:
            st.detail["sub_questions"] = list(rewrite.sub_questions)
        st.detail["queries"] = [text[:300] for _, text, _ in rewrite.searches()]
    with reading():
        return retrieve_rewrite(retriever, req, rewrite, trace, searches), rewrite
