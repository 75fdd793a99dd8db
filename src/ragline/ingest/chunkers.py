"""Chunking strategies: fixed token windows, recursive, structure-aware.

All three are pure functions of a Document, a Tokenizer and a token budget, and
all guarantee that no chunk's embedding text exceeds the embedding model's
window: the model never truncates a chunk silently.

Token counts are additive across whitespace for word-piece and BPE tokenizers
(they pre-split on whitespace), so pieces are measured once and summed.

No chunk is longer than ``CHARS_PER_TOKEN`` characters per token of its budget
either: a run with no spaces (a minified line, a base64 blob, a 10 MB JSON key)
counts as one unknown token, so a token bound alone would let it through whole.
Long text is tokenized in blocks of at most ``_BLOCK`` characters, because a
fast tokenizer's time and memory grow faster than linearly with one input's
length (a 1 MB line took 14 s in one call, 2 s in 16 K blocks).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from ragline.embed.base import Tokenizer
from ragline.text import SENTENCE_END as _SENT
from ragline.types import Chunk, Document, Section, content_hash

Strategy = Literal["fixed", "recursive", "structure"]

_PARA = re.compile(r"\n\s*\n")
# A generous bound: real text averages 4-5 characters per word piece; a chunk
# of 256 tokens may hold 8,192 characters, no more.
CHARS_PER_TOKEN = 32
_BLOCK = 16_384  # characters given to the tokenizer in one call
_SPACE_AT_END = re.compile(r"\s(?=\S*\Z)")


@dataclass(frozen=True)
class ChunkPlan:
    strategy: Strategy = "recursive"
    size: int = 256  # max content tokens per chunk, including the context prefix
    overlap: int = 0
    title_prefix: bool = True

    def fingerprint(self, model_id: str) -> str:
        # v4: chunks bounded in characters too; parsers keep text they used to drop
        # v5: HTML headings and <pre> blocks are sections of their own, permalink marks dropped
        return content_hash(f"{self.strategy}|{self.size}|{self.overlap}|{self.title_prefix}|{model_id}|v5")


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


def _blocks(text: str, start: int, end: int) -> Iterator[Span]:
    """``[start, end)`` as consecutive spans of at most ``_BLOCK`` characters, each
    ending before a whitespace character where the block has one (so token
    counts add up across blocks)."""
    pos = start
    while pos < end:
        stop = min(pos + _BLOCK, end)
        if stop < end:
            m = _SPACE_AT_END.search(text, pos + 1, stop)
            if m:
                stop = m.start()
        yield pos, stop
        pos = stop


def _count(text: str, start: int, end: int, tok: Tokenizer) -> int:
    return sum(tok.count(text[a:b]) for a, b in _blocks(text, start, end))


class _Counts:
    """Token counts of spans of one text, and of short strings, measured in
    batches where the tokenizer can (``counts``): one call per text costs more
    in the tokenizer's Python wrapper than in tokenizing, and a page of
    100,000 headings spent 28 s of its 35 s of chunking there."""

    _BATCH = 256

    def __init__(self, text: str, tok: Tokenizer) -> None:
        self.text, self.tok = text, tok
        self.known: dict[Span, int] = {}
        self.strings: dict[str, int] = {}
        self.batch = getattr(tok, "counts", None)

    def _measure(self, texts: list[str]) -> list[int]:
        out: list[int] = []
        for i in range(0, len(texts), self._BATCH):
            out.extend(self.batch(texts[i : i + self._BATCH]))  # type: ignore[misc]
        return out

    def prime(self, spans: Iterable[Span]) -> None:
        """Count short ``spans`` now, together (a no-op without ``counts``)."""
        if self.batch is None:
            return
        todo = [s for s in dict.fromkeys(spans) if 0 < s[1] - s[0] <= _BLOCK and s not in self.known]
        self.known.update(zip(todo, self._measure([self.text[a:b] for a, b in todo])))

    def prime_strings(self, texts: Iterable[str]) -> None:
        if self.batch is None:
            return
        todo = [t for t in dict.fromkeys(texts) if t not in self.strings]
        self.strings.update(zip(todo, self._measure(todo)))

    def span(self, span: Span) -> int:
        n = self.known.pop(span, None)  # each span is asked for once: keep the memo small
        return n if n is not None else _count(self.text, span[0], span[1], self.tok)

    def string(self, text: str) -> int:
        if text not in self.strings:
            self.strings[text] = self.tok.count(text)
        return self.strings[text]


def _token_offsets(text: str, start: int, end: int, tok: Tokenizer) -> Iterator[Span]:
    """Absolute character spans of the tokens of ``text[start:end]``, a block at a time."""
    for a, b in _blocks(text, start, end):
        for x, y in tok.offsets(text[a:b]):
            yield a + x, a + y


def _token_windows(text: str, start: int, end: int, size: int, overlap: int, tok: Tokenizer,
                   max_chars: int) -> list[Span]:
    """Windows of at most ``size`` tokens and ``max_chars`` characters stepping by
    ``size - overlap`` tokens; a single token longer than ``max_chars`` (an unknown
    "word" with no spaces) is cut into pieces of ``max_chars`` characters."""
    spans: list[Span] = []
    cur: list[Span] = []

    overlap_chars = max_chars * overlap // size  # a window cut short by characters overlaps in proportion

    def emit() -> None:
        nonlocal cur
        spans.append((cur[0][0], cur[-1][1]))
        cur = cur[max(0, len(cur) - overlap):] if overlap else []
        while cur and cur[-1][1] - cur[0][0] > overlap_chars:
            cur.pop(0)

    for a, b in _token_offsets(text, start, end, tok):
        if b - a > max_chars:  # one giant token: flush, then cut it by characters
            if cur:
                spans.append((cur[0][0], cur[-1][1]))
                cur = []
            spans.extend((p, min(p + max_chars, b)) for p in range(a, b, max_chars))
            continue
        if cur and (len(cur) >= size or b - cur[0][0] > max_chars):
            emit()
            while cur and b - cur[0][0] > max_chars:  # the overlap must leave room for this token
                cur.pop(0)
        cur.append((a, b))
    if cur and (not spans or cur[-1][1] > spans[-1][1]):
        spans.append((cur[0][0], cur[-1][1]))
    if not spans and text[start:end].strip():
        spans = [(p, min(p + max_chars, end)) for p in range(start, end, max_chars)]
    return spans


class _Packer:
    """Recursive splitting (paragraph, sentence, tokens) and greedy packing to a
    budget of tokens and of ``max_chars`` characters."""

    def __init__(self, counts: _Counts, budget: int, overlap: int, max_chars: int) -> None:
        self.text, self.tok, self.counts = counts.text, counts.tok, counts
        self.budget, self.overlap, self.max_chars = budget, overlap, max_chars

    def count(self, span: Span) -> int:
        return self.counts.span(span)

    def units(self, span: Span, level: int = 0) -> list[tuple[Span, int]]:
        """Pieces of ``span`` each within budget, with their token counts. A span
        over ``max_chars`` is split without being counted: counting it whole would
        cost time and memory for nothing."""
        if span[1] - span[0] <= self.max_chars:
            n = self.count(span)
            if n <= self.budget:
                return [(span, n)] if n > 0 or self.text[span[0] : span[1]].strip() else []
        if level == 0:
            parts = _split_at(self.text, *span, _PARA)
        elif level == 1:
            parts = _split_at(self.text, *span, _SENT)
        else:
            return self.windows(span)
        if len(parts) <= 1:
            return self.units(span, level + 1)
        out: list[tuple[Span, int]] = []
        for part in parts:
            out.extend(self.units(part, level + 1))
        return out

    def windows(self, span: Span) -> list[tuple[Span, int]]:
        """Token windows of ``span``, each recounted on its own: a window that starts
        inside a word may tokenize into more pieces alone, and is then halved."""
        out: list[tuple[Span, int]] = []
        todo = _token_windows(self.text, *span, self.budget, 0, self.tok, self.max_chars)
        todo.reverse()
        while todo:
            a, b = todo.pop()
            n = self.count((a, b))
            if n > self.budget and b - a > 1:
                mid = (a + b) // 2
                todo.extend([(mid, b), (a, mid)])
                continue
            if n > 0 or self.text[a:b].strip():
                out.append(((a, b), n))
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
            if cur and (total + unit[1] > limit or unit[0][1] - cur[0][0][0] > self.max_chars):
                chunks.append((cur[0][0][0], cur[-1][0][1]))
                carry: list[tuple[Span, int]] = []
                carried = 0
                for prev in reversed(cur):  # overlap: repeat trailing units that fit
                    if carried + prev[1] > self.overlap or carried + prev[1] + unit[1] > self.budget \
                            or unit[0][1] - prev[0][0] > self.max_chars:
                        break
                    carry.insert(0, prev)
                    carried += prev[1]
                cur, total = carry, carried
            cur.append(unit)
            total += unit[1]
        if cur:
            chunks.append((cur[0][0][0], cur[-1][0][1]))
        return chunks


def _section_at(sections: tuple[Section, ...], starts: list[int], pos: int) -> Section | None:
    """The section holding offset ``pos`` (sections tile the text in order)."""
    i = bisect.bisect_right(starts, pos) - 1
    if 0 <= i < len(sections) and sections[i].start <= pos < sections[i].end:
        return sections[i]
    for sec in sections:  # not sorted or not tiling: look through them all
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
    max_chars = limit * CHARS_PER_TOKEN
    title = doc.title if plan.title_prefix else ""

    counts = _Counts(doc.text, tok)

    def context_for(heading: tuple[str, ...]) -> str:
        return context_prefix(title, heading if plan.strategy == "structure" else ())

    def budget_for(heading: tuple[str, ...]) -> tuple[str, int]:
        ctx = context_for(heading)
        n = counts.string(ctx) + 2 if ctx else 0  # +2: the blank line between
        if n > limit // 3:  # a context longer than a third of the window is not worth its cost
            return "", limit
        return ctx, limit - n

    spans: list[tuple[Span, str]] = []
    if plan.strategy == "fixed":
        ctx, budget = budget_for(())
        spans = [(s, ctx) for s in _token_windows(doc.text, 0, len(doc.text), budget, overlap, tok, max_chars)]
    elif plan.strategy == "recursive":
        ctx, budget = budget_for(())
        packer = _Packer(counts, budget, overlap, max_chars)
        groups = _groups(doc)
        counts.prime(span for span, _ in groups if span[1] - span[0] <= max_chars)
        units: list[tuple[Span, int]] = []
        for span, _ in groups:
            units.extend(packer.units(span))
        spans = [(s, ctx) for s in packer.pack(units)]
    else:
        groups = _groups(doc)
        counts.prime(span for span, _ in groups if span[1] - span[0] <= max_chars)
        counts.prime_strings(ctx for ctx in (context_for(sec.heading_path if sec else ()) for _, sec in groups) if ctx)
        for span, sec in groups:
            ctx, budget = budget_for(sec.heading_path if sec else ())
            packer = _Packer(counts, budget, overlap, max_chars)
            spans.extend((s, ctx) for s in packer.pack(packer.units(span)))

    starts = [sec.start for sec in doc.sections]
    chunks: list[Chunk] = []
    for (a, b), ctx in spans:
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
        sec = _section_at(doc.sections, starts, a)
        meta = {"context": ctx} if ctx else {}
        chunk = Chunk(id="", doc_id=doc_id, source=doc.source, text=text, start=a, end=b,
                      ordinal=len(chunks), page=sec.page if sec else None,
                      heading_path=sec.heading_path if sec else (), metadata=meta)
        h = content_hash(embed_text(chunk))
        chunks.append(Chunk(**{**chunk.__dict__, "id": content_hash(f"{doc_id}:{chunk.ordinal}:{h}"),
                               "content_hash": h}))
    return chunks

