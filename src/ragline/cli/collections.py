"""`ragline collections` (list them, describe one) and the ``--collection`` paths of `ragline query`
and `ragline ask`. The work is done by ``ragline.collections``; this module parses and presents."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ragline.cli import app
from ragline.cli.common import (HomeOpt, JsonOpt, emit_json, engine_for, given, guard, out, print_table,
                                settings_for, snippet)
from ragline.cli.search import citation_json, hit_json, print_stream, print_trace
from ragline.collections import (Collections, Profile, RouteChoice, Searched, answer, answer_stream,
                                 collection_home, collection_settings, names, parse_pairs, read_profile,
                                 write_mode, write_profile)
from ragline.route.router import Routing
from ragline.trace import Trace

collections_app = typer.Typer(help="Collections: indexes of their own under the home, each with a description "
                                   "and retrieval defaults; `ragline query -c A -c B` routes over them.")
app.add_typer(collections_app, name="collections")


def main_home(home: Optional[Path]) -> Path:
    return settings_for(home).home


def listing(home: Path) -> list[dict[str, Any]]:
    """Each collection's name, size, retrieval mode and profile, read without loading a model."""
    from ragline.app import Engine

    rows = []
    for name in names(home):
        settings = collection_settings(home, name)
        store = Engine(settings).existing_store()
        prof = read_profile(settings.home)
        rows.append({"name": name, "documents": len(store.documents()) if store else 0,
                     "chunks": store.stats().chunks if store else 0, "mode": settings.retrieve.mode,
                     "description": prof.description, "metadata": dict(prof.metadata)})
    return rows


@collections_app.callback(invoke_without_command=True)
def collections(ctx: typer.Context, home: Optional[Path] = HomeOpt, as_json: bool = JsonOpt) -> None:
    """List the collections: name, documents, chunks, retrieval mode, description."""
    if ctx.invoked_subcommand is not None:
        return

    def go() -> None:
        rows = listing(main_home(home))
        if as_json:
            emit_json({"collections": rows})
            return
        if not rows:
            out.print("no collections: make one with `ragline ingest PATH --collection NAME`")
            return
        t = Table("name", "documents", "chunks", "mode", "description")
        for r in rows:
            t.add_row(r["name"], str(r["documents"]), str(r["chunks"]), r["mode"], snippet(r["description"], 80))
        print_table(t)

    guard(go)


@collections_app.command()
def describe(
    name: str = typer.Argument(..., help="the collection (made when it does not exist yet)"),
    description: Optional[str] = typer.Option(None, "--description", help="what it holds; embedding and llm "
                                                                          "routing read it [default: kept]"),
    meta: Optional[list[str]] = typer.Option(None, "--meta", help="key=value for rules routing (repeatable; "
                                                                  "replaces the metadata) [default: kept]"),
    mode: Optional[str] = typer.Option(None, "--mode", help="its retrieval mode: hybrid | dense | sparse, written "
                                                            "to its config.toml [retrieve] [default: kept]"),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Write a collection's profile (description, metadata) and, with --mode, its retrieval mode."""

    def go() -> None:
        where = collection_home(main_home(home), name)
        old = read_profile(where)
        prof = Profile(old.description if description is None else description.strip(),
                       old.metadata if meta is None else parse_pairs(meta, "--meta"))
        if mode is not None:
            write_mode(where, mode)
        write_profile(where, prof)
        settings = collection_settings(main_home(home), name)
        shown = {"name": name, "description": prof.description, "metadata": dict(prof.metadata),
                 "mode": settings.retrieve.mode, "home": str(where.resolve())}
        if as_json:
            emit_json(shown)
            return
        out.print(f"collection {name}: mode {shown['mode']}, "
                  f"{'description set' if prof.description else 'no description (routed by its centroid)'}"
                  + (f", metadata {shown['metadata']}" if prof.metadata else ""))

    guard(go)


# --------------------------------------------------------------------------- query and ask over collections
@dataclass
class Asked:
    """A `query` or `ask` over collections, as given on the command line."""

    text: str
    names: list[str]
    how: RouteChoice
    home: Optional[Path]
    overrides: dict[str, Any]
    k: Optional[int]
    mode: Optional[str]
    filter: Optional[str]
    trace: bool
    as_json: bool


def searched(a: Asked, aggregate: Optional[str]) -> tuple[Collections, Searched, Optional[Trace]]:
    main = engine_for(settings_for(a.home, a.overrides))
    cols = Collections(main, given(a.overrides))
    stages = Trace() if a.trace else None
    found = cols.search(a.text, a.names, a.how, k=a.k, mode=a.mode, filter=a.filter, aggregate=aggregate,
                        trace=stages)
    return cols, found, stages


def print_routing(routing: Optional[Routing]) -> None:
    """Which collections were chosen and why, every route best first."""
    if routing is None:
        return
    out.print(f"[bold]route[/bold] ({routing.method}): {escape(', '.join(routing.chosen) or 'no collection')}"
              + (f"  [dim]fallback: {escape(routing.fallback)}[/dim]" if routing.fallback else ""), markup=True)
    for r in routing.routes:
        score = "-" if r.score is None else f"{r.score:.3f}"
        out.print(f"  {r.collection:<20} {score:>6}  {'chosen ' if r.chosen else 'skipped'}  {r.reason}", markup=False)
    out.print()


def collection_query(a: Asked, aggregate: Optional[str]) -> None:
    """`ragline query --collection ...`: hits labelled with their collection; ``score`` is the fused
    score (one collection: its own), ``collection_score`` the hit's score in its collection."""
    _, found, stages = searched(a, aggregate)
    if a.as_json:
        emit_json({"query": a.text, "mode": a.mode, "filter": a.filter, "collections": list(dict.fromkeys(a.names)),
                   "route": found.routing.json() if found.routing else None,
                   "hits": [{**hit_json(i + 1, own), "score": round(shown.score, 6),
                             "collection_score": round(own.score, 6), "collection": name}
                            for i, (shown, own, name) in enumerate(found.hits)],
                   **({"trace": stages.json()} if stages else {})})
        return
    print_routing(found.routing)
    if not found.hits:
        out.print("no results")
    for i, (shown, own, name) in enumerate(found.hits, 1):
        loc = f" ({own.chunk.location})" if own.chunk.location else ""
        out.print(f"[bold]{i}.[/bold] {shown.score:.3f}  {escape('[' + name + '] ' + own.chunk.source + loc)}",
                  markup=True)
        out.print(f"   {snippet(own.chunk.text, 240)}")
    if stages:
        print_trace(stages)


def collection_ask(a: Asked, stream: bool) -> None:
    """`ragline ask --collection ...`: one answer over the fused passages, written by the main home's
    answerer; each citation names its collection."""
    cols, found, stages = searched(a, None)
    answerer = cols.main.answerer()
    where = {own.chunk.id: name for _, own, name in found.hits}
    if not a.as_json:
        print_routing(found.routing)
    if a.as_json or not stream:
        result = answer(answerer, a.text, found)
    else:
        result = print_stream(answer_stream(answerer, a.text, found))
    if a.as_json:
        emit_json({"question": a.text, "answer": result.text, "grounded": result.grounded,
                   "generator": result.generator, "collections": list(dict.fromkeys(a.names)),
                   "route": found.routing.json() if found.routing else None,
                   "citations": [{**citation_json(c), "collection": where.get(c.chunk.id)} for c in result.citations],
                   **({"trace": stages.json()} if stages else {})})
        return
    if not stream:
        out.print(result.text, markup=False)
    if result.citations:
        from ragline.cli.search import print_sources

        print_sources(result.citations, lambda c: where.get(c.chunk.id, "?"))
    elif found.hits:
        out.print("\nClosest passages:")
        for _, own, name in found.hits[:3]:
            out.print(f"  - [{name}] {own.chunk.source}: {snippet(own.chunk.text, 120)}", markup=False)
    if stages:
        print_trace(stages)
