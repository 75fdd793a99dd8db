"""The ACL, purge and concurrency half of the Store contract; ``store_contract.StoreContract``
inherits it (bind that class, not this one)."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from ragline.acl import visible_to
from ragline.filters import all_of
from ragline.testing.store_helpers import (DIM, basis, chunk, dense_hits, doc_ids, ids, random_vectors, record,
                                           scores, sparse_hits, where, write)


class AccessContract:
    """Tests of document ACLs (the ``visible_to`` prefilter and BM25 under a scope), of purging,
    and of reads racing writes. They use the fixtures and hooks of ``StoreContract``."""

    # ------------------------------------------------------------------ document ACLs and purge
    @pytest.fixture
    def acl_docs(self, open_store):
        """Four documents, each readable by different principals; every chunk matches 'secret'."""
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
        store, acls = acl_docs
        flt = visible_to(caller)
        n = store.count()
        # ask for everything: a prefilter returns all visible chunks and nothing else
        assert doc_ids(dense_hits(store, basis(0), n, flt)) == visible
        assert doc_ids(sparse_hits(store, "secret", n, flt)) == visible
        assert doc_ids(sparse_hits(store, "secret", n, flt, scope=flt)) == visible
        assert store.count(flt) == 3 * len(visible)
        # top-1 is computed among visible chunks only (never trimmed from an unfiltered top-k)
        assert len(dense_hits(store, basis(0), 1, flt)) == 1 and len(sparse_hits(store, "secret", 1, flt)) == 1
        assert len(sparse_hits(store, "secret", 1, flt, scope=flt)) == 1
        assert {r.doc_id for r in store.list_documents(flt)} == visible
        assert {r.doc_id: r.acl for r in store.list_documents()} == acls

    def test_acl_combines_with_a_user_filter(self, acl_docs):
        store, _ = acl_docs
        flt = all_of(visible_to(["user:alice"]), where('doc_id = "eng"'))
        assert dense_hits(store, basis(0), 10, flt) == [] and sparse_hits(store, "secret", 10, flt) == []
        flt = all_of(visible_to(["user:alice"]), where('doc_id = "alice"'))
        assert doc_ids(dense_hits(store, basis(0), 10, flt)) == {"alice"}

    def test_list_documents_combines_a_doc_id_filter_with_an_acl(self, acl_docs):
        store, acls = acl_docs
        alice = visible_to(["user:alice"])
        picked = all_of(where('doc_id in ["alice", "eng", "pub"]'), alice)
        assert {r.doc_id for r in store.list_documents(picked)} == {"alice", "pub"}
        assert store.list_documents(all_of(where('doc_id = "eng"'), alice)) == []
        [both] = store.list_documents(all_of(where('doc_id = "both"'), visible_to(["user:bob"])))
        assert both.acl == acls["both"] and both.text == ""
        assert {r.doc_id for r in store.list_documents(all_of(where('not doc_id = "pub"'), visible_to(["group:eng"])))} \
            == {"eng", "both"}

    def test_scoped_sparse_scores_ignore_chunks_outside_the_scope(self, open_store):
        """With ``scope``, BM25 counts its statistics over the caller's rows: adding chunks it may
        not see, full of the query's words, moves none of its scores or ranks."""
        store = open_store()
        docs = [replace(record("pub"), acl=("*",)), replace(record("mine"), acl=("user:alice",))]
        chunks = [chunk("pub", 0, "the zircon harvest of the northern valley doubled"),
                  chunk("pub", 1, "a harvest festival moves north this year"),
                  chunk("pub", 2, "ferries timetables and the price of coffee"),
                  chunk("mine", 0, "zircon yields rose after new terraces were cut"),
                  chunk("mine", 1, "notes on terraces: zircon appears once here, harvest twice, harvest")]
        write(store, docs, chunks)
        store.finish()
        query, alice = "zircon harvest", visible_to(["user:alice"])
        before = sparse_hits(store, query, 10, alice, scope=alice)
        unscoped_before = scores(sparse_hits(store, query, 10))
        assert len(before) == 4
        # alice's scope is every row here: scoped and unscoped statistics agree
        assert scores(before) == pytest.approx(unscoped_before, rel=1e-5)

        hidden = [replace(record(f"exec{i}"), acl=("group:exec",)) for i in range(3)]
        write(store, hidden, [chunk(d.doc_id, j, "zircon zircon harvest " * (1 + 3 * i) + f"ledger {j}")
                              for i, d in enumerate(hidden) for j in range(2)])
        store.finish()
        after = sparse_hits(store, query, 10, alice, scope=alice)
        assert ids(after) == ids(before)
        assert scores(after) == pytest.approx(scores(before), rel=1e-5)
        # the hidden chunks do move the statistics of a caller that sees everything
        unscoped_after = {i: s for i, s in scores(sparse_hits(store, query, 20)).items() if i in unscoped_before}
        assert set(unscoped_after) == set(unscoped_before)
        assert unscoped_after != pytest.approx(unscoped_before, rel=1e-3)
        # ``where`` narrows the rows ranked, not the rows counted
        narrow = sparse_hits(store, query, 10, all_of(alice, where('doc_id = "mine"')), scope=alice)
        assert ids(narrow) == [i for i in ids(after) if i.startswith("mine#")]
        assert scores(narrow) == pytest.approx({i: s for i, s in scores(after).items() if i.startswith("mine#")},
                                               rel=1e-5)

    def test_delete_purge_returns_the_search_texts_and_nothing_of_them_is_found(self, open_store):
        store = open_store()
        docs = [record("keep"), record("gone")]
        chunks = [chunk("keep", 0, "ordinary harmless words"), chunk("gone", 0, "quokka confidential"),
                  chunk("gone", 1, "more quokka material")]
        search = ["Keep. ordinary harmless words", "Gone. quokka confidential", "Gone. more quokka material"]
        write(store, docs, chunks, np.stack([basis(0), basis(0), basis(1)]), search_texts=search)
        store.finish()
        texts = store.delete_purge(["gone", "never-there"])
        assert sorted(texts) == sorted(search[1:])  # the search texts, not the chunk texts
        assert sparse_hits(store, "quokka", 10) == [] and sparse_hits(store, "confidential material", 10) == []
        assert doc_ids(dense_hits(store, basis(1), 10)) == {"keep"}
        assert store.count() == 1 and store.count(where('doc_id = "gone"')) == 0
        assert [c.doc_id for c in store.iter_chunks()] == ["keep"]
        assert set(store.documents()) == {"keep"} and store.get_documents(["gone"]) == []
        assert [r.doc_id for r in store.list_documents()] == ["keep"]
        assert store.remaining_texts(texts) == set()
        assert store.delete_purge(["gone"]) == [] and store.delete_purge([]) == []
        assert doc_ids(sparse_hits(store, "ordinary", 10)) == {"keep"}

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
        assert sparse_hits(store, "zanzibarquux", 10) == [] and store.count() == 1
        assert set(store.documents()) == {"keep"}
        assert store.remaining_texts(texts + ["ordinary harmless words"]) == {"ordinary harmless words"}
        leaked = [p for p in tmp_path.rglob("*") if p.is_file() and b"zanzibarquux" in p.read_bytes()]
        assert leaked == []
        assert doc_ids(sparse_hits(store, "ordinary", 10)) == {"keep"}  # the survivor is still searchable

    @pytest.mark.slow
    def test_reads_racing_writes_never_cross_an_acl_or_a_document(self, open_store):
        """Readers under an ACL while a writer replaces, re-permissions and compacts documents:
        every hit is a visible chunk and the text of the document it names."""
        from ragline.config import RetrieveSettings
        from ragline.retrieve.search import Retriever, SearchRequest

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
        nobody = visible_to(["user:nobody"])

        def read():
            while not stop.is_set():
                for mode in ("dense", "sparse", "hybrid"):
                    req = SearchRequest("common body", k=20, mode=mode, principals=("user:nobody",))
                    for h in retriever.search(req):
                        if "secret" in h.chunk.text or f"of {h.chunk.doc_id} " not in h.chunk.text:
                            problems.append((mode, h.chunk.doc_id, h.chunk.text))
                # every round leaves documents visible to this caller: a prefilter finds some (the
                # candidates; fetching them may find their rows replaced by a write since)
                n = store.count(nobody)
                if n > 0 and not store.dense_candidates(basis(0), 100, nobody):
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
