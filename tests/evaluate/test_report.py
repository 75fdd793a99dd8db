"""`ragline eval report`: statistics, Markdown and self-contained HTML from hand-made results files
(no model needed), and clear errors for files of the wrong shape."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from ragline.evaluate.beir import METRICS
from ragline.evaluate.report import (FIGURES, ReportInputError, bootstrap_mean_ci, markdown, parse_results,
                                     render_html, summarise)

from .test_beir import assert_one_line_error
from .test_experiments import ragline_cli

N = 40


def per_query(values: np.ndarray, latency: np.ndarray | None = None) -> dict:
    out = {}
    for i, v in enumerate(values):
        q = {m: float(v) for m in METRICS}
        q["precision@10"] = float(v) / 10
        if latency is not None:
            q["latency_ms"] = float(latency[i])
            q["top"] = [f"d{i}"]
        out[f"q{i}"] = q
    return out


def experiment(**values: np.ndarray) -> dict:
    """A minimal `eval run --output` object: per-query values given per configuration."""
    rng = np.random.default_rng(1)
    configs = {}
    for i, (name, v) in enumerate(values.items()):
        pq = per_query(v, rng.gamma(2.0, 5.0 * (i + 1), len(v)))
        configs[name] = {"mode": "hybrid" if i % 2 == 0 else "dense", "source": f"{name}.toml",
                         "settings": {"retrieve": {"mode": "hybrid" if i % 2 == 0 else "dense", "k": 10}},
                         "metrics": {m: float(np.mean([q[m] for q in pq.values()])) for m in METRICS},
                         "latency_ms": {"p50": 10.0 * (i + 1), "p95": 20.0 * (i + 1)},
                         "index": {"key": "k", "shared": i > 0, "built_by": "x"}, "per_query": pq}
    return {"format": "ragline-experiment/1", "dataset": "/data/tiny", "dataset_fingerprint": "0123456789abcdef",
            "documents": 10, "queries": N, "max_queries": None, "max_docs": None, "ragline_version": "0.1.0",
            "git_commit": None, "timestamp": "2026-01-01T00:00:00+00:00",
            "query_text": {f"q{i}": f"question <{i}> & more" for i in range(N)},
            "indexes": {"k": {"used_by": ["a", "b"], "reused_from_disk": False,
                              "ingest": {"documents": 10, "chunks": 12, "embedded": 12, "from_cache": 0}}},
            "configs": configs}


@pytest.fixture
def two() -> dict:
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 1.0, N)
    b = a.copy()
    b[:10] -= 0.15  # a wins on 10 queries
    b[10:14] += 0.1  # and loses on 4; 26 ties
    return experiment(alpha=a, beta=np.clip(b, 0, 1))


class Page(HTMLParser):
    """Collects the structure the tests look at; fails on an end tag that closes nothing open."""

    VOID = {"meta", "br", "img", "hr", "link", "input", "path", "use", "rect", "circle", "line", "polyline",
            "stop", "ellipse", "polygon"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.figures: list[str] = []
        self.svgs_in: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        d = dict(attrs)
        self.attrs += [(k, v or "") for k, v in attrs]
        if tag == "figure":
            self.figures.append(d.get("data-figure", ""))
        if tag == "svg":
            self.svgs_in.append(self.stack[-1] if self.stack else "")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.attrs += [(k, v or "") for k, v in attrs]

    def handle_endtag(self, tag):
        if tag in self.VOID and tag not in self.stack:
            return
        assert tag in self.stack, f"</{tag}> closes nothing"
        while self.stack.pop() != tag:
            pass

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    p.close()
    assert p.stack == [], p.stack[-5:]
    return p


# ---------------------------------------------------------------------------------- statistics
def test_bootstrap_interval_is_seeded_and_holds_the_mean():
    v = np.random.default_rng(3).uniform(0, 1, 200)
    mean, lo, hi = bootstrap_mean_ci(v, 2000, seed=5)
    assert mean == pytest.approx(v.mean()) and lo < mean < hi
    assert (mean, lo, hi) == bootstrap_mean_ci(v, 2000, seed=5)  # reproducible
    assert hi - lo == pytest.approx(2 * 1.96 * v.std(ddof=1) / np.sqrt(200), rel=0.15)  # about the normal width
    assert bootstrap_mean_ci([0.5] * 10, 100) == (0.5, 0.5, 0.5)


def test_summary_counts_wins_losses_ties(two):
    res = parse_results(two)
    s = summarise(res, resamples=500)
    cmp = s["comparison"]
    assert (cmp["a"], cmp["b"], cmp["queries"]) == ("alpha", "beta", N)
    m = cmp["metrics"]["ndcg@10"]
    assert (m["wins"], m["losses"], m["ties"]) == (10, 4, 26)
    diffs = [two["configs"]["alpha"]["per_query"][q]["ndcg@10"] - two["configs"]["beta"]["per_query"][q]["ndcg@10"]
             for q in sorted(two["configs"]["alpha"]["per_query"])]
    assert m["mean_diff"] == pytest.approx(np.mean(diffs)) and m["ci"][0] <= m["mean_diff"] <= m["ci"][1]
    for name in ("alpha", "beta"):
        for metric, v in s["configs"][name]["metrics"].items():
            assert v["ci"][0] <= v["mean"] <= v["ci"][1]
            assert v["mean"] == pytest.approx(two["configs"][name]["metrics"][metric])
    swapped = summarise(res, compare=("beta", "alpha"), resamples=500)["comparison"]["metrics"]["ndcg@10"]
    assert (swapped["wins"], swapped["losses"]) == (4, 10)
    assert s["differences"] == {"retrieve.mode": {"alpha": "hybrid", "beta": "dense"}}


def test_summary_rejects_bad_choices(two):
    res = parse_results(two)
    with pytest.raises(ReportInputError, match="no configuration named 'gamma'"):
        summarise(res, compare=("alpha", "gamma"))
    with pytest.raises(ReportInputError, match="two different"):
        summarise(res, compare=("alpha", "alpha"))
    with pytest.raises(ReportInputError, match="unknown metric"):
        summarise(res, metric="ndcg@5")


# ---------------------------------------------------------------------------------- rendering
def test_markdown_has_a_row_per_config(two):
    two["configs"]["a|b"] = two["configs"].pop("beta")
    res = parse_results(two)
    md = markdown(res, summarise(res, resamples=200))
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 + 2
    assert rows[2].startswith("| alpha | hybrid | ") and rows[3].startswith("| a\\|b | dense | ")
    assert all(row.count(" | ") == rows[0].count(" | ") for row in rows[2:])  # the pipe in a name is escaped
    assert "10 wins, 4 losses, 26 ties" in md and "0123456789abcdef" in md


def test_html_is_self_contained_with_one_svg_per_figure_kind(two):
    res = parse_results(two)
    page = render_html(res, summarise(res, resamples=200))
    doc = parse(page)
    assert doc.figures == list(FIGURES)
    assert doc.svgs_in == ["figure"] * len(FIGURES)
    assert not re.search(r"https?://", page)  # no external URL, not even an XML namespace
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert not [(k, v) for k, v in doc.attrs if k in ("src", "href")]
    assert "question &lt;0&gt; &amp; more" in page  # query texts are escaped
    text = " ".join(doc.text)
    assert "alpha" in text and "beta" in text and "10 wins, 4 losses, 26 ties" in text


def test_plots_differ_between_figures(two):
    """Each figure gets its own element ids, so inline SVGs cannot borrow each other's clip paths."""
    res = parse_results(two)
    page = render_html(res, summarise(res, resamples=200))
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    refs = set(re.findall(r"url\(#([^)]+)\)", page)) | set(re.findall(r'href="#([^"]+)"', page))
    assert refs and refs <= set(ids)  # every clip path and marker reference resolves


def test_one_config_has_no_comparison():
    res = parse_results(experiment(only=np.linspace(0, 1, N)))
    s = summarise(res, resamples=100)
    assert s["comparison"] is None
    assert parse(render_html(res, s)).figures == ["metrics", "latency"]


def test_eval_beir_output_renders_as_one_config_per_mode():
    rng = np.random.default_rng(2)
    beir = {"dataset": "/d", "dataset_fingerprint": "fedcba9876543210", "documents": 5, "queries": N,
            "ragline_version": "0.1.0", "max_docs": None, "max_queries": None,
            "settings": {"embedding_model": "m", "retrieve": {"fusion": "minmax"}},
            "modes": {m: {"latency_ms_p50": 5.0, "latency_ms_p95": 9.0} for m in ("dense", "hybrid")},
            "per_query": {m: per_query(rng.uniform(0, 1, N)) for m in ("dense", "hybrid")}}
    res = parse_results(beir)
    assert res.kind == "beir" and [c.name for c in res.configs] == ["dense", "hybrid"]
    assert res.configs[0].latencies is None and res.configs[0].latency_ms == {"p50": 5.0, "p95": 9.0}
    s = summarise(res, resamples=100)
    assert s["comparison"]["a"] == "dense"
    assert parse(render_html(res, s)).figures == list(FIGURES)


@pytest.mark.parametrize("data, needle", [
    ([1, 2], "expected a JSON object"),
    ({"foo": 1}, "no dataset_fingerprint"),
    ({"dataset_fingerprint": "x"}, "neither 'configs'"),
    ({"dataset_fingerprint": "x", "modes": {"dense": {}}}, "no per_query results"),
    ({"dataset_fingerprint": "x", "format": "ragline-experiment/1", "configs": {}}, "non-empty"),
    ({"dataset_fingerprint": "x", "format": "ragline-experiment/1", "configs": {"a": {"per_query": {"q": 3}}}},
     "configs.a.per_query.q: expected an object"),
    ({"dataset_fingerprint": "x", "format": "ragline-experiment/1",
      "configs": {"a": {"per_query": {"q": {"ndcg@10": "high"}}}}}, "none of the metrics"),
])
def test_wrong_shapes_are_refused(data, needle):
    with pytest.raises(ReportInputError, match=re.escape(needle)):
        parse_results(data)


# ---------------------------------------------------------------------------------- the command
def test_cli_writes_html_and_markdown(two, tmp_path):
    src = tmp_path / "results.json"
    src.write_text(json.dumps(two))
    page, md = tmp_path / "out" / "report.html", tmp_path / "out" / "report.md"
    proc = ragline_cli(tmp_path / "home", "eval", "report", str(src), "--html", str(page), "--md", str(md),
                       "--compare", "beta", "alpha", "--resamples", "300")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {page}" in proc.stdout and f"wrote {md}" in proc.stdout
    assert parse(page.read_text("utf-8")).figures == list(FIGURES)
    assert "beta vs alpha on nDCG@10 over 40 queries: 4 wins, 10 losses, 26 ties" in md.read_text("utf-8")
    printed = ragline_cli(tmp_path / "home", "eval", "report", str(src), "--resamples", "300")
    assert printed.returncode == 0 and printed.stdout == markdown(
        parse_results(two), summarise(parse_results(two), resamples=300))
    as_json = json.loads(ragline_cli(tmp_path / "home", "eval", "report", str(src), "--json", "--metric",
                                     "recall@10", "--resamples", "300").stdout)
    assert as_json["metric"] == "recall@10" and as_json["written"] == []
    assert as_json["comparison"]["metrics"]["recall@10"]["wins"] == 10


@pytest.mark.parametrize("content, args, needle", [
    ("[1, 2]", [], "expected a JSON object"),
    ("{not json", [], "is not valid JSON"),
    ('{"modes": {}, "dataset_fingerprint": "ab"}', [], "no per_query results"),
    (None, [], "cannot read results file"),
    ("TWO", ["--compare", "alpha", "zeta"], "no configuration named 'zeta'"),
    ("TWO", ["--metric", "ndcg@3"], "unknown metric"),
])
def test_cli_errors_exit_2(two, tmp_path, content, args, needle):
    src = tmp_path / "results.json"
    if content is not None:
        src.write_text(json.dumps(two) if content == "TWO" else content)
    proc = ragline_cli(tmp_path / "home", "eval", "report", str(src), "--html", str(tmp_path / "r.html"), *args)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "r.html").exists()
