"""Answer strategies: how a question goes through the one flow (``RAG``) on its way to an answer.

``standard`` retrieves once and answers. The others loop over the same flow and record each
step: ``corrective`` grades what it retrieved and refines, falls back or says "not found"
(corrective.py); ``self-check`` checks each sentence of its answer against the passages it cites
and drops or regenerates what they do not support (self_check.py); ``agent`` lets an LLM call
ragline's own tools until it has enough (agent.py).

A strategy reports its steps as they happen (``Steps.on_step``: the CLI's ``--trace``, the API's
SSE ``step`` events) and returns a cited ``Answer`` like any other. Loops are bounded
(``Budget``): a strategy that runs out answers with what it has, or honestly "not found".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ragline.types import Answer

if TYPE_CHECKING:
    from ragline.rag import RAG, Ask

STRATEGIES = ("standard", "corrective", "self-check", "agent")


class StrategyError(Exception):
    """A strategy cannot run as configured (e.g. the agent without an LLM); the message names
    the setting to change."""


@dataclass(frozen=True)
class Step:
    """One step of a strategy: what it did (``kind``), what it saw or decided (``detail``, plain
    JSON values), and when (milliseconds since the strategy started)."""

    kind: str  # retrieve | grade | refine | rewrite | generate | check | drop | tool | stop | not-found
    detail: dict[str, Any]
    at_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "at_ms": round(self.at_ms, 1), **self.detail}


@dataclass
class Steps:
    """The steps of one run, in order; ``on_step`` sees each as it is recorded."""

    on_step: Callable[[Step], None] | None = None
    items: list[Step] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)

    def add(self, kind: str, **detail: Any) -> Step:
        step = Step(kind, detail, (time.perf_counter() - self.t0) * 1000)
        self.items.append(step)
        if self.on_step is not None:
            self.on_step(step)
        return step

    def as_list(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.items]


@dataclass(frozen=True)
class Budget:
    """Bounds of one loop: steps (LLM turns or retrievals), tokens the LLM may spend (prompt and
    completion, as the endpoint reports them), and wall-clock seconds."""

    max_steps: int = 6
    max_tokens: int = 20_000
    max_seconds: float = 120.0


class Strategy(Protocol):
    name: str

    def run(self, rag: "RAG", ask: "Ask", steps: Steps) -> Answer:
        """The cited answer to ``ask``, every step recorded in ``steps``."""


class Standard:
    """Retrieve once, answer once: the flow as it always was."""

    name = "standard"

    def run(self, rag: "RAG", ask: "Ask", steps: Steps) -> Answer:
        hits = rag.retrieve(ask)
        steps.add("retrieve", query=ask.question, hits=len(hits))
        answer = rag.answer(ask, hits)
        steps.add("generate", answerer=rag.answerer.name, citations=len(answer.citations))
        return answer
