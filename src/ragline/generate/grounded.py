"""LLM answers grounded in numbered sources: prompt, token budget, citation validation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from ragline.generate.llm import ChatClient
from ragline.text import content_words, sentence_spans
from ragline.types import Answer, Citation, Hit

PROMPT_VERSION = "grounded-v1"
SYSTEM = (
    "You answer questions using only the numbered sources provided. After every sentence that uses a "
    "source, cite it as [n]. If the sources do not contain the answer, reply exactly: "
    "\"The sources do not contain the answer.\" Do not use outside knowledge."
)
_CITE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def format_source(n: int, hit: Hit) -> str:
    where = hit.chunk.location
    head = f"[{n}] {hit.chunk.source}" + (f" ({where})" if where else "")
    return f"{head}\n{hit.chunk.text}"


def build_messages(question: str, sources: Sequence[str]) -> list[dict]:
    body = "Sources:\n\n" + "\n\n".join(sources) + f"\n\nQuestion: {question}\nAnswer:"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": body}]


@dataclass
class Budget:
    """How the context window was spent."""

    window: int
    reserved_for_answer: int
    prompt_tokens: int = 0
    used_sources: int = 0
    dropped_sources: int = 0
    exact: bool = True  # False when counts came from the fallback estimate
    notes: list[str] = field(default_factory=list)


def fit_sources(question: str, hits: Sequence[Hit], count: Callable[[str], int], window: int,
                reserve: int) -> tuple[list[Hit], Budget]:
    """Keep the highest-ranked sources whose whole prompt fits ``window - reserve`` tokens.

    Lowest-ranked sources are dropped first; a source that alone overflows is dropped too.
    """
    budget = Budget(window=window, reserved_for_answer=reserve)
    limit = window - reserve
    kept: list[Hit] = []
    for hit in hits:
        trial = kept + [hit]
        n = count(_render(question, trial))
        if n <= limit:
            kept = trial
            budget.prompt_tokens = n
    budget.used_sources = len(kept)
    budget.dropped_sources = len(hits) - len(kept)
    if not kept:
        budget.prompt_tokens = count(_render(question, []))
    return kept, budget


def _render(question: str, hits: Sequence[Hit]) -> str:
    msgs = build_messages(question, [format_source(i + 1, h) for i, h in enumerate(hits)])
    return "\n".join(m["content"] for m in msgs)


def validate_citations(text: str, hits: Sequence[Hit]) -> tuple[str, tuple[Citation, ...], list[int]]:
    """Drop citation marks that point at no given source; return (text, citations, invalid numbers)."""
    invalid: list[int] = []
    cited: dict[int, None] = {}

    def fix(m: re.Match[str]) -> str:
        good = []
        for part in m.group(1).split(","):
            n = int(part)
            if 1 <= n <= len(hits):
                good.append(n)
                cited.setdefault(n)
            else:
                invalid.append(n)
        return "[" + ", ".join(map(str, good)) + "]" if good else ""

    clean = _CITE.sub(fix, text).strip()
    citations = tuple(_passage(n, hits[n - 1], _claims(clean, n)) for n in cited)
    return clean, citations, invalid


def _claims(text: str, n: int) -> list[str]:
    """The answer's sentences that cite source ``n``."""
    out = []
    for a, b in sentence_spans(text):
        sentence = text[a:b]
        if any(str(n) in [p.strip() for p in m.group(1).split(",")] for m in _CITE.finditer(sentence)):
            out.append(_CITE.sub("", sentence))
    return out


def _passage(n: int, hit: Hit, claims: list[str]) -> Citation:
    """The citation of source ``n``: the sentence of its chunk sharing the most content words with
    the answer's sentences that cite it, located in the document; the chunk's opening when no
    sentence shares a word (the model cited without quoting)."""
    chunk = hit.chunk
    want = content_words(" ".join(claims))
    best, best_score = None, 0
    for a, b in sentence_spans(chunk.text):
        score = len(want & content_words(chunk.text[a:b]))
        if score > best_score:
            best, best_score = (a, b), score
    if best is None:
        return Citation(n, chunk, chunk.text[:300])
    a, b = best
    return Citation(n, chunk, chunk.text[a:b], start=chunk.start + a, end=chunk.start + b)


class GroundedGenerator:
    def __init__(self, client: ChatClient, context_window: int, max_tokens: int, temperature: float,
                 fallback_count: Callable[[str], int]) -> None:
        self.client = client
        self.name = client.model
        self.window, self.max_tokens, self.temperature = context_window, max_tokens, temperature
        self._fallback = fallback_count
        self._exact: bool | None = None

    def count(self, text: str) -> int:
        if self._exact is not False:
            n = self.client.count_tokens(text)
            if n is not None:
                self._exact = True
                return n + 16  # chat template tokens around each message
            self._exact = False
        # no tokenizer endpoint: the embedding tokenizer's count with a 30% margin, never under
        return int(self._fallback(text) * 1.3) + 32

    def stream(self, question: str, hits: Sequence[Hit]) -> Iterator[str | Answer]:
        """Yield text deltas, then the final Answer with validated citations."""
        kept, messages = self._prepare(question, hits)
        if messages is None:
            yield self._no_room(hits)
            return
        pieces = []
        for piece in self.client.stream(messages, self.max_tokens, self.temperature):
            pieces.append(piece)
            yield piece
        yield self._final("".join(pieces), kept, None)

    def answer(self, question: str, hits: Sequence[Hit]) -> Answer:
        """One non-streamed call, so the endpoint's token usage comes back with the answer."""
        kept, messages = self._prepare(question, hits)
        if messages is None:
            return self._no_room(hits)
        reply = self.client.chat(messages, self.max_tokens, self.temperature)
        return self._final(reply.text, kept, {"calls": 1, "prompt_tokens": reply.prompt_tokens,
                                              "completion_tokens": reply.completion_tokens})

    def _prepare(self, question: str, hits: Sequence[Hit]) -> tuple[list[Hit], list[dict] | None]:
        kept, _budget = fit_sources(question, hits, self.count, self.window, self.max_tokens)
        if not kept:
            return [], None
        return kept, build_messages(question, [format_source(i + 1, h) for i, h in enumerate(kept)])

    def _no_room(self, hits: Sequence[Hit]) -> Answer:
        return Answer("No source fits the model's context window.", (), grounded=False, generator=self.name,
                      hits=tuple(hits))

    def _final(self, raw: str, kept: list[Hit], usage: dict | None) -> Answer:
        text, citations, _invalid = validate_citations(raw, kept)
        grounded = bool(citations) and "do not contain the answer" not in text.lower()
        return Answer(text, citations, grounded=grounded, generator=self.name, hits=tuple(kept), usage=usage)
