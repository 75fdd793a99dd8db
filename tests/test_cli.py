"""The CLI end to end, as a subprocess, on the demo corpus: what a new user runs."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_ingest_status_query_ask(cli, corpus):
    report = cli.json("ingest", str(corpus))
    assert report["ok"] is True
    assert report["added"] == 8 and report["failed"] == []
    assert report["chunks_written"] >= 8

    status = cli.json("status")
    assert status["documents"] == 8
    assert status["chunks"] == report["chunks_written"]
    assert status["types"]["pdf"] == 1 and status["types"]["docx"] == 1
    assert status["index"]["embedding_model"].startswith("all-MiniLM-L6-v2@")
    assert status["documents_pending"] == 0 and status["settings_changed"] is False
    cli.env["RAGLINE_CHUNK__SIZE"] = "128"
    assert cli.json("status")["settings_changed"] is True
    del cli.env["RAGLINE_CHUNK__SIZE"]

    res = cli.json("query", "How many moons does Mars have?", "-k", "3")
    assert res["hits"][0]["source"].endswith("mars.html")
    assert all({"source", "span", "score", "heading_path"} <= set(h) for h in res["hits"])

    pdf_only = cli.json("query", "eruption", "--filter", 'type = "pdf"')
    assert pdf_only["hits"] and all(h["source"].endswith(".pdf") for h in pdf_only["hits"])
    assert all(h["page"] in (1, 2) for h in pdf_only["hits"])

    ans = cli.json("ask", "Which astronomer discovered Phobos and Deimos?")
    assert ans["grounded"] is True
    assert "Asaph Hall" in ans["answer"]
    assert "[1]" in ans["answer"]
    assert ans["citations"][0]["source"].endswith("mars.html")
    # extractive answers never invent text: each cited snippet is a passage of the source
    text = (corpus / "mars.html").read_text()
    for c in ans["citations"]:
        assert c["snippet"].split(" ")[0] in text


def test_ask_says_when_documents_do_not_answer(cli, corpus):
    cli.json("ingest", str(corpus))
    ans = cli.json("ask", "What is the capital city of Australia?")
    assert ans["grounded"] is False
    assert ans["citations"] == []
    assert "do not appear to contain" in ans["answer"]


def test_human_output_has_citations_and_sources(cli, corpus):
    cli.run("ingest", str(corpus))
    out = cli.run("ask", "What temperature should water be for green tea?").stdout
    assert "[1]" in out and "Sources" in out and "tea-guide.txt" in out
    assert "70" in out


def test_errors_are_one_line_without_traceback(cli, corpus):
    proc = cli.run("query", "anything", check=False)
    assert proc.returncode == 2 and "run `ragline ingest PATH` first" in proc.stderr
    cli.run("ingest", str(corpus))
    proc = cli.run("query", "x", "--filter", "yeer > 2020", check=False)
    assert proc.returncode == 2
    assert "unknown field 'yeer'" in proc.stderr and "did you mean 'year'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli.run("query", "x", "--mode", "fuzzy", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # ask takes its options through the same check (it used to run hybrid for any unknown mode)
    proc = cli.run("ask", "x", "--mode", "fuzzy", check=False)
    assert proc.returncode == 2 and "mode must be hybrid, dense or sparse, not 'fuzzy'" in proc.stderr
    proc = cli.run("ask", "x", "-k", "0", check=False)
    assert proc.returncode == 2 and "k must be a whole number of at least 1" in proc.stderr
    proc = cli.run("ingest", str(corpus), "--chunk-size", "10", check=False)
    assert proc.returncode == 2 and "chunk.size" in proc.stderr


def test_ingest_without_paths_resyncs_known_sources(cli, corpus):
    cli.json("ingest", str(corpus))
    (corpus / "tea-guide.txt").write_text("Rooibos is brewed with boiling water for five minutes.\n")
    report = cli.json("ingest")
    assert report["replaced"] == 1 and report["skipped"] == 7
