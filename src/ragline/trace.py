"""What a retrieval or an answer did, stage by stage: the trace shown by ``--trace`` and
returned by the API on request.

A stage records its name, how many candidates went in and came out, how long it took, and a
few details (scores, settings, fallbacks taken). Tracing is opt-in per request: without a
``Trace`` the stages record nothing.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass
class Stage:
    name: str
    inputs: int | None = None
    outputs: int | None = None
    ms: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict:
        out: dict[str, Any] = {"stage": self.name, "ms": round(self.ms, 2)}
        if self.inputs is not None:
            out["in"] = self.inputs
        if self.outputs is not None:
            out["out"] = self.outputs
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class Trace:
    stages: list[Stage] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str, inputs: int | None = None, **detail: Any) -> Iterator[Stage]:
        """Time a stage; the body sets ``outputs`` (and may add to ``detail``) on the yielded record."""
        record = Stage(name, inputs, detail=dict(detail))
        t0 = time.perf_counter()
        try:
            yield record
        finally:
            record.ms = (time.perf_counter() - t0) * 1000
            self.stages.append(record)

    def note(self, name: str, **detail: Any) -> None:
        """A stage that took no measurable time (a decision, a fallback taken)."""
        self.stages.append(Stage(name, detail=dict(detail)))

    def json(self) -> list[dict]:
        return [s.json() for s in self.stages]

    @property
    def total_ms(self) -> float:
        return sum(s.ms for s in self.stages)


@contextmanager
def maybe(trace: Trace | None, name: str, inputs: int | None = None, **detail: Any) -> Iterator[Stage]:
    """``trace.stage`` when tracing, else a throwaway record (the caller's code stays the same)."""
    if trace is None:
        yield Stage(name, inputs)
    else:
        with trace.stage(name, inputs, **detail) as record:
            yield record
