"""Parsers: bytes of a supported format -> a ``Document`` with clean text and
Sections that tile it (each maps a span back to its page or heading path).

Every failure is a ``ParseError`` whose ``reason`` says what is wrong in a few
words; no other exception type escapes ``parse_bytes`` or ``parse_file``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ragline.ingest.parsers import code, docx, html, markdown, pdf, tabular, text
from ragline.ingest.parsers.base import EMPTY, ParseError, short
from ragline.types import Document

__all__ = ["ParseError", "SUPPORTED_EXTENSIONS", "detect_type", "parse_bytes", "parse_file", "read_file"]

SUPPORTED_EXTENSIONS: dict[str, str] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".md": "markdown", ".markdown": "markdown", ".mdown": "markdown", ".mkd": "markdown",
    ".txt": "text", ".text": "text", ".rst": "text", ".log": "text",
    ".csv": "csv", ".tsv": "csv",
    ".json": "json", ".jsonl": "json", ".ndjson": "json",
    **{ext: "code" for ext in code.LANGUAGES},
}

_PARSERS: dict[str, Callable[[bytes, str], Document]] = {
    "pdf": pdf.parse,
    "docx": docx.parse,
    "html": html.parse,
    "markdown": markdown.parse,
    "text": text.parse,
    "code": code.parse,
    "csv": tabular.parse_csv,
    "json": tabular.parse_json,
}


def detect_type(path: Path) -> str | None:
    """The parser type for ``path``'s extension, or None if unsupported."""
    return SUPPORTED_EXTENSIONS.get(Path(path).suffix.lower())


def parse_bytes(data: bytes, source: str, type: str) -> Document:  # noqa: A002 - public name
    """Parse ``data`` as ``type``; ``source`` is recorded and names the file
    (its extension picks the language of code). Pure: no file I/O."""
    parser = _PARSERS.get(type)
    if parser is None:
        raise ParseError(f"unsupported type: {type!r}")
    try:
        data = bytes(data)
    except Exception as exc:
        raise ParseError(f"not bytes: {short(exc)}") from None
    if not data.strip():
        raise ParseError(EMPTY)
    try:
        doc = parser(data, source)
    except ParseError:
        raise
    except Exception as exc:  # a library failure the parser did not foresee
        raise ParseError(f"{type} parse failed: {short(exc)}") from None
    if not doc.text.strip():
        raise ParseError(EMPTY)
    return doc


def parse_file(path: Path, max_bytes: int = 50 * 2**20) -> Document:
    """Read ``path`` (checking it exists, is readable and not over
    ``max_bytes``) and parse it by its extension."""
    path = Path(path)
    kind = detect_type(path)
    if kind is None:
        raise ParseError(f"unsupported file type '{path.suffix or path.name}'")
    return parse_bytes(read_file(path, max_bytes), str(path), kind)


def read_file(path: Path, max_bytes: int = 50 * 2**20) -> bytes:
    """The bytes of ``path``, or ParseError saying why they cannot be had."""
    try:
        if not path.exists():
            raise ParseError("missing: file not found")
        if path.is_dir():
            raise ParseError("is a directory")
        size = path.stat().st_size
        if size > max_bytes:
            raise ParseError(_too_large(size, max_bytes))
        data = path.read_bytes()
    except ParseError:
        raise
    except PermissionError:
        raise ParseError("unreadable: permission denied") from None
    except FileNotFoundError:
        raise ParseError("missing: file not found") from None
    except OSError as exc:
        raise ParseError(f"unreadable: {exc.strerror or short(exc)}") from None
    if len(data) > max_bytes:  # grew while we looked
        raise ParseError(_too_large(len(data), max_bytes))
    return data


def _too_large(size: int, limit: int) -> str:
    return f"too large: {size / 2**20:.1f} MB > {limit / 2**20:.1f} MB limit; raise ingest.max_file_mb"
