"""Ingestion on a Ray cluster: ``ragline ingest PATH --ray auto|ADDRESS``.

The ingesting process keeps what needs the store: it walks the sources, skips unchanged files,
reads and hashes the rest, commits batches, and prunes. Parsing and chunking run in Ray tasks
(a few files each, the bytes shipped through Ray's object store, so workers need no shared file
system); embedding runs in Ray actors that load the model once. Results come back in file order
and are committed in the same bounded batches, with the same chunk ids, as a local run
(tests/ingest/test_ray.py checks the index is identical).

Failures: a file's own failure (a parse error) is that file's failure, as in a local run. A task
whose worker process dies is retried by Ray (``TASK_RETRIES``); an embedding actor that dies is
restarted and its call retried. Writes replace a document's chunks atomically, so a retried
batch never duplicates anything. Workers import ragline: on a remote cluster it must be
installed there (docs/scale.md).
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ragline.config import EmbedSettings, Settings
from ragline.embed.base import Tokenizer
from ragline.ingest.chunkers import ChunkPlan
from ragline.ingest.parsers import ParseError
from ragline.ingest.parsers.base import short
from ragline.ingest.sync import Pending, build_item
from ragline.ingest.worker import ParseLimits

TASK_RETRIES = 3  # a parse task whose worker died is run again this many times
FILES_PER_TASK = 8
TASK_BYTES = 8 * 2**20  # a task is sent once its files hold this many bytes


class RayError(Exception):
    """Ray is missing or the cluster cannot be reached; the message says what to do."""


def tokenizer_for(embed: EmbedSettings) -> tuple[Tokenizer, int]:
    """The embedding model's tokenizer and window without loading the model (what chunking
    needs): the tokenizer files of the model directory, the window from its sentence-transformers
    configuration. An endpoint model counts with the bundled tokenizer, as ``Engine`` does."""
    from transformers import AutoTokenizer

    from ragline.embed.local import HFTokenizer, bundled_model_path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if embed.provider == "openai":
        return HFTokenizer(AutoTokenizer.from_pretrained(str(bundled_model_path()))), embed.max_tokens or 512
    path = bundled_model_path() if embed.model.startswith("bundled:") else Path(embed.model).expanduser()
    hf = AutoTokenizer.from_pretrained(str(path))
    window = hf.model_max_length
    cfg = path / "sentence_bert_config.json"
    if cfg.exists():
        window = json.loads(cfg.read_text("utf-8")).get("max_seq_length") or window
    return HFTokenizer(hf), int(window) - 2


# -- in a worker process ---------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _worker_state(embed_json: str, limits: ParseLimits) -> dict[str, Any]:
    """Per worker process, built on its first task: the tokenizer and a parser (whose own child
    process keeps the time and memory limits of a local run)."""
    key = (embed_json, limits)
    if _WORKER.get("key") != key:
        from ragline.ingest.worker import open_parser

        if "parser" in _WORKER:
            _WORKER["parser"].close()
        tok, window = tokenizer_for(EmbedSettings.model_validate_json(embed_json))
        _WORKER.update(key=key, tokenizer=tok, window=window, parser=open_parser(limits))
    return _WORKER


def build_batch(pendings: Sequence[Pending], embed_json: str, plan: ChunkPlan, fingerprint: str,
                limits: ParseLimits) -> list:
    """Parse and chunk each pending file; a file's failure is returned in its place (a ParseError,
    or a RuntimeError carrying an unexpected error's message), never raised."""
    from ragline.ingest.indexer import chunk_record

    state = _worker_state(embed_json, limits)
    out: list = []
    for p in pendings:
        try:
            out.append(build_item(p, state["parser"].parse,
                                  lambda doc, rec: chunk_record(doc, rec, plan, state["tokenizer"], state["window"],
                                                                fingerprint)))
        except ParseError as exc:
            out.append(ParseError(exc.reason))
        except Exception as exc:
            out.append(RuntimeError(short(exc)))
    return out


class _EmbedWorker:
    """A Ray actor holding one embedding model, loaded once."""

    def __init__(self, settings_json: str) -> None:
        from ragline.app import Engine

        self.embedder = Engine(Settings.model_validate_json(settings_json)).embedder

    def info(self) -> tuple[str, int]:
        return self.embedder.model_id, self.embedder.dim

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embedder.embed_documents(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embedder.embed_query(text)


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once on an address nothing listens at (Ray itself retries for minutes)."""
    import socket

    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RayError(f"not a Ray cluster address: {address!r}; give host:port, ray://host:port or 'auto'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RayError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def _notices_to_stderr() -> None:
    """Ray's driver prints the cluster's notices (such as "a worker died ... retrying") on stdout,
    where they would corrupt ``--json`` output; send them to stderr. This reaches into a private
    Ray function, so it is skipped when a Ray version lacks it."""
    from ray._private import worker

    show = getattr(worker, "print_to_stdstream", None)
    if show is None or getattr(show, "_ragline", False):
        return

    def to_stderr(data, *args, **kwargs):
        return show({**data, "is_err": True}, *args, **kwargs)

    to_stderr._ragline = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


# -- in the ingesting process ----------------------------------------------------------------------
class RayEmbedder:
    """The ``Embedder`` protocol over the embedding actors: a batch is split among them."""

    def __init__(self, actors: list, tokenizer: Tokenizer, max_tokens: int) -> None:
        import ray

        self._ray, self.actors = ray, actors
        self.model_id, self.dim = ray.get(actors[0].info.remote())
        self.tokenizer, self.max_tokens = tokenizer, max_tokens

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        step = -(-len(texts) // len(self.actors))
        refs = [a.embed.remote(texts[i:i + step]) for a, i in zip(self.actors, range(0, len(texts), step))]
        return np.concatenate(self._ray.get(refs)).astype(np.float32, copy=False)

    def embed_query(self, text: str) -> np.ndarray:
        return self._ray.get(self.actors[0].embed_query.remote(text))


@dataclass
class RayIngest:
    """A Ray session for one ingest run: ``embedder`` for the Engine, ``build`` for the Syncer.
    ``address`` is "auto" (a running cluster if one is found, else a local instance started for
    this run) or a cluster address (``ray://host:10001`` or ``host:6379``)."""

    settings: Settings
    address: str = "auto"
    embedders: int | None = None  # embedding actors; default: one per two CPUs of the cluster
    in_flight: int | None = None  # parse tasks submitted ahead; default: two per CPU

    def __enter__(self) -> "RayIngest":
        try:
            import ray
        except ImportError:
            raise RayError("--ray needs Ray: pip install 'ragline[ray]'") from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            kw: dict[str, Any] = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                                      configure_logging=False)
            try:
                if self.address == "auto":
                    try:
                        ray.init(address="auto", **kw)
                    except ConnectionError:
                        ray.init(**kw)  # no cluster running: a local one for this run
                else:
                    _reachable(self.address)
                    ray.init(address=self.address, **kw)
            except RayError:
                raise
            except Exception as exc:
                raise RayError(f"cannot reach the Ray cluster at {self.address}: {short(exc)}") from None
        _notices_to_stderr()
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        n = self.embedders or max(1, cpus // 2)
        actor = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(_EmbedWorker)
        settings_json = self.settings.model_dump_json()
        self._actors = [actor.remote(settings_json) for _ in range(n)]
        tok, window = tokenizer_for(self.settings.embed)
        self.embedder = RayEmbedder(self._actors, tok, window)
        self._task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(build_batch)
        self._window = self.in_flight or 2 * cpus
        self._fingerprint = ChunkPlan(self.settings.chunk.strategy, self.settings.chunk.size,
                                      self.settings.chunk.overlap,
                                      self.settings.chunk.title_prefix).fingerprint(self.embedder.model_id)
        return self

    def __exit__(self, *exc: object) -> None:
        for a in getattr(self, "_actors", []):
            self._ray.kill(a)
        if self._started:
            self._ray.shutdown()

    def build(self, pendings: Iterator[Pending]) -> Iterator[tuple[Pending, Any]]:
        c = self.settings.chunk
        plan = ChunkPlan(c.strategy, c.size, c.overlap, c.title_prefix)
        limits = ParseLimits.from_settings(self.settings.ingest)
        embed_json = self.settings.embed.model_dump_json()
        window: deque = deque()
        group: list[Pending] = []

        def send() -> None:
            window.append((group[:], self._task.remote(group[:], embed_json, plan, self._fingerprint, limits)))
            group.clear()

        def collect():
            files, ref = window.popleft()
            try:
                results = self._ray.get(ref)
            except Exception as exc:  # the task failed past its retries
                results = [RuntimeError(f"parse worker lost: {short(exc)}")] * len(files)
            yield from zip(files, results)

        for p in pendings:
            group.append(p)
            if len(group) >= FILES_PER_TASK or sum(len(g.data) for g in group) >= TASK_BYTES:
                send()
                while len(window) >= self._window:
                    yield from collect()
        if group:
            send()
        while window:
            yield from collect()
