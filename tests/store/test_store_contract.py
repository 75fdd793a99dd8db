"""The shipped Store contract (``ragline.testing.store_contract``) bound to each backend: the
embedded LanceDB store and the in-memory reference store. Tests only one backend can meet
(its files, its upgrade path) sit in its class beside the bindings."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragline.acl import visible_to
from ragline.store.base import StoreError
from ragline.store.lance import LanceStore
from ragline.store.memory import MemoryStore
from ragline.testing.store_contract import StoreContract
from ragline.testing.store_helpers import DIM, chunk, doc_ids, record, sparse_hits, write


class TestLanceStore(StoreContract):
    def make_store(self, tmp_path: Path, dim: int, **options):
        return LanceStore(tmp_path / "lance", dim, **options)

    def drop_record_only(self, store, doc_id: str) -> None:
        store._docs.delete(f"doc_id = '{doc_id}'")

    def test_dimension_error_says_what_to_do(self, open_store, three_docs):
        with pytest.raises(StoreError, match=r"8-dimensional.*makes 16.*ragline ingest"):
            open_store(16)

    def test_read_only_open_takes_the_stored_dimension(self, tmp_path, three_docs):
        store = LanceStore(tmp_path / "lance", None)
        assert store.dim == DIM and store.count() == 6

    def _assert_selective(self, store, q, flt, best):
        # the Lance-only check agrees with the neutral one, with an ANN index and without
        assert store.has_ann_index() == store.stats().ann_index
        super()._assert_selective(store, q, flt, best)

    def test_no_ann_index_below_threshold_by_the_lance_only_check(self, three_docs):
        store, _, _ = three_docs
        assert not store.has_ann_index()

    def test_an_index_from_before_acls_opens_readable_by_everyone(self, tmp_path, three_docs):
        import lancedb

        db = lancedb.connect(str(tmp_path / "lance"))
        for name in ("chunks", "documents"):
            db.open_table(name).drop_columns(["acl"])
        store = LanceStore(tmp_path / "lance", DIM)
        assert store.count(visible_to(["user:anyone"])) == 6
        assert {r.acl for r in store.documents().values()} == {("*",)}

    def test_a_read_during_a_compaction_does_not_keep_a_stale_snapshot(self, open_store):
        """A query that arrives while finish() compacts must not leave the store reading the
        pre-compaction snapshot (whose row ids the live full-text index no longer uses)."""
        store = open_store()
        real_optimize = None

        def reading_optimize(*args, **kwargs):
            store._ds()  # what a concurrent query does mid-write
            return real_optimize(*args, **kwargs)

        for batch in range(4):
            docs = [record(f"d{batch}{i}", text="x") for i in range(3)]
            chunks = [chunk(d.doc_id, 0, f"marker{d.doc_id} text") for d in docs]
            write(store, docs, chunks)
            real_optimize = store._chunks.optimize
            store._chunks.optimize = reading_optimize
            try:
                store.finish()
            finally:
                del store._chunks.optimize
        for batch in range(4):
            for i in range(3):
                assert doc_ids(sparse_hits(store, f"markerd{batch}{i}", 5)) == {f"d{batch}{i}"}, (batch, i)


class TestMemoryStore(StoreContract):
    supports_ann_index = False  # every dense search is exact

    @pytest.fixture(autouse=True)
    def _forget(self, tmp_path):
        yield
        MemoryStore.forget(str(tmp_path))

    def make_store(self, tmp_path: Path, dim: int, **options):
        return MemoryStore(dim, name=str(tmp_path))

    def drop_record_only(self, store, doc_id: str) -> None:
        with store._data.lock:
            del store._data.docs[doc_id]

    def test_unnamed_stores_share_nothing(self, three_docs):
        assert MemoryStore(DIM).count() == 0

    def test_opening_an_unknown_name_without_a_dimension_is_refused(self, tmp_path):
        with pytest.raises(StoreError, match="give the dimension"):
            MemoryStore(None, name=str(tmp_path / "nothing here"))

    def test_a_write_that_does_not_fit_is_refused_and_changes_nothing(self, three_docs):
        import numpy as np

        store, _, _ = three_docs
        with pytest.raises(StoreError, match="one 8-dimensional vector"):
            store.write([record("a")], [chunk("a", 0, "x")], np.zeros((1, 3), np.float32), ["x"])
        with pytest.raises(StoreError, match="documents not being written: z"):
            store.write([record("a")], [chunk("z", 0, "x")], np.zeros((1, DIM), np.float32), ["x"])
        assert store.count() == 6 and store.count(visible_to(["*"])) == 6
