"""`ragline eval beir DIR` on a tiny BEIR folder written here, through the real CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import ragline

pytestmark = pytest.mark.slow

CORPUS = [
    ("d1", "Green tea", "Green tea is brewed with water at about 80 degrees Celsius for two minutes."),
    ("d2", "Volcanoes", "A volcano erupts when magma rises through the crust and lava flows out."),
    ("d3", "Photosynthesis", "Plants use chlorophyll to turn sunlight, water and carbon dioxide into sugar."),
    ("d4", "Offside rule", "In football a player is offside when nearer the goal line than the last defender."),
    ("d5", "Sourdough", "Sourdough bread rises with wild yeast kept alive in a flour and water starter."),
    ("d6", "Python lists", "A Python list is a mutable sequence; append adds an item at the end."),
    ("d7", "Jupiter", "Jupiter is the largest planet in the solar system and has a great red spot."),
    ("d8", "Honey bees", "Honey bees dance to tell other bees where flowers with nectar are found."),
]
QUERIES = [
    ("q1", "How do volcanoes erupt magma and lava?"),
    ("q2", "What is the largest planet in the solar system, Jupiter?"),
    ("q3", "How do honey bees tell each other where the flowers are?"),
    ("q4", "A query without judgements is ignored"),
]
QRELS = [("q1", "d2", 1), ("q2", "d7", 1), ("q3", "d8", 2)]
METRICS = ("ndcg@10", "recall@10", "recall@100", "precision@10", "hit_rate@10", "mrr@10", "map@100")


def write_beir(root: Path, *, qrels: bool = True, queries_text: str | None = None) -> Path:
    root.mkdir(parents=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for doc_id, title, text in CORPUS:
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        if queries_text is not None:
            f.write(queries_text)
        else:
            for qid, text in QUERIES:
                f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    if qrels:
        (root / "qrels").mkdir()
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, d, g in QRELS]
        (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_eval_beir_reports_every_mode(cli, tmp_path):
    data = cli.json("eval", "beir", str(write_beir(tmp_path / "tiny")))
    assert data["documents"] == len(CORPUS)
    assert data["queries"] == len(QRELS)  # q4 has no judgements
    assert data["ingest"]["documents"] == len(CORPUS) and data["ingest"]["chunks"] >= len(CORPUS)
    assert set(data["modes"]) == {"dense", "sparse", "hybrid"}
    for mode, m in data["modes"].items():
        for name in METRICS:
            assert 0.0 <= m[name] <= 1.0, (mode, name, m[name])
        assert m["ndcg@10"] > 0.5, (mode, m)
        assert m["recall@100"] >= m["recall@10"]
        for name in ("latency_ms_p50", "latency_ms_p95"):
            assert isinstance(m[name], (int, float)) and m[name] >= 0
        assert m["latency_ms_p99"] >= m["latency_ms_p95"] >= m["latency_ms_p50"]


def test_eval_beir_modes_option_and_output_file(cli, tmp_path):
    out = tmp_path / "result.json"
    data = cli.json("eval", "beir", str(write_beir(tmp_path / "tiny")), "--modes", "sparse",
                    "--max-queries", "2", "--output", str(out))
    assert set(data["modes"]) == {"sparse"}
    assert data["queries"] == 2
    written = json.loads(out.read_text())
    assert "per_query" not in data  # stdout stays small without --per-query
    assert {k: v for k, v in written.items() if k != "per_query"} == data
    assert set(written["per_query"]) == {"sparse"}
    assert set(written["per_query"]["sparse"]) == {"q1", "q2"}
    for values in written["per_query"]["sparse"].values():
        assert set(values) == set(METRICS)
    assert written["dataset_fingerprint"] == data["dataset_fingerprint"] and len(data["dataset_fingerprint"]) == 16
    assert written["ragline_version"] == ragline.__version__ and written["max_docs"] is None


def test_per_query_values_average_to_the_reported_means(cli, tmp_path):
    data = cli.json("eval", "beir", str(write_beir(tmp_path / "tiny")), "--modes", "dense,sparse", "--per-query")
    assert set(data["per_query"]) == {"dense", "sparse"}
    for mode, queries in data["per_query"].items():
        assert set(queries) == {q for q, _, _ in QRELS}
        for name in METRICS:
            mean = sum(v[name] for v in queries.values()) / len(queries)
            assert data["modes"][mode][name] == pytest.approx(mean, abs=1e-4), (mode, name)
        for v in queries.values():  # one relevant document per query: hit rate and recall@10 agree
            assert v["hit_rate@10"] == v["recall@10"]
            assert v["precision@10"] == pytest.approx(v["hit_rate@10"] / 10)


def test_max_docs_keeps_judged_documents_and_the_first_others(cli, tmp_path):
    root = write_beir(tmp_path / "tiny")
    data = cli.json("eval", "beir", str(root), "--modes", "sparse", "--max-queries", "2", "--max-docs", "1")
    # q1 judges d2, q2 judges d7; plus the first unjudged document in corpus order, d1
    assert data["documents"] == 3 and data["ingest"]["documents"] == 3
    assert data["corpus_documents"] == len(CORPUS) and data["max_docs"] == 1
    assert data["modes"]["sparse"]["recall@10"] == 1.0
    # the fingerprint is of the files, not of the slice: sha256 of their concatenated bytes
    raw = b"".join((root / name).read_bytes() for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"))
    assert data["dataset_fingerprint"] == hashlib.sha256(raw).hexdigest()[:16]


def test_slice_corpus_is_deterministic_and_in_corpus_order(tmp_path):
    from ragline.evaluate.beir import load_beir, slice_corpus

    ds = load_beir(write_beir(tmp_path / "tiny"))
    ds.queries = {"q3": ds.queries["q3"]}  # judges d8, the last document
    sliced = slice_corpus(ds, 2)
    assert [row["_id"] for row in sliced.corpus()] == ["d1", "d2", "d8"]
    assert sliced.n_docs == 3 and set(sliced.queries) == {"q3"}
    assert [row["_id"] for row in slice_corpus(ds, 0).corpus()] == ["d8"]
    assert sum(1 for _ in slice_corpus(ds, 100).corpus()) == len(CORPUS)


def test_missing_qrels_is_a_one_line_error(cli, tmp_path):
    root = write_beir(tmp_path / "noqrels", qrels=False)
    proc = cli.run("eval", "beir", str(root), "--json", check=False)
    assert_one_line_error(proc, str(root / "qrels" / "test.tsv"), "missing")
    assert proc.stdout.strip() == ""


def test_unknown_mode_is_a_one_line_error(cli, tmp_path):
    proc = cli.run("eval", "beir", str(write_beir(tmp_path / "tiny")), "--modes", "dense,fuzzy", check=False)
    assert_one_line_error(proc, "fuzzy")


def test_error_message_keeps_square_brackets_in_paths(cli, tmp_path):
    root = write_beir(tmp_path / "data[v2]", qrels=False)
    proc = cli.run("eval", "beir", str(root), check=False)
    assert_one_line_error(proc, str(root / "qrels" / "test.tsv"))


def test_malformed_queries_file_is_a_one_line_error(cli, tmp_path):
    good = json.dumps({"_id": "q1", "text": QUERIES[0][1]})
    root = write_beir(tmp_path / "badq", queries_text=good + "\n{not json\n")
    proc = cli.run("eval", "beir", str(root), check=False)
    assert_one_line_error(proc, "queries.jsonl:2")
