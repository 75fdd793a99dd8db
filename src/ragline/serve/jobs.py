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


Factory = Callable[["Job", dict], "tuple[Work, Discard | None]"]  # rebuilds a durable job's work from its spec


class JobRunner:
    def __init__(self, workers: int = 2, max_per_tenant: int = 20, keep: int = 1000, store=None,
                 lease_s: float = 30.0) -> None:
        # durable jobs (serve/jobstore.py): submitted with a spec, saved in ``store``, run only
        # once claimed there; ``factories`` rebuild the work of jobs this process did not submit
        self.store = store
        self.lease_s = lease_s
        self.worker_id = secrets.token_hex(6)
        self.factories: dict[str, Factory] = {}
        self._durable: set[str] = set()
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
        if store is not None:
            threading.Thread(target=self._tend, name="ragline-jobs-lease", daemon=True).start()

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

    def submit(self, job: Job, work: Work, discard: Discard | None = None, spec: dict | None = None) -> Job:
        """Queue ``job``. With a ``spec`` (and a store) it is durable: saved before it is queued,
        so an acknowledged job survives this process."""
        job.id = job.id or secrets.token_hex(8)
        with self._cond:
            self._admit(job.tenant)
        if spec is not None and self.store is not None:
            self.store.save(job, spec)
            self._durable.add(job.id)
        with self._cond:
            self._jobs[job.id] = job
            self._evict()
            self._queues.setdefault(job.tenant, deque()).append(_Entry(job, work, discard))
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> Literal["cancelled", "stopping", "finished"]:
        """Cancel a job: a queued one at once ("cancelled"), a running one at its next boundary
        ("stopping"); a finished one is left as it is ("finished")."""
        if job.id in self._durable or (self.store is not None and job.id not in self._jobs):
            return self._cancel_durable(job)
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

    def _cancel_durable(self, job: Job) -> Literal["cancelled", "stopping", "finished"]:
        """A durable job may be queued or running in any replica: the store decides."""
        assert self.store is not None
        if job.status in FINAL:
            return "finished"
        if job.status == "queued" and self.store.cancel_queued(job):
            with self._cond:
                entry = self._dequeue(job)
                job.cancel_requested, job.finished, job.status = True, time.time(), "cancelled"
            self.store.finish(job)
            if entry is not None and entry.discard is not None:
                entry.discard()
            return "cancelled"
        self.store.request_cancel(job.id)  # running here or elsewhere: its worker reads the flag
        job.cancel_requested = True
        return "stopping"

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
        if job is None and self.store is not None:  # another replica's (or an earlier process's) job
            found = self.store.load(job_id)
            job = found[0] if found else None
        return job if job is not None and job.tenant == tenant else None

    def list(self, tenant: str, collection: str | None = None) -> list[Job]:
        with self._cond:
            jobs = list(self._jobs.values())
        mine = [j for j in reversed(jobs) if j.tenant == tenant and collection in (None, j.collection)]
        if self.store is None:
            return mine
        live = {j.id: j for j in mine}
        stored = self.store.list(tenant, collection)
        return [live.pop(j.id, j) for j in stored] + list(live.values())

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
        if self.store is not None:
            self.store.forget(tenant, collection)

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
                self._busy.add((job.tenant, job.lane))
                self._active[job.tenant] += 1
            try:
                if job.id in self._durable and not self.store.claim(job, self.worker_id, self.lease_s):
                    # another replica runs it (or it was cancelled there): it is not ours to keep
                    with self._cond:
                        self._jobs.pop(job.id, None)
                    self._durable.discard(job.id)
                    continue
                job.status, job.started = "running", time.time()
                self._execute(job, entry.work)
                if job.id in self._durable:
                    self.store.finish(job)
                    self._durable.discard(job.id)
            finally:
                with self._cond:
                    self._busy.discard((job.tenant, job.lane))
                    self._active[job.tenant] -= 1
                    if self._active[job.tenant] <= 0:
                        del self._active[job.tenant]
                    self._cond.notify_all()  # a lane is free: waiting workers and wait_idle look again

    def _tend(self) -> None:
        """Every third of a lease: renew this process's leases (saving progress, reading cancels),
        requeue jobs whose worker died, and take in queued jobs other processes saved."""
        while True:
            time.sleep(self.lease_s / 3)
            try:
                self.tend()
            except Exception:  # the store may be briefly unreachable; try again next round
                log.exception("job lease upkeep failed")

    def tend(self) -> None:
        assert self.store is not None
        with self._cond:
            running = [j for j in self._jobs.values() if j.id in self._durable and j.status == "running"]
        for jid in self.store.renew(running, self.worker_id, self.lease_s):
            job = self._jobs.get(jid)
            if job is not None:
                job.cancel_requested = True
        self.store.requeue_expired()
        for job, spec in self.store.queued():
            factory = self.factories.get(job.kind)
            if job.id in self._jobs or factory is None:
                continue
            try:
                work, discard = factory(job, spec)
            except Exception:
                log.exception("cannot rebuild job %s (%s)", job.id, job.kind)
                continue
            self._durable.add(job.id)
            with self._cond:
                self._jobs[job.id] = job
                self._queues.setdefault(job.tenant, deque()).append(_Entry(job, work, discard))
                self._cond.notify()

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
