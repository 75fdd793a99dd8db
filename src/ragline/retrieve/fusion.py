"""Fusing ranked candidate lists from several retrievers into one ranking.

Fusion works on light candidates (a backend row key, the document id and a score),
so only the final top k rows are ever fetched with their text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Mapping, Sequence

from ragline.store.base import Candidate

FLOOR = 1e-6


@dataclass(frozen=True)
class Fused:
    key: Hashable
    doc_id: str
    score: float
    scores: Mapping[str, float] = field(default_factory=dict)  # raw score per mode


def _merge(lists: Mapping[str, Sequence[Candidate]]) -> tuple[dict, dict[Hashable, dict[str, float]]]:
    doc_of: dict[Hashable, str] = {}
    raw: dict[Hashable, dict[str, float]] = {}
    for mode, ranked in lists.items():
        for c in ranked:
            doc_of.setdefault(c.key, c.doc_id)
            raw.setdefault(c.key, {})[mode] = c.score
    return doc_of, raw


def _ranked(fused: dict[Hashable, float], doc_of: dict, raw: dict) -> list[Fused]:
    order = sorted(fused, key=lambda key: (-fused[key], str(key)))
    return [Fused(k, doc_of[k], fused[k], raw[k]) for k in order]


def single(mode: str, ranked: Sequence[Candidate]) -> list[Fused]:
    """One list, unchanged, in the fused shape."""
    return [Fused(c.key, c.doc_id, c.score, {mode: c.score}) for c in ranked]


def rrf(lists: Mapping[str, Sequence[Candidate]], k: int = 60, weights: Mapping[str, float] | None = None) -> list[Fused]:
    """Reciprocal rank fusion: score = sum over lists of w / (k + rank), rank from 1."""
    doc_of, raw = _merge(lists)
    fused: dict[Hashable, float] = {}
    for mode, ranked in lists.items():
        w = 1.0 if weights is None else weights.get(mode, 0.0)
        for rank, c in enumerate(ranked, start=1):
            fused[c.key] = fused.get(c.key, 0.0) + w / (k + rank)
    return _ranked(fused, doc_of, raw)


def minmax(lists: Mapping[str, Sequence[Candidate]], weights: Mapping[str, float]) -> list[Fused]:
    """Weighted sum of min-max normalised scores; a chunk missing from a list scores 0 there."""
    doc_of, raw = _merge(lists)
    fused: dict[Hashable, float] = {key: 0.0 for key in doc_of}
    for mode, ranked in lists.items():
        if not ranked:
            continue
        scores = [c.score for c in ranked]
        lo, hi = min(scores), max(scores)
        span = hi - lo
        w = weights.get(mode, 0.0)
        for c in ranked:
            # present in a list scores in [FLOOR, 1]; absent scores 0: a list's last hit still
            # outranks what the list did not return at all
            norm = FLOOR + (1 - FLOOR) * (c.score - lo) / span if span > 0 else 1.0
            fused[c.key] += w * norm
    return _ranked(fused, doc_of, raw)


def best_per_document(ranked: Sequence[Fused]) -> list[Fused]:
    """Keep the highest-ranked chunk of each document, in rank order."""
    seen: set[str] = set()
    out = []
    for f in ranked:
        if f.doc_id not in seen:
            seen.add(f.doc_id)
            out.append(f)
    return out
