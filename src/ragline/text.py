"""Small text utilities shared by chunking and answering."""

from __future__ import annotations

import re

# Sentence end: . ! ? (optionally a closing quote/bracket) then whitespace before a capital or
# digit; or a blank line; or a line break, except one that wraps a sentence mid-way (a lowercase
# letter or comma before it, a lowercase letter after it), as in hard-wrapped plain text.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n\s*|(?<![a-z,])\n+|\n+(?![a-z])")
_WORD = re.compile(r"[A-Za-z0-9]+")
STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how i in is it its of on or that the this to "
    "was were what when where which who why will with not no".split()
)


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text[start:end]`` (no empty spans)."""
    end = len(text) if end is None else end
    spans, pos = [], start
    for m in SENTENCE_END.finditer(text, start, end):
        if text[pos : m.start()].strip():
            spans.append((pos, m.start()))
        pos = m.end()
    if text[pos:end].strip():
        spans.append((pos, end))
    return spans


def content_words(text: str) -> set[str]:
    return {w for w in (t.lower() for t in _WORD.findall(text)) if w not in STOPWORDS and len(w) > 1}


def _stem(word: str) -> str:
    """A crude English stem, enough for "sorting", "sorted" and "sorts" to meet "sort"."""
    for suffix in ("ies", "ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def word_stems(text: str) -> set[str]:
    """The content words of ``text`` (see ``content_words``), each crudely stemmed."""
    return {_stem(w) for w in content_words(text)}
