"""The composition root: settings in, wired objects out. Nothing else reads configuration or
builds a part (an embedder, a store, an indexer, a retriever, an answerer, the RAG flow).

A part can be handed in instead of built (``Engine(settings, embedder=shared)``): the server
shares one embedding model among its collections, and an experiment shares one among configurations.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ContextManager

from ragline.config import ConfigError, IngestSettings, Settings
from ragline.embed.base import Embedder
from ragline.embed.cache import EmbeddingCache
from ragline.generate.base import Answerer
from ragline.ingest.chunkers import ChunkPlan
from ragline.ingest.indexer import Indexer
from ragline.ingest.sync import SourceRegistry, Syncer
from ragline.rag import RAG
from ragline.rerank.base import Reranker
from ragline.retrieve.fallback import FallbackPolicy
from ragline.retrieve.search import Retriever
from ragline.store.base import Store
from ragline.transform.base import QueryTransform

if TYPE_CHECKING:
    from ragline.agentic.base import Strategy


def ingest_syncer(indexer: Indexer, ingest: IngestSettings, on_event=None, acl_for=None) -> Syncer:
    """A syncer with every ``[ingest]`` setting applied (batch bounds, file size, parse worker limits,
    and the parsers' caps on text length and decompressed bytes, which the worker inherits)."""
    from ragline.ingest.parsers.base import configure
    from ragline.ingest.worker import ParseLimits

    configure(max_text_chars=ingest.max_text_chars, max_unpacked_mb=ingest.max_unpacked_mb)
    return Syncer(indexer, ingest.batch_docs, int(ingest.max_file_mb * 2**20), on_event, acl_for,
                  limits=ParseLimits.from_settings(ingest), batch_chunks=ingest.batch_chunks)


class Engine:
    """Builds each part the first time it is needed (a status call loads no model)."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None,
                 cache: EmbeddingCache | None = None, store: Store | None = None,
                 reranker: Reranker | None = None) -> None:
        self.settings = settings
        self.home = settings.home
        self._embedder, self._cache, self._store = embedder, cache, store
        self._reranker = reranker
        self._transforms: dict[str, QueryTransform] = {}
        self._retriever: Retriever | None = None
        self._sources: SourceRegistry | None = None
        self._lock = threading.RLock()  # parts are built once, even by concurrent first callers

    # -- parts ---------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = self._build_embedder()
            return self._embedder

    def _build_embedder(self) -> Embedder:
        e = self.settings.embed
        if e.provider == "openai":
            from transformers import AutoTokenizer

            from ragline.embed.local import HFTokenizer, bundled_model_path
            from ragline.embed.openai import OpenAIEmbedder

            if not e.base_url:
                raise ConfigError("embed.provider is 'openai' but embed.base_url is not set "
                                  "(RAGLINE_EMBED__BASE_URL=http://host:port/v1)")
            tok = HFTokenizer(AutoTokenizer.from_pretrained(str(bundled_model_path())))
            return OpenAIEmbedder(e.base_url, e.model, tok, e.max_tokens or 512, e.api_key, e.batch_size, e.timeout_s)
        from ragline.embed.local import LocalEmbedder
        return LocalEmbedder(e.model, e.batch_size, e.precision)

    @property
    def reranker(self) -> Reranker | None:
        """The configured second stage (``[rerank]``), built once; None when ``rerank.method`` is none."""
        with self._lock:
            if self._reranker is None and self.settings.rerank.method != "none":
                self._reranker = self._build_reranker()
            return self._reranker

    def _build_reranker(self) -> Reranker:
        r = self.settings.rerank
        if r.method == "minilm":
            from ragline.rerank.minilm import MiniLMReranker

            return MiniLMReranker(self.embedder, self.cache, batch_size=r.batch_size)
        if r.method == "cross-encoder":
            from ragline.rerank.cross_encoder import CrossEncoderReranker

            if not r.model:
                raise ConfigError("rerank.method is 'cross-encoder' but rerank.model is not set "
                                  "(a local CrossEncoder directory: RAGLINE_RERANK__MODEL=/path/to/model)")
            return CrossEncoderReranker(r.model, batch_size=r.batch_size, max_tokens=r.max_tokens)
        if r.method == "http":
            from ragline.rerank.http import HTTPReranker

            if not r.url:
                raise ConfigError("rerank.method is 'http' but rerank.url is not set "
                                  "(RAGLINE_RERANK__URL=http://host:port/v1/rerank)")
            return HTTPReranker(r.url, api=r.api, model=r.model, api_key=r.api_key, batch_size=r.batch_size,
                                max_tokens=r.max_tokens, timeout_s=r.timeout_s)
        from ragline.rerank.llm import LLMReranker

        return LLMReranker(self.chat_client(), batch_size=r.batch_size, max_tokens=r.max_tokens,
                           count_tokens=self.embedder.tokenizer.count)

    @property
    def cache(self) -> EmbeddingCache:
        with self._lock:
            if self._cache is None:
                self._cache = self.open_cache(self.home)
            return self._cache

    @staticmethod
    def open_cache(home: Path) -> EmbeddingCache:
        """The embedding cache of a home (an experiment shares one among its configurations)."""
        return EmbeddingCache(home / "embeddings.sqlite")

    def open_store(self, path: Path | None = None, reset_on_dim_change: bool = False) -> Store:
        """The store at ``path`` (default: the home's index), sized for the embedder: the embedded
        LanceDB directory, or with ``[store] backend = "postgres"`` the PostgreSQL index named by
        ``store.namespace`` (``path`` names another). With ``reset_on_dim_change``, an index built
        for another embedding dimension drops its vectors (documents stay; the next sync re-chunks
        them from their stored text) instead of refusing."""
        r = self.settings.retrieve
        if self.settings.store.backend == "postgres":
            from ragline.store.postgres import PostgresStore

            st = self.settings.store
            return PostgresStore.open(self._dsn(), self.namespace(path), self.embedder.dim, r.hnsw_m,
                                      r.hnsw_ef_construction, r.ann_min_rows, r.hnsw_ef, st.pool_size,
                                      st.connect_timeout_s, reset_on_dim_change=reset_on_dim_change)
        from ragline.store.lance import LanceStore

        return LanceStore.open(path or self.home / "lance", self.embedder.dim, r.hnsw_m, r.hnsw_ef_construction,
                               r.ann_min_rows, reset_on_dim_change=reset_on_dim_change)

    def _dsn(self) -> str:
        if not self.settings.store.dsn:
            raise ConfigError('store.backend is "postgres" but store.dsn is not set; give a connection string '
                              "(RAGLINE_STORE__DSN or [store] dsn in config.toml)")
        return self.settings.store.dsn

    def namespace(self, path: Path | None = None) -> str:
        """The PostgreSQL index's name: ``store.namespace`` for the home's index (by default the
        home's absolute path), the absolute path for an index named by ``path``."""
        if path is not None:
            return str(Path(path).resolve())
        return self.settings.store.namespace or str((self.home / "lance").resolve())

    def has_index(self) -> bool:
        """Whether anything has been indexed in this home."""
        if self.settings.store.backend == "postgres":
            from ragline.store.postgres import PostgresStore

            st = self.settings.store
            return PostgresStore.exists(self._dsn(), self.namespace(), st.pool_size, st.connect_timeout_s)
        return (self.home / "lance").exists()

    def existing_store(self) -> Store | None:
        """The home's store as it stands, for reporting on it without loading the embedding model
        (the dimension is read from the index); None when nothing has been indexed here."""
        if not self.has_index():
            return None
        if self.settings.store.backend == "postgres":
            from ragline.store.postgres import PostgresStore

            st = self.settings.store
            return PostgresStore(self._dsn(), self.namespace(), None, pool_size=st.pool_size,
                                 connect_timeout_s=st.connect_timeout_s)
        from ragline.store.lance import LanceStore

        return LanceStore(self.home / "lance", None)

    @property
    def store(self) -> Store:
        """The home's store, for reading (an index of another dimension is an error)."""
        with self._lock:
            if self._store is None:
                self._store = self.open_store()
            return self._store

    def open_index(self) -> Store:
        """The home's store, for writing: opened (once) so that a change of embedding dimension
        resets its vectors rather than stopping the ingest."""
        with self._lock:
            if self._store is None:
                self._store = self.open_store(reset_on_dim_change=True)
            return self._store

    @property
    def plan(self) -> ChunkPlan:
        c = self.settings.chunk
        return ChunkPlan(c.strategy, c.size, c.overlap, c.title_prefix)

    @property
    def sources(self) -> SourceRegistry:
        with self._lock:
            if self._sources is None:
                self.home.mkdir(parents=True, exist_ok=True)
                self._sources = SourceRegistry(self.home / "sources.json")
            return self._sources

    def indexer(self, store: Store | None = None) -> Indexer:
        return Indexer(self.open_index() if store is None else store, self.embedder, self.cache, self.plan)

    def syncer(self, on_event=None, acl_for: Callable[[str], tuple[str, ...]] | None = None) -> Syncer:
        """Incremental sync into the home's store, every ``[ingest]`` setting applied."""
        return ingest_syncer(self.indexer(), self.settings.ingest, on_event, acl_for)

    @property
    def retriever(self) -> Retriever:
        """Retrieval over the home's store."""
        with self._lock:
            if self._retriever is None:
                self._retriever = self.retriever_for(self.store)
            return self._retriever

    def retriever_for(self, store: Store) -> Retriever:
        return Retriever(store, self.embedder, self.settings.retrieve, self.reranker, self.settings.rerank.depth)

    def chat_client(self):
        """A client of the configured OpenAI-compatible LLM endpoint (``[llm]``)."""
        from ragline.generate.llm import ChatClient

        llm = self.settings.llm
        if not llm.base_url:
            raise ConfigError("no LLM is configured: set llm.base_url (RAGLINE_LLM__BASE_URL=http://host:port/v1)")
        return ChatClient(llm.base_url, llm.model, llm.api_key, llm.timeout_s)

    def answerer(self, offline: bool = False) -> Answerer:
        """The configured LLM's grounded answerer, or (no LLM configured, or ``offline``) the
        extractive one, which needs no LLM."""
        llm = self.settings.llm
        if llm.base_url and not offline:
            from ragline.generate.grounded import GroundedGenerator

            return GroundedGenerator(self.chat_client(), llm.context_window, llm.max_tokens, llm.temperature,
                                     self.embedder.tokenizer.count)
        from ragline.generate.extractive import ExtractiveAnswerer
        return ExtractiveAnswerer(self.embedder)

    def transform(self, method: str | None = None) -> QueryTransform | None:
        """The configured query transformation (``[transform]``), or ``method``'s; None for none. An
        LLM method with no LLM configured raises ConfigError naming llm.base_url."""
        from ragline.transform import LLM_METHODS, build_transform

        t = self.settings.transform
        method = method or t.method
        if method == "none":
            return None
        with self._lock:  # built once per method: an LLM one holds an HTTP client
            if method not in self._transforms:
                client = self.chat_client() if method in LLM_METHODS and self.settings.llm.base_url else None
                self._transforms[method] = build_transform(
                    method, client, n_queries=t.n_queries, hyde_passages=t.hyde_passages, max_tokens=t.max_tokens,
                    temperature=t.temperature, prf_feedback=t.prf_feedback, prf_terms=t.prf_terms)
            return self._transforms[method]

    def rag(self, answerer: Answerer | None = None,
            reading: Callable[[], ContextManager] | None = None) -> RAG:
        """The RAG flow over the home's store: this engine's retriever, the configured query
        transformation, and ``answerer`` (default: ``self.answerer()``). ``reading`` guards each store
        read (a serve collection's read lock)."""
        route = self.settings.route
        return RAG(self.retriever, self.answerer() if answerer is None else answerer, self.store, reading,
                   transform=self.transform(), transforms=self.transform,
                   fallbacks=FallbackPolicy(tuple(route.fallbacks), route.min_hits, route.weak_below))

    def strategy(self, name: str | None = None) -> "Strategy":
        """The answer strategy ``name`` (default ``[answer] strategy``), with the ``[answer]`` budgets.
        ``agent`` needs an LLM (``StrategyError`` naming ``llm.base_url`` without one); ``corrective``
        grades with the LLM too when one is configured."""
        from ragline.agentic.base import STRATEGIES, Budget, Standard, StrategyError

        a = self.settings.answer
        name = name or a.strategy
        if name not in STRATEGIES:
            raise StrategyError(f"strategy must be one of {', '.join(STRATEGIES)}, not '{name}'")
        budget = Budget(a.max_steps, a.max_tokens, a.max_seconds)
        if name == "standard":
            return Standard()
        from ragline.evaluate.judge import OfflineJudge

        if name == "self-check":
            from ragline.agentic.self_check import SelfCheck

            return SelfCheck(OfflineJudge(self.embedder), Budget(min(a.max_steps, 2), a.max_tokens, a.max_seconds))
        llm = self.chat_client() if self.settings.llm.base_url else None
        if name == "corrective":
            from ragline.agentic.corrective import Corrective

            return Corrective(OfflineJudge(self.embedder), llm=llm, budget=budget)
        if llm is None:
            raise StrategyError("the agent strategy needs an LLM that can call tools: set llm.base_url "
                                "(RAGLINE_LLM__BASE_URL=http://host:port/v1) and llm.model")
        from ragline.agentic.agent import Agent

        return Agent(llm, budget=budget, search_first=a.agent_search_first)

    # -- records -------------------------------------------------------------------------------
    def index_info(self) -> dict | None:
        """What the index was last built with (``record_index_info``), or None when nothing readable is recorded."""
        try:
            return json.loads((self.home / "index.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None

    def record_index_info(self, fingerprint: str) -> None:
        """Remember what the index was last built with (read by `ragline status`)."""
        info = {"embedding_model": self.embedder.model_id, "dimension": self.embedder.dim,
                "chunking": self.settings.chunk.model_dump(), "fingerprint": fingerprint,
                "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        tmp = self.home / "index.json.tmp"
        tmp.write_text(json.dumps(info, indent=1), "utf-8")
        os.replace(tmp, self.home / "index.json")
