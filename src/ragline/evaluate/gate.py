"""A retrieval regression gate: compare two ``ragline eval beir --output`` files query by query.

For each (mode, metric) the per-query values of the two files are paired over the query ids they
share. ``drop = mean(baseline) - mean(current)``. A one-sided paired bootstrap asks whether the drop
beyond the allowance is real: resample the query ids with replacement ``resamples`` times, recompute
the mean paired difference, and let ``p`` be the share of resamples whose drop is ``<= max_drop``.
A check fails when ``drop > max_drop`` and ``p < alpha``; a drop past the allowance that a few queries
alone account for is not significant and passes.

Pure functions over already-parsed JSON objects: the CLI reads the files.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

# float noise allowance: a drop of exactly max_drop, computed as a difference of means, is within it
EPS = 1e-12
_BLOCK_CELLS = 2_000_000  # resampled indices held in memory at once


class GateInputError(ValueError):
    """A result object or a gate parameter is unusable; the message says which and why."""


@dataclass(frozen=True)
class Check:
    mode: str
    metric: str
    passed: bool
    queries: int = 0  # queries in common, the bootstrap's sample size
    baseline: float | None = None  # mean over the common queries
    current: float | None = None
    drop: float | None = None  # baseline - current
    p: float | None = None  # share of resamples with drop <= max_drop
    reason: str = ""

    @property
    def verdict(self) -> str:
        if not self.passed:
            return "FAIL"
        if self.reason:  # a passing check has a reason only when its drop is past the allowance
            return "pass (not significant)"
        return "pass"


@dataclass(frozen=True)
class GateResult:
    checks: tuple[Check, ...]
    problems: tuple[str, ...]  # failures that concern the files as a whole (e.g. different datasets)
    max_drop: float
    alpha: float
    resamples: int
    seed: int

    @property
    def passed(self) -> bool:
        return not self.problems and all(c.passed for c in self.checks)

    def failures(self) -> list[str]:
        """One line per reason the gate fails; empty when it passes."""
        return list(self.problems) + [f"{c.mode} {c.metric}: {c.reason}" for c in self.checks if not c.passed]

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "max_drop": self.max_drop, "alpha": self.alpha,
                "resamples": self.resamples, "seed": self.seed, "problems": list(self.problems),
                "checks": [{**asdict(c), "verdict": c.verdict} for c in self.checks],
                "failures": self.failures()}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate(data: Any, label: str) -> None:
    """Raise GateInputError unless ``data`` has a dataset_fingerprint and a well-formed per_query
    (mode -> query id -> metric -> finite number)."""
    if not isinstance(data, dict):
        raise GateInputError(f"{label}: expected a JSON object from `ragline eval beir --output`, "
                             f"got {type(data).__name__}")
    fp = data.get("dataset_fingerprint")
    if not isinstance(fp, str) or not fp:
        raise GateInputError(f"{label}: no dataset_fingerprint; write it with `ragline eval beir --output FILE`")
    per_query = data.get("per_query")
    if not isinstance(per_query, dict):
        raise GateInputError(f"{label}: no per_query results; write them with `ragline eval beir --output FILE`")
    for mode, queries in per_query.items():
        if not isinstance(queries, dict):
            raise GateInputError(f"{label}: per_query.{mode} is not an object of query ids")
        for qid, values in queries.items():
            if not isinstance(values, dict):
                raise GateInputError(f"{label}: per_query.{mode}.{qid} is not an object of metrics")
            for metric, v in values.items():
                if not _is_number(v):
                    raise GateInputError(f"{label}: per_query.{mode}.{qid}.{metric} is not a finite number ({v!r})")


def bootstrap_p(diffs: Sequence[float] | np.ndarray, max_drop: float, resamples: int = 10000,
                seed: int = 0) -> float:
    """One-sided paired bootstrap: the share of resamples (query ids drawn with replacement,
    ``numpy.random.default_rng(seed)``) whose mean of ``diffs`` (baseline - current) is ``<= max_drop``.
    Small values mean the drop beyond ``max_drop`` is unlikely to be an accident of which queries
    happen to be in the set."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise GateInputError("bootstrap needs at least one paired difference")
    if resamples < 1:
        raise GateInputError(f"resamples must be at least 1, not {resamples}")
    n = d.size
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, _BLOCK_CELLS // n))
    within = done = 0
    while done < resamples:
        b = min(block, resamples - done)
        means = d[rng.integers(0, n, size=(b, n))].mean(axis=1)
        within += int(np.count_nonzero(means <= max_drop + EPS))
        done += b
    return within / resamples


def _values(per_query: Mapping[str, Mapping[str, float]], metric: str) -> dict[str, float]:
    return {qid: float(v[metric]) for qid, v in per_query.items() if metric in v}


def _check(mode: str, metric: str, baseline: Mapping[str, Any], current: Mapping[str, Any], max_drop: float,
           resamples: int, seed: int, alpha: float) -> Check:
    missing = [label for label, data in (("baseline", baseline), ("current", current))
               if mode not in data["per_query"]]
    if missing:
        return Check(mode, metric, False, reason=f"mode '{mode}' missing from {' and '.join(missing)}")
    b = _values(baseline["per_query"][mode], metric)
    c = _values(current["per_query"][mode], metric)
    missing = [label for label, vals in (("baseline", b), ("current", c)) if not vals]
    if missing:
        return Check(mode, metric, False, reason=f"metric '{metric}' missing from {' and '.join(missing)}")
    common = sorted(set(b) & set(c))  # sorted: the result depends on the content, not the files' key order
    if not common:
        return Check(mode, metric, False, reason="no queries in common between baseline and current")
    base = np.array([b[q] for q in common])
    cur = np.array([c[q] for q in common])
    drop = float(base.mean() - cur.mean())
    p = bootstrap_p(base - cur, max_drop, resamples, seed)
    beyond = drop > max_drop + EPS
    significant = beyond and p < alpha
    reason = ""
    if significant:
        reason = f"drop {drop:.4f} > {max_drop:g} and significant (p={p:.4f} < {alpha:g})"
    elif beyond:
        reason = f"drop {drop:.4f} > {max_drop:g} but not significant (p={p:.4f} >= {alpha:g})"
    return Check(mode, metric, not significant, len(common), float(base.mean()), float(cur.mean()), drop, p,
                 reason)


def compare(current: dict, baseline: dict, max_drop: float, metrics: list[str], modes: list[str] | None = None,
            resamples: int = 10000, seed: int = 0, alpha: float = 0.05) -> GateResult:
    """Gate ``current`` against ``baseline`` (both ``ragline eval beir --output`` objects).

    ``modes=None`` checks every mode of the baseline. Fails when any check's drop exceeds
    ``max_drop`` significantly, when a requested mode or metric is missing from either file, when the
    two share no query, or when they were measured on different data (dataset fingerprint or
    ``max_docs`` differ). Raises GateInputError for malformed objects or parameters.
    """
    validate(baseline, "baseline")
    validate(current, "current")
    if not _is_number(max_drop) or max_drop < 0:
        raise GateInputError(f"max_drop must be a number >= 0, not {max_drop!r}")
    if not _is_number(alpha) or not 0 < alpha < 1:
        raise GateInputError(f"alpha must be between 0 and 1, not {alpha!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise GateInputError(f"resamples must be an integer >= 1, not {resamples!r}")
    metrics = list(dict.fromkeys(metrics))
    if not metrics:
        raise GateInputError("give at least one metric")
    modes = list(dict.fromkeys(modes)) if modes else list(baseline["per_query"])
    if not modes:
        raise GateInputError("baseline: per_query has no modes")

    problems = []
    fb, fc = baseline["dataset_fingerprint"], current["dataset_fingerprint"]
    if fb != fc:
        problems.append(f"dataset fingerprints differ (baseline {fb}, current {fc}): "
                        "the two results were measured on different data")
    mb, mc = baseline.get("max_docs"), current.get("max_docs")
    if mb != mc:
        problems.append(f"max_docs differs (baseline {mb}, current {mc}): the two indexes hold different corpora")
    checks = tuple(_check(mode, metric, baseline, current, max_drop, resamples, seed, alpha)
                   for mode in modes for metric in metrics)
    return GateResult(checks, tuple(problems), float(max_drop), float(alpha), resamples, seed)
