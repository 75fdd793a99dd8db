"""The Store contract: behaviour every storage backend must show.

``StoreContract`` holds the tests; a backend binds them by subclassing it and
overriding two hooks:

* ``make_store(tmp_path, dim, **options)`` opens (or re-opens) *the same*
  store for a test each time it is called with the same ``tmp_path``.
  ``options`` carries ``ann_min_rows``, the row count from which ``finish()``
  builds an approximate-nearest-neighbour index.
* ``drop_record_only(store, doc_id)`` removes a document record while leaving
  its chunks behind, the state a kill in the middle of ``delete`` leaves.

A PostgreSQL backend gets the whole suite with::

    class TestPostgresStore(StoreContract):
        def make_store(self, tmp_path, dim, **options): ...
        def drop_record_only(self, store, doc_id): ...
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ragline.retrieve.filters import compile_filter
from ragline.store.base import FILTER_FIELDS, DocRecord, StoreError
from ragline.store.lance import LanceStore
from ragline.types import Chunk

DIM = 8


def where(expr: str) -> str:
    return compile_filter(expr, FILTER_FIELDS)


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


def write(store, docs, chunks, vectors=None) -> None:
    vectors = random_vectors(len(chunks)) if vectors is None else np.asarray(vectors, dtype=np.float32)
    store.write(docs, chunks, vectors.reshape(len(chunks), DIM), [c.text for c in chunks])


def ids(hits) -> list[str]:
    return [h.chunk.id for h in hits]


def doc_ids(hits) -> set[str]:
    return {h.chunk.doc_id for h in hits}


def chunk_ids_of(store, doc_id: str, probe: np.ndarray | None = None) -> set[str]:
    """Every chunk id of a document, read through the public dense search."""
    n = store.count()
    if n == 0:
        return set()
    return set(ids(store.dense(basis(0) if probe is None else probe, n, where(f'doc_id = "{doc_id}"'))))


class StoreContract:
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
        [hit] = store.dense(basis(2), 5)
        got = hit.chunk
        assert (got.id, got.doc_id, got.source, got.text, got.start, got.end, got.ordinal, got.page,
                got.heading_path, got.content_hash) == (c.id, c.doc_id, c.source, c.text, c.start, c.end,
                                                         c.ordinal, c.page, c.heading_path, c.content_hash)
        assert got.metadata.get("context") == "Manual > Install"
        assert got.location == "p. 5, Install > On Linux"

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
        assert store.sparse("apples", 10) == []
        assert doc_ids(store.sparse("pears", 10)) == {"a"}
        top = store.dense(basis(0), 10)
        assert "a#0" not in ids(top) and "a#1" not in ids(top)

    def test_replacing_a_chunk_with_the_same_id_updates_its_text(self, three_docs):
        store, _, _ = three_docs
        changed = chunk("c", 0, "meteors burn in the atmosphere")  # same id "c#0"
        write(store, [record("c", title="Gamma")], [changed], basis(5)[None, :])
        store.finish()
        assert chunk_ids_of(store, "c") == {"c#0"}
        assert store.sparse("comets", 5) == []
        [hit] = store.sparse("meteors", 5)
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
        assert store.sparse("apples comets", 10) == []
        assert doc_ids(store.dense(basis(0), 10)) == {"b"}
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
        hits = store.dense(q, 5)
        assert ids(hits) == ["same", "close", "between", "orthogonal", "opposite"]
        for h in hits:
            assert h.score == pytest.approx(expected[h.chunk.id], abs=1e-5)
            assert h.scores["dense"] == pytest.approx(expected[h.chunk.id], abs=1e-5)
        assert ids(store.dense(q, 2)) == ["same", "close"]
        assert ids(store.dense(-e0, 1)) == ["opposite"]

    def test_empty_store_searches_return_nothing(self, open_store):
        store = open_store()
        assert store.dense(basis(0), 5) == []
        assert store.sparse("anything", 5) == []
        assert store.count() == 0
        assert store.documents() == {}
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
        hits = store.sparse("running", 10)
        assert doc_ids(hits) == {"d0", "d1"}
        assert all(h.score > 0 and h.scores["sparse"] == h.score for h in hits)
        assert store.sparse("xylophone", 10) == []
        assert store.sparse("   ", 10) == []
        # more matching query terms rank higher
        ranked = store.sparse("dog running park", 10)
        assert ids(ranked)[0] == "d0#0" and ranked[0].score > ranked[1].score

    def test_sparse_sees_chunks_written_after_the_first_batch(self, three_docs):
        store, _, _ = three_docs
        write(store, [record("late")], [chunk("late", 0, "walruses bask on the ice")])
        assert doc_ids(store.sparse("walrus", 5)) == {"late"}  # before finish()
        store.finish()
        assert doc_ids(store.sparse("walrus", 5)) == {"late"}

    # ------------------------------------------------------------------ filters
    def test_filters_prefilter_dense_and_sparse(self, three_docs):
        store, _, _ = three_docs
        # nearest to e0 are a's chunks, but the filter admits only b
        only_b = where('type = "markdown"')
        assert doc_ids(store.dense(basis(0), 10, only_b)) == {"b"}
        assert len(store.dense(basis(0), 10, only_b)) == 2
        assert store.sparse("apples", 10, only_b) == []
        assert doc_ids(store.sparse("bicycles", 10, only_b)) == {"b"}
        recent = where("year >= 2020 or year is null")
        assert doc_ids(store.dense(basis(0), 10, recent)) == {"b", "c"}
        assert doc_ids(store.dense(basis(0), 10, where('language = "en"'))) == {"b"}
        assert doc_ids(store.dense(basis(0), 10, where('title startswith "Al"'))) == {"a"}
        assert doc_ids(store.sparse("apples bicycles comets", 10, where('not doc_id = "b"'))) == {"a", "c"}

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
        assert "target" not in doc_ids(store.dense(q, 10))  # unfiltered, the other chunks win
        dense = store.dense(q, 10, flt)
        assert len(dense) == 10
        assert doc_ids(dense) == {"target"}
        assert ids(dense) == best[:10]  # the true 10 nearest among the matches, in order
        sparse = store.sparse("needle", 10, flt)
        assert len(sparse) == 10
        assert doc_ids(sparse) == {"target"}
        # asking for more than match returns every match, no more
        assert len(store.dense(q, 50, flt)) == 12 and len(store.sparse("needle", 50, flt)) == 12

    @pytest.mark.slow
    def test_selective_filter_still_returns_k_results(self, open_store):
        store = open_store()
        q, flt, best = self._selective(store)
        store.finish()
        self._assert_selective(store, q, flt, best)

    @pytest.mark.slow
    def test_selective_filter_returns_k_results_with_ann_index(self, open_store):
        store = open_store(ann_min_rows=1000)
        q, flt, best = self._selective(store)
        store.finish()
        assert store.has_ann_index()
        assert store.stats().ann_index
        self._assert_selective(store, q, flt, best)
        unfiltered = store.dense(q, 10)
        assert len(unfiltered) == 10 and "target" not in doc_ids(unfiltered)

    def test_no_ann_index_below_threshold(self, three_docs):
        store, _, _ = three_docs
        assert not store.has_ann_index()
        assert not store.stats().ann_index

    # ------------------------------------------------------------------ lifecycle
    def test_finish_is_idempotent(self, three_docs):
        store, _, _ = three_docs

        def snapshot():
            st = store.stats()
            return (store.count(), sorted(store.documents()), st.documents, st.chunks, st.fts_index, st.ann_index,
                    ids(store.dense(basis(0), 6)), ids(store.sparse("apples bicycles", 6)))

        first = snapshot()
        store.finish()
        store.finish()
        assert snapshot() == first
        assert first[4] is True  # the full-text index exists after finish()

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
        assert ids(again.dense(basis(3), 2)) == ids(store.dense(basis(3), 2)) == ["b#0", "b#1"]
        assert ids(again.sparse("cider", 3)) == ["a#2"]
        assert again.stats().chunks == len(chunks)

    def test_opening_with_another_dimension_raises_store_error(self, open_store, three_docs):
        with pytest.raises(StoreError) as exc:
            open_store(16)
        msg = str(exc.value)
        assert "8" in msg and "16" in msg
        assert open_store(DIM).count() == 6  # the data is untouched

    # ------------------------------------------------------------------ document ACLs and purge
    @pytest.fixture
    def acl_docs(self, open_store):
        """Four documents, each readable by different principals; every chunk matches 'secret'."""
        from dataclasses import replace

        store = open_store()
        acls = {"pub": ("*",), "eng": ("group:eng",), "alice": ("user:alice",), "both": ("group:eng", "user:bob")}
        docs = [replace(record(d, text=f"{d} text"), acl=acl) for d, acl in acls.items()]
        chunks = [chunk(d, i, f"secret note {i} of {d}") for d in acls for i in range(3)]
        write(store, docs, chunks, np.tile(basis(0), (len(chunks), 1)) + random_vectors(len(chunks)) * 0.01)
        store.finish()
        return store, acls

    @pytest.mark.parametrize("caller, visible", [
        ((), {"pub"}),
        (("user:alice",), {"pub", "alice"}),
        (("group:eng",), {"pub", "eng", "both"}),
        (("user:bob", "group:ops"), {"pub", "both"}),
    ])
    def test_acl_prefilters_dense_sparse_count_and_documents(self, acl_docs, caller, visible):
        from ragline.retrieve.acl import acl_clause

        store, acls = acl_docs
        flt = acl_clause(caller)
        n = store.count()
        # ask for everything: a prefilter returns all visible chunks and nothing else
        assert doc_ids(store.dense(basis(0), n, flt)) == visible
        assert doc_ids(store.sparse("secret", n, flt)) == visible
        assert store.count(flt) == 3 * len(visible)
        # top-1 is computed among visible chunks only (never trimmed from an unfiltered top-k)
        assert len(store.dense(basis(0), 1, flt)) == 1 and len(store.sparse("secret", 1, flt)) == 1
        assert {r.doc_id for r in store.list_documents(flt)} == visible
        assert {r.doc_id: r.acl for r in store.list_documents()} == acls

    def test_acl_combines_with_a_user_filter(self, acl_docs):
        from ragline.retrieve.acl import acl_clause, and_where

        store, _ = acl_docs
        flt = and_where(acl_clause(["user:alice"]), where('doc_id = "eng"'))
        assert store.dense(basis(0), 10, flt) == [] and store.sparse("secret", 10, flt) == []
        flt = and_where(acl_clause(["user:alice"]), where('doc_id = "alice"'))
        assert doc_ids(store.dense(basis(0), 10, flt)) == {"alice"}

    def test_delete_purge_leaves_no_trace_on_disk(self, open_store, tmp_path):
        store = open_store()
        docs = [record("keep", text="keep"), record("gone", text="gone")]
        chunks = [chunk("keep", 0, "ordinary harmless words"), chunk("gone", 0, "zanzibarquux confidential"),
                  chunk("gone", 1, "more zanzibarquux material")]
        write(store, docs, chunks)
        store.finish()
        # a second version of the doomed chunks, so older versions hold it too
        write(store, [docs[1]], chunks[1:], random_vectors(2, seed=3))
        store.finish()
        texts = store.delete_purge(["gone"])
        assert sorted(texts) == sorted(c.text for c in chunks[1:])
        assert store.sparse("zanzibarquux", 10) == [] and store.count() == 1
        assert set(store.documents()) == {"keep"}
        assert store.remaining_texts(texts + ["ordinary harmless words"]) == {"ordinary harmless words"}
        leaked = [p for p in tmp_path.rglob("*") if p.is_file() and b"zanzibarquux" in p.read_bytes()]
        assert leaked == []
        assert doc_ids(store.sparse("ordinary", 10)) == {"keep"}  # the survivor is still searchable


    def test_sparse_takes_any_user_text(self, three_docs):
        store, _, _ = three_docs
        for q in ('"apples grow"', '"unbalanced apples', "apples AND cider", "(apples)", "apples^2", "a:b", "\\", "?"):
            hits = store.sparse(q, 5)  # never an error
            assert doc_ids(hits) <= {"a"}, q
        assert doc_ids(store.sparse('"apples grow"', 5)) == {"a"}

    @pytest.mark.slow
    def test_reads_racing_writes_never_cross_an_acl_or_a_document(self, open_store):
        """Readers under an ACL while a writer replaces, re-permissions and compacts documents:
        every hit is a visible chunk and the text of the document it names."""
        import threading
        from dataclasses import replace

        from ragline.retrieve.acl import acl_clause
        from ragline.retrieve.search import Retriever, SearchRequest
        from ragline.config import RetrieveSettings

        store = open_store()
        secret, public = ("group:exec",), ("*",)

        def docs_for(round_: int):
            docs, chunks = [], []
            for i in range(12):
                acl = secret if (i + round_) % 2 else public
                tag = "secret" if acl == secret else "public"
                d = replace(record(f"doc{i}", text="x"), acl=acl)
                docs.append(d)
                chunks += [chunk(d.doc_id, j, f"{tag} body of doc{i} part {j} round {round_} common")
                           for j in range(1 + (round_ + i) % 3)]
            return docs, chunks

        write(store, *docs_for(0))
        store.finish()

        class Fixed:  # a query embedder that returns one vector
            dim = DIM

            def embed_query(self, text):
                return basis(0) + 0.5

        retriever = Retriever(store, Fixed(), RetrieveSettings())
        stop, problems = threading.Event(), []

        def read():
            while not stop.is_set():
                for mode in ("dense", "sparse", "hybrid"):
                    req = SearchRequest("common body", k=20, mode=mode, principals=("user:nobody",))
                    for h in retriever.search(req):
                        if "secret" in h.chunk.text or f"of {h.chunk.doc_id} " not in h.chunk.text:
                            problems.append((mode, h.chunk.doc_id, h.chunk.text))
                n = store.count(acl_clause(["user:nobody"]))
                if n > 0 and not store.dense(basis(0), 100, acl_clause(["user:nobody"])):
                    problems.append(("dense", "visible chunks exist but none returned", n))

        readers = [threading.Thread(target=read) for _ in range(2)]
        [t.start() for t in readers]
        try:
            for round_ in range(1, 25):
                write(store, *docs_for(round_), random_vectors(sum(1 + (round_ + i) % 3 for i in range(12)), round_))
                store.finish()
        finally:
            stop.set()
            [t.join() for t in readers]
        assert problems == []


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

    def test_an_index_from_before_acls_opens_readable_by_everyone(self, tmp_path, three_docs):
        import lancedb

        db = lancedb.connect(str(tmp_path / "lance"))
        for name in ("chunks", "documents"):
            db.open_table(name).drop_columns(["acl"])
        store = LanceStore(tmp_path / "lance", DIM)
        from ragline.retrieve.acl import acl_clause

        assert store.count(acl_clause(["user:anyone"])) == 6
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
                assert doc_ids(store.sparse(f"markerd{batch}{i}", 5)) == {f"d{batch}{i}"}, (batch, i)
