"""The in-memory reference store: the whole ``Store`` protocol in plain Python and numpy.

It exists to prove the protocol is backend-neutral (it passes ``ragline.testing.store_contract``
unchanged) and to give tests a fast store. Everything is exact: dense search is a cosine over
every matching row, BM25 is computed per query with the full-text index's analyzer and formula
(``ragline.store.bm25``), and filters are evaluated with ``ragline.filters.matches``. Nothing is
persisted; a name stands in for a path: stores opened with the same name in one process share
their data, as two ``LanceStore`` objects on one directory do.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np

from ragline.filters import Node, matches
from ragline.store import bm25
from ragline.store.base import Candidate, DocRecord, StoreError, StoreStats, checked_write
from ragline.types import Chunk


@dataclass(frozen=True)
class _Row:
    """One stored chunk: the chunk as ``fetch`` returns it, the fields a filter names, its search
    text with its BM25 terms, and its unit vector."""

    key: int
    chunk: Chunk
    fields: dict
    search_text: str
    terms: Counter
    length: int
    vector: np.ndarray


@dataclass
class _Data:
    """What a store holds; shared by every MemoryStore opened with one name."""

    dim: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    docs: dict[str, DocRecord] = field(default_factory=dict)
    rows: dict[int, _Row] = field(default_factory=dict)  # key -> row, in write order
    by_id: dict[str, int] = field(default_factory=dict)  # chunk id -> key
    next_key: int = 0  # keys are never reused: a candidate whose row was replaced is not found


_NAMED: dict[str, _Data] = {}
_NAMED_LOCK = threading.Lock()


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm else v


def _doc_fields(d: DocRecord) -> dict:
    return {"doc_id": d.doc_id, "source": d.source, "type": d.type, "title": d.title, "year": d.year,
            "acl": list(d.acl)}


def _light(d: DocRecord) -> DocRecord:
    """A record without its parsed text, as ``documents()`` and ``list_documents()`` return it."""
    return replace(d, text="", sections="[]", metadata="{}")


class MemoryStore:
    backend = "memory"

    def __init__(self, dim: int | None, name: str | None = None) -> None:
        self.name = name
        with _NAMED_LOCK:
            data = _NAMED.get(name) if name is not None else None
            if data is None:
                if dim is None:
                    raise StoreError(f"the memory store {name or '(unnamed)'} does not exist yet; "
                                     "give the dimension of its vectors to create it")
                data = _Data(dim)
                if name is not None:
                    _NAMED[name] = data
        if dim is not None and dim != data.dim:
            raise StoreError(f"the memory store '{name}' holds {data.dim}-dimensional vectors but "
                             f"{dim} were asked for; open it with dimension {data.dim} or use another name")
        self._data = data
        self.dim = data.dim

    @staticmethod
    def forget(name: str) -> None:
        """Drop a named store's data (the next open of that name starts empty)."""
        with _NAMED_LOCK:
            _NAMED.pop(name, None)

    # -- document records --------------------------------------------------------------------
    def documents(self) -> dict[str, DocRecord]:
        with self._data.lock:
            return {i: _light(d) for i, d in self._data.docs.items()}

    def get_documents(self, doc_ids: Sequence[str]) -> list[DocRecord]:
        with self._data.lock:
            docs = self._data.docs
            return [docs[i] for i in dict.fromkeys(doc_ids) if i in docs]

    def list_documents(self, where: Node | None = None) -> list[DocRecord]:
        with self._data.lock:
            found = [_light(d) for d in self._data.docs.values() if where is None or matches(where, _doc_fields(d))]
        return sorted(found, key=lambda r: r.source)

    # -- writes ------------------------------------------------------------------------------
    def write(self, docs: Sequence[DocRecord], chunks: Sequence[Chunk], vectors: np.ndarray,
              search_texts: Sequence[str]) -> None:
        if not docs:
            return
        vectors, by_id = checked_write(docs, chunks, vectors, search_texts, self.dim)
        # every row is built before anything changes: a bad chunk leaves the store as it was
        built = [(c, self._fields(c, by_id[c.doc_id]), t, Counter(bm25.analyze(t or "")), _unit(v))
                 for c, t, v in zip(chunks, search_texts, vectors)]
        data, ids = self._data, {c.id for c in chunks}
        with data.lock:
            self._drop(lambda r: r.chunk.doc_id in by_id or r.chunk.id in ids)
            for c, fields, text, terms, vector in built:
                key = data.next_key
                data.next_key += 1
                data.rows[key] = _Row(key, self._stored(c, fields), fields, text, terms, sum(terms.values()), vector)
                data.by_id[c.id] = key
            data.docs.update(by_id)

    @staticmethod
    def _fields(c: Chunk, d: DocRecord) -> dict:
        return {**_doc_fields(d), "doc_id": c.doc_id, "source": c.source, "page": c.page,
                "heading": " > ".join(c.heading_path), "language": json.loads(d.metadata).get("language")}

    @staticmethod
    def _stored(c: Chunk, fields: dict) -> Chunk:
        """The chunk as the store hands it back: its metadata is the document's type, title, year
        and language (what a LanceStore row holds) plus the chunk's context."""
        meta = {k: fields[k] for k in ("type", "title", "year", "language") if fields[k] is not None}
        if c.metadata.get("context"):
            meta["context"] = c.metadata["context"]
        return replace(c, metadata=meta)

    def _drop(self, doomed) -> list[_Row]:
        """Remove the rows ``doomed`` selects (the caller holds the lock); returns them."""
        data = self._data
        gone = [r for r in data.rows.values() if doomed(r)]
        for r in gone:
            del data.rows[r.key]
            if data.by_id.get(r.chunk.id) == r.key:
                del data.by_id[r.chunk.id]
        return gone

    def write_records(self, docs: Sequence[DocRecord]) -> None:
        with self._data.lock:
            self._data.docs.update((d.doc_id, d) for d in docs)

    def delete(self, doc_ids: Sequence[str]) -> None:
        self.delete_purge(doc_ids)

    def delete_purge(self, doc_ids: Sequence[str]) -> list[str]:
        """Nothing older than the current state is kept, so a delete is already a purge."""
        doomed = set(doc_ids)
        with self._data.lock:
            gone = self._drop(lambda r: r.chunk.doc_id in doomed)
            for i in doomed:
                self._data.docs.pop(i, None)
        return [r.search_text for r in gone]

    def remaining_texts(self, texts: Sequence[str]) -> set[str]:
        wanted = set(texts)
        with self._data.lock:
            return {r.search_text for r in self._data.rows.values() if r.search_text in wanted}

    def remove_orphans(self) -> int:
        with self._data.lock:
            known = self._data.docs
            gone = self._drop(lambda r: r.chunk.doc_id not in known)
        return len({r.chunk.doc_id for r in gone})

    def finish(self) -> None:
        """Nothing to build: every search is exact and computed from the rows."""

    def refresh(self) -> None:
        """Every read sees the latest write already."""

    # -- search ------------------------------------------------------------------------------
    def _matching(self, *nodes: Node | None) -> list[_Row]:
        """Rows passing every given filter, in write order (the caller holds the lock)."""
        kept = [n for n in nodes if n is not None]
        return [r for r in self._data.rows.values() if all(matches(n, r.fields) for n in kept)]

    def dense_candidates(self, vector: np.ndarray, k: int, where: Node | None = None,
                         ef: int | None = None) -> list[Candidate]:
        if k <= 0:
            return []
        q = _unit(np.asarray(vector, dtype=np.float32).reshape(-1))
        if q.shape != (self.dim,):
            raise StoreError(f"the query vector has {q.size} dimensions; this store holds {self.dim}")
        with self._data.lock:
            rows = self._matching(where)
        if not rows:
            return []
        scores = np.stack([r.vector for r in rows]) @ q
        top = np.argsort(-scores, kind="stable")[:k]
        return [Candidate(rows[i].key, rows[i].chunk.doc_id, float(scores[i])) for i in top]

    def sparse_candidates(self, query: str, k: int, where: Node | None = None,
                          scope: Node | None = None) -> list[Candidate]:
        """BM25 with the row count, mean length and document frequencies counted over the rows of
        ``scope`` (every row without one); only rows of both ``where`` and ``scope`` are ranked."""
        terms = bm25.query_terms(query.replace('"', " ")) if query.strip() else Counter()
        if not terms or k <= 0:
            return []
        with self._data.lock:
            counted = self._matching(scope)
            ranked = counted if where is None else self._matching(where, scope)
        if not counted or not ranked:
            return []
        n = len(counted)
        avgdl = sum(r.length for r in counted) / n
        df = {t: sum(1 for r in counted if t in r.terms) for t in terms}
        scored = []
        for r in ranked:
            score = sum(times * bm25.idf(df[t], n) * bm25.saturation(float(r.terms[t]), r.length, avgdl)
                        for t, times in terms.items() if t in r.terms)
            if score > 0:
                scored.append(Candidate(r.key, r.chunk.doc_id, float(score)))
        scored.sort(key=lambda c: (-c.score, c.key))
        return scored[:k]

    def fetch(self, keys: Sequence[int]) -> dict[int, Chunk]:
        with self._data.lock:
            rows = self._data.rows
            return {k: rows[k].chunk for k in keys if k in rows}

    # -- reading everything ----------------------------------------------------------------------
    def iter_chunks(self) -> Iterator[Chunk]:
        with self._data.lock:
            chunks = [r.chunk for r in self._data.rows.values()]
        yield from chunks

    def count(self, where: Node | None = None) -> int:
        with self._data.lock:
            return len(self._data.rows) if where is None else len(self._matching(where))

    def stats(self) -> StoreStats:
        with self._data.lock:
            rows, docs = list(self._data.rows.values()), list(self._data.docs.values())
        # an estimate: vector bytes and characters of text
        size = sum(r.vector.nbytes + len(r.chunk.text) + len(r.search_text) for r in rows)
        size += sum(len(d.text) + len(d.sections) + len(d.metadata) for d in docs)
        # BM25 is computed from the rows on every query: full-text search needs no index to exist
        return StoreStats(documents=len(docs), chunks=len(rows), size_bytes=size, backend=self.backend,
                          ann_index=False, fts_index=True, extra={"name": self.name})
