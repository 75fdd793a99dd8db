"""PDF with pypdf: one Section per page (1-based ``page``), running headers
and footers removed, words hyphenated across lines joined.

pypdf refuses a single stream that inflates past 75 MB (``LimitReachedError``,
reported here as a decompression bomb), but not many streams within that,
nor a small stream that costs minutes to read: a 28 KB file whose one page
inflates to 10 MB of text operators took 256 s and gave 7.8 M characters. So
the pages' content is measured before any text is extracted, against
``base.LIMITS`` (total unpacked size, and expansion over the file's own size
once past ``_RATIO_FLOOR``), and extracted text is counted page by page
against ``max_text_chars``."""

from __future__ import annotations

import contextlib
import io
import logging

from ragline.ingest.clean import clean_prose, normalize_whitespace, remove_repeated_lines
from ragline.ingest.parsers import base
from ragline.ingest.parsers.base import ParseError, Segment, assemble, check_length, short, stem_of, year_of
from ragline.types import Document

ENCRYPTED = "encrypted PDF (password required)"
NO_TEXT = "no extractable text (scanned PDF?)"
# Page content past this size must not exceed ``max_ratio`` times the file: text pages
# compress 3-10 times, and their content is a small part of the file beside fonts and images.
_RATIO_FLOOR = 2**20


def _is_limit(exc: BaseException) -> bool:
    return type(exc).__name__ == "LimitReachedError"


def _bomb(exc: BaseException) -> ParseError:
    return ParseError(f"decompression bomb: a stream inflates past pypdf's limit ({short(exc)})")


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


def _content_size(page) -> int:
    """Bytes of ``page``'s content streams once inflated (0 if it has none or they are broken)."""
    try:
        contents = page.get("/Contents")
        if contents is None:
            return 0
        contents = contents.get_object()
        streams = contents if isinstance(contents, list) else [contents]
        return sum(len(s.get_object().get_data()) for s in streams)
    except Exception as exc:
        if _is_limit(exc):
            raise _bomb(exc) from None
        return 0  # broken content: extract_text reports it per page


def _check_content(pages, file_size: int) -> None:
    """ParseError when the pages' content inflates past ``base.LIMITS``."""
    lim = base.LIMITS
    total = 0
    for page in pages:
        total += _content_size(page)
        if total > lim.max_unpacked_bytes:
            raise ParseError(f"decompression bomb: page content expands to over {total / 2**20:.1f} MB "
                             f"(limit {lim.max_unpacked_bytes / 2**20:.1f} MB per file; raise ingest.max_unpacked_mb)")
    if total > _RATIO_FLOOR and total > lim.max_ratio * file_size:
        raise ParseError(f"decompression bomb: page content expands to {total / 2**20:.1f} MB from a "
                         f"{file_size / 1024:.0f} KB file (more than {lim.max_ratio:.0f} times)")


def _page_texts(pages) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    errors: list[str] = []
    chars = 0
    for page in pages:
        try:
            text = page.extract_text() or ""
        except Exception as exc:  # one bad page should not sink the rest
            if _is_limit(exc):
                raise _bomb(exc) from None
            errors.append(short(exc))
            text = ""
        texts.append(text)
        chars += len(text)
        check_length(chars)
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
        _check_content(pages, len(data))
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
