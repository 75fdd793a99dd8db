"""The offline answerer: picks and orders the retrieved sentences that best answer
the question, cites each, and never writes a word of its own beyond a plain
"not found" statement.

A chunk's text is read as paragraphs (runs of lines between blank lines), each
of one kind: a heading (a line that is one of the chunk's headings, or a short
title-like line with no sentence punctuation), a code block, a table, or prose.
Only prose and table rows are candidate sentences: a heading is never quoted as
if it said something, and a code line is never quoted out of its block. A
sentence that ends with ":" and closes its paragraph right before a code block
introduces that block, so the answer carries the block after it (cut at a line
boundary, at most ``max_code_chars``) under the same citation, and the block's
words count toward the sentence's score. A sentence that leans on the one before
it ("This is used to flag descending sorts.") is quoted together with it.

A sentence's score blends its similarity to the question read alone and read in
its context (its chunk's heading and the code it introduces), with the share of
the question's content words (crudely stemmed: "sorting" meets "sort") that it,
or its code, contains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ragline.embed.base import Embedder
from ragline.text import content_words, sentence_spans, word_stems
from ragline.types import Answer, Citation, Hit

NOT_FOUND = "The indexed documents do not appear to contain an answer to this question."

_PARA_BREAK = re.compile(r"\n[ \t]*\n")
# sentence punctuation at the end of a paragraph or line, perhaps inside a closing quote or bracket
_TERMINAL = re.compile(r"[.!?:;][\"'”’)\]]*$")
_SECTION_NUMBER = re.compile(r"^(?:[0-9]+\.)+[0-9]*\s+\S|^[0-9]+(?:\.[0-9]+)+\s+\S|^[A-Z]\.[0-9.]*\s+\S")
_TITLE = re.compile(r"^[A-Z0-9“\"'][^\s]*(?:\s+[^\s]+){0,11}$")
_PERMALINK = re.compile(r"\s*[¶§]+\s*$")
_CODE_CHARS = re.compile(r"[=(){}\[\]<>/\\$#%@;|`]")
_PROMPT = re.compile(r"^(?:>>>|\.\.\.|\$ |% |# |C:\\|PS>)")
# a sentence that leans on the one before it ("This is used to flag descending sorts.")
_ANAPHOR = re.compile(r"^(?:This|These|That|Those|Such|Here)\b")
# a line of code: a statement keyword first, an assignment, or a call closing the line (a comment may follow)
_CODE_LINE = re.compile(r"^\s*(?:import|from|def|class|return|raise|if|elif|else|for|while|with|try|except)\b"
                        r"|^\s*[\w.\[\]'\"]+\s*[-+*/]?=[^=]|[\w.]\([^()]*\)\)*\s*(?:#.*)?$")
_PLAIN_WORD = re.compile(r"^[(“\"']?[A-Za-z][A-Za-z’'-]*[)”\"']?[,.;:!?]?$")
MAX_CONTEXT_CODE = 300  # characters of an introduced code block read with its sentence


@dataclass(frozen=True)
class ExtractiveSettings:
    max_sentences: int = 3
    min_score: float = 0.45  # below this, the best sentence is not taken as an answer
    relative: float = 0.8  # keep sentences scoring at least this share of the best one
    lexical_weight: float = 0.25  # share of the score from query-word overlap
    max_sentence_chars: int = 600
    context_weight: float = 0.5  # share of the similarity from the sentence read in its context
    max_code_chars: int = 800  # an introduced code block is cut at a line boundary past this
    dangling_penalty: float = 0.05  # a sentence ending in ":" whose block is not in the chunk


@dataclass(frozen=True)
class Paragraph:
    start: int  # span in the chunk's text
    end: int
    kind: str  # heading | code | table | text


@dataclass(frozen=True)
class Candidate:
    hit: int  # index of the hit the sentence comes from
    text: str  # the sentence, whitespace normalised
    start: int  # span of the sentence in its chunk's text
    end: int
    code: str = ""  # the code block the sentence introduces ("" when none)
    code_end: int = 0  # where the quoted part of that block ends in the chunk's text
    dangling: bool = False  # ends with ":" but nothing it introduces follows in the chunk


def heading_names(hit: Hit) -> set[str]:
    """The chunk's heading path, each as a bare lower-case title (permalink marks removed)."""
    return {_PERMALINK.sub("", " ".join(h.split())).lower() for h in hit.chunk.heading_path}


def is_heading(line: str, headings: set[str] = frozenset()) -> bool:
    """A line that names a section rather than says something: one of ``headings``, a line
    ending in a permalink mark, or a short title-like line (a section number, or a capital
    letter) with no sentence punctuation and no code characters."""
    line = " ".join(line.split())
    bare = _PERMALINK.sub("", line)
    if not bare or "\n" in line:
        return False
    if bare.lower() in headings or bare != line:
        return True
    if len(bare.split()) > 12 or re.search(r"[.!:;]$", bare):
        return False
    if _SECTION_NUMBER.match(bare):
        return True
    return bool(_TITLE.match(bare)) and not _CODE_CHARS.search(bare)


def looks_like_code(text: str) -> bool:
    """A paragraph that reads as code or console output rather than prose."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if not lines:
        return False
    if any(_PROMPT.match(ln.lstrip()) for ln in lines) or any(ln[:1] in " \t" for ln in lines):
        return True
    if sum(bool(_CODE_LINE.search(ln)) for ln in lines) * 2 >= len(lines) and not _TERMINAL.search(text.rstrip()):
        return True
    words = text.split()
    if _TERMINAL.search(text.rstrip()) or (len(words) >= 6 and
                                           sum(bool(_PLAIN_WORD.match(w)) for w in words) >= 0.75 * len(words)):
        return False  # ends like a sentence, or reads as words: prose (a list item, a run-on line)
    first = lines[0].lstrip()
    return bool(_CODE_CHARS.search(text)) or first[:1].islower() or first[:1].isdigit()


def paragraphs(text: str, headings: set[str] = frozenset()) -> list[Paragraph]:
    """The chunk's text as paragraphs, each with its kind."""
    out: list[Paragraph] = []
    for a, b in sentence_blocks(text):
        body = text[a:b]
        lines = [ln for ln in body.split("\n") if ln.strip()]
        if len(lines) == 1 and is_heading(lines[0], headings):
            kind = "heading"
        elif len(lines) > 1 and all(" | " in ln for ln in lines):
            kind = "table"
        elif looks_like_code(body):
            kind = "code"
        else:
            kind = "text"
        out.append(Paragraph(a, b, kind))
    return out


def sentence_blocks(text: str) -> list[tuple[int, int]]:
    """Spans of the runs of lines between blank lines (no blank spans)."""
    spans, pos = [], 0
    for m in _PARA_BREAK.finditer(text):
        if text[pos : m.start()].strip():
            spans.append((pos, m.start()))
        pos = m.end()
    if text[pos:].strip():
        spans.append((pos, len(text)))
    return spans


def introduced_code(text: str, paras: list[Paragraph], i: int, limit: int) -> tuple[str, int]:
    """The code block right after paragraph ``i`` (its code paragraphs, blank lines kept),
    cut at a line boundary past ``limit`` characters with "…": (quoted text, its end)."""
    j = i + 1
    while j < len(paras) and paras[j].kind == "code":
        j += 1
    if j == i + 1:
        return "", 0
    start, end = paras[i + 1].start, paras[j - 1].end
    block = text[start:end]
    if len(block) <= limit:
        return block, end
    cut = block.rfind("\n", 0, limit + 1)
    cut = cut if cut > 0 else limit
    return block[:cut].rstrip() + "\n…", start + cut


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

    def candidates(self, hits: Sequence[Hit]) -> list[Candidate]:
        """Every quotable sentence of the hits: prose and table rows, never headings or code."""
        out: list[Candidate] = []
        for h, hit in enumerate(hits):
            text = hit.chunk.text
            paras = paragraphs(text, heading_names(hit))
            for p, para in enumerate(paras):
                if para.kind not in ("text", "table"):
                    continue
                spans = sentence_spans(text, para.start, para.end)
                if para.kind == "table":
                    spans = spans[1:]  # the header row names the columns: it says nothing
                for k, (a, b) in enumerate(spans):
                    sent = " ".join(text[a:b].split())
                    if len(sent.split()) < 3 or len(sent) > self.s.max_sentence_chars or is_heading(sent):
                        continue
                    if k and _ANAPHOR.match(sent):  # quote the sentence it leans on with it
                        joined = " ".join(text[spans[k - 1][0] : b].split())
                        if len(joined) <= self.s.max_sentence_chars:
                            a, sent = spans[k - 1][0], joined
                    code, code_end, dangling = "", 0, False
                    if sent.endswith(":") and b == spans[-1][1]:
                        code, code_end = introduced_code(text, paras, p, self.s.max_code_chars)
                        dangling = not code and p == len(paras) - 1
                    out.append(Candidate(h, sent, a, b, code, code_end, dangling))
        return out

    def score(self, question: str, hits: Sequence[Hit], cands: list[Candidate]) -> np.ndarray:
        """Each candidate's blended score (see the module's docstring)."""
        q_vec = self.embedder.embed_query(question)
        alone = self._embed([c.text for c in cands]) @ q_vec
        read_in = []
        for c in cands:
            path = hits[c.hit].chunk.heading_path
            head = " > ".join(_PERMALINK.sub("", p) for p in path) + ": " if path else ""
            read_in.append(f"{head}{c.text} {c.code[:MAX_CONTEXT_CODE]}".strip())
        in_context = alone if read_in == [c.text for c in cands] else self._embed(read_in) @ q_vec
        cw = self.s.context_weight
        dense = (1 - cw) * alone + cw * in_context
        q_words = word_stems(question)
        lexical = np.array([len(q_words & word_stems(f"{c.text} {c.code}")) / len(q_words) if q_words else 0.0
                            for c in cands])
        w = self.s.lexical_weight
        scores = (1 - w) * dense + w * lexical
        # a small preference for higher-ranked passages breaks near-ties toward better retrieval
        scores = scores - 0.01 * np.array([c.hit for c in cands])
        return scores - self.s.dangling_penalty * np.array([c.dangling for c in cands])

    def answer(self, question: str, hits: Sequence[Hit]) -> Answer:
        cands = self.candidates(hits)
        if not cands:
            return Answer(NOT_FOUND, (), grounded=False, generator=self.name, hits=tuple(hits))
        scores = self.score(question, hits, cands)
        order = np.argsort(-scores, kind="stable")
        best = float(scores[order[0]])
        if best < self.s.min_score:
            return Answer(NOT_FOUND, (), grounded=False, generator=self.name, hits=tuple(hits))
        chosen: list[Candidate] = []
        seen_words: list[set[str]] = []
        for j in order:
            if len(chosen) >= self.s.max_sentences or scores[j] < max(self.s.min_score, self.s.relative * best):
                break
            words = content_words(cands[j].text)
            if any(len(words & w2) / max(1, len(words | w2)) > 0.7 for w2 in seen_words):
                continue  # near-duplicate of a sentence already chosen
            if any(c.hit == cands[j].hit and c.start < cands[j].end and cands[j].start < c.end for c in chosen):
                continue  # overlaps a quoted passage (a sentence quoted with the one it leans on)
            chosen.append(cands[j])
            seen_words.append(words)
        return self._compose(chosen, hits)

    def _compose(self, chosen: list[Candidate], hits: Sequence[Hit]) -> Answer:
        """The chosen sentences in order, each with its citation mark; a sentence that
        introduces a code block is followed by the block, the mark closing both."""
        numbers: dict[int, int] = {}  # hit index -> citation number
        parts, citations = [], []
        for c in chosen:
            chunk = hits[c.hit].chunk
            if c.hit not in numbers:
                numbers[c.hit] = len(numbers) + 1
                end = c.code_end if c.code else c.end
                snippet = f"{c.text}\n\n{c.code}" if c.code else c.text
                citations.append(Citation(numbers[c.hit], chunk, snippet, chunk.start + c.start, chunk.start + end))
            parts.append(f"{c.text}\n\n{c.code} [{numbers[c.hit]}]" if c.code else f"{c.text} [{numbers[c.hit]}]")
        sep = "\n\n" if any(c.code for c in chosen) else " "
        return Answer(sep.join(parts), tuple(citations), grounded=True, generator=self.name, hits=tuple(hits))

    def _embed(self, texts: list[str]) -> np.ndarray:
        tok = self.embedder.tokenizer
        if all(tok.count(t) <= self.embedder.max_tokens for t in texts):
            return self.embedder.embed_documents(texts)
        return np.stack([self.embedder.embed_query(t) for t in texts])
