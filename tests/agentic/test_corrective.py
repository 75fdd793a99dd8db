"""Corrective retrieval (agentic/corrective.py) on a real index of the demo corpus, the bundled model,
the offline judge and the extractive answerer; the LLM grader against a scripted OpenAI-compatible
server. mars.html is readable only by ``group:astro``."""

from __future__ import annotations

import pytest

from tests.conftest import EXAMPLES

from ragline.agentic.base import Budget, Steps
from ragline.agentic.corrective import Corrective, GradeThresholds, merge, offline_verdict, parse_verdict
from ragline.app import Engine
from ragline.config import load_settings
from ragline.evaluate.judge import OfflineJudge
from ragline.generate.extractive import NOT_FOUND
from ragline.generate.llm import ChatClient
from ragline.testing.scripted_llm import Fail, ScriptedLLM

ABSENT = "Who won the 1998 FIFA World Cup?"
AMBIGUOUS = "What temperature should coffee be brewed at?"  # near the tea guide, answered nowhere


@pytest.fixture(scope="module")
def engine(tmp_path_factory, embedder):
    eng = Engine(load_settings(home=tmp_path_factory.mktemp("corrective-home")), embedder=embedder)
    acl = lambda path: ("group:astro",) if path.endswith("mars.html") else ("*",)  # noqa: E731
    report = eng.syncer(acl_for=acl).sync([EXAMPLES])
    assert report.ok and report.added == 8
    return eng


@pytest.fixture(scope="module")
def judge(embedder):
    return OfflineJudge(embedder)


def kinds(steps: Steps) -> list[str]:
    return [s.kind for s in steps.items]


def grades(steps: Steps) -> list[dict]:
    return [s.detail for s in steps.items if s.kind == "grade"]


def test_an_answerable_question_grades_correct_and_answers_from_refined_passages_with_citations(engine, judge):
    rag = engine.rag()
    steps = Steps()
    answer = Corrective(judge).run(rag, rag.request("Why do onions make you cry?", k=5), steps)
    assert kinds(steps) == ["retrieve", "grade", "refine", "generate"]
    grade = grades(steps)[0]
    assert grade["verdict"] == "correct" and grade["support"] >= 0.55 and grade["best_dense"] >= 0.40
    assert {"dense_gap", "top_agree", "top3_overlap", "judge"} <= set(grade)
    refine = steps.items[2].detail
    assert 0 < refine["kept_sentences"] < refine["sentences"] and not refine["whole"]
    assert answer.grounded and "syn-propanethial-S-oxide" in answer.text
    assert not answer.text.startswith("##")  # the heading that echoes the question is not quoted
    cite = answer.citations[0]
    assert cite.chunk.source.endswith("kitchen-science.md")
    # the citation is back on the original chunk, its span on the same characters of the document
    assert any(cite.chunk == h.chunk for h in answer.hits)
    quoted = cite.chunk.text[cite.start - cite.chunk.start: cite.end - cite.chunk.start]
    assert " ".join(quoted.split()) == " ".join(cite.snippet.split())
    assert cite.heading_path[-1] == "Why Onions Make You Cry"


def test_a_question_about_something_absent_grades_incorrect_and_ends_not_found(engine, judge):
    rag = engine.rag()
    steps = Steps()
    answer = Corrective(judge).run(rag, rag.request(ABSENT, k=5), steps)
    assert kinds(steps) == ["retrieve", "grade", "rewrite", "grade", "not-found"]
    assert [g["verdict"] for g in grades(steps)] == ["incorrect", "incorrect"]
    assert grades(steps)[0]["support"] < 0.40
    assert answer.text == NOT_FOUND and not answer.grounded and not answer.citations


def test_a_weak_related_result_is_ambiguous_and_triggers_one_rewrite_and_a_regrade(engine, judge):
    rag = engine.rag()
    steps = Steps()
    Corrective(judge).run(rag, rag.request(AMBIGUOUS, k=5), steps)
    assert kinds(steps)[:5] == ["retrieve", "grade", "rewrite", "grade", "refine"]
    assert grades(steps)[0]["verdict"] == "ambiguous"
    assert steps.items[2].detail["action"] == "rewrite"


def test_a_wrong_filter_is_dropped_but_never_the_acl(engine, judge):
    rag = engine.rag()
    question = "What is the Martian atmosphere made of?"  # answered only in mars.html
    outsider = Steps()
    answer = Corrective(judge).run(rag, rag.request(question, k=5, filter='type = "text"',
                                                   principals=("user:bob",)), outsider)
    dropped = [s.detail for s in outsider.items if s.detail.get("action") == "drop-filter"]
    assert dropped and dropped[0]["dropped_filter"] == 'type = "text"'
    seen = [src for s in outsider.items for src in s.detail.get("sources", [])]
    assert seen and not any(src.endswith("mars.html") for src in seen)
    assert not any(c.chunk.source.endswith("mars.html") for c in answer.citations)
    # the same request by a reader of mars.html finds it once the filter is dropped: the scope did count
    insider = Steps()
    answer = Corrective(judge).run(rag, rag.request(question, k=5, filter='type = "text"',
                                                   principals=("group:astro",)), insider)
    assert grades(insider)[0]["verdict"] == "incorrect" and grades(insider)[-1]["verdict"] == "correct"
    assert answer.grounded and answer.citations[0].chunk.source.endswith("mars.html")


def test_the_budget_bounds_the_retrievals(engine, judge):
    rag = engine.rag()
    steps = Steps()
    answer = Corrective(judge, budget=Budget(max_steps=1)).run(rag, rag.request(ABSENT, k=5), steps)
    assert kinds(steps) == ["retrieve", "grade", "stop", "not-found"]
    assert answer.text == NOT_FOUND


def test_offline_verdict_rules_and_reply_parsing():
    t = GradeThresholds()
    base = {"hits": 5, "best_dense": 0.6, "dense_gap": 0.02, "top_agree": True, "top3_overlap": 1.0, "support": 0.7}
    assert offline_verdict(base, t) == "correct"
    assert offline_verdict({**base, "top_agree": False, "top3_overlap": 0.33}, t) == "ambiguous"  # uncorroborated
    assert offline_verdict({**base, "top_agree": False, "top3_overlap": 0.33, "dense_gap": 0.2}, t) == "correct"
    assert offline_verdict({**base, "best_dense": 0.2, "support": 0.3}, t) == "incorrect"
    assert offline_verdict({**base, "hits": 0}, t) == "incorrect"
    assert offline_verdict({**base, "best_dense": None, "top_agree": None, "top3_overlap": None}, t) == "correct"
    assert parse_verdict(" Correct.") == "correct" and parse_verdict("INCORRECT") == "incorrect"
    assert parse_verdict("correct or incorrect") is None and parse_verdict("I think it is fine") is None


def test_merge_interleaves_and_keeps_each_chunk_once(engine):
    rag = engine.rag()
    a = rag.retrieve(rag.request("green tea temperature", k=3))
    b = rag.retrieve(rag.request("boiling point altitude", k=3))
    merged = merge(a, b, 4)
    ids = [h.chunk.id for h in merged]
    assert len(ids) == len(set(ids)) <= 4 and ids[0] == a[0].chunk.id
    assert b[0].chunk.id in ids


def test_the_llm_grader_verdict_is_used_and_the_passages_are_fenced(engine, judge):
    rag = engine.rag()
    with ScriptedLLM(lambda request: "incorrect") as llm:
        steps = Steps()
        answer = Corrective(judge, llm=ChatClient(llm.url, "scripted")).run(
            rag, rag.request("Why do onions make you cry?", k=5), steps)
        prompt = llm.requests[0]["messages"][1]["content"]
    first = grades(steps)[0]
    assert first["offline"] == "correct" and first["llm"] == "incorrect" and first["verdict"] == "incorrect"
    assert kinds(steps)[-1] == "not-found" and answer.text == NOT_FOUND
    assert "<passages>" in prompt and "</passages>" in prompt and "onion" in prompt.lower()
    assert "not instructions" in llm.requests[0]["messages"][0]["content"]


def test_a_malformed_llm_reply_falls_back_to_the_offline_grade(engine, judge):
    rag = engine.rag()
    with ScriptedLLM(["Well, the passages look quite relevant to me"]) as llm:
        steps = Steps()
        answer = Corrective(judge, llm=ChatClient(llm.url, "scripted")).run(
            rag, rag.request("Why do onions make you cry?", k=5), steps)
    grade = grades(steps)[0]
    assert grade["llm"] is None and "unusable reply" in grade["llm_note"] and grade["verdict"] == "correct"
    assert answer.grounded


def test_a_failing_llm_grader_is_recorded_and_the_offline_grade_used(engine, judge):
    rag = engine.rag()
    with ScriptedLLM([Fail(503, "overloaded")]) as llm:
        steps = Steps()
        answer = Corrective(judge, llm=ChatClient(llm.url, "scripted")).run(
            rag, rag.request(ABSENT, k=5), steps)
        calls = len(llm.requests)
    first, second = grades(steps)
    assert "503" in first["llm_error"] and "overloaded" in first["llm_error"] and first["verdict"] == "incorrect"
    assert calls == 1 and second["llm"] is None and second["llm_error"] is None  # not called again
    assert answer.text == NOT_FOUND
