"""Background ingestion jobs: one worker thread runs them in order.

One worker is deliberate: the embedding model already uses every core, and one writer at a
time makes concurrent uploads of the same document safe (the later one wins, whole).
Jobs live in memory; the newest ``keep`` are remembered.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("ragline.serve")


@dataclass
class Job:
    id: str
    tenant: str
    collection: str
    kind: str  # "ingest" | "reingest"
    files: list[str]  # what the client sent (display names)
    owner: str = ""  # the key that submitted it: only it (and the admin) may read the job
    status: str = "queued"  # queued | running | succeeded | partial | failed
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    done: int = 0  # files processed so far
    errors: list[dict] = field(default_factory=list)  # {"file", "reason"}
    documents: list[str] = field(default_factory=list)  # ids of documents indexed
    report: dict = field(default_factory=dict)

    def public(self) -> dict:
        total = len(self.files)
        return {"id": self.id, "collection": self.collection, "kind": self.kind, "status": self.status,
                "files": self.files, "total": total, "done": min(self.done, total),
                "progress": round(min(1.0, self.done / total), 3) if total else 1.0,
                "errors": self.errors, "documents": self.documents, "created": self.created,
                "started": self.started, "finished": self.finished, "report": self.report}


class JobRunner:
    def __init__(self, keep: int = 1000) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._keep = keep
        self._worker = threading.Thread(target=self._run, name="ragline-ingest", daemon=True)
        self._worker.start()

    def submit(self, job: Job, work: Callable[[Job], None]) -> Job:
        job.id = job.id or secrets.token_hex(8)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:
                self._jobs.popitem(last=False)
        self._queue.put((job, work))
        return job

    def get(self, tenant: str, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        return job if job is not None and job.tenant == tenant else None

    def list(self, tenant: str, collection: str | None = None) -> list[Job]:
        with self._lock:
            jobs = list(self._jobs.values())
        return [j for j in reversed(jobs) if j.tenant == tenant and collection in (None, j.collection)]

    def pending(self) -> int:
        return self._queue.qsize()

    def forget(self, tenant: str, collection: str | None = None) -> None:
        with self._lock:
            for jid in [j.id for j in self._jobs.values() if j.tenant == tenant and collection in (None, j.collection)]:
                del self._jobs[jid]

    def scrub(self, tenant: str, collection: str, doc_id: str, name: str) -> None:
        """Forget a deleted document in job records (its id and file name)."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.tenant == tenant and j.collection == collection]
        for j in jobs:
            j.documents = [d for d in j.documents if d != doc_id]
            j.files = [f for f in j.files if f != name]
            j.errors = [e for e in j.errors if e.get("file") != name]

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted job has run (for tests and shutdown)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _run(self) -> None:
        while True:
            job, work = self._queue.get()
            try:
                if job.status == "cancelled":
                    continue
                job.status, job.started = "running", time.time()
                work(job)
                if job.status == "running":
                    job.status = "partial" if job.errors and job.documents else "failed" if job.errors else "succeeded"
            except Exception as exc:  # a job's failure is its own, never the worker's
                log.exception("ingestion job %s failed", job.id)
                job.status = "failed"
                job.errors.append({"file": None, "reason": f"internal error: {type(exc).__name__}"})
            finally:
                job.finished = time.time()
                self._queue.task_done()
