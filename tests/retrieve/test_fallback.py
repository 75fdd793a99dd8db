"""Fallbacks when retrieval comes back weak (retrieve/fallback.py), on a real index and the bundled
model: weak results are built by a filter that matches the wrong documents and by questions about
nothing in the index."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.conftest import memory_document

from ragline.app import Engine
from ragline.config import load_settings
from ragline.generate.extractive import NOT_FOUND
from ragline.retrieve.fallback import FallbackPolicy
from ragline.trace import Trace

DOCS = {
    "tea": ("Green tea", "Green tea is best brewed with water between 70 and 80 degrees Celsius.", 2019),
    "lava": ("Volcanoes", "Lava is molten rock that erupts from a volcano and cools into basalt.", 2021),
    "mars": ("Mars", "Mars has two small moons, Phobos and Deimos, discovered in 1877.", 2021),
    "secret": ("Payroll", "The payroll server rotates its password every ninety days.", 2021),
}


def build(tmp_path_factory, embedder, **route):
    home = tmp_path_factory.mktemp("fallback-home")
    eng = Engine(load_settings({"route": route}, home=home), embedder=embedder)
    items = [memory_document(d, t, b, year=y) for d, (t, b, y) in DOCS.items()]
    items = [(doc, replace(rec, acl=("group:hr",)) if rec.doc_id == "secret" else rec) for doc, rec in items]
    eng.indexer().index(items)
    eng.store.finish()
    return eng


@pytest.fixture(scope="module")
def engine(tmp_path_factory, embedder):
    return build(tmp_path_factory, embedder, fallbacks=["drop-filter", "rewrite", "not-found"], weak_below=0.3)


def stages(trace: Trace, name: str) -> list[dict]:
    return [s.json()["detail"] for s in trace.stages if s.name == name]


def test_weakness_is_named():
    policy = FallbackPolicy(("not-found",), min_hits=2, weak_below=0.3)
    assert "fewer than 2" in policy.weakness([])
    assert policy.weakness([]) is not None


def test_a_filter_that_leaves_only_weak_hits_is_dropped_and_said(engine):
    rag = engine.rag()
    ask = rag.request("How many moons does Mars have?", k=2, filter="year = 2019")  # only the tea note
    trace = Trace()
    hits = rag.retrieve(ask, trace)
    assert hits and hits[0].chunk.doc_id == "mars"
    step = stages(trace, "fallback")[0]
    assert step["step"] == "drop-filter" and step["dropped_filter"] == "year = 2019" and step["used"] is True
    assert "under 0.3" in step["reason"]


def test_dropping_a_filter_never_drops_the_acl(engine):
    rag = engine.rag()
    ask = rag.request("When does the payroll password rotate?", k=3, filter="year = 2019",
                      principals=("user:bob",))
    trace = Trace()
    hits = rag.retrieve(ask, trace)
    assert "secret" not in {h.chunk.doc_id for h in hits}
    assert stages(trace, "fallback")  # the weak first result did trigger the steps


def test_nothing_relevant_ends_in_an_honest_not_found(engine):
    rag = engine.rag()
    ask = rag.request("What is the torque spec of a 1967 Ford Mustang cylinder head bolt?", k=3)
    trace = Trace()
    hits = rag.retrieve(ask, trace)
    assert hits == []
    steps = [s["step"] for s in stages(trace, "fallback")]
    assert steps[-1] == "not-found" and "rewrite" in steps
    answer = rag.answer(ask, hits)
    assert answer.text == NOT_FOUND and not answer.grounded and not answer.citations


def test_strong_results_take_no_fallback(engine):
    rag = engine.rag()
    trace = Trace()
    hits = rag.retrieve(rag.request("What temperature for brewing green tea?", k=2), trace)
    assert hits[0].chunk.doc_id == "tea" and not stages(trace, "fallback")


def test_without_steps_weak_results_are_returned_as_they_are(tmp_path_factory, embedder):
    eng = build(tmp_path_factory, embedder)
    rag = eng.rag()
    trace = Trace()
    hits = rag.retrieve(rag.request("What is the torque spec of a cylinder head bolt?", k=2), trace)
    assert len(hits) == 2 and not stages(trace, "fallback")
