"""The Store protocol: what every storage backend (embedded LanceDB, PostgreSQL) provides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from ragline.retrieve.filters import Field
from ragline.retrieve.fusion import Candidate
from ragline.types import Chunk, Hit


class StoreError(Exception):
    """The index cannot be opened or written; the message says why and what to do."""


@dataclass(frozen=True)
class DocRecord:
    """What the index remembers about one source document, for incremental sync."""

    doc_id: str
    source: str  # absolute path (or URI) of the original
    root: str  # the ingest source (directory or file) it was found under
    type: str
    file_hash: str  # hash of the original bytes
    size: int
    mtime: float
    fingerprint: str  # chunk plan + embedding model it was indexed with
    n_chunks: int
    title: str = ""
    year: int | None = None
    text: str = ""  # parsed text, kept so re-chunking needs no re-parsing
    sections: str = "[]"  # JSON of the parsed sections
    metadata: str = "{}"  # JSON of the parsed metadata
    # principals allowed to read it (docs/security.md); "*" is everyone with access to the index
    acl: tuple[str, ...] = ("*",)


# Fields a query filter may name (see docs/filters.md).
FILTER_FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("source", "source", "str"),
        Field("type", "type", "str"),
        Field("title", "title", "str"),
        Field("year", "year", "int", bits=32),  # int32 columns (store/lance.py)
        Field("page", "page", "int", bits=32),
        Field("heading", "heading", "str"),
        Field("language", "language", "str"),
        Field("doc_id", "doc_id", "str"),
    )
}


@dataclass
class StoreStats:
    documents: int
    chunks: int
    size_bytes: int
    backend: str
    ann_index: bool
    fts_index: bool
    extra: dict[str, Any] = field(default_factory=dict)


class Store(Protocol):
    def documents(self) -> dict[str, DocRecord]:
        """All document records keyed by doc_id (without their parsed text)."""

    def get_documents(self, doc_ids: Sequence[str]) -> list[DocRecord]:
        """Full records, parsed text included."""

    def write(self, docs: Sequence[DocRecord], chunks: Sequence[Chunk], vectors: np.ndarray,
              search_texts: Sequence[str]) -> None:
        """Replace the chunks of ``docs`` with ``chunks`` (one atomic commit), then record ``docs``."""

    def write_records(self, docs: Sequence[DocRecord]) -> None:
        """Insert or update document records only."""

    def remove_orphans(self) -> int:
        """Delete chunks whose document record is gone; returns how many documents' worth."""

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Remove documents and all their chunks."""

    def list_documents(self, where: str | None = None) -> list[DocRecord]:
        """Document records (without parsed text) matching ``where`` (a documents-table clause)."""

    def delete_purge(self, doc_ids: Sequence[str]) -> list[str]:
        """Delete documents, chunks and every older version or index entry holding them; returns
        the search texts of the removed chunks (for purging the embedding cache)."""

    def dense_candidates(self, vector: np.ndarray, k: int, where: str | None = None,
                         ef: int | None = None) -> list[Candidate]:
        """Nearest chunks by cosine similarity as light candidates, prefiltered by ``where``."""

    def sparse_candidates(self, query: str, k: int, where: str | None = None,
                          scope: str | None = None) -> list[Candidate]:
        """Best chunks by BM25 as light candidates, prefiltered by ``where``. With ``scope`` (the
        rows the caller may see, a clause ``where`` implies), BM25's statistics are counted over
        those rows only, so no score or rank depends on a row outside it (docs/adr/0006)."""

    def fetch(self, keys: Sequence[Any]) -> dict[Any, Chunk]:
        """Full chunks for candidate keys (keys missing from the store are left out)."""

    def dense(self, vector: np.ndarray, k: int, where: str | None = None, ef: int | None = None) -> list[Hit]:
        """Nearest chunks by cosine similarity, prefiltered by ``where``."""

    def sparse(self, query: str, k: int, where: str | None = None) -> list[Hit]:
        """Best chunks by BM25, prefiltered by ``where``."""

    def count(self, where: str | None = None) -> int:
        """Chunks matching ``where``."""

    def finish(self) -> None:
        """Bring secondary indexes up to date after writes (FTS, ANN) and compact."""

    def stats(self) -> StoreStats: ...
