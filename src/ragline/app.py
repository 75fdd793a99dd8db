"""The composition root: settings in, wired objects out. Nothing else reads configuration."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

from ragline.config import IngestSettings, Settings
from ragline.embed.base import Embedder
from ragline.embed.cache import EmbeddingCache
from ragline.ingest.chunkers import ChunkPlan
from ragline.ingest.indexer import Indexer
from ragline.ingest.sync import SourceRegistry, Syncer
from ragline.retrieve.search import Retriever
from ragline.store.base import StoreError


def ingest_syncer(indexer: Indexer, ingest: IngestSettings, on_event=None, acl_for=None) -> Syncer:
    """A syncer with every ``[ingest]`` setting applied (batch bounds, file size, parse worker limits,
    and the parsers' caps on text length and decompressed bytes, which the worker inherits)."""
    from ragline.ingest.parsers.base import configure
    from ragline.ingest.worker import ParseLimits

    configure(max_text_chars=ingest.max_text_chars, max_unpacked_mb=ingest.max_unpacked_mb)
    return Syncer(indexer, ingest.batch_docs, int(ingest.max_file_mb * 2**20), on_event, acl_for,
                  limits=ParseLimits.from_settings(ingest), batch_chunks=ingest.batch_chunks)


class Engine:
    """Lazily builds each part the first time it is needed (a status call loads no model)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home

    @cached_property
    def embedder(self) -> Embedder:
        e = self.settings.embed
        if e.provider == "openai":
            from ragline.embed.local import HFTokenizer, bundled_model_path
            from ragline.embed.openai import OpenAIEmbedder
            from transformers import AutoTokenizer

            if not e.base_url:
                from ragline.config import ConfigError
                raise ConfigError("embed.provider is 'openai' but embed.base_url is not set "
                                  "(RAGLINE_EMBED__BASE_URL=http://host:port/v1)")
            tok = HFTokenizer(AutoTokenizer.from_pretrained(str(bundled_model_path())))
            return OpenAIEmbedder(e.base_url, e.model, tok, e.max_tokens or 512, e.api_key, e.batch_size, e.timeout_s)
        from ragline.embed.local import LocalEmbedder
        return LocalEmbedder(e.model, e.batch_size, e.precision)

    @cached_property
    def cache(self) -> EmbeddingCache:
        return EmbeddingCache(self.home / "embeddings.sqlite")

    def open_store(self, path: Path | None = None, reset_on_dim_change: bool = False):
        """The embedded store at ``path`` (default: the home's index), sized for the embedder."""
        from ragline.store.lance import LanceStore

        r = self.settings.retrieve
        path = path or self.home / "lance"
        try:
            return LanceStore(path, self.embedder.dim, r.hnsw_m, r.hnsw_ef_construction, r.ann_min_rows)
        except StoreError:
            if not reset_on_dim_change:
                raise
            LanceStore.drop_vectors(path)  # documents stay; all are re-chunked from stored text
            return LanceStore(path, self.embedder.dim, r.hnsw_m, r.hnsw_ef_construction, r.ann_min_rows)

    @cached_property
    def store(self):
        return self.open_store()

    @property
    def plan(self) -> ChunkPlan:
        c = self.settings.chunk
        return ChunkPlan(c.strategy, c.size, c.overlap, c.title_prefix)

    def syncer(self, on_event=None) -> Syncer:
        store = self.open_store(reset_on_dim_change=True)
        self.__dict__["store"] = store
        indexer = Indexer(store, self.embedder, self.cache, self.plan)
        return ingest_syncer(indexer, self.settings.ingest, on_event)

    def record_index_info(self, fingerprint: str) -> None:
        """Remember what the index was last built with (read by `ragline status`)."""
        info = {"embedding_model": self.embedder.model_id, "dimension": self.embedder.dim,
                "chunking": self.settings.chunk.model_dump(), "fingerprint": fingerprint,
                "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        tmp = self.home / "index.json.tmp"
        tmp.write_text(json.dumps(info, indent=1), "utf-8")
        os.replace(tmp, self.home / "index.json")

    @cached_property
    def sources(self) -> SourceRegistry:
        self.home.mkdir(parents=True, exist_ok=True)
        return SourceRegistry(self.home / "sources.json")

    @cached_property
    def retriever(self) -> Retriever:
        return Retriever(self.store, self.embedder, self.settings.retrieve)

    def generator(self):
        llm = self.settings.llm
        if llm.base_url:
            from ragline.generate.grounded import GroundedGenerator
            from ragline.generate.llm import ChatClient

            client = ChatClient(llm.base_url, llm.model, llm.api_key, llm.timeout_s)
            return GroundedGenerator(client, llm.context_window, llm.max_tokens, llm.temperature,
                                     self.embedder.tokenizer.count)
        from ragline.generate.extractive import ExtractiveAnswerer
        return ExtractiveAnswerer(self.embedder)
