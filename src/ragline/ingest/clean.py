"""Pure text-cleaning functions applied by the parsers.

Nothing here does I/O or keeps state: each function maps text to text (or
pages to pages), so offsets computed after cleaning stay valid.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

# Characters that render as a space: NBSP and the other fixed-width spaces.
_SPACES = "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
# Characters that render as nothing: zero-width marks, BOM, soft hyphen.
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
# Characters that break a line or a page.
_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _translation() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for cp in [*range(0x00, 0x20), *range(0x7F, 0xA0)]:
        if chr(cp) not in "\n\t":
            table[cp] = None  # control characters go
    for ch in _BREAKS:
        table[ord(ch)] = "\n"
    for ch in _SPACES:
        table[ord(ch)] = " "
    for ch in _INVISIBLE:
        table[ord(ch)] = None
    return table


_TABLE = _translation()
_RUNS = re.compile(r"[ \t]{2,}|\t")
_BLANKS = re.compile(r"\n{3,}")


def normalize_whitespace(text: str, *, keep_indent: bool = False, collapse: bool = True) -> str:
    """Tidy whitespace and drop invisible characters.

    - CRLF/CR become LF; form feeds and Unicode line separators become LF.
    - NBSP and other fixed-width spaces become a plain space.
    - Control characters other than ``\\n`` and ``\\t`` are removed, as are
      zero-width characters, the BOM and soft hyphens.
    - Trailing spaces are stripped from every line.
    - With ``collapse`` (the default) runs of spaces/tabs become one space and
      leading indentation is dropped, unless ``keep_indent`` (Markdown, plain
      text: indentation is meaningful there).
    - At most one blank line in a row; blank lines at both ends are removed.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_TABLE)
    lines = []
    for line in text.split("\n"):
        line = line.rstrip()
        if collapse and line:
            if keep_indent:
                body = line.lstrip(" \t")
                line = line[: len(line) - len(body)] + _RUNS.sub(" ", body)
            else:
                line = _RUNS.sub(" ", line).lstrip()
        lines.append(line)
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip("\n")


# A line break after a hyphen or soft hyphen, with the first letter of the next
# line after it. The word before the mark is found by walking back from it: a
# pattern that matched the word first would try every position of a long run of
# letters against every later one (quadratic: 40,000 letters with no space took
# 43 s, a 1 MB line would take hours).
_MARK = re.compile(r"([-\u00ad])[ \t]*\r?\n[ \t]*(?=[^\W\d_])")


def _word_start(text: str, end: int) -> int:
    """Start of the run of word characters and hyphens that ends at ``end``."""
    pos = end
    while pos > 0 and (text[pos - 1].isalnum() or text[pos - 1] in "_-"):
        pos -= 1
    return pos


def dehyphenate(text: str) -> str:
    """Join words hyphenated across line breaks: ``"retrie-\\nval"`` -> ``"retrieval"``.

    Hyphens inside a line are never touched, and a compound that already has a
    hyphen keeps the one at the break (``"state-of-the-\\nart"`` ->
    ``"state-of-the-art"``). The two halves end up on one line. Linear in the
    length of the text.
    """
    out: list[str] = []
    done = 0
    for m in _MARK.finditer(text):
        mark, nxt = m.group(1), text[m.end()]
        head_end = m.start()
        head_start = _word_start(text, head_end)
        while head_start < head_end and text[head_start] == "-":  # a word starts with a letter or digit
            head_start += 1
        if head_start >= head_end:
            continue
        if mark == "\u00ad":  # a soft hyphen only ever marks a break
            keep = ""
        elif not (nxt.islower() and text[head_end - 1].isalpha()):
            continue  # "Smith-\nJones", "COVID-\n19": leave alone
        elif "-" in text[head_start:head_end]:  # "state-of-the-\nart": the hyphen is real
            keep = "-"
        else:
            keep = ""
        out.append(text[done:head_end])
        out.append(keep)
        done = m.end()
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def clean_prose(text: str) -> str:
    """Dehyphenate, then normalize whitespace (PDF and other flowed text)."""
    return normalize_whitespace(dehyphenate(text))


def _line_key(line: str) -> str:
    """A line's identity for header/footer matching: case, spacing and page
    numbers (any digits) ignored."""
    return re.sub(r"\d+", "#", " ".join(line.split()).lower())


def _edge_indices(lines: list[str], edge_lines: int) -> list[int]:
    filled = [i for i, line in enumerate(lines) if line.strip()]
    return sorted(set(filled[:edge_lines] + filled[-edge_lines:]))


def remove_repeated_lines(pages: Sequence[str], *, edge_lines: int = 2, min_ratio: float = 0.6) -> list[str]:
    """Remove running headers and footers from a paged document.

    A line among the first or last ``edge_lines`` non-empty lines of a page is
    dropped when, ignoring digits (page numbers), case and spacing, it sits at
    the edge of at least ``min_ratio`` of the pages (and of two pages or more).
    Lines elsewhere on a page are never touched.
    """
    if len(pages) < 2:
        return list(pages)
    split = [page.split("\n") for page in pages]
    counts: Counter[str] = Counter()
    for lines in split:
        keys = {_line_key(lines[i]) for i in _edge_indices(lines, edge_lines)}
        counts.update(k for k in keys if k)
    need = max(2, math.ceil(min_ratio * len(pages)))
    frequent = {k for k, n in counts.items() if n >= need}
    if not frequent:
        return list(pages)
    out = []
    for lines in split:
        drop = {i for i in _edge_indices(lines, edge_lines) if _line_key(lines[i]) in frequent}
        out.append("\n".join(line for i, line in enumerate(lines) if i not in drop))
    return out
