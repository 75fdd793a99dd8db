"""One collection at run time: its own index, embedding cache, files, caches and locks.

Layout under the serve data directory::

    tenants/<tenant>/collections/<collection>/
        files/    uploaded originals (the name a user uploaded, made safe)
        index/    the collection's ragline home: lance/, embeddings.sqlite

Each collection is a separate store, so a query can only ever reach its own collection's
chunks; inside it, document ACLs are a node of the store query (ragline/acl.py).
Writers (ingest, delete) take ``write_lock`` one at a time; a purge (delete) also shuts
readers out for its duration, because it removes the table versions readers may hold.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import threading
import unicodedata
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ragline.acl import visible_to
from ragline.app import Engine
from ragline.config import Settings
from ragline.filters import Compare, Node, all_of
from ragline.embed.base import Embedder
from ragline.rerank.base import Reranker
from ragline.generate.base import Answerer
from ragline.ingest.sync import SKIP_DIRS, IngestReport, doc_id_for
from ragline.rag import RAG
from ragline.retrieve.search import SearchRequest
from ragline.store.base import DocRecord
from ragline.types import Hit, content_hash


class RWLock:
    """Many readers or one writer; a waiting writer holds new readers back."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


_UNSAFE_CHARS = frozenset('<>:"/\\|?*')  # separators, and what Windows or macOS refuse in a name
_DEVICE_NAMES = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)  # Windows
_NAME_BYTES = 200  # file systems allow 255 bytes; the rest is room for the hash
_OWN = ".own"  # files/.own/<hash of principals>/: uploads of callers that could not replace one


def _unsafe(ch: str) -> bool:
    """A character not kept in a stored name: separators and characters file systems refuse,
    control and format characters (bidi overrides, zero-width marks spoof a shown name),
    surrogates, unassigned code points, and every space but U+0020."""
    cat = unicodedata.category(ch)
    return ch in _UNSAFE_CHARS or cat[0] == "C" or (cat[0] == "Z" and ch != " ")


def safe_filename(name: str) -> str:
    """The last path part of an uploaded name, made safe to store and to show.

    NFC-normalised (a decomposed é from a Mac and a composed one are one name); letters, marks,
    digits and punctuation of any script are kept; each run of unsafe characters becomes '_';
    leading and trailing dots and spaces go. A name that had to change otherwise (or was too
    long) gets a short hash of the original, so two different names never end up as one stored
    name and replace each other. Applying it twice changes nothing."""
    base = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1].strip()
    out: list[str] = []
    for ch in base:
        if not _unsafe(ch):
            out.append(ch)
        elif not out or out[-1] != "_":
            out.append("_")
    safe = "".join(out).strip(". ") or "upload"
    if _DEVICE_NAMES.fullmatch(safe):
        safe = "_" + safe
    if safe == base and len(safe.encode()) <= _NAME_BYTES:
        return safe
    tag = content_hash("name:" + base)[:8]
    stem, ext = (safe[: -len(Path(safe).suffix)], Path(safe).suffix) if 1 < len(Path(safe).suffix) <= 16 else (safe, "")
    room = _NAME_BYTES - len(ext.encode()) - len(tag) - 1
    stem = stem.encode()[:room].decode("utf-8", "ignore").rstrip(". ") or "upload"
    return f"{stem}-{tag}{ext}"


class AnswerCache:
    """Recent answers of one collection, keyed by everything that shapes them, the caller's
    principals included. Any write to the collection empties it and moves its write version on.

    An answer is computed outside any lock, so a write (a delete, an ACL change) can land while
    it is in flight: ``put`` takes the write version read before the answer's retrieval began
    and drops the answer if a write has happened since, so a stale or no-longer-authorised
    answer is never stored."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._version = 0

    @property
    def version(self) -> int:
        """The collection's write version: read it before retrieving, hand it to ``put``."""
        with self._lock:
            return self._version

    def get(self, key: tuple) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def put(self, key: tuple, value: Any, version: int) -> bool:
        """Store ``value`` if no write happened since ``version`` was read; False if dropped."""
        if self.size <= 0:
            return False
        with self._lock:
            if version != self._version:
                return False
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return True

    def clear(self) -> None:
        """A write happened: forget every answer and refuse those computed before it."""
        with self._lock:
            self._items.clear()
            self._version += 1

    def __len__(self) -> int:
        return len(self._items)


class Collection:
    def __init__(self, tenant: str, name: str, root: Path, settings: Settings, embedder: Embedder,
                 reranker: Reranker | None = None) -> None:
        self.tenant, self.name, self.root = tenant, name, root
        self.files = root / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        update: dict = {"home": root / "index"}
        if settings.store.backend == "postgres":
            # every replica over one database names this collection's index alike (docs/adr/0010)
            base = settings.store.namespace
            ns = f"{base}/{tenant}/{name}" if base else f"{tenant}/{name}"
            update["store"] = settings.store.model_copy(update={"namespace": ns})
        self.settings = settings.model_copy(update=update)
        # one embedding model and one reranker for every collection
        self.engine = Engine(self.settings, embedder=embedder, reranker=reranker)
        self.store = self.engine.open_index()
        self.retriever = self.engine.retriever
        self.write_lock = threading.Lock()
        self._names_lock = threading.Lock()
        self.rw = RWLock()
        self.answers = AnswerCache(settings.serve.answer_cache_size)
        self._roots: list[Path] | None = None  # registered roots, read from registered.json when first needed

    # -- names ------------------------------------------------------------------------------
    def display(self, source: str) -> str:
        """What a client sees of a source, never a path of the server: an upload's (safe)
        name, or a registered file relative to the folder that was registered
        (``<folder name>/sub/file.md``; a file registered alone shows its name)."""
        path = Path(source)
        if path.is_relative_to(self.files):
            return path.name
        for root in self._registered():
            if path == root:
                return root.name
            if path.is_relative_to(root):
                return f"{root.name}/{path.relative_to(root).as_posix()}"
        return path.name

    def register_root(self, root: Path) -> None:
        """Remember a registered server folder (or file), so its documents show relative to it."""
        root = root.resolve()
        with self._names_lock:
            known = self._registered()
            if root in known:
                return
            tmp = self.root / "registered.json.tmp"
            tmp.write_text(json.dumps(sorted(str(r) for r in [*known, root])), "utf-8")
            os.replace(tmp, self.root / "registered.json")
            self._roots = None

    def _registered(self) -> list[Path]:
        """Registered roots, the longest first (the closest root names a file)."""
        roots = self._roots  # one read: register_root may reset it meanwhile
        if roots is None:
            try:
                found = [Path(r) for r in json.loads((self.root / "registered.json").read_text("utf-8"))]
            except (OSError, ValueError):
                found = []
            roots = self._roots = sorted(found, key=lambda r: len(r.parts), reverse=True)
        return roots

    def upload_path(self, filename: str, principals: tuple[str, ...] | None = None) -> Path:
        """Where an upload of ``filename`` by a caller with ``principals`` is stored (None: the
        unrestricted admin). It replaces the document of that name the caller can read (an
        upload of its own first, then the shared one, then another's). If the caller can read
        none, it becomes a new document in the caller's own folder (``files/.own/<hash of its
        principals>/``), so a document of that name it cannot read decides nothing: the caller
        gets the same answer, path and document id whether one exists or not (docs/serve.md)."""
        name = safe_filename(filename)
        shared = self.files / name
        scope = None if principals is None else content_hash("\n".join(sorted(principals)))[:16]
        own = shared if scope is None else self.files / _OWN / scope / name
        readable = {Path(r.source) for r in self.documents(None if principals is None else visible_to(principals))
                    if Path(r.source).is_relative_to(self.files) and Path(r.source).name == name}
        for candidate in (own, shared, *sorted(readable)):
            if candidate in readable:
                return candidate
        return own

    @property
    def write_version(self) -> int:
        """Moves on with every write (ingest, delete, ACL change) to the collection."""
        return self.answers.version

    # -- reads ------------------------------------------------------------------------------
    def rag(self, answerer: Answerer) -> RAG:
        """The RAG flow over this collection, every store read under its read lock."""
        return self.engine.rag(answerer, self.rw.read)

    def search(self, req: SearchRequest) -> list[Hit]:
        with self.rw.read():
            return self.retriever.search(req)

    def documents(self, where: Node | None) -> list[DocRecord]:
        with self.rw.read():
            return self.store.list_documents(where)

    def document(self, doc_id: str, where: Node | None) -> DocRecord | None:
        """One document's full record, if ``where`` (the caller's ACL) lets the caller see it."""
        with self.rw.read():
            if not self.store.list_documents(all_of(where, Compare("doc_id", "=", doc_id))):
                return None
            recs = self.store.get_documents([doc_id])
        return recs[0] if recs else None

    def count(self, where: Node | None = None) -> int:
        with self.rw.read():
            return self.store.count(where)

    # -- writes -----------------------------------------------------------------------------
    def save_result(self, path: Path, data: dict, version: int, where: Node | None, cited: set[str]) -> list[str]:
        """Write a result computed from this collection (an evaluation) as JSON at ``path``, unless
        a write since ``version`` removed (or hid from ``where``) a document it cites by display
        name: then nothing is written and those names are returned. Deletes take the write lock,
        so none lands between the check and the write."""
        with self.write_lock:
            if self.write_version != version:
                visible = {self.display(r.source) for r in self.documents(where)}
                gone = sorted(n for n in cited if n not in visible)
                if gone:
                    return gone
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, default=str), "utf-8")
            os.replace(tmp, path)
            return []

    def ingest(self, paths: list[Path], acl: tuple[str, ...] | None, on_event=None) -> IngestReport:
        """Index these files with ``acl`` (when the caller gave none, a re-ingested document
        keeps the ACL it has and a new one is readable by everyone). A caller's ACL applies to
        every file of the job, whatever path a file is indexed under: it never falls back to
        everyone (docs/security.md)."""
        with self.write_lock:
            known = self.store.documents()

            def acl_for(source: str) -> tuple[str, ...]:
                if acl is not None:
                    return acl
                rec = known.get(doc_id_for(source))
                return tuple(rec.acl) if rec else ("*",)

            syncer = self.engine.syncer(on_event, acl_for)
            try:
                return syncer.sync(paths, prune=False)
            finally:  # even a failed run may have committed batches
                self.answers.clear()

    def delete(self, doc_ids: list[str]) -> int:
        """Remove documents completely: chunks, vectors, full-text entries, older table versions,
        their cached embeddings (unless another chunk still uses the same text), cached answers,
        and uploaded originals. Returns how many existed."""
        with self.write_lock, self.rw.write():
            recs = self.store.get_documents(doc_ids)
            if not recs:
                return 0
            texts = self.store.delete_purge([r.doc_id for r in recs])
            still = self.store.remaining_texts(texts)
            self.engine.cache.delete_hashes(sorted({content_hash(t) for t in texts if t not in still}))
            self.answers.clear()
            for r in recs:
                path = Path(r.source)
                if path.is_relative_to(self.files) and path.exists():  # uploads, in files/ or files/.own/
                    path.unlink()
            return len(recs)

    def drop(self) -> None:
        """Delete the whole collection from disk."""
        with self.write_lock, self.rw.write():
            self.engine.cache.close()
            self.answers.clear()
            drop = getattr(self.store, "drop", None)
            if drop is not None:  # an index in a database: its schema goes too
                drop()
            shutil.rmtree(self.root, ignore_errors=True)


def registered_files(root: Path) -> Iterator[tuple[Path, str | None]]:
    """The files of a registered server folder (or the file itself): ``(resolved path, None)``
    for each regular file that resolves inside ``root``, and ``(path, reason)`` for each entry
    refused: a symlink (or anything else) that resolves outside the folder, or that is not a
    regular file. Sync resolves paths, so a link out of the folder would otherwise index a file
    the admin never registered (docs/security.md)."""
    root = root.resolve()
    if not root.is_dir():
        yield (root, None) if root.is_file() else (root, "not a regular file")
        return
    for dirpath, dirnames, filenames in os.walk(root):  # links to folders are not followed
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            try:
                real = path.resolve(strict=True)
                regular = stat.S_ISREG(real.stat().st_mode)
            except (OSError, RuntimeError):  # a dangling link or a loop
                yield path, "unreadable: a broken or looping symlink"
                continue
            if not real.is_relative_to(root):
                yield path, "refused: it resolves outside the registered folder (symlink)"
            elif not regular:
                yield path, "refused: not a regular file"
            else:
                yield real, None
