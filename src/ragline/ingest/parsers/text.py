"""Plain text: encoding detected (BOM, UTF-8, then charset-normalizer)."""

from __future__ import annotations

from ragline.ingest.clean import dehyphenate, normalize_whitespace
from ragline.ingest.parsers.base import check_length, decode_text, stem_of
from ragline.types import Document, Section


def parse(data: bytes, source: str) -> Document:
    raw, encoding = decode_text(data)
    check_length(len(raw))
    text = normalize_whitespace(dehyphenate(raw), keep_indent=True)
    return Document(
        source=source,
        type="text",
        text=text,
        sections=(Section(0, len(text)),) if text else (),
        metadata={"title": stem_of(source), "encoding": encoding},
    )
