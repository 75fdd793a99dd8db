"""The Store contract: behaviour every storage backend must show, in no backend's language.

``StoreContract`` holds the tests. They reach the store through the ``Store`` protocol only
(``ragline.store.base``): filters are trees of ``ragline.filters`` (``compile_filter`` over
``STORE_FIELDS``), ACLs are ``ragline.acl.visible_to`` clauses, and a search is
``dense_candidates``/``sparse_candidates`` followed by ``fetch``. A backend binds the suite by
subclassing it in a test module (a name pytest collects, ``Test...``) and overriding two hooks:

* ``make_store(tmp_path, dim, **options)`` opens (or re-opens) *the same* store for a test each
  time it is called with the same ``tmp_path``. ``options`` may carry ``ann_min_rows``, the row
  count from which ``finish()`` builds an approximate-nearest-neighbour index; a backend without
  one ignores it.
* ``drop_record_only(store, doc_id)`` removes a document record while leaving its chunks behind,
  the state a kill in the middle of ``delete`` leaves. It may use the backend's internals: that is
  what the hook is for.

A backend that builds no ANN index sets ``supports_ann_index = False``; the tests of that index
are then skipped with that reason. Three tests carry the ``slow`` mark (thousands of rows,
threads); a project running pytest with ``--strict-markers`` registers it. A PostgreSQL backend gets the whole suite with::

    from ragline.testing.store_contract import StoreContract

    class TestPostgresStore(StoreContract):
        def make_store(self, tmp_path, dim, **options): ...
        def drop_record_only(self, store, doc_id): ...

The ACL, purge and concurrency tests live in ``store_access`` (inherited here), and the helpers
that build data and search through the protocol in ``store_helpers``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragline.acl import visible_to
from ragline.store.base import StoreError
from ragline.testing.store_access import AccessContract
from ragline.testing.store_helpers import (DIM, basis, chunk, chunk_ids_of, dense_hits, doc_ids, ids, provenance,
                                           record, scores, sparse_hits, where, write)


class StoreContract(AccessContract):
    supports_ann_index = True  # False: the backend builds no ANN index, and its tests are skipped

    # ------------------------------------------------------------------ hooks for a backend
    def make_store(self, tmp_path: Path, dim: int, **options):
        raise NotImplementedError("a backend's test class returns its store here")

    def drop_record_only(self, store, doc_id: str) -> None:
        raise NotImplementedError("a backend's test class deletes one document record here")

    @pytest.fixture
    def open_store(self, tmp_path):
        """``open_store(dim=8, **options)``: the test's store, re-opened on every call."""
        return lambda dim=DIM, **options: self.make_store(tmp_path, dim, **options)

    @pytest.fixture
    def three_docs(self, open_store):
        """a: 3 chunks, b: 2 chunks, c: 1 chunk; distinct words and vectors."""
        store = open_store()
        docs = [record("a", type="pdf", year=2019, title="Alpha", text="alpha text"),
                record("b", type="markdown", year=2021, title="Beta", text="beta text", language="en"),
                record("c", type="text", title="Gamma", text="gamma text")]
        chunks = [chunk("a", 0, "apples grow on orchards"), chunk("a", 1, "apples are harvested in autumn"),
                  chunk("a", 2, "cider is pressed from apples"),
                  chunk("b", 0, "bicycles have two wheels"), chunk("b", 1, "bicycles need pumped tyres"),
                  chunk("c", 0, "comets have icy tails")]
        vectors = np.stack([basis(0), basis(0) + 0.1 * basis(1), basis(0) + 0.2 * basis(2),
                            basis(3), basis(3) + 0.1 * basis(4), basis(5)])
        write(store, docs, chunks, vectors)
        store.finish()
        return store, docs, chunks

    # ------------------------------------------------------------------ writes and records
    def test_write_then_count_documents_and_get_documents(self, three_docs):
        store, docs, chunks = three_docs
        assert store.count() == len(chunks)
        assert store.count(where('doc_id = "a"')) == 3
        assert store.count(where('type = "markdown"')) == 2
        assert store.count(where('doc_id = "nope"')) == 0

        light = store.documents()
        assert set(light) == {"a", "b", "c"}
        for d in docs:
            got = light[d.doc_id]
            for name in ("doc_id", "source", "root", "type", "file_hash", "size", "mtime", "fingerprint",
                         "n_chunks", "title", "year"):
                assert getattr(got, name) == getattr(d, name), name
            assert got.text == ""  # documents() leaves the parsed text out

        full = {r.doc_id: r for r in store.get_documents(["c", "a", "unknown"])}
        assert set(full) == {"a", "c"}
        assert full["a"] == docs[0] and full["c"] == docs[2]
        assert store.get_documents([]) == []

    def test_chunks_round_trip_with_their_provenance(self, open_store):
        store = open_store()
        c = chunk("p", 4, "page five of the manual", page=5, heading_path=("Install", "On Linux"),
                  context="Manual > Install")
        write(store, [record("p", title="Manual")], [c], basis(2)[None, :])
        store.finish()
        [hit] = dense_hits(store, basis(2), 5)
        got = hit.chunk
        assert provenance(got) == provenance(c)
        assert got.metadata.get("context") == "Manual > Install"
        assert got.metadata.get("title") == "Manual"  # the document's title travels with its chunks
        assert got.location == "p. 5, Install > On Linux"

    def test_iter_chunks_yields_every_chunk_once_with_its_provenance(self, three_docs):
        store, _, chunks = three_docs
        extra = chunk("p", 4, "page five of the manual", page=5, heading_path=("Install", "On Linux"),
                      context="Manual > Install")
        write(store, [record("p", title="Manual")], [extra], basis(2)[None, :])
        written = {c.id: c for c in [*chunks, extra]}
        seen = list(store.iter_chunks())
        assert sorted(c.id for c in seen) == sorted(written)  # each once
        for got in seen:
            assert provenance(got) == provenance(written[got.id])
        [p] = [c for c in seen if c.id == extra.id]
        assert p.metadata.get("context") == "Manual > Install" and p.location == "p. 5, Install > On Linux"
        # the same chunk as a search fetches it
        [hit] = dense_hits(store, basis(2), 1, where('doc_id = "p"'))
        assert provenance(hit.chunk) == provenance(p) and dict(hit.chunk.metadata) == dict(p.metadata)

    def test_write_records_updates_a_record_and_leaves_chunks(self, three_docs):
        store, docs, chunks = three_docs
        store.write_records([record("b", type="markdown", year=2021, title="Beta", text="beta text",
                                    language="en", mtime=99.0)])
        assert store.documents()["b"].mtime == 99.0
        assert store.documents()["a"].mtime == 1.0
        assert store.count() == len(chunks)
        store.write_records([record("z", text="only a record")])
        assert set(store.documents()) == {"a", "b", "c", "z"}
        assert store.count(where('doc_id = "z"')) == 0

    def test_replacing_a_document_removes_its_old_chunks_only(self, three_docs):
        store, _, _ = three_docs
        b_before = chunk_ids_of(store, "b")
        c_before = chunk_ids_of(store, "c")
        # "a" goes from 3 chunks to 1 whose id is new
        new = chunk("a", 0, "pears ripen slowly", cid="a#new")
        write(store, [record("a", type="pdf", year=2019, title="Alpha", n_chunks=1)], [new], basis(6)[None, :])
        store.finish()
        assert store.count(where('doc_id = "a"')) == 1
        assert chunk_ids_of(store, "a") == {"a#new"}
        assert store.count() == 1 + 2 + 1
        assert chunk_ids_of(store, "b") == b_before and chunk_ids_of(store, "c") == c_before
        assert store.documents()["a"].n_chunks == 1
        # the old text and vectors are gone from both searches
        assert sparse_hits(store, "apples", 10) == []
        assert doc_ids(sparse_hits(store, "pears", 10)) == {"a"}
        top = dense_hits(store, basis(0), 10)
        assert "a#0" not in ids(top) and "a#1" not in ids(top)

    def test_replacing_a_chunk_with_the_same_id_updates_its_text(self, three_docs):
        store, _, _ = three_docs
        changed = chunk("c", 0, "meteors burn in the atmosphere")  # same id "c#0"
        write(store, [record("c", title="Gamma")], [changed], basis(5)[None, :])
        store.finish()
        assert chunk_ids_of(store, "c") == {"c#0"}
        assert sparse_hits(store, "comets", 5) == []
        [hit] = sparse_hits(store, "meteors", 5)
        assert hit.chunk.id == "c#0" and hit.chunk.text == "meteors burn in the atmosphere"

    def test_replacing_a_document_with_no_chunks_empties_it(self, three_docs):
        store, _, chunks = three_docs
        store.write([record("b", type="markdown", year=2021)], [], np.zeros((0, DIM), np.float32), [])
        assert store.count(where('doc_id = "b"')) == 0
        assert store.count() == len(chunks) - 2
        assert "b" in store.documents()

    def test_awkward_doc_ids_are_quoted_safely(self, open_store):
        store = open_store()
        odd = ["it's", "back\\slash", "ünï cödé", "a) OR (1=1"]
        write(store, [record(d) for d in odd], [chunk(d, 0, f"text {i}") for i, d in enumerate(odd)])
        assert set(store.documents()) == set(odd)
        assert {r.doc_id for r in store.get_documents(["it's"])} == {"it's"}
        write(store, [record("it's")], [chunk("it's", 0, "replaced", cid="q-new")])
        assert store.count() == 4
        store.delete(["a) OR (1=1"])
        assert set(store.documents()) == {"it's", "back\\slash", "ünï cödé"}
        assert store.count() == 3

    def test_delete_removes_chunks_and_records(self, three_docs):
        store, _, _ = three_docs
        store.delete(["a", "c"])
        assert set(store.documents()) == {"b"}
        assert store.get_documents(["a", "c"]) == []
        assert store.count() == 2
        assert store.count(where('doc_id in ["a", "c"]')) == 0
        assert sparse_hits(store, "apples comets", 10) == []
        assert doc_ids(dense_hits(store, basis(0), 10)) == {"b"}
        store.delete(["does-not-exist"])  # harmless
        assert store.count() == 2

    def test_remove_orphans_drops_chunks_without_a_record(self, three_docs):
        store, _, _ = three_docs
        self.drop_record_only(store, "b")
        assert store.count(where('doc_id = "b"')) == 2  # orphaned, not yet removed
        assert store.remove_orphans() == 1
        assert store.count(where('doc_id = "b"')) == 0
        assert store.count() == 4
        assert set(store.documents()) == {"a", "c"}
        assert store.remove_orphans() == 0
        assert store.count() == 4

    def test_remaining_texts_names_the_search_texts_still_stored(self, open_store):
        store = open_store()
        chunks = [chunk("a", 0, "alpha body"), chunk("a", 1, "alpha tail"), chunk("b", 0, "beta body")]
        search = ["Alpha doc. alpha body", "shared search text", "shared search text"]  # not the chunk texts
        write(store, [record("a"), record("b")], chunks, search_texts=search)
        store.finish()
        asked = ["Alpha doc. alpha body", "alpha body", "never stored", "shared search text", "Alpha doc. alpha body"]
        assert store.remaining_texts(asked) == {"Alpha doc. alpha body", "shared search text"}
        assert store.remaining_texts([]) == set()
        store.delete(["b"])  # "a" still holds the shared text
        assert store.remaining_texts(asked) == {"Alpha doc. alpha body", "shared search text"}
        write(store, [record("a")], [chunk("a", 0, "alpha rewritten", cid="a#2")], search_texts=["new text"])
        assert store.remaining_texts(asked + ["new text"]) == {"new text"}
        assert open_store().remaining_texts(["new text"]) == {"new text"}  # from the store, not this object

    # ------------------------------------------------------------------ dense
    def test_dense_returns_nearest_by_cosine(self, open_store):
        store = open_store()
        e0, e1 = basis(0), basis(1)
        vectors = {
            "same": 5.0 * e0,  # cosine ignores length
            "close": e0 + 0.5 * e1,
            "orthogonal": e1,
            "opposite": -e0,
            "between": e0 + 2.0 * e1,
        }
        names = list(vectors)
        chunks = [chunk("g", i, f"vector {n}", cid=n) for i, n in enumerate(names)]
        write(store, [record("g")], chunks, np.stack([vectors[n] for n in names]))
        store.finish()
        q = 0.3 * e0
        expected = {n: float(v @ q / (np.linalg.norm(v) * np.linalg.norm(q))) for n, v in vectors.items()}
        hits = dense_hits(store, q, 5)
        assert ids(hits) == ["same", "close", "between", "orthogonal", "opposite"]
        for h in hits:
            assert h.score == pytest.approx(expected[h.chunk.id], abs=1e-5)
            assert h.scores["dense"] == pytest.approx(expected[h.chunk.id], abs=1e-5)
        assert ids(dense_hits(store, q, 2)) == ["same", "close"]
        assert ids(dense_hits(store, -e0, 1)) == ["opposite"]

    def test_empty_store_searches_return_nothing(self, open_store):
        store = open_store()
        assert dense_hits(store, basis(0), 5) == []
        assert sparse_hits(store, "anything", 5) == []
        assert sparse_hits(store, "anything", 5, visible_to(()), scope=visible_to(())) == []
        assert store.count() == 0
        assert store.documents() == {}
        assert store.list_documents() == []
        assert list(store.iter_chunks()) == []
        assert store.fetch([]) == {}
        assert store.remaining_texts(["anything"]) == set()
        assert store.remove_orphans() == 0
        store.refresh()
        store.finish()  # nothing to do, no error

    # ------------------------------------------------------------------ sparse
    def test_sparse_bm25_matches_stemmed_terms(self, open_store):
        store = open_store()
        texts = ["The dog runs across the park every day", "We run five kilometres before breakfast",
                 "Cats sleep for most of the afternoon", "Quantum chromodynamics describes quarks",
                 "Bread dough rises in a warm kitchen"]
        chunks = [chunk(f"d{i}", 0, t) for i, t in enumerate(texts)]
        write(store, [record(f"d{i}") for i in range(len(texts))], chunks)
        store.finish()
        hits = sparse_hits(store, "running", 10)
        assert doc_ids(hits) == {"d0", "d1"}
        assert all(h.score > 0 and h.scores["sparse"] == h.score for h in hits)
        assert sparse_hits(store, "xylophone", 10) == []
        assert sparse_hits(store, "   ", 10) == []
        # more matching query terms rank higher
        ranked = sparse_hits(store, "dog running park", 10)
        assert ids(ranked)[0] == "d0#0" and ranked[0].score > ranked[1].score

    def test_sparse_sees_chunks_written_after_the_first_batch(self, three_docs):
        store, _, _ = three_docs
        write(store, [record("late")], [chunk("late", 0, "walruses bask on the ice")])
        assert doc_ids(sparse_hits(store, "walrus", 5)) == {"late"}  # before finish()
        store.finish()
        assert doc_ids(sparse_hits(store, "walrus", 5)) == {"late"}

    def test_sparse_takes_any_user_text(self, three_docs):
        store, _, _ = three_docs
        for q in ('"apples grow"', '"unbalanced apples', "apples AND cider", "(apples)", "apples^2", "a:b", "\\", "?"):
            hits = sparse_hits(store, q, 5)  # never an error
            assert doc_ids(hits) <= {"a"}, q
        assert doc_ids(sparse_hits(store, '"apples grow"', 5)) == {"a"}

    # ------------------------------------------------------------------ filters
    def test_filters_prefilter_dense_and_sparse(self, three_docs):
        store, _, _ = three_docs
        # nearest to e0 are a's chunks, but the filter admits only b
        only_b = where('type = "markdown"')
        assert doc_ids(dense_hits(store, basis(0), 10, only_b)) == {"b"}
        assert len(dense_hits(store, basis(0), 10, only_b)) == 2
        assert sparse_hits(store, "apples", 10, only_b) == []
        assert doc_ids(sparse_hits(store, "bicycles", 10, only_b)) == {"b"}
        recent = where("year >= 2020 or year is null")
        assert doc_ids(dense_hits(store, basis(0), 10, recent)) == {"b", "c"}
        assert doc_ids(dense_hits(store, basis(0), 10, where('language = "en"'))) == {"b"}
        assert doc_ids(dense_hits(store, basis(0), 10, where('title startswith "Al"'))) == {"a"}
        assert doc_ids(sparse_hits(store, "apples bicycles comets", 10, where('not doc_id = "b"'))) == {"a", "c"}

    def test_list_documents_filters_by_record_fields(self, three_docs):
        store, _, _ = three_docs
        assert {r.doc_id for r in store.list_documents(where("year >= 2020 or year is null"))} == {"b", "c"}
        assert {r.doc_id for r in store.list_documents(where('type in ["pdf", "text"]'))} == {"a", "c"}
        assert {r.doc_id for r in store.list_documents(where('title contains "et"'))} == {"b"}
        assert store.list_documents(where('doc_id = "nope"')) == []
        everything = store.list_documents()
        assert {r.doc_id: r for r in everything} == store.documents()  # the same records, no parsed text
        assert all(r.text == "" for r in everything)

    def _selective(self, store, k_matching: int = 12, n_total: int = 2000):
        """``n_total`` chunks, of which ``k_matching`` (doc "target", type pdf) pass the filter and
        every other chunk beats them on both dense and sparse scores."""
        rng = np.random.default_rng(7)
        q = basis(0)
        docs = [record("target", type="pdf", year=2024)]
        chunks, vectors = [], []
        for i in range(k_matching):
            chunks.append(chunk("target", i, f"needle in a long haystack of assorted filler words number {i}"))
            vectors.append(-q + 0.3 * rng.normal(size=DIM))  # far from the query
        per_doc = 20
        n_other = n_total - k_matching
        for j in range(0, n_other, per_doc):
            d = f"other{j // per_doc:03d}"
            docs.append(record(d, type="text", year=2000))
            for i in range(min(per_doc, n_other - j)):
                chunks.append(chunk(d, i, f"needle needle needle {j + i}"))
                vectors.append(q + 0.05 * rng.normal(size=DIM))  # near the query
        vectors = np.asarray(vectors, dtype=np.float32)
        write(store, docs, chunks, vectors)
        target_vecs = vectors[:k_matching]
        cos = target_vecs @ q / np.linalg.norm(target_vecs, axis=1)
        best = [chunks[i].id for i in np.argsort(-cos)]
        return q, where('type = "pdf"'), best

    def _assert_selective(self, store, q, flt, best):
        assert store.count() == 2000 and store.count(flt) == 12
        assert "target" not in doc_ids(dense_hits(store, q, 10))  # unfiltered, the other chunks win
        dense = dense_hits(store, q, 10, flt)
        assert len(dense) == 10
        assert doc_ids(dense) == {"target"}
        assert ids(dense) == best[:10]  # the true 10 nearest among the matches, in order
        sparse = sparse_hits(store, "needle", 10, flt)
        assert len(sparse) == 10
        assert doc_ids(sparse) == {"target"}
        # asking for more than match returns every match, no more
        assert len(dense_hits(store, q, 50, flt)) == 12 and len(sparse_hits(store, "needle", 50, flt)) == 12

    @pytest.mark.slow
    def test_selective_filter_still_returns_k_results(self, open_store):
        store = open_store()
        q, flt, best = self._selective(store)
        store.finish()
        self._assert_selective(store, q, flt, best)

    @pytest.mark.slow
    def test_selective_filter_returns_k_results_with_ann_index(self, open_store):
        if not self.supports_ann_index:
            pytest.skip("this backend builds no approximate-nearest-neighbour index (supports_ann_index = False)")
        store = open_store(ann_min_rows=1000)
        q, flt, best = self._selective(store)
        store.finish()
        assert store.stats().ann_index
        self._assert_selective(store, q, flt, best)
        unfiltered = dense_hits(store, q, 10)
        assert len(unfiltered) == 10 and "target" not in doc_ids(unfiltered)

    def test_no_ann_index_below_threshold(self, three_docs):
        store, _, _ = three_docs
        assert not store.stats().ann_index

    # ------------------------------------------------------------------ lifecycle
    def _snapshot(self, store) -> tuple:
        st = store.stats()
        return (store.count(), sorted(store.documents()), st.documents, st.chunks, st.fts_index, st.ann_index,
                ids(dense_hits(store, basis(0), 6)), ids(sparse_hits(store, "apples bicycles", 6)),
                scores(sparse_hits(store, "apples bicycles", 6)), sorted(c.id for c in store.iter_chunks()))

    def test_finish_is_idempotent(self, three_docs):
        store, _, _ = three_docs
        first = self._snapshot(store)
        store.finish()
        store.finish()
        assert self._snapshot(store) == first
        assert first[4] is True  # the full-text index exists after finish()

    def test_refresh_is_harmless_and_changes_no_data(self, three_docs):
        store, _, _ = three_docs
        first = self._snapshot(store)
        store.refresh()
        store.refresh()
        assert self._snapshot(store) == first
        write(store, [record("late")], [chunk("late", 0, "walruses bask on the ice")])
        store.refresh()  # a write is seen after a refresh as before it
        assert doc_ids(sparse_hits(store, "walrus", 5)) == {"late"} and store.count() == 7

    def test_stats_agree_with_what_was_written(self, three_docs):
        store, docs, chunks = three_docs
        st = store.stats()
        assert (st.documents, st.chunks) == (len(docs), len(chunks))
        assert st.backend and st.size_bytes > 0 and st.fts_index
        store.delete(["b"])
        st2 = store.stats()
        assert (st2.documents, st2.chunks) == (len(docs) - 1, len(chunks) - 2)

    def test_reopened_store_sees_the_same_data(self, open_store, three_docs):
        store, docs, chunks = three_docs
        again = open_store()
        assert again is not store
        assert again.count() == len(chunks)
        assert set(again.documents()) == {d.doc_id for d in docs}
        assert {r.doc_id: r for r in again.get_documents(["a", "b", "c"])} == {d.doc_id: d for d in docs}
        assert ids(dense_hits(again, basis(3), 2)) == ids(dense_hits(store, basis(3), 2)) == ["b#0", "b#1"]
        assert ids(sparse_hits(again, "cider", 3)) == ["a#2"]
        assert again.stats().chunks == len(chunks)

    def test_opening_with_another_dimension_raises_store_error(self, open_store, three_docs):
        with pytest.raises(StoreError) as exc:
            open_store(16)
        msg = str(exc.value)
        assert "8" in msg and "16" in msg
        assert open_store(DIM).count() == 6  # the data is untouched
