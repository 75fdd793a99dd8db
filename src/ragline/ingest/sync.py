"""Incremental sync of file sources into the index.

Unchanged files (same size and mtime, or same bytes) are skipped without
parsing; changed files have their chunks replaced atomically; files gone from a
directory source are removed; documents indexed with other chunk settings or
another embedding model are re-chunked from their stored parsed text.

One bad file never costs the others. Only regular files are read, with the size
bound applied to the bytes read; each file is parsed in a worker process under a
time and memory budget (``ingest.worker``); anything raised while reading,
parsing, chunking or storing one file becomes a failure of that file with its
reason, and the run goes on. Work is committed in bounded units (``batch_docs``
documents or ``batch_chunks`` chunks, whichever comes first), and every file's
outcome is emitted as soon as it is known, so a kill or timeout loses at most one
unit and the report lists every input file exactly once.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

from ragline.ingest.indexer import BatchResult, Indexer, document_from_record, record_fields
from ragline.ingest.parsers import SUPPORTED_EXTENSIONS, ParseError, read_file
from ragline.ingest.parsers.base import short
from ragline.ingest.worker import ParseLimits, Parser, WorkerStartError, open_parser
from ragline.store.base import DocRecord
from ragline.types import Chunk, Document, content_hash

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
    # sources indexed in this run whose text looks like instructions aimed at a model
    # (metadata["injection"], ingest/injection.py): advisory, they are indexed all the same
    flagged: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict:
        d = self.__dict__.copy()
        d["failed"] = [f.__dict__ for f in self.failed]
        d["ok"] = self.ok
        return d


def doc_id_for(source: str) -> str:
    """The id of the document read from path ``source``. A name that is not valid UTF-8 arrives
    with surrogate escapes (``os.fsdecode``); content_hash encodes them, so such a file keeps a
    stable id distinct from every other name."""
    return content_hash("source:" + source)


_SURROGATE = re.compile("[\ud800-\udfff]")


def display_path(path: str) -> str:
    """``path`` as a string that can be stored, printed and sent as JSON: a byte of the name that
    is not UTF-8 (a surrogate escape from ``os.fsdecode``) is written ``\\xNN``."""
    if path.isascii():
        return path

    def escape(m: re.Match[str]) -> str:
        code = ord(m.group())
        return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"

    return _SURROGATE.sub(escape, path)


def discover(root: Path, on_error: Callable[[Path, str], None] | None = None) -> Iterator[Path]:
    """Files under ``root`` (or ``root`` itself when it is not a folder), in a stable order.

    Links to folders are listed but never followed, so a link loop cannot recurse; a folder that
    cannot be listed is passed to ``on_error`` with the reason instead of vanishing."""
    if not root.is_dir():
        yield root
        return

    def walk_error(exc: OSError) -> None:
        if on_error is not None:
            on_error(Path(exc.filename or root), f"unreadable folder: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=walk_error, followlinks=False):
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


# a file this large may parse for a long time and yield many chunks: the documents before it are
# committed first, so a timeout or kill while it is processed loses none of them
LARGE_FILE_BYTES = 2**20


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass
class _Item:
    """One document ready to embed and store: its record, chunks and report outcome."""

    rec: DocRecord
    chunks: list[Chunk]
    outcome: str  # added | replaced | rechunked


class RemoteBuilder(Protocol):
    def build(self, pendings: Iterator["Pending"]) -> Iterator[tuple["Pending", "_Item | BaseException"]]: ...


@dataclass
class Pending:
    """One file read and hashed, waiting to be parsed and chunked (``build_item``), perhaps on
    another machine: it carries the bytes, or for unchanged bytes the stored parsed document."""

    doc_id: str
    source: str
    root: str
    acl: tuple[str, ...]
    size: int
    mtime: float
    file_hash: str
    known: bool  # the document was indexed before (its outcome is "replaced" or "rechunked")
    data: bytes
    type: str
    doc: Document | None = None  # same bytes as indexed: re-chunk this stored parse


def build_item(p: Pending, parse: Callable[[bytes, str, str], Document],
               chunk: Callable[[Document, DocRecord], tuple[DocRecord, list[Chunk]]]) -> _Item:
    """Parse (unless the stored parse is reused) and chunk one pending file. Raises ParseError
    for the file's own failures."""
    doc = p.doc if p.doc is not None else parse(p.data, p.source, p.type)
    new = DocRecord(doc_id=p.doc_id, source=p.source, root=p.root, type=doc.type, file_hash=p.file_hash,
                    size=p.size, mtime=p.mtime, fingerprint="", n_chunks=0, acl=p.acl, **record_fields(doc))
    try:
        new, chunks = chunk(doc, new)
    except Exception as exc:
        raise ParseError(f"chunking failed: {short(exc)}") from None
    return _Item(new, chunks, "rechunked" if p.doc is not None else "replaced" if p.known else "added")


class Syncer:
    def __init__(self, indexer: Indexer, batch_docs: int = 64, max_bytes: int = 50 * 2**20,
                 on_event: Event | None = None, acl_for: ACLFor | None = None, *,
                 limits: ParseLimits | None = None, batch_chunks: int = 512) -> None:
        self.indexer = indexer
        self.acl_for = acl_for or (lambda source: ("*",))
        self.store = indexer.store
        self.batch_docs = batch_docs
        self.batch_chunks = batch_chunks
        self.max_bytes = max_bytes
        self.limits = limits or ParseLimits()
        self.emit = on_event or (lambda kind, data: None)
        # parse and chunk elsewhere (ingest/distributed.py): ``build(pendings)`` yields each pending
        # file with its item, or the exception that is that file's failure, in the order given
        self.remote: RemoteBuilder | None = None

    def sync(self, roots: Sequence[Path], prune: bool = True) -> IngestReport:
        t0 = time.perf_counter()
        report = IngestReport()
        self.store.remove_orphans()
        known = self.store.documents()
        fp = self.indexer.fingerprint
        files: list[tuple[Path, str]] = []
        unlisted = lambda path, reason: self._fail(report, str(path), reason)  # noqa: E731
        for root in roots:
            root = root.resolve()
            if not root.exists():
                self._fail(report, str(root), "not found")
                continue
            for path in discover(root, unlisted):
                if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
                    if not root.is_dir():
                        self._fail(report, str(path), f"unsupported file type '{path.suffix or path.name}'")
                    else:
                        report.unsupported += 1
                    continue
                files.append((path, display_path(str(root))))
        self.emit("scan", {"files": len(files)})

        seen: set[str] = set()
        batch: list[_Item] = []
        parser = open_parser(self.limits) if self.remote is None else None
        try:
            if self.remote is not None:
                batch = self._sync_remote(files, known, seen, report)
            for path, root in files if self.remote is None else ():
                doc_id = doc_id_for(str(path))
                seen.add(doc_id)
                if batch and _size(path) >= LARGE_FILE_BYTES:  # commit what is done before a long parse
                    self._flush(batch, report)
                    batch = []
                try:
                    item = self._prepare(path, root, doc_id, known.get(doc_id), parser, report)
                except WorkerStartError:
                    raise
                except ParseError as exc:
                    self._fail(report, str(path), exc.reason)
                    continue
                except Exception as exc:  # whatever one file raises, it is that file's failure
                    self._fail(report, str(path), f"unexpected error: {short(exc)}")
                    continue
                if item is not None:
                    batch = self._add(batch, item, report)
        finally:
            if parser is not None:
                parser.close()
        self._flush(batch, report)

        # documents indexed under other settings whose files were not in this run: re-chunk from stored text
        stale = [r.doc_id for r in self.store.documents().values() if r.fingerprint != fp and r.doc_id not in seen]
        batch = []
        for i in range(0, len(stale), self.batch_docs):
            for rec in self.store.get_documents(stale[i : i + self.batch_docs]):
                try:
                    new, chunks = self.indexer.chunk(document_from_record(rec), rec)
                except Exception as exc:
                    self._fail(report, rec.source, f"chunking failed: {short(exc)}")
                    continue
                batch = self._add(batch, _Item(new, chunks, "rechunked"), report)
        self._flush(batch, report)

        if prune:
            dir_roots = [display_path(str(Path(r).resolve())) for r in roots if Path(r).is_dir()]
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

    def _sync_remote(self, files: list[tuple[Path, str]], known: dict[str, DocRecord], seen: set[str],
                     report: IngestReport) -> list[_Item]:
        """The file loop of a distributed run: this process stats, skips, reads and hashes each
        file; the remote builder parses and chunks them in parallel; results come back in file
        order and are committed in the same bounded batches as a local run."""
        batch: list[_Item] = []

        def pendings() -> Iterator[Pending]:
            for path, root in files:
                doc_id = doc_id_for(str(path))
                seen.add(doc_id)
                try:
                    p = self._check(path, root, doc_id, known.get(doc_id), report)
                except ParseError as exc:
                    self._fail(report, str(path), exc.reason)
                    continue
                except Exception as exc:
                    self._fail(report, str(path), f"unexpected error: {short(exc)}")
                    continue
                if p is not None:
                    yield p

        assert self.remote is not None
        for p, outcome in self.remote.build(pendings()):
            if isinstance(outcome, ParseError):
                self._fail(report, p.source, outcome.reason)
            elif isinstance(outcome, BaseException):
                self._fail(report, p.source, f"unexpected error: {short(outcome)}")
            else:
                batch = self._add(batch, outcome, report)
        return batch

    # -- one file ----------------------------------------------------------------------------
    def _prepare(self, path: Path, root: str, doc_id: str, rec: DocRecord | None, parser: Parser,
                 report: IngestReport) -> _Item | None:
        """Read, parse and chunk one file; None when it is unchanged (reported as skipped)."""
        pending = self._check(path, root, doc_id, rec, report)
        return None if pending is None else build_item(pending, parser.parse, self.indexer.chunk)

    def _check(self, path: Path, root: str, doc_id: str, rec: DocRecord | None,
               report: IngestReport) -> Pending | None:
        """What only the ingesting process can do for one file (it holds the store): stat it, skip
        it when unchanged, read it and hash it. The rest (parse, chunk) is ``build_item``, which a
        distributed run sends to its workers."""
        raw = str(path)
        source = display_path(raw)
        fp = self.indexer.fingerprint
        acl = self.acl_for(raw)
        try:
            st = path.stat()
        except OSError as exc:
            raise ParseError(f"unreadable: {exc.strerror or exc}") from None
        if (rec and rec.size == st.st_size and rec.mtime == st.st_mtime and rec.fingerprint == fp
                and tuple(rec.acl) == acl):
            self._skip(report, source)
            return None
        data = read_file(path, self.max_bytes)
        file_hash = content_hash(data)
        if rec and rec.file_hash == file_hash and rec.fingerprint == fp and tuple(rec.acl) == acl:
            # touched but identical: remember the new mtime, nothing to re-index
            self.store.write_records([DocRecord(**{**rec.__dict__, "mtime": st.st_mtime, "size": st.st_size})])
            self._skip(report, source)
            return None
        same_bytes = bool(rec and rec.file_hash == file_hash)
        if same_bytes:  # only the chunk plan, model or ACL changed: re-chunk the stored text
            return Pending(doc_id, source, root, acl, st.st_size, st.st_mtime, file_hash, True, b"",
                           SUPPORTED_EXTENSIONS[path.suffix.lower()],
                           document_from_record(self.store.get_documents([doc_id])[0]))
        return Pending(doc_id, source, root, acl, st.st_size, st.st_mtime, file_hash, rec is not None, data,
                       SUPPORTED_EXTENSIONS[path.suffix.lower()])

    # -- bounded commits ---------------------------------------------------------------------
    def _add(self, batch: list[_Item], item: _Item, report: IngestReport) -> list[_Item]:
        """Queue ``item``; commit first when it would push the batch past the chunk bound, and
        commit after it once the batch is full. A document is never split across commits."""
        if batch and sum(len(i.chunks) for i in batch) + len(item.chunks) > self.batch_chunks:
            self._flush(batch, report)
            batch = []
        batch.append(item)
        if len(batch) >= self.batch_docs or sum(len(i.chunks) for i in batch) >= self.batch_chunks:
            self._flush(batch, report)
            batch = []
        return batch

    def _flush(self, batch: list[_Item], report: IngestReport) -> None:
        """Embed and store ``batch`` in one commit. If that fails, each document is retried alone so
        only a bad one fails; if every one fails alone too, the store or model is at fault, not a
        file, and the error ends the run."""
        if not batch:
            return
        try:
            result = self.indexer.write([(i.rec, i.chunks) for i in batch])
        except Exception as exc:
            if len(batch) == 1:
                self._fail(report, batch[0].rec.source, f"indexing failed: {short(exc)}")
                return
            first = exc
        else:
            self._commit(batch, result, report)
            return
        written = 0
        for item in batch:
            try:
                result = self.indexer.write([(item.rec, item.chunks)])
            except Exception as exc:
                self._fail(report, item.rec.source, f"indexing failed: {short(exc)}")
                continue
            self._commit([item], result, report)
            written += 1
        if not written:
            raise first

    def _commit(self, items: list[_Item], result: BatchResult, report: IngestReport) -> None:
        report.embed_seconds += result.embed_seconds
        report.chunks_written += result.chunks
        report.embedded += result.embedded
        report.embed_cache_hits += result.cached
        for item in items:
            setattr(report, item.outcome, getattr(report, item.outcome) + 1)
            self.emit("file", {"path": item.rec.source, "status": item.outcome})
            if '"injection"' in item.rec.metadata and json.loads(item.rec.metadata).get("injection"):
                report.flagged.append(item.rec.source)
        self.emit("batch", {"docs": len(items), "chunks": result.chunks, "embedded": result.embedded})

    # -- outcomes ----------------------------------------------------------------------------
    def _skip(self, report: IngestReport, source: str) -> None:
        report.skipped += 1
        self.emit("file", {"path": source, "status": "skipped"})

    def _fail(self, report: IngestReport, path: str, reason: str) -> None:
        shown = display_path(path)
        report.failed.append(FileError(shown, reason))
        self.emit("file", {"path": shown, "status": "failed", "reason": reason})
