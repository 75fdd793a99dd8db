"""Whole evaluation runs, as `ragline eval ...` and `ragline tune` start them.

Each function takes already-parsed options, does the work (reads and slices the dataset, takes its parts
from the Engine, scores, assembles the result schema, writes result files) and returns the result, so the
command line only parses options and presents what comes back. Progress is reported through an
``on_event(kind, data)`` callback; the functions print nothing.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from ragline.app import Engine
    from ragline.evaluate.answers import AnswersResult
    from ragline.evaluate.experiments import ExperimentConfig
    from ragline.evaluate.gate import GateResult
    from ragline.evaluate.qa import QAItem
    from ragline.evaluate.synth import SynthResult
    from ragline.generate.base import Answerer

Event = Callable[[str, dict], None]


class RunError(Exception):
    """A run's option, input file or output path the user can fix; the message names it."""


def _quiet(kind: str, data: dict) -> None:
    """The default ``on_event``: nobody is watching."""


# ------------------------------------------------------------------------------------ result files
def write_json(path: Path, data: Any, indent: int, make_parent: bool = True) -> None:
    """Write a result file; an unwritable path is a RunError naming it."""
    try:
        if make_parent:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=indent), encoding="utf-8")
    except OSError as exc:
        raise RunError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_json_file(path: Path, label: str) -> Any:
    """A JSON file's content; a missing, unreadable, non-UTF-8 or invalid file is a RunError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RunError(f"cannot read {label} file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RunError(f"{label} file {path} is not UTF-8 text") from None
    except ValueError as exc:
        raise RunError(f"{label} file {path} is not valid JSON ({exc})") from None


def load_result(path: Path, label: str) -> dict:
    """Read one `ragline eval beir --output` file; a file of another shape raises GateInputError."""
    from ragline.evaluate.gate import validate

    data = read_json_file(path, label)
    validate(data, f"{label} file {path}")
    return data


# --------------------------------------------------------------------------------------- eval gate
def run_gate(baseline: Path, current: Path, max_drop: float, metrics: list[str], modes: list[str] | None,
             resamples: int, seed: int, alpha: float) -> GateResult:
    """Compare two result files; a file that is not a result, or a metric or mode missing from one, raises
    GateInputError."""
    from ragline.evaluate.gate import compare

    base = load_result(baseline, "baseline")
    cur = load_result(current, "current")
    return compare(cur, base, max_drop, metrics, modes, resamples=resamples, seed=seed, alpha=alpha)


# ------------------------------------------------------------------------------------- eval report
@dataclass
class ReportRun:
    summary: dict[str, Any]
    markdown: str
    written: list[str]  # the files written, in the order html, markdown


def run_report(results: Path, compare: tuple[str, str] | None, metric: str, resamples: int, seed: int,
               html_out: Path | None, md_out: Path | None) -> ReportRun:
    """Summarise a results file and write the HTML and Markdown reports asked for. Results of the wrong
    shape raise ReportInputError; an unreadable or unwritable file, RunError."""
    from ragline.evaluate.report import markdown, parse_results, render_html, summarise

    raw = read_json_file(results, "results")
    res = parse_results(raw, f"results file {results}")
    summary = summarise(res, compare, metric, resamples, seed)
    md = markdown(res, summary)
    page = render_html(res, summary) if html_out else None
    written = []
    for target, text in ((html_out, page), (md_out, md)):
        if target is None:
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text or "", encoding="utf-8")
        except OSError as exc:
            raise RunError(f"cannot write {target}: {exc.strerror or exc}") from None
        written.append(str(target))
    return ReportRun(summary, md, written)


# --------------------------------------------------------------------------------------- eval beir
def run_beir(path: Path, modes: Sequence[str], *, split: str, max_queries: int | None, max_docs: int | None,
             index_dir: Path | None, output: Path | None, home: Path | None,
             on_event: Event | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Index (a slice of) a BEIR folder from scratch with the home's settings and score each mode: the
    `eval beir` result, with per-query values, also written to ``output`` when given.

    Events: ``index-start`` {documents}, ``index-progress`` {done, chunks}, ``query-start`` {total},
    ``query-progress`` {mode}."""
    from ragline import __version__
    from ragline.app import Engine
    from ragline.config import load_settings
    from ragline.evaluate.beir import dataset_fingerprint, evaluate, index_corpus, load_beir, slice_corpus
    from ragline.retrieve.search import MODES

    emit = on_event or _quiet
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise RunError(f"unknown mode(s) {', '.join(bad)}; use dense, sparse, hybrid")
    if max_docs is not None and max_docs < 0:
        raise RunError(f"--max-docs must be 0 or more, not {max_docs}")
    ds = load_beir(path, split)
    fingerprint = dataset_fingerprint(path, split)
    corpus_docs = ds.n_docs
    if max_queries:
        ds.queries = dict(list(ds.queries.items())[:max_queries])
    if max_docs is not None:
        ds = slice_corpus(ds, max_docs)
    settings = load_settings(overrides or {}, home=home)
    engine = Engine(settings)
    tmp = tempfile.TemporaryDirectory(prefix="ragline-beir-") if index_dir is None else None
    where = Path(tmp.name if tmp else index_dir)  # type: ignore[arg-type]
    store = None
    try:
        store = engine.open_store(where / "lance")
        indexer = engine.indexer(store)
        emit("index-start", {"documents": ds.n_docs})
        ingest_stats = index_corpus(ds, indexer,
                                    progress=lambda done, chunks: emit("index-progress",
                                                                       {"done": done, "chunks": chunks}))
        retriever = engine.retriever_for(store)
        emit("query-start", {"total": len(ds.queries) * len(modes)})
        results = evaluate(ds, retriever, modes, progress=lambda mode, i: emit("query-progress", {"mode": mode}),
                           transform=engine.transform())
    finally:
        if tmp:
            drop = getattr(store, "drop", None)
            if drop is not None:  # a temporary index in a database
                drop()
            tmp.cleanup()
    data: dict[str, Any] = {
        "dataset": str(path), "documents": ds.n_docs, "queries": len(ds.queries),
        "corpus_documents": corpus_docs, "split": split, "max_queries": max_queries, "max_docs": max_docs,
        "dataset_fingerprint": fingerprint, "ragline_version": __version__,
        "settings": {"embedding_model": engine.embedder.model_id, "chunking": settings.chunk.model_dump(),
                     "retrieve": settings.retrieve.model_dump(),
                     "rerank": {k: v for k, v in settings.rerank.model_dump().items() if k != "api_key"},
                     "transform": settings.transform.model_dump()},
        "ingest": ingest_stats,
        "modes": {m.mode: {**{k: round(v, 4) for k, v in m.metrics.items()},
                           "latency_ms_p50": round(m.latency_ms["p50"], 2),
                           "latency_ms_p95": round(m.latency_ms["p95"], 2),
                           "latency_ms_p99": round(m.latency_ms["p99"], 2)} for m in results},
        "per_query": {m.mode: {qid: {k: round(v, 6) for k, v in values.items()}
                               for qid, values in m.per_query.items()} for m in results},
    }
    if output:
        write_json(output, data, indent=2)
    return data


# ------------------------------------------------------------------------------ eval run and tune
def run_configs(path: Path, configs: Sequence[ExperimentConfig], *, split: str, max_queries: int | None,
                max_docs: int | None, home: Path, index_dir: Path | None, output: Path | None,
                on_event: Event | None = None) -> dict[str, Any]:
    """Load (a slice of) a BEIR folder and score every configuration on it (the experiment result).

    Nothing is written to ``output`` here; its folder is made first, so an unwritable path fails before
    the long run, not after it. Events are those of ``run_experiment``."""
    from ragline.evaluate.beir import dataset_fingerprint, load_beir, slice_corpus
    from ragline.evaluate.experiments import run_experiment

    if max_docs is not None and max_docs < 0:
        raise RunError(f"--max-docs must be 0 or more, not {max_docs}")
    if max_queries is not None and max_queries < 1:
        raise RunError(f"--max-queries must be 1 or more, not {max_queries}")
    ds = load_beir(path, split)
    meta = {"dataset": str(path), "split": split, "dataset_fingerprint": dataset_fingerprint(path, split),
            "corpus_documents": ds.n_docs, "max_queries": max_queries, "max_docs": max_docs}
    if max_queries:
        ds.queries = dict(list(ds.queries.items())[:max_queries])
        ds.qrels = {q: ds.qrels[q] for q in ds.queries}
    if max_docs is not None:
        ds = slice_corpus(ds, max_docs)
    if output:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot write {output}: {exc.strerror or exc}") from None
    tmp = tempfile.TemporaryDirectory(prefix="ragline-run-") if index_dir is None else None
    try:
        return run_experiment(ds, configs, home=home, index_root=Path(tmp.name if tmp else index_dir),  # type: ignore[arg-type]
                              meta=meta, on_event=on_event)
    finally:
        if tmp:
            tmp.cleanup()


def run_experiments(path: Path, configs: Sequence[ExperimentConfig], *, split: str, max_queries: int | None,
                    max_docs: int | None, home: Path, index_dir: Path | None, output: Path | None,
                    on_event: Event | None = None) -> dict[str, Any]:
    """`eval run`: score the configurations and write the results file (when ``output`` is given)."""
    data = run_configs(path, configs, split=split, max_queries=max_queries, max_docs=max_docs, home=home,
                       index_dir=index_dir, output=output, on_event=on_event)
    if output:
        write_json(output, data, indent=1, make_parent=False)
    return data


@dataclass
class TuneRun:
    data: dict[str, Any]  # the experiment result, with the analysis under "tune"
    analysis: dict[str, Any]
    written: str | None  # where the chosen configuration was written, if it was


def run_tune(path: Path, configs: Sequence[ExperimentConfig], *, split: str, max_queries: int | None,
             max_docs: int | None, home: Path, index_dir: Path | None, output: Path | None, write: Path | None,
             metric: str, holdout: float, max_latency_ms: float | None, tolerance: float,
             on_event: Event | None = None) -> TuneRun:
    """`tune`: score the configurations, choose one on the tuning queries, score the choice on the held-out
    ones, and write the run (``output``) and the chosen configuration as TOML (``write``)."""
    from ragline.evaluate.experiments import ExperimentError
    from ragline.evaluate.tune import analyse, chosen_toml

    data = run_configs(path, configs, split=split, max_queries=max_queries, max_docs=max_docs, home=home,
                       index_dir=index_dir, output=output, on_event=on_event)
    try:
        analysis = analyse(data, metric, holdout, max_latency_ms, tolerance)
    except ExperimentError as exc:
        raise RunError(str(exc)) from None
    data["tune"] = analysis
    if output:
        output.write_text(json.dumps(data, indent=1), encoding="utf-8")
    written = None
    if write and analysis["chosen"]:
        write.parent.mkdir(parents=True, exist_ok=True)
        write.write_text(chosen_toml(analysis, data), encoding="utf-8")
        written = str(write)
    return TuneRun(data, analysis, written)


# ------------------------------------------------------------------------------------ eval answers
@dataclass
class AnswersRun:
    result: AnswersResult
    data: dict[str, Any]  # the `eval answers` result schema, without the per-item records


def answer_judge(engine: Engine, name: str) -> Any:
    """The judge of `eval answers`: ``offline`` (the embedding model) or ``llm`` (the configured endpoint)."""
    from ragline.evaluate.judge import OfflineJudge

    if name != "llm":
        return OfflineJudge(engine.embedder)
    from ragline.evaluate.llm_judge import LLMJudge

    llm = engine.settings.llm
    return LLMJudge(engine.chat_client(), context_window=llm.context_window, max_tokens=llm.max_tokens,
                    count=engine.embedder.tokenizer.count, price_input_per_1k=llm.price_input_per_1k,
                    price_output_per_1k=llm.price_output_per_1k)


def answer_generator(engine: Engine, answerer: str) -> Answerer:
    """``extractive`` forces the offline answerer; ``auto`` and ``llm`` take the Engine's (the LLM when
    one is configured)."""
    return engine.answerer(offline=answerer == "extractive")


def run_answers(engine: Engine, items: Sequence[QAItem], *, dataset: Path, k: int, mode: str | None,
                filter: str | None, max_items: int | None, judge_name: str, answerer: str,
                output: Path | None, on_event: Event | None = None, strategy: str | None = None) -> AnswersRun:
    """`eval answers`: answer and judge every item; the result schema, also written (with per-item
    answers and judgements) to ``output`` when given.

    Events: ``answer-start`` {items} once the parts are built, ``answer-progress`` {done}."""
    from ragline.evaluate.answers import evaluate_answers

    emit = on_event or _quiet
    llm = engine.settings.llm
    generator = answer_generator(engine, answerer)
    rag = engine.rag(generator)
    judge = answer_judge(engine, judge_name)
    chosen = engine.strategy(strategy)
    emit("answer-start", {"items": len(items)})
    result = evaluate_answers(items, rag, judge, k=k, mode=mode, filter=filter,
                              progress=lambda i: emit("answer-progress", {"done": i}),
                              prices=(llm.price_input_per_1k, llm.price_output_per_1k), strategy=chosen)

    def r4(v: float | None) -> float | None:
        return None if v is None else round(v, 4)

    data: dict[str, Any] = {
        "dataset": str(dataset), "judge": result.judge, "judge_version": judge.version,
        "settings": {"k": k, "mode": result.mode, "filter": filter, "max_items": max_items, "strategy": chosen.name,
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
        write_json(output, {**data, "items": [r.as_dict() for r in result.items]}, indent=2)
    return AnswersRun(result, data)


# -------------------------------------------------------------------------------------- eval synth
@dataclass
class SynthRun:
    result: SynthResult
    summary: dict[str, Any]  # what `eval synth --json` prints


def run_synth(engine: Engine, *, n: int, seed: int, generator: str, output: Path) -> SynthRun:
    """`eval synth`: generate a QA test set from the index and write it to ``output`` (JSONL). Bad options
    or an empty index raise SynthError; an unwritable output, RunError."""
    from ragline.evaluate.synth import LLMWriter, generate, read_chunks, write_jsonl

    llm = engine.settings.llm
    writer = None
    if generator == "llm":
        writer = LLMWriter(engine.chat_client(), max_tokens=min(llm.max_tokens, 512))
    built = engine.index_info() or {}
    extra = {"embedding_model": built.get("embedding_model", engine.settings.embed.model)}
    if writer is not None:
        extra["llm_model"] = writer.client.model
    try:
        result = generate(read_chunks(engine.store), n=n, seed=seed, generator=generator,
                          embedder=engine.embedder, writer=writer, extra_provenance=extra)
        write_jsonl(result.items, output)
    except OSError as exc:
        raise RunError(f"cannot write {output}: {exc.strerror or exc}") from None
    summary = {**result.summary(), "output": str(output)}
    if writer is not None:
        from ragline.evaluate.llm_judge import estimate_cost

        summary["llm_usage"] = {"calls": writer.calls, "prompt_tokens": writer.prompt_tokens,
                                "completion_tokens": writer.completion_tokens,
                                "cost": estimate_cost(writer.prompt_tokens, writer.completion_tokens,
                                                      llm.price_input_per_1k, llm.price_output_per_1k)}
    return SynthRun(result, summary)
