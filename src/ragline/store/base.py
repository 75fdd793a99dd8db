"""The Store protocol: what every storage backend (embedded LanceDB, PostgreSQL, the in-memory
reference store) provides, and the only way the rest of ragline reaches stored data.

Queries name rows with the neutral filter tree of ``ragline.filters`` (user filters and the ACL
prefilter alike); each backend renders it in its own language. Every method a caller uses is
declared here, and ``ragline.testing.store_contract`` is the behaviour each must show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Iterator, Protocol, Sequence

import numpy as np

from ragline.filters import Node
from ragline.types import Chunk


class StoreError(Exception):
    """The index cannot be opened or written; the message says why and what to do."""


def checked_write(docs: Sequence["DocRecord"], chunks: Sequence[Chunk], vectors: np.ndarray,
                  search_texts: Sequence[str], dim: int | None) -> tuple[np.ndarray, dict[str, "DocRecord"]]:
    """What every backend's ``write`` checks before it changes anything: one ``dim``-dimensional
    vector and one search text per chunk, and no chunk of a document not being written. Returns
    the vectors as float32 and the records by doc_id."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (len(chunks), dim) or len(search_texts) != len(chunks):
        raise StoreError(f"write needs one {dim}-dimensional vector and one search text per chunk; "
                         f"got {len(chunks)} chunks, vectors of shape {vectors.shape} and "
                         f"{len(search_texts)} search texts")
    by_id = {d.doc_id: d for d in docs}
    stray = sorted({c.doc_id for c in chunks} - set(by_id))
    if stray:
        raise StoreError(f"chunks of documents not being written: {', '.join(stray[:5])}")
    return vectors, by_id


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


@dataclass(frozen=True)
class Candidate:
    """A light search result: the backend's handle for a chunk row, its document, and a score.
    Fusion works on these, so only the final top k rows are fetched with their text."""

    key: Hashable
    doc_id: str
    score: float


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
    dim: int | None  # the vectors' dimension (None: an empty store opened without one)

    # -- document records --------------------------------------------------------------------
    def documents(self) -> dict[str, DocRecord]:
        """All document records keyed by doc_id (without their parsed text)."""

    def get_documents(self, doc_ids: Sequence[str]) -> list[DocRecord]:
        """Full records, parsed text included; unknown ids are left out."""

    def list_documents(self, where: Node | None = None) -> list[DocRecord]:
        """Document records (without parsed text) matching ``where``, which names fields of
        ``ragline.filters.DOCUMENT_FIELDS`` (doc_id, source, type, title, year, acl)."""

    # -- writes ------------------------------------------------------------------------------
    def write(self, docs: Sequence[DocRecord], chunks: Sequence[Chunk], vectors: np.ndarray,
              search_texts: Sequence[str]) -> None:
        """Replace the chunks of ``docs`` with ``chunks`` (one atomic commit), then record ``docs``."""

    def write_records(self, docs: Sequence[DocRecord]) -> None:
        """Insert or update document records only."""

    def delete(self, doc_ids: Sequence[str]) -> None:
        """Remove documents and all their chunks."""

    def delete_purge(self, doc_ids: Sequence[str]) -> list[str]:
        """Delete documents, chunks and every older version or index entry holding them; returns
        the search texts of the removed chunks (for purging the embedding cache)."""

    def remaining_texts(self, texts: Sequence[str]) -> set[str]:
        """Those of ``texts`` that some chunk still has as its search text."""

    def remove_orphans(self) -> int:
        """Delete chunks whose document record is gone; returns how many documents' worth."""

    def finish(self) -> None:
        """Bring secondary indexes up to date after writes (full text, ANN) and compact."""

    # -- search ------------------------------------------------------------------------------
    def dense_candidates(self, vector: np.ndarray, k: int, where: Node | None = None,
                         ef: int | None = None) -> list[Candidate]:
        """Nearest chunks by cosine similarity, best first, prefiltered by ``where`` (a filter
        never shortens the list below k while k chunks match). ``ef`` is the ANN search depth."""

    def sparse_candidates(self, query: str, k: int, where: Node | None = None,
                          scope: Node | None = None) -> list[Candidate]:
        """Best chunks by BM25, best first, prefiltered by ``where``. With ``scope`` (the rows the
        caller may see, a tree ``where`` implies), BM25's statistics are counted over those rows
        only, so no score or rank depends on a row outside it (docs/adr/0006)."""

    def fetch(self, keys: Sequence[Any]) -> dict[Any, Chunk]:
        """Full chunks for candidate keys (keys no longer in the store are left out)."""

    def refresh(self) -> None:
        """Read the latest committed state (a search whose candidates went stale retries after it)."""

    # -- reading everything --------------------------------------------------------------------
    def iter_chunks(self) -> Iterator[Chunk]:
        """Every chunk, in no particular order."""

    def count(self, where: Node | None = None) -> int:
        """Chunks matching ``where``."""

    def stats(self) -> StoreStats: ...
