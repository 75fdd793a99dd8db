"""The reranker protocol and the stage that applies one to retrieved hits."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, Sequence

from ragline.types import Hit


class RerankError(Exception):
    """A reranker could not be loaded or called; the message says what to fix."""


@dataclass(frozen=True)
class Scored:
    """One reranked document: its position in the input list and its relevance score."""

    index: int
    score: float


class Reranker(Protocol):
    """Scores documents against a query. ``rerank`` returns one ``Scored`` per input document
    (or the ``top_n`` best), best first; implementations batch their calls and cut each
    query-document pair to their token limit (stated in their settings, never silently beyond).
    ``prior`` is the first stage's score of each document (higher is better) when the documents come
    from a retrieval; a reranker may use it (the bundled MiniLM one mixes it in) or ignore it."""

    name: str

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None,
               prior: Sequence[float] | None = None) -> list[Scored]: ...


def ordered(scores: Sequence[float], top_n: int | None = None) -> list[Scored]:
    """Scores in input order -> ``Scored`` best first (ties keep input order), cut to ``top_n``."""
    out = sorted((Scored(i, float(s)) for i, s in enumerate(scores)), key=lambda s: (-s.score, s.index))
    return out if top_n is None else out[:top_n]


def rerank_hits(reranker: Reranker, query: str, hits: Sequence[Hit]) -> list[Hit]:
    """``hits`` re-ordered by the reranker; each hit's score becomes its rerank score and its
    per-stage scores keep the first stage's (``scores["retrieval"]``) beside ``scores["rerank"]``."""
    if not hits:
        return []
    scored = reranker.rerank(query, [h.chunk.text for h in hits], prior=[h.score for h in hits])
    if sorted(s.index for s in scored) != list(range(len(hits))):
        raise RerankError(f"reranker '{reranker.name}' returned {len(scored)} results for {len(hits)} documents")
    out = []
    for s in scored:
        h = hits[s.index]
        out.append(replace(h, score=s.score, scores={**h.scores, "retrieval": h.score, "rerank": s.score}))
    return out
