"""Markdown: the source text kept as is (whitespace tidied); markdown-it-py
finds the ATX and setext headings, and each heading starts a Section whose
heading_path is the chain of headings above it. A YAML front matter block is
not mistaken for a heading and may supply the title."""

from __future__ import annotations

import re

from ragline.ingest.clean import normalize_whitespace
from ragline.ingest.parsers.base import check_length, decode_text, line_starts, stem_of, year_of
from ragline.types import Document, Section

_FRONT_END = re.compile(r"^(---|\.\.\.)[ \t]*$", re.MULTILINE)
_FM_FIELD = re.compile(r"^(title|date)\s*:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)


def _front_matter(text: str) -> tuple[int, dict[str, str]]:
    """(number of lines the front matter block takes, its title/date fields)."""
    if not text.startswith("---\n"):
        return 0, {}
    end = _FRONT_END.search(text, 4)
    if end is None:
        return 0, {}
    block = text[4 : end.start()]
    fields = {k.lower(): v.strip("'\"") for k, v in _FM_FIELD.findall(block)}
    return text.count("\n", 0, end.end()) + 1, fields


def _inline_text(token) -> str:
    """Plain text of an inline token: markup dropped, code spans kept."""
    parts = [c.content for c in token.children or () if c.type in ("text", "code_inline")]
    return " ".join("".join(parts).split()) or " ".join(token.content.split())


def headings(text: str) -> list[tuple[int, int, str]]:
    """(0-based line, level, title) of every top-level heading in ``text``."""
    from markdown_it import MarkdownIt

    skip, _ = _front_matter(text)
    lines = text.split("\n")
    scan = "\n".join([""] * skip + lines[skip:])  # same line numbers, no front matter
    tokens = MarkdownIt("commonmark").parse(scan)
    found = []
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.level == 0 and tok.map and i + 1 < len(tokens):
            found.append((tok.map[0], int(tok.tag[1:]), _inline_text(tokens[i + 1])))
    return found


def parse(data: bytes, source: str) -> Document:
    raw, encoding = decode_text(data)
    check_length(len(raw))
    text = normalize_whitespace(raw, keep_indent=True)
    starts = line_starts(text)
    found = headings(text)

    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    first = starts[found[0][0]] if found else len(text)
    if first > 0:
        sections.append(Section(0, first))
    for n, (line, level, title) in enumerate(found):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        end = starts[found[n + 1][0]] if n + 1 < len(found) else len(text)
        if end > starts[line]:
            sections.append(Section(starts[line], end, heading_path=tuple(t for _, t in stack)))

    _, fields = _front_matter(text)
    h1 = next((title for _, level, title in found if level == 1 and title), "")
    meta: dict = {"title": fields.get("title") or h1 or stem_of(source), "encoding": encoding}
    year = year_of(fields.get("date", ""))
    if year is not None:
        meta["year"] = year
    return Document(source=source, type="markdown", text=text, sections=tuple(sections), metadata=meta)
