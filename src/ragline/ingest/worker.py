"""Parse files in a child process that can be stopped.

Parsers take bytes from anywhere, and a crafted file can make a library loop for half an hour or
allocate gigabytes (a DOCX of millions of empty paragraphs, a decompression bomb). Parsing in a
persistent child process, under its own address-space limit and a deadline the parent enforces,
turns such a file into one failed file instead of a hung or killed run. The child lives across
files, so its start-up is paid once per run; it is killed and restarted only after a timeout or a
crash. Chunking and everything after it stay in the parent.
"""

from __future__ import annotations

import importlib
import math
import os
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from dataclasses import dataclass
from typing import Any, Protocol

from ragline.ingest.parsers import ParseError, parse_bytes
from ragline.ingest.parsers import base as _base
from ragline.types import Document

DEFAULT_ENTRY = "ragline.ingest.parsers:parse_bytes"
START_TIMEOUT_S = 120.0  # a cold start imports the parsers; a loaded machine can take a while


class WorkerStartError(RuntimeError):
    """The parse worker could not be started: a problem of the run, not of any one file."""


@dataclass(frozen=True)
class ParseLimits:
    """How files are parsed: ``workers`` 0 parses in this process (tests, debugging; no limits
    apply), 1 in a child process under ``timeout_s`` per file and ``memory_mb`` of address space."""

    workers: int = 1
    timeout_s: float = 120.0
    memory_mb: int = 2048
    # the function the worker runs, as "module:function" with parse_bytes' signature (tests
    # substitute one that hangs or crashes, to exercise the real process handling)
    entry: str = DEFAULT_ENTRY

    @classmethod
    def from_settings(cls, ingest: Any) -> ParseLimits:
        """From the ``[ingest]`` settings (``parse_workers``, ``parse_timeout_s``, ``parse_memory_mb``)."""
        return cls(ingest.parse_workers, ingest.parse_timeout_s, ingest.parse_memory_mb)


class Parser(Protocol):
    def parse(self, data: bytes, source: str, type: str) -> Document: ...  # noqa: A002

    def close(self) -> None: ...


class InProcessParser:
    """Parses in the calling process: no isolation, for tests or ``parse_workers = 0``."""

    def parse(self, data: bytes, source: str, type: str) -> Document:  # noqa: A002
        try:
            return parse_bytes(data, source, type)
        except MemoryError:
            raise ParseError("parse ran out of memory") from None

    def close(self) -> None:
        pass


class WorkerParser:
    """Parses in one persistent child process; ``parse`` raises ParseError with the reason when the
    file fails, times out (the child is killed) or kills the child."""

    def __init__(self, timeout_s: float = 120.0, memory_mb: int = 2048, entry: str = DEFAULT_ENTRY) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.entry = entry
        self.starts = 0
        self._busy = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Any = None

    def parse(self, data: bytes, source: str, type: str) -> Document:  # noqa: A002
        conn = self._ensure()
        try:
            conn.send((data, source, type))
        except (OSError, EOFError):  # the idle child died (e.g. killed from outside): once more, fresh
            self._stop()
            conn = self._ensure()
            conn.send((data, source, type))
        self._busy = True  # until the reply is in: an interrupted wait leaves a child to kill, not to ask
        if not conn.poll(self.timeout_s):
            self._stop()
            raise ParseError(f"parse timed out after {self.timeout_s:g} s")
        try:
            status, value = conn.recv()
        except (OSError, EOFError):
            raise ParseError(self._death()) from None
        self._busy = False
        if status == "ok":
            return value
        if status == "oom":
            self._stop()
            raise ParseError(f"parse ran out of memory (limit {self.memory_mb} MB)")
        raise ParseError(value)

    @property
    def restarts(self) -> int:
        """Children started after the first: how many files cost the worker its life."""
        return max(0, self.starts - 1)

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None and not self._busy:
            try:
                self._conn.send(None)
                self._proc.wait(5)
            except (OSError, EOFError, subprocess.TimeoutExpired):
                pass
        self._stop()

    def __enter__(self) -> WorkerParser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the child's lifecycle -------------------------------------------------------------
    def _ensure(self) -> Connection:
        if self._proc is not None and self._proc.poll() is None:
            return self._conn
        self._stop()
        # A fresh interpreter, not fork: the parent may hold threads (the server, the embedder's
        # pools) and a loaded model, which a forked child would inherit. Not multiprocessing's
        # spawn either: that re-imports the host program's __main__ (a script, a notebook).
        ours, theirs = socket.socketpair()
        debug = os.environ.get("RAGLINE_DEBUG", "") not in ("", "0")
        try:
            proc = subprocess.Popen([sys.executable, "-m", "ragline.ingest.worker", str(theirs.fileno())],
                                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=None if debug else subprocess.DEVNULL)
        except OSError as exc:
            ours.close()
            raise WorkerStartError(f"could not start the parse worker: {exc}") from exc
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        self._proc, self._conn = proc, conn
        self.starts += 1
        try:
            # the parsers' own caps as this process has them configured (parsers.base.configure)
            conn.send((list(sys.path), self.entry, self.memory_mb, self.timeout_s, getattr(_base, "LIMITS", None)))
            ready = conn.poll(START_TIMEOUT_S) and conn.recv() == "ready"
        except (OSError, EOFError):
            ready = False
        if not ready:
            self._stop()
            raise WorkerStartError("the parse worker did not start (RAGLINE_DEBUG=1 shows why); "
                                   "ingest.parse_workers = 0 parses in-process")
        return conn

    def _death(self) -> str:
        """Why the child died mid-parse, after reaping it."""
        proc = self._proc
        self._stop()
        code = proc.returncode if proc is not None else None
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            if -code == signal.SIGKILL:
                return f"parse worker was killed (SIGKILL; out of memory? limit {self.memory_mb} MB)"
            if -code == getattr(signal, "SIGALRM", None):
                return f"parse timed out after {self.timeout_s:g} s"
            return f"parse crashed the worker ({name})"
        return f"parse crashed the worker (exit code {code})"

    def _stop(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        self._busy = False
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def open_parser(limits: ParseLimits) -> InProcessParser | WorkerParser:
    if limits.workers > 0:
        return WorkerParser(limits.timeout_s, limits.memory_mb, limits.entry)
    return InProcessParser()


# -------------------------------------------------------------------------------- the child
def _limit_memory(memory_mb: int) -> None:
    try:
        import resource
    except ImportError:  # not POSIX: the deadline still applies
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_mb * 2**20
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _serve(conn: Connection) -> None:
    """The child: parse (bytes, source, type) requests until told to stop or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    path, entry, memory_mb, timeout_s, parse_caps = conn.recv()
    sys.path[:] = path  # the parent's, so an entry from its tests imports here too
    if parse_caps is not None:
        _base.LIMITS = parse_caps
    module, _, name = entry.partition(":")
    parse = getattr(importlib.import_module(module), name)
    _limit_memory(memory_mb)
    conn.send("ready")
    # a second deadline of our own: if the parent is gone (kill -9) nobody else would stop a runaway parse
    alarm_s = math.ceil(timeout_s) + 30
    while True:
        try:
            msg = conn.recv()
        except (OSError, EOFError):
            return
        if msg is None:
            return
        data, source, kind = msg
        del msg
        signal.alarm(alarm_s)
        try:
            reply: tuple[str, Any] = ("ok", parse(data, source, kind))
        except ParseError as exc:  # a parser that wrapped a MemoryError still ran out of memory
            reply = ("oom", None) if "MemoryError" in exc.reason else ("error", exc.reason)
        except MemoryError:
            reply = ("oom", None)
        except Exception as exc:  # parse_bytes lets nothing else out, but a reply must always come
            reply = ("error", f"{kind} parse failed: {type(exc).__name__}")
        finally:
            signal.alarm(0)
        del data
        try:
            conn.send(reply)
        except MemoryError:
            reply = ("oom", None)
            conn.send(reply)
        except (OSError, EOFError):
            return
        if reply[0] == "oom":  # the heap may be fragmented or half-freed: start clean
            return


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
