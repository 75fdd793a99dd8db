"""Dense, sparse and hybrid retrieval over a Store, with filters and aggregation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ragline.config import RetrieveSettings
from ragline.embed.base import Embedder
from ragline.retrieve.acl import acl_clause, and_where
from ragline.retrieve.filters import compile_filter
from ragline.retrieve.fusion import Candidate, best_per_document, minmax, rrf, single
from ragline.store.base import FILTER_FIELDS, Store
from ragline.types import Hit

Mode = Literal["dense", "sparse", "hybrid"]


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


class Retriever:
    def __init__(self, store: Store, embedder: Embedder, settings: RetrieveSettings) -> None:
        self.store, self.embedder, self.settings = store, embedder, settings

    def request(self, text: str, **overrides) -> SearchRequest:
        s = self.settings
        values = {"k": s.k, "mode": s.mode, "aggregate": s.aggregate, **{k: v for k, v in overrides.items() if v is not None}}
        return SearchRequest(text=text, **values)

    def search(self, req: SearchRequest) -> list[Hit]:
        hits, complete = self._search(req)
        if not complete and hasattr(self.store, "refresh"):
            # a write committed between finding candidates and reading them (a compaction renumbers
            # rows): search again on the latest version rather than return a short list
            self.store.refresh()
            hits, _ = self._search(req)
        return hits

    def _search(self, req: SearchRequest) -> tuple[list[Hit], bool]:
        # a restricted caller's BM25 statistics are counted over what its ACL lets it see, never
        # over every row: the index's global ones told it how many hidden chunks hold a word
        # (docs/adr/0006); None (the local CLI, the admin) keeps the index's own scoring
        scope = acl_clause(req.principals) if req.principals is not None else None
        where = and_where(scope, compile_filter(req.filter, FILTER_FIELDS) if req.filter else None)
        # fetch more than k: fusion needs depth, and document aggregation collapses chunks
        depth = max(self.settings.candidates, req.k * (3 if req.aggregate == "document" else 1))
        ef = max(self.settings.hnsw_ef, depth)
        store = self.store
        if req.mode == "sparse":
            ranked = single("sparse", self._sparse(req.text, depth, where, scope))
        elif req.mode == "dense":
            ranked = single("dense", store.dense_candidates(self.embedder.embed_query(req.text), depth, where, ef))
        else:
            # sequential: on a small CPU the model already uses every core, and a BM25 thread
            # beside it measured no faster (bench/README.md)
            lists = {"sparse": self._sparse(req.text, depth, where, scope),
                     "dense": store.dense_candidates(self.embedder.embed_query(req.text), depth, where, ef)}
            if self.settings.fusion == "rrf":
                ranked = rrf(lists, self.settings.rrf_k)
            else:
                w = self.settings.dense_weight
                ranked = minmax(lists, {"dense": w, "sparse": 1.0 - w})
        if req.aggregate == "document":
            ranked = best_per_document(ranked)
        top = ranked[: req.k]
        rows = store.fetch([f.key for f in top])
        # a row must be the chunk its candidate named: a read that crossed table versions is dropped
        # (and the search retried), never returned as some other document's text
        good = [f for f in top if f.key in rows and rows[f.key].doc_id == f.doc_id]
        return [Hit(rows[f.key], f.score, f.scores) for f in good], len(good) == len(top)

    def _sparse(self, text: str, depth: int, where: str | None, scope: str | None) -> list[Candidate]:
        if scope is None:  # unrestricted: exactly the index's path, nothing added
            return self.store.sparse_candidates(text, depth, where)
        return self.store.sparse_candidates(text, depth, where, scope=scope)
