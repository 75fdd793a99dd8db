"""The vocabulary of ragline: small, frozen, typed objects passed between stages.

Every stage takes and returns these; none reaches into another's internals.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping


def content_hash(text: str | bytes) -> str:
    """Stable hash of text or bytes (hex SHA-256, first 32 chars). A lone surrogate (a file name's
    undecodable byte, via ``os.fsdecode``) is hashed as its UTF-8-style bytes instead of raising;
    valid text hashes exactly as before."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:32]


@dataclass(frozen=True)
class Section:
    """A span of a parsed document's text with where it sits in the original.

    ``start``/``end`` are character offsets into ``Document.text``. ``page`` is
    1-based for paged formats (PDF), else None. ``heading_path`` is the chain of
    headings above this span (e.g. ("Install", "On Linux")); for source code it
    is the enclosing definitions (e.g. ("class Store", "def add")).
    """

    start: int
    end: int
    page: int | None = None
    heading_path: tuple[str, ...] = ()
    kind: str = "text"  # text | heading | table | code | record


@dataclass(frozen=True)
class Document:
    """A parsed source: its clean text, the sections that map text back to the
    original, and metadata (``title``, ``year``, ``language``, ...)."""

    source: str  # URI or path of the original
    type: str  # pdf | docx | html | markdown | text | code | csv | json
    text: str
    sections: tuple[Section, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return str(self.metadata.get("title") or "")


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough to embed without truncation."""

    id: str
    doc_id: str
    source: str
    text: str
    start: int  # character span in Document.text
    end: int
    ordinal: int  # position of the chunk within its document
    page: int | None = None
    heading_path: tuple[str, ...] = ()
    content_hash: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> str:
        """Human-readable place in the source: page and/or heading path."""
        parts = []
        if self.page is not None:
            parts.append(f"p. {self.page}")
        if self.heading_path:
            parts.append(" > ".join(self.heading_path))
        return ", ".join(parts)


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its fused score and the per-mode scores behind it."""

    chunk: Chunk
    score: float
    scores: Mapping[str, float] = field(default_factory=dict)  # {"dense": .., "sparse": ..}


@dataclass(frozen=True)
class Citation:
    """Source ``n`` of an answer: the chunk it points to and the passage used.

    ``start``/``end`` locate the snippet in the parsed document when known, and
    ``page``/``heading_path`` are those of the snippet itself (a chunk may span several).
    """

    n: int
    chunk: Chunk
    snippet: str
    start: int | None = None
    end: int | None = None
    page: int | None = None
    heading_path: tuple[str, ...] = ()

    @property
    def location(self) -> str:
        parts = []
        page = self.page if self.page is not None else self.chunk.page
        if page is not None:
            parts.append(f"p. {page}")
        path = self.heading_path or self.chunk.heading_path
        if path:
            parts.append(" > ".join(path))
        return ", ".join(parts)


@dataclass(frozen=True)
class Answer:
    text: str
    citations: tuple[Citation, ...]
    grounded: bool  # False when the sources do not contain an answer
    generator: str  # "extractive" or the LLM model name
    hits: tuple[Hit, ...] = ()
    # the LLM's token counts for this answer ({"calls", "prompt_tokens", "completion_tokens"}, a count
    # None where the endpoint sent none); None when no LLM wrote it
    usage: Mapping[str, int | None] | None = None
