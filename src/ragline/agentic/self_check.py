"""Self-checked answers, in the spirit of Self-RAG (Asai et al., 2023): generate, check every
sentence against the passages retrieved for it with the evaluation judge (the same calibrated
``OfflineJudge`` ``eval answers`` reports faithfulness with), regenerate once when an LLM wrote
unsupported sentences, then drop the sentences that are still unsupported and say which.

A sentence is kept when the judge finds support for it among the retrieved passages and, if it
cites sources, among the passages it cites. The extractive answerer quotes its sources, so its
sentences nearly always pass; the check earns its cost on LLM answers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ragline.agentic.base import Budget, Steps
from ragline.evaluate.judge import AnswerJudgement, OfflineJudge
from ragline.types import Answer

if TYPE_CHECKING:
    from ragline.rag import RAG, Ask


def _kept(j: AnswerJudgement) -> list[bool]:
    return [bool(s.supported) and s.citation_supported is not False for s in j.statements]


def _as_cited(answer: Answer) -> Answer:
    """The answer with each citation's snippet widened to its whole chunk: a sentence is checked
    against the passage it cites, not only the sentence the snippet shows."""
    return replace(answer, citations=tuple(replace(c, snippet=c.chunk.text) for c in answer.citations))


class SelfCheck:
    name = "self-check"

    def __init__(self, judge: OfflineJudge, budget: Budget | None = None) -> None:
        self.judge = judge
        # one generation plus (max_steps - 1) regenerations, at most one by default
        self.budget = budget or Budget(max_steps=2)

    def run(self, rag: "RAG", ask: "Ask", steps: Steps) -> Answer:
        hits = rag.retrieve(ask)
        steps.add("retrieve", query=ask.question, hits=len(hits))
        if not hits:
            steps.add("not-found", reason="nothing retrieved")
            return rag.not_found()
        contexts = [h.chunk.text for h in hits]
        best: tuple[Answer, AnswerJudgement] | None = None
        for attempt in range(max(1, min(self.budget.max_steps, 3))):
            answer = rag.answer(ask, hits)
            steps.add("generate", answerer=rag.answerer.name, attempt=attempt + 1, citations=len(answer.citations))
            if not answer.grounded:
                return answer
            judged = self.judge.judge(_as_cited(answer), contexts)
            kept = _kept(judged)
            steps.add("check", judge=self.judge.name, statements=len(kept), supported=sum(kept),
                      faithfulness=judged.faithfulness)
            if best is None or sum(kept) / max(len(kept), 1) > sum(_kept(best[1])) / max(len(_kept(best[1])), 1):
                best = (answer, judged)
            if all(kept) or answer.generator == "extractive":  # quoting again would change nothing
                break
        assert best is not None
        return self._drop_unsupported(rag, *best, steps)

    def _drop_unsupported(self, rag: "RAG", answer: Answer, judged: AnswerJudgement, steps: Steps) -> Answer:
        kept = _kept(judged)
        if all(kept):
            return answer
        dropped = [s.text for s, ok in zip(judged.statements, kept) if not ok]
        steps.add("drop", sentences=dropped, reason=f"not supported by the retrieved passages (judge {self.judge.name})")
        keep = [s for s, ok in zip(judged.statements, kept) if ok]
        if not keep:
            steps.add("not-found", reason="no sentence of the answer is supported")
            return replace(rag.not_found(), usage=answer.usage)
        text = " ".join(s.text + (f" [{', '.join(map(str, s.cited))}]" if s.cited else "") for s in keep)
        cited = {n for s in keep for n in s.cited}
        citations = tuple(c for c in answer.citations if c.n in cited)
        return replace(answer, text=text, citations=citations)

