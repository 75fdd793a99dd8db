"""Dense, sparse and hybrid retrieval over a Store, with filters and aggregation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from ragline.config import RetrieveSettings
from ragline.embed.base import Embedder
from ragline.retrieve.filters import compile_filter
from ragline.retrieve.fusion import best_per_document, minmax, rrf
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


class Retriever:
    def __init__(self, store: Store, embedder: Embedder, settings: RetrieveSettings) -> None:
        self.store, self.embedder, self.settings = store, embedder, settings
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragline-sparse")

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def request(self, text: str, **overrides) -> SearchRequest:
        s = self.settings
        values = {"k": s.k, "mode": s.mode, "aggregate": s.aggregate, **{k: v for k, v in overrides.items() if v is not None}}
        return SearchRequest(text=text, **values)

    def search(self, req: SearchRequest) -> list[Hit]:
        where = compile_filter(req.filter, FILTER_FIELDS) if req.filter else None
        # fetch more than k: fusion needs depth, and document aggregation collapses chunks
        depth = max(self.settings.candidates, req.k * (3 if req.aggregate == "document" else 1))
        ef = max(self.settings.hnsw_ef, depth)
        dense = sparse = None
        if req.mode == "sparse":
            sparse = self.store.sparse(req.text, depth, where)
        elif req.mode == "dense":
            dense = self.store.dense(self.embedder.embed_query(req.text), depth, where, ef)
        else:  # BM25 runs in a thread while the query is embedded and searched densely
            pending = self._pool.submit(self.store.sparse, req.text, depth, where)
            dense = self.store.dense(self.embedder.embed_query(req.text), depth, where, ef)
            sparse = pending.result()
        if req.mode == "hybrid":
            lists = {"dense": dense or [], "sparse": sparse or []}
            if self.settings.fusion == "rrf":
                hits = rrf(lists, self.settings.rrf_k)
            else:
                w = self.settings.dense_weight
                hits = minmax(lists, {"dense": w, "sparse": 1.0 - w})
        else:
            hits = list(dense if dense is not None else sparse or [])
        if req.aggregate == "document":
            hits = best_per_document(hits)
        return hits[: req.k]
