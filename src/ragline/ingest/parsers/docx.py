"""DOCX with python-docx: body paragraphs and tables in document order.

Heading-styled paragraphs set the heading_path of what follows them; each
table becomes a Section of kind "table" with one "cell | cell" line per row.
"""

from __future__ import annotations

import io
import re

from ragline.ingest.clean import normalize_whitespace
from ragline.ingest.parsers.base import OutlineBuilder, ParseError, assemble, short, stem_of, year_of
from ragline.types import Document

_HEADING = re.compile(r"heading\s*(\d)", re.IGNORECASE)


def _heading_level(paragraph) -> int | None:
    """1-9 for "Heading N" styles (or styles based on them), 0 for "Title"."""
    try:
        style = paragraph.style
    except Exception:  # a dangling style reference: treat as body text
        return None
    for _ in range(4):  # follow a short chain of base styles
        if style is None:
            return None
        for name in (style.name or "", getattr(style, "style_id", "") or ""):
            m = _HEADING.match(name.strip())
            if m:
                return int(m.group(1))
            if name.strip().lower() == "title":
                return 0
        style = getattr(style, "base_style", None)
    return None


def _rows(table) -> list[str]:
    """A table as "a | b" lines; merged cells (repeated by python-docx) once."""
    lines = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            lines.append(" | ".join(cells))
    return lines


def parse(data: bytes, source: str) -> Document:
    import docx
    from docx.table import Table

    try:
        doc = docx.Document(io.BytesIO(data))
    except Exception as exc:  # not a zip, not a Word package, broken XML
        raise ParseError(f"corrupt DOCX: {short(exc)}") from None

    outline = OutlineBuilder()
    try:
        for item in doc.iter_inner_content():
            if isinstance(item, Table):
                outline.table(_rows(item))
                continue
            level = _heading_level(item)
            if level is not None and item.text.strip():
                outline.heading(level, item.text)
            else:
                outline.block(item.text)
    except Exception as exc:
        raise ParseError(f"corrupt DOCX: {short(exc)}") from None
    text, sections = assemble(outline.finish(), clean=normalize_whitespace)

    meta: dict = {"title": stem_of(source)}
    try:
        core = doc.core_properties
        title = " ".join((core.title or "").split())
        if title:
            meta["title"] = title
        year = year_of(core.created)
        if year is not None:
            meta["year"] = year
    except Exception:  # bad core properties: keep the defaults
        pass
    return Document(source=source, type="docx", text=text, sections=sections, metadata=meta)
