"""The PostgreSQL + pgvector store on a real PostgreSQL (``pgserver``): the shipped Store contract
unchanged, then what only this backend has (migrations, bound parameters, the HNSW path, sharing
one index between store objects as two replicas do)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragline.store.base import StoreError
from ragline.testing.store_contract import StoreContract
from ragline.testing.store_helpers import DIM, basis, chunk, dense_hits, doc_ids, ids, record, sparse_hits, where, write

psycopg = pytest.importorskip("psycopg")
from ragline.store.postgres import SCHEMA_VERSION, PostgresStore, schema_name  # noqa: E402


class TestPostgresStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _dsn(self, pg_dsn):
        self.dsn = pg_dsn

    def make_store(self, tmp_path: Path, dim: int, **options):
        return PostgresStore(self.dsn, str(tmp_path), dim, ann_min_rows=options.get("ann_min_rows", 50_000))

    def drop_record_only(self, store, doc_id: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DELETE FROM "{store.schema}".documents WHERE doc_id = %s', (doc_id,))

    def test_schema_names_are_plain_identifiers_and_distinct(self):
        names = {schema_name(n) for n in ("acme/docs", "acme/Docs", "a'; DROP TABLE x; --", "é" * 200)}
        assert len(names) == 4
        assert all(n.isascii() and n.replace("_", "").isalnum() and len(n) <= 63 for n in names)

    def test_filter_values_travel_as_parameters(self, three_docs):
        """A value full of SQL is compared as a value: it matches nothing and breaks nothing."""
        store, _, _ = three_docs
        evil = "x') OR TRUE; DROP TABLE chunks; --"
        flt = where(f'title = "{evil}" or title contains "{evil}" or doc_id in ["{evil}", "a"]')
        assert doc_ids(dense_hits(store, basis(0), 10, flt)) == {"a"}
        assert doc_ids(sparse_hits(store, "apples bicycles", 10, flt)) == {"a"}
        assert store.count(flt) == 3 and store.count() == 6

    def test_migrates_from_the_previous_version(self, tmp_path):
        """An index at schema version 1 (no BM25 postings) is brought to the current version on
        open, its existing chunks made searchable by BM25."""
        old = PostgresStore(self.dsn, str(tmp_path), DIM, migrate_to=1)
        assert old.schema_version() == 1
        with psycopg.connect(self.dsn, autocommit=True) as conn:  # what a version-1 ragline wrote
            conn.execute(f'INSERT INTO "{old.schema}".chunks (id, doc_id, source, start, "end", ordinal, text, '
                         "search_text, embedding) VALUES ('a#0', 'a', '/a', 0, 5, 0, 'Walruses bask', "
                         "'Walruses bask on ice', %s::vector)", ("[" + ",".join(["0.5"] * DIM) + "]",))
        new = PostgresStore(self.dsn, str(tmp_path), DIM)
        assert new.schema_version() == SCHEMA_VERSION
        assert ids(sparse_hits(new, "walrus ice", 5)) == ["a#0"]
        assert new.count() == 1
        self._assert_counters(new)

    def _assert_counters(self, store) -> None:
        """BM25's collection statistics kept in ``meta`` agree with the chunks table."""
        with psycopg.connect(self.dsn) as conn:
            meta = dict(conn.execute(f'SELECT key, value FROM "{store.schema}".meta'))
            n, total = conn.execute(f'SELECT count(*), coalesce(sum(length), 0) FROM "{store.schema}".chunks').fetchone()
        assert (int(meta["chunks"]), int(meta["total_length"])) == (n, total)

    def test_collection_statistics_follow_every_write(self, three_docs):
        store, _, _ = three_docs
        self._assert_counters(store)
        write(store, [record("a")], [chunk("a", 0, "apples again and again and again")])  # replace a
        self._assert_counters(store)
        store.delete(["b"])
        self._assert_counters(store)
        self.drop_record_only(store, "c")
        store.remove_orphans()
        self._assert_counters(store)
        store.delete_purge(["a"])
        self._assert_counters(store)
        assert store.count() == 0

    def test_a_newer_schema_is_refused(self, tmp_path):
        store = PostgresStore(self.dsn, str(tmp_path), DIM)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"UPDATE \"{store.schema}\".meta SET value = '99' WHERE key = 'schema_version'")
        with pytest.raises(StoreError, match="schema version 99.*upgrade ragline"):
            PostgresStore(self.dsn, str(tmp_path), DIM)

    def test_an_unknown_namespace_opened_read_only_says_to_ingest(self, tmp_path):
        assert not PostgresStore.exists(self.dsn, str(tmp_path))
        with pytest.raises(StoreError, match="ragline ingest"):
            PostgresStore(self.dsn, str(tmp_path), None)

    def test_a_dimension_change_can_reset_the_vectors_and_keep_the_records(self, open_store, three_docs, tmp_path):
        store = PostgresStore(self.dsn, str(tmp_path), 16, reset_on_dim_change=True)
        assert store.dim == 16 and store.count() == 0
        assert set(store.documents()) == {"a", "b", "c"}

    def test_an_unreachable_server_is_a_store_error_naming_it_without_the_password(self):
        dsn = "postgresql://ragline:hunter2@127.0.0.1:1/nowhere"
        with pytest.raises(StoreError, match=r"cannot connect to PostgreSQL at .*\*\*\*") as exc:
            PostgresStore(dsn, "x", DIM, connect_timeout_s=1)
        assert "hunter2" not in str(exc.value)

    def test_two_store_objects_share_one_index_like_two_replicas(self, open_store, three_docs):
        store, _, _ = three_docs
        other = open_store()
        version = other.write_version()
        write(other, [record("late")], [chunk("late", 0, "walruses bask on the ice")])
        assert store.write_version() > version
        assert doc_ids(sparse_hits(store, "walrus", 5)) == {"late"}  # no refresh needed
        store.delete(["late"])
        assert other.count() == 6

    def test_unfiltered_search_uses_the_hnsw_index_and_filtered_small_sets_are_exact(self, open_store):
        store = open_store(ann_min_rows=100)
        rng = np.random.default_rng(1)
        docs = [record(f"d{i}", year=2000 + i % 3) for i in range(200)]
        chunks = [chunk(d.doc_id, j, f"text {d.doc_id} {j}") for d in docs for j in range(5)]
        vectors = rng.normal(size=(len(chunks), DIM)).astype(np.float32)
        write(store, docs, chunks, vectors)
        store.finish()
        assert store.has_ann_index() and store.stats().ann_index
        q = vectors[7]
        exact = np.argsort(-(vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ (q / np.linalg.norm(q)))
        assert ids(dense_hits(store, q, 1)) == [chunks[exact[0]].id]
        flt = where("year = 2001 and doc_id in [\"d1\", \"d4\", \"d7\"]")
        hits = dense_hits(store, q, 10, flt)
        want = [chunks[i].id for i in exact if chunks[i].doc_id in ("d1", "d4", "d7")][:10]
        assert ids(hits) == want
        # the plans: the index serves the unfiltered query; a small filtered set is scanned exactly
        assert "chunks_embedding_hnsw" in store.explain_dense(q, 10)
        assert "chunks_embedding_hnsw" not in store.explain_dense(q, 10, flt)

    def test_values_full_of_sql_in_records_and_chunks_round_trip(self, open_store):
        """Names, titles, principals and texts that look like SQL are stored and matched as data."""
        store = open_store()
        evil = "o'brien\"); DROP TABLE documents; --"
        doc = record(evil, title=evil, text=evil)
        doc = type(doc)(**{**doc.__dict__, "acl": ("user:obrien",)})  # principals are validated upstream
        write(store, [doc], [chunk(evil, 0, f"{evil} walrus")], search_texts=[f"{evil} walrus"])
        assert store.get_documents([evil])[0] == doc
        assert ids(sparse_hits(store, "walrus", 5, where(f'title = "{evil.replace(chr(34), chr(92) + chr(34))}"'))) \
            == [f"{evil}#0"]
        from ragline.acl import visible_to

        assert store.count(visible_to(["user:obrien"])) == 1 and store.count(visible_to(["user:other"])) == 0
        assert store.delete_purge([evil]) == [f"{evil} walrus"] and store.count() == 0

    def test_delete_purge_leaves_nothing_in_the_database_files(self, open_store, pg_dsn):
        """After a purge and a checkpoint, no table or index file of the database holds the text
        (the write-ahead log keeps it until recycled: docs/scale.md)."""
        store = open_store()
        docs = [record("keep"), record("gone")]
        chunks = [chunk("keep", 0, "ordinary words"), chunk("gone", 0, "qxzvinkleberry secret")]
        write(store, docs, chunks)
        store.finish()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            data = Path(conn.execute("SHOW data_directory").fetchone()[0])
        marker = b"qxzvinkleberry"
        files = [p for p in (data / "base").rglob("*") if p.is_file()]
        assert any(marker in p.read_bytes() for p in files)  # it was on disk before
        store.delete_purge(["gone"])
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        leaked = [p for p in (data / "base").rglob("*") if p.is_file() and marker in p.read_bytes()]
        assert leaked == []
        assert doc_ids(sparse_hits(store, "ordinary", 5)) == {"keep"}
