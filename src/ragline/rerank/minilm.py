"""A reranker that needs no model beyond the bundled embedding model.

Score = cosine of the query and passage vectors (the embedding cache holds every indexed chunk's
vector, so an indexed passage costs a lookup, not a model call). A first version: the scoring
formula is chosen by measurement in bench/rerank_lab.py.
"""

from __future__ import annotations

from typing import Sequence

from ragline.embed.base import Embedder
from ragline.embed.cache import EmbeddingCache, embed_with_cache
from ragline.rerank.base import Scored, ordered


class MiniLMReranker:
    name = "minilm"

    def __init__(self, embedder: Embedder, cache: EmbeddingCache | None = None, batch_size: int = 32) -> None:
        self.embedder, self.cache, self.batch_size = embedder, cache, batch_size

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[Scored]:
        if not documents:
            return []
        q = self.embedder.embed_query(query)
        if self.cache is not None:
            vecs, _ = embed_with_cache(self.embedder, self.cache, documents)
        else:
            vecs = self.embedder.embed_documents(documents)
        return ordered((vecs @ q).tolist(), top_n)
