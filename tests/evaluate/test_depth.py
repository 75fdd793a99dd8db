"""Rerank depth curves: `eval run --depths` runs a reranking configuration at each candidate depth,
and `eval report` sets each beside the baseline without rerank."""

from __future__ import annotations

import json

import pytest

from ragline.evaluate.depth import depth_rows, expand_depths, parse_depths
from ragline.evaluate.experiments import ExperimentError, load_configs
from ragline.evaluate.report import parse_results

from .test_beir import write_beir
from .test_experiments import ragline_cli


def test_depths_parse_sorted_and_unique():
    assert parse_depths("50, 20,100,20") == [20, 50, 100]
    assert parse_depths(None) == []
    for bad in ("0", "20,x", "1001", "-5"):
        with pytest.raises(ExperimentError, match="--depths"):
            parse_depths(bad)


def test_only_reranking_configurations_are_expanded(tmp_path):
    configs = load_configs(["base:", "mini:rerank.method=minilm,rerank.batch_size=8"], tmp_path)
    out = expand_depths(configs, [20, 50])
    assert [c.name for c in out] == ["base", "mini@20", "mini@50"]
    assert [c.settings.rerank.depth for c in out[1:]] == [20, 50]
    assert out[2].overrides["rerank"] == {"method": "minilm", "batch_size": 8, "depth": 50}
    assert out[0].settings.rerank.method == "none"
    with pytest.raises(ExperimentError, match="needs a configuration that reranks"):
        expand_depths(load_configs(["base:"], tmp_path), [20])


@pytest.mark.slow
def test_eval_run_depth_curve_in_results_and_report(tmp_path):
    data_dir = write_beir(tmp_path / "tiny")
    out = tmp_path / "results.json"
    proc = ragline_cli(tmp_path / "home", "eval", "run", str(data_dir), "-c", "base:", "-c",
                       "mini:rerank.method=minilm", "--depths", "2,5", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "rerank depth" in proc.stdout
    data = json.loads(out.read_text("utf-8"))
    assert list(data["configs"]) == ["base", "mini@2", "mini@5"]
    assert data["configs"]["base"]["rerank"] is None
    assert data["configs"]["mini@5"]["rerank"] == {"method": "minilm", "depth": 5}
    rows = depth_rows(parse_results(data).configs)
    assert [(r["config"], r["depth"], r["baseline"]) for r in rows] == [("mini@2", 2, "base"), ("mini@5", 5, "base")]
    base = data["configs"]["base"]["metrics"]["ndcg@10"]
    for r in rows:
        assert r["value"] == data["configs"][r["config"]]["metrics"]["ndcg@10"]
        assert r["delta"] == pytest.approx(r["value"] - base)
        assert r["p99"] == data["configs"][r["config"]]["latency_ms"]["p99"]
    md = tmp_path / "report.md"
    html = tmp_path / "report.html"
    rep = ragline_cli(tmp_path / "home", "eval", "report", str(out), "--md", str(md), "--html", str(html))
    assert rep.returncode == 0, rep.stderr
    assert "Rerank depth" in md.read_text("utf-8") and "| mini@5 | minilm | 5 |" in md.read_text("utf-8")
    assert 'data-table="depth"' in html.read_text("utf-8")
