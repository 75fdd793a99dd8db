"""The command line: a thin door into the Engine. Human output on stdout, progress on
stderr, ``--json`` for scripts; errors are one plain line and a non-zero exit code."""

from __future__ import annotations

import json
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from ragline.config import ConfigError, Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ragline: ingest documents, retrieve, and answer with citations. Offline by default.")
eval_app = typer.Typer(no_args_is_help=True, help="Measure retrieval quality.")
app.add_typer(eval_app, name="eval")

out = Console(highlight=False, soft_wrap=True, markup=False)  # document text is never markup
err = Console(stderr=True, highlight=False, soft_wrap=True)

HomeOpt = typer.Option(None, "--home", envvar="RAGLINE_HOME", help="index directory [default: ./.ragline]")
JsonOpt = typer.Option(False, "--json", help="machine-readable output")


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def _settings(home: Optional[Path], overrides: dict[str, Any] | None = None) -> Settings:
    clean: dict[str, Any] = {}
    for section, values in (overrides or {}).items():
        kept = {k: v for k, v in values.items() if v is not None}
        if kept:
            clean[section] = kept
    return load_settings(clean, home=home)


def _engine(settings: Settings):
    from ragline.app import Engine

    return Engine(settings)


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress]:
    progress = Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err, disable=not enabled, transient=False,
    )
    with progress:
        yield progress


def _print_table(table: Table) -> None:
    """Print a table; off a terminal (CI logs, pipes) use at least 120 columns, not 80, so numbers are
    not cut short."""
    if out.is_terminal or out.width >= 120:
        out.print(table)
    else:
        Console(highlight=False, width=120).print(table)


def _emit_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def _run(fn, failed_code: int = 1):
    """Turn known errors into one line on stderr and an exit code; no tracebacks for users.

    ``failed_code`` is the exit code when the command itself fails (the store, the model, an
    unforeseen error); ingest sets it apart from 1, its "some files failed". An unforeseen error
    prints its traceback only with RAGLINE_DEBUG=1."""
    import os

    from ragline.embed.base import EmbedError
    from ragline.evaluate.beir import DatasetError
    from ragline.generate.llm import LLMError
    from ragline.retrieve.filters import FilterError
    from ragline.store.base import StoreError

    try:
        return fn()
    except (typer.Exit, typer.Abort):
        raise
    except (UserError, ConfigError, FilterError, DatasetError) as exc:
        err.print("[red]error:[/red] " + escape(str(exc)), markup=True, highlight=False)
        raise typer.Exit(2)
    except (EmbedError, StoreError, LLMError) as exc:
        err.print("[red]error:[/red] " + escape(str(exc)), markup=True, highlight=False)
        raise typer.Exit(failed_code)
    except KeyboardInterrupt:
        err.print("interrupted: everything committed so far is kept; run the command again to finish")
        raise typer.Exit(130)
    except Exception as exc:
        if os.environ.get("RAGLINE_DEBUG", "") not in ("", "0"):
            raise
        msg = " ".join(str(exc).split()).encode("utf-8", "backslashreplace").decode("utf-8") or "no message"
        err.print(f"[red]error:[/red] {escape(type(exc).__name__)}: {escape(msg[:300])} (RAGLINE_DEBUG=1 shows "
                  "the traceback)", markup=True, highlight=False)
        raise typer.Exit(failed_code)


# ---------------------------------------------------------------------------------------- ingest
@app.command()
def ingest(
    paths: list[Path] = typer.Argument(None, help="files or directories; none = re-sync every source added before"),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="remove documents whose files are gone from a directory"),
    strategy: Optional[str] = typer.Option(None, help="chunking: recursive | fixed | structure"),
    chunk_size: Optional[int] = typer.Option(None, help="max tokens per chunk (capped at the model window)"),
    overlap: Optional[int] = typer.Option(None, help="tokens shared by neighbouring chunks"),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Index files: new ones are added, changed ones replaced, unchanged ones skipped."""

    def go() -> None:
        settings = _settings(home, {"chunk": {"strategy": strategy, "size": chunk_size, "overlap": overlap}})
        engine = _engine(settings)
        roots = [p.resolve() for p in (paths or [])]
        if not roots:
            roots = [Path(r) for r in engine.sources.load()]
            if not roots:
                raise UserError("nothing to ingest: give a file or directory, e.g. `ragline ingest docs/`")
        show = not as_json and err.is_terminal
        with _progress(show) as progress:
            task = progress.add_task("scanning", total=None, rate="")
            state = {"chunks": 0, "files": 0}

            def on_event(kind: str, data: dict) -> None:
                if kind == "scan":
                    progress.update(task, total=data["files"], description="indexing")
                elif kind == "file":
                    state["files"] += 1
                    elapsed = progress.tasks[0].elapsed or 1e-9
                    progress.update(task, advance=1, rate=f"{state['files'] / elapsed:.1f} files/s, "
                                                            f"{state['chunks']} chunks")
                elif kind == "batch":
                    state["chunks"] += data["chunks"]
                elif kind == "finish":
                    progress.update(task, description="updating indexes")

            syncer = engine.syncer(on_event)
            for root in roots:
                if root.exists():
                    engine.sources.add(str(root))
            report = syncer.sync(roots, prune=prune)
            engine.record_index_info(syncer.indexer.fingerprint)
        if as_json:
            _emit_json(report.as_dict())
        else:
            out.print(f"added {report.added}, replaced {report.replaced}, unchanged {report.skipped}, "
                      f"removed {report.removed}, re-chunked {report.rechunked}, failed {len(report.failed)}"
                      + (f", unsupported files ignored {report.unsupported}" if report.unsupported else ""))
            out.print(f"chunks written {report.chunks_written}, embedded {report.embedded}, "
                      f"from cache {report.embed_cache_hits}, in {report.seconds:.1f}s")
            for f in report.failed:
                out.print(f"  [red]failed[/red] {escape(f.path)}: {escape(f.reason)}", markup=True)
            for path in report.flagged:  # indexed, but worth a look: see docs/security-injection.md
                out.print(f"  [yellow]flagged[/yellow] {escape(path)}: instruction-like text aimed at a model",
                          markup=True)
        if not report.ok:
            raise typer.Exit(1)

    _run(go, failed_code=2)  # 1 is "some files failed"; 2 "the run itself failed"


# ----------------------------------------------------------------------------------------- query
def _hit_json(rank: int, hit) -> dict:
    c = hit.chunk
    return {"rank": rank, "score": round(hit.score, 6), "scores": {k: round(v, 6) for k, v in hit.scores.items()},
            "doc_id": c.doc_id, "chunk_id": c.id, "source": c.source, "page": c.page,
            "heading_path": list(c.heading_path), "span": [c.start, c.end], "text": c.text}


def _snippet(text: str, n: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


@app.command()
def query(
    text: str = typer.Argument(..., help="what to search for"),
    k: Optional[int] = typer.Option(None, "-k", "--top-k", help="results to return [default: 10]"),
    mode: Optional[str] = typer.Option(None, help="hybrid | dense | sparse"),
    filter: Optional[str] = typer.Option(None, "--filter", help='e.g. \'type = "pdf" and year >= 2020\''),
    documents: bool = typer.Option(False, "--documents", help="best chunk per document"),
    fusion: Optional[str] = typer.Option(None, help="minmax | rrf"),
    dense_weight: Optional[float] = typer.Option(None, help="minmax fusion weight of dense scores (0..1)"),
    ef: Optional[int] = typer.Option(None, help="HNSW search-time candidate list size"),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Search the index and print ranked chunks with their provenance."""

    def go() -> None:
        if mode and mode not in ("hybrid", "dense", "sparse"):
            raise UserError(f"--mode must be hybrid, dense or sparse, not '{mode}'")
        settings = _settings(home, {"retrieve": {"fusion": fusion, "dense_weight": dense_weight, "hnsw_ef": ef}})
        engine = _engine(settings)
        _require_index(engine)
        r = engine.retriever
        req = r.request(text, k=k, mode=mode, filter=filter, aggregate="document" if documents else None)
        hits = r.search(req)
        if as_json:
            _emit_json({"query": text, "mode": req.mode, "filter": filter,
                        "hits": [_hit_json(i + 1, h) for i, h in enumerate(hits)]})
            return
        if not hits:
            out.print("no results")
        for i, h in enumerate(hits, 1):
            loc = f" ({h.chunk.location})" if h.chunk.location else ""
            out.print(f"[bold]{i}.[/bold] {h.score:.3f}  {escape(h.chunk.source + loc)}", markup=True)
            out.print(f"   {_snippet(h.chunk.text, 240)}")

    _run(go)


def _require_index(engine) -> None:
    if not (engine.home / "lance").exists():
        raise UserError(f"no index at {engine.home}: run `ragline ingest PATH` first (or set RAGLINE_HOME)")


# ------------------------------------------------------------------------------------------- ask
@app.command()
def ask(
    question: str = typer.Argument(..., help="the question"),
    k: int = typer.Option(5, "-k", "--top-k", help="passages given to the answerer"),
    mode: Optional[str] = typer.Option(None, help="hybrid | dense | sparse"),
    filter: Optional[str] = typer.Option(None, "--filter", help="restrict sources, see docs/filters.md"),
    stream: bool = typer.Option(True, "--stream/--no-stream", help="print LLM tokens as they arrive"),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Answer a question from the indexed documents, with numbered citations and a source list."""

    def go() -> None:
        from ragline.generate.citations import pinpoint
        from ragline.types import Answer

        engine = _engine(_settings(home))
        _require_index(engine)
        r = engine.retriever
        hits = r.search(r.request(question, k=k, mode=mode, filter=filter))
        gen = engine.generator()
        answer: Answer | None = None
        if hasattr(gen, "stream") and stream and not as_json:
            streamed = []
            for item in gen.stream(question, hits):
                if isinstance(item, Answer):
                    answer = item
                else:
                    streamed.append(item)
                    out.print(item, end="", markup=False)
            out.print()
            assert answer is not None
            if "".join(streamed).strip() != answer.text:
                # citation marks pointing at no source were removed: say so, show the checked text
                out.print("\n[dim]checked answer (invalid citation marks removed):[/dim]", markup=True)
                out.print(answer.text, markup=False)
        else:
            answer = gen.answer(question, hits)
        answer = pinpoint(answer, engine.store)
        if as_json:
            _emit_json({"question": question, "answer": answer.text, "grounded": answer.grounded,
                        "generator": answer.generator,
                        "citations": [{"n": c.n, "source": c.chunk.source,
                                       "page": c.page if c.page is not None else c.chunk.page,
                                       "heading_path": list(c.heading_path or c.chunk.heading_path),
                                       "span": [c.start, c.end] if c.start is not None else [c.chunk.start, c.chunk.end],
                                       "chunk_id": c.chunk.id, "snippet": c.snippet} for c in answer.citations]})
            return
        if not (hasattr(gen, "stream") and stream):
            out.print(answer.text, markup=False)
        if answer.citations:
            out.print("\n[bold]Sources[/bold]", markup=True)
            for c in answer.citations:
                loc = f" ({c.location})" if c.location else ""
                out.print(f"  [{c.n}] {c.chunk.source}{loc}", markup=False)
                out.print(f"      \"{_snippet(c.snippet)}\"", markup=False)
        elif hits:
            out.print("\nClosest passages:")
            for h in hits[:3]:
                out.print(f"  - {h.chunk.source}: {_snippet(h.chunk.text, 120)}", markup=False)

    _run(go)


# ---------------------------------------------------------------------------------------- status
@app.command()
def status(home: Optional[Path] = HomeOpt, as_json: bool = JsonOpt) -> None:
    """Summarise the index: documents, chunks, model, store, size."""

    def go() -> None:
        from ragline.store.lance import LanceStore

        settings = _settings(home)
        path = settings.home / "lance"
        info: dict[str, Any] = {"home": str(settings.home.resolve()), "documents": 0, "chunks": 0,
                                "store": "lancedb", "size_bytes": 0}
        if path.exists():
            store = LanceStore(path, None)
            st, recs = store.stats(), store.documents()
            info.update({
                "documents": len(recs), "chunks": st.chunks, "dimension": store.dim,
                "size_bytes": sum(f.stat().st_size for f in settings.home.rglob("*") if f.is_file()),
                "ann_index": st.ann_index, "fts_index": st.fts_index,
                "types": _count_by(r.type for r in recs.values()),
            })
        from ragline.ingest.sync import SourceRegistry

        info["sources"] = SourceRegistry(settings.home / "sources.json").load()
        info["embedding_model"] = settings.embed.model
        built = _read_json(settings.home / "index.json")
        if built:
            info["index"] = built
            info["embedding_model"] = built["embedding_model"]
            if path.exists():
                info["documents_pending"] = sum(1 for r in recs.values() if r.fingerprint != built["fingerprint"])
            info["settings_changed"] = built["chunking"] != settings.chunk.model_dump()
        info["chunking"] = settings.chunk.model_dump()
        info["llm"] = settings.llm.base_url or "none (extractive answers)"
        if as_json:
            _emit_json(info)
            return
        t = Table(show_header=False, box=None)
        if info.get("settings_changed"):
            out.print("chunk settings changed since the last ingest: run `ragline ingest` to re-chunk")
        if info.get("documents_pending"):
            out.print(f"{info['documents_pending']} documents wait for re-indexing: run `ragline ingest`")
        for key in ("home", "documents", "chunks", "embedding_model", "store", "size_bytes", "sources", "llm"):
            val = info.get(key)
            if key == "size_bytes":
                key, val = "size", f"{(val or 0) / 2**20:.1f} MB"
            t.add_row(key, ", ".join(val) if isinstance(val, list) else str(val))
        out.print(t)

    _run(go)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _count_by(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


# ------------------------------------------------------------------------------------------ eval
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
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Index a BEIR dataset from scratch and report nDCG@10, recall, precision, hit rate, MRR, MAP and
    latency per mode."""

    def go() -> None:
        from ragline import __version__
        from ragline.evaluate.beir import dataset_fingerprint, evaluate, index_corpus, load_beir, slice_corpus
        from ragline.ingest.indexer import Indexer
        from ragline.retrieve.search import Retriever

        wanted = [m.strip() for m in modes.split(",") if m.strip()]
        bad = [m for m in wanted if m not in ("dense", "sparse", "hybrid")]
        if bad:
            raise UserError(f"unknown mode(s) {', '.join(bad)}; use dense, sparse, hybrid")
        if max_docs is not None and max_docs < 0:
            raise UserError(f"--max-docs must be 0 or more, not {max_docs}")
        ds = load_beir(path, split)
        fingerprint = dataset_fingerprint(path, split)
        corpus_docs = ds.n_docs
        if max_queries:
            ds.queries = dict(list(ds.queries.items())[:max_queries])
        if max_docs is not None:
            ds = slice_corpus(ds, max_docs)
        settings = _settings(home)
        engine = _engine(settings)
        tmp = None
        if index_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="ragline-beir-")
        where = Path(tmp.name if tmp else index_dir)
        show = not as_json and err.is_terminal
        try:
            store = engine.open_store(where / "lance")
            indexer = Indexer(store, engine.embedder, engine.cache, engine.plan)
            with _progress(show) as progress:
                task = progress.add_task("indexing", total=ds.n_docs, rate="")

                def on_index(done: int, chunks: int) -> None:
                    el = progress.tasks[task].elapsed or 1e-9
                    progress.update(task, completed=done, rate=f"{done / el:.1f} docs/s, {chunks} chunks")

                ingest_stats = index_corpus(ds, indexer, progress=on_index)
                retriever = Retriever(store, engine.embedder, settings.retrieve)
                qtask = progress.add_task("querying", total=len(ds.queries) * len(wanted), rate="")
                count = {"n": 0}

                def on_query(mode: str, i: int) -> None:
                    count["n"] += 1
                    progress.update(qtask, completed=count["n"], rate=mode)

                results = evaluate(ds, retriever, wanted, progress=on_query)
        finally:
            if tmp:
                tmp.cleanup()
        data: dict[str, Any] = {
            "dataset": str(path), "documents": ds.n_docs, "queries": len(ds.queries),
            "corpus_documents": corpus_docs, "split": split, "max_queries": max_queries, "max_docs": max_docs,
            "dataset_fingerprint": fingerprint, "ragline_version": __version__,
            "settings": {"embedding_model": engine.embedder.model_id, "chunking": settings.chunk.model_dump(),
                         "retrieve": settings.retrieve.model_dump()},
            "ingest": ingest_stats,
            "modes": {m.mode: {**{k: round(v, 4) for k, v in m.metrics.items()},
                               "latency_ms_p50": round(m.latency_ms["p50"], 2),
                               "latency_ms_p95": round(m.latency_ms["p95"], 2),
                               "latency_ms_p99": round(m.latency_ms["p99"], 2)} for m in results},
            "per_query": {m.mode: {qid: {k: round(v, 6) for k, v in values.items()}
                                   for qid, values in m.per_query.items()} for m in results},
        }
        if output:
            try:
                output.parent.mkdir(parents=True, exist_ok=True)
                output.write_text(json.dumps(data, indent=2), encoding="utf-8")
            except OSError as exc:
                raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
        if as_json:
            _emit_json(data if per_query else {k: v for k, v in data.items() if k != "per_query"})
            return
        t = Table(title=f"{path.name}: {ds.n_docs} documents, {len(ds.queries)} queries")
        cols = ["ndcg@10", "recall@10", "recall@100", "precision@10", "hit_rate@10", "mrr@10", "map@100",
                "latency_ms_p50", "latency_ms_p95", "latency_ms_p99"]
        labels = ["nDCG@10", "R@10", "R@100", "P@10", "Hit@10", "MRR@10", "MAP@100", "p50 ms", "p95 ms", "p99 ms"]
        t.add_column("mode")
        for label in labels:
            t.add_column(label, justify="right")
        for mode, m in data["modes"].items():
            t.add_row(mode, *[f"{m[c]:.4f}" if not c.startswith("lat") else f"{m[c]:.1f}" for c in cols])
        _print_table(t)
        out.print(f"indexed in {ingest_stats['seconds']:.1f}s ({ingest_stats['docs_per_s']:.1f} docs/s, "
                  f"{ingest_stats['chunks']} chunks, {ingest_stats['embedded']} embedded)")

    _run(go)


def _run_configs(path: Path, split: str, max_queries: int | None, max_docs: int | None, configs: list,
                 home: Path, index_dir: Path | None, output: Path | None, show: bool) -> dict:
    """Load (a slice of) a BEIR folder and run configurations on it, with progress bars (eval run, tune)."""
    from ragline.evaluate.beir import dataset_fingerprint, load_beir, slice_corpus
    from ragline.evaluate.experiments import run_experiment

    if max_docs is not None and max_docs < 0:
        raise UserError(f"--max-docs must be 0 or more, not {max_docs}")
    if max_queries is not None and max_queries < 1:
        raise UserError(f"--max-queries must be 1 or more, not {max_queries}")
    ds = load_beir(path, split)
    meta = {"dataset": str(path), "split": split, "dataset_fingerprint": dataset_fingerprint(path, split),
            "corpus_documents": ds.n_docs, "max_queries": max_queries, "max_docs": max_docs}
    if max_queries:
        ds.queries = dict(list(ds.queries.items())[:max_queries])
        ds.qrels = {q: ds.qrels[q] for q in ds.queries}
    if max_docs is not None:
        ds = slice_corpus(ds, max_docs)
    if output:  # fail before the long run, not after it
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
    tmp = tempfile.TemporaryDirectory(prefix="ragline-run-") if index_dir is None else None
    try:
        with _progress(show) as progress:
            tasks: dict[str, Any] = {}

            def on_event(kind: str, d: dict) -> None:
                if kind == "index-start":
                    tasks["index"] = progress.add_task(f"indexing for {d['config']}", total=d["documents"], rate="")
                elif kind == "index-progress":
                    progress.update(tasks["index"], completed=d["done"], rate=f"{d['chunks']} chunks")
                elif kind == "query-start":
                    tasks[d["config"]] = progress.add_task(f"{d['config']} ({d['mode']})", total=d["queries"], rate="")
                elif kind == "query-progress":
                    progress.update(tasks[d["config"]], completed=d["done"])

            return run_experiment(ds, configs, home=home, index_root=Path(tmp.name if tmp else index_dir),
                                  meta=meta, on_event=on_event)
    finally:
        if tmp:
            tmp.cleanup()


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
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Score several configurations on one BEIR dataset, sharing the dataset, the embedding cache and
    indexes, into one results file (render it with `ragline eval report`)."""

    def go() -> None:
        from ragline.evaluate.experiments import ExperimentError, load_configs

        where_home = Path(home or ".ragline")
        try:
            configs = load_configs(list(config or []), where_home)
        except ExperimentError as exc:
            raise UserError(str(exc)) from None
        data = _run_configs(path, split, max_queries, max_docs, configs, where_home, index_dir, output,
                            show=not as_json and err.is_terminal)
        if output:
            try:
                output.write_text(json.dumps(data, indent=1), encoding="utf-8")
            except OSError as exc:
                raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
        if as_json:
            if not per_query:
                data = {**{k: v for k, v in data.items() if k != "query_text"},
                        "configs": {n: {k: v for k, v in c.items() if k != "per_query"}
                                    for n, c in data["configs"].items()}}
            _emit_json(data)
            return
        t = Table(title=f"{path.name}: {data['documents']} documents, {data['queries']} queries")
        cols = ["ndcg@10", "recall@10", "recall@100", "precision@10", "hit_rate@10", "mrr@10", "map@100"]
        labels = ["nDCG@10", "R@10", "R@100", "P@10", "Hit@10", "MRR@10", "MAP@100"]
        t.add_column("config", overflow="fold", min_width=min(24, max(len(n) for n in data["configs"])))
        for label in ["mode", *labels, "p50 ms", "p95 ms", "index"]:
            t.add_column(label, justify="left" if label in ("mode", "index") else "right", no_wrap=True)
        for name, c in data["configs"].items():
            t.add_row(Text(name), c["mode"], *[f"{c['metrics'][m]:.4f}" for m in cols],
                      f"{c['latency_ms']['p50']:.1f}", f"{c['latency_ms']['p95']:.1f}", c["index"]["key"][:8])
        _print_table(t)
        for key, info in data["indexes"].items():
            ing = info["ingest"]
            how = "reused from --index-dir; when built: " if info["reused_from_disk"] else "built: "
            out.print(f"index {key[:8]} ({info['embedding_model']}): {how}{ing.get('chunks')} chunks, "
                      f"{ing.get('embedded')} embedded, {ing.get('from_cache')} from cache, "
                      f"{ing.get('seconds', 0):.1f}s; used by {', '.join(info['used_by'])}", markup=False)
        if output:
            out.print(f"results written to {output}; render them with `ragline eval report {output} --html "
                      f"report.html`", markup=False)

    _run(go)


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
        from ragline.evaluate.report import ReportInputError, markdown, parse_results, render_html, summarise

        raw = _read_json_file(results, "results")
        try:
            res = parse_results(raw, f"results file {results}")
            summary = summarise(res, tuple(compare) if compare else None, metric, resamples, seed)
            md = markdown(res, summary)
            page = render_html(res, summary) if html_out else None
        except ReportInputError as exc:
            raise UserError(str(exc)) from None
        written = []
        for target, text in ((html_out, page), (md_out, md)):
            if target is None:
                continue
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text or "", encoding="utf-8")
            except OSError as exc:
                raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
            written.append(str(target))
        if as_json:
            _emit_json({**summary, "written": written})
        elif written:
            for w in written:
                out.print(f"wrote {w}", markup=False)
        else:
            out.print(md, end="", markup=False)

    _run(go)


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
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Answer every question of a QA file from the index and report judged answer metrics (faithfulness,
    hallucination, citations, abstention), retrieval metrics and latency."""

    def go() -> None:
        from ragline.evaluate.answers import evaluate_answers
        from ragline.evaluate.judge import OfflineJudge
        from ragline.evaluate.qa import load_qa

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
        settings = _settings(home)
        llm = settings.llm
        if (judge_name == "llm" or answerer == "llm") and not llm.base_url:
            raise UserError(f"--{'judge' if judge_name == 'llm' else 'answerer'} llm needs an LLM endpoint: set "
                            "llm.base_url in config.toml or RAGLINE_LLM__BASE_URL=http://host:port/v1")
        engine = _engine(settings)
        _require_index(engine)
        retriever = engine.retriever
        if answerer == "extractive":
            from ragline.generate.extractive import ExtractiveAnswerer

            generator = ExtractiveAnswerer(engine.embedder)
        else:
            generator = engine.generator()
        judge: Any = OfflineJudge(engine.embedder)
        if judge_name == "llm":
            from ragline.evaluate.llm_judge import LLMJudge
            from ragline.generate.llm import ChatClient

            judge = LLMJudge(ChatClient(llm.base_url, llm.model, llm.api_key, llm.timeout_s),
                             context_window=llm.context_window, max_tokens=llm.max_tokens,
                             count=engine.embedder.tokenizer.count, price_input_per_1k=llm.price_input_per_1k,
                             price_output_per_1k=llm.price_output_per_1k)
        with _progress(not as_json and err.is_terminal) as progress:
            task = progress.add_task("answering", total=len(items), rate="")
            result = evaluate_answers(items, retriever, generator, judge, k=k, mode=mode, filter=filter,
                                      progress=lambda i: progress.update(task, completed=i),
                                      prices=(llm.price_input_per_1k, llm.price_output_per_1k))

        def r4(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        data: dict[str, Any] = {
            "dataset": str(path), "judge": result.judge, "judge_version": judge.version,
            "settings": {"k": k, "mode": result.mode, "filter": filter, "max_items": max_items,
                         "generator": getattr(generator, "name", type(generator).__name__),
                         "embedding_model": engine.embedder.model_id},
            "counts": result.counts,
            "answers": {name: r4(v) for name, v in result.metrics.items()},
            "retrieval": None if result.retrieval is None else {n: r4(v) for n, v in result.retrieval.items()},
            "latency_ms_p50": round(result.latency_ms["p50"], 2), "latency_ms_p95": round(result.latency_ms["p95"], 2),
            "latency_ms_p99": round(result.latency_ms["p99"], 2),
        }
        prices = {"price_input_per_1k": llm.price_input_per_1k or None,
                  "price_output_per_1k": llm.price_output_per_1k or None}
        if result.usage is not None:  # an LLM judge: its tokens, and cost where prices are set
            data["judge_usage"] = {**result.usage, **prices}
        if result.answer_usage is not None:  # an LLM answerer, likewise
            data["answer_usage"] = {**result.answer_usage, **prices}
        if output:
            try:
                output.parent.mkdir(parents=True, exist_ok=True)
                output.write_text(json.dumps({**data, "items": [r.as_dict() for r in result.items]}, indent=2),
                                  encoding="utf-8")
            except OSError as exc:
                raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
        if as_json:
            _emit_json(data)
            return
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
        _print_table(t)
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

    _run(go)


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
        from ragline.evaluate.synth import GENERATORS, LLMWriter, SynthError, generate, read_chunks, write_jsonl

        if generator not in GENERATORS:
            raise UserError(f"--generator must be {' or '.join(GENERATORS)}, not '{generator}'")
        if n < 1:
            raise UserError(f"--n must be 1 or more, not {n}")
        settings = _settings(home)
        writer = None
        if generator == "llm":
            llm = settings.llm
            if not llm.base_url:
                raise UserError("--generator llm needs an LLM endpoint: set llm.base_url in config.toml or "
                                "RAGLINE_LLM__BASE_URL=http://host:port/v1")
            from ragline.generate.llm import ChatClient

            writer = LLMWriter(ChatClient(llm.base_url, llm.model, llm.api_key, llm.timeout_s),
                               max_tokens=min(llm.max_tokens, 512))
        engine = _engine(settings)
        _require_index(engine)
        built = _read_json(engine.home / "index.json") or {}
        extra = {"embedding_model": built.get("embedding_model", engine.settings.embed.model)}
        if writer is not None:
            extra["llm_model"] = writer.client.model
        try:
            result = generate(read_chunks(engine.store), n=n, seed=seed, generator=generator,
                              embedder=engine.embedder, writer=writer, extra_provenance=extra)
            write_jsonl(result.items, output)
        except SynthError as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:
            raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
        summary = {**result.summary(), "output": str(output)}
        if writer is not None:
            from ragline.evaluate.llm_judge import estimate_cost

            llm = settings.llm
            summary["llm_usage"] = {"calls": writer.calls, "prompt_tokens": writer.prompt_tokens,
                                    "completion_tokens": writer.completion_tokens,
                                    "cost": estimate_cost(writer.prompt_tokens, writer.completion_tokens,
                                                          llm.price_input_per_1k, llm.price_output_per_1k)}
        if as_json:
            _emit_json(summary)
            return
        by = ", ".join(f"{v} {k}" for k, v in result.by_type.items())
        out.print(f"wrote {len(result.items)} items ({by}) to {output}", markup=False)
        out.print(f"generator {result.generator}, seed {seed}, index {result.index_fingerprint}; "
                  f"{result.duplicates_removed} duplicate(s) removed"
                  + (f", {result.rejected} LLM proposal(s) rejected" if writer is not None else ""), markup=False)
        for note in result.notes:
            out.print(f"note: {note}", markup=False)

    _run(go)


def _read_json_file(path: Path, label: str) -> Any:
    """A JSON file's content; a missing, unreadable, non-UTF-8 or invalid file is a UserError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read {label} file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{label} file {path} is not UTF-8 text") from None
    except ValueError as exc:
        raise UserError(f"{label} file {path} is not valid JSON ({exc})") from None


def _load_result(path: Path, label: str) -> dict:
    """Read one `ragline eval beir --output` file; any problem is a UserError naming the file."""
    from ragline.evaluate.gate import GateInputError, validate

    data = _read_json_file(path, label)
    try:
        validate(data, f"{label} file {path}")
    except GateInputError as exc:
        raise UserError(str(exc)) from None
    return data


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
        from ragline.evaluate.gate import GateInputError, compare

        base = _load_result(baseline, "baseline")
        cur = _load_result(current, "current")
        try:
            result = compare(cur, base, max_drop, list(metric or ["ndcg@10"]), list(mode or []) or None,
                             resamples=resamples, seed=seed, alpha=alpha)
        except GateInputError as exc:
            raise UserError(str(exc)) from None
        if as_json:
            _emit_json(result.as_dict())
        else:
            t = Table(title=f"max drop {max_drop:g}, alpha {alpha:g}, paired bootstrap x{resamples}")
            for col in ("mode", "metric", "queries", "baseline", "current", "drop", "p", "verdict"):
                t.add_column(col, justify="left" if col in ("mode", "metric", "verdict") else "right")

            def num(v: float | None, fmt: str = ".4f") -> str:
                return "-" if v is None else format(v, fmt)

            for c in result.checks:
                t.add_row(Text(c.mode), Text(c.metric), str(c.queries), num(c.baseline), num(c.current),
                          num(c.drop, "+.4f"), num(c.p), Text(c.verdict, style="red" if not c.passed else ""))
            _print_table(t)
            for line in result.failures():
                out.print("[red]FAIL[/red] " + escape(line), markup=True)
            if result.passed:
                out.print(f"gate passed: {len(result.checks)} check(s)")
            else:
                out.print(f"gate failed: {len(result.failures())} problem(s)")
        if not result.passed:
            raise typer.Exit(1)

    _run(go)


# ------------------------------------------------------------------------------------------ tune
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
        from ragline.evaluate.tune import analyse, chosen_toml, expand, parse_space

        where_home = Path(home or ".ragline")
        try:
            configs = expand(parse_space(list(space or [])), where_home, max_configs)
        except ExperimentError as exc:
            raise UserError(str(exc)) from None
        if write and write.exists() and write.is_dir():
            raise UserError(f"--write {write} is a directory; give a file such as {write / 'config.toml'}")
        if not as_json:
            err.print(f"tune: {len(configs)} configurations")
        data = _run_configs(path, split, max_queries, max_docs, configs, where_home, index_dir, output,
                            show=not as_json and err.is_terminal)
        try:
            analysis = analyse(data, metric, holdout, max_latency_ms, tolerance)
        except ExperimentError as exc:
            raise UserError(str(exc)) from None
        data["tune"] = analysis
        if output:
            output.write_text(json.dumps(data, indent=1), encoding="utf-8")
        written = None
        if write and analysis["chosen"]:
            write.parent.mkdir(parents=True, exist_ok=True)
            write.write_text(chosen_toml(analysis, data), encoding="utf-8")
            written = str(write)
        if as_json:
            _emit_json({**analysis, "written": written, "documents": data["documents"]})
            return
        q = analysis["queries"]
        t = Table(title=f"{path.name}: {metric} on {q['tune']} tuning / {q['holdout']} held-out queries; "
                        f"p50 ms per search ({data['documents']} documents)")
        for col in ("configuration", "tune", "held out", "p50 ms", "Pareto", "chosen"):
            t.add_column(col, justify="left" if col == "configuration" else "right", no_wrap=col != "configuration")
        for r in analysis["configs"]:
            fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
            t.add_row(Text(r["name"]), fmt(r["tune"]), fmt(r["holdout"]), f"{r['latency_ms']:.1f}",
                      "yes" if r["pareto"] else "", "<-" if r["name"] == analysis["chosen"] else "")
        _print_table(t)
        out.print("Pareto front (fastest first): " + " | ".join(analysis["pareto"]), markup=False)
        if analysis["chosen"] is None:
            out.print(f"no configuration has p50 <= {max_latency_ms} ms: nothing chosen", markup=False)
        else:
            out.print(f"chosen: {analysis['chosen']}" + (f"; written to {written}" if written else
                                                          "; --write FILE saves it"), markup=False)
        out.print("latencies are this machine's, under its current load; compare them within one run", markup=False)

    _run(go)


# ----------------------------------------------------------------------------------------- serve
@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="address to listen on [default: 127.0.0.1]"),
    port: Optional[int] = typer.Option(None, help="port [default: 8321]"),
    home: Optional[Path] = HomeOpt,
) -> None:
    """Serve the HTTP API (/v1, OpenAPI at /openapi.json) and the web UI (/); see docs/serve.md."""

    def go() -> None:
        import logging

        import uvicorn

        from ragline.serve.api import create_app

        settings = _settings(home, {"serve": {"host": host, "port": port}})
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        application = create_app(settings)
        server = application.state.server
        sv = settings.serve
        err.print(f"ragline serving on http://{sv.host}:{sv.port}/  (API under /v1, docs at /docs)")
        if server.admin_key_file is not None:
            err.print(f"admin key: in {server.admin_key_file} (set RAGLINE_SERVE__ADMIN_KEY to choose one)")
        uvicorn.run(application, host=sv.host, port=sv.port, log_level="info", access_log=False,
                    timeout_graceful_shutdown=10)

    _run(go)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `ragline query ... | head`
        sys.stderr.close()


if __name__ == "__main__":
    main()
