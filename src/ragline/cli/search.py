"""`ragline query` (ranked chunks) and `ragline ask` (an answer with citations)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.markup import escape

from ragline.cli import app
from ragline.generate.extractive import ExtractiveAnswerer
from ragline.trace import Trace
from ragline.types import Answer
from ragline.cli.common import (HomeOpt, JsonOpt, emit_json, engine_for, err, guard, out, require_index,
                                settings_for, snippet)


def hit_json(rank: int, hit) -> dict:
    c = hit.chunk
    return {"rank": rank, "score": round(hit.score, 6), "scores": {k: round(v, 6) for k, v in hit.scores.items()},
            "doc_id": c.doc_id, "chunk_id": c.id, "source": c.source, "page": c.page,
            "heading_path": list(c.heading_path), "span": [c.start, c.end], "text": c.text}


RerankOpt = typer.Option(None, "--rerank", help="second stage: none | minilm | cross-encoder | http | llm "
                                                "[default: rerank.method]")
RerankDepthOpt = typer.Option(None, "--rerank-depth", help="candidates reranked [default: rerank.depth]")
TraceOpt = typer.Option(False, "--trace", help="show each stage: candidates in and out, time, scores")
TransformOpt = typer.Option(None, "--transform", help="query transformation: none | prf (offline) | hyde | "
                                                      "multi-query | decompose | step-back (these need an LLM) "
                                                      "[default: transform.method]")
CollectionsOpt = typer.Option(None, "--collection", "-c", help="search this collection; repeat it to route the "
                                                               "question over several [default: the home's own index]")
RouteOpt = typer.Option("embedding", "--route", help="over several collections: embedding (description or centroid) "
                                                     "| rules (--rule) | llm | all")
RuleOpt = typer.Option(None, "--rule", help="rules routing: field=value, the collection's metadata field must equal "
                                            "it (repeatable; see `ragline collections describe --meta`)")
MaxCollectionsOpt = typer.Option(2, "--max-collections", min=1, help="collections searched at most when routing")
MinScoreOpt = typer.Option(None, "--min-score", help="a collection routed below this score is skipped")


def print_trace(trace: Trace) -> None:
    out.print("\n[bold]Trace[/bold]", markup=True)
    print_stages(trace.json(), "  ")
    out.print(f"  {'total':<10} {'':>12}  {trace.total_ms:8.1f} ms", markup=False)


def print_stages(stages: list[dict], indent: str) -> None:
    """One line per stage; a stage's own ``stages`` (a collection's retrieval) indented under it, and
    its ``routes`` left out (the routes are printed above the hits)."""
    for st in stages:
        counts = f"{st.get('in', '-')} -> {st.get('out', '-')}"
        detail = ", ".join(f"{k}={v}" for k, v in st.get("detail", {}).items() if k not in ("stages", "routes"))
        out.print(f"{indent}{st['stage']:<10} {counts:>12}  {st['ms']:8.1f} ms  {detail}", markup=False)
        print_stages(st.get("detail", {}).get("stages", []), indent + "    ")


def search_overrides(rerank: Optional[str], rerank_depth: Optional[int]) -> dict:
    """The ``[rerank]`` settings given on the command line."""
    return {"method": rerank, "depth": rerank_depth}


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
    rerank: Optional[str] = RerankOpt,
    rerank_depth: Optional[int] = RerankDepthOpt,
    transform: Optional[str] = TransformOpt,
    trace: bool = TraceOpt,
    collection: Optional[list[str]] = CollectionsOpt,
    route: str = RouteOpt,
    rule: Optional[list[str]] = RuleOpt,
    max_collections: int = MaxCollectionsOpt,
    min_score: Optional[float] = MinScoreOpt,
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Search the index and print ranked chunks with their provenance (with --collection, search
    collections: several are routed, searched each with its own defaults, and fused)."""

    def go() -> None:
        overrides = {"retrieve": {"fusion": fusion, "dense_weight": dense_weight, "hnsw_ef": ef},
                     "rerank": search_overrides(rerank, rerank_depth), "transform": {"method": transform}}
        if collection:
            from ragline.cli.collections import Asked, collection_query

            return collection_query(Asked(text, collection, route_choice(route, rule, max_collections, min_score),
                                          home, overrides, k, mode, filter, trace, as_json),
                                    "document" if documents else None)
        settings = settings_for(home, overrides)
        engine = engine_for(settings)
        require_index(engine)
        rag = engine.rag(ExtractiveAnswerer(engine.embedder))  # no answer is written: the answerer is never called
        ask = rag.request(text, k=k, mode=mode, filter=filter, aggregate="document" if documents else None)
        req = ask.search
        stages = Trace() if trace else None
        hits = rag.retrieve(ask, stages)
        if as_json:
            emit_json({"query": text, "mode": req.mode, "filter": filter,
                       "hits": [hit_json(i + 1, h) for i, h in enumerate(hits)],
                       **({"trace": stages.json()} if stages else {})})
            return
        if not hits:
            out.print("no results")
        for i, h in enumerate(hits, 1):
            loc = f" ({h.chunk.location})" if h.chunk.location else ""
            out.print(f"[bold]{i}.[/bold] {h.score:.3f}  {escape(h.chunk.source + loc)}", markup=True)
            out.print(f"   {snippet(h.chunk.text, 240)}")
        if stages:
            print_trace(stages)

    guard(go)


def print_stream(items: Iterator[str | Answer]) -> Answer:
    """Print an answer's text as it arrives; the cited answer comes last."""
    streamed, answer = [], None
    for item in items:
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
    return answer


def route_choice(method: str, rules: Optional[list[str]], max_collections: int, min_score: Optional[float]):
    """The routing asked for on the command line."""
    from ragline.collections import RouteChoice, parse_pairs

    return RouteChoice(method, parse_pairs(rules or [], "--rule"), max_collections, min_score)


def citation_json(c) -> dict:
    return {"n": c.n, "source": c.chunk.source, "page": c.page if c.page is not None else c.chunk.page,
            "heading_path": list(c.heading_path or c.chunk.heading_path),
            "span": [c.start, c.end] if c.start is not None else [c.chunk.start, c.chunk.end],
            "chunk_id": c.chunk.id, "snippet": c.snippet}


def print_sources(citations, label=None) -> None:
    """The numbered sources under an answer; ``label(citation)`` prefixes each (its collection)."""
    if not citations:
        return
    out.print("\n[bold]Sources[/bold]", markup=True)
    for c in citations:
        loc = f" ({c.location})" if c.location else ""
        tag = f"[{label(c)}] " if label else ""
        out.print(f"  [{c.n}] {tag}{c.chunk.source}{loc}", markup=False)
        out.print(f"      \"{snippet(c.snippet)}\"", markup=False)


def strategy_ask(question: str, rag, request, chosen, trace: bool, as_json: bool) -> None:
    """``ask --strategy``: the strategy's steps as they happen (with --trace), then the answer."""
    from ragline.agentic.base import Steps

    def show(step) -> None:
        detail = ", ".join(f"{k}={v}" for k, v in step.as_dict().items() if k not in ("kind", "at_ms"))
        err.print(f"[dim]{step.at_ms:8.0f} ms[/dim] {step.kind:<10} {escape(detail[:300])}", markup=True,
                  highlight=False)

    steps = Steps(on_step=show if trace and not as_json else None)
    answer = chosen.run(rag, request, steps)
    if as_json:
        emit_json({"question": question, "answer": answer.text, "grounded": answer.grounded,
                   "generator": answer.generator, "strategy": chosen.name,
                   "citations": [citation_json(c) for c in answer.citations], "steps": steps.as_list()})
        return
    out.print(answer.text, markup=False)
    print_sources(answer.citations)


@app.command()
def ask(
    question: str = typer.Argument(..., help="the question"),
    k: int = typer.Option(5, "-k", "--top-k", help="passages given to the answerer"),
    mode: Optional[str] = typer.Option(None, help="hybrid | dense | sparse"),
    filter: Optional[str] = typer.Option(None, "--filter", help="restrict sources, see docs/filters.md"),
    stream: bool = typer.Option(True, "--stream/--no-stream", help="print LLM tokens as they arrive"),
    rerank: Optional[str] = RerankOpt,
    rerank_depth: Optional[int] = RerankDepthOpt,
    transform: Optional[str] = TransformOpt,
    trace: bool = TraceOpt,
    collection: Optional[list[str]] = CollectionsOpt,
    route: str = RouteOpt,
    rule: Optional[list[str]] = RuleOpt,
    max_collections: int = MaxCollectionsOpt,
    min_score: Optional[float] = MinScoreOpt,
    strategy: Optional[str] = typer.Option(None, "--strategy",
                                           help="standard | corrective | self-check | agent (default: [answer] "
                                                "strategy); --trace shows each step"),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Answer a question from the indexed documents, with numbered citations and a source list (with
    --collection, from collections: one answer over the routed collections' fused passages)."""

    def go() -> None:
        overrides = {"rerank": search_overrides(rerank, rerank_depth), "transform": {"method": transform}}
        if collection:
            from ragline.cli.collections import Asked, collection_ask

            return collection_ask(Asked(question, collection, route_choice(route, rule, max_collections, min_score),
                                        home, overrides, k, mode, filter, trace, as_json), stream)
        engine = engine_for(settings_for(home, overrides))
        require_index(engine)
        rag = engine.rag()
        request = rag.request(question, k=k, mode=mode, filter=filter)
        chosen = engine.strategy(strategy)
        if chosen.name != "standard":
            return strategy_ask(question, rag, request, chosen, trace, as_json)
        stages = Trace() if trace else None
        hits = rag.retrieve(request, stages)
        with stages.stage("generate", len(hits), answerer=rag.answerer.name) if stages else nullcontext():
            answer = rag.answer(request, hits) if as_json or not stream else print_stream(rag.stream(request, hits))
        if as_json:
            emit_json({"question": question, "answer": answer.text, "grounded": answer.grounded,
                       "generator": answer.generator,
                       "citations": [citation_json(c) for c in answer.citations],
                       **({"trace": stages.json()} if stages else {})})
            return
        if not stream:
            out.print(answer.text, markup=False)
        if answer.citations:
            print_sources(answer.citations)
        elif hits:
            out.print("\nClosest passages:")
            for h in hits[:3]:
                out.print(f"  - {h.chunk.source}: {snippet(h.chunk.text, 120)}", markup=False)
        if stages:
            print_trace(stages)

    guard(go)
