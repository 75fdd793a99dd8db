"""The embedded store: LanceDB tables on local disk (see docs/adr/0001-embedded-store.md).

Two tables: ``chunks`` (text, provenance, vector; native BM25 full-text index
with stemming; HNSW index once large) and ``documents`` (one record per source
for incremental sync). Every write is a Lance commit, atomic and versioned: a
killed process leaves the previous version readable.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import asdict, fields
from datetime import timedelta
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from ragline.filters import DOCUMENT_FIELDS, STORE_FIELDS, Node
from ragline.store import bm25
from ragline.store.base import Candidate, DocRecord, StoreError, StoreStats
from ragline.store.sql import render
from ragline.types import Chunk

CHUNK_COLUMNS = ["id", "doc_id", "source", "type", "title", "year", "page", "heading", "language",
                 "start", "end", "ordinal", "content_hash", "context", "text"]
EXACT_SEARCH_MAX = 20_000  # a filter matching fewer chunks than this is searched exactly


def _chunk_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("id", pa.string()), ("doc_id", pa.string()), ("source", pa.string()), ("type", pa.string()),
        ("title", pa.string()), ("year", pa.int32()), ("page", pa.int32()), ("heading", pa.string()),
        ("language", pa.string()), ("start", pa.int32()), ("end", pa.int32()), ("ordinal", pa.int32()),
        ("content_hash", pa.string()), ("context", pa.string()), ("text", pa.string()),
        ("search_text", pa.string()), ("acl", pa.list_(pa.string())), ("vector", pa.list_(pa.float32(), dim)),
    ])


_DOC_SCHEMA = pa.schema([
    ("doc_id", pa.string()), ("source", pa.string()), ("root", pa.string()), ("type", pa.string()),
    ("file_hash", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()), ("fingerprint", pa.string()),
    ("n_chunks", pa.int32()), ("title", pa.string()), ("year", pa.int32()), ("text", pa.string()),
    ("sections", pa.string()), ("metadata", pa.string()), ("acl", pa.list_(pa.string())),
])
_DOC_LIGHT = [f.name for f in fields(DocRecord) if f.name not in ("text", "sections", "metadata")]


def _writes(method):
    """Marks a method that commits: readers do not keep a snapshot taken while it runs."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._writing():
            return method(self, *args, **kwargs)
    return wrapper


def _record(row: dict) -> DocRecord:
    return DocRecord(**{**row, "acl": tuple(row.get("acl") or ("*",))})


def _where(node: Node | None, documents: bool = False) -> str | None:
    """A filter tree as Lance (DataFusion) SQL; None for no filter."""
    return None if node is None else render(node, DOCUMENT_FIELDS if documents else STORE_FIELDS, "lance")


def _sql_list(values: Sequence[str]) -> str:
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


def _row_to_chunk(row: dict) -> Chunk:
    meta = {k: row[k] for k in ("type", "title", "year", "language") if row.get(k) is not None}
    if row.get("context"):
        meta["context"] = row["context"]
    return Chunk(
        id=row["id"], doc_id=row["doc_id"], source=row["source"], text=row["text"], start=row["start"],
        end=row["end"], ordinal=row["ordinal"], page=row.get("page"),
        heading_path=tuple(row["heading"].split(" > ")) if row.get("heading") else (),
        content_hash=row["content_hash"], metadata=meta,
    )


class LanceStore:
    backend = "lancedb"

    def __init__(self, path: Path, dim: int | None, hnsw_m: int = 20, hnsw_ef_construction: int = 300,
                 ann_min_rows: int = 50_000) -> None:
        import lancedb

        self.path = Path(path)
        self.dim = dim
        self.hnsw_m, self.hnsw_ef_construction, self.ann_min_rows = hnsw_m, hnsw_ef_construction, ann_min_rows
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._db = lancedb.connect(str(self.path))
        except OSError as exc:
            raise StoreError(f"cannot open the index at {self.path}: {exc}") from None
        # Read caches. LanceDB tables opened here see other processes' commits only when
        # reopened, so the version changes only through this object's writes, which reset them.
        self._dataset: tuple | None = None  # (table version, lance dataset, write epoch)
        self._epoch = 0  # completed writes; a cached snapshot is good only within one epoch
        self._writers = 0  # writes in progress
        self._epoch_lock = threading.Lock()
        # recent snapshots by version: a candidate found in one is fetched from it even after a
        # newer version (that replaced its row) was committed
        self._snapshots: OrderedDict[int, object] = OrderedDict()
        self._matrix: tuple | None = None  # (table version, vectors, row ids, doc ids)
        self._ann: tuple | None = None  # (table version, has an ANN index)
        self._row_order: tuple | None = None  # (table version, sorted row ids, their scan positions)
        names = set(self._db.table_names())
        self._chunks = self._db.open_table("chunks") if "chunks" in names else None
        self._docs = self._db.open_table("documents") if "documents" in names else None
        if self._chunks is not None:
            have = self._chunks.schema.field("vector").type.list_size
            if dim is None:  # read-only use (status): take what is there
                self.dim = dim = have
            if have != dim:
                raise StoreError(
                    f"the index at {self.path} holds {have}-dimensional vectors but the embedding model "
                    f"makes {dim}; re-run `ragline ingest` to re-embed, or point RAGLINE_HOME elsewhere"
                )
        self._where_rows: OrderedDict = OrderedDict()  # (version, where) -> matching row ids, for exact search
        # BM25 under a scope (docs/adr/0006): texts analyzed by content hash, a term table per version
        self._analyses = bm25.Analyses()
        self._terms: tuple | None = None  # (table version, bm25.TermTable)
        for table in (self._chunks, self._docs):  # indexes from before document ACLs: readable by everyone
            if table is not None and "acl" not in table.schema.names:
                table.add_columns({"acl": "make_array('*')"})

    @classmethod
    def open(cls, path: Path, dim: int, hnsw_m: int = 20, hnsw_ef_construction: int = 300,
             ann_min_rows: int = 50_000, reset_on_dim_change: bool = False) -> "LanceStore":
        """The store at ``path``; with ``reset_on_dim_change``, an index built for vectors of
        another dimension drops its chunks (``drop_vectors``) instead of refusing to open."""
        try:
            return cls(path, dim, hnsw_m, hnsw_ef_construction, ann_min_rows)
        except StoreError:
            if not reset_on_dim_change:
                raise
            cls.drop_vectors(path)
            return cls(path, dim, hnsw_m, hnsw_ef_construction, ann_min_rows)

    @staticmethod
    def drop_vectors(path: Path) -> None:
        """Drop the chunks table after an embedding-model change of dimension. Document records
        stay: their fingerprint names the old model, so the next sync re-chunks and re-embeds
        them from their stored parsed text, re-parsing nothing."""
        import lancedb

        db = lancedb.connect(str(path))
        if "chunks" in set(db.table_names()):
            db.drop_table("chunks")

    # -- documents -------------------------------------------------------------------------
    def documents(self) -> dict[str, DocRecord]:
        if self._docs is None:
            return {}
        table = self._docs.to_lance().to_table(columns=_DOC_LIGHT)
        return {r["doc_id"]: _record(r) for r in table.to_pylist()}

    def list_documents(self, where: Node | None = None) -> list[DocRecord]:
        if self._docs is None:
            return []
        rows = self._docs.to_lance().to_table(columns=_DOC_LIGHT, filter=_where(where, documents=True)).to_pylist()
        return sorted((_record(r) for r in rows), key=lambda r: r.source)

    def get_documents(self, doc_ids: Sequence[str]) -> list[DocRecord]:
        if self._docs is None or not doc_ids:
            return []
        rows = self._docs.to_lance().to_table(filter=f"doc_id IN {_sql_list(doc_ids)}").to_pylist()
        return [_record(r) for r in rows]

    # -- writes ----------------------------------------------------------------------------
    @_writes
    def write(self, docs: Sequence[DocRecord], chunks: Sequence[Chunk], vectors: np.ndarray,
              search_texts: Sequence[str]) -> None:
        if not docs:
            return
        doc_ids = [d.doc_id for d in docs]
        by_id = {d.doc_id: d for d in docs}
        rows = []
        for chunk, text in zip(chunks, search_texts):
            d = by_id[chunk.doc_id]
            meta = json.loads(d.metadata)
            rows.append({
                "id": chunk.id, "doc_id": chunk.doc_id, "source": chunk.source, "type": d.type,
                "title": d.title, "year": d.year, "page": chunk.page, "heading": " > ".join(chunk.heading_path),
                "language": meta.get("language"), "start": chunk.start, "end": chunk.end,
                "ordinal": chunk.ordinal, "content_hash": chunk.content_hash,
                "context": chunk.metadata.get("context", ""), "text": chunk.text, "search_text": text,
                "acl": list(d.acl),
            })
        schema = _chunk_schema(self.dim)
        cols = {name: [r[name] for r in rows] for name in schema.names if name != "vector"}
        flat = pa.array(np.asarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
        cols["vector"] = pa.FixedSizeListArray.from_arrays(flat, self.dim) if rows else pa.array([], schema.field("vector").type)
        batch = pa.table({n: (cols[n] if n == "vector" else pa.array(cols[n], schema.field(n).type)) for n in schema.names},
                         schema=schema)
        # 1) chunks: insert new, update same-id, delete the old chunks of these docs: ONE commit
        if self._chunks is None:
            self._chunks = self._db.create_table("chunks", batch, schema=schema)
            # index at once: rows added later are searched unindexed until finish(), so BM25
            # answers even while (or after a kill during) the first ingest
            self._create_fts()
        else:
            (self._chunks.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
             .when_not_matched_by_source_delete(f"doc_id IN {_sql_list(doc_ids)}").execute(batch))
        # 2) document records (a crash between 1 and 2 only makes the next sync redo these docs)
        self.write_records(docs)

    def write_records(self, docs: Sequence[DocRecord]) -> None:
        """Insert or update document records only (e.g. a new mtime for identical bytes)."""
        doc_table = pa.Table.from_pylist([{**asdict(d), "acl": list(d.acl)} for d in docs], schema=_DOC_SCHEMA)
        if self._docs is None:
            self._docs = self._db.create_table("documents", doc_table, schema=_DOC_SCHEMA)
        else:
            self._docs.merge_insert("doc_id").when_matched_update_all().when_not_matched_insert_all().execute(doc_table)

    @_writes
    def delete(self, doc_ids: Sequence[str]) -> None:
        for i in range(0, len(doc_ids), 500):
            part = _sql_list(doc_ids[i : i + 500])
            if self._chunks is not None:
                self._chunks.delete(f"doc_id IN {part}")
            if self._docs is not None:
                self._docs.delete(f"doc_id IN {part}")

    def delete_purge(self, doc_ids: Sequence[str]) -> list[str]:
        """Delete documents so that nothing of them stays on disk: their rows, then every older
        table version (Lance keeps them for time travel) and the index entries that pointed at them.
        No reader may use this store meanwhile (the versions it reads are removed)."""
        texts: list[str] = []
        if self._chunks is not None and doc_ids:
            for i in range(0, len(doc_ids), 500):
                t = self._chunks.to_lance().to_table(columns=["search_text"],
                                                     filter=f"doc_id IN {_sql_list(doc_ids[i:i + 500])}")
                texts.extend(t.column("search_text").to_pylist())
        self.delete(doc_ids)
        self.compact(purge=True)
        return texts

    def remaining_texts(self, texts: Sequence[str]) -> set[str]:
        """Which of ``texts`` are still the search text of some chunk."""
        found: set[str] = set()
        if self._chunks is None:
            return found
        uniq = list(dict.fromkeys(texts))
        for i in range(0, len(uniq), 50):
            t = self._chunks.to_lance().to_table(columns=["search_text"],
                                                 filter=f"search_text IN {_sql_list(uniq[i:i + 50])}")
            found.update(t.column("search_text").to_pylist())
        return found

    @_writes
    def compact(self, purge: bool = False) -> None:
        """Merge small fragments and bring indexes up to date; with ``purge``, also drop every
        older version at once (deleted rows then exist in no file)."""
        older = timedelta(0) if purge else None
        if purge:
            with self._epoch_lock:
                self._snapshots.clear()  # their files are about to go
        with warnings.catch_warnings():  # "readers of older versions will fail": callers hold readers off
            warnings.simplefilter("ignore", UserWarning)
            for table in (self._chunks, self._docs):
                if table is not None:
                    table.optimize(cleanup_older_than=older, delete_unverified=purge)
            if purge and self._chunks is not None and self._chunks.count_rows() and any(
                    i.columns == ["search_text"] for i in self._chunks.list_indices()):
                self._create_fts()  # rebuilt from live rows only: no posting of a deleted chunk survives
                self._chunks.optimize(cleanup_older_than=older, delete_unverified=True)

    @_writes
    def remove_orphans(self) -> int:
        """Delete chunks whose document record is gone (left by a kill during delete)."""
        if self._chunks is None:
            return 0
        known = set(self.documents())
        ids = set(self._chunks.to_lance().to_table(columns=["doc_id"]).column("doc_id").to_pylist())
        orphans = sorted(ids - known)
        if orphans:
            for i in range(0, len(orphans), 500):
                self._chunks.delete(f"doc_id IN {_sql_list(orphans[i:i + 500])}")
        return len(orphans)

    def _create_fts(self) -> None:
        assert self._chunks is not None
        self._chunks.create_fts_index("search_text", use_tantivy=False, base_tokenizer="simple",
                                      language="English", stem=True, remove_stop_words=True,
                                      lower_case=True, ascii_folding=True, with_position=False, replace=True)

    @_writes
    def finish(self) -> None:
        if self._chunks is None:
            return
        names = {idx.name: idx for idx in self._chunks.list_indices()}
        if not any(i.columns == ["search_text"] for i in names.values()):
            self._create_fts()
        has_ann = any(i.columns == ["vector"] for i in names.values())
        if not has_ann and self._chunks.count_rows() >= self.ann_min_rows:
            self._chunks.create_index(metric="cosine", index_type="IVF_HNSW_SQ", m=self.hnsw_m,
                                      ef_construction=self.hnsw_ef_construction, vector_column_name="vector")
        self._chunks.optimize()
        if self._docs is not None:
            self._docs.optimize()

    # -- reads -----------------------------------------------------------------------------
    def count(self, where: Node | None = None) -> int:
        return self._count(_where(where))

    def _count(self, where: str | None = None) -> int:
        if self._chunks is None:
            return 0
        return int(self._chunks.count_rows(where) if where else self._chunks.count_rows())

    def iter_chunks(self) -> Iterator[Chunk]:
        if self._chunks is None:
            return
        for batch in self._ds()[1].to_batches(columns=CHUNK_COLUMNS, batch_size=2048):
            yield from map(_row_to_chunk, batch.to_pylist())

    def has_ann_index(self) -> bool:
        if self._chunks is None:
            return False
        version = self._ds()[0]
        if self._ann is None or self._ann[0] != version:
            self._ann = (version, any(i.columns == ["vector"] for i in self._chunks.list_indices()))
        return self._ann[1]

    # Two phases: light candidates (row id, doc id, score) for fusion, then `fetch` of the
    # final rows only, with their text.
    def dense_candidates(self, vector: np.ndarray, k: int, where: Node | None = None,
                         ef: int | None = None) -> list[Candidate]:
        if self._chunks is None or k <= 0:
            return []
        return self._dense(vector, k, _where(where), ef)

    def _dense(self, vector: np.ndarray, k: int, where: str | None, ef: int | None) -> list[Candidate]:
        vector = np.asarray(vector, dtype=np.float32)
        ann = self.has_ann_index()
        if not ann:
            snapshot = self._ds()  # mask and vectors from one table version
            return self._dense_in_memory(vector, k, snapshot, self._rows_matching(where, snapshot) if where else None)

        def run(exact: bool) -> list[dict]:
            q = self._chunks.search(vector, vector_column_name="vector").distance_type("cosine") \
                .select(["doc_id", "_distance"]).with_row_id(True).limit(k)
            if where:
                q = q.where(where, prefilter=True)
            if exact:
                q = q.bypass_vector_index()
            elif ef:
                q = q.ef(ef)
            return q.to_arrow().to_pylist()

        exact = not ann or (where is not None and self._count(where) <= EXACT_SEARCH_MAX)
        rows = run(exact)
        if not exact and len(rows) < k and (not where or self._count(where) > len(rows)):
            rows = run(True)  # the ANN graph missed matches of a selective filter: search exactly
        return [Candidate(r["_rowid"], r["doc_id"], 1.0 - float(r["_distance"])) for r in rows]

    @contextmanager
    def _writing(self):
        with self._epoch_lock:
            self._writers += 1
            self._dataset = None
        try:
            yield
        finally:
            with self._epoch_lock:
                self._writers -= 1
                self._epoch += 1
                self._dataset = None

    def refresh(self) -> None:
        """Drop the cached snapshot: the next read sees the latest committed version."""
        self._dataset = None

    def _ds(self) -> tuple[int, object]:
        """The current version and its Lance dataset. Cached between writes; a snapshot taken
        while a write runs is used once and not kept (a query racing a compaction otherwise kept
        reading pre-compaction row ids until the next write: documents went missing from results)."""
        assert self._chunks is not None
        cached = self._dataset
        if cached is not None and cached[2] == self._epoch:
            return cached[0], cached[1]
        epoch, writers = self._epoch, self._writers
        # the version is read off the dataset itself: read separately, a commit landing between the
        # two reads labelled one version's rows with the previous version's number, and caches keyed
        # by version (the vector matrix, filter row ids) then mixed the two (a racing reader found
        # no visible row at all)
        ds = self._chunks.to_lance()
        snapshot = (ds.version, ds)
        with self._epoch_lock:
            if writers == 0 and self._writers == 0 and epoch == self._epoch:
                self._dataset = (*snapshot, epoch)
            self._snapshots[snapshot[0]] = snapshot[1]
            self._snapshots.move_to_end(snapshot[0])
            while len(self._snapshots) > 4:
                self._snapshots.popitem(last=False)
        return snapshot

    def _vectors(self, snapshot: tuple[int, object]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All vectors of a table version with their row ids and doc ids. Exact search below the
        ANN threshold: one matrix product beats a scan through Lance by ~10x here."""
        version, ds = snapshot
        cached = self._matrix  # one read: another thread may replace it meanwhile
        if cached is None or cached[0] != version:
            t = ds.to_table(columns=["vector", "doc_id"], with_row_id=True)
            flat = t.column("vector").combine_chunks().flatten()
            matrix = np.asarray(flat, dtype=np.float32).reshape(-1, self.dim)
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.where(norms == 0, 1.0, norms)  # cosine, whatever the writer stored
            cached = self._matrix = (version, matrix, t.column("_rowid").to_numpy(), t.column("doc_id").to_pylist())
        return cached[1], cached[2], cached[3]

    def _offsets(self, keys: Sequence[int], version: int) -> list[int] | None:
        """Scan positions in table ``version`` of row ids (for `take`, the fastest fetch), or None
        if that version's vectors are not loaded. Positions are only meaningful within one
        version: the caller must `take` from the same snapshot."""
        matrix = self._matrix  # one read: another thread may replace it meanwhile
        if matrix is None or self._chunks is None or matrix[0] != version:
            return None
        row_order = self._row_order
        if row_order is None or row_order[0] != version:
            order = np.argsort(matrix[2], kind="stable")
            row_order = self._row_order = (version, matrix[2][order], order)
        _, sorted_ids, order = row_order
        wanted = np.asarray(keys, dtype=sorted_ids.dtype)
        pos = np.searchsorted(sorted_ids, wanted)
        pos[pos >= len(sorted_ids)] = 0
        if not np.array_equal(sorted_ids[pos], wanted):
            return None
        return order[pos].tolist()

    def _rows_matching(self, where: str, snapshot: tuple[int, object]) -> np.ndarray:
        """Row ids of a table version matching a filter (a few recent filters cached per version)."""
        key = (snapshot[0], where)
        with self._epoch_lock:
            rows = self._where_rows.get(key)
            if rows is not None:
                self._where_rows.move_to_end(key)
                return rows
        t = snapshot[1].to_table(columns=[], filter=where, with_row_id=True)
        rows = np.sort(t.column("_rowid").to_numpy())
        with self._epoch_lock:
            self._where_rows[key] = rows
            while len(self._where_rows) > 64:
                self._where_rows.popitem(last=False)
        return rows

    def _dense_in_memory(self, vector: np.ndarray, k: int, snapshot: tuple[int, object],
                         allowed: np.ndarray | None = None) -> list[Candidate]:
        matrix, row_ids, doc_ids = self._vectors(snapshot)
        if not len(matrix):
            return []
        norm = float(np.linalg.norm(vector))
        # einsum, not BLAS: OpenBLAS threads spin after a product and starve the model's
        # threads on small CPUs (a query embedded next took 22 ms instead of 9)
        scores = np.einsum("ij,j->i", matrix, vector / norm if norm else vector)
        # a prefilter: rows not matching it are never candidates
        pool = np.arange(len(scores)) if allowed is None else np.flatnonzero(np.isin(row_ids, allowed, assume_unique=True))
        if not len(pool):
            return []
        k = min(k, len(pool))
        top = pool[np.argpartition(-scores[pool], k - 1)[:k]]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [Candidate(int(row_ids[i]), doc_ids[i], float(scores[i])) for i in top]

    def sparse_candidates(self, query: str, k: int, where: Node | None = None,
                          scope: Node | None = None) -> list[Candidate]:
        """Best chunks by BM25 among those matching ``where``. With ``scope`` (the rows the caller
        may see), document frequencies, row count and mean length are counted over those rows
        only; without it, the index's statistics over every row are used (docs/adr/0006)."""
        # BM25 over words: a quoted span would be a phrase query, which needs word positions the
        # index does not keep (and failed with an error); its words are searched as words
        query = query.replace('"', " ")
        if self._chunks is None or not query.strip() or k <= 0:
            return []
        if scope is not None:
            return self._sparse_scoped(query, k, _where(where), _where(scope))
        return self._sparse(query, k, _where(where))

    def _sparse(self, query: str, k: int, where: str | None) -> list[Candidate]:
        q = self._chunks.search(query, query_type="fts", fts_columns="search_text") \
            .select(["doc_id", "_score"]).with_row_id(True).limit(k)
        if where:
            q = q.where(where, prefilter=True)
        rows = q.to_arrow().to_pylist()
        return [Candidate(r["_rowid"], r["doc_id"], float(r["_score"])) for r in rows]

    # -- BM25 under a scope (docs/adr/0006-sparse-statistics-under-acls.md) ----------------------
    def _sparse_scoped(self, query: str, k: int, where: str | None, scope: str) -> list[Candidate]:
        """BM25 with every statistic (row count, mean length, document frequencies) counted over
        the rows of ``scope``, so rows outside it move neither a score nor the ranking. Scored
        from a term table of this version's rows built with the index's analyzer."""
        terms = bm25.query_terms(query)
        if not terms:
            return []
        snapshot = self._ds()  # one table version for every read below
        visible = self._rows_matching(scope, snapshot)
        if not len(visible):
            return []
        allowed = visible if where is None or where == scope else \
            np.intersect1d(self._rows_matching(where, snapshot), visible, assume_unique=True)
        table = self._term_table(snapshot)
        top = table.search(terms, visible, allowed, k)
        if not top:
            return []
        keys = [key for key, _ in top]
        at = table.positions[np.searchsorted(table.row_ids, keys)]
        rows = snapshot[1].take(at.tolist(), columns=["_rowid", "doc_id"]).to_pylist()
        doc_of = {r["_rowid"]: r["doc_id"] for r in rows}
        if set(doc_of) != set(keys):  # scan positions disagreed: read by row id
            doc_of = {r["_rowid"]: r["doc_id"] for r in snapshot[1].to_table(
                columns=["doc_id"], with_row_id=True, filter=f"_rowid IN ({', '.join(map(str, keys))})").to_pylist()}
        return [Candidate(key, doc_of[key], score) for key, score in top if key in doc_of]

    def _term_table(self, snapshot: tuple[int, object]) -> bm25.TermTable:
        """The term table of a table version (cached until the next version). Texts already
        analyzed for an earlier version (same content hash) are not read again."""
        version, ds = snapshot
        cached = self._terms  # one read: another thread may replace it meanwhile
        if cached is not None and cached[0] == version:
            return cached[1]
        t = ds.to_table(columns=["content_hash"], with_row_id=True)
        hashes = t.column("content_hash").to_pylist()

        def texts(positions: list[int]):
            found = set()
            for i in range(0, len(positions), 2000):
                for r in ds.take(positions[i:i + 2000], columns=["content_hash", "search_text"]).to_pylist():
                    found.add(r["content_hash"])
                    yield r["content_hash"], r["search_text"]
            rest = sorted({hashes[i] for i in positions} - found)  # scan positions disagreed: by hash
            for i in range(0, len(rest), 500):
                for r in ds.to_table(columns=["content_hash", "search_text"],
                                     filter=f"content_hash IN {_sql_list(rest[i:i + 500])}").to_pylist():
                    yield r["content_hash"], r["search_text"]

        table = bm25.term_table(t.column("_rowid").to_numpy(), hashes, self._analyses, texts)
        self._terms = (version, table)
        return table

    def fetch(self, keys: Sequence[int]) -> dict[int, Chunk]:
        """Full chunks (text and provenance) for candidate row ids."""
        if self._chunks is None or not keys:
            return {}
        version, ds = self._ds()  # one snapshot for the whole fetch
        offsets = self._offsets(keys, version)
        if offsets is not None:
            rows = ds.take(offsets, columns=CHUNK_COLUMNS).to_pylist()
            return {k: _row_to_chunk(r) for k, r in zip(keys, rows)}
        found = self._by_row_id(ds, keys)
        if len(found) < len(keys):  # candidates from an older snapshot whose rows were replaced since
            with self._epoch_lock:
                older = [d for v, d in reversed(self._snapshots.items()) if v != version]
            for old in older:
                missing = [k for k in keys if k not in found]
                if not missing:
                    break
                found.update(self._by_row_id(old, missing))
        return found

    @staticmethod
    def _by_row_id(ds, keys: Sequence[int]) -> dict[int, Chunk]:
        t = ds.to_table(columns=CHUNK_COLUMNS, with_row_id=True,
                        filter=f"_rowid IN ({', '.join(str(int(k)) for k in keys)})")
        return {r["_rowid"]: _row_to_chunk(r) for r in t.to_pylist()}

    def stats(self) -> StoreStats:
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file()) if self.path.exists() else 0
        indices = self._chunks.list_indices() if self._chunks is not None else []
        return StoreStats(
            documents=self._docs.count_rows() if self._docs is not None else 0,
            chunks=self._count(), size_bytes=size, backend=self.backend,
            ann_index=any(i.columns == ["vector"] for i in indices),
            fts_index=any(i.columns == ["search_text"] for i in indices),
            extra={"path": os.fspath(self.path)},
        )
