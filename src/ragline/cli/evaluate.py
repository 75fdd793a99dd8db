"""`ragline eval ...`: parse the options, call one run of ragline.evaluate.runs, present its result."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from ragline.cli import eval_app
from ragline.cli.common import (HomeOpt, JsonOpt, UserError, emit_json, engine_for, err, guard, out, print_table,
                                progress_bar, require_index, settings_for)


def experiment_events(progress: Progress) -> Callable[[str, dict], None]:
    """Progress bars for the events of an experiment run (eval run, tune): one per index built, one per
    configuration scored. The bar is lazy (see ``progress_bar``): it appears with the first event."""
    tasks: dict[str, Any] = {}

    def on_event(kind: str, d: dict) -> None:
        progress.start()  # at the first event, when the run has begun
        if kind == "index-start":
            tasks["index"] = progress.add_task(f"indexing for {d['config']}", total=d["documents"], rate="")
        elif kind == "index-progress":
            progress.update(tasks["index"], completed=d["done"], rate=f"{d['chunks']} chunks")
        elif kind == "query-start":
            tasks[d["config"]] = progress.add_task(f"{d['config']} ({d['mode']})", total=d["queries"], rate="")
        elif kind == "query-progress":
            progress.update(tasks[d["config"]], completed=d["done"])

    return on_event


def _beir_events(progress: Progress) -> Callable[[str, dict], None]:
    tasks: dict[str, Any] = {}
    count = {"n": 0}

    def on_event(kind: str, d: dict) -> None:
        if kind == "index-start":
            progress.start()
            tasks["index"] = progress.add_task("indexing", total=d["documents"], rate="")
        elif kind == "index-progress":
            el = progress.tasks[tasks["index"]].elapsed or 1e-9
            progress.update(tasks["index"], completed=d["done"],
                            rate=f"{d['done'] / el:.1f} docs/s, {d['chunks']} chunks")
        elif kind == "query-start":
            tasks["query"] = progress.add_task("querying", total=d["total"], rate="")
        elif kind == "query-progress":
            count["n"] += 1
            progress.update(tasks["query"], completed=count["n"], rate=d["mode"])

    return on_event


def _answer_events(progress: Progress) -> Callable[[str, dict], None]:
    task: list[Any] = []

    def on_event(kind: str, d: dict) -> None:
        if kind == "answer-start":
            progress.start()
            task.append(progress.add_task("answering", total=d["items"], rate=""))
        elif kind == "answer-progress":
            progress.update(task[0], completed=d["done"])

    return on_event


# ------------------------------------------------------------------------------------------ beir
@eval_app.command("beir")
def eval_beir(
    path: Path = typer.Argument(..., help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv"),
    modes: str = typer.Option("dense,sparse,hybrid", help="comma-separated modes"),
    split: str = typer.Option("test", help="qrels split file name"),
    index_dir: Optional[Path] = typer.Option(None, help="where to build the index [default: a temporary directory]"),
    max_queries: Optional[int] = typer.Option(None, help="score only the first N queries"),
    max_docs: Optional[int] = typer.Option(None, help="index only the documents judged for the scored queries "
                                                      "plus the first N others in corpus order (a fast slice)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="also write the JSON result, with per-query values, here"),
    per_query: bool = typer.Option(False, "--per-query", help="include per-query values in --json output"),
    rerank: Optional[str] = typer.Option(None, "--rerank", help="second stage: none | minilm | cross-encoder | "
                                                                "http | llm [default: rerank.method]"),
    rerank_depth: Optional[int] = typer.Option(None, "--rerank-depth", help="candidates reranked [default: rerank.depth]"),
    transform: Optional[str] = typer.Option(None, "--transform", help="query transformation (none | prf | hyde | "
                                                                      "multi-query | decompose | step-back)"),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Index a BEIR dataset from scratch and report nDCG@10, recall, precision, hit rate, MRR, MAP and
    latency per mode."""

    def go() -> None:
        from ragline.evaluate.runs import run_beir

        wanted = [m.strip() for m in modes.split(",") if m.strip()]
        with progress_bar(not as_json and err.is_terminal, lazy=True) as progress:
            given = {"rerank": {"method": rerank, "depth": rerank_depth}, "transform": {"method": transform}}
            overrides = {s: {k: v for k, v in vals.items() if v is not None} for s, vals in given.items()}
            data = run_beir(path, wanted, split=split, max_queries=max_queries, max_docs=max_docs,
                            index_dir=index_dir, output=output, home=home, on_event=_beir_events(progress),
                            overrides={s: v for s, v in overrides.items() if v})
        if as_json:
            emit_json(data if per_query else {k: v for k, v in data.items() if k != "per_query"})
            return
        t = Table(title=f"{path.name}: {data['documents']} documents, {data['queries']} queries")
        cols = ["ndcg@10", "recall@10", "recall@100", "precision@10", "hit_rate@10", "mrr@10", "map@100",
                "latency_ms_p50", "latency_ms_p95", "latency_ms_p99"]
        labels = ["nDCG@10", "R@10", "R@100", "P@10", "Hit@10", "MRR@10", "MAP@100", "p50 ms", "p95 ms", "p99 ms"]
        t.add_column("mode")
        for label in labels:
            t.add_column(label, justify="right")
        for mode, m in data["modes"].items():
            t.add_row(mode, *[f"{m[c]:.4f}" if not c.startswith("lat") else f"{m[c]:.1f}" for c in cols])
        print_table(t)
        ingest_stats = data["ingest"]
        out.print(f"indexed in {ingest_stats['seconds']:.1f}s ({ingest_stats['docs_per_s']:.1f} docs/s, "
                  f"{ingest_stats['chunks']} chunks, {ingest_stats['embedded']} embedded)")

    guard(go)


# ------------------------------------------------------------------------------------------- run
def _print_run(path: Path, data: dict, output: Optional[Path]) -> None:
    t = Table(title=f"{path.name}: {data['documents']} documents, {data['queries']} queries")
    cols = ["ndcg@10", "recall@10", "recall@100", "precision@10", "hit_rate@10", "mrr@10", "map@100"]
    labels = ["nDCG@10", "R@10", "R@100", "P@10", "Hit@10", "MRR@10", "MAP@100"]
    t.add_column("config", overflow="fold", min_width=min(24, max(len(n) for n in data["configs"])))
    for label in ["mode", *labels, "p50 ms", "p99 ms", "index"]:
        t.add_column(label, justify="left" if label in ("mode", "index") else "right", no_wrap=True)
    for name, c in data["configs"].items():
        t.add_row(Text(name), c["mode"], *[f"{c['metrics'][m]:.4f}" for m in cols],
                  f"{c['latency_ms']['p50']:.1f}", f"{c['latency_ms']['p99']:.1f}", c["index"]["key"][:8])
    print_table(t)
    _print_depths(data)
    for key, info in data["indexes"].items():
        ing = info["ingest"]
        how = "reused from --index-dir; when built: " if info["reused_from_disk"] else "built: "
        out.print(f"index {key[:8]} ({info['embedding_model']}): {how}{ing.get('chunks')} chunks, "
                  f"{ing.get('embedded')} embedded, {ing.get('from_cache')} from cache, "
                  f"{ing.get('seconds', 0):.1f}s; used by {', '.join(info['used_by'])}", markup=False)
    if output:
        out.print(f"results written to {output}; render them with `ragline eval report {output} --html "
                  f"report.html`", markup=False)


def _print_depths(data: dict) -> None:
    """The rerank depth curve of an `eval run` result (nothing when no configuration reranks)."""
    from ragline.evaluate.report import parse_results
    from ragline.evaluate.depth import depth_rows

    rows = depth_rows(parse_results(data).configs)
    if not rows:
        return
    t = Table(title="rerank depth: nDCG@10 and latency against the baseline without rerank")
    for label in ("config", "reranker", "depth", "nDCG@10", "baseline", "delta", "p50 ms", "p99 ms",
                  "baseline p50/p99"):
        t.add_column(label, justify="left" if label in ("config", "reranker", "baseline") else "right")
    for r in rows:
        def f(v, d=4):
            return "-" if v is None else f"{v:.{d}f}"
        t.add_row(Text(r["config"]), str(r["reranker"]), str(r["depth"]), f(r["value"]), Text(r["baseline"] or "-"),
                  "-" if r["delta"] is None else f"{r['delta']:+.4f}", f(r["p50"], 1), f(r["p99"], 1),
                  f"{f(r['baseline_p50'], 1)} / {f(r['baseline_p99'], 1)}")
    print_table(t)


@eval_app.command("run")
def eval_run(
    path: Path = typer.Argument(..., help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv"),
    config: Optional[list[str]] = typer.Option(None, "--config", "-c",
                                               help="a configuration, repeatable: FILE.toml with [chunk], [embed], "
                                                    "[retrieve] sections, or inline NAME:section.key=value,..."),
    split: str = typer.Option("test", help="qrels split file name"),
    max_queries: Optional[int] = typer.Option(None, help="score only the first N queries"),
    max_docs: Optional[int] = typer.Option(None, help="index only the documents judged for the scored queries "
                                                      "plus the first N others in corpus order (a fast slice)"),
    index_dir: Optional[Path] = typer.Option(None, help="keep indexes here, one per index key, and reuse them in "
                                                        "later runs [default: a temporary directory]"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write the results JSON here"),
    per_query: bool = typer.Option(False, "--per-query", help="include per-query values in --json output"),
    depths: Optional[str] = typer.Option(None, "--depths", help="rerank depth curve: each configuration that "
                                                               "reranks is run at these candidate depths, e.g. 20,50,100"),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Score several configurations on one BEIR dataset, sharing the dataset, the embedding cache and
    indexes, into one results file (render it with `ragline eval report`)."""

    def go() -> None:
        from ragline.evaluate.depth import expand_depths, parse_depths
        from ragline.evaluate.experiments import ExperimentError, load_configs
        from ragline.evaluate.runs import run_experiments

        where_home = Path(home or ".ragline")
        try:
            configs = expand_depths(load_configs(list(config or []), where_home), parse_depths(depths))
        except ExperimentError as exc:
            raise UserError(str(exc)) from None
        with progress_bar(not as_json and err.is_terminal, lazy=True) as progress:
            data = run_experiments(path, configs, split=split, max_queries=max_queries, max_docs=max_docs,
                                   home=where_home, index_dir=index_dir, output=output,
                                   on_event=experiment_events(progress))
        if as_json:
            if not per_query:
                data = {**{k: v for k, v in data.items() if k != "query_text"},
                        "configs": {n: {k: v for k, v in c.items() if k != "per_query"}
                                    for n, c in data["configs"].items()}}
            emit_json(data)
            return
        _print_run(path, data, output)

    guard(go)


# ---------------------------------------------------------------------------------------- report
@eval_app.command("report")
def eval_report(
    results: Path = typer.Argument(..., help="an `eval run --output` (or `eval beir --output`) results file"),
    html_out: Optional[Path] = typer.Option(None, "--html", help="write a self-contained HTML report here"),
    md_out: Optional[Path] = typer.Option(None, "--md", help="write a Markdown summary here"),
    compare: Optional[tuple[str, str]] = typer.Option(None, "--compare", metavar="A B",
                                                      help="the two configurations to compare per query "
                                                           "[default: the first two]"),
    metric: str = typer.Option("ndcg@10", help="metric of the per-query comparison and the Markdown CI column"),
    resamples: int = typer.Option(2000, help="bootstrap resamples"),
    seed: int = typer.Option(0, help="bootstrap random seed"),
    as_json: bool = JsonOpt,
) -> None:
    """Render results as an HTML report (inline SVG plots: metrics with 95% bootstrap intervals, latency,
    per-query wins and losses) and a Markdown table; with neither --html nor --md, print the Markdown."""

    def go() -> None:
        from ragline.evaluate.report import ReportInputError
        from ragline.evaluate.runs import run_report

        try:
            report = run_report(results, tuple(compare) if compare else None, metric, resamples, seed,
                                html_out, md_out)
        except ReportInputError as exc:
            raise UserError(str(exc)) from None
        if as_json:
            emit_json({**report.summary, "written": report.written})
        elif report.written:
            for w in report.written:
                out.print(f"wrote {w}", markup=False)
        else:
            out.print(report.markdown, end="", markup=False)

    guard(go)


# --------------------------------------------------------------------------------------- answers
def _print_answers(path: Path, k: int, run: Any) -> None:
    result, data = run.result, run.data
    t = Table(title=f"{path.name}: {result.counts['items']} questions, k={k}, mode {result.mode}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for name, v in data["answers"].items():
        t.add_row(name, "-" if v is None else f"{v:.4f}")
    for name, v in (data["retrieval"] or {}).items():
        t.add_row(name, f"{v:.4f}")
    t.add_row("latency p50 ms", f"{data['latency_ms_p50']:.1f}")
    t.add_row("latency p95 ms", f"{data['latency_ms_p95']:.1f}")
    t.add_row("latency p99 ms", f"{data['latency_ms_p99']:.1f}")
    print_table(t)
    out.print(f"judge: {result.judge}")

    def tok(v: float | None) -> str:
        return "unknown (the endpoint sent no usage)" if v is None else f"{v:.0f}"

    for key, who in (("answer_usage", "answering LLM"), ("judge_usage", "judge LLM")):
        if key in data:
            u = data[key]
            cost = u["cost_per_query"]
            extra = f"; unparsed verdicts {result.counts.get('unparsed_verdicts', 0)}" if key == "judge_usage" else ""
            out.print(f"{who}: {u['calls']} calls; per query {tok(u['prompt_tokens_per_query'])} prompt + "
                      f"{tok(u['completion_tokens_per_query'])} completion tokens; cost per query "
                      + ("unknown (set llm.price_input_per_1k / price_output_per_1k)" if cost is None
                         else f"{cost:.6f}") + extra)


@eval_app.command("answers")
def eval_answers(
    path: Path = typer.Argument(..., help="QA JSONL file: id, question, answer?, relevant_ids?, answerable?"),
    k: int = typer.Option(5, "-k", "--top-k", help="passages given to the answerer (and depth of retrieval metrics)"),
    mode: Optional[str] = typer.Option(None, help="hybrid | dense | sparse"),
    filter: Optional[str] = typer.Option(None, "--filter", help="restrict sources, see docs/filters.md"),
    max_items: Optional[int] = typer.Option(None, "--max-items", help="evaluate only the first N questions"),
    judge_name: str = typer.Option("offline", "--judge", help="offline (embedding model, no LLM) | llm (the "
                                                              "configured llm endpoint, versioned prompts)"),
    answerer: str = typer.Option("auto", "--answerer", help="auto (the LLM when llm.base_url is set, else "
                                                             "extractive) | extractive | llm"),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="also write the JSON result, with per-item answers and judgements"),
    strategy: Optional[str] = typer.Option(None, "--strategy",
                                           help="standard | corrective | self-check | agent [default: answer.strategy]"),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Answer every question of a QA file from the index and report judged answer metrics (faithfulness,
    hallucination, citations, abstention), retrieval metrics and latency."""

    def go() -> None:
        from ragline.evaluate.qa import load_qa
        from ragline.evaluate.runs import run_answers

        if mode and mode not in ("hybrid", "dense", "sparse"):
            raise UserError(f"--mode must be hybrid, dense or sparse, not '{mode}'")
        if judge_name not in ("offline", "llm"):
            raise UserError(f"--judge must be offline or llm, not '{judge_name}'")
        if answerer not in ("auto", "extractive", "llm"):
            raise UserError(f"--answerer must be auto, extractive or llm, not '{answerer}'")
        if k < 1:
            raise UserError(f"-k must be 1 or more, not {k}")
        if max_items is not None and max_items < 1:
            raise UserError(f"--max-items must be 1 or more, not {max_items}")
        items = load_qa(path)
        if max_items:
            items = items[:max_items]
        if not items:
            raise UserError(f"{path}: no questions")
        settings = settings_for(home)
        if (judge_name == "llm" or answerer == "llm") and not settings.llm.base_url:
            raise UserError(f"--{'judge' if judge_name == 'llm' else 'answerer'} llm needs an LLM endpoint: set "
                            "llm.base_url in config.toml or RAGLINE_LLM__BASE_URL=http://host:port/v1")
        engine = engine_for(settings)
        require_index(engine)
        with progress_bar(not as_json and err.is_terminal, lazy=True) as progress:
            run = run_answers(engine, items, dataset=path, k=k, mode=mode, filter=filter, max_items=max_items,
                              judge_name=judge_name, answerer=answerer, output=output,
                              on_event=_answer_events(progress), strategy=strategy)
        if as_json:
            emit_json(run.data)
            return
        _print_answers(path, k, run)

    guard(go)


# ----------------------------------------------------------------------------------------- synth
@eval_app.command("synth")
def eval_synth(
    output: Path = typer.Option(..., "--output", "-o", help="where to write the QA JSONL test set"),
    n: int = typer.Option(50, "--n", help="items to generate (60% factoid, 20% multi-hop, 20% unanswerable)"),
    seed: int = typer.Option(0, "--seed", help="random seed: the same seed and index give the same questions"),
    generator: str = typer.Option("heuristic", "--generator", help="heuristic (offline) | llm (the configured "
                                                                    "llm endpoint writes the questions)"),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Generate a synthetic QA test set (factoid, multi-hop, unanswerable) from the indexed chunks, in the
    format `ragline eval answers` reads, with provenance in every item."""

    def go() -> None:
        from ragline.evaluate.runs import run_synth
        from ragline.evaluate.synth import GENERATORS, SynthError

        if generator not in GENERATORS:
            raise UserError(f"--generator must be {' or '.join(GENERATORS)}, not '{generator}'")
        if n < 1:
            raise UserError(f"--n must be 1 or more, not {n}")
        settings = settings_for(home)
        if generator == "llm" and not settings.llm.base_url:
            raise UserError("--generator llm needs an LLM endpoint: set llm.base_url in config.toml or "
                            "RAGLINE_LLM__BASE_URL=http://host:port/v1")
        engine = engine_for(settings)
        require_index(engine)
        try:
            run = run_synth(engine, n=n, seed=seed, generator=generator, output=output)
        except SynthError as exc:
            raise UserError(str(exc)) from None
        if as_json:
            emit_json(run.summary)
            return
        result = run.result
        by = ", ".join(f"{v} {k}" for k, v in result.by_type.items())
        out.print(f"wrote {len(result.items)} items ({by}) to {output}", markup=False)
        out.print(f"generator {result.generator}, seed {seed}, index {result.index_fingerprint}; "
                  f"{result.duplicates_removed} duplicate(s) removed"
                  + (f", {result.rejected} LLM proposal(s) rejected" if generator == "llm" else ""), markup=False)
        for note in result.notes:
            out.print(f"note: {note}", markup=False)

    guard(go)


# ------------------------------------------------------------------------------------------ gate
@eval_app.command("gate")
def eval_gate(
    baseline: Path = typer.Option(..., "--baseline", help="result file of the accepted state (eval beir --output)"),
    current: Path = typer.Option(..., "--current", help="result file to check (eval beir --output)"),
    max_drop: float = typer.Option(..., "--max-drop", help="allowed fall of a metric's mean, e.g. 0.02"),
    metric: Optional[list[str]] = typer.Option(None, "--metric",
                                               help="metric to check, repeatable (default: ndcg@10)"),
    mode: Optional[list[str]] = typer.Option(None, "--mode",
                                             help="mode to check, repeatable (default: every mode in the baseline)"),
    resamples: int = typer.Option(10000, help="bootstrap resamples"),
    seed: int = typer.Option(0, help="bootstrap random seed"),
    alpha: float = typer.Option(0.05, help="significance level of the one-sided paired bootstrap"),
    as_json: bool = JsonOpt,
) -> None:
    """Fail (exit 1) when a metric dropped by more than --max-drop, significantly, between two result files."""

    def go() -> None:
        from ragline.evaluate.gate import GateInputError
        from ragline.evaluate.runs import run_gate

        try:
            result = run_gate(baseline, current, max_drop, list(metric or ["ndcg@10"]), list(mode or []) or None,
                              resamples=resamples, seed=seed, alpha=alpha)
        except GateInputError as exc:
            raise UserError(str(exc)) from None
        if as_json:
            emit_json(result.as_dict())
        else:
            t = Table(title=f"max drop {max_drop:g}, alpha {alpha:g}, paired bootstrap x{resamples}")
            for col in ("mode", "metric", "queries", "baseline", "current", "drop", "p", "verdict"):
                t.add_column(col, justify="left" if col in ("mode", "metric", "verdict") else "right")

            def num(v: float | None, fmt: str = ".4f") -> str:
                return "-" if v is None else format(v, fmt)

            for c in result.checks:
                t.add_row(Text(c.mode), Text(c.metric), str(c.queries), num(c.baseline), num(c.current),
                          num(c.drop, "+.4f"), num(c.p), Text(c.verdict, style="red" if not c.passed else ""))
            print_table(t)
            for line in result.failures():
                out.print("[red]FAIL[/red] " + escape(line), markup=True)
            if result.passed:
                out.print(f"gate passed: {len(result.checks)} check(s)")
            else:
                out.print(f"gate failed: {len(result.failures())} problem(s)")
        if not result.passed:
            raise typer.Exit(1)

    guard(go)
