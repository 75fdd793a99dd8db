"""`ragline tune`: search settings on a labelled set and present the Pareto front and the choice."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from ragline.cli import app
from ragline.cli.common import HomeOpt, JsonOpt, UserError, emit_json, err, guard, out, print_table, progress_bar
from ragline.cli.evaluate import experiment_events


def _print_tune(path: Path, metric: str, max_latency_ms: Optional[float], run) -> None:
    analysis, data, written = run.analysis, run.data, run.written
    q = analysis["queries"]
    t = Table(title=f"{path.name}: {metric} on {q['tune']} tuning / {q['holdout']} held-out queries; "
                    f"p50 ms per search ({data['documents']} documents)")
    for col in ("configuration", "tune", "held out", "p50 ms", "Pareto", "chosen"):
        t.add_column(col, justify="left" if col == "configuration" else "right", no_wrap=col != "configuration")
    for r in analysis["configs"]:
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        t.add_row(Text(r["name"]), fmt(r["tune"]), fmt(r["holdout"]), f"{r['latency_ms']:.1f}",
                  "yes" if r["pareto"] else "", "<-" if r["name"] == analysis["chosen"] else "")
    print_table(t)
    out.print("Pareto front (fastest first): " + " | ".join(analysis["pareto"]), markup=False)
    if analysis["chosen"] is None:
        out.print(f"no configuration has p50 <= {max_latency_ms} ms: nothing chosen", markup=False)
    else:
        out.print(f"chosen: {analysis['chosen']}" + (f"; written to {written}" if written else
                                                      "; --write FILE saves it"), markup=False)
    out.print("latencies are this machine's, under its current load; compare them within one run", markup=False)


@app.command()
def tune(
    path: Path = typer.Argument(..., help="labelled BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv"),
    space: Optional[list[str]] = typer.Option(None, "--space", "-s",
                                              help="a dimension, repeatable: section.key=v1,v2,... "
                                                   "[default: chunk size/overlap, mode, fusion, dense weight]"),
    metric: str = typer.Option("ndcg@10", help="what to maximise"),
    max_latency_ms: Optional[float] = typer.Option(None, help="choose only among configurations with p50 "
                                                              "search latency at most this"),
    tolerance: float = typer.Option(0.002, help="quality within this of the best counts as best; the fastest wins"),
    holdout: float = typer.Option(0.3, min=0.0, max=0.9, help="share of queries held out to score the choice"),
    split: str = typer.Option("test", help="qrels split file name"),
    max_queries: Optional[int] = typer.Option(None, help="use only the first N queries"),
    max_docs: Optional[int] = typer.Option(None, help="index only judged documents plus N others (a fast slice)"),
    max_configs: int = typer.Option(200, help="refuse a space larger than this"),
    index_dir: Optional[Path] = typer.Option(None, help="keep indexes here and reuse them in later runs"),
    write: Optional[Path] = typer.Option(None, "--write", help="write the chosen configuration (TOML) here, "
                                                               "e.g. .ragline/config.toml"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write the run and the analysis (JSON)"),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Search settings on a labelled set: quality vs latency Pareto front, and the chosen configuration."""

    def go() -> None:
        from ragline.evaluate.experiments import ExperimentError
        from ragline.evaluate.runs import run_tune
        from ragline.evaluate.tune import expand, parse_space

        where_home = Path(home or ".ragline")
        try:
            configs = expand(parse_space(list(space or [])), where_home, max_configs)
        except ExperimentError as exc:
            raise UserError(str(exc)) from None
        if write and write.exists() and write.is_dir():
            raise UserError(f"--write {write} is a directory; give a file such as {write / 'config.toml'}")
        if not as_json:
            err.print(f"tune: {len(configs)} configurations")
        with progress_bar(not as_json and err.is_terminal, lazy=True) as progress:
            run = run_tune(path, configs, split=split, max_queries=max_queries, max_docs=max_docs, home=where_home,
                           index_dir=index_dir, output=output, write=write, metric=metric, holdout=holdout,
                           max_latency_ms=max_latency_ms, tolerance=tolerance, on_event=experiment_events(progress))
        if as_json:
            emit_json({**run.analysis, "written": run.written, "documents": run.data["documents"]})
            return
        _print_tune(path, metric, max_latency_ms, run)

    guard(go)
