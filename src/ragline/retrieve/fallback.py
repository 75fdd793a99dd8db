"""Fallbacks when retrieval comes back weak: drop the user's filter, rewrite the question, or
answer honestly that nothing was found, each step recorded in the trace.

Weak means fewer than ``min_hits`` hits, or (when the dense side ran) a best dense cosine under
``weak_below``. The steps run in the configured order until the results are no longer weak:

- ``drop-filter``: search again without the request's filter (the caller's ACL scope is never
  dropped: principals stay a prefilter);
- ``rewrite``: search again through a query transformation (``transform``: the configured one, else
  the offline pseudo-relevance feedback);
- ``not-found``: return no hits, so the answer says plainly that the documents do not contain one.

Only what a step found replaces the first results, and only when it is not weak itself (or, short of
that, stronger); the first results are kept otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

from ragline.trace import Trace
from ragline.types import Hit

STEPS = ("drop-filter", "rewrite", "not-found")


@dataclass(frozen=True)
class FallbackPolicy:
    steps: tuple[str, ...] = ()
    min_hits: int = 1
    weak_below: float = 0.25  # best dense cosine (bundled MiniLM scale)

    def weakness(self, hits: Sequence[Hit]) -> str | None:
        """Why ``hits`` are weak, or None when they are not."""
        if len(hits) < self.min_hits:
            return f"{len(hits)} hit(s), fewer than {self.min_hits}"
        dense = [h.scores["dense"] for h in hits if "dense" in h.scores]
        if dense and max(dense) < self.weak_below:
            return f"best dense score {max(dense):.3f} under {self.weak_below}"
        return None


def strength(hits: Sequence[Hit]) -> tuple[int, float]:
    """A comparable strength: any hits first, then the best dense score seen."""
    dense = [h.scores["dense"] for h in hits if "dense" in h.scores]
    return (1 if hits else 0, max(dense) if dense else 0.0)


def with_fallbacks(policy: FallbackPolicy, ask, hits: list[Hit], run: Callable[[object], list[Hit]],
                   rewrite: Callable[[object], list[Hit]] | None, trace: Trace | None) -> list[Hit]:
    """``hits`` for ``ask``, or what the first fallback step that is not weak found.

    ``run(ask)`` retrieves an ask; ``rewrite(ask)`` retrieves it through a query transformation
    (None when none can be built). Each step taken is a ``fallback`` stage in ``trace``."""
    why = policy.weakness(hits)
    if why is None or not policy.steps:
        return hits
    best = hits
    for step in policy.steps:
        if step == "drop-filter":
            if not ask.search.filter:
                continue
            found = run(replace(ask, search=replace(ask.search, filter=None)))
            detail = {"dropped_filter": ask.search.filter}
        elif step == "rewrite":
            if rewrite is None:
                continue
            found = rewrite(ask)
            detail = {}
        else:  # not-found
            if trace is not None:
                trace.note("fallback", step=step, reason=why)
            return []
        still = policy.weakness(found)
        taken = still is None or strength(found) > strength(best)
        if trace is not None:
            trace.note("fallback", step=step, reason=why, hits=len(found), weak=still, used=taken, **detail)
        if taken:
            best = found
        if still is None:
            return found
        why = still if taken else why
    return best
