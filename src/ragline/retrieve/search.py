"""Dense, sparse and hybrid retrieval over a Store, with filters and aggregation."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from ragline.acl import visible_to
from ragline.config import RetrieveSettings
from ragline.embed.base import Embedder
from ragline.filters import FILTER_FIELDS, Node, all_of, compile_filter
from ragline.rerank.base import Reranker, rerank_hits
from ragline.retrieve.fusion import best_per_document, minmax, rrf, single
from ragline.store.base import Candidate, Store
from ragline.trace import Trace, maybe
from ragline.types import Hit

Mode = Literal["dense", "sparse", "hybrid"]
MODES: tuple[str, ...] = ("hybrid", "dense", "sparse")


@lru_cache(maxsize=256)
def filter_tree(expr: str) -> Node:
    """A user filter parsed and checked once (the request checks it, the search uses it); trees are
    frozen, so one is shared safely. A bad filter raises FilterError each time (errors are not cached)."""
    return compile_filter(expr, FILTER_FIELDS)


class QueryError(ValueError):
    """A retrieval option out of its range (mode, k, aggregation); the message says which."""


@dataclass(frozen=True)
class SearchRequest:
    text: str
    k: int = 10
    mode: Mode = "hybrid"
    filter: str | None = None  # ragline filter expression, see docs/filters.md
    aggregate: Literal["chunk", "document"] = "chunk"
    # the caller's principals: only documents whose ACL names one of them (or "*") are searched;
    # None searches everything (a local, single-user index)
    principals: tuple[str, ...] | None = None
    # the rerank stage: None runs the configured reranker (if any) over ``rerank_depth`` candidates
    # (default: the configured depth); False skips it
    rerank: bool | None = None
    rerank_depth: int | None = None


class Retriever:
    def __init__(self, store: Store, embedder: Embedder, settings: RetrieveSettings,
                 reranker: Reranker | None = None, rerank_depth: int = 50) -> None:
        self.store, self.embedder, self.settings = store, embedder, settings
        self.reranker, self.rerank_depth = reranker, rerank_depth

    def request(self, text: str, **overrides) -> SearchRequest:
        """A request with the configured defaults for unset options, every option checked here
        (``QueryError``; a filter that does not parse or fit raises ``FilterError``)."""
        s = self.settings
        values = {"k": s.k, "mode": s.mode, "aggregate": s.aggregate, **{k: v for k, v in overrides.items() if v is not None}}
        req = SearchRequest(text=text, **values)
        if req.mode not in MODES:
            raise QueryError(f"mode must be {', '.join(MODES[:-1])} or {MODES[-1]}, not '{req.mode}'")
        if req.aggregate not in ("chunk", "document"):
            raise QueryError(f"aggregate must be chunk or document, not '{req.aggregate}'")
        if isinstance(req.k, bool) or not isinstance(req.k, int) or req.k < 1:
            raise QueryError(f"k must be a whole number of at least 1, not {req.k!r}")
        if req.rerank_depth is not None and (isinstance(req.rerank_depth, bool) or not isinstance(req.rerank_depth, int)
                                             or req.rerank_depth < 1):
            raise QueryError(f"rerank depth must be a whole number of at least 1, not {req.rerank_depth!r}")
        if req.rerank and self.reranker is None:
            raise QueryError("reranking was asked for but no reranker is configured: set rerank.method "
                             "(RAGLINE_RERANK__METHOD=minilm | cross-encoder | http | llm)")
        if req.filter:
            filter_tree(req.filter)
        return req

    def reranks(self, req: SearchRequest) -> bool:
        return self.reranker is not None and req.rerank is not False

    def search(self, req: SearchRequest, trace: Trace | None = None) -> list[Hit]:
        """The request's hits, best first; with ``trace``, each stage is recorded in it."""
        hits, complete = self._search(req, trace)
        if not complete:
            # a write committed between finding candidates and reading them (a compaction renumbers
            # rows): search again on the latest version rather than return a short list
            self.store.refresh()
            if trace is not None:
                trace.note("retry", reason="the index changed between search and fetch")
            hits, _ = self._search(req, trace)
        if self.reranks(req) and hits:
            depth = req.rerank_depth or self.rerank_depth
            with maybe(trace, "rerank", min(depth, len(hits)), reranker=self.reranker.name, depth=depth) as st:
                # the top ``depth`` are re-scored; beyond it (k > depth) hits follow in first-stage order
                hits = (rerank_hits(self.reranker, req.text, hits[:depth]) + hits[depth:])[: req.k]
                st.outputs = len(hits)
                if hits:
                    st.detail["top_score"] = round(hits[0].score, 4)
        return hits[: req.k]

    def _search(self, req: SearchRequest, trace: Trace | None = None) -> tuple[list[Hit], bool]:
        # a restricted caller's BM25 statistics are counted over what its ACL lets it see, never
        # over every row: the index's global ones told it how many hidden chunks hold a word
        # (docs/adr/0006); None (the local CLI, the admin) keeps the index's own scoring
        scope = visible_to(req.principals) if req.principals is not None else None
        where = all_of(scope, filter_tree(req.filter) if req.filter else None)
        # fetch more than k: fusion needs depth, and document aggregation collapses chunks
        # a reranked request keeps its rerank depth of candidates to the end (the reranker needs their text)
        keep = max(req.k, req.rerank_depth or self.rerank_depth) if self.reranks(req) else req.k
        depth = max(self.settings.candidates, keep * (3 if req.aggregate == "document" else 1))
        lists: dict[str, list[Candidate]] = {}
        if req.mode in ("sparse", "hybrid"):
            # sequential: on a small CPU the model already uses every core, and a BM25 thread
            # beside it measured no faster (bench/README.md)
            with maybe(trace, "sparse", depth=depth) as st:
                lists["sparse"] = self._sparse(req.text, depth, where, scope)
                st.outputs = len(lists["sparse"])
        if req.mode in ("dense", "hybrid"):
            with maybe(trace, "dense", depth=depth) as st:
                ef = max(self.settings.hnsw_ef, depth)
                lists["dense"] = self.store.dense_candidates(self.embedder.embed_query(req.text), depth, where, ef)
                st.outputs = len(lists["dense"])
        with maybe(trace, "fusion", sum(len(v) for v in lists.values())) as st:
            if req.mode != "hybrid":
                ranked = single(req.mode, lists[req.mode])
            elif self.settings.fusion == "rrf":
                st.detail["method"] = "rrf"
                ranked = rrf(lists, self.settings.rrf_k)
            else:
                w = self.settings.dense_weight
                st.detail.update(method="minmax", dense_weight=w)
                ranked = minmax(lists, {"dense": w, "sparse": 1.0 - w})
            if req.aggregate == "document":
                ranked = best_per_document(ranked)
            st.outputs = len(ranked)
        top = ranked[:keep]
        with maybe(trace, "fetch", len(top)) as st:
            rows = self.store.fetch([f.key for f in top])
            st.outputs = len(rows)
        # a row must be the chunk its candidate named: a read that crossed table versions is dropped
        # (and the search retried), never returned as some other document's text
        good = [f for f in top if f.key in rows and rows[f.key].doc_id == f.doc_id]
        return [Hit(rows[f.key], f.score, f.scores) for f in good], len(good) == len(top)

    def _sparse(self, text: str, depth: int, where: Node | None, scope: Node | None) -> list[Candidate]:
        if scope is None:  # unrestricted: exactly the index's path, nothing added
            return self.store.sparse_candidates(text, depth, where)
        return self.store.sparse_candidates(text, depth, where, scope=scope)
