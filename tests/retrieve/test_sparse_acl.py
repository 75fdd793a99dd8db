"""BM25 under document ACLs: a restricted caller's sparse scores and ranking depend only on the
chunks it may read (docs/adr/0006-sparse-statistics-under-acls.md)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.conftest import memory_document

from ragline.config import RetrieveSettings
from ragline.embed.cache import EmbeddingCache
from ragline.ingest.chunkers import ChunkPlan
from ragline.ingest.indexer import Indexer
from ragline.store import bm25
from ragline.acl import visible_to as acl_clause
from ragline.retrieve.search import Retriever, SearchRequest
from ragline.store.lance import LanceStore

RED = ("group:red",)
QUERY = "zircon harvest yields in the northern valley"

VISIBLE = {  # doc id -> (acl, body); RED sees these
    "red-report": (RED, "The zircon harvest of the northern valley doubled this year. Yields of zircon "
                        "rose after the new terraces were cut, and the harvest ended early."),
    "red-notes": (RED, "Notes on terraces: the valley crews don't rest in winter. Zircon appears once here."),
    "public-memo": (("*",), "A memo to everyone: the harvest festival is not cancelled. It moves north."),
    "public-misc": (("*",), "Unrelated text about ferries, timetables and the price of coffee on the island."),
}
HIDDEN = {  # RED may not read these; they are full of the query's words and of varied lengths
    "blue-1": (("group:blue",), "Zircon zircon zircon harvest. Zircon yields in the northern valley."),
    "blue-2": (("group:blue",), "Harvest harvest harvest harvest of zircon in the valley. " * 12),
    "blue-3": (("user:bob",), "Northern valley zircon yields: a short confidential table."),
}


def items(docs: dict):
    out = []
    for doc_id, (acl, body) in docs.items():
        doc, rec = memory_document(doc_id, doc_id.replace("-", " ").title(), body)
        out.append((doc, replace(rec, acl=acl)))
    return out


@pytest.fixture
def store(tmp_path, embedder, shared_cache_path):
    s = LanceStore(tmp_path / "lance", embedder.dim)
    s.indexer = Indexer(s, embedder, EmbeddingCache(shared_cache_path), ChunkPlan(size=32))  # several chunks each
    return s


def seen(retriever: Retriever, mode: str, principals=RED, **kw) -> list[tuple]:
    """What a caller gets back: document, chunk, rank order and the per-mode scores."""
    hits = retriever.search(SearchRequest(QUERY, k=20, mode=mode, principals=principals, **kw))
    return [(h.chunk.doc_id, h.chunk.id, dict(h.scores)) for h in hits]


@pytest.mark.parametrize("mode", ["sparse", "hybrid"])
def test_hidden_documents_change_no_restricted_score_or_rank(store, embedder, mode):
    retriever = Retriever(store, embedder, RetrieveSettings())
    store.indexer.index(items(VISIBLE))
    store.finish()
    before = seen(retriever, mode)
    assert {d for d, _, _ in before} >= {"red-report", "red-notes", "public-memo"}
    assert all(s["sparse"] > 0 for _, _, s in before if "sparse" in s)

    store.indexer.index(items(HIDDEN))  # searched unindexed until finish(), then indexed
    assert seen(retriever, mode) == before
    store.finish()
    after = seen(retriever, mode)
    assert after == before  # same chunks, same order, bit-identical scores

    # the hidden chunks are really there and do move the index's own (unrestricted) statistics
    everyone = {d: s for d, _, s in seen(retriever, mode, principals=None)}
    assert {"blue-1", "blue-2", "blue-3"} <= set(everyone)
    mine = {d: s for d, _, s in after}
    assert everyone["red-report"]["sparse"] != mine["red-report"]["sparse"]


def test_statistics_follow_the_visible_rows(store, embedder):
    """Not frozen: a new chunk the caller may read moves its statistics (row count, document
    frequency, mean length), so every score it had changes."""
    retriever = Retriever(store, embedder, RetrieveSettings())
    store.indexer.index(items(VISIBLE))
    store.finish()
    first = {c: s["sparse"] for _, c, s in seen(retriever, "sparse")}
    store.indexer.index(items({"red-more": (RED, "Zircon again, and zircon once more, in a red report.")}))
    second = {c: s["sparse"] for _, c, s in seen(retriever, "sparse")}
    assert len(second) == len(first) + 1
    assert all(second[c] != first[c] for c in first)


def test_a_scope_of_every_row_scores_exactly_as_the_index(store):
    """The analyzer and formula are the index's: with nothing hidden, the scoped path returns the
    index's own ranking and scores (to float32 rounding). Texts with negations and contractions
    check the stop words the index drops (bm25.EXTRA_STOP)."""
    store.indexer.index(items({**VISIBLE, **{k: (("*",), body) for k, (_, body) in HIDDEN.items()}}))
    store.finish()
    scope = acl_clause(RED)  # every row is visible to RED now
    assert store.count(scope) == store.count()
    for q in (QUERY, "harvest", "don't cancel the festival, it isn't over", "zircon zircon terraces"):
        index = store.sparse_candidates(q, 100)  # every match: the two lists cut no tie differently
        scoped = store.sparse_candidates(q, 100, scope, scope=scope)
        assert {c.key: c.score for c in scoped} == pytest.approx({c.key: c.score for c in index}, rel=1e-5), q
        # the same ranking (equal scores, e.g. repeated text, may come in another order)
        assert [c.score for c in scoped] == pytest.approx([c.score for c in index], rel=1e-5), q


def test_a_filter_narrows_the_candidates_not_the_statistics(store, embedder):
    retriever = Retriever(store, embedder, RetrieveSettings())
    store.indexer.index(items({**VISIBLE, **HIDDEN}))
    store.finish()
    whole = {c: s["sparse"] for _, c, s in seen(retriever, "sparse")}
    narrow = seen(retriever, "sparse", filter='doc_id = "red-report"')
    assert narrow and {d for d, _, _ in narrow} == {"red-report"}
    assert all(s["sparse"] == whole[c] for _, c, s in narrow)


def test_top_k_is_the_head_of_the_full_ranking(store):
    store.indexer.index(items({**VISIBLE, **HIDDEN}))
    store.finish()
    scope = acl_clause(("group:blue",))
    for q in (QUERY, "zircon valley", "harvest"):
        full = store.sparse_candidates(q, 100, scope, scope=scope)
        assert len(full) > 3
        for k in (1, 2, 3):
            assert store.sparse_candidates(q, k, scope, scope=scope) == full[:k]


def test_no_visible_row_or_no_term_finds_nothing(store):
    store.indexer.index(items(HIDDEN))
    store.finish()
    assert store.sparse_candidates(QUERY, 10, acl_clause(RED), scope=acl_clause(RED)) == []
    blue = acl_clause(("group:blue",))
    assert store.sparse_candidates("the and of", 10, blue, scope=blue) == []


def test_a_deleted_document_leaves_no_word_in_memory(store):
    store.indexer.index(items({**VISIBLE, "blue-x": (("group:blue",), "A quetzalcoatlite ledger, kept apart.")}))
    store.finish()
    blue = acl_clause(("group:blue",))
    assert [c.doc_id for c in store.sparse_candidates("quetzalcoatlite", 5, blue, scope=blue)] == ["blue-x"]
    store.delete_purge(["blue-x"])
    assert store.sparse_candidates("quetzalcoatlite", 5, blue, scope=blue) == []
    assert not [t for t in store._analyses.term_ids if t.startswith("quetzalcoatl")]  # the term table's vocabulary
    assert [c.doc_id for c in store.sparse_candidates("harvest festival", 5, blue, scope=blue)] == ["public-memo"]


def test_query_terms_are_the_index_terms_with_repeats():
    # stemmed, stop words gone (with the index's own extra ones: "don't" -> don, t; "ZIRCON's" -> s)
    assert bm25.query_terms("Studies of studies: zircon, ZIRCON's yields don't fall") == \
        {"studi": 2, "zircon": 2, "yield": 1, "fall": 1}
