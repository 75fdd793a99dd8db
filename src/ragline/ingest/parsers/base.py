"""Shared pieces of the parsers: the error type, text decoding, and the
builders that turn a list of cleaned pieces into text plus tiling Sections."""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import PurePath
from urllib.parse import urlparse

from ragline.ingest.clean import normalize_whitespace
from ragline.types import Section

EMPTY = "empty: no text"


class ParseError(Exception):
    """A source that cannot be turned into a Document; ``reason`` says why in
    a few words a user can act on."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def short(exc: BaseException, limit: int = 160) -> str:
    """A library exception as one short line: ``"PdfReadError: EOF marker not found"``."""
    lines = str(exc).strip().splitlines()
    msg = lines[0].strip() if lines else ""
    text = f"{exc.__class__.__name__}: {msg}" if msg else exc.__class__.__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """What one file may expand to. A small file can unpack to far more than
    its size (a 0.34 MB DOCX held 74 M characters of text), so caps on the
    bytes read from disk are not enough: a file over one of these fails with
    the cap in its reason, never cut short silently.

    ``max_unpacked_bytes`` bounds the bytes decompressed from one file's
    archive members (counted as they come out: the sizes a zip header states
    may lie); ``max_ratio`` bounds a member's expansion over its compressed
    size once it is past ``ratio_floor_bytes`` (XML compresses 5-30 times;
    bombs, hundreds to a thousand times)."""

    max_text_chars: int = 20_000_000
    max_unpacked_bytes: int = 256 * 2**20
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 10 * 2**20


LIMITS = Limits()


def configure(*, max_text_chars: int | None = None, max_unpacked_mb: float | None = None) -> Limits:
    """Set the process-wide parse limits (from ``ingest`` settings) and return
    them; None keeps a value. Call it before parsing, in every process that parses."""
    global LIMITS
    changes: dict = {}
    if max_text_chars is not None:
        changes["max_text_chars"] = int(max_text_chars)
    if max_unpacked_mb is not None:
        changes["max_unpacked_bytes"] = int(max_unpacked_mb * 2**20)
    LIMITS = replace(LIMITS, **changes)
    return LIMITS


def check_length(n: int) -> None:
    """ParseError when ``n`` characters of text exceed ``max_text_chars``."""
    limit = LIMITS.max_text_chars
    if n > limit:
        raise ParseError(f"too much text: over {limit:,} characters; raise ingest.max_text_chars")


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


class Unpacker:
    """Reads members of a zip package (DOCX) within ``LIMITS``: each member's
    declared size and ratio are checked before it is opened, and the bytes
    that actually come out are counted while it is read."""

    def __init__(self, data: bytes, kind: str) -> None:
        self.kind = kind
        self.limits = LIMITS
        self.total = 0
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
            self.infos = {info.filename: info for info in self.zip.infolist()}
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
            raise ParseError(f"corrupt {kind}: not a zip archive ({short(exc)})") from None

    def has(self, name: str) -> bool:
        return name in self.infos

    def _bomb(self, info: zipfile.ZipInfo, size: int, total: int, exact: bool) -> ParseError | None:
        """The error for member ``info`` at ``size`` bytes out (the file at ``total``), if any."""
        lim, name = self.limits, info.filename
        amount = _mb(size) if exact else f"over {_mb(size)}"
        if total > lim.max_unpacked_bytes:
            what = (f"expands to {amount}" if size > lim.max_unpacked_bytes
                    else f"brings what the file unpacks to over {_mb(total)}")
            return ParseError(f"decompression bomb: {name} {what} "
                              f"(limit {_mb(lim.max_unpacked_bytes)} per file; raise ingest.max_unpacked_mb)")
        if size > lim.ratio_floor_bytes and size > lim.max_ratio * max(info.compress_size, 1):
            return ParseError(f"decompression bomb: {name} expands to {amount} from "
                              f"{info.compress_size / 1024:.0f} KB (more than {lim.max_ratio:.0f} times)")
        return None

    def open(self, name: str) -> _MemberReader:
        """A reader of member ``name``; ParseError if it is missing, encrypted or a bomb."""
        info = self.infos.get(name)
        if info is None:
            raise ParseError(f"corrupt {self.kind}: {name} missing")
        if info.flag_bits & 0x1:
            raise ParseError(f"encrypted {self.kind} (password required)")
        err = self._bomb(info, info.file_size, self.total + info.file_size, exact=True)
        if err is not None:
            raise err
        try:
            return _MemberReader(self, info, self.zip.open(info))
        except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError, EOFError) as exc:
            raise ParseError(f"corrupt {self.kind}: {short(exc)}") from None

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()


class _MemberReader(io.RawIOBase):
    """A zip member stream that counts what it gives out against the limits."""

    def __init__(self, owner: Unpacker, info: zipfile.ZipInfo, raw) -> None:
        super().__init__()
        self.owner, self.info, self.raw, self.got = owner, info, raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        try:
            data = self.raw.read(len(buf))
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:  # bad CRC, truncated stream
            raise ParseError(f"corrupt {self.owner.kind}: {short(exc)}") from None
        n = len(data)
        buf[:n] = data
        self.got += n
        self.owner.total += n
        err = self.owner._bomb(self.info, self.got, self.owner.total, exact=False)
        if err is not None:
            raise err
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


# ---------------------------------------------------------------- decoding

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# C0/C1 controls other than common whitespace, and the replacement character.
_JUNK = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ufffd]")


def bom_encoding(data: bytes) -> tuple[str, int] | None:
    """(encoding, BOM length) when ``data`` starts with a Unicode BOM."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return enc, len(bom)
    return None


def _bomless_utf16(data: bytes) -> str | None:
    """UTF-16 without a BOM shows as NULs in every other byte (for Latin text)."""
    sample = data[:8192]
    even, odd = sample[0::2], sample[1::2]
    if not even or not odd:
        return None
    if odd.count(0) > 0.4 * len(odd) and even.count(0) < 0.05 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.4 * len(even) and odd.count(0) < 0.05 * len(odd):
        return "utf-16-be"
    return None


def check_text(text: str) -> str:
    """``text`` itself, or ParseError when it is blank or mostly not text."""
    if not text.strip():
        raise ParseError(EMPTY)
    sample = text[:200_000]
    if len(_JUNK.findall(sample)) > 0.05 * len(sample):
        raise ParseError("binary content: mostly non-text characters")
    return text


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode bytes of a text format: (text, encoding name).

    A BOM wins; then NUL bytes mean UTF-16 without BOM or binary; then strict
    UTF-8; then charset-normalizer's best guess. Blank, binary or undecodable
    input raises ParseError.
    """
    if not data.strip():
        raise ParseError(EMPTY)
    found = bom_encoding(data)
    if found is None and b"\x00" in data:
        enc16 = _bomless_utf16(data)
        if enc16 is None:
            raise ParseError("binary content (NUL bytes): not a text file")
        found = (enc16, 0)
    if found is not None:
        enc, skip = found
        try:
            return check_text(data[skip:].decode(enc)), enc
        except UnicodeDecodeError as exc:
            raise ParseError(f"undecodable text: invalid {enc} at byte {exc.start + skip}") from None
    try:
        return check_text(data.decode("utf-8")), "utf-8"
    except UnicodeDecodeError:
        pass
    encoding = _guess(data)
    if encoding is None:
        raise ParseError("undecodable text: no known encoding fits (binary file?)")
    return check_text(data.decode(encoding, errors="replace")), encoding


# charset-normalizer often rates several code pages (nearly) alike, and not
# always the right one best (French "tr\xe8s" comes out as cp1257 "trčs").
# Among the code pages it accepts we pick the decoding that looks most like
# real text, then the Western code pages first, then its own order.
_PREFERRED = ("cp1252", "latin_1", "iso8859_15")
_WORD = re.compile(r"[^\W\d_]+")


def _script(ch: str) -> str:
    if ch < "\u0250" or "\u1e00" <= ch <= "\u1eff":
        return "LATIN"
    return unicodedata.name(ch, "?").split(" ")[0]


def _implausibility(text: str) -> int:
    """Count of signs of a wrong code page: symbols, symbols glued inside
    words ("ó³æ"), words mixing scripts ("trиs"), and words made only of
    accented Latin letters ("Ïðèâåò")."""
    bad = sum(1 for ch in text if unicodedata.category(ch) in ("So", "Sk", "Co", "Cn"))
    for i in range(1, len(text) - 1):
        ch = text[i]
        if ord(ch) > 127 and not ch.isalpha() and text[i - 1].isalpha() and text[i + 1].isalpha() \
                and unicodedata.category(ch) not in ("Pi", "Pf", "Pd", "Mn"):  # "It’s", "well‐known"
            bad += 1
    for word in _WORD.findall(text):
        if word.isascii():
            continue
        scripts = {_script(ch) for ch in word}
        if len(scripts) > 1 or (scripts == {"LATIN"} and len(word) > 2 and not any(c.isascii() for c in word)):
            bad += 1
    return bad


def _guess(data: bytes) -> str | None:
    """The encoding of non-UTF-8 text, or None if nothing fits."""
    import charset_normalizer  # imported late: only needed for non-UTF-8 input

    names = [m.encoding for m in charset_normalizer.from_bytes(data) if m.encoding]
    try:  # often missed: Windows "smart quotes" text
        data.decode("cp1252")
        names.append("cp1252")
    except UnicodeDecodeError:
        pass
    if not names:
        return None
    sample = data[:20_000]

    def rank(item: tuple[int, str]) -> tuple[int, int, int]:
        order, enc = item
        pref = _PREFERRED.index(enc) if enc in _PREFERRED else len(_PREFERRED)
        return _implausibility(sample.decode(enc, errors="ignore")), pref, order

    return min(enumerate(dict.fromkeys(names)), key=rank)[1]


# ---------------------------------------------------------------- metadata

_YEAR = re.compile(r"(?<!\d)(1[89]\d\d|20\d\d)(?!\d)")


def year_of(value: object) -> int | None:
    """The year in a datetime/date or in a date-like string (ISO, ``D:2021...``)."""
    if isinstance(value, (datetime, date)):
        return value.year if 1800 <= value.year <= 2100 else None
    if isinstance(value, str):
        m = _YEAR.search(value)
        return int(m.group(1)) if m else None
    return None


def source_path(source: str) -> PurePath:
    """The path part of a source that may be a URI or a filesystem path."""
    if "://" in source:
        return PurePath(urlparse(source).path or "/")
    return PurePath(source)


def stem_of(source: str) -> str:
    return source_path(source).stem or source


# ---------------------------------------------------------------- building


@dataclass
class Segment:
    """A piece of a document before assembly (text not yet cleaned)."""

    text: str
    page: int | None = None
    heading_path: tuple[str, ...] = ()
    kind: str = "text"


def assemble(
    segments: Iterable[Segment],
    clean: Callable[[str], str] = normalize_whitespace,
    sep: str = "\n\n",
) -> tuple[str, tuple[Section, ...]]:
    """Clean each segment, drop blank ones, and join them with ``sep``.

    Returns the text and Sections that tile it exactly: each Section spans its
    segment plus the separator after it, so every offset maps to one Section.
    """
    pieces = [(clean(s.text), s) for s in segments]
    pieces = [(t, s) for t, s in pieces if t.strip()]
    check_length(sum(len(t) + len(sep) for t, _ in pieces) - len(sep))
    parts: list[str] = []
    sections: list[Section] = []
    pos = 0
    for i, (text, seg) in enumerate(pieces):
        piece = text + (sep if i < len(pieces) - 1 else "")
        sections.append(Section(pos, pos + len(piece), seg.page, seg.heading_path, seg.kind))
        parts.append(piece)
        pos += len(piece)
    return "".join(parts), tuple(sections)


class OutlineBuilder:
    """Collects blocks under headings (DOCX, HTML) into Segments.

    A heading opens a new segment that starts with the heading's own text and
    whose heading_path ends with it; blocks after it join that segment; a
    table becomes a segment of its own (kind="table") under the same path.
    """

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self._blocks: list[str] = []
        self._stack: list[tuple[int, str]] = []

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(title for _, title in self._stack)

    def block(self, text: str) -> None:
        if text.strip():
            self._blocks.append(text.strip())

    def heading(self, level: int, text: str) -> None:
        title = " ".join(text.split())
        if not title:
            return
        self._close()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        self._blocks = [title]

    def table(self, rows: Iterable[str]) -> None:
        body = "\n".join(r for r in rows if r.strip())
        if body:
            self._close()
            self.segments.append(Segment(body, heading_path=self.path, kind="table"))

    def _close(self) -> None:
        if self._blocks:
            self.segments.append(Segment("\n\n".join(self._blocks), heading_path=self.path))
            self._blocks = []

    def finish(self) -> list[Segment]:
        self._close()
        return self.segments


def line_starts(text: str) -> list[int]:
    """Offset of the start of every line (index 0 is line 1)."""
    starts = [0]
    pos = text.find("\n")
    while pos != -1:
        starts.append(pos + 1)
        pos = text.find("\n", pos + 1)
    return starts
