"""Parsers: bytes of a supported format -> a ``Document`` with clean text and
Sections that tile it (each maps a span back to its page or heading path).

Every failure is a ``ParseError`` whose ``reason`` says what is wrong in a few
words; no other exception type escapes ``parse_bytes`` or ``parse_file`` except
MemoryError, which the caller reports with its memory limit (``ingest.worker``).
Parsed text never carries a lone surrogate (see ``scrub``).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ragline.ingest.parsers import code, docx, html, markdown, pdf, tabular, text
from ragline.ingest.parsers.base import EMPTY, ParseError, short
from ragline.types import Document

__all__ = ["ParseError", "SUPPORTED_EXTENSIONS", "detect_type", "parse_bytes", "parse_file", "read_file", "scrub"]

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
    except (ParseError, MemoryError):  # out of memory is the caller's to report (see ingest.worker)
        raise
    except Exception as exc:  # a library failure the parser did not foresee
        raise ParseError(f"{type} parse failed: {short(exc)}") from None
    if not doc.text.strip():
        raise ParseError(EMPTY)
    return scrub_document(doc)


# A lone surrogate (JSON "\\ud800", a surrogate-escaped byte) is a str but not text: the tokenizer,
# UTF-8 encoders and Arrow all reject it, so it must not leave the parse boundary.
_SURROGATE = re.compile("[\ud800-\udfff]")


def scrub(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (one for one, so spans stay valid)."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {_scrub_value(k): _scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_scrub_value(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


def scrub_document(doc: Document) -> Document:
    """The document with no lone surrogate in its text, headings or metadata (keys too)."""
    sections = tuple(s if all(h.isascii() for h in s.heading_path)
                     else replace(s, heading_path=tuple(scrub(h) for h in s.heading_path)) for s in doc.sections)
    return replace(doc, source=scrub(doc.source), text=scrub(doc.text), sections=sections,
                   metadata=_scrub_value(dict(doc.metadata)))


def parse_file(path: Path, max_bytes: int = 50 * 2**20) -> Document:
    """Read ``path`` (checking it exists, is readable and not over
    ``max_bytes``) and parse it by its extension."""
    path = Path(path)
    kind = detect_type(path)
    if kind is None:
        raise ParseError(f"unsupported file type '{path.suffix or path.name}'")
    return parse_bytes(read_file(path, max_bytes), str(path), kind)


def read_file(path: Path, max_bytes: int = 50 * 2**20) -> bytes:
    """The bytes of ``path``, or ParseError saying why they cannot be had.

    Only regular files are read (after following symlinks): a FIFO would block for a writer and
    a device (``/dev/zero``) reports size 0 and never ends. The open is non-blocking, so a FIFO
    swapped in after the check cannot hang it either, and the size bound applies to the bytes
    actually read, not to what ``stat`` claimed."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        _require_regular(os.stat(path).st_mode)
        fd = os.open(path, flags)
        try:
            st = os.fstat(fd)
            _require_regular(st.st_mode)  # the path may have been replaced between stat and open
            if st.st_size > max_bytes:
                raise ParseError(_too_large(st.st_size, max_bytes))
            parts, got = [], 0
            while got <= max_bytes:
                part = os.read(fd, min(max_bytes + 1 - got, 2**20))
                if not part:
                    break
                parts.append(part)
                got += len(part)
        finally:
            os.close(fd)
    except ParseError:
        raise
    except PermissionError:
        raise ParseError("unreadable: permission denied") from None
    except FileNotFoundError:
        raise ParseError("missing: file not found") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO's peer gone
            raise ParseError("not a regular file") from None
        raise ParseError(f"unreadable: {exc.strerror or short(exc)}") from None
    if got > max_bytes:  # grew while we looked
        raise ParseError(f"too large: over {max_bytes / 2**20:.1f} MB limit; raise ingest.max_file_mb")
    return b"".join(parts)


_KINDS = ((stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISSOCK, "socket"))


def _require_regular(mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise ParseError("is a directory")
    kind = next((name for test, name in _KINDS if test(mode)), "special file")
    raise ParseError(f"not a regular file: {kind}")


def _too_large(size: int, limit: int) -> str:
    return f"too large: {size / 2**20:.1f} MB > {limit / 2**20:.1f} MB limit; raise ingest.max_file_mb"
