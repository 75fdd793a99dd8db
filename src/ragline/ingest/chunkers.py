"""Chunking strategies: fixed token windows, recursive, structure-aware.

All three are pure functions of a Document, a Tokenizer and a token budget, and
all guarantee that no chunk's embedding text exceeds the embedding model's
window: the model never truncates a chunk silently.

Token counts are additive across whitespace for word-piece and BPE tokenizers
(they pre-split on whitespace), so pieces are measured once and summed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ragline.embed.base import Tokenizer
from ragline.text import SENTENCE_END as _SENT
from ragline.types import Chunk, Document, Section, content_hash

Strategy = Literal["fixed", "recursive", "structure"]

_PARA = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class ChunkPlan:
    strategy: Strategy = "recursive"
    size: int = 256  # max content tokens per chunk, including the context prefix
    overlap: int = 0
    title_prefix: bool = True

    def fingerprint(self, model_id: str) -> str:
        return content_hash(f"{self.strategy}|{self.size}|{self.overlap}|{self.title_prefix}|{model_id}|v3")


Span = tuple[int, int]


def _split_at(text: str, start: int, end: int, pattern: re.Pattern[str]) -> list[Span]:
    spans, pos = [], start
    for m in pattern.finditer(text, start, end):
        if m.start() > pos:
            spans.append((pos, m.start()))
        pos = m.end()
    if pos < end:
        spans.append((pos, end))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _token_windows(text: str, start: int, end: int, size: int, overlap: int, tok: Tokenizer) -> list[Span]:
    offsets = [(start + a, start + b) for a, b in tok.offsets(text[start:end])]
    if not offsets:
        return [(start, end)] if text[start:end].strip() else []
    step = max(1, size - overlap)
    spans = []
    for i in range(0, len(offsets), step):
        window = offsets[i : i + size]
        spans.append((window[0][0], window[-1][1]))
        if i + size >= len(offsets):
            break
    return spans


class _Packer:
    """Recursive splitting (paragraph, sentence, tokens) and greedy packing to a budget."""

    def __init__(self, text: str, tok: Tokenizer, budget: int, overlap: int) -> None:
        self.text, self.tok, self.budget, self.overlap = text, tok, budget, overlap

    def count(self, span: Span) -> int:
        return self.tok.count(self.text[span[0] : span[1]])

    def units(self, span: Span, level: int = 0) -> list[tuple[Span, int]]:
        """Pieces of ``span`` each within budget, with their token counts."""
        n = self.count(span)
        if n <= self.budget:
            return [(span, n)] if n > 0 or self.text[span[0] : span[1]].strip() else []
        if level == 0:
            parts = _split_at(self.text, *span, _PARA)
        elif level == 1:
            parts = _split_at(self.text, *span, _SENT)
        else:
            return [(s, self.count(s)) for s in _token_windows(self.text, *span, self.budget, 0, self.tok)]
        if len(parts) <= 1:
            return self.units(span, level + 1)
        out: list[tuple[Span, int]] = []
        for part in parts:
            out.extend(self.units(part, level + 1))
        return out

    def _balanced_limit(self, total: int) -> int:
        """Aim for equal-sized chunks: 300 tokens become two of ~150, not 254 + 46. Fewer tiny
        tail chunks, and attention (quadratic in length) costs less for the same text."""
        if total <= self.budget or self.overlap:
            return self.budget
        n = -(-total // self.budget)  # ceil
        target = -(-total // n)
        return min(self.budget, target + max(8, target // 8))

    def pack(self, units: list[tuple[Span, int]]) -> list[Span]:
        chunks: list[Span] = []
        cur: list[tuple[Span, int]] = []
        total = 0
        limit = self._balanced_limit(sum(n for _, n in units))
        for unit in units:
            if cur and total + unit[1] > limit:
                chunks.append((cur[0][0][0], cur[-1][0][1]))
                carry: list[tuple[Span, int]] = []
                carried = 0
                for prev in reversed(cur):  # overlap: repeat trailing units that fit
                    if carried + prev[1] > self.overlap or carried + prev[1] + unit[1] > self.budget:
                        break
                    carry.insert(0, prev)
                    carried += prev[1]
                cur, total = carry, carried
            cur.append(unit)
            total += unit[1]
        if cur:
            chunks.append((cur[0][0][0], cur[-1][0][1]))
        return chunks


def _section_at(sections: tuple[Section, ...], pos: int) -> Section | None:
    for sec in sections:
        if sec.start <= pos < sec.end:
            return sec
    return sections[-1] if sections else None


def _groups(doc: Document) -> list[tuple[Span, Section | None]]:
    """Adjacent sections sharing page and heading path, as spans (structure strategy)."""
    if not doc.sections:
        return [((0, len(doc.text)), None)]
    groups: list[tuple[Span, Section | None]] = []
    for sec in doc.sections:
        key = (sec.page, sec.heading_path)
        if groups and groups[-1][1] is not None and (groups[-1][1].page, groups[-1][1].heading_path) == key \
                and sec.kind != "record":
            (a, _), first = groups[-1]
            groups[-1] = ((a, sec.end), first)
        else:
            groups.append(((sec.start, sec.end), sec))
    return groups


def context_prefix(title: str, heading_path: tuple[str, ...]) -> str:
    parts = [p for p in (title, *heading_path) if p]
    return " > ".join(parts)


def embed_text(chunk: Chunk) -> str:
    """The text embedded and indexed for a chunk: its context line, then its text."""
    ctx = chunk.metadata.get("context", "")
    if ctx and not chunk.text.startswith(ctx):
        return f"{ctx}\n\n{chunk.text}"
    return chunk.text


def chunk_document(doc: Document, doc_id: str, plan: ChunkPlan, tok: Tokenizer, max_tokens: int) -> list[Chunk]:
    """Split ``doc`` into chunks whose embedding text fits ``max_tokens``."""
    limit = min(plan.size, max_tokens)
    overlap = min(plan.overlap, limit // 2)
    title = doc.title if plan.title_prefix else ""

    def budget_for(heading: tuple[str, ...]) -> tuple[str, int]:
        ctx = context_prefix(title, heading if plan.strategy == "structure" else ())
        n = tok.count(ctx) + 2 if ctx else 0  # +2: the blank line between
        if n > limit // 3:  # a context longer than a third of the window is not worth its cost
            return "", limit
        return ctx, limit - n

    spans: list[tuple[Span, str]] = []
    if plan.strategy == "fixed":
        ctx, budget = budget_for(())
        spans = [(s, ctx) for s in _token_windows(doc.text, 0, len(doc.text), budget, overlap, tok)]
    elif plan.strategy == "recursive":
        ctx, budget = budget_for(())
        packer = _Packer(doc.text, tok, budget, overlap)
        units: list[tuple[Span, int]] = []
        for (a, b), _ in _groups(doc) if doc.sections else [((0, len(doc.text)), None)]:
            units.extend(packer.units((a, b)))
        spans = [(s, ctx) for s in packer.pack(units)]
    else:
        for (a, b), sec in _groups(doc):
            ctx, budget = budget_for(sec.heading_path if sec else ())
            packer = _Packer(doc.text, tok, budget, overlap)
            spans.extend((s, ctx) for s in packer.pack(packer.units((a, b))))

    chunks: list[Chunk] = []
    for ordinal, ((a, b), ctx) in enumerate(spans):
        while a < b and doc.text[a].isspace():
            a += 1
        while b > a and doc.text[b - 1].isspace():
            b -= 1
        if a >= b:
            continue
        text = doc.text[a:b]
        # the document's own opening already carries its title: no prefix needed
        if ctx and text.startswith(title) and title and ctx == title:
            ctx = ""
        sec = _section_at(doc.sections, a)
        meta = {"context": ctx} if ctx else {}
        chunk = Chunk(id="", doc_id=doc_id, source=doc.source, text=text, start=a, end=b,
                      ordinal=len(chunks), page=sec.page if sec else None,
                      heading_path=sec.heading_path if sec else (), metadata=meta)
        h = content_hash(embed_text(chunk))
        chunks.append(Chunk(**{**chunk.__dict__, "id": content_hash(f"{doc_id}:{chunk.ordinal}:{h}"),
                               "content_hash": h}))
    return chunks

