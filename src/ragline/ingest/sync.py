"""Incremental sync of file sources into the index.

Unchanged files (same size and mtime, or same bytes) are skipped without
parsing; changed files have their chunks replaced in one atomic commit; files
gone from a directory source are removed; documents indexed with other chunk
settings or another embedding model are re-chunked from their stored parsed
text. Files stream through in batches, so memory does not grow with the corpus.
A file that cannot be parsed is recorded with its reason and never stops the rest.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ragline.ingest.indexer import Indexer, document_from_record, record_fields
from ragline.ingest.parsers import SUPPORTED_EXTENSIONS, ParseError, parse_bytes, read_file
from ragline.store.base import DocRecord
from ragline.types import content_hash

SKIP_DIRS = {".git", ".hg", ".svn", ".ragline", ".venv", "venv", "node_modules", "__pycache__", ".tox",
             ".mypy_cache", ".pytest_cache"}

Event = Callable[[str, dict], None]
ACLFor = Callable[[str], tuple[str, ...]]  # source path -> the principals allowed to read it


@dataclass
class FileError:
    path: str
    reason: str


@dataclass
class IngestReport:
    added: int = 0
    replaced: int = 0
    skipped: int = 0  # unchanged
    removed: int = 0
    rechunked: int = 0  # re-processed from stored text after a settings/model change
    failed: list[FileError] = field(default_factory=list)
    unsupported: int = 0
    chunks_written: int = 0
    embedded: int = 0
    embed_cache_hits: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict:
        d = self.__dict__.copy()
        d["failed"] = [f.__dict__ for f in self.failed]
        d["ok"] = self.ok
        return d


def doc_id_for(source: str) -> str:
    return content_hash("source:" + source)


def discover(root: Path) -> Iterator[Path]:
    """Supported files under ``root`` (or ``root`` itself), in a stable order."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


class SourceRegistry:
    """The ingest sources a user has added, kept in ``$RAGLINE_HOME/sources.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[str]:
        try:
            return list(json.loads(self.path.read_text("utf-8")))
        except (OSError, ValueError):
            return []

    def add(self, root: str) -> None:
        roots = self.load()
        if root not in roots:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(roots + [root], indent=1), "utf-8")
            os.replace(tmp, self.path)  # atomic


class Syncer:
    def __init__(self, indexer: Indexer, batch_docs: int = 64, max_bytes: int = 50 * 2**20,
                 on_event: Event | None = None, acl_for: ACLFor | None = None) -> None:
        self.indexer = indexer
        self.acl_for = acl_for or (lambda source: ("*",))
        self.store = indexer.store
        self.batch_docs = batch_docs
        self.max_bytes = max_bytes
        self.emit = on_event or (lambda kind, data: None)

    def sync(self, roots: Sequence[Path], prune: bool = True) -> IngestReport:
        t0 = time.perf_counter()
        report = IngestReport()
        self.store.remove_orphans()
        known = self.store.documents()
        fp = self.indexer.fingerprint
        files: list[tuple[Path, str]] = []
        for root in roots:
            root = root.resolve()
            if not root.exists():
                report.failed.append(FileError(str(root), "not found"))
                continue
            for path in discover(root):
                if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
                    if root.is_file():
                        report.failed.append(FileError(str(path), f"unsupported file type '{path.suffix or path.name}'"))
                    else:
                        report.unsupported += 1
                    continue
                files.append((path, str(root)))
        self.emit("scan", {"files": len(files)})

        seen: set[str] = set()
        pending: list[tuple] = []
        for path, root in files:
            source = str(path)
            doc_id = doc_id_for(source)
            seen.add(doc_id)
            rec = known.get(doc_id)
            try:
                st = path.stat()
            except OSError as exc:
                report.failed.append(FileError(source, f"unreadable: {exc.strerror or exc}"))
                self.emit("file", {"path": source, "status": "failed"})
                continue
            if (rec and rec.size == st.st_size and rec.mtime == st.st_mtime and rec.fingerprint == fp
                    and tuple(rec.acl) == self.acl_for(source)):
                report.skipped += 1
                self.emit("file", {"path": source, "status": "skipped"})
                continue
            pending.append((path, root, doc_id, rec, st))
            if len(pending) >= self.batch_docs:
                self._process(pending, report)
                pending = []
        if pending:
            self._process(pending, report)

        # documents indexed under other settings whose files were not in this run: re-chunk from stored text
        stale = [r.doc_id for r in self.store.documents().values() if r.fingerprint != fp and r.doc_id not in seen]
        for i in range(0, len(stale), self.batch_docs):
            recs = self.store.get_documents(stale[i : i + self.batch_docs])
            self._index([(document_from_record(r), r, "rechunked") for r in recs], report)

        if prune:
            dir_roots = [str(Path(r).resolve()) for r in roots if Path(r).is_dir()]
            gone = [r.doc_id for r in known.values() if r.doc_id not in seen and r.root in dir_roots]
            if gone:
                self.store.delete(gone)
                report.removed = len(gone)
                self.emit("removed", {"count": len(gone)})
        if report.chunks_written or report.removed or report.rechunked:
            self.emit("finish", {})
            self.store.finish()
        report.seconds = time.perf_counter() - t0
        return report

    def _process(self, batch: list[tuple], report: IngestReport) -> None:
        items = []
        for path, root, doc_id, rec, st in batch:
            source = str(path)
            try:
                data = read_file(path, self.max_bytes)
                file_hash = content_hash(data)
                acl = self.acl_for(source)
                if (rec and rec.file_hash == file_hash and rec.fingerprint == self.indexer.fingerprint
                        and tuple(rec.acl) == acl):
                    # touched but identical: remember the new mtime, nothing to re-index
                    self.store.write_records([DocRecord(**{**rec.__dict__, "mtime": st.st_mtime, "size": st.st_size})])
                    report.skipped += 1
                    self.emit("file", {"path": source, "status": "skipped"})
                    continue
                same_bytes = bool(rec and rec.file_hash == file_hash)
                if same_bytes:  # only the chunk plan, model or ACL changed: re-chunk the stored text
                    doc = document_from_record(self.store.get_documents([doc_id])[0])
                else:
                    doc = parse_bytes(data, source, SUPPORTED_EXTENSIONS[path.suffix.lower()])
            except ParseError as exc:
                report.failed.append(FileError(source, exc.reason))
                self.emit("file", {"path": source, "status": "failed", "reason": exc.reason})
                continue
            new = DocRecord(doc_id=doc_id, source=source, root=root, type=doc.type, file_hash=file_hash,
                            size=st.st_size, mtime=st.st_mtime, fingerprint="", n_chunks=0, acl=acl,
                            **record_fields(doc))
            items.append((doc, new, "rechunked" if same_bytes else "replaced" if rec else "added"))
        if items:
            self._index(items, report)

    def _index(self, items: list[tuple], report: IngestReport) -> None:
        """Index (document, record, outcome) triples; outcome names the report counter."""
        if not items:
            return
        result = self.indexer.index([(doc, rec) for doc, rec, _ in items])
        report.embed_seconds += result.embed_seconds
        report.chunks_written += result.chunks
        report.embedded += result.embedded
        report.embed_cache_hits += result.cached
        for _, rec, kind in items:
            setattr(report, kind, getattr(report, kind) + 1)
            self.emit("file", {"path": rec.source, "status": kind})
        self.emit("batch", {"docs": len(items), "chunks": result.chunks, "embedded": result.embedded})
