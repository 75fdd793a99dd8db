"""Durable jobs: the job table that lets queued uploads survive a restart and several `ragline
serve` processes share one queue.

Each durable job is a row: what the client saw (``Job.public()``), the spec its work is rebuilt
from (``JobRunner.factories``), and a lease. A worker runs a job only after *claiming* it, an
atomic compare-and-set (``UPDATE ... WHERE status = 'queued'``), so two replicas never run it
twice. While it runs, its worker renews the lease and saves its progress every few seconds; a
replica that dies stops renewing, and when the lease has run out any replica puts the job back in
the queue and runs it again (ingestion is idempotent: a document already indexed is skipped, a
half-written one replaced). A cancel asked at any replica is a flag the running worker reads.

Backends: SQLite beside the server's data (one machine) or a table in PostgreSQL when
``[store] backend = "postgres"`` (every replica over that database).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ragline.serve.jobs import Job

_STATE = ("status", "created", "started", "finished", "done", "errors", "documents", "report", "cancel_requested")


def _row_to_job(row: dict) -> tuple[Job, dict]:
    state = json.loads(row["state"])
    job = Job(id=row["id"], tenant=row["tenant"], collection=row["collection"], kind=row["kind"],
              files=state.pop("files"), owner=row["owner"])
    for k in _STATE:
        if k in state:
            setattr(job, k, state[k])
    job.status = row["status"]
    job.cancel_requested = bool(row["cancel_requested"]) or job.cancel_requested
    return job, json.loads(row["spec"])


def _state(job: Job) -> str:
    pub = job.public()
    return json.dumps({"files": job.files, **{k: pub.get(k, getattr(job, k)) for k in _STATE}}, default=str)


class SQLJobStore:
    """The job table over a DB-API connection factory; ``ph`` is the driver's placeholder."""

    def __init__(self, connect, ph: str, table: str) -> None:
        self._connect, self._ph, self.table = connect, ph, table
        self._lock = threading.Lock()

    def _q(self, sql: str) -> str:
        return sql.replace("?", self._ph).replace("{t}", self.table)

    def _run(self, sql: str, params: tuple = (), fetch: bool = False) -> Any:
        with self._lock, self._connect() as conn:
            cur = conn.execute(self._q(sql), params)
            if fetch:
                cols = [d[0] for d in cur.description]
                return [dict(zip(cols, r)) for r in cur.fetchall()]
            return cur.rowcount

    def create(self) -> None:
        self._run("""CREATE TABLE IF NOT EXISTS {t} (
            id text PRIMARY KEY, tenant text NOT NULL, collection text NOT NULL, kind text NOT NULL,
            owner text NOT NULL, status text NOT NULL, spec text NOT NULL, state text NOT NULL,
            cancel_requested integer NOT NULL DEFAULT 0, lease_owner text, lease_until double precision,
            attempts integer NOT NULL DEFAULT 0, created double precision NOT NULL)""")

    def save(self, job: Job, spec: dict) -> None:
        self._run("INSERT INTO {t} (id, tenant, collection, kind, owner, status, spec, state, created) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (job.id, job.tenant, job.collection, job.kind, job.owner, job.status, json.dumps(spec),
                   _state(job), job.created))

    def claim(self, job: Job, worker: str, lease_s: float) -> bool:
        """Take a queued job for ``worker``: True for exactly one claimant."""
        now = time.time()
        return self._run("UPDATE {t} SET status = 'running', lease_owner = ?, lease_until = ?, state = ?, "
                         "attempts = attempts + 1 "
                         "WHERE id = ? AND status = 'queued' AND cancel_requested = 0",
                         (worker, now + lease_s, _state(job), job.id)) == 1

    def renew(self, jobs: list[Job], worker: str, lease_s: float) -> set[str]:
        """Extend the leases and save the progress of ``worker``'s running jobs; returns the ids
        of those a cancel was asked for (at any replica)."""
        cancelled: set[str] = set()
        for job in jobs:
            self._run("UPDATE {t} SET lease_until = ?, state = ? WHERE id = ? AND lease_owner = ?",
                      (time.time() + lease_s, _state(job), job.id, worker))
            rows = self._run("SELECT cancel_requested FROM {t} WHERE id = ?", (job.id,), fetch=True)
            if rows and rows[0]["cancel_requested"]:
                cancelled.add(job.id)
        return cancelled

    def finish(self, job: Job) -> None:
        # lease_owner stays: which process ran it last
        self._run("UPDATE {t} SET status = ?, state = ?, lease_until = NULL WHERE id = ?",
                  (job.status, _state(job), job.id))

    def request_cancel(self, job_id: str) -> None:
        self._run("UPDATE {t} SET cancel_requested = 1 WHERE id = ?", (job_id,))

    def cancel_queued(self, job: Job) -> bool:
        """Mark a queued job cancelled, unless a replica claimed it first."""
        return self._run("UPDATE {t} SET status = 'cancelled', cancel_requested = 1, state = ? "
                         "WHERE id = ? AND status = 'queued'", (_state(job), job.id)) == 1

    def requeue_expired(self) -> int:
        """Put back in the queue every running job whose worker stopped renewing its lease."""
        return self._run("UPDATE {t} SET status = 'queued', lease_owner = NULL, lease_until = NULL "
                         "WHERE status = 'running' AND lease_until < ?", (time.time(),))

    def queued(self) -> list[tuple[Job, dict]]:
        rows = self._run("SELECT * FROM {t} WHERE status = 'queued' ORDER BY created", fetch=True)
        return [_row_to_job(r) for r in rows]

    def load(self, job_id: str) -> tuple[Job, dict] | None:
        rows = self._run("SELECT * FROM {t} WHERE id = ?", (job_id,), fetch=True)
        return _row_to_job(rows[0]) if rows else None

    def list(self, tenant: str, collection: str | None = None) -> list[Job]:
        rows = self._run("SELECT * FROM {t} WHERE tenant = ? ORDER BY created DESC LIMIT 1000", (tenant,), fetch=True)
        return [j for j, _ in map(_row_to_job, rows) if collection in (None, j.collection)]

    def forget(self, tenant: str, collection: str | None = None) -> None:
        if collection is None:
            self._run("DELETE FROM {t} WHERE tenant = ?", (tenant,))
        else:
            self._run("DELETE FROM {t} WHERE tenant = ? AND collection = ?", (tenant, collection))


def sqlite_jobs(path: Path) -> SQLJobStore:
    def connect():
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        return _Closing(conn)

    store = SQLJobStore(connect, "?", "jobs")
    store.create()
    return store


def postgres_jobs(dsn: str, namespace: str | None, pool_size: int, timeout_s: float) -> SQLJobStore:
    from ragline.store.postgres import _pool, schema_name

    pool = _pool(dsn, pool_size, timeout_s)
    schema = schema_name(f"{namespace or ''}/_jobs")

    def connect():
        return pool.connection()

    store = SQLJobStore(connect, "%s", f'"{schema}".jobs')
    with pool.connection() as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    store.create()
    return store


class _Closing:
    """A sqlite3 connection as a context manager that closes it (sqlite3's own only commits)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
