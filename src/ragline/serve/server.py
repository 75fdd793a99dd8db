"""The shared state of one serving process: the control database, the job runner, the rate
limiter, the open collections and the models. ``create_app`` builds one and keeps it on
``app.state.server``; routes reach it through ``deps.server_of``."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
from functools import cached_property
from pathlib import Path

from ragline.app import Engine
from ragline.config import ConfigError, Settings
from ragline.embed.base import Embedder
from ragline.generate.base import Answerer
from ragline.rerank.base import RerankError, Reranker
from ragline.serve.collections import Collection
from ragline.serve.control import ControlDB
from ragline.serve.errors import ApiError
from ragline.serve.jobs import JobRunner
from ragline.serve.limits import RateLimiter

log = logging.getLogger("ragline.serve")


class Server:
    """Shared state of one serving process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data = (settings.home / "serve").resolve()
        self.data.mkdir(parents=True, exist_ok=True)
        self.control = ControlDB(self.data / "control.sqlite")
        self.admin_key_file: Path | None = None
        self._set_up_admin(settings.serve.admin_key)
        self.jobs = JobRunner(settings.serve.job_workers, settings.serve.max_jobs_per_tenant,
                              store=self._job_store(settings), lease_s=settings.serve.job_lease_s)
        self.limiter = RateLimiter(settings.serve.rate_limit_per_minute, settings.serve.rate_limit_burst)
        self._collections: dict[tuple[str, str], Collection] = {}
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self.load_error: str | None = None
        s = settings.llm
        self.llm_settings = settings.model_copy(update={"llm": s.model_copy(
            update={"timeout_s": min(s.timeout_s, settings.serve.llm_timeout_s)})})
        # the process's parts: one embedding model shared by every collection, one answerer
        self.engine = Engine(self.llm_settings)

    def _job_store(self, settings: Settings):
        """Where jobs are kept: the PostgreSQL database every replica shares when the store is
        there, else SQLite beside this server's data."""
        from ragline.serve.jobstore import postgres_jobs, sqlite_jobs

        st = settings.store
        if st.backend == "postgres":
            if not st.dsn:
                raise ConfigError('store.backend is "postgres" but store.dsn is not set')
            return postgres_jobs(st.dsn, st.namespace, st.pool_size, st.connect_timeout_s)
        return sqlite_jobs(self.data / "jobs.sqlite")

    def _set_up_admin(self, configured: str | None) -> None:
        if configured:
            self.control.set_admin(configured)
            return
        path = self.data / "admin.key"
        if path.exists() and self.control.admin_hash():
            self.admin_key_file = path
            return
        key = "rl_admin_" + secrets.token_urlsafe(32).replace("_", "-")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        self.control.set_admin(key)
        self.admin_key_file = path

    @property
    def embedder(self) -> Embedder:
        return self.engine.embedder

    @cached_property
    def answerer(self) -> Answerer:
        """The answerer: extractive offline, else the configured LLM (one HTTP client, reused)."""
        return self.engine.answerer()

    @property
    def reranker(self) -> Reranker | None:
        """The configured reranker ([rerank]), shared by every collection; None when none is configured."""
        try:
            return self.engine.reranker
        except (ConfigError, RerankError) as exc:
            raise ApiError(503, "not_ready", f"the reranker could not be loaded: {exc}") from None

    def warm_up(self) -> None:
        try:
            self.embedder.embed_query("warm up")
            self.engine.reranker  # a reranker that cannot load is a load error, reported by /readyz
            self.ready.set()
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("the embedding model failed to load: %s", self.load_error)

    # -- collections ------------------------------------------------------------------------
    def tenant_dir(self, tenant: str) -> Path:
        return self.data / "tenants" / tenant

    def collection(self, tenant: str, name: str) -> Collection:
        if not self.control.collection_exists(tenant, name):
            raise ApiError(404, "not_found", f"no collection '{name}' in tenant '{tenant}'")
        key = (tenant, name)
        with self._lock:
            col = self._collections.get(key)
            if col is None:
                root = self.tenant_dir(tenant) / "collections" / name
                col = Collection(tenant, name, root, self.llm_settings, self.embedder, self.reranker)
                self._collections[key] = col
            return col

    def drop_collection(self, tenant: str, name: str) -> None:
        col = self.collection(tenant, name)
        with self._lock:
            self._collections.pop((tenant, name), None)
        self.control.delete_collection(tenant, name)
        col.drop()
        self.jobs.forget(tenant, name)

    def drop_tenant(self, tenant: str) -> None:
        for c in self.control.collections(tenant):
            self.drop_collection(tenant, c["name"])
        self.control.delete_tenant(tenant)
        shutil.rmtree(self.tenant_dir(tenant), ignore_errors=True)
        self.jobs.forget(tenant)
