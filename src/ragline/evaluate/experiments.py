"""`ragline eval run DATASET --config A.toml --config B.toml`: score several configurations on the same
BEIR dataset, sharing what can be shared, into one results file.

A configuration is ragline's defaults overlaid with a TOML file holding ``[chunk]``, ``[embed]``,
``[retrieve]`` and ``[rerank]`` sections (the same keys as ``config.toml``), or an inline
``NAME:section.key=value,...`` spec. The home's config.toml and ``RAGLINE_*`` variables are not applied
(except the keys ``RAGLINE_EMBED__API_KEY`` and ``RAGLINE_RERANK__API_KEY``), so a results file says
everything a configuration was. ``--depths`` (evaluate/depth.py) turns a reranking configuration into one
per candidate depth.

Sharing:
- the dataset is read, parsed and sliced once;
- configurations with the same embedding settings share one loaded model;
- one embedding cache (``HOME/embeddings.sqlite``, keyed by model id + text hash) serves every
  configuration, so chunk texts that two chunk plans have in common are embedded once;
- configurations that differ only in search-time retrieval settings share one index: indexes are keyed
  by the chunk plan fingerprint (which names the embedding model), the index-build settings and the
  documents indexed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ragline.config import ConfigError, Settings
from ragline.evaluate.beir import METRICS, BeirDataset, index_corpus, score_query
from ragline.evaluate.metrics import percentile

FORMAT = "ragline-experiment/1"
SECTIONS = ("chunk", "embed", "retrieve", "rerank")  # what a configuration may set
# retrieve settings that shape the index (not only the search): part of the index key
INDEX_RETRIEVE_KEYS = ("ann_min_rows", "hnsw_m", "hnsw_ef_construction")
DEPTH = 100  # documents ranked per query, as `eval beir`
TOP_SAVED = 10  # ranked document ids kept per query in the results
LATENCY_PERCENTILES = (50, 90, 95, 99)


class ExperimentError(Exception):
    """A configuration or an option the user can fix; the message names the file and the setting."""


# ------------------------------------------------------------------------------ configurations
@dataclass
class ExperimentConfig:
    name: str
    source: str  # the file path, or "inline: SPEC"
    overrides: dict[str, dict[str, Any]]  # section -> key -> value, as written
    settings: Settings

    def resolved(self) -> dict[str, Any]:
        """The full configuration (every field, defaults included) of the sections that matter, keys hidden."""
        data = self.settings.model_dump(mode="json", include=set(SECTIONS))
        for section in ("embed", "rerank"):
            if data[section].get("api_key"):
                data[section]["api_key"] = "***"
        return data


def _check_keys(values: dict[str, Any], where: str) -> None:
    for section, body in values.items():
        if section not in SECTIONS:
            extra = " (llm and ingest settings do not affect retrieval scores)" if section in ("llm", "ingest") else ""
            raise ExperimentError(f"{where}: unknown setting section '{section}'{extra}; "
                                  f"a configuration may set {', '.join(SECTIONS)}")
        if not isinstance(body, dict):
            raise ExperimentError(f"{where}: '{section}' must be a table ([{section}]), not a value")
        known = Settings.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
        for key in body:
            if key not in known:
                raise ExperimentError(f"{where}: unknown setting {section}.{key}; "
                                      f"{section} has {', '.join(known)}")


def _resolve(name: str, source: str, values: dict[str, Any], home: Path) -> ExperimentConfig:
    _check_keys(values, source)
    values = {s: dict(v) for s, v in values.items()}
    merged: dict[str, Any] = {s: dict(values.get(s, {})) for s in SECTIONS}
    for section in ("embed", "rerank"):
        key = os.environ.get(f"RAGLINE_{section.upper()}__API_KEY")
        if key and "api_key" not in merged[section]:
            merged[section]["api_key"] = key
    from pydantic import ValidationError

    sections: dict[str, Any] = {}
    try:
        for section in SECTIONS:  # each section model alone: no environment, no config.toml
            model = Settings.model_fields[section].annotation
            sections[section] = model.model_validate(merged[section])  # type: ignore[union-attr]
    except ValidationError as exc:
        problems = "; ".join(f"{section}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"configuration '{name}' ({source}): invalid settings: {problems}") from None
    settings = Settings.model_construct(home=home, **sections)
    return ExperimentConfig(name, source, values, settings)


def _parse_value(text: str) -> Any:
    """A TOML value (``256``, ``0.3``, ``true``, ``"rrf"``), or the bare text as a string (``rrf``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def parse_inline(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME:section.key=value,section.key=value`` (``NAME:`` alone = the defaults)."""
    name, _, body = spec.partition(":")
    name = name.strip()
    if not name:
        raise ExperimentError(f"config '{spec}': an inline configuration starts with its name, "
                              "e.g. 'dense:retrieve.mode=dense'")
    values: dict[str, dict[str, Any]] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        dotted, eq, raw = part.partition("=")
        section, dot, key = dotted.strip().partition(".")
        if not eq or not dot or not key:
            raise ExperimentError(f"config '{spec}': expected section.key=value, got '{part}'")
        values.setdefault(section, {})[key.strip()] = _parse_value(raw.strip())
    return name, values


def load_config(spec: str, home: Path) -> ExperimentConfig:
    """A configuration from a ``.toml`` file (named by its ``name`` key or its file stem) or an inline spec."""
    if spec.endswith(".toml"):
        path = Path(spec)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ExperimentError(f"config file {path} not found") from None
        except OSError as exc:
            raise ExperimentError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ExperimentError(f"config file {path} is not UTF-8 text") from None
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ExperimentError(f"config file {path}: not valid TOML ({exc})") from None
        name = values.pop("name", path.stem)
        if not isinstance(name, str) or not name.strip():
            raise ExperimentError(f"config file {path}: 'name' must be a non-empty string")
        return _resolve(name.strip(), str(path), values, home)
    if ":" in spec:
        name, values = parse_inline(spec)
        return _resolve(name, f"inline: {spec}", values, home)
    raise ExperimentError(f"config '{spec}': give a .toml file or an inline NAME:section.key=value,... "
                          "(e.g. 'dense:retrieve.mode=dense')")


def load_configs(specs: Sequence[str], home: Path) -> list[ExperimentConfig]:
    if not specs:
        raise ExperimentError("give at least one --config (a .toml file or NAME:section.key=value,...)")
    configs = [load_config(s, home) for s in specs]
    seen: dict[str, str] = {}
    for c in configs:
        if c.name in seen:
            raise ExperimentError(f"two configurations are named '{c.name}' ({seen[c.name]} and {c.source}); "
                                  "set `name = \"...\"` in one of the files")
        seen[c.name] = c.source
    return configs


# ------------------------------------------------------------------------------ the dataset, once
class CachedDataset(BeirDataset):
    """A (possibly sliced) BEIR dataset whose corpus rows are read and parsed once, then kept in memory."""

    def __init__(self, ds: BeirDataset) -> None:
        super().__init__(ds.path, dict(ds.queries), dict(ds.qrels), ds.n_docs)
        self._source = ds
        self._rows: list[dict] | None = None
        self.reads = 0  # times the corpus file was parsed (1 after any number of index builds)

    def corpus(self) -> Iterator[dict]:
        if self._rows is None:
            self.reads += 1
            self._rows = list(self._source.corpus())
        return iter(self._rows)

    def doc_ids_digest(self) -> str:
        h = hashlib.sha256()
        for row in self.corpus():
            h.update(str(row.get("_id")).encode() + b"\0")
        return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------ results
@dataclass
class IndexInfo:
    key: str
    chunk_fingerprint: str
    embedding_model: str
    path: str
    built_by: str  # first configuration that needed it
    reused_from_disk: bool = False
    used_by: list[str] = field(default_factory=list)
    ingest: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "chunk_fingerprint": self.chunk_fingerprint, "embedding_model": self.embedding_model,
                "built_by": self.built_by, "reused_from_disk": self.reused_from_disk, "used_by": list(self.used_by),
                "ingest": self.ingest}


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    out = {f"p{q}": round(percentile(values, q), 2) for q in LATENCY_PERCENTILES}
    out["mean"] = round(sum(values) / len(values), 2) if values else 0.0
    out["max"] = round(max(values), 2) if values else 0.0
    return out


def run_queries(ds: BeirDataset, retriever, mode: str, progress: Callable[[int], None] | None = None
                ) -> dict[str, dict[str, Any]]:
    """Per query: every metric of ``METRICS``, the search latency in ms and the top document ids.

    One untimed search first, so lazily loaded parts of the index (vectors, BM25) are warm for every
    configuration alike."""
    from ragline.retrieve.search import SearchRequest

    if ds.queries:
        retriever.search(SearchRequest(next(iter(ds.queries.values())), k=DEPTH, mode=mode, aggregate="document"))
    per_query: dict[str, dict[str, Any]] = {}
    for i, (qid, text) in enumerate(ds.queries.items()):
        t = time.perf_counter()
        hits = retriever.search(SearchRequest(text, k=DEPTH, mode=mode, aggregate="document"))  # type: ignore[arg-type]
        ms = (time.perf_counter() - t) * 1000
        ranked = [h.chunk.doc_id for h in hits]
        values = {k: round(v, 6) for k, v in score_query(ranked, ds.qrels[qid]).items()}
        per_query[qid] = {**values, "latency_ms": round(ms, 3), "top": ranked[:TOP_SAVED]}
        if progress:
            progress(i + 1)
    return per_query


def summarise(per_query: dict[str, dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    n = max(1, len(per_query))
    metrics = {m: round(sum(q[m] for q in per_query.values()) / n, 4) for m in METRICS}
    return metrics, latency_summary([q["latency_ms"] for q in per_query.values()])


def git_info(where: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding ragline's source, or (None, None) outside one."""
    where = where or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return commit.stdout.strip() or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


Event = Callable[[str, dict], None]


def run_experiment(ds: BeirDataset, configs: Sequence[ExperimentConfig], *, home: Path, index_root: Path,
                   meta: dict[str, Any], on_event: Event | None = None) -> dict[str, Any]:
    """Score every configuration on ``ds`` (already limited to the queries and documents to use).

    ``index_root`` holds one index directory per index key; an index there with a completion marker
    from an earlier run (same key: same chunk plan, model, build settings and documents) is reused.
    ``meta`` (dataset path, fingerprint, slice options) is copied into the result."""
    from ragline import __version__
    from ragline.app import Engine

    emit = on_event or (lambda kind, data: None)
    t_start = time.perf_counter()
    data = CachedDataset(ds)
    docs_digest = data.doc_ids_digest()
    cache = Engine.open_cache(home)
    embedders: dict[str, Any] = {}
    indexes: dict[str, IndexInfo] = {}
    stores: dict[str, Any] = {}
    results: dict[str, Any] = {}
    cache_before = cache.count()
    try:
        for cfg in configs:
            embed_key = json.dumps(cfg.settings.embed.model_dump(mode="json"), sort_keys=True)
            if embed_key not in embedders:
                emit("model", {"config": cfg.name, "model": cfg.settings.embed.model})
                embedders[embed_key] = Engine(cfg.settings).embedder
            embedder = embedders[embed_key]
            engine = Engine(cfg.settings, embedder=embedder, cache=cache)
            plan_fp = engine.plan.fingerprint(embedder.model_id)
            r = cfg.settings.retrieve
            key = hashlib.sha256(json.dumps({
                "chunk": plan_fp, "build": {k: getattr(r, k) for k in INDEX_RETRIEVE_KEYS},
                "dataset": meta.get("dataset_fingerprint"), "documents": docs_digest,
            }, sort_keys=True).encode()).hexdigest()[:16]
            if key not in indexes:
                path = index_root / key
                info = IndexInfo(key, plan_fp, embedder.model_id, str(path), cfg.name)
                marker = path / "complete.json"
                previous = _read_marker(marker)
                if previous is not None:
                    info.reused_from_disk = True
                    info.ingest = previous
                    emit("index-reuse", {"config": cfg.name, "key": key})
                    stores[key] = engine.open_store(path / "lance")
                else:
                    if path.exists():  # an interrupted build: start over
                        shutil.rmtree(path)
                    store = engine.open_store(path / "lance")
                    indexer = engine.indexer(store)
                    emit("index-start", {"config": cfg.name, "key": key, "documents": data.n_docs})
                    stats = index_corpus(data, indexer,
                                         progress=lambda done, chunks: emit("index-progress",
                                                                            {"done": done, "chunks": chunks}))
                    stats["from_cache"] = stats["chunks"] - stats["embedded"]
                    info.ingest = {k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()}
                    marker.write_text(json.dumps(info.ingest), encoding="utf-8")
                    stores[key] = store
                indexes[key] = info
                shared = False
            else:
                shared = True
                emit("index-shared", {"config": cfg.name, "key": key, "built_by": indexes[key].built_by})
            indexes[key].used_by.append(cfg.name)
            retriever = engine.retriever_for(stores[key])
            emit("query-start", {"config": cfg.name, "queries": len(data.queries), "mode": r.mode})
            t = time.perf_counter()
            per_query = run_queries(data, retriever, r.mode,
                                    progress=lambda i: emit("query-progress", {"config": cfg.name, "done": i}))
            metrics, latency = summarise(per_query)
            results[cfg.name] = {
                "source": cfg.source, "overrides": cfg.overrides, "settings": cfg.resolved(),
                "embedding_model": embedder.model_id, "mode": r.mode,
                "rerank": ({"method": cfg.settings.rerank.method, "depth": cfg.settings.rerank.depth}
                           if cfg.settings.rerank.method != "none" else None),
                "index": {"key": key, "shared": shared, "built_by": indexes[key].built_by},
                "metrics": metrics, "latency_ms": latency, "query_seconds": round(time.perf_counter() - t, 3),
                "per_query": per_query,
            }
        cache_after = cache.count()
    finally:
        cache.close()
    commit, dirty = git_info()
    return {
        "format": FORMAT, **meta,
        "documents": data.n_docs, "queries": len(data.queries),
        "ragline_version": __version__, "git_commit": commit, "git_dirty": dirty,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t_start, 3),
        "sharing": {"corpus_reads": data.reads, "models_loaded": len(embedders), "indexes_built":
                    sum(1 for i in indexes.values() if not i.reused_from_disk),
                    "indexes_reused_from_disk": sum(1 for i in indexes.values() if i.reused_from_disk),
                    "embedding_cache": {"path": str(home / "embeddings.sqlite"), "vectors_before": cache_before,
                                        "vectors_after": cache_after}},
        "indexes": {k: i.as_dict() for k, i in indexes.items()},
        "query_text": dict(data.queries),
        "configs": results,
    }


def _read_marker(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
