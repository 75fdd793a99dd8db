"""Answer strategies through the one flow: the standard strategy, the self-checked answer (its
sentences judged against the passages, unsupported ones regenerated then dropped and named), the
strategy chosen per request on the command line, and the errors when one cannot run."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.conftest import memory_document

from ragline.agentic.base import STRATEGIES, Standard, Steps, StrategyError
from ragline.app import Engine
from ragline.config import load_settings
from ragline.testing.scripted_llm import ScriptedLLM

DOCS = {
    "tea": ("Green tea", "Green tea is best brewed with water between 70 and 80 degrees Celsius. "
                         "Boiling water makes green tea taste bitter."),
    "lava": ("Volcanoes", "Lava is molten rock that erupts from a volcano and cools into basalt."),
}


@pytest.fixture(scope="module")
def home(tmp_path_factory, embedder):
    home = tmp_path_factory.mktemp("strategy-home")
    eng = Engine(load_settings(home=home), embedder=embedder)
    eng.indexer().index([memory_document(d, *v) for d, v in DOCS.items()])
    eng.store.finish()
    return home


def engine_for(home, embedder, **overrides) -> Engine:
    return Engine(load_settings(overrides, home=home), embedder=embedder)


def test_standard_retrieves_once_and_answers(home, embedder):
    eng = engine_for(home, embedder)
    rag = eng.rag()
    steps = Steps()
    answer = eng.strategy().run(rag, rag.request("At what temperature should green tea be brewed?"), steps)
    assert isinstance(eng.strategy(), Standard) and answer.grounded and answer.citations
    assert [s.kind for s in steps.items] == ["retrieve", "generate"]


def test_self_check_keeps_a_supported_extractive_answer_and_records_the_check(home, embedder):
    eng = engine_for(home, embedder)
    rag = eng.rag()
    seen = []
    steps = Steps(on_step=seen.append)
    answer = eng.strategy("self-check").run(rag, rag.request("At what temperature should green tea be brewed?"), steps)
    assert answer.grounded and "70 and 80" in answer.text
    assert [s.kind for s in steps.items] == ["retrieve", "generate", "check"] and seen == steps.items
    check = steps.items[-1].detail
    assert check["statements"] >= 1 and check["supported"] == check["statements"]


def test_self_check_regenerates_then_drops_the_unsupported_sentence_and_says_so(home, embedder):
    supported = "Green tea is best brewed with water between 70 and 80 degrees Celsius [1]."
    invented = "The first green tea was brewed on the Moon by astronauts in 1803 [1]."
    with ScriptedLLM([f"{supported} {invented}", f"{supported} {invented}"]) as llm:
        eng = engine_for(home, embedder, llm={"base_url": llm.url, "model": "scripted"})
        rag = eng.rag()
        steps = Steps()
        answer = eng.strategy("self-check").run(rag, rag.request("How hot should the water for green tea be?"), steps)
    kinds = [s.kind for s in steps.items]
    assert kinds == ["retrieve", "generate", "check", "generate", "check", "drop"], kinds
    assert len(llm.requests) == 2  # one regeneration, within the budget
    assert "70 and 80" in answer.text and "Moon" not in answer.text and answer.grounded
    dropped = steps.items[-1].detail["sentences"]
    assert len(dropped) == 1 and "Moon" in dropped[0]
    assert [c.n for c in answer.citations] == [1]


def test_self_check_answers_not_found_when_nothing_is_supported(home, embedder):
    with ScriptedLLM(["Volcanoes are made of chocolate [1].", "Volcanoes are made of chocolate [1]."]) as llm:
        eng = engine_for(home, embedder, llm={"base_url": llm.url, "model": "scripted"})
        rag = eng.rag()
        steps = Steps()
        answer = eng.strategy("self-check").run(rag, rag.request("What is lava?"), steps)
    assert not answer.grounded and steps.items[-1].kind == "not-found"


def test_unknown_strategy_and_agent_without_llm_are_clear_errors(home, embedder):
    eng = engine_for(home, embedder)
    with pytest.raises(StrategyError, match="strategy must be one of standard, corrective, self-check, agent"):
        eng.strategy("guess")
    with pytest.raises(StrategyError, match="llm.base_url"):
        eng.strategy("agent")
    assert STRATEGIES == ("standard", "corrective", "self-check", "agent")


def test_the_command_line_takes_a_strategy_and_shows_its_steps(cli, corpus):
    cli.run("ingest", str(corpus))
    out = cli.json("ask", "Why does a kettle take longer to boil water at high altitude?", "--strategy", "self-check")
    assert out["strategy"] == "self-check" and out["grounded"] and out["citations"]
    assert [s["kind"] for s in out["steps"]][:3] == ["retrieve", "generate", "check"]
    traced = cli.run("ask", "Why does a kettle take longer to boil water at high altitude?", "--strategy",
                     "self-check", "--trace")
    assert "check" in traced.stderr and "Sources" in traced.stdout
    bad = cli.run("ask", "anything", "--strategy", "agent", check=False)
    assert bad.returncode == 2 and "llm.base_url" in bad.stderr and "Traceback" not in bad.stderr
