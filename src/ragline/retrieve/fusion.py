"""Fusing ranked lists from several retrievers into one ranking."""

from __future__ import annotations

from typing import Mapping, Sequence

from ragline.types import Hit


FLOOR = 1e-6


def _merge_scores(hits: Mapping[str, Sequence[Hit]]) -> tuple[dict[str, Hit], dict[str, dict[str, float]]]:
    by_id: dict[str, Hit] = {}
    raw: dict[str, dict[str, float]] = {}
    for mode, ranked in hits.items():
        for h in ranked:
            by_id.setdefault(h.chunk.id, h)
            raw.setdefault(h.chunk.id, {})[mode] = h.score
    return by_id, raw


def rrf(hits: Mapping[str, Sequence[Hit]], k: int = 60, weights: Mapping[str, float] | None = None) -> list[Hit]:
    """Reciprocal rank fusion: score = sum over lists of w / (k + rank), rank from 1."""
    by_id, raw = _merge_scores(hits)
    fused: dict[str, float] = {}
    for mode, ranked in hits.items():
        w = 1.0 if weights is None else weights.get(mode, 0.0)
        for rank, h in enumerate(ranked, start=1):
            fused[h.chunk.id] = fused.get(h.chunk.id, 0.0) + w / (k + rank)
    order = sorted(fused, key=lambda cid: (-fused[cid], cid))
    return [Hit(by_id[c].chunk, fused[c], raw[c]) for c in order]


def minmax(hits: Mapping[str, Sequence[Hit]], weights: Mapping[str, float]) -> list[Hit]:
    """Weighted sum of min-max normalised scores; a chunk missing from a list scores 0 there."""
    by_id, raw = _merge_scores(hits)
    fused: dict[str, float] = {cid: 0.0 for cid in by_id}
    for mode, ranked in hits.items():
        if not ranked:
            continue
        scores = [h.score for h in ranked]
        lo, hi = min(scores), max(scores)
        span = hi - lo
        w = weights.get(mode, 0.0)
        for h in ranked:
            # present in a list scores in [FLOOR, 1]; absent scores 0: a list's last hit still
            # outranks what the list did not return at all
            norm = FLOOR + (1 - FLOOR) * (h.score - lo) / span if span > 0 else 1.0
            fused[h.chunk.id] += w * norm
    order = sorted(fused, key=lambda cid: (-fused[cid], cid))
    return [Hit(by_id[c].chunk, fused[c], raw[c]) for c in order]


def best_per_document(hits: Sequence[Hit]) -> list[Hit]:
    """Keep the highest-ranked chunk of each document, in rank order."""
    seen: set[str] = set()
    out = []
    for h in hits:
        if h.chunk.doc_id not in seen:
            seen.add(h.chunk.doc_id)
            out.append(h)
    return out
