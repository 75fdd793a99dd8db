"""`ragline ingest`: index files and present the sync report."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ragline.cli import app
from ragline.cli.common import (CollectionOpt, HomeOpt, JsonOpt, UserError, emit_json, engine_for, err, guard, out, progress_bar,
                                settings_for)


@app.command()
def ingest(
    paths: list[Path] = typer.Argument(None, help="files or directories; none = re-sync every source added before"),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="remove documents whose files are gone from a directory"),
    strategy: Optional[str] = typer.Option(None, help="chunking: recursive | fixed | structure"),
    chunk_size: Optional[int] = typer.Option(None, help="max tokens per chunk (capped at the model window)"),
    overlap: Optional[int] = typer.Option(None, help="tokens shared by neighbouring chunks"),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="auto|ADDRESS",
                                      help="parse and chunk in Ray tasks and embed in Ray actors: 'auto' joins a "
                                           "running cluster or starts a local one; or a cluster address"),
    ray_embedders: Optional[int] = typer.Option(None, "--ray-embedders", min=1,
                                                help="embedding actors (default: one per two CPUs of the cluster)"),
    collection: Optional[str] = CollectionOpt,
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Index files: new ones are added, changed ones replaced, unchanged ones skipped. With --collection,
    into that collection (made on first use)."""

    def go() -> None:
        settings = settings_for(home, {"chunk": {"strategy": strategy, "size": chunk_size, "overlap": overlap}},
                                collection=collection, create=True)
        if ray is None and ray_embedders is not None:
            raise UserError("--ray-embedders needs --ray")
        with ExitStack() as stack:
            run(settings, stack)

    def run(settings, stack: ExitStack) -> None:
        remote = None
        if ray is not None:
            from ragline.ingest.distributed import RayError, RayIngest

            try:
                remote = stack.enter_context(RayIngest(settings, ray, ray_embedders))
            except RayError as exc:
                raise UserError(str(exc)) from None
            from ragline.app import Engine

            engine = Engine(settings, embedder=remote.embedder)
        else:
            engine = engine_for(settings)
        roots = [p.resolve() for p in (paths or [])]
        if not roots:
            roots = [Path(r) for r in engine.sources.load()]
            if not roots:
                raise UserError("nothing to ingest: give a file or directory, e.g. `ragline ingest docs/`"
                                + (f" --collection {collection}" if collection else ""))
        show = not as_json and err.is_terminal
        with progress_bar(show) as progress:
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
            syncer.remote = remote
            for root in roots:
                if root.exists():
                    engine.sources.add(str(root))
            report = syncer.sync(roots, prune=prune)
            engine.record_index_info(syncer.indexer.fingerprint)
        if as_json:
            emit_json(report.as_dict())
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

    guard(go, failed_code=2)  # 1 is "some files failed"; 2 "the run itself failed"
