"""Background jobs (ingestion and evaluations): a small pool of workers, fair across tenants.

Why fair: with one queue in arrival order, one tenant's long evaluation or big upload held every
other tenant's next job behind it. Here each tenant has its own queue, and a free worker serves
tenants in turn (round-robin), tenants with nothing running first. A tenant runs at most one job
per *lane* at a time (lanes: ``ingest`` for uploads, re-ingests and registrations, and
``evaluation``), so with the default two workers another tenant's next job waits for at most one
job already running, and a tenant's own upload never waits behind its own evaluation.

Why few workers: the embedding model is shared (it is thread-safe:
tests/embed/test_thread_safety.py) and already uses every core; more workers would only
interleave. Writes to one collection stay serialised by ``Collection.write_lock`` whoever runs
them, and one lane per tenant keeps a second upload from holding a worker while it waits for that
lock.

A tenant may have at most ``max_per_tenant`` jobs queued or running; ``submit`` refuses more
(``JobLimitError``). A queued job can be cancelled at once; a running one is asked to stop, and
its work calls ``Job.stopping()`` (or ``Job.check()``) at each file or item boundary, keeping what
it committed. Jobs live in memory; the newest ``keep`` finished ones are remembered.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Literal

log = logging.getLogger("ragline.serve")

Work = Callable[["Job"], None]
Discard = Callable[[], None]  # frees what a job holds (staged uploads) when it will never run
FINAL = ("succeeded", "partial", "failed", "cancelled")


class JobLimitError(Exception):
    """The tenant already has as many jobs queued or running as it may."""


class JobCancelled(BaseException):
    """Raised by ``Job.check()`` to stop a job's work at a boundary.

    A BaseException on purpose: the ingest loop turns every ``Exception`` of one file into that
    file's failure, and a cancel is not a failure of the file being read."""


@dataclass
class Job:
    id: str
    tenant: str
    collection: str
    kind: str  # "ingest" | "reingest" | "evaluation"
    files: list[str]  # what the client sent (display names), or an evaluation's item ids
    owner: str = ""  # the key that submitted it: only it (and the admin) may read the job
    status: str = "queued"  # queued | running | succeeded | partial | failed | cancelled
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    done: int = 0  # files (items) processed so far
    errors: list[dict] = field(default_factory=list)  # {"file", "reason"}
    documents: list[str] = field(default_factory=list)  # ids of documents indexed
    report: dict = field(default_factory=dict)
    cancel_requested: bool = False
    stopped_early: bool = False  # the work stopped at a boundary because of a cancel

    @property
    def lane(self) -> Literal["ingest", "evaluation"]:
        return "evaluation" if self.kind == "evaluation" else "ingest"

    def stopping(self) -> bool:
        """Whether the work should stop here. Call it only at a boundary where stopping keeps
        everything consistent: once it says True, the job ends "cancelled"."""
        if self.cancel_requested:
            self.stopped_early = True
        return self.stopped_early

    def check(self) -> None:
        """Raise JobCancelled at a boundary if a cancel was asked for."""
        if self.stopping():
            raise JobCancelled(self.id)

    def public(self) -> dict:
        total = len(self.files)
        return {"id": self.id, "collection": self.collection, "kind": self.kind, "status": self.status,
                "files": self.files, "total": total, "done": min(self.done, total),
                "progress": round(min(1.0, self.done / total), 3) if total else 1.0,
                "errors": self.errors, "documents": self.documents, "created": self.created,
                "started": self.started, "finished": self.finished, "report": self.report,
                "cancel_requested": self.cancel_requested}


@dataclass
class _Entry:
    job: Job
    work: Work
    discard: Discard | None


class JobRunner:
    def __init__(self, workers: int = 2, max_per_tenant: int = 20, keep: int = 1000) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queues: dict[str, deque[_Entry]] = {}  # per tenant, oldest first
        self._served: dict[str, int] = {}  # tenant -> when it last started a job (a sequence number)
        self._seq = 0
        self._busy: set[tuple[str, str]] = set()  # (tenant, lane) running now
        self._active: Counter[str] = Counter()  # running jobs per tenant
        self._cond = threading.Condition()
        self._keep = keep
        self.max_per_tenant = max_per_tenant
        self._workers = [threading.Thread(target=self._run, name=f"ragline-jobs-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for w in self._workers:
            w.start()

    # -- submitting and cancelling -----------------------------------------------------------
    def admit(self, tenant: str) -> None:
        """Raise JobLimitError when ``tenant`` has no room for another job (a cheap check before
        an upload is staged; ``submit`` checks again)."""
        with self._cond:
            self._admit(tenant)

    def _admit(self, tenant: str) -> None:
        queued = len(self._queues.get(tenant, ()))
        if queued + self._active[tenant] >= self.max_per_tenant:
            raise JobLimitError(f"this tenant already has {queued + self._active[tenant]} jobs queued or running "
                                f"(at most {self.max_per_tenant}); wait for one to finish or cancel one")

    def submit(self, job: Job, work: Work, discard: Discard | None = None) -> Job:
        job.id = job.id or secrets.token_hex(8)
        with self._cond:
            self._admit(job.tenant)
            self._jobs[job.id] = job
            self._evict()
            self._queues.setdefault(job.tenant, deque()).append(_Entry(job, work, discard))
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> Literal["cancelled", "stopping", "finished"]:
        """Cancel a job: a queued one at once ("cancelled"), a running one at its next boundary
        ("stopping"); a finished one is left as it is ("finished")."""
        with self._cond:
            if job.status == "queued":
                entry = self._dequeue(job)
                job.cancel_requested = True
                job.finished = time.time()
                job.status = "cancelled"
            elif job.status == "running":
                job.cancel_requested = True
                return "stopping"
            else:
                return "finished"
        if entry is not None and entry.discard is not None:
            entry.discard()
        return "cancelled"

    def _dequeue(self, job: Job) -> _Entry | None:
        q = self._queues.get(job.tenant)
        if q is None:
            return None
        for entry in q:
            if entry.job is job:
                q.remove(entry)
                if not q:
                    del self._queues[job.tenant]
                return entry
        return None

    # -- reading -----------------------------------------------------------------------------
    def get(self, tenant: str, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        return job if job is not None and job.tenant == tenant else None

    def list(self, tenant: str, collection: str | None = None) -> list[Job]:
        with self._cond:
            jobs = list(self._jobs.values())
        return [j for j in reversed(jobs) if j.tenant == tenant and collection in (None, j.collection)]

    def pending(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def forget(self, tenant: str, collection: str | None = None) -> None:
        """Drop the records of a deleted tenant or collection; its queued jobs never run, and its
        running ones are asked to stop."""
        with self._cond:
            gone = [j for j in self._jobs.values() if j.tenant == tenant and collection in (None, j.collection)]
        for job in gone:
            self.cancel(job)
        with self._cond:
            for job in gone:
                self._jobs.pop(job.id, None)
            if collection is None:
                self._served.pop(tenant, None)

    def scrub(self, tenant: str, collection: str, doc_id: str, name: str) -> None:
        """Forget a deleted document in job records (its id and file name)."""
        with self._cond:
            jobs = [j for j in self._jobs.values() if j.tenant == tenant and j.collection == collection]
        for j in jobs:
            j.documents = [d for d in j.documents if d != doc_id]
            j.files = [f for f in j.files if f != name]
            j.errors = [e for e in j.errors if e.get("file") != name]

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted job has run (for tests and shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queues and not self._active, timeout)

    def _evict(self) -> None:
        """Keep the newest ``keep`` records; a queued or running job is never forgotten."""
        extra = len(self._jobs) - self._keep
        if extra <= 0:
            return
        old = [jid for jid, j in self._jobs.items() if j.status in FINAL][:extra]
        for jid in old:
            del self._jobs[jid]

    # -- the workers -------------------------------------------------------------------------
    def _next(self) -> _Entry | None:
        """The next job to start: tenants in turn (fewest jobs running first, then the one served
        longest ago); in a tenant, its oldest job whose lane is free."""
        for tenant in sorted(self._queues, key=lambda t: (self._active[t], self._served.get(t, -1))):
            q = self._queues[tenant]
            for entry in q:
                if (tenant, entry.job.lane) not in self._busy:
                    q.remove(entry)
                    if not q:
                        del self._queues[tenant]
                    self._seq += 1
                    self._served[tenant] = self._seq  # served: to the back of the line
                    return entry
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                entry = self._next()
                while entry is None:
                    self._cond.wait()
                    entry = self._next()
                job = entry.job
                job.status, job.started = "running", time.time()
                self._busy.add((job.tenant, job.lane))
                self._active[job.tenant] += 1
            try:
                self._execute(job, entry.work)
            finally:
                with self._cond:
                    self._busy.discard((job.tenant, job.lane))
                    self._active[job.tenant] -= 1
                    if self._active[job.tenant] <= 0:
                        del self._active[job.tenant]
                    self._cond.notify_all()  # a lane is free: waiting workers and wait_idle look again

    @staticmethod
    def _execute(job: Job, work: Work) -> None:
        failed = False
        try:
            work(job)
        except JobCancelled:
            job.stopped_early = True
        except Exception as exc:  # a job's failure is its own, never the worker's
            log.exception("job %s (%s) failed", job.id, job.kind)
            failed = True
            job.errors.append({"file": None, "reason": f"internal error: {type(exc).__name__}"})
        job.finished = time.time()  # before the status: whoever sees a final status sees the time
        if failed:
            job.status = "failed"
        elif job.status == "running":  # (unless the work gave its own outcome, e.g. "failed")
            job.status = ("cancelled" if job.stopped_early else "partial" if job.errors and job.documents
                          else "failed" if job.errors else "succeeded")
