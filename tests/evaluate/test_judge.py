"""The offline answer judge with the real bundled model, and the QA dataset format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragline.evaluate.beir import DatasetError
from ragline.evaluate.calibrate import balanced_accuracy, calibrate, load_labelled
from ragline.evaluate.judge import DEFAULT_SUPPORT_THRESHOLD, JudgeThresholds, OfflineJudge, split_statements
from ragline.evaluate.qa import QAItem, load_qa
from ragline.generate.extractive import NOT_FOUND
from ragline.types import Answer, Chunk, Citation

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "judge_calibration.jsonl"
TEA = "Green tea is brewed with water at about 80 degrees Celsius. Steeping it longer than three minutes makes it bitter."
LAVA = "A volcano erupts when magma rises through the crust. The lava that flows out cools into basalt rock."


def chunk(cid: str, text: str) -> Chunk:
    return Chunk(id=cid, doc_id=cid, source=f"{cid}.md", text=text, start=0, end=len(text), ordinal=0)


@pytest.fixture(scope="module")
def judge(embedder) -> OfflineJudge:
    return OfflineJudge(embedder)


def test_statements_strip_citation_marks(judge):
    text = "Tea is brewed at 80 degrees [1]. Lava cools into basalt. [2] Both facts are known [1, 2]."
    assert judge.statements(text) == ["Tea is brewed at 80 degrees.", "Lava cools into basalt.", "Both facts are known."]
    assert [c for _, c in split_statements(text)] == [(1,), (2,), (1, 2)]
    assert judge.statements("[3]") == []


def test_supported_statements_outscore_unsupported(judge):
    quote = judge.support("Green tea is brewed with water at about 80 degrees Celsius.", [LAVA, TEA])
    paraphrase = judge.support("Steeping green tea for over three minutes makes it bitter.", [TEA])
    wrong_number = judge.support("Green tea is brewed with water at about 40 degrees Celsius.", [TEA])
    unrelated = judge.support("The Eiffel Tower is in Paris.", [TEA, LAVA])
    assert quote.best_passage_index == 1 and quote.best_sentence.startswith("Green tea is brewed")
    assert quote.score > paraphrase.score > max(wrong_number.score, unrelated.score)
    assert paraphrase.score >= DEFAULT_SUPPORT_THRESHOLD > max(wrong_number.score, unrelated.score)
    assert judge.support("Anything at all.", []).best_sentence is None


def test_faithfulness_hallucination_and_citations(judge):
    tea, lava = chunk("tea", TEA), chunk("lava", LAVA)
    good = Answer("Green tea is brewed at about 80 degrees Celsius [1]. Lava cools into basalt rock [2].",
                  (Citation(1, tea, TEA), Citation(2, lava, LAVA)), grounded=True, generator="llm")
    result = judge.judge(good, [TEA, LAVA])
    assert result.faithfulness == 1.0 and not result.hallucinated and not result.abstained
    assert result.citation_accuracy == 1.0 and result.context_precision == 1.0
    assert result.judge.startswith("offline-v1") and f"{DEFAULT_SUPPORT_THRESHOLD:.3f}" in result.judge

    # same statements, citations swapped: each points at a chunk that does not support it
    swapped = Answer(good.text, (Citation(1, lava, LAVA), Citation(2, tea, TEA)), grounded=True, generator="llm")
    assert judge.judge(swapped, [TEA, LAVA]).citation_accuracy == 0.0

    # one invented statement, cited to nothing; only the tea passage is useful
    mixed = Answer("Green tea is brewed at about 80 degrees Celsius [1]. The Moon is made of cheese.",
                   (Citation(1, tea, TEA),), grounded=True, generator="llm")
    result = judge.judge(mixed, [TEA, LAVA])
    assert result.faithfulness == 0.5 and result.hallucinated
    assert result.citation_accuracy == 1.0  # only the cited statement counts
    assert result.context_precision == 0.5
    assert [s.supported for s in result.statements] == [True, False]
    assert result.statements[1].cited == () and result.statements[1].citation_supported is None


def test_extractive_citations_use_the_snippet(judge):
    tea = chunk("tea", TEA)
    # the chunk holds the sentence, but the snippet the extractive answerer cited is the other one
    answer = Answer("Green tea is brewed with water at about 80 degrees Celsius. [1]",
                    (Citation(1, tea, "Steeping it longer than three minutes makes it bitter."),),
                    grounded=True, generator="extractive")
    assert judge.judge(answer, [TEA]).citation_accuracy == 0.0
    llm = Answer(answer.text, answer.citations, grounded=True, generator="llm")
    assert judge.judge(llm, [TEA]).citation_accuracy == 1.0


def test_abstained_answer(judge):
    result = judge.judge(Answer(NOT_FOUND, (), grounded=False, generator="extractive"), [TEA])
    assert result.abstained and result.faithfulness == 1.0 and not result.hallucinated
    assert result.statements == () and result.citation_accuracy is None


def test_threshold_changes_verdicts(embedder):
    answer = Answer("If you steep green tea for more than three minutes it becomes bitter.", (), True, "llm")
    loose = OfflineJudge(embedder, JudgeThresholds(support=0.1)).judge(answer, [TEA])
    strict = OfflineJudge(embedder, JudgeThresholds(support=1.01)).judge(answer, [TEA])
    assert loose.faithfulness == 1.0 and strict.faithfulness == 0.0 and strict.hallucinated


def test_balanced_accuracy():
    assert balanced_accuracy([0.9, 0.8, 0.2, 0.7], [True, True, False, False], 0.75) == (1.0, 2, 2)
    assert balanced_accuracy([0.9, 0.8, 0.2, 0.7], [True, True, False, False], 0.5) == (0.75, 2, 1)


def test_calibration_on_fixture(judge):
    labelled = load_labelled(FIXTURE)
    assert len(labelled) >= 40
    cal = calibrate(judge, labelled)
    assert cal.n == len(labelled) and cal.n_supported + cal.n_unsupported == cal.n
    assert cal.balanced_accuracy >= 0.8
    assert cal.balanced_accuracy == pytest.approx(
        (cal.true_positives / cal.n_supported + cal.true_negatives / cal.n_unsupported) / 2)
    # the recorded default sits on the same plateau as the calibrated threshold
    scores = [judge.support(s, p).score for s, p, _ in labelled]
    labels = [y for _, _, y in labelled]
    assert balanced_accuracy(scores, labels, DEFAULT_SUPPORT_THRESHOLD)[0] == cal.balanced_accuracy
    assert calibrate(judge, labelled) == cal


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_qa_happy_path(tmp_path):
    path = write(tmp_path,
                 json.dumps({"id": "q1", "question": "How hot?", "answer": "80 C", "relevant_ids": ["d1"],
                             "contexts": [TEA], "answerable": True}),
                 "",
                 json.dumps({"id": "q2", "question": "Who won?", "answerable": False, "extra": 1}))
    items = load_qa(path)
    assert items == [QAItem("q1", "How hot?", "80 C", ("d1",), (TEA,), True),
                     QAItem("q2", "Who won?", None, (), (), False)]


@pytest.mark.parametrize("line, message", [
    ("{not json", "invalid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"question": "q"}', "missing required field 'id'"),
    ('{"id": "q1"}', "missing required field 'question'"),
    ('{"id": 3, "question": "q"}', "'id' must be a non-empty string"),
    ('{"id": "q1", "question": ""}', "'question' must be a non-empty string"),
    ('{"id": "q1", "question": "q", "answer": 5}', "'answer' must be a string"),
    ('{"id": "q1", "question": "q", "relevant_ids": "d1"}', "'relevant_ids' must be a list of strings"),
    ('{"id": "q1", "question": "q", "contexts": [1]}', "'contexts' must be a list of strings"),
    ('{"id": "q1", "question": "q", "answerable": "yes"}', "'answerable' must be true or false"),
])
def test_load_qa_errors_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path, '{"id": "ok", "question": "fine"}', line)
    with pytest.raises(DatasetError, match=message) as exc:
        load_qa(path)
    assert f"{path}:2:" in str(exc.value)


def test_load_qa_duplicate_ids_and_missing_file(tmp_path):
    path = write(tmp_path, '{"id": "q1", "question": "a"}', '{"id": "q2", "question": "b"}',
                 '{"id": "q1", "question": "c"}')
    with pytest.raises(DatasetError, match=r"qa.jsonl:3: duplicate id 'q1' \(first on line 1\)"):
        load_qa(path)
    with pytest.raises(DatasetError, match="cannot read"):
        load_qa(tmp_path / "absent.jsonl")


def test_a_citation_mark_ends_a_statement():
    text = "planet: Mars; known_moons: 2 [1] Mars: A Field Guide [2] Phobos is the larger moon [1]."
    parts = split_statements(text)
    assert [s for s, _ in parts] == ["planet: Mars; known_moons: 2", "Mars: A Field Guide", "Phobos is the larger moon."]
    assert [c for _, c in parts] == [(1,), (2,), (1,)]
