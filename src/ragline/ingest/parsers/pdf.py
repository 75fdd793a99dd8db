"""PDF with pypdf: one Section per page (1-based ``page``), running headers
and footers removed, words hyphenated across lines joined."""

from __future__ import annotations

import contextlib
import io
import logging

from ragline.ingest.clean import clean_prose, normalize_whitespace, remove_repeated_lines
from ragline.ingest.parsers.base import ParseError, Segment, assemble, short, stem_of, year_of
from ragline.types import Document

ENCRYPTED = "encrypted PDF (password required)"
NO_TEXT = "no extractable text (scanned PDF?)"


def _open(data: bytes):  # -> pypdf.PdfReader
    import pypdf

    if b"%PDF" not in data[:1024]:
        raise ParseError("corrupt PDF: no %PDF header")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
    except Exception as exc:
        raise ParseError(f"corrupt PDF: {short(exc)}") from None
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")  # an owner-only password still lets us read
        except Exception as exc:  # e.g. AES without the `cryptography` package
            raise ParseError(f"{ENCRYPTED}: {short(exc)}") from None
        if not opened:
            raise ParseError(ENCRYPTED)
    return reader


def _metadata(reader, source: str) -> dict:
    meta: dict = {"title": stem_of(source)}
    try:
        info = reader.metadata
    except Exception:  # a broken info dictionary is not worth failing for
        info = None
    if info:
        try:
            title = " ".join(str(info.title or "").split())
            if title:
                meta["title"] = title
        except Exception:
            pass
        year = None
        try:
            year = year_of(info.creation_date)
        except Exception:
            pass
        if year is None:
            year = year_of(str(info.get("/CreationDate") or ""))
        if year is not None:
            meta["year"] = year
    return meta


@contextlib.contextmanager
def _quiet_pypdf():
    """pypdf logs warnings about harmless oddities (and about the corrupt
    files we report ourselves): hush them while we read."""
    log = logging.getLogger("pypdf")
    level = log.level
    log.setLevel(logging.ERROR + 10)
    try:
        yield
    finally:
        log.setLevel(level)


def _page_texts(pages) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    errors: list[str] = []
    for page in pages:
        try:
            texts.append(page.extract_text() or "")
        except Exception as exc:  # one bad page should not sink the rest
            errors.append(short(exc))
            texts.append("")
    return texts, errors


def parse(data: bytes, source: str) -> Document:
    with _quiet_pypdf():
        reader = _open(data)
        try:
            pages = list(reader.pages)
        except Exception as exc:
            raise ParseError(f"corrupt PDF: {short(exc)}") from None
        if not pages:
            raise ParseError("empty: PDF has no pages")
        texts, errors = _page_texts(pages)
        meta = _metadata(reader, source)

    if not any(t.strip() for t in texts):
        if errors:
            raise ParseError(f"corrupt PDF: {errors[0]}")
        raise ParseError(NO_TEXT)

    cleaned = remove_repeated_lines([normalize_whitespace(t) for t in texts])
    segments = [Segment(t, page=i) for i, t in enumerate(cleaned, start=1)]
    text, sections = assemble(segments, clean=clean_prose)
    if not text.strip():  # every line was a header or footer
        raise ParseError(NO_TEXT)
    meta["pages"] = len(pages)
    if errors:
        meta["page_errors"] = len(errors)
    return Document(source=source, type="pdf", text=text, sections=sections, metadata=meta)
