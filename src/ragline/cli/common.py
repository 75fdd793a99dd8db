"""What every command shares: the consoles, the common options, settings and engine helpers, the progress
bar, table printing, and ``guard``, which turns known errors into one line and an exit code."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from ragline.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from ragline.app import Engine

T = TypeVar("T")

out = Console(highlight=False, soft_wrap=True, markup=False)  # document text is never markup
err = Console(stderr=True, highlight=False, soft_wrap=True)

HomeOpt = typer.Option(None, "--home", envvar="RAGLINE_HOME", help="index directory [default: ./.ragline]")
JsonOpt = typer.Option(False, "--json", help="machine-readable output")
CollectionOpt = typer.Option(None, "--collection", "-c", help="a collection under the home (see `ragline collections`) "
                                                               "[default: the home's own index]")


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def settings_for(home: Optional[Path], overrides: dict[str, Any] | None = None, collection: Optional[str] = None,
                 create: bool = False) -> Settings:
    """The home's settings with the options given on the command line (None means "not given") on top.
    With ``collection``, that collection's settings: the main home's config.toml, then the collection's,
    then the environment, then the options (``ragline.collections.collection_settings``); an unknown
    collection is an error unless ``create``."""
    clean = given(overrides)
    if collection is None:
        return load_settings(clean, home=home)
    from ragline.collections import collection_settings

    return collection_settings(load_settings(None, home=home).home, collection, clean, create=create)


def given(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The options given on the command line, by section (None means "not given")."""
    clean: dict[str, Any] = {}
    for section, values in (overrides or {}).items():
        kept = {k: v for k, v in values.items() if v is not None}
        if kept:
            clean[section] = kept
    return clean


def engine_for(settings: Settings) -> Engine:
    from ragline.app import Engine

    return Engine(settings)


def require_index(engine: Engine, collection: Optional[str] = None) -> None:
    if not engine.has_index():
        if collection is not None:
            raise UserError(f"collection '{collection}' has no index yet: run "
                            f"`ragline ingest PATH --collection {collection}` first")
        raise UserError(f"no index at {engine.home}: run `ragline ingest PATH` first (or set RAGLINE_HOME)")


@contextmanager
def progress_bar(enabled: bool, lazy: bool = False) -> Iterator[Progress]:
    """Progress bars on stderr, drawn only when ``enabled``. A ``lazy`` display starts when the run's first
    event calls ``progress.start()``, so a run that fails while it loads its data draws nothing."""
    progress = Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err, disable=not enabled, transient=False,
    )
    if not lazy:
        with progress:
            yield progress
        return
    try:
        yield progress
    finally:
        if progress.live.is_started:
            progress.stop()


def print_table(table: Table) -> None:
    """Print a table; off a terminal (CI logs, pipes) use at least 120 columns, not 80, so numbers are
    not cut short."""
    if out.is_terminal or out.width >= 120:
        out.print(table)
    else:
        Console(highlight=False, width=120).print(table)


def emit_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def snippet(text: str, n: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def guard(fn: Callable[[], T], failed_code: int = 1) -> T:
    """Turn known errors into one line on stderr and an exit code; no tracebacks for users.

    ``failed_code`` is the exit code when the command itself fails (the store, the model, an
    unforeseen error); ingest sets it apart from 1, its "some files failed". An unforeseen error
    prints its traceback only with RAGLINE_DEBUG=1."""
    import os

    from ragline.collections import CollectionError
    from ragline.embed.base import EmbedError
    from ragline.evaluate.beir import DatasetError
    from ragline.evaluate.runs import RunError
    from ragline.generate.llm import LLMError
    from ragline.filters import FilterError
    from ragline.retrieve.search import QueryError
    from ragline.route.router import RouteError
    from ragline.store.base import StoreError
    from ragline.agentic.base import StrategyError

    try:
        return fn()
    except (typer.Exit, typer.Abort):
        raise
    except (UserError, RunError, ConfigError, FilterError, QueryError, DatasetError, CollectionError,
            RouteError, StrategyError) as exc:
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
