"""The command line: a thin door into the Engine. Human output on stdout, progress on
stderr, ``--json`` for scripts; errors are one plain line and a non-zero exit code.

Each module of this package only parses options and presents results; the work is done by the
application (the Engine, ragline.evaluate.runs). Commands register on ``app`` and ``eval_app`` when
their module is imported below; ``--help`` lists the commands in that order."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ragline: ingest documents, retrieve, and answer with citations. Offline by default.")
eval_app = typer.Typer(no_args_is_help=True, help="Measure retrieval quality.")
app.add_typer(eval_app, name="eval")

# the command modules need `app` and `eval_app` above; importing them registers their commands
from ragline.cli import ingest, search, status, collections, evaluate, tune, serve  # noqa: E402,F401,I001
from ragline.cli.common import UserError, err, out  # noqa: E402

__all__ = ["app", "eval_app", "main", "UserError", "out", "err"]


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `ragline query ... | head`
        sys.stderr.close()
