"""Data and searches for the Store contract (``store_contract``): documents and chunks built
in a few words, and hits read through the protocol only (candidates, then ``fetch``). A
backend's own tests may use them too."""

from __future__ import annotations

import json

import numpy as np

from ragline.filters import STORE_FIELDS, Node, compile_filter
from ragline.store.base import Candidate, DocRecord
from ragline.types import Chunk, Hit

DIM = 8
PROVENANCE = ("id", "doc_id", "source", "text", "start", "end", "ordinal", "page", "heading_path", "content_hash")


# ---------------------------------------------------------------------- building data
def where(expr: str) -> Node:
    return compile_filter(expr, STORE_FIELDS)


def basis(i: int, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[i] = 1.0
    return v


def record(doc_id: str, *, type: str = "text", year: int | None = None, title: str = "", text: str = "",
           language: str | None = None, mtime: float = 1.0, n_chunks: int = 0) -> DocRecord:
    meta = {"title": title} | ({"language": language} if language else {})
    return DocRecord(doc_id=doc_id, source=f"/data/{doc_id}.txt", root="/data", type=type,
                     file_hash=f"hash-{doc_id}-{len(text)}", size=len(text), mtime=mtime, fingerprint="fp-1",
                     n_chunks=n_chunks, title=title, year=year, text=text or f"full text of {doc_id}",
                     sections=json.dumps([{"start": 0, "end": len(text)}]), metadata=json.dumps(meta))


def chunk(doc_id: str, ordinal: int, text: str, *, cid: str | None = None, page: int | None = None,
          heading_path: tuple[str, ...] = (), context: str = "") -> Chunk:
    return Chunk(id=cid or f"{doc_id}#{ordinal}", doc_id=doc_id, source=f"/data/{doc_id}.txt", text=text,
                 start=ordinal * 100, end=ordinal * 100 + len(text), ordinal=ordinal, page=page,
                 heading_path=heading_path, content_hash=f"ch-{doc_id}-{ordinal}-{len(text)}",
                 metadata={"context": context} if context else {})


def random_vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def write(store, docs, chunks, vectors=None, search_texts=None) -> None:
    vectors = random_vectors(len(chunks)) if vectors is None else np.asarray(vectors, dtype=np.float32)
    texts = [c.text for c in chunks] if search_texts is None else list(search_texts)
    store.write(docs, chunks, vectors.reshape(len(chunks), DIM), texts)


# ---------------------------------------------------------------------- searching through the protocol
def _hits(store, found: list[Candidate], mode: str) -> list[Hit]:
    """Candidates fetched as hits. With no write in between, every key is found, as the chunk of
    the document its candidate named."""
    rows = store.fetch([c.key for c in found])
    assert set(rows) == {c.key for c in found}, "fetch left out keys of fresh candidates"
    assert all(rows[c.key].doc_id == c.doc_id for c in found), "a candidate named another document"
    return [Hit(rows[c.key], c.score, {mode: c.score}) for c in found]


def dense_hits(store, vector: np.ndarray, k: int, where: Node | None = None) -> list[Hit]:
    return _hits(store, store.dense_candidates(vector, k, where), "dense")


def sparse_hits(store, query: str, k: int, where: Node | None = None, scope: Node | None = None) -> list[Hit]:
    found = store.sparse_candidates(query, k, where) if scope is None else \
        store.sparse_candidates(query, k, where, scope=scope)
    return _hits(store, found, "sparse")


def ids(hits) -> list[str]:
    return [h.chunk.id for h in hits]


def doc_ids(hits) -> set[str]:
    return {h.chunk.doc_id for h in hits}


def scores(hits) -> dict[str, float]:
    return {h.chunk.id: h.score for h in hits}


def chunk_ids_of(store, doc_id: str, probe: np.ndarray | None = None) -> set[str]:
    """Every chunk id of a document, read through the public dense search."""
    n = store.count()
    if n == 0:
        return set()
    return set(ids(dense_hits(store, basis(0) if probe is None else probe, n, where(f'doc_id = "{doc_id}"'))))


def provenance(c: Chunk) -> tuple:
    return tuple(getattr(c, name) for name in PROVENANCE)
