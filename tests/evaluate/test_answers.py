"""`ragline eval answers`: the loop in evaluate/answers.py on a small real index, its arithmetic on
hand-made records, and the command end to end on the demo corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import memory_document

from ragline.config import RetrieveSettings
from ragline.embed.cache import EmbeddingCache
from ragline.rag import RAG
from ragline.evaluate.answers import (ANSWER_METRICS, ItemRecord, evaluate_answers, matches, score_retrieval,
                                      summarise)
from ragline.evaluate.judge import AnswerJudgement, OfflineJudge
from ragline.evaluate.qa import QAItem
from ragline.generate.extractive import ExtractiveAnswerer
from ragline.ingest.chunkers import ChunkPlan
from ragline.ingest.indexer import Indexer
from ragline.retrieve.search import Retriever
from ragline.store.lance import LanceStore

ROOT = Path(__file__).resolve().parents[2]

DOCS = {
    "tea": ("Brewing tea",
            "Green tea is best brewed with water between 70 and 80 degrees Celsius for one to three minutes.\n\n"
            "Black tea takes fully boiling water, 95 to 100 degrees, for three to five minutes."),
    "volcano": ("Volcanoes",
                "A volcano is an opening in the crust through which magma escapes.\n\n"
                "Lava is magma that has reached the surface of the Earth."),
    "bread": ("Sourdough bread",
              "Sourdough bread rises thanks to wild yeast and lactic acid bacteria in the starter.\n\n"
              "Feed the starter with flour and water every day to keep it active."),
}


def make_item(doc_id: str, title: str, body: str):
    return memory_document(doc_id, title, body)


@pytest.fixture(scope="module")
def retriever(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("answers")
    store = LanceStore(root / "lance", embedder.dim)
    indexer = Indexer(store, embedder, EmbeddingCache(root / "embeddings.sqlite"), ChunkPlan(size=32))
    indexer.index([make_item(d, *v) for d, v in DOCS.items()])
    store.finish()
    return RAG(Retriever(store, embedder, RetrieveSettings()), ExtractiveAnswerer(embedder), store)


ITEMS = [
    QAItem("tea", "What water temperature is best for brewing green tea?", relevant_ids=("tea.txt",)),
    QAItem("lava", "What is lava?", relevant_ids=("volcano",)),  # by doc_id
    QAItem("bread", "What makes sourdough bread rise?", relevant_ids=("/corpus/bread.txt", "missing.txt")),
    QAItem("chess", "Who won the 1972 world chess championship?", answerable=False),
]


@pytest.fixture(scope="module")
def result(retriever, embedder):
    seen = []
    res = evaluate_answers(ITEMS, retriever, OfflineJudge(embedder), k=3,
                           progress=seen.append)
    assert seen == [1, 2, 3, 4]
    return res


def test_extractive_answers_are_faithful_and_unanswerable_ones_abstain(result, embedder):
    by_id = {r.id: r for r in result.items}
    for qid in ("tea", "lava", "bread"):
        r = by_id[qid]
        assert r.grounded and not r.judgement.abstained, r.answer
        assert r.judgement.faithfulness == 1.0 and not r.judgement.hallucinated, r.answer
        assert r.sources and all(s.startswith("/corpus/") for s in r.sources)
    assert "70 and 80 degrees" in by_id["tea"].answer
    chess = by_id["chess"]
    assert not chess.grounded and chess.judgement.abstained and chess.sources == ()
    m = result.metrics
    assert set(m) == set(ANSWER_METRICS)
    assert m["faithfulness"] == 1.0 and m["hallucination_rate"] == 0.0
    assert m["abstention_rate"] == 0.25
    assert m["correct_abstention_rate"] == 1.0 and m["wrong_abstention_rate"] == 0.0
    assert m["citation_accuracy"] == 1.0
    assert 0.0 < m["context_precision"] <= 1.0
    assert result.judge == OfflineJudge(embedder).label
    assert result.k == 3 and result.mode == "hybrid" and result.filter is None
    assert result.counts == {"items": 4, "answered": 3, "abstained": 1, "answerable": 3, "unanswerable": 1,
                             "with_relevant_ids": 3}
    assert result.latency_ms["p50"] > 0 and result.latency_ms["p95"] >= result.latency_ms["p50"]


def test_retrieval_metrics_match_ids_or_path_endings(result):
    by_id = {r.id: r for r in result.items}
    assert by_id["tea"].retrieval == {"recall@3": 1.0, "mrr@3": 1.0, "ndcg@3": 1.0}
    assert by_id["lava"].retrieval["recall@3"] == 1.0 and by_id["lava"].retrieval["mrr@3"] == 1.0
    assert by_id["bread"].retrieval["recall@3"] == 0.5  # one of its two relevant ids is in no document
    assert by_id["chess"].retrieval is None  # no relevant_ids: not scored, not in the mean
    assert result.retrieval["recall@3"] == pytest.approx((1.0 + 1.0 + 0.5) / 3)
    assert by_id["tea"].ranked_documents[0] == "/corpus/tea.txt"
    record = by_id["tea"].as_dict()
    json.dumps(record)
    assert {"id", "question", "answer", "grounded", "sources", "judgement"} <= set(record)
    assert {"faithfulness", "hallucinated", "citation_accuracy", "context_precision", "abstained",
            "statements", "judge"} <= set(record["judgement"])


def test_filter_and_mode_are_passed_to_the_retriever(retriever, embedder):
    res = evaluate_answers(ITEMS[:1], retriever, OfflineJudge(embedder), k=2,
                           mode="sparse", filter='type = "pdf"')
    assert res.mode == "sparse" and res.filter == 'type = "pdf"'
    only = res.items[0]
    assert only.ranked_documents == () and not only.grounded  # nothing passes the filter: abstains
    assert res.metrics["wrong_abstention_rate"] == 1.0 and res.metrics["faithfulness"] is None
    assert only.retrieval == {"recall@2": 0.0, "mrr@2": 0.0, "ndcg@2": 0.0}


def test_matches():
    assert matches("mars.html", "abc", "/home/u/corpus/mars.html")
    assert matches("corpus/mars.html", "abc", "/home/u/corpus/mars.html")
    assert not matches("mars.html", "abc", "/home/u/corpus/old-mars.html")
    assert matches("abc", "abc", "/x/y.txt")
    assert matches("mars.html", "abc", "C:\\docs\\mars.html")
    assert not matches("", "abc", "/x/y.txt")


def test_score_retrieval_counts_each_relevant_id_once():
    docs = [("a", "/c/x.txt"), ("b", "/c/mars.html"), ("c", "/d/mars.html")]
    s = score_retrieval(docs, ["mars.html"], 3)
    assert s["recall@3"] == 1.0 and s["mrr@3"] == 0.5
    assert s["ndcg@3"] == pytest.approx(1 / 1.584962500721156)


def _record(rid: str, answerable: bool, grounded: bool, faith: float = 1.0, cit: float | None = None) -> ItemRecord:
    j = AnswerJudgement("j", faith if grounded else 1.0, grounded and faith < 1.0, cit if grounded else None,
                        0.5 if grounded else None, not grounded, ())
    return ItemRecord(rid, "q", answerable, "a", grounded, "extractive", (), j, 10.0, ())


def test_summarise_arithmetic():
    recs = [_record("1", True, True, 1.0, 1.0), _record("2", True, True, 0.5, None),
            _record("3", True, False), _record("4", False, False), _record("5", False, True, 0.0, 0.0)]
    m = summarise(recs, "j", 5, "hybrid", None).metrics
    assert m["faithfulness"] == pytest.approx(0.5)  # over the 3 answered items; abstentions excluded
    assert m["hallucination_rate"] == pytest.approx(2 / 3)
    assert m["citation_accuracy"] == pytest.approx(0.5)  # defined for 2 answers
    assert m["context_precision"] == 0.5
    assert m["abstention_rate"] == pytest.approx(2 / 5)
    assert m["correct_abstention_rate"] == 0.5
    assert m["wrong_abstention_rate"] == pytest.approx(1 / 3)
    empty = summarise([_record("1", True, False)], "j", 5, "hybrid", None)
    assert empty.metrics["faithfulness"] is None and empty.metrics["correct_abstention_rate"] is None
    assert empty.retrieval is None


def test_cli_eval_answers_on_the_demo_corpus(cli, corpus, tmp_path):
    cli.run("ingest", str(corpus))
    qa = str(ROOT / "examples" / "qa.jsonl")
    out_file = tmp_path / "answers.json"
    data = cli.json("eval", "answers", qa, "--output", str(out_file))
    assert {"dataset", "judge", "settings", "counts", "answers", "retrieval", "latency_ms_p50",
            "latency_ms_p95"} <= set(data)
    assert data["judge"].startswith("offline-v1 (model ")
    assert data["settings"]["k"] == 5 and data["settings"]["generator"] == "extractive"
    assert data["counts"]["items"] == 10 and data["counts"]["unanswerable"] == 2
    assert set(data["answers"]) == set(ANSWER_METRICS)
    assert set(data["retrieval"]) == {"recall@5", "mrr@5", "ndcg@5"}
    for v in list(data["answers"].values()) + list(data["retrieval"].values()):
        assert v is not None and 0.0 <= v <= 1.0
    assert data["latency_ms_p99"] >= data["latency_ms_p95"] >= data["latency_ms_p50"] > 0
    saved = json.loads(out_file.read_text())
    assert saved["judge"] == data["judge"] and len(saved["items"]) == 10
    assert {"id", "question", "answer", "grounded", "sources", "judgement"} <= set(saved["items"][0])

    proc = cli.run("eval", "answers", str(tmp_path / "nope.jsonl"), check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "nope.jsonl" in proc.stderr


def test_cli_eval_answers_without_index_is_one_line(cli):
    proc = cli.run("eval", "answers", str(ROOT / "examples" / "qa.jsonl"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "ragline ingest" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
