"""The regression gate: the paired bootstrap on hand-made results, the new metrics, and `ragline eval gate`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ragline.evaluate.gate import GateInputError, bootstrap_p, compare, validate
from ragline.evaluate.metrics import hit_rate_at_k, precision_at_k

from .test_beir import assert_one_line_error, write_beir


def result(per_mode: dict[str, dict[str, float]], metric: str = "ndcg@10", fingerprint: str = "0123456789abcdef",
           **extra) -> dict:
    """A minimal `eval beir --output` object: one metric per query."""
    return {"dataset_fingerprint": fingerprint, "max_docs": None, **extra,
            "per_query": {mode: {qid: {metric: v} for qid, v in values.items()} for mode, values in per_mode.items()}}


def queries(values) -> dict[str, float]:
    return {f"q{i}": float(v) for i, v in enumerate(values)}


def symmetric_noise(n: int, scale: float, seed: int) -> np.ndarray:
    """Noise whose mean is exactly zero: pairs of +e and -e, shuffled."""
    rng = np.random.default_rng(seed)
    e = rng.uniform(0, scale, n // 2)
    noise = np.concatenate([e, -e])
    rng.shuffle(noise)
    return noise


@pytest.fixture
def base_values() -> np.ndarray:
    return np.random.default_rng(7).uniform(0.3, 1.0, 200)


# ---------------------------------------------------------------------------------- the gate
def test_identical_results_pass_with_p_one(base_values):
    data = result({"dense": queries(base_values), "hybrid": queries(base_values)})
    r = compare(data, data, max_drop=0.02, metrics=["ndcg@10"], modes=None)
    assert r.passed and r.failures() == [] and not r.problems
    assert [(c.mode, c.metric) for c in r.checks] == [("dense", "ndcg@10"), ("hybrid", "ndcg@10")]
    for c in r.checks:
        assert c.passed and c.verdict == "pass"
        assert c.drop == pytest.approx(0.0) and c.p == pytest.approx(1.0)
        assert c.queries == 200 and c.baseline == pytest.approx(base_values.mean())


def test_clear_large_drop_on_many_queries_fails(base_values):
    cur = base_values - 0.1 + np.random.default_rng(3).normal(0, 0.05, 200)
    r = compare(result({"hybrid": queries(cur)}), result({"hybrid": queries(base_values)}), max_drop=0.02,
                metrics=["ndcg@10"], modes=["hybrid"])
    (c,) = r.checks
    assert not r.passed and not c.passed and c.verdict == "FAIL"
    assert c.drop == pytest.approx(0.1, abs=0.02) and c.p < 0.05
    assert c.drop == pytest.approx(c.baseline - c.current)
    assert len(r.failures()) == 1 and r.failures()[0].startswith("hybrid ndcg@10: drop")
    assert "significant" in c.reason


def test_drop_within_the_allowance_passes(base_values):
    cur = base_values - 0.01 + symmetric_noise(200, 0.1, seed=5)
    r = compare(result({"dense": queries(cur)}), result({"dense": queries(base_values)}), max_drop=0.02,
                metrics=["ndcg@10"], modes=None)
    (c,) = r.checks
    assert r.passed and c.verdict == "pass" and c.reason == ""
    assert c.drop == pytest.approx(0.01)
    assert c.p > 0.9


def test_large_drop_on_a_single_query_of_200_is_not_significant(base_values):
    base = base_values.copy()
    base[17] = 1.0
    cur = base + symmetric_noise(200, 0.1, seed=11)
    cur[17] = 0.0  # one query loses everything
    r = compare(result({"sparse": queries(cur)}), result({"sparse": queries(base)}), max_drop=0.002,
                metrics=["ndcg@10"], modes=None)
    (c,) = r.checks
    assert c.drop > 0.002  # past the allowance ...
    assert c.p >= 0.05  # ... but one query does not make it significant
    assert r.passed and c.passed and c.verdict == "pass (not significant)" and "not significant" in c.reason
    # the same loss on half of the queries is a real regression
    cur_half = base.copy()
    cur_half[::2] -= 0.5
    assert not compare(result({"sparse": queries(cur_half)}), result({"sparse": queries(base)}), max_drop=0.002,
                       metrics=["ndcg@10"]).passed


def test_mismatched_fingerprints_fail_with_a_reason(base_values):
    a = result({"dense": queries(base_values)}, fingerprint="aaaaaaaaaaaaaaaa")
    b = result({"dense": queries(base_values)}, fingerprint="bbbbbbbbbbbbbbbb")
    r = compare(a, b, max_drop=0.02, metrics=["ndcg@10"])
    assert not r.passed
    assert all(c.passed for c in r.checks)  # the numbers agree; the data does not
    assert len(r.failures()) == 1
    line = r.failures()[0]
    assert "fingerprint" in line and "aaaaaaaaaaaaaaaa" in line and "bbbbbbbbbbbbbbbb" in line


def test_different_max_docs_fail(base_values):
    a = result({"dense": queries(base_values)}, max_docs=1000)
    b = result({"dense": queries(base_values)}, max_docs=500)
    r = compare(a, b, max_drop=0.02, metrics=["ndcg@10"])
    assert not r.passed and "max_docs" in r.failures()[0]


def test_missing_mode_fails(base_values):
    base = result({"dense": queries(base_values), "hybrid": queries(base_values)})
    cur = result({"dense": queries(base_values)})
    r = compare(cur, base, max_drop=0.02, metrics=["ndcg@10"], modes=None)  # None: every baseline mode
    assert not r.passed
    by_mode = {c.mode: c for c in r.checks}
    assert by_mode["dense"].passed
    assert not by_mode["hybrid"].passed and by_mode["hybrid"].reason == "mode 'hybrid' missing from current"
    assert by_mode["hybrid"].p is None and by_mode["hybrid"].drop is None
    r = compare(cur, cur, max_drop=0.02, metrics=["ndcg@10"], modes=["sparse"])
    assert not r.passed and r.checks[0].reason == "mode 'sparse' missing from baseline and current"


def test_missing_metric_fails(base_values):
    data = result({"dense": queries(base_values)})
    r = compare(data, data, max_drop=0.02, metrics=["ndcg@10", "recall@100"])
    assert not r.passed
    assert [c.passed for c in r.checks] == [True, False]
    assert r.checks[1].reason == "metric 'recall@100' missing from baseline and current"


def test_no_queries_in_common_fails():
    base = result({"dense": {"a": 0.5, "b": 0.6}})
    cur = result({"dense": {"c": 0.5, "d": 0.6}})
    r = compare(cur, base, max_drop=0.02, metrics=["ndcg@10"])
    assert not r.passed and "no queries in common" in r.checks[0].reason


def test_only_common_queries_are_compared():
    base = result({"dense": {"a": 0.8, "b": 0.6, "only-baseline": 0.0}})
    cur = result({"dense": {"a": 0.8, "b": 0.6, "only-current": 1.0}})
    (c,) = compare(cur, base, max_drop=0.0, metrics=["ndcg@10"]).checks
    assert c.queries == 2 and c.baseline == pytest.approx(0.7) and c.drop == pytest.approx(0.0) and c.passed


def test_same_seed_same_answer(base_values):
    base = base_values.copy()
    cur = base + symmetric_noise(200, 0.1, seed=11)
    cur[17] -= 1.0
    args = (result({"dense": queries(cur)}), result({"dense": queries(base)}))
    kw = dict(max_drop=0.002, metrics=["ndcg@10"], resamples=5000)
    first = compare(*args, seed=42, **kw)
    assert compare(*args, seed=42, **kw).as_dict() == first.as_dict()
    assert 0.0 < first.checks[0].p < 1.0
    assert compare(*args, seed=43, **kw).checks[0].p != first.checks[0].p
    # the query ids' order in the files does not matter
    shuffled = {k: args[0]["per_query"]["dense"][k] for k in reversed(list(args[0]["per_query"]["dense"]))}
    reordered = {**args[0], "per_query": {"dense": shuffled}}
    assert compare(reordered, args[1], seed=42, **kw).as_dict() == first.as_dict()


def test_bootstrap_p_edges():
    assert bootstrap_p([0.0] * 50, max_drop=0.02) == 1.0
    assert bootstrap_p([0.5] * 50, max_drop=0.02) == 0.0
    assert bootstrap_p([0.02] * 50, max_drop=0.02) == 1.0  # exactly at the allowance is within it
    # many queries: the resamples are drawn in several blocks and all counted
    assert bootstrap_p(np.zeros(5000), max_drop=0.0, resamples=1001) == 1.0
    # one query of three carries the whole drop: p = P(it is never drawn) = (2/3)^3
    assert bootstrap_p([0.9, 0.0, 0.0], max_drop=0.0, resamples=20000) == pytest.approx((2 / 3) ** 3, abs=0.015)
    with pytest.raises(GateInputError):
        bootstrap_p([], max_drop=0.02)


@pytest.mark.parametrize("bad, needle", [
    ([], "expected a JSON object"),
    ({"per_query": {}}, "dataset_fingerprint"),
    ({"dataset_fingerprint": "x"}, "per_query"),
    ({"dataset_fingerprint": "x", "per_query": {"dense": []}}, "per_query.dense"),
    ({"dataset_fingerprint": "x", "per_query": {"dense": {"q1": {"ndcg@10": "high"}}}}, "per_query.dense.q1.ndcg@10"),
    ({"dataset_fingerprint": "x", "per_query": {"dense": {"q1": {"ndcg@10": float("nan")}}}}, "finite"),
])
def test_malformed_results_are_rejected(bad, needle):
    with pytest.raises(GateInputError, match="current"):
        validate(bad, "current")
    with pytest.raises(GateInputError) as exc:
        compare(bad, result({"dense": {"q1": 0.5}}), max_drop=0.02, metrics=["ndcg@10"])
    assert needle in str(exc.value)


@pytest.mark.parametrize("kw", [dict(max_drop=-0.1), dict(alpha=0.0), dict(alpha=1.5), dict(resamples=0),
                                dict(metrics=[])])
def test_bad_parameters_are_rejected(kw):
    data = result({"dense": {"q1": 0.5}})
    args = {"max_drop": 0.02, "metrics": ["ndcg@10"], **kw}
    with pytest.raises(GateInputError):
        compare(data, data, **args)


# ------------------------------------------------------------------------------- new metrics
def test_hit_rate_at_k():
    qrels = {"a": 1, "b": 2, "n": 0, "neg": -1}
    assert hit_rate_at_k(["x", "y", "b"], qrels, 3) == 1.0
    assert hit_rate_at_k(["x", "y", "b"], qrels, 2) == 0.0  # past the cut
    assert hit_rate_at_k(["a", "b"], qrels, 10) == 1.0  # several hits still count once
    assert hit_rate_at_k(["n", "neg", "x"], qrels, 10) == 0.0  # grade 0 and negative are not relevant
    assert hit_rate_at_k([], qrels, 10) == 0.0
    assert hit_rate_at_k(["a"], {}, 10) == 0.0


def test_precision_at_k():
    qrels = {"a": 1, "b": 3, "n": 0, "neg": -2}
    assert precision_at_k(["a", "x", "b", "y"], qrels, 4) == pytest.approx(0.5)
    assert precision_at_k(["a", "x", "b", "y"], qrels, 10) == pytest.approx(0.2)  # fewer results than k: /k
    assert precision_at_k(["a", "b"], qrels, 1) == 1.0
    assert precision_at_k(["n", "neg"], qrels, 2) == 0.0


# ------------------------------------------------------------------------------- the command
@pytest.mark.slow
def test_eval_gate_command(cli, tmp_path):
    root = write_beir(tmp_path / "tiny")
    base, cur = tmp_path / "baseline.json", tmp_path / "current.json"
    for path in (base, cur):
        cli.run("eval", "beir", str(root), "--output", str(path))
    gate = ("eval", "gate", "--baseline", str(base), "--current", str(cur), "--max-drop", "0.02")

    proc = cli.run(*gate, "--metric", "ndcg@10", "--metric", "recall@100")
    assert "gate passed" in proc.stdout and "FAIL" not in proc.stdout
    data = cli.json(*gate)
    assert data["passed"] and {c["mode"] for c in data["checks"]} == {"dense", "sparse", "hybrid"}
    assert all(c["metric"] == "ndcg@10" and c["p"] == 1.0 for c in data["checks"])

    doctored = json.loads(cur.read_text())
    for per_query in doctored["per_query"].values():
        for values in per_query.values():
            values["ndcg@10"] = 0.0
    bad = tmp_path / "doctored.json"
    bad.write_text(json.dumps(doctored))
    proc = cli.run("eval", "gate", "--baseline", str(base), "--current", str(bad), "--max-drop", "0.02",
                   "--metric", "ndcg@10", "--metric", "recall@100", "--mode", "hybrid", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "hybrid" in line]
    assert any("ndcg@10" in line and "FAIL" in line for line in rows), proc.stdout
    assert any("recall@100" in line and "pass" in line for line in rows), proc.stdout
    assert "hybrid ndcg@10: drop" in proc.stdout

    proc = cli.run("eval", "gate", "--baseline", str(tmp_path / "nope.json"), "--current", str(cur),
                   "--max-drop", "0.02", check=False)
    assert_one_line_error(proc, "baseline", "nope.json")
    assert proc.stdout.strip() == ""


def test_eval_gate_rejects_invalid_files(cli, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(result({"dense": {"q1": 0.5}})))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    old = tmp_path / "old.json"  # a result file from before per-query values were written
    old.write_text(json.dumps({"dataset": "x", "modes": {"dense": {"ndcg@10": 0.5}}}))
    for path, needle in ((broken, "not valid JSON"), (old, "dataset_fingerprint"), (tmp_path, "cannot read")):
        proc = cli.run("eval", "gate", "--baseline", str(good), "--current", str(path), "--max-drop", "0.02",
                       check=False)
        assert_one_line_error(proc, "current", needle)
    proc = cli.run("eval", "gate", "--baseline", str(good), "--current", str(good), "--max-drop", "-1", check=False)
    assert_one_line_error(proc, "max_drop")
