"""The offline answerer: picks and orders the retrieved sentences that best answer
the question, cites each, and never writes a word of its own beyond a plain
"not found" statement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ragline.embed.base import Embedder
from ragline.text import content_words, sentence_spans
from ragline.types import Answer, Citation, Hit

NOT_FOUND = "The indexed documents do not appear to contain an answer to this question."


@dataclass(frozen=True)
class ExtractiveSettings:
    max_sentences: int = 3
    min_score: float = 0.45  # below this, the best sentence is not taken as an answer
    relative: float = 0.8  # keep sentences scoring at least this share of the best one
    lexical_weight: float = 0.25  # share of the score from query-word overlap
    max_sentence_chars: int = 600


class ExtractiveAnswerer:
    name = "extractive"

    def __init__(self, embedder: Embedder, settings: ExtractiveSettings | None = None) -> None:
        self.embedder = embedder
        self.s = settings or ExtractiveSettings()

    def stream(self, question: str, hits: Sequence[Hit]) -> Iterator[str | Answer]:
        """The whole answer's text as one piece, then the answer: nothing is written token by token."""
        answer = self.answer(question, hits)
        yield answer.text
        yield answer

    def answer(self, question: str, hits: Sequence[Hit]) -> Answer:
        candidates: list[tuple[int, str]] = []  # (hit index, sentence)
        spans: list[tuple[int, int]] = []  # each sentence's span in its document
        for i, hit in enumerate(hits):
            text = hit.chunk.text
            for a, b in sentence_spans(text):
                sent = " ".join(text[a:b].split())
                if 3 <= len(sent.split()) and len(sent) <= self.s.max_sentence_chars:
                    candidates.append((i, sent))
                    spans.append((hit.chunk.start + a, hit.chunk.start + b))
        if not candidates:
            return Answer(NOT_FOUND, (), grounded=False, generator=self.name, hits=tuple(hits))
        q_vec = self.embedder.embed_query(question)
        s_vecs = self.embedder.embed_documents([s for _, s in candidates]) if self._fits(candidates) else \
            np.stack([self.embedder.embed_query(s) for _, s in candidates])
        dense = s_vecs @ q_vec
        q_words = content_words(question)
        lexical = np.array([len(q_words & content_words(s)) / len(q_words) if q_words else 0.0
                            for _, s in candidates])
        w = self.s.lexical_weight
        scores = (1 - w) * dense + w * lexical
        # a small preference for higher-ranked passages breaks near-ties toward better retrieval
        scores = scores - 0.01 * np.array([i for i, _ in candidates])
        order = np.argsort(-scores)
        best = float(scores[order[0]])
        if best < self.s.min_score:
            return Answer(NOT_FOUND, (), grounded=False, generator=self.name, hits=tuple(hits))
        chosen: list[int] = []
        seen_words: list[set[str]] = []
        for j in order:
            if len(chosen) >= self.s.max_sentences or scores[j] < max(self.s.min_score, self.s.relative * best):
                break
            words = content_words(candidates[j][1])
            if any(len(words & w2) / max(1, len(words | w2)) > 0.7 for w2 in seen_words):
                continue  # near-duplicate of a sentence already chosen
            chosen.append(int(j))
            seen_words.append(words)
        numbers: dict[int, int] = {}  # hit index -> citation number
        parts, citations = [], []
        for j in chosen:
            hit_i, sent = candidates[j]
            if hit_i not in numbers:
                numbers[hit_i] = len(numbers) + 1
                start, end = spans[j]
                citations.append(Citation(numbers[hit_i], hits[hit_i].chunk, sent, start, end))
            parts.append(f"{sent} [{numbers[hit_i]}]")
        return Answer(" ".join(parts), tuple(citations), grounded=True, generator=self.name, hits=tuple(hits))

    def _fits(self, candidates: list[tuple[int, str]]) -> bool:
        tok = self.embedder.tokenizer
        return all(tok.count(s) <= self.embedder.max_tokens for _, s in candidates)
