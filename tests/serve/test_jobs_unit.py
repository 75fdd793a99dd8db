"""The job scheduler on its own (no server): fairness across tenants, lanes, the per-tenant cap
and cancelling. Work functions block on events, so every ordering here is forced, not timed."""

from __future__ import annotations

import threading

import pytest

from ragline.serve.jobs import Job, JobLimitError, JobRunner

WAIT = 30  # seconds: only a guard against a hang, never part of what is asserted


def job(tenant: str, kind: str = "ingest", name: str = "") -> Job:
    return Job(id=name, tenant=tenant, collection="docs", kind=kind, files=[name or "f"])


class Recorder:
    """Work functions that note when they start and, if told to, wait for a gate."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.started: dict[str, threading.Event] = {}
        self.gates: dict[str, threading.Event] = {}

    def work(self, name: str, gated: bool = False):
        self.started[name] = threading.Event()
        if gated:
            self.gates[name] = threading.Event()

        def run(j: Job) -> None:
            self.order.append(name)
            self.started[name].set()
            if name in self.gates:
                assert self.gates[name].wait(WAIT)

        return run

    def open(self, name: str) -> None:
        self.gates[name].set()


def test_a_tenants_backlog_does_not_hold_another_tenants_next_job():
    # one worker: the old runner ran a1 a2 a3 b1 in arrival order; tenants now take turns
    runner, rec = JobRunner(workers=1), Recorder()
    runner.submit(job("A", name="a1"), rec.work("a1", gated=True))
    assert rec.started["a1"].wait(WAIT)
    for name in ("a2", "a3"):
        runner.submit(job("A", name=name), rec.work(name))
    runner.submit(job("B", name="b1"), rec.work("b1"))
    rec.open("a1")
    assert runner.wait_idle(WAIT)
    assert rec.order == ["a1", "b1", "a2", "a3"]
    assert [runner.get("A", n).status for n in ("a1", "a2", "a3")] == ["succeeded"] * 3


def test_tenants_alternate_when_both_have_backlogs():
    runner, rec = JobRunner(workers=1), Recorder()
    runner.submit(job("C", name="gate"), rec.work("gate", gated=True))  # holds the worker while we queue
    assert rec.started["gate"].wait(WAIT)
    for name in ("a1", "a2", "a3"):
        runner.submit(job("A", name=name), rec.work(name))
    for name in ("b1", "b2"):
        runner.submit(job("B", name=name), rec.work(name))
    rec.open("gate")
    assert runner.wait_idle(WAIT)
    assert rec.order == ["gate", "a1", "b1", "a2", "b2", "a3"]


def test_an_evaluation_never_blocks_an_upload_and_a_tenant_runs_one_job_per_lane():
    runner, rec = JobRunner(workers=2), Recorder()
    runner.submit(job("A", "evaluation", "eval"), rec.work("eval", gated=True))
    assert rec.started["eval"].wait(WAIT)
    # the same tenant's upload runs beside its evaluation, on the other worker
    runner.submit(job("A", name="up1"), rec.work("up1", gated=True))
    assert rec.started["up1"].wait(WAIT)
    # a second upload of the same tenant waits for the first (it would wait on the write lock anyway)
    runner.submit(job("A", name="up2"), rec.work("up2"))
    assert runner.get("A", "up2").status == "queued"
    rec.open("up1")
    assert rec.started["up2"].wait(WAIT)
    # another tenant's upload is served while A's evaluation still runs
    runner.submit(job("B", name="b1"), rec.work("b1"))
    assert rec.started["b1"].wait(WAIT)
    assert runner.get("A", "eval").status == "running"
    rec.open("eval")
    assert runner.wait_idle(WAIT)
    assert {runner.get(t, n).status for t, n in [("A", "eval"), ("A", "up1"), ("A", "up2"), ("B", "b1")]} == {"succeeded"}


def test_the_cap_counts_queued_and_running_jobs_per_tenant():
    runner, rec = JobRunner(workers=1, max_per_tenant=2), Recorder()
    runner.submit(job("A", name="a1"), rec.work("a1", gated=True))
    assert rec.started["a1"].wait(WAIT)
    runner.submit(job("A", name="a2"), rec.work("a2"))
    with pytest.raises(JobLimitError, match="at most 2"):
        runner.submit(job("A", name="a3"), rec.work("a3"))
    with pytest.raises(JobLimitError):
        runner.admit("A")
    assert runner.get("A", "a3") is None  # refused jobs leave no record
    runner.submit(job("B", name="b1"), rec.work("b1"))  # other tenants are not affected
    rec.open("a1")
    assert runner.wait_idle(WAIT)
    runner.admit("A")  # room again once they finished
    runner.submit(job("A", name="a4"), rec.work("a4"))
    assert runner.wait_idle(WAIT)
    assert "a3" not in rec.order and rec.order[-1] == "a4"


def test_cancel_a_queued_job_drops_it_at_once_and_frees_what_it_held():
    runner, rec = JobRunner(workers=1), Recorder()
    runner.submit(job("A", name="a1"), rec.work("a1", gated=True))
    assert rec.started["a1"].wait(WAIT)
    freed = []
    queued = runner.submit(job("A", name="a2"), rec.work("a2"), discard=lambda: freed.append("a2"))
    assert runner.cancel(queued) == "cancelled"
    assert queued.status == "cancelled" and queued.finished is not None and freed == ["a2"]
    assert runner.pending() == 0
    rec.open("a1")
    assert runner.wait_idle(WAIT)
    assert rec.order == ["a1"]  # it never ran
    assert runner.cancel(queued) == "finished"
    assert runner.cancel(runner.get("A", "a1")) == "finished"


def test_cancel_a_running_job_stops_it_at_its_next_boundary_and_keeps_what_it_did():
    runner = JobRunner(workers=1)
    first_done, go_on = threading.Event(), threading.Event()

    def work(j: Job) -> None:
        for i in range(100):
            if j.stopping():
                return
            j.done = i + 1
            j.documents.append(f"doc{i}")
            if i == 0:
                first_done.set()
                assert go_on.wait(WAIT)

    running = runner.submit(job("A", name="long"), work)
    assert first_done.wait(WAIT)
    assert runner.cancel(running) == "stopping" and running.status == "running"
    go_on.set()
    assert runner.wait_idle(WAIT)
    assert running.status == "cancelled" and running.done == 1 and running.documents == ["doc0"]
    assert running.public()["cancel_requested"] is True


def test_a_cancel_after_the_last_boundary_lets_the_job_succeed():
    runner = JobRunner(workers=1)
    past_last, finish = threading.Event(), threading.Event()

    def work(j: Job) -> None:
        j.check()  # the only boundary
        past_last.set()
        assert finish.wait(WAIT)

    j = runner.submit(job("A", name="j"), work)
    assert past_last.wait(WAIT)
    assert runner.cancel(j) == "stopping"
    finish.set()
    assert runner.wait_idle(WAIT)
    assert j.status == "succeeded"  # it did all its work: not reported as cancelled


def test_check_raises_through_code_that_catches_every_exception():
    runner = JobRunner(workers=1)
    started, gate = threading.Event(), threading.Event()
    seen: list[str] = []

    def work(j: Job) -> None:
        started.set()
        assert gate.wait(WAIT)
        for name in ("f1", "f2"):
            try:  # like the ingest loop, which turns a file's exception into its failure
                j.check()
                seen.append(name)
            except Exception:
                seen.append(f"{name} failed")

    j = runner.submit(job("A", name="j"), work)
    assert started.wait(WAIT)
    assert runner.cancel(j) == "stopping"
    gate.set()
    assert runner.wait_idle(WAIT)
    assert j.status == "cancelled" and seen == []


def test_a_failing_job_is_its_own_failure_and_the_workers_go_on():
    runner, rec = JobRunner(workers=1), Recorder()

    def boom(j: Job) -> None:
        raise RuntimeError("bug")

    bad = runner.submit(job("A", name="bad"), boom)
    runner.submit(job("A", name="ok"), rec.work("ok"))
    assert runner.wait_idle(WAIT)
    assert bad.status == "failed" and bad.errors == [{"file": None, "reason": "internal error: RuntimeError"}]
    assert runner.get("A", "ok").status == "succeeded"


def test_forgetting_a_collection_cancels_its_queued_jobs_and_old_records_go_first():
    runner, rec = JobRunner(workers=1, keep=2), Recorder()
    runner.submit(job("A", name="a1"), rec.work("a1", gated=True))
    assert rec.started["a1"].wait(WAIT)
    freed: list[str] = []
    for name in ("a2", "a3"):
        runner.submit(job("A", name=name), rec.work(name), discard=lambda n=name: freed.append(n))
    # over `keep`, but queued and running jobs keep their records
    assert [j.id for j in runner.list("A")] == ["a3", "a2", "a1"]
    runner.forget("A", "docs")
    assert runner.list("A") == [] and sorted(freed) == ["a2", "a3"] and runner.pending() == 0
    rec.open("a1")
    assert runner.wait_idle(WAIT)
    assert rec.order == ["a1"]


def test_an_outcome_the_work_gives_itself_stands_even_after_a_cancel():
    runner = JobRunner(workers=1)
    started, gate = threading.Event(), threading.Event()

    def work(j: Job) -> None:
        started.set()
        assert gate.wait(WAIT)
        j.stopping()  # it stops at a boundary...
        j.status = "failed"  # ...and then finds its result cannot be kept
        j.errors.append({"file": None, "reason": "a cited document was deleted"})

    j = runner.submit(job("A", "evaluation", "e"), work)
    assert started.wait(WAIT)
    assert runner.cancel(j) == "stopping"
    gate.set()
    assert runner.wait_idle(WAIT)
    assert j.status == "failed"
