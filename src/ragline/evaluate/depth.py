"""Rerank depth curves: does "retrieve more and rerank" pay over "retrieve fewer, no rerank"?

``eval run --depths 20,50,100`` turns each configuration that reranks into one configuration per
candidate depth (``NAME@20``, ...); ``eval report`` then shows, per reranker, nDCG@10 and p50/p99
latency at each depth beside the first configuration of the same mode that does not rerank (the
baseline), so the gain and its latency cost sit in one row.
"""

from __future__ import annotations

from typing import Any, Sequence

from ragline.evaluate.experiments import ExperimentConfig, ExperimentError


def parse_depths(text: str | None) -> list[int]:
    """``"20,50,100"`` -> [20, 50, 100]; each a whole number from 1 to 1000."""
    if not text:
        return []
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part.isdigit() or not 1 <= int(part) <= 1000:
            raise ExperimentError(f"--depths: '{part}' is not a whole number from 1 to 1000 (e.g. --depths 20,50,100)")
        out.append(int(part))
    return sorted(set(out))


def expand_depths(configs: Sequence[ExperimentConfig], depths: Sequence[int]) -> list[ExperimentConfig]:
    """Every configuration that reranks becomes one per depth (``NAME@D``, ``rerank.depth = D``);
    the others (the baselines) stay as they are."""
    if not depths:
        return list(configs)
    if not any(c.settings.rerank.method != "none" for c in configs):
        raise ExperimentError("--depths needs a configuration that reranks, e.g. "
                              "-c 'minilm:rerank.method=minilm' (and a baseline without rerank)")
    out: list[ExperimentConfig] = []
    for c in configs:
        if c.settings.rerank.method == "none":
            out.append(c)
            continue
        for d in depths:
            rerank = c.settings.rerank.model_copy(update={"depth": d})
            overrides = {**c.overrides, "rerank": {**c.overrides.get("rerank", {}), "depth": d}}
            out.append(ExperimentConfig(f"{c.name}@{d}", c.source, overrides,
                                        c.settings.model_copy(update={"rerank": rerank})))
    return out


def depth_rows(configs: Sequence[Any], metric: str = "ndcg@10") -> list[dict[str, Any]]:
    """One row per reranked configuration (report ``ConfigView``s), with its baseline's figures.

    Row: config, reranker, depth, mode, value, baseline (name), baseline_value, delta, p50, p99,
    baseline_p50, baseline_p99. Empty when no configuration reranks."""
    def rerank_of(c: Any) -> dict:
        r = (c.settings or {}).get("rerank") or {}
        return r if isinstance(r, dict) else {}

    baselines: dict[str, Any] = {}
    for c in configs:
        if rerank_of(c).get("method", "none") == "none":
            baselines.setdefault(c.mode, c)
    rows = []
    for c in configs:
        r = rerank_of(c)
        if r.get("method", "none") == "none":
            continue
        base = baselines.get(c.mode)
        value = c.metrics.get(metric)
        base_value = base.metrics.get(metric) if base else None
        rows.append({"config": c.name, "reranker": r.get("method"), "depth": r.get("depth"), "mode": c.mode,
                     "value": value, "baseline": base.name if base else None, "baseline_value": base_value,
                     "delta": value - base_value if value is not None and base_value is not None else None,
                     "p50": c.latency_ms.get("p50"), "p99": c.latency_ms.get("p99"),
                     "baseline_p50": base.latency_ms.get("p50") if base else None,
                     "baseline_p99": base.latency_ms.get("p99") if base else None})
    rows.sort(key=lambda r: (str(r["reranker"]), r["mode"], r["depth"] or 0))
    return rows
