"""`ragline eval beir DIR` on a tiny BEIR folder written here, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100")


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
        assert m["latency_ms_p95"] >= m["latency_ms_p50"]


def test_eval_beir_modes_option_and_output_file(cli, tmp_path):
    out = tmp_path / "result.json"
    data = cli.json("eval", "beir", str(write_beir(tmp_path / "tiny")), "--modes", "sparse",
                    "--max-queries", "2", "--output", str(out))
    assert set(data["modes"]) == {"sparse"}
    assert data["queries"] == 2
    assert json.loads(out.read_text()) == data


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
