"""`ragline eval run`: several configurations on one tiny BEIR folder, through the real CLI and the
bundled model; what is shared between them; configuration errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

import ragline
from ragline.config import ConfigError, ChunkSettings, EmbedSettings, RetrieveSettings
from ragline.evaluate.experiments import ExperimentError, load_config, load_configs, parse_inline

from .test_beir import METRICS, QRELS, assert_one_line_error, write_beir

QIDS = {q for q, _, _ in QRELS}


def ragline_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAGLINE_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ragline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def write_configs(where: Path) -> dict[str, Path]:
    where.mkdir(parents=True, exist_ok=True)
    files = {
        "hybrid": "[retrieve]\nmode = \"hybrid\"\n",
        "dense": "# same chunks and model as hybrid: the index is shared\n[retrieve]\nmode = \"dense\"\n",
        # a different index-build setting: a second index, built from the same chunk texts (cache hits)
        "other": "name = \"sparse-m16\"\n[retrieve]\nmode = \"sparse\"\nhnsw_m = 16\n",
    }
    paths = {}
    for stem, text in files.items():
        paths[stem] = where / f"{stem}.toml"
        paths[stem].write_text(text, encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One `eval run` of three configurations, written to a file and printed with --json."""
    root = tmp_path_factory.mktemp("run")
    data_dir = write_beir(root / "tiny")
    cfg = write_configs(root / "configs")
    out = root / "results.json"
    proc = ragline_cli(root / "home", "eval", "run", str(data_dir), "--config", str(cfg["hybrid"]),
                       "--config", str(cfg["dense"]), "-c", str(cfg["other"]), "--index-dir", str(root / "indexes"),
                       "--output", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "data": data_dir, "configs": cfg, "stdout": json.loads(proc.stdout),
            "file": json.loads(out.read_text("utf-8")), "path": out}


@pytest.mark.slow
def test_results_structure(run):
    data = run["file"]
    assert data["format"] == "ragline-experiment/1"
    assert data["dataset"] == str(run["data"]) and data["split"] == "test"
    assert len(data["dataset_fingerprint"]) == 16
    assert data["documents"] == 8 and data["queries"] == len(QRELS) and data["corpus_documents"] == 8
    assert data["ragline_version"] == ragline.__version__
    assert data["git_commit"] is None or len(data["git_commit"]) == 40
    assert datetime.fromisoformat(data["timestamp"]).tzinfo is not None
    assert set(data["query_text"]) == QIDS
    assert list(data["configs"]) == ["hybrid", "dense", "sparse-m16"]  # file stem, or the file's name key
    for name, c in data["configs"].items():
        assert c["source"].endswith(".toml")
        # the full resolved configuration: every field of each section, defaults included
        assert set(c["settings"]) == {"chunk", "embed", "retrieve", "rerank"}
        assert set(c["settings"]["chunk"]) == set(ChunkSettings.model_fields)
        assert set(c["settings"]["embed"]) == set(EmbedSettings.model_fields)
        assert set(c["settings"]["retrieve"]) == set(RetrieveSettings.model_fields)
        assert c["mode"] == c["settings"]["retrieve"]["mode"]
        assert c["embedding_model"].startswith("all-MiniLM-L6-v2@")
        assert set(c["metrics"]) == set(METRICS)
        assert set(c["latency_ms"]) == {"p50", "p90", "p95", "p99", "mean", "max"}
        lat = c["latency_ms"]
        assert 0 <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert set(c["per_query"]) == QIDS
        for q in c["per_query"].values():
            assert set(METRICS) <= set(q) and q["latency_ms"] >= 0 and 1 <= len(q["top"]) <= 10
        for m in METRICS:  # the means are the per-query averages
            mean = sum(q[m] for q in c["per_query"].values()) / len(QRELS)
            assert c["metrics"][m] == pytest.approx(mean, abs=1e-4)
    assert data["configs"]["dense"]["overrides"] == {"retrieve": {"mode": "dense"}}
    assert data["configs"]["sparse-m16"]["settings"]["retrieve"]["hnsw_m"] == 16
    # --json leaves out the per-query values (as `eval beir` without --per-query); the file has them
    printed = run["stdout"]
    assert "query_text" not in printed
    assert all("per_query" not in c for c in printed["configs"].values())
    assert printed["configs"]["dense"]["metrics"] == data["configs"]["dense"]["metrics"]


@pytest.mark.slow
def test_index_shared_and_embeddings_reused(run):
    data = run["file"]
    configs, indexes, sharing = data["configs"], data["indexes"], data["sharing"]
    assert sharing["corpus_reads"] == 1 and sharing["models_loaded"] == 1
    # hybrid and dense differ only in search settings: one index, built once
    assert configs["hybrid"]["index"] == {"key": configs["dense"]["index"]["key"], "shared": False,
                                          "built_by": "hybrid"}
    assert configs["dense"]["index"]["shared"] is True
    assert sharing["indexes_built"] == len(indexes) == 2
    first = indexes[configs["hybrid"]["index"]["key"]]
    second = indexes[configs["sparse-m16"]["index"]["key"]]
    assert first["used_by"] == ["hybrid", "dense"] and second["used_by"] == ["sparse-m16"]
    assert first["chunk_fingerprint"] == second["chunk_fingerprint"]  # same chunk plan and model ...
    assert first["key"] != second["key"]  # ... but another index-build setting
    assert first["ingest"]["embedded"] == first["ingest"]["chunks"] > 0  # fresh cache
    # the second index's chunk texts are the first's: every vector came from the embedding cache
    assert second["ingest"]["embedded"] == 0
    assert second["ingest"]["from_cache"] == second["ingest"]["chunks"] == first["ingest"]["chunks"]
    cache = sharing["embedding_cache"]
    assert cache["vectors_before"] == 0 and cache["vectors_after"] == first["ingest"]["embedded"]


@pytest.mark.slow
def test_scores_match_eval_beir(run, tmp_path):
    """Same metric names and per-query values as `eval beir` with the same settings."""
    out = tmp_path / "beir.json"
    proc = ragline_cli(tmp_path / "home", "eval", "beir", str(run["data"]), "--modes", "dense,hybrid",
                       "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    beir = json.loads(out.read_text("utf-8"))
    for name in ("dense", "hybrid"):
        mine = {q: {m: v[m] for m in METRICS} for q, v in run["file"]["configs"][name]["per_query"].items()}
        assert mine == beir["per_query"][name]
        assert run["file"]["configs"][name]["metrics"] == {m: beir["modes"][name][m] for m in METRICS}
    assert run["file"]["dataset_fingerprint"] == beir["dataset_fingerprint"]


@pytest.mark.slow
def test_index_dir_is_reused_by_a_later_run(run):
    proc = ragline_cli(run["root"] / "home", "eval", "run", str(run["data"]), "-c", "again:retrieve.mode=sparse",
                       "--index-dir", str(run["root"] / "indexes"), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["sharing"]["indexes_built"] == 0 and data["sharing"]["indexes_reused_from_disk"] == 1
    (info,) = data["indexes"].values()
    assert info["reused_from_disk"] is True
    assert info["key"] == run["file"]["configs"]["hybrid"]["index"]["key"]
    assert data["configs"]["again"]["metrics"] == run["file"]["configs"]["sparse-m16"]["metrics"]


@pytest.mark.slow
def test_report_renders_a_run(run, tmp_path):
    page, md = tmp_path / "r.html", tmp_path / "r.md"
    proc = ragline_cli(run["root"] / "home", "eval", "report", str(run["path"]), "--html", str(page), "--md", str(md))
    assert proc.returncode == 0, proc.stderr
    text = page.read_text("utf-8")
    assert text.count("<svg") == 3 and "http://" not in text and "https://" not in text
    rows = [line for line in md.read_text("utf-8").splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[2:]] == ["hybrid", "dense", "sparse-m16"]


# ------------------------------------------------------------------------------ configurations
def test_inline_specs():
    assert parse_inline("d:retrieve.mode=dense, retrieve.dense_weight=0.3,chunk.title_prefix=false") == (
        "d", {"retrieve": {"mode": "dense", "dense_weight": 0.3}, "chunk": {"title_prefix": False}})
    assert parse_inline("defaults:") == ("defaults", {})
    c = load_config("rrf:retrieve.fusion=rrf,chunk.size=128", Path("h"))
    assert c.settings.retrieve.fusion == "rrf" and c.settings.chunk.size == 128
    assert c.settings.retrieve.mode == "hybrid" and c.source == "inline: rrf:retrieve.fusion=rrf,chunk.size=128"


def test_config_files_ignore_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGLINE_RETRIEVE__MODE", "sparse")
    (tmp_path / "a.toml").write_text("[chunk]\nsize = 300\n")
    c = load_config(str(tmp_path / "a.toml"), tmp_path)
    assert c.name == "a" and c.settings.retrieve.mode == "hybrid" and c.settings.chunk.size == 300
    assert c.resolved()["chunk"]["size"] == 300 and "llm" not in c.resolved()


@pytest.mark.parametrize("text, needle", [
    ("[chunk]\nsise = 300\n", "unknown setting chunk.sise"),
    ("[llm]\nmodel = \"x\"\n", "unknown setting section 'llm'"),
    ("[retreive]\nmode = \"dense\"\n", "unknown setting section 'retreive'"),
    ("chunk = 3\n", "'chunk' must be a table"),
    ("[chunk\n", "not valid TOML"),
    ("name = 3\n", "'name' must be a non-empty string"),
])
def test_bad_config_files(tmp_path, text, needle):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ExperimentError, match=needle.replace("[", r"\[")):
        load_config(str(tmp_path / "bad.toml"), tmp_path)


def test_bad_values_and_names(tmp_path):
    with pytest.raises(ConfigError, match="retrieve.mode"):
        load_config("x:retrieve.mode=fuzzy", tmp_path)
    with pytest.raises(ExperimentError, match="not found"):
        load_config(str(tmp_path / "missing.toml"), tmp_path)
    with pytest.raises(ExperimentError, match="two configurations are named 'x'"):
        load_configs(["x:", "x:retrieve.mode=dense"], tmp_path)
    with pytest.raises(ExperimentError, match="at least one --config"):
        load_configs([], tmp_path)
    with pytest.raises(ExperimentError, match="section.key=value"):
        load_config("x:mode=dense", tmp_path)


@pytest.mark.parametrize("args, needle", [
    (["--config", "MISSING.toml"], "config file MISSING.toml not found"),
    (["--config", "BAD.toml"], "unknown setting chunk.sise"),
    (["--config", "x:retrieve.mode=fuzzy"], "retrieve.mode"),
    ([], "at least one --config"),
    (["--config", "plain-word"], "give a .toml file"),
    (["--config", "a:", "--max-queries", "0"], "--max-queries"),
])
def test_cli_errors_exit_2(tmp_path, args, needle):
    data_dir = write_beir(tmp_path / "tiny")
    (tmp_path / "BAD.toml").write_text("[chunk]\nsise = 1\n")
    args = [a.replace("MISSING.toml", str(tmp_path / "MISSING.toml")).replace("BAD.toml", str(tmp_path / "BAD.toml"))
            for a in args]
    needle = needle.replace("MISSING.toml", str(tmp_path / "MISSING.toml"))
    proc = ragline_cli(tmp_path / "home", "eval", "run", str(data_dir), *args)
    assert_one_line_error(proc, needle)


def test_cli_error_for_a_folder_that_is_not_beir(tmp_path):
    proc = ragline_cli(tmp_path / "home", "eval", "run", str(tmp_path), "--config", "a:")
    assert_one_line_error(proc, "not a BEIR folder")
