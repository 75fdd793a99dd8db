"""`ragline tune`: search a space of settings on a labelled BEIR set, report the quality-versus-
latency Pareto front, and write the chosen configuration.

The queries are split (deterministically, by a hash of their ids) into a tuning part, on which
the configuration is chosen, and a held-out part, on which the choice and the defaults are then
scored: a figure measured where it was chosen flatters it. Every configuration is run by
``experiments.run_experiment``, so indexes, the model and embeddings are shared.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ragline.evaluate.experiments import ExperimentConfig, ExperimentError, _parse_value, _resolve

# The default space: what moves retrieval quality and cost on a BEIR-style set. `retrieve.k` is not
# in it: ranking metrics at a fixed cut-off (nDCG@10) do not depend on how many results are shown.
DEFAULT_SPACE: dict[str, list[Any]] = {
    "chunk.size": [128, 256],
    "chunk.overlap": [0, 32],
    "retrieve.mode": ["dense", "sparse", "hybrid"],
    "retrieve.fusion": ["minmax", "rrf"],
    "retrieve.dense_weight": [0.3, 0.5, 0.7],
}


def parse_space(specs: Sequence[str]) -> dict[str, list[Any]]:
    """``section.key=v1,v2,...`` options into a space; none given: the default space."""
    if not specs:
        return {k: list(v) for k, v in DEFAULT_SPACE.items()}
    space: dict[str, list[Any]] = {}
    for spec in specs:
        dotted, eq, raw = spec.partition("=")
        section, dot, key = dotted.strip().partition(".")
        values = [_parse_value(v.strip()) for v in raw.split(",") if v.strip()]
        if not eq or not dot or not key or not values:
            raise ExperimentError(f"--space '{spec}': expected section.key=value1,value2,... "
                                  "(e.g. retrieve.dense_weight=0.3,0.5,0.7)")
        space[f"{section.strip()}.{key.strip()}"] = values
    return space


def _inert(values: dict[str, Any]) -> dict[str, Any]:
    """Drop settings that cannot change the result, so equivalent points are run once: fusion
    settings outside hybrid mode, the min-max weight under RRF."""
    out = dict(values)
    mode = out.get("retrieve.mode", "hybrid")
    if mode != "hybrid":
        out.pop("retrieve.fusion", None)
        out.pop("retrieve.dense_weight", None)
        out.pop("retrieve.rrf_k", None)
    elif out.get("retrieve.fusion") == "rrf":
        out.pop("retrieve.dense_weight", None)
    elif out.get("retrieve.fusion", "minmax") == "minmax":
        out.pop("retrieve.rrf_k", None)
    if out.get("chunk.strategy") == "structure":
        out.pop("chunk.overlap", None)
    return out


def _name(values: dict[str, Any]) -> str:
    if not values:
        return "defaults"
    short = {"chunk.size": "size", "chunk.overlap": "ovl", "retrieve.mode": "", "retrieve.fusion": "",
             "retrieve.dense_weight": "w"}
    parts = []
    for k, v in values.items():
        label = short.get(k, k.split(".", 1)[1])
        parts.append(f"{label}{v}" if label else str(v))
    return "-".join(parts)


def expand(space: dict[str, list[Any]], home: Path, max_configs: int = 200) -> list[ExperimentConfig]:
    """Every distinct point of the grid, plus the defaults, as configurations (invalid points,
    e.g. an overlap not below the size, are left out)."""
    keys = list(space)
    points: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*(space[k] for k in keys)):
        values = _inert(dict(zip(keys, combo)))
        sig = repr(sorted(values.items()))
        points.setdefault(sig, values)
    configs = [_resolve("defaults", "ragline defaults", {}, home)]
    seen_settings = {repr(configs[0].resolved())}
    for values in points.values():
        nested: dict[str, dict[str, Any]] = {}
        for dotted, v in values.items():
            section, _, key = dotted.partition(".")
            nested.setdefault(section, {})[key] = v
        try:
            cfg = _resolve(_name(values), "tune: " + ", ".join(f"{k}={v}" for k, v in values.items()), nested, home)
        except ExperimentError:
            raise
        except Exception:  # a point the settings reject (e.g. overlap >= size): not a configuration
            continue
        sig = repr(cfg.resolved())
        if sig in seen_settings:
            continue
        seen_settings.add(sig)
        configs.append(cfg)
    if len(configs) > max_configs:
        raise ExperimentError(f"the space has {len(configs)} configurations, more than --max-configs "
                              f"{max_configs}; narrow it with --space")
    return configs


def split_queries(qids: Sequence[str], holdout: float) -> tuple[list[str], list[str]]:
    """(tuning ids, held-out ids): a query is held out when a hash of its id falls below ``holdout``."""
    tune, held = [], []
    for q in qids:
        h = int(hashlib.sha256(f"ragline-tune:{q}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held if h < holdout else tune).append(q)
    if not tune:  # tiny sets: tune on everything
        return list(qids), []
    return tune, held


def _mean(per_query: dict[str, dict[str, Any]], ids: Sequence[str], metric: str) -> float | None:
    vals = [per_query[q][metric] for q in ids if q in per_query]
    return round(sum(vals) / len(vals), 4) if vals else None


@dataclass
class Point:
    name: str
    quality: float
    latency: float

    def dominates(self, other: "Point") -> bool:
        return (self.quality >= other.quality and self.latency <= other.latency
                and (self.quality > other.quality or self.latency < other.latency))


def pareto(points: Sequence[Point]) -> list[str]:
    """Names of the points no other point dominates (higher quality at no more latency), by latency."""
    front = [p for p in points if not any(o.dominates(p) for o in points if o is not p)]
    return [p.name for p in sorted(front, key=lambda p: (p.latency, -p.quality))]


def choose(points: Sequence[Point], max_latency_ms: float | None, tolerance: float) -> Point | None:
    """The best quality (within ``tolerance`` of the best, the fastest of those), among points
    under the latency budget when one is set."""
    pool = [p for p in points if max_latency_ms is None or p.latency <= max_latency_ms]
    if not pool:
        return None
    best = max(p.quality for p in pool)
    near = [p for p in pool if p.quality >= best - tolerance]
    return min(near, key=lambda p: (p.latency, -p.quality))


def analyse(result: dict[str, Any], metric: str, holdout: float, max_latency_ms: float | None,
            tolerance: float, latency_key: str = "p50") -> dict[str, Any]:
    """From an experiment result: per-configuration quality on the tuning and held-out queries,
    the Pareto front (tuning quality vs latency), and the choice."""
    configs = result["configs"]
    qids = list(result.get("query_text") or next(iter(configs.values()))["per_query"])
    tune_ids, held_ids = split_queries(qids, holdout)
    rows, points = [], []
    for name, c in configs.items():
        pq = c["per_query"]
        if metric not in next(iter(pq.values()), {}):
            raise ExperimentError(f"unknown metric '{metric}'; the results have "
                                  f"{', '.join(k for k in next(iter(pq.values())) if k not in ('latency_ms', 'top'))}")
        row = {"name": name, "overrides": c["overrides"], "tune": _mean(pq, tune_ids, metric),
               "holdout": _mean(pq, held_ids, metric), "latency_ms": c["latency_ms"][latency_key],
               "index": c["index"]["key"]}
        rows.append(row)
        points.append(Point(name, row["tune"] or 0.0, row["latency_ms"]))
    front = pareto(points)
    chosen = choose(points, max_latency_ms, tolerance)
    for row in rows:
        row["pareto"] = row["name"] in front
    return {"metric": metric, "latency": latency_key, "holdout_fraction": holdout,
            "queries": {"tune": len(tune_ids), "holdout": len(held_ids)},
            "max_latency_ms": max_latency_ms, "tolerance": tolerance,
            "configs": sorted(rows, key=lambda r: -(r["tune"] or 0.0)), "pareto": front,
            "chosen": chosen.name if chosen else None}


def chosen_toml(analysis: dict[str, Any], result: dict[str, Any]) -> str:
    """The chosen configuration as a config.toml fragment (only what differs from the defaults)."""
    name = analysis["chosen"]
    row = next(r for r in analysis["configs"] if r["name"] == name)
    lines = [f"# written by `ragline tune` on {result.get('dataset')} ({result.get('queries')} queries, "
             f"{result.get('documents')} documents)",
             f"# {analysis['metric']}: {row['tune']} on {analysis['queries']['tune']} tuning queries, "
             f"{row['holdout']} held out ({analysis['queries']['holdout']}); "
             f"{analysis['latency']} latency {row['latency_ms']} ms", f"# configuration: {name}"]
    from ragline.config import Settings

    for section, values in sorted(row["overrides"].items()):
        defaults = Settings.model_fields[section].annotation().model_dump()  # type: ignore[misc, union-attr]
        changed = {k: v for k, v in values.items() if defaults.get(k) != v}
        if changed:
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in changed.items()]
    if len(lines) == 3:
        lines.append("# (the defaults: nothing to set)")
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
