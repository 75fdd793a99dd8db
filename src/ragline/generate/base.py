"""What every answerer provides: a whole answer, or the same answer streamed."""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence

from ragline.types import Answer, Hit


class Answerer(Protocol):
    """Answers a question from retrieved passages. ``stream`` yields the answer's text in pieces
    as it is written and then, last, the finished ``Answer`` (an answerer that does not write
    token by token yields its whole text once)."""

    name: str

    def answer(self, question: str, hits: Sequence[Hit]) -> Answer: ...

    def stream(self, question: str, hits: Sequence[Hit]) -> Iterator[str | Answer]: ...
