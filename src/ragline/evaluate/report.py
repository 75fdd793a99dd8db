"""`ragline eval report RESULTS.json`: a self-contained HTML report and a Markdown summary of an
`eval run` results file (or of an `eval beir --output` file, each mode read as a configuration).

Statistics (docs/experiments.md):
- each metric's mean with a 95% percentile-bootstrap confidence interval: query ids drawn with
  replacement ``resamples`` times from ``numpy.random.default_rng(seed)``, a fresh generator per
  (configuration, metric), so every interval is reproducible on its own;
- for two configurations A and B, over the queries both scored, per query ``diff = A - B``: a win for A
  when ``diff > 1e-9``, a loss when ``diff < -1e-9``, else a tie; the mean difference gets a paired
  bootstrap interval the same way.

Plots are drawn with matplotlib (object API, no pyplot, Agg-free SVG backend) and embedded as inline
SVG, so the HTML file references nothing outside itself.
"""

from __future__ import annotations

import html
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ragline.evaluate.beir import METRICS
from ragline.evaluate.depth import depth_rows
from ragline.evaluate.experiments import FORMAT

TIE = 1e-9
LABELS = {"ndcg@10": "nDCG@10", "recall@10": "R@10", "recall@100": "R@100", "precision@10": "P@10",
          "hit_rate@10": "Hit@10", "mrr@10": "MRR@10", "map@100": "MAP@100"}
FIGURES = ("metrics", "latency", "wins")  # figure kinds, in page order


class ReportInputError(ValueError):
    """The results object is not an `eval run` or `eval beir --output` result; the message says why."""


# ------------------------------------------------------------------------------ reading results
@dataclass
class ConfigView:
    name: str
    mode: str
    settings: dict[str, Any]
    metrics: dict[str, float]  # means as stored in the file
    per_query: dict[str, dict[str, float]]  # query id -> metric -> value
    latency_ms: dict[str, float]  # percentiles as stored
    latencies: dict[str, float] | None  # query id -> ms; None when the file has no per-query latency
    index: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    kind: str  # "experiment" | "beir"
    dataset: str
    fingerprint: str
    documents: int | None
    queries: int | None
    max_queries: int | None
    max_docs: int | None
    version: str | None
    commit: str | None
    timestamp: str | None
    configs: list[ConfigView]
    query_text: dict[str, str]
    raw: dict[str, Any]

    def config(self, name: str) -> ConfigView:
        for c in self.configs:
            if c.name == name:
                return c
        raise ReportInputError(f"no configuration named '{name}' in the results "
                               f"(there are: {', '.join(c.name for c in self.configs)})")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _metric_values(per_query: Any, where: str) -> dict[str, dict[str, float]]:
    if not isinstance(per_query, dict) or not per_query:
        raise ReportInputError(f"{where}: no per-query results")
    out: dict[str, dict[str, float]] = {}
    for qid, values in per_query.items():
        if not isinstance(values, dict):
            raise ReportInputError(f"{where}.{qid}: expected an object of metric values")
        out[qid] = {m: float(values[m]) for m in METRICS if m in values and _num(values[m])}
        if not out[qid]:
            raise ReportInputError(f"{where}.{qid}: none of the metrics {', '.join(METRICS)}")
    return out


def _means(per_query: dict[str, dict[str, float]]) -> dict[str, float]:
    names = [m for m in METRICS if all(m in v for v in per_query.values())]
    return {m: sum(v[m] for v in per_query.values()) / len(per_query) for m in names}


def parse_results(data: Any, label: str = "results") -> Results:
    """Normalise an `eval run` or `eval beir --output` object; raise ReportInputError on any other shape."""
    if not isinstance(data, dict):
        raise ReportInputError(f"{label}: expected a JSON object from `ragline eval run --output` or "
                               f"`ragline eval beir --output`, got {type(data).__name__}")
    fp = data.get("dataset_fingerprint")
    if not isinstance(fp, str) or not fp:
        raise ReportInputError(f"{label}: no dataset_fingerprint; not an `eval run` or `eval beir --output` result")
    common = dict(dataset=str(data.get("dataset", "?")), fingerprint=fp, documents=data.get("documents"),
                  queries=data.get("queries"), max_queries=data.get("max_queries"), max_docs=data.get("max_docs"),
                  version=data.get("ragline_version"), commit=data.get("git_commit"),
                  timestamp=data.get("timestamp"), raw=data)
    if data.get("format") == FORMAT:
        configs = data.get("configs")
        if not isinstance(configs, dict) or not configs:
            raise ReportInputError(f"{label}: 'configs' must be a non-empty object of configurations")
        views = []
        for name, c in configs.items():
            where = f"{label}: configs.{name}"
            if not isinstance(c, dict):
                raise ReportInputError(f"{where}: expected an object")
            pq = c.get("per_query")
            values = _metric_values(pq, f"{where}.per_query")
            lat = {q: float(v["latency_ms"]) for q, v in pq.items() if _num(v.get("latency_ms"))}
            latency = c.get("latency_ms") if isinstance(c.get("latency_ms"), dict) else {}
            views.append(ConfigView(str(name), str(c.get("mode", "?")), c.get("settings") or {},
                                    _means(values), values, latency, lat if len(lat) == len(pq) else None,
                                    c.get("index") or {}))
        qt = data.get("query_text")
        return Results(kind="experiment", configs=views, query_text=qt if isinstance(qt, dict) else {}, **common)
    per_query, modes = data.get("per_query"), data.get("modes")
    if isinstance(modes, dict) and isinstance(per_query, dict) and per_query:
        settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
        views = []
        for mode, pq in per_query.items():
            values = _metric_values(pq, f"{label}: per_query.{mode}")
            stored = modes.get(mode) if isinstance(modes.get(mode), dict) else {}
            latency = {k.removeprefix("latency_ms_"): v for k, v in stored.items()
                       if k.startswith("latency_ms_") and _num(v)}
            views.append(ConfigView(str(mode), str(mode), {**settings, "mode": mode}, _means(values), values,
                                    latency, None))
        return Results(kind="beir", configs=views, query_text={}, **common)
    if isinstance(modes, dict):
        raise ReportInputError(f"{label}: no per_query results; write the file with `ragline eval beir --output FILE`")
    raise ReportInputError(f"{label}: neither 'configs' (eval run) nor 'modes' and 'per_query' (eval beir)")


# ------------------------------------------------------------------------------ statistics
def bootstrap_mean_ci(values: Sequence[float] | np.ndarray, resamples: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap interval of the mean over resampled items."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    block = max(1, 2_000_000 // v.size)
    for i in range(0, resamples, block):
        b = min(block, resamples - i)
        means[i:i + b] = v[rng.integers(0, v.size, size=(b, v.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(v.mean()), float(lo), float(hi)


def compare_configs(a: ConfigView, b: ConfigView, metrics: Sequence[str], resamples: int, seed: int
                    ) -> dict[str, Any]:
    """Per metric over the queries both scored: wins (A better), losses, ties, mean A-B with its paired CI."""
    common = sorted(set(a.per_query) & set(b.per_query))
    out: dict[str, Any] = {"a": a.name, "b": b.name, "queries": len(common), "metrics": {}}
    for m in metrics:
        qs = [q for q in common if m in a.per_query[q] and m in b.per_query[q]]
        d = np.array([a.per_query[q][m] - b.per_query[q][m] for q in qs])
        mean, lo, hi = bootstrap_mean_ci(d, resamples, seed)
        out["metrics"][m] = {"wins": int((d > TIE).sum()), "losses": int((d < -TIE).sum()),
                             "ties": int((np.abs(d) <= TIE).sum()), "mean_diff": mean, "ci": [lo, hi],
                             "diffs": {q: float(x) for q, x in zip(qs, d)}}
    return out


def summarise(res: Results, compare: tuple[str, str] | None = None, metric: str = "ndcg@10",
              resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Means with CIs per configuration and metric, latency, and the A/B comparison (None with one config)."""
    if metric not in METRICS:
        raise ReportInputError(f"unknown metric '{metric}'; use one of {', '.join(METRICS)}")
    if resamples < 1:
        raise ReportInputError(f"resamples must be 1 or more, not {resamples}")
    configs = {}
    for c in res.configs:
        cis = {}
        for m in METRICS:
            vals = [v[m] for v in c.per_query.values() if m in v]
            if vals:
                mean, lo, hi = bootstrap_mean_ci(vals, resamples, seed)
                cis[m] = {"mean": mean, "ci": [lo, hi]}
        configs[c.name] = {"mode": c.mode, "queries": len(c.per_query), "metrics": cis, "latency_ms": c.latency_ms}
    comparison = None
    if compare is not None:
        a, b = compare
        if a == b:
            raise ReportInputError(f"--compare needs two different configurations, got '{a}' twice")
        comparison = compare_configs(res.config(a), res.config(b), METRICS, resamples, seed)
    elif len(res.configs) >= 2:
        comparison = compare_configs(res.configs[0], res.configs[1], METRICS, resamples, seed)
    return {"dataset": res.dataset, "dataset_fingerprint": res.fingerprint, "kind": res.kind,
            "metric": metric, "resamples": resamples, "seed": seed, "level": 0.95,
            "configs": configs, "comparison": comparison, "differences": setting_differences(res)}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def setting_differences(res: Results) -> dict[str, dict[str, Any]]:
    """setting -> configuration -> value, for the settings whose values are not the same everywhere."""
    flat = {c.name: _flatten(c.settings) for c in res.configs}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    return {k: {n: f.get(k) for n, f in flat.items()} for k in keys
            if len({repr(f.get(k)) for f in flat.values()}) > 1}


# ------------------------------------------------------------------------------ markdown
def _fmt(v: Any, digits: int = 4) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(res: Results, summary: dict[str, Any]) -> str:
    metric = summary["metric"]
    lines = [f"# Retrieval experiment: {_md_cell(res.dataset)}", ""]
    lines.append(f"{res.documents} documents, {res.queries} queries (max_queries {res.max_queries}, "
                 f"max_docs {res.max_docs}); dataset fingerprint `{res.fingerprint}`; ragline {res.version}, "
                 f"commit {res.commit or 'unknown'}; {res.timestamp or ''}".rstrip("; "))
    lines += ["", f"Means over queries; {LABELS[metric]} with its 95% bootstrap interval "
                  f"({summary['resamples']} resamples, seed {summary['seed']}).", ""]
    cols = [m for m in METRICS if m != metric]
    head = ["config", "mode", f"{LABELS[metric]} [95% CI]", *[LABELS[m] for m in cols], "p50 ms", "p95 ms"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("| " + " | ".join(["---", "---"] + ["---:"] * (len(head) - 2)) + " |")
    for c in res.configs:
        s = summary["configs"][c.name]["metrics"]
        main = s.get(metric)
        cell = f"{_fmt(main['mean'])} [{_fmt(main['ci'][0])}, {_fmt(main['ci'][1])}]" if main else "-"
        lat = c.latency_ms
        lines.append("| " + " | ".join([_md_cell(c.name), _md_cell(c.mode), cell,
                                         *[_fmt(s[m]["mean"]) if m in s else "-" for m in cols],
                                         _fmt(lat.get("p50"), 1), _fmt(lat.get("p95"), 1)]) + " |")
    depth = depth_rows(res.configs, metric)
    if depth:
        lines += ["", f"Rerank depth: {LABELS[metric]} and latency against the first configuration of the same "
                      "mode without rerank (the baseline).", "",
                  f"| config | reranker | depth | {LABELS[metric]} | baseline | delta | p50 ms | p99 ms | "
                  "baseline p50 / p99 ms |", "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
        for r in depth:
            lines.append("| " + " | ".join([
                _md_cell(r["config"]), _md_cell(r["reranker"]), str(r["depth"]), _fmt(r["value"]),
                _md_cell(r["baseline"] or "-"), "-" if r["delta"] is None else f"{r['delta']:+.4f}",
                _fmt(r["p50"], 1), _fmt(r["p99"], 1), f"{_fmt(r['baseline_p50'], 1)} / {_fmt(r['baseline_p99'], 1)}"]) + " |")
    diffs = summary["differences"]
    if diffs:
        lines += ["", "Settings that differ:", ""]
        for key, per in diffs.items():
            lines.append(f"- `{key}`: " + ", ".join(f"{_md_cell(n)} = `{v}`" for n, v in per.items()))
    cmp = summary["comparison"]
    if cmp:
        m = cmp["metrics"][metric]
        lines += ["", f"{_md_cell(cmp['a'])} vs {_md_cell(cmp['b'])} on {LABELS[metric]} over {cmp['queries']} "
                      f"queries: {m['wins']} wins, {m['losses']} losses, {m['ties']} ties; mean difference "
                      f"{m['mean_diff']:+.4f} [95% CI {m['ci'][0]:+.4f}, {m['ci'][1]:+.4f}]."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ figures
def _figures(res: Results, summary: dict[str, Any]) -> dict[str, Any]:
    from matplotlib.figure import Figure

    colors = ["#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5"]
    figs: dict[str, Any] = {}
    names = [c.name for c in res.configs]

    # 1. metric bars with 95% bootstrap intervals
    fig = Figure(figsize=(9, 4.2))
    ax = fig.subplots()
    width = 0.8 / max(1, len(names))
    x = np.arange(len(METRICS))
    for i, name in enumerate(names):
        s = summary["configs"][name]["metrics"]
        means = np.array([s[m]["mean"] if m in s else np.nan for m in METRICS])
        lo = np.array([s[m]["ci"][0] if m in s else np.nan for m in METRICS])
        hi = np.array([s[m]["ci"][1] if m in s else np.nan for m in METRICS])
        ax.bar(x + (i - (len(names) - 1) / 2) * width, means, width, yerr=[means - lo, hi - means], capsize=2,
               label=name, color=colors[i % len(colors)], error_kw={"elinewidth": 0.8})
    ax.set_xticks(x, [LABELS[m] for m in METRICS])
    ax.set_ylim(0, 1.22 if len(names) <= 5 else 1.35)  # room above the bars for the legend
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("mean over queries")
    ax.set_title("Metrics with 95% bootstrap intervals")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncols=min(5, len(names)), frameon=False)
    fig.tight_layout()
    figs["metrics"] = fig

    # 2. latency distributions (per-query values when the file has them, else the stored percentiles)
    fig = Figure(figsize=(9, 0.9 + 0.55 * len(names)))
    ax = fig.subplots()
    if all(c.latencies for c in res.configs):
        data = [list(c.latencies.values()) for c in res.configs]  # type: ignore[union-attr]
        box = ax.boxplot(data, orientation="horizontal", tick_labels=names, whis=(5, 95), showmeans=True,
                         patch_artist=True, flierprops={"markersize": 3, "alpha": 0.5})
        for patch, color in zip(box["boxes"], colors * 8):
            patch.set_facecolor(color)
            patch.set_alpha(0.6)
        flat = [v for d in data for v in d if v > 0]
        if flat and max(flat) / max(min(flat), 1e-9) > 30:
            ax.set_xscale("log")
        ax.set_title("Search latency per query (box: quartiles, whiskers: p5-p95, triangle: mean)")
    else:
        y = np.arange(len(names))
        for j, (q, marker) in enumerate((("p50", "o"), ("p95", "s"))):
            ax.scatter([c.latency_ms.get(q, np.nan) for c in res.configs], y, marker=marker, label=q, zorder=3)
        ax.set_yticks(y, names)
        ax.legend(fontsize=8)
        ax.set_title("Search latency percentiles (the file holds no per-query latency)")
    ax.set_xlabel("ms")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    figs["latency"] = fig

    # 3. per-query wins and losses of A against B
    cmp = summary["comparison"]
    if cmp:
        metric = summary["metric"]
        m = cmp["metrics"][metric]
        d = np.sort(np.array(list(m["diffs"].values())))[::-1]
        fig = Figure(figsize=(9, 3.6))
        ax = fig.subplots()
        bar_colors = ["#3ca951" if v > TIE else "#e0443e" if v < -TIE else "#999999" for v in d]
        ax.bar(np.arange(len(d)), d, 1.0, color=bar_colors, linewidth=0)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.axhline(m["mean_diff"], color="#444444", linewidth=0.8, linestyle="--",
                   label=f"mean {m['mean_diff']:+.4f} [{m['ci'][0]:+.4f}, {m['ci'][1]:+.4f}]")
        ax.set_xlim(-0.5, max(len(d), 1) - 0.5)
        ax.set_xlabel("queries, sorted by difference")
        ax.set_ylabel(f"{LABELS[metric]}: {cmp['a']} - {cmp['b']}")
        ax.set_title(f"{cmp['a']} vs {cmp['b']}: {m['wins']} wins, {m['losses']} losses, {m['ties']} ties")
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        figs["wins"] = fig
    return figs


def figures(res: Results, summary: dict[str, Any]) -> dict[str, Any]:
    """The report's matplotlib figures by kind (``FIGURES``); 'wins' only when there is a comparison."""
    import matplotlib

    with matplotlib.rc_context({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False}):
        return _figures(res, summary)


_XMLNS = re.compile(r'\s+xmlns(:[\w-]+)?="[^"]*"')


def svg(fig, salt: str) -> str:
    """The figure as an inline ``<svg>`` element for HTML: no XML prolog, DOCTYPE, metadata or namespace
    URIs (the HTML parser needs none), text kept as text, element ids unique to ``salt``."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"ragline-{salt}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    head_end = text.index(">")
    text = _XMLNS.sub("", text[:head_end]) + text[head_end:]
    # ids are per document in HTML: prefix every id and every reference to one with the figure's name
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{salt}-{m.group(1)}"', text)
    text = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#{salt}-{m.group(1)})", text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{salt}-{m.group(1)}"', text)
    return text.strip()


# ------------------------------------------------------------------------------ html
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;
color:#222;line-height:1.4}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.ci{color:#777;font-size:.75rem;display:block}.meta{color:#555;font-size:.85rem}
figure{margin:1rem 0}svg{max-width:100%;height:auto}code{font-size:.85em}
.win{color:#2a7d3a}.loss{color:#c0332e}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def render_html(res: Results, summary: dict[str, Any], figs: dict[str, Any] | None = None) -> str:
    figs = figures(res, summary) if figs is None else figs
    metric = summary["metric"]
    p: list[str] = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                    f"<title>ragline experiment: {_e(res.dataset)}</title>", f"<style>{_CSS}</style></head><body>",
                    f"<h1>Retrieval experiment: {_e(res.dataset)}</h1>",
                    f'<p class="meta">{_e(res.documents)} documents, {_e(res.queries)} queries '
                    f"(max_queries {_e(res.max_queries)}, max_docs {_e(res.max_docs)}) &middot; dataset fingerprint "
                    f"<code>{_e(res.fingerprint)}</code> &middot; ragline {_e(res.version)} &middot; commit "
                    f"<code>{_e(res.commit or 'unknown')}</code> &middot; {_e(res.timestamp or '')} &middot; "
                    f"source: <code>eval {'run' if res.kind == 'experiment' else 'beir'}</code></p>"]

    p.append("<h2>Summary</h2>")
    p.append(f'<p class="meta">Means over queries; under each, its 95% percentile-bootstrap interval '
             f"({summary['resamples']} resamples over queries, seed {summary['seed']}). Latency in ms.</p>")
    p.append('<table><tr><th class="l">config</th><th class="l">mode</th>'
             + "".join(f"<th>{LABELS[m]}</th>" for m in METRICS) + "<th>p50 ms</th><th>p95 ms</th></tr>")
    for c in res.configs:
        s = summary["configs"][c.name]["metrics"]
        cells = []
        for m in METRICS:
            if m in s:
                lo, hi = s[m]["ci"]
                cells.append(f"<td>{s[m]['mean']:.4f}<span class=\"ci\">{lo:.3f}&ndash;{hi:.3f}</span></td>")
            else:
                cells.append("<td>-</td>")
        p.append(f'<tr><td class="l">{_e(c.name)}</td><td class="l">{_e(c.mode)}</td>' + "".join(cells)
                 + f"<td>{_fmt(c.latency_ms.get('p50'), 1)}</td><td>{_fmt(c.latency_ms.get('p95'), 1)}</td></tr>")
    p.append("</table>")

    depth = depth_rows(res.configs, metric)
    if depth:
        p.append("<h2>Rerank depth</h2>")
        p.append(f'<p class="meta">{LABELS[metric]} and latency (ms) of each reranked configuration against the '
                 "first configuration of the same mode without rerank.</p>")
        p.append('<table data-table="depth"><tr><th class="l">config</th><th class="l">reranker</th><th>depth</th>'
                 f'<th>{LABELS[metric]}</th><th class="l">baseline</th><th>delta</th><th>p50</th><th>p99</th>'
                 "<th>baseline p50 / p99</th></tr>")
        for r in depth:
            delta = "-" if r["delta"] is None else f"{r['delta']:+.4f}"
            p.append(f'<tr><td class="l">{_e(r["config"])}</td><td class="l">{_e(r["reranker"])}</td>'
                     f'<td>{_e(r["depth"])}</td><td>{_fmt(r["value"])}</td><td class="l">{_e(r["baseline"] or "-")}</td>'
                     f"<td>{delta}</td><td>{_fmt(r['p50'], 1)}</td><td>{_fmt(r['p99'], 1)}</td>"
                     f"<td>{_fmt(r['baseline_p50'], 1)} / {_fmt(r['baseline_p99'], 1)}</td></tr>")
        p.append("</table>")
    diffs = summary["differences"]
    if diffs:
        p.append("<h2>Settings that differ</h2><table><tr><th class=\"l\">setting</th>"
                 + "".join(f'<th class="l">{_e(c.name)}</th>' for c in res.configs) + "</tr>")
        for key, per in diffs.items():
            p.append(f'<tr><td class="l"><code>{_e(key)}</code></td>'
                     + "".join(f'<td class="l">{_e(per.get(c.name))}</td>' for c in res.configs) + "</tr>")
        p.append("</table>")

    titles = {"metrics": "Metrics", "latency": "Latency", "wins": "Per-query wins and losses"}
    for kind in FIGURES:
        if kind not in figs:
            continue
        p.append(f"<h2>{titles[kind]}</h2>")
        if kind == "wins":
            p.append(_comparison_html(res, summary))
        p.append(f'<figure data-figure="{kind}">{svg(figs[kind], kind)}</figure>')

    if res.kind == "experiment":
        p.append("<h2>Indexes</h2><table><tr><th class=\"l\">index</th><th class=\"l\">used by</th>"
                 "<th>documents</th><th>chunks</th><th>embedded</th><th>from cache</th><th>seconds</th>"
                 "<th class=\"l\">reused from disk</th></tr>")
        for key, info in (res.raw.get("indexes") or {}).items():
            ing = info.get("ingest") or {}
            p.append(f'<tr><td class="l"><code>{_e(key)}</code></td><td class="l">{_e(", ".join(info.get("used_by", [])))}'
                     f"</td><td>{_e(ing.get('documents', '-'))}</td><td>{_e(ing.get('chunks', '-'))}</td>"
                     f"<td>{_e(ing.get('embedded', '-'))}</td><td>{_e(ing.get('from_cache', '-'))}</td>"
                     f"<td>{_e(ing.get('seconds', '-'))}</td><td class=\"l\">{_e(info.get('reused_from_disk'))}</td></tr>")
        p.append("</table>")
    p.append(f'<p class="meta">Written by <code>ragline eval report</code> from {_e(len(res.configs))} '
             f"configuration(s); {LABELS[metric]} is the comparison metric.</p></body></html>")
    return "\n".join(p) + "\n"


def _comparison_html(res: Results, summary: dict[str, Any]) -> str:
    cmp, metric = summary["comparison"], summary["metric"]
    rows = ["<table><tr><th class=\"l\">metric</th><th>wins</th><th>losses</th><th>ties</th>"
            "<th>mean A&minus;B</th><th>95% CI</th></tr>"]
    for m in METRICS:
        v = cmp["metrics"][m]
        rows.append(f'<tr><td class="l">{LABELS[m]}</td><td>{v["wins"]}</td><td>{v["losses"]}</td>'
                    f'<td>{v["ties"]}</td><td>{v["mean_diff"]:+.4f}</td>'
                    f'<td>{v["ci"][0]:+.4f} &ndash; {v["ci"][1]:+.4f}</td></tr>')
    rows.append("</table>")
    head = (f"<p>A = <b>{_e(cmp['a'])}</b>, B = <b>{_e(cmp['b'])}</b>, over the {cmp['queries']} queries both "
            f"scored. A win is a query where A scores higher.</p>")
    diffs = cmp["metrics"][metric]["diffs"]
    order = sorted(diffs.items(), key=lambda kv: kv[1])
    a, b = res.config(cmp["a"]), res.config(cmp["b"])

    def listing(items: list[tuple[str, float]], cls: str, title: str) -> str:
        items = [(q, d) for q, d in items if (d > TIE if cls == "win" else d < -TIE)]
        if not items:
            return ""
        out = [f"<h3 style=\"font-size:1rem\">{title}</h3><table><tr><th class=\"l\">query</th>"
               f"<th class=\"l\">text</th><th>A</th><th>B</th><th>A&minus;B</th></tr>"]
        for q, d in items:
            out.append(f'<tr><td class="l">{_e(q)}</td><td class="l">{_e(res.query_text.get(q, ""))}</td>'
                       f"<td>{a.per_query[q][metric]:.3f}</td><td>{b.per_query[q][metric]:.3f}</td>"
                       f'<td class="{cls}">{d:+.3f}</td></tr>')
        out.append("</table>")
        return "".join(out)

    return (head + "".join(rows) + listing(order[::-1][:10], "win", f"Largest wins of A ({LABELS[metric]})")
            + listing(order[:10], "loss", f"Largest losses of A ({LABELS[metric]})"))
