"""The PostgreSQL + pgvector store: the ``Store`` protocol on a database several processes share.

Layout (docs/adr/0010): one schema per index (a CLI home, or a server's tenant/collection), named
from its namespace, holding ``documents``, ``chunks`` (with a ``vector(dim)`` column) and
``postings`` (term, chunk, term frequency) for BM25, plus ``meta`` (schema version, dimension,
write version). Schema changes are numbered migrations, applied under an advisory lock when a
store is opened, so replicas starting together migrate once.

* Dense: cosine distance (``<=>``). Below ``ann_min_rows`` chunks every search is exact; from
  there ``finish()`` builds an HNSW index (``m``, ``ef_construction``; ``ef_search`` per query).
  pgvector 0.6 has no iterative index scan, so a filtered query is searched exactly when the
  planner estimates the filter matches at most ``EXACT_SEARCH_MAX`` chunks, and through the index
  otherwise, falling back to an exact search when the index returns fewer than k.
* Sparse: BM25 computed in SQL from ``postings`` with the embedded store's analyzer, parameters
  and formula (``ragline.store.bm25``), so its ranking is the embedded store's; the statistics are
  counted over the caller's ``scope`` when one is given (docs/adr/0006).
* Filters and ACLs: the neutral filter tree rendered by ``ragline.store.sql.to_postgres`` with
  every value a bound parameter; the only names in the SQL are columns and the schema (made of
  ``[a-z0-9_]`` by ``schema_name``).
* Writes: a document's chunks, postings and record are replaced in one transaction.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import re
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, fields
from typing import Any, Callable, Iterator, Sequence

import logging

import numpy as np

from ragline.filters import DOCUMENT_FIELDS, STORE_FIELDS, Node
from ragline.store import bm25
from ragline.store.base import Candidate, DocRecord, StoreError, StoreStats, checked_write
from ragline.store.sql import to_postgres
from ragline.types import Chunk

log = logging.getLogger("ragline.store")

SCHEMA_VERSION = 3
EXACT_SEARCH_MAX = 20_000  # a filter estimated to match at most this many chunks is searched exactly
HNSW_EF_MAX = 1000  # pgvector's largest hnsw.ef_search

_CHUNK_COLS = ("id", "doc_id", "source", "type", "title", "year", "page", "heading", "language", "start",
               "end", "ordinal", "content_hash", "context", "text")
_SELECT_CHUNK = "key, " + ", ".join('"end"' if c == "end" else c for c in _CHUNK_COLS)
_DOC_COLS = tuple(f.name for f in fields(DocRecord))
_DOC_LIGHT = tuple(c for c in _DOC_COLS if c not in ("text", "sections", "metadata"))


def schema_name(namespace: str) -> str:
    """The schema of a namespace: readable, made of ``[a-z0-9_]`` only, unique by a hash."""
    readable = re.sub(r"[^a-z0-9]+", "_", namespace.lower()).strip("_")[-40:].strip("_")
    return f"rl_{readable}_{hashlib.sha1(namespace.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def _vec(v: np.ndarray) -> str:
    """pgvector's text form of a vector (float32 values written exactly)."""
    return "[" + ",".join(f"{x:.9g}" for x in np.asarray(v, dtype=np.float32).reshape(-1).tolist()) + "]"


# -- connection pools: one per connection string and process --------------------------------------
_POOLS: dict[tuple[str, int], Any] = {}
_POOLS_LOCK = threading.Lock()


def _mask(dsn: str) -> str:
    from ragline.config import mask_dsn

    return mask_dsn(dsn)


def _pool(dsn: str, size: int, timeout_s: float):
    try:
        from psycopg_pool import ConnectionPool
    except ImportError:
        raise StoreError("the PostgreSQL store needs psycopg: pip install 'ragline[postgres]'") from None
    import psycopg

    with _POOLS_LOCK:
        pool = _POOLS.get((dsn, size))
        if pool is None:
            try:  # one plain connection first: an unreachable server is one clear error, at once
                psycopg.connect(dsn, connect_timeout=max(int(timeout_s), 1)).close()
            except psycopg.Error as exc:
                raise StoreError(f"cannot connect to PostgreSQL at {_mask(dsn)}: {str(exc).strip()}; check "
                                 "store.dsn and that the server is running") from None
            pool = ConnectionPool(dsn, min_size=1, max_size=size, open=False, timeout=max(timeout_s, 1.0),
                                  kwargs={"autocommit": True, "connect_timeout": max(int(timeout_s), 1)})
            try:
                pool.open(wait=True, timeout=timeout_s)
            except Exception as exc:  # PoolTimeout carries the last connection error
                pool.close()
                raise StoreError(f"cannot connect to PostgreSQL at {_mask(dsn)}: {exc}; check store.dsn "
                                 "and that the server is running") from None
            _POOLS[(dsn, size)] = pool
        return pool


@atexit.register
def close_pools() -> None:
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()


# -- migrations ----------------------------------------------------------------------------------
def _v1(cur, s: str, dim: int) -> None:
    """Documents and chunks with their vectors."""
    cur.execute(f"""
        CREATE TABLE {s}.documents (
            doc_id text PRIMARY KEY, source text NOT NULL, root text NOT NULL, type text NOT NULL,
            file_hash text NOT NULL, size bigint NOT NULL, mtime double precision NOT NULL,
            fingerprint text NOT NULL, n_chunks integer NOT NULL, title text NOT NULL DEFAULT '',
            year integer, text text NOT NULL DEFAULT '', sections text NOT NULL DEFAULT '[]',
            metadata text NOT NULL DEFAULT '{{}}', acl text[] NOT NULL DEFAULT ARRAY['*'])""")
    cur.execute(f"""
        CREATE TABLE {s}.chunks (
            key bigserial PRIMARY KEY, id text NOT NULL UNIQUE, doc_id text NOT NULL, source text NOT NULL,
            type text, title text, year integer, page integer, heading text, language text,
            start integer NOT NULL, "end" integer NOT NULL, ordinal integer NOT NULL,
            content_hash text NOT NULL DEFAULT '', context text NOT NULL DEFAULT '', text text NOT NULL,
            search_text text NOT NULL, acl text[] NOT NULL DEFAULT ARRAY['*'], embedding vector({int(dim)}) NOT NULL)""")
    cur.execute(f"CREATE INDEX ON {s}.chunks (doc_id)")
    cur.execute(f"CREATE INDEX ON {s}.chunks USING hash (search_text)")
    cur.execute(f"CREATE INDEX ON {s}.chunks USING gin (acl)")
    cur.execute(f"CREATE INDEX ON {s}.documents USING gin (acl)")


def _v2(cur, s: str, dim: int) -> None:
    """BM25 in SQL: each chunk's analyzed length and a postings table, filled for existing chunks."""
    cur.execute(f"ALTER TABLE {s}.chunks ADD COLUMN length integer NOT NULL DEFAULT 0")
    cur.execute(f"""
        CREATE TABLE {s}.postings (
            term text NOT NULL, key bigint NOT NULL REFERENCES {s}.chunks (key) ON DELETE CASCADE,
            tf integer NOT NULL, PRIMARY KEY (term, key))""")
    cur.execute(f"CREATE INDEX ON {s}.postings (key)")
    rows = cur.execute(f"SELECT key, search_text FROM {s}.chunks").fetchall()
    for key, text in rows:
        terms = Counter(bm25.analyze(text or ""))
        cur.execute(f"UPDATE {s}.chunks SET length = %s WHERE key = %s", (sum(terms.values()), key))
        if terms:
            cur.executemany(f"INSERT INTO {s}.postings (term, key, tf) VALUES (%s, %s, %s)",
                            [(t, key, n) for t, n in terms.items()])


def _v3(cur, s: str, dim: int) -> None:
    """Unfiltered BM25 from the postings alone: each posting carries its chunk's length, and the
    chunk count and total length are kept in ``meta`` by every write (no scan per query)."""
    cur.execute(f"ALTER TABLE {s}.postings ADD COLUMN length integer NOT NULL DEFAULT 0")
    cur.execute(f"UPDATE {s}.postings p SET length = c.length FROM {s}.chunks c WHERE c.key = p.key")
    n, total = cur.execute(f"SELECT count(*), coalesce(sum(length), 0) FROM {s}.chunks").fetchone()
    cur.executemany(f"INSERT INTO {s}.meta VALUES (%s, %s)", [("chunks", str(n)), ("total_length", str(total))])


MIGRATIONS: list[tuple[int, Callable[[Any, str, int], None]]] = [(1, _v1), (2, _v2), (3, _v3)]


def _count_change(cur, s: str, chunks: int, length: int) -> None:
    """Keep ``meta``'s chunk count and total length in step with a write (in its transaction)."""
    if chunks or length:
        cur.execute(f"UPDATE {s}.meta SET value = (value::bigint + (CASE key WHEN 'chunks' THEN %s ELSE %s END))::text "
                    "WHERE key IN ('chunks', 'total_length')", (chunks, length))


class PostgresStore:
    backend = "postgres"

    def __init__(self, dsn: str, namespace: str, dim: int | None, hnsw_m: int = 20,
                 hnsw_ef_construction: int = 300, ann_min_rows: int = 50_000, ef_search: int = 100,
                 pool_size: int = 8, connect_timeout_s: float = 10.0, reset_on_dim_change: bool = False,
                 migrate_to: int = SCHEMA_VERSION) -> None:
        self.dsn, self.namespace = dsn, namespace
        self.schema = schema_name(namespace)
        self._s = f'"{self.schema}"'
        self.hnsw_m, self.hnsw_ef_construction, self.ann_min_rows = hnsw_m, hnsw_ef_construction, ann_min_rows
        self.ef_search = ef_search
        self._pool = _pool(dsn, pool_size, connect_timeout_s)
        self.dim = self._migrate(dim, reset_on_dim_change, migrate_to)

    @classmethod
    def open(cls, dsn: str, namespace: str, dim: int, hnsw_m: int = 20, hnsw_ef_construction: int = 300,
             ann_min_rows: int = 50_000, ef_search: int = 100, pool_size: int = 8,
             connect_timeout_s: float = 10.0, reset_on_dim_change: bool = False) -> "PostgresStore":
        return cls(dsn, namespace, dim, hnsw_m, hnsw_ef_construction, ann_min_rows, ef_search, pool_size,
                   connect_timeout_s, reset_on_dim_change)

    @staticmethod
    def exists(dsn: str, namespace: str, pool_size: int = 8, connect_timeout_s: float = 10.0) -> bool:
        """Whether anything has been indexed under ``namespace`` (its schema has a chunks table)."""
        with _pool(dsn, pool_size, connect_timeout_s).connection() as conn:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                               (f'"{schema_name(namespace)}".chunks',)).fetchone()
        return bool(row and row[0])

    @contextmanager
    def _conn(self):
        import psycopg

        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise StoreError(f"PostgreSQL at {_mask(self.dsn)}: {str(exc).strip()}") from None

    # -- schema --------------------------------------------------------------------------------
    def _migrate(self, dim: int | None, reset_on_dim_change: bool, target: int) -> int:
        import psycopg

        s = self._s
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            # one opener at a time per schema: replicas starting together migrate once
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (int(hashlib.sha1(self.schema.encode()).hexdigest()[:15], 16),))
            exists = cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{s}.meta",)).fetchone()[0]
            if not exists:
                if dim is None:
                    raise StoreError(f"nothing is indexed in PostgreSQL under '{self.namespace}' "
                                     f"(schema {self.schema}); run `ragline ingest` first")
                try:
                    with conn.transaction():
                        cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
                except psycopg.Error as exc:
                    raise StoreError(f"the pgvector extension is not available in this database ({exc}); "
                                     "install pgvector, or have an administrator run CREATE EXTENSION vector") from None
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
                cur.execute(f"CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL)")
                cur.executemany(f"INSERT INTO {s}.meta VALUES (%s, %s)",
                                [("schema_version", "0"), ("dim", str(dim)), ("namespace", self.namespace),
                                 ("write_version", "0")])
            meta = dict(cur.execute(f"SELECT key, value FROM {s}.meta").fetchall())
            version, have = int(meta["schema_version"]), int(meta["dim"])
            if version > SCHEMA_VERSION:
                raise StoreError(f"the index '{self.namespace}' in PostgreSQL has schema version {version}, "
                                 f"newer than this ragline's {SCHEMA_VERSION}; upgrade ragline")
            for number, step in MIGRATIONS:
                if version < number <= target:
                    step(cur, s, have)
                    cur.execute(f"UPDATE {s}.meta SET value = %s WHERE key = 'schema_version'", (str(number),))
                    version = number
            if dim is not None and dim != have:
                if not reset_on_dim_change:
                    raise StoreError(
                        f"the index '{self.namespace}' in PostgreSQL holds {have}-dimensional vectors but the "
                        f"embedding model makes {dim}; re-run `ragline ingest` to re-embed, or use another "
                        "store.namespace")
                # the documents stay: their fingerprint names the old model, so the next sync re-embeds them
                cur.execute(f"DROP INDEX IF EXISTS {s}.chunks_embedding_hnsw")
                cur.execute(f"TRUNCATE {s}.chunks CASCADE")
                cur.execute(f"UPDATE {s}.meta SET value = '0' WHERE key IN ('chunks', 'total_length')")
                cur.execute(f"ALTER TABLE {s}.chunks ALTER COLUMN embedding TYPE vector({int(dim)})")
                cur.execute(f"UPDATE {s}.meta SET value = %s WHERE key = 'dim'", (str(dim),))
                have = dim
        return have

    def schema_version(self) -> int:
        with self._conn() as conn:
            return int(conn.execute(f"SELECT value FROM {self._s}.meta WHERE key = 'schema_version'").fetchone()[0])

    def write_version(self) -> int:
        """How many writes this index has committed (any process): a cache keyed by it never
        serves an answer from before a write."""
        with self._conn() as conn:
            return int(conn.execute(f"SELECT value FROM {self._s}.meta WHERE key = 'write_version'").fetchone()[0])

    def drop(self) -> None:
        """Remove this index from the database (its schema and everything in it)."""
        with self._conn() as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self._s} CASCADE")

    # -- document records ------------------------------------------------------------------------
    @staticmethod
    def _record(row: Sequence[Any], cols: Sequence[str]) -> DocRecord:
        data = dict(zip(cols, row))
        data["acl"] = tuple(data.get("acl") or ("*",))
        return DocRecord(**data)

    def documents(self) -> dict[str, DocRecord]:
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {', '.join(_DOC_LIGHT)} FROM {self._s}.documents").fetchall()
        return {r[0]: self._record(r, _DOC_LIGHT) for r in rows}

    def get_documents(self, doc_ids: Sequence[str]) -> list[DocRecord]:
        if not doc_ids:
            return []
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {', '.join(_DOC_COLS)} FROM {self._s}.documents WHERE doc_id = ANY(%s)",
                                (list(doc_ids),)).fetchall()
        found = {r[0]: self._record(r, _DOC_COLS) for r in rows}
        return [found[i] for i in dict.fromkeys(doc_ids) if i in found]

    def list_documents(self, where: Node | None = None) -> list[DocRecord]:
        clause, params = self._where(where, DOCUMENT_FIELDS)
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {', '.join(_DOC_LIGHT)} FROM {self._s}.documents WHERE {clause} "
                                "ORDER BY source", params).fetchall()
        return [self._record(r, _DOC_LIGHT) for r in rows]

    @staticmethod
    def _where(node: Node | None, fields_=STORE_FIELDS) -> tuple[str, list]:
        """SQL with ``%s`` placeholders and its parameters. The column names are the chunk table's
        (or the document table's); joined with ``postings`` they stay unambiguous."""
        if node is None:
            return "TRUE", []
        return to_postgres(node, fields_)

    # -- writes ----------------------------------------------------------------------------------
    def write(self, docs: Sequence[DocRecord], chunks: Sequence[Chunk], vectors: np.ndarray,
              search_texts: Sequence[str]) -> None:
        if not docs:
            return
        vectors, by_id = checked_write(docs, chunks, vectors, search_texts, self.dim)
        # everything is computed before the transaction: a bad chunk leaves the store as it was
        rows, postings = [], []
        for i, (c, text, v) in enumerate(zip(chunks, search_texts, vectors)):
            d = by_id[c.doc_id]
            terms = Counter(bm25.analyze(text or ""))
            rows.append([c.id, c.doc_id, c.source, d.type, d.title, d.year, c.page, " > ".join(c.heading_path),
                         json.loads(d.metadata).get("language"), c.start, c.end, c.ordinal, c.content_hash,
                         c.metadata.get("context", "") or "", c.text, text, list(d.acl), sum(terms.values()), _vec(v)])
            postings.append(terms)
        s = self._s
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            gone = cur.execute(f"DELETE FROM {s}.chunks WHERE doc_id = ANY(%s) OR id = ANY(%s) RETURNING length",
                               (list(by_id), [c.id for c in chunks])).fetchall()
            _count_change(cur, s, len(rows) - len(gone),
                          sum(r[-2] for r in rows) - sum(g[0] for g in gone))
            keys = [r[0] for r in cur.execute(
                f"SELECT nextval(pg_get_serial_sequence('{s}.chunks', 'key')) FROM generate_series(1, %s)",
                (len(rows),)).fetchall()] if rows else []
            with cur.copy(f'COPY {s}.chunks (key, id, doc_id, source, type, title, year, page, heading, language, '
                          f'start, "end", ordinal, content_hash, context, text, search_text, acl, length, embedding) '
                          "FROM STDIN") as copy:
                for key, row in zip(keys, rows):
                    copy.write_row([key, *row])
            with cur.copy(f"COPY {s}.postings (term, key, tf, length) FROM STDIN") as copy:
                for key, row, terms in zip(keys, rows, postings):
                    for term, tf in terms.items():
                        copy.write_row((term, key, tf, row[-2]))
            self._upsert_records(cur, docs)

    def _upsert_records(self, cur, docs: Sequence[DocRecord]) -> None:
        s = self._s
        cols = ", ".join(_DOC_COLS)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _DOC_COLS if c != "doc_id")
        cur.executemany(f"INSERT INTO {s}.documents ({cols}) VALUES ({', '.join(['%s'] * len(_DOC_COLS))}) "
                        f"ON CONFLICT (doc_id) DO UPDATE SET {updates}",
                        [[*(getattr(d, c) for c in _DOC_COLS[:-1]), list(d.acl)] for d in docs])
        cur.execute(f"UPDATE {s}.meta SET value = (value::bigint + 1)::text WHERE key = 'write_version'")

    def write_records(self, docs: Sequence[DocRecord]) -> None:
        if not docs:
            return
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            self._upsert_records(cur, docs)

    def delete(self, doc_ids: Sequence[str]) -> None:
        self._delete(doc_ids)

    def _delete(self, doc_ids: Sequence[str]) -> list[str]:
        if not doc_ids:
            return []
        s, ids = self._s, list(doc_ids)
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            gone = cur.execute(f"DELETE FROM {s}.chunks WHERE doc_id = ANY(%s) RETURNING search_text, length",
                               (ids,)).fetchall()
            texts = [r[0] for r in gone]
            _count_change(cur, s, -len(gone), -sum(r[1] for r in gone))
            cur.execute(f"DELETE FROM {s}.documents WHERE doc_id = ANY(%s)", (ids,))
            cur.execute(f"UPDATE {s}.meta SET value = (value::bigint + 1)::text WHERE key = 'write_version'")
        return texts

    def delete_purge(self, doc_ids: Sequence[str]) -> list[str]:
        """Delete, then rewrite the tables and their indexes (VACUUM FULL) so the removed rows are
        in no table or index file. PostgreSQL's write-ahead log and any backup keep them until
        recycled (docs/scale.md)."""
        texts = self._delete(doc_ids)
        if texts or doc_ids:
            with self._conn() as conn:
                for table in ("postings", "chunks", "documents"):
                    conn.execute(f"VACUUM FULL {self._s}.{table}")
                    # the planner's statistics hold a sample of column values: take a new one ...
                    conn.execute(f"ANALYZE {self._s}.{table}")
                # ... and rewrite the catalog that kept the old sample; PostgreSQL only warns and
                # skips it for a role that does not own it, so ask first
                owner = conn.execute("SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c "
                                     "WHERE c.oid = 'pg_catalog.pg_statistic'::regclass").fetchone()[0]
                if owner:
                    conn.execute("VACUUM FULL pg_catalog.pg_statistic")
                else:
                    log.warning("delete_purge: this role may not vacuum pg_statistic; the planner's old "
                                "sample of the purged rows stays there until autovacuum (docs/scale.md)")
        return texts

    def remaining_texts(self, texts: Sequence[str]) -> set[str]:
        if not texts:
            return set()
        with self._conn() as conn:
            rows = conn.execute(f"SELECT DISTINCT search_text FROM {self._s}.chunks WHERE search_text = ANY(%s)",
                                (list(dict.fromkeys(texts)),)).fetchall()
        return {r[0] for r in rows}

    def remove_orphans(self) -> int:
        s = self._s
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            rows = cur.execute(f"DELETE FROM {s}.chunks c WHERE NOT EXISTS (SELECT 1 FROM {s}.documents d "
                               "WHERE d.doc_id = c.doc_id) RETURNING doc_id, length").fetchall()
            _count_change(cur, s, -len(rows), -sum(r[1] for r in rows))
        return len({r[0] for r in rows})

    def finish(self) -> None:
        """Refresh the planner's statistics; build the HNSW index once ``ann_min_rows`` chunks are
        stored (pgvector keeps it up to date on every later insert)."""
        s = self._s
        with self._conn() as conn:
            conn.execute(f"ANALYZE {s}.chunks")
            conn.execute(f"ANALYZE {s}.postings")
            if not self.has_ann_index() and self.count() >= self.ann_min_rows:
                with conn.transaction():
                    conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
                    conn.execute(f"CREATE INDEX IF NOT EXISTS chunks_embedding_hnsw ON {s}.chunks USING hnsw "
                                 f"(embedding vector_cosine_ops) WITH (m = {int(self.hnsw_m)}, "
                                 f"ef_construction = {int(self.hnsw_ef_construction)})")

    def refresh(self) -> None:
        """Every statement reads the latest committed state already."""

    def has_ann_index(self) -> bool:
        with self._conn() as conn:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{self._s}.chunks_embedding_hnsw",)).fetchone()
        return bool(row[0])

    # -- search ----------------------------------------------------------------------------------
    def dense_candidates(self, vector: np.ndarray, k: int, where: Node | None = None,
                         ef: int | None = None) -> list[Candidate]:
        if k <= 0:
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape != (self.dim,):
            raise StoreError(f"the query vector has {q.size} dimensions; this store holds {self.dim}")
        clause, params = self._where(where)
        text, s = _vec(q), self._s
        ef = min(max(ef or self.ef_search, k), HNSW_EF_MAX)

        def search(exact: bool) -> list[Candidate]:
            with self._conn() as conn, conn.transaction():
                conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef),))
                rows = conn.execute(self._dense_sql(clause, exact), [text, *params, text, k]).fetchall()
            return [Candidate(r[0], r[1], float(r[2])) for r in rows]

        if self._exact_first(k, clause, params, where is not None):
            return search(exact=True)
        found = search(exact=False)
        if len(found) < k and (where is not None or self.has_ann_index()):
            found = search(exact=True)  # the index's candidate list ran out before k matched
        return found

    def _dense_sql(self, clause: str, exact: bool) -> str:
        # the HNSW index serves only "ORDER BY embedding <=> q LIMIT k"; "+ 0" (and the key as a
        # tie-break) make an order it cannot serve, so the planner scans the matching rows exactly
        order = "(embedding <=> %s::vector) + 0, key" if exact else "embedding <=> %s::vector"
        return (f"SELECT key, doc_id, 1 - (embedding <=> %s::vector) FROM {self._s}.chunks "
                f"WHERE {clause} ORDER BY {order} LIMIT %s")

    def _exact_first(self, k: int, clause: str, params: list, filtered: bool) -> bool:
        return k > HNSW_EF_MAX or (filtered and self._estimate(clause, params) <= EXACT_SEARCH_MAX)

    def explain_dense(self, vector: np.ndarray, k: int, where: Node | None = None) -> str:
        """PostgreSQL's plan for the first search ``dense_candidates`` runs (for an operator, and
        for checking that the HNSW index serves unfiltered queries)."""
        clause, params = self._where(where)
        exact = self._exact_first(k, clause, params, where is not None)
        text = _vec(vector)
        with self._conn() as conn:
            rows = conn.execute("EXPLAIN " + self._dense_sql(clause, exact), [text, *params, text, k]).fetchall()
        return "\n".join(r[0] for r in rows)

    def _estimate(self, clause: str, params: list) -> int:
        """The planner's estimate of the chunks ``clause`` matches."""
        with self._conn() as conn:
            plan = conn.execute(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {self._s}.chunks WHERE {clause}",
                                params).fetchone()[0]
        return int(plan[0]["Plan"]["Plan Rows"])

    def sparse_candidates(self, query: str, k: int, where: Node | None = None,
                          scope: Node | None = None) -> list[Candidate]:
        terms = bm25.query_terms(query.replace('"', " ")) if query.strip() else Counter()
        if not terms or k <= 0:
            return []
        s, words = self._s, list(terms)
        scope_sql, scope_params = self._where(scope)
        where_sql, where_params = self._where(where)
        with self._conn() as conn:
            if scope is None:  # the collection's statistics, kept by every write
                meta = dict(conn.execute(f"SELECT key, value FROM {s}.meta WHERE key IN ('chunks', 'total_length')"))
                n = int(meta["chunks"])
                avgdl = int(meta["total_length"]) / n if n else 0.0
                df = dict(conn.execute(f"SELECT term, count(*) FROM {s}.postings WHERE term = ANY(%s) GROUP BY term",
                                       (words,)).fetchall())
            else:
                n, avgdl = conn.execute(f"SELECT count(*), coalesce(avg(length), 0) FROM {s}.chunks c "
                                        f"WHERE {scope_sql}", scope_params).fetchone()
                df = dict(conn.execute(f"SELECT p.term, count(*) FROM {s}.postings p JOIN {s}.chunks c ON c.key = p.key "
                                       f"WHERE p.term = ANY(%s) AND {scope_sql} GROUP BY p.term",
                                       [words, *scope_params]).fetchall())
            if not n:
                return []
            weights = {t: times * bm25.idf(df[t], n) for t, times in terms.items() if df.get(t)}
            if not weights:
                return []
            score = "sum(w.weight * (%s * p.tf) / (p.tf + %s * (%s + %s * p.length / %s)))"
            params = [bm25.K1 + 1.0, bm25.K1, 1.0 - bm25.B, bm25.B, max(float(avgdl), 1e-9), list(weights),
                      list(weights.values())]
            postings = f"unnest(%s::text[], %s::float8[]) AS w(term, weight) JOIN {s}.postings p ON p.term = w.term"
            if where is None and scope is None:  # the postings alone, then the top k's documents
                sql = (f"WITH top AS (SELECT p.key, {score} AS score FROM {postings} GROUP BY p.key "
                       f"ORDER BY score DESC, p.key LIMIT %s) SELECT top.key, c.doc_id, top.score FROM top "
                       f"JOIN {s}.chunks c ON c.key = top.key ORDER BY top.score DESC, top.key")
                rows = conn.execute(sql, [*params, k]).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT c.key, c.doc_id, {score} AS score FROM {postings} JOIN {s}.chunks c ON c.key = p.key "
                    f"WHERE ({where_sql}) AND ({scope_sql}) GROUP BY c.key, c.doc_id ORDER BY score DESC, c.key LIMIT %s",
                    [*params, *where_params, *scope_params, k]).fetchall()
        return [Candidate(r[0], r[1], float(r[2])) for r in rows if r[2] > 0]

    def fetch(self, keys: Sequence[Any]) -> dict[Any, Chunk]:
        if not keys:
            return {}
        with self._conn() as conn:
            rows = conn.execute(f"SELECT {_SELECT_CHUNK} FROM {self._s}.chunks WHERE key = ANY(%s::bigint[])",
                                ([int(k) for k in keys],)).fetchall()
        return {r[0]: _chunk(r[1:]) for r in rows}

    # -- reading everything ------------------------------------------------------------------------
    def iter_chunks(self) -> Iterator[Chunk]:
        """Every chunk, a page at a time by key (no connection is held between pages)."""
        last = -1
        while True:
            with self._conn() as conn:
                rows = conn.execute(f"SELECT {_SELECT_CHUNK} FROM {self._s}.chunks WHERE key > %s ORDER BY key LIMIT 2000",
                                    (last,)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            for r in rows:
                yield _chunk(r[1:])

    def count(self, where: Node | None = None) -> int:
        clause, params = self._where(where)
        with self._conn() as conn:
            return int(conn.execute(f"SELECT count(*) FROM {self._s}.chunks WHERE {clause}", params).fetchone()[0])

    def stats(self) -> StoreStats:
        s = self._s
        with self._conn() as conn:
            docs = conn.execute(f"SELECT count(*) FROM {s}.documents").fetchone()[0]
            chunks = conn.execute(f"SELECT count(*) FROM {s}.chunks").fetchone()[0]
            size = conn.execute("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                                (self.schema,)).fetchone()[0]
        return StoreStats(documents=int(docs), chunks=int(chunks), size_bytes=int(size), backend=self.backend,
                          ann_index=self.has_ann_index(), fts_index=True,
                          extra={"schema": self.schema, "namespace": self.namespace, "server": _mask(self.dsn),
                                 "schema_version": self.schema_version()})


def _chunk(row: Sequence[Any]) -> Chunk:
    r = dict(zip(_CHUNK_COLS, row))
    meta = {k: r[k] for k in ("type", "title", "year", "language") if r.get(k) is not None}
    if r.get("context"):
        meta["context"] = r["context"]
    return Chunk(id=r["id"], doc_id=r["doc_id"], source=r["source"], text=r["text"], start=r["start"], end=r["end"],
                 ordinal=r["ordinal"], page=r.get("page"),
                 heading_path=tuple(r["heading"].split(" > ")) if r.get("heading") else (),
                 content_hash=r["content_hash"], metadata=meta)
