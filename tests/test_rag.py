"""The one RAG flow (ragline/rag.py) and the composition root that builds it (ragline/app.py)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import pytest

from tests.conftest import memory_document

from ragline.app import Engine
from ragline.config import load_settings
from ragline.filters import FilterError
from ragline.rag import RAG
from ragline.retrieve.search import QueryError
from ragline.types import Answer

DOCS = {
    "tea": ("Green tea", "Green tea is best brewed with water between 70 and 80 degrees Celsius."),
    "lava": ("Volcanoes", "Lava is molten rock that erupts from a volcano and cools into basalt."),
    "secret": ("Payroll", "The payroll server rotates its password every ninety days."),
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory, embedder):
    home = tmp_path_factory.mktemp("rag-home")
    eng = Engine(load_settings(home=home), embedder=embedder)
    items = [memory_document(d, *v) for d, v in DOCS.items()]
    items = [(doc, replace(rec, acl=("group:hr",)) if rec.doc_id == "secret" else rec) for doc, rec in items]
    eng.indexer().index(items)
    eng.store.finish()
    return eng


def test_the_engine_hands_in_parts_and_builds_the_rest_once(engine, embedder):
    assert engine.embedder is embedder  # handed in, not rebuilt
    assert engine.store is engine.store and engine.retriever is engine.retriever
    assert engine.retriever.store is engine.store
    rag = engine.rag()
    assert isinstance(rag, RAG) and rag.retriever is engine.retriever and rag.store is engine.store
    assert rag.answerer.name == "extractive"  # no LLM configured


@pytest.mark.parametrize("options, message", [
    ({"mode": "fuzzy"}, "mode must be hybrid, dense or sparse, not 'fuzzy'"),
    ({"k": 0}, "k must be a whole number of at least 1"),
])
def test_every_option_is_checked_before_anything_runs(engine, options, message):
    with pytest.raises(QueryError, match=message):
        engine.rag().request("anything", **options)


def test_a_bad_filter_is_refused_at_the_request(engine):
    with pytest.raises(FilterError, match="unknown field 'yeer'"):
        engine.rag().request("anything", filter="yeer > 2020")


def test_answer_retrieves_answers_and_cites(engine):
    rag = engine.rag()
    answer = rag.answer(rag.request("What temperature should green tea be brewed at?", k=2))
    assert answer.grounded and "70 and 80 degrees" in answer.text
    assert answer.citations and answer.citations[0].chunk.doc_id == "tea"


def test_stream_yields_the_text_then_the_same_cited_answer(engine):
    rag = engine.rag()
    ask = rag.request("What is lava?", k=2)
    items = list(rag.stream(ask))
    *pieces, last = items
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert isinstance(last, Answer) and "".join(pieces) == last.text
    assert last == rag.answer(ask)


def test_principals_restrict_what_the_flow_can_read(engine):
    rag = engine.rag()
    question = "How often does the payroll server rotate its password?"
    outsider = rag.retrieve(rag.request(question, k=3, principals=("user:bob",)))
    assert "secret" not in {h.chunk.doc_id for h in outsider}
    insider = rag.retrieve(rag.request(question, k=3, principals=("group:hr",)))
    assert insider[0].chunk.doc_id == "secret"


def test_every_store_read_runs_under_the_reading_guard(engine):
    entered = []

    @contextmanager
    def reading():
        entered.append(1)
        yield

    rag = engine.rag(reading=reading)
    ask = rag.request("What is lava?", k=1)
    rag.answer(ask)
    assert len(entered) == 2  # one retrieval, one citation lookup
