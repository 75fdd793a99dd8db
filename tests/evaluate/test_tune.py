"""`ragline tune`: the search space, the Pareto front, the choice, the held-out split, and a real
run through the CLI on a tiny BEIR folder."""

from __future__ import annotations

import json
import tomllib

import pytest

from ragline.config import load_settings
from ragline.evaluate.experiments import ExperimentError
from ragline.evaluate.tune import (DEFAULT_SPACE, Point, analyse, choose, chosen_toml, expand, pareto, parse_space,
                                   split_queries)

from .test_beir import QRELS, assert_one_line_error, write_beir
from .test_experiments import ragline_cli


def test_parse_space_reads_typed_values_and_defaults_when_empty(tmp_path):
    assert parse_space([]) == DEFAULT_SPACE
    got = parse_space(["chunk.size=128,256", "retrieve.fusion=rrf,minmax", "retrieve.dense_weight=0.25"])
    assert got == {"chunk.size": [128, 256], "retrieve.fusion": ["rrf", "minmax"], "retrieve.dense_weight": [0.25]}
    for bad in ("chunk.size", "size=1,2", "chunk.size="):
        with pytest.raises(ExperimentError, match="section.key=value1"):
            parse_space([bad])


def test_expand_runs_each_distinct_configuration_once(tmp_path):
    configs = expand(DEFAULT_SPACE, tmp_path)
    names = [c.name for c in configs]
    assert names[0] == "defaults" and len(names) == len(set(names))
    # 4 chunk plans x (dense, sparse, rrf, minmax at 3 weights) = 24; the defaults equal one of them
    assert len(configs) == 24
    resolved = [json.dumps(c.resolved(), sort_keys=True) for c in configs]
    assert len(set(resolved)) == len(resolved)
    # an overlap not below the size is not a configuration; an unknown key is an error
    assert len(expand({"chunk.size": [32], "chunk.overlap": [0, 32]}, tmp_path)) == 2
    with pytest.raises(ExperimentError, match="unknown setting chunk.sise"):
        expand({"chunk.sise": [1]}, tmp_path)
    with pytest.raises(ExperimentError, match="more than --max-configs"):
        expand(DEFAULT_SPACE, tmp_path, max_configs=10)


def test_pareto_front_and_choice_by_hand():
    pts = [Point("slow-best", 0.80, 40.0), Point("fast", 0.70, 5.0), Point("mid", 0.78, 12.0),
           Point("dominated", 0.69, 20.0), Point("tie-slow", 0.78, 30.0), Point("near-best", 0.799, 15.0)]
    assert pareto(pts) == ["fast", "mid", "near-best", "slow-best"]
    assert choose(pts, None, 0.0).name == "slow-best"
    assert choose(pts, None, 0.002).name == "near-best"  # within tolerance of the best: the faster one
    assert choose(pts, 12.0, 0.0).name == "mid"
    assert choose(pts, 1.0, 0.0) is None
    assert pareto([Point("a", 0.5, 1.0), Point("b", 0.5, 1.0)]) == ["a", "b"]  # equal points dominate neither


def test_split_is_deterministic_and_holds_out_about_the_share():
    qids = [f"q{i}" for i in range(1000)]
    tune, held = split_queries(qids, 0.3)
    assert (tune, held) == split_queries(qids, 0.3)
    assert set(tune).isdisjoint(held) and len(tune) + len(held) == 1000
    assert 250 < len(held) < 350
    assert split_queries(qids, 0.0) == (qids, [])


def _result(per_config: dict[str, tuple[dict[str, float], float]]) -> dict:
    return {"dataset": "x", "queries": 2, "documents": 3, "query_text": {"a": "", "b": ""},
            "configs": {name: {"overrides": {"retrieve": {"mode": name}},
                               "per_query": {q: {"ndcg@10": v, "latency_ms": lat, "top": []} for q, v in vals.items()},
                               "latency_ms": {"p50": lat}, "index": {"key": "k"}}
                        for name, (vals, lat) in per_config.items()}}


def test_analyse_scores_tuning_and_held_out_queries_apart():
    res = _result({"dense": ({"a": 1.0, "b": 0.0}, 10.0), "sparse": ({"a": 0.5, "b": 1.0}, 5.0)})
    tune_ids, held = split_queries(["a", "b"], 0.5)
    out = analyse(res, "ndcg@10", 0.5, None, 0.0)
    rows = {r["name"]: r for r in out["configs"]}
    for name, vals in (("dense", {"a": 1.0, "b": 0.0}), ("sparse", {"a": 0.5, "b": 1.0})):
        assert rows[name]["tune"] == sum(vals[q] for q in tune_ids) / len(tune_ids)
        assert rows[name]["holdout"] == (sum(vals[q] for q in held) / len(held) if held else None)
    best = max(rows.values(), key=lambda r: (r["tune"], -r["latency_ms"]))
    assert out["chosen"] == best["name"]
    toml = tomllib.loads(chosen_toml(out, res))
    assert toml == ({} if out["chosen"] == "hybrid" else {"retrieve": {"mode": out["chosen"]}})  # defaults left out
    res["configs"]["dense"]["overrides"] = {"retrieve": {"mode": "dense", "fusion": "minmax"}}  # fusion: the default
    out["chosen"] = "dense"
    assert tomllib.loads(chosen_toml(out, res)) == {"retrieve": {"mode": "dense"}}
    with pytest.raises(ExperimentError, match="unknown metric"):
        analyse(res, "ndcg@11", 0.5, None, 0.0)


@pytest.mark.slow
def test_tune_cli_runs_the_space_and_writes_a_loadable_choice(tmp_path):
    data = write_beir(tmp_path / "tiny")
    chosen = tmp_path / "home" / "config.toml"
    proc = ragline_cli(tmp_path / "home", "tune", str(data), "--space", "chunk.size=64,128",
                       "--space", "retrieve.mode=dense,sparse,hybrid", "--holdout", "0", "--write", str(chosen),
                       "--output", str(tmp_path / "tune.json"), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["configs"]) == 1 + 6 and out["queries"]["tune"] == len({q for q, _, _ in QRELS})
    assert out["chosen"] in out["pareto"] and out["written"] == str(chosen)
    best = max(r["tune"] for r in out["configs"])
    assert next(r for r in out["configs"] if r["name"] == out["chosen"])["tune"] >= best - 0.002
    # the written file is a valid config.toml for that home, with the chosen settings
    settings = load_settings(home=tmp_path / "home")
    row = next(r for r in out["configs"] if r["name"] == out["chosen"])
    for section, values in row["overrides"].items():
        for k, v in values.items():
            assert getattr(getattr(settings, section), k) == v
    saved = json.loads((tmp_path / "tune.json").read_text())
    assert saved["tune"]["chosen"] == out["chosen"] and len(saved["configs"]) == 7
    # three chunk plans (64, 128 and the defaults' 256): three indexes, each shared by its modes
    assert saved["sharing"]["indexes_built"] == 3


def test_tune_cli_bad_input_is_one_line_exit_2(tmp_path):
    data = write_beir(tmp_path / "tiny")
    proc = ragline_cli(tmp_path / "home", "tune", str(data), "--space", "retrieve.nope=1")
    assert_one_line_error(proc, "unknown setting retrieve.nope")
    proc = ragline_cli(tmp_path / "home", "tune", str(tmp_path / "absent"), "--space", "retrieve.mode=dense")
    assert proc.returncode == 2
