"""Two `ragline serve` processes over one PostgreSQL (and one data directory): durable jobs are
shared through the job table, and when one replica is killed in the middle of a job, the other
runs it again from its lease: every acknowledged upload is indexed exactly once."""

from __future__ import annotations

import signal
import time

import pytest

from tests.serve.conftest import start_server, stop_server

psycopg = pytest.importorskip("psycopg")
from ragline.store.postgres import schema_name  # noqa: E402

pytestmark = pytest.mark.slow

UPLOADS, FILES = 6, 4


def _text(u: int, f: int) -> str:
    body = "\n\n".join(f"Paragraph {p} of report {u}-{f}: the harbour crane {p % 9} lifted cargo "
                       f"container {u * 100 + f}-{p} onto the quay before the tide turned." for p in range(120))
    return f"# Report {u}-{f}\n\n{body}\n"


def test_a_replica_killed_mid_job_loses_no_upload_and_indexes_none_twice(tmp_path, pg_dsn):
    """Replicas A and B over one database and one data directory. A acknowledges six uploads and
    is killed while it runs one of them; B, which shared the queue all along, runs that job again
    once its lease has run out, and every uploaded file ends up indexed exactly once."""
    home = tmp_path / "shared"
    ns = f"replicas-{tmp_path.name}"
    env = {"RAGLINE_STORE__BACKEND": "postgres", "RAGLINE_STORE__DSN": pg_dsn, "RAGLINE_STORE__NAMESPACE": ns,
           "RAGLINE_SERVE__JOB_LEASE_S": "2", "RAGLINE_SERVE__JOB_WORKERS": "1",
           "RAGLINE_SERVE__RATE_LIMIT_PER_MINUTE": "100000", "RAGLINE_SERVE__RATE_LIMIT_BURST": "10000"}
    jobs_table = f'"{schema_name(ns + "/_jobs")}".jobs'
    a = start_server(home, env, "a.log")
    servers = [a]
    try:
        a.tenant("acme")
        a.collection("acme", "docs")
        warm = a.upload(a.admin(), "acme", "docs", {"warm.md": _text(99, 0)})  # run by A: the only replica
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            a_worker = conn.execute(f"SELECT lease_owner FROM {jobs_table} WHERE id = %s", (warm["id"],)).fetchone()[0]
        b = start_server(home, env, "b.log")
        servers.append(b)
        acked = [a.upload(a.admin(), "acme", "docs", {f"r{u}-{f}.md": _text(u, f) for f in range(FILES)},
                          wait=False)["id"] for u in range(UPLOADS)]
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 300
            killed = []
            while not killed:
                assert time.monotonic() < deadline, "A never started one of the jobs"
                killed = [r[0] for r in conn.execute(
                    f"SELECT id FROM {jobs_table} WHERE status = 'running' AND lease_owner = %s", (a_worker,))]
                time.sleep(0.02)
            a.proc.send_signal(signal.SIGKILL)  # in the middle of that job
            a.proc.wait(30)
        finals = [b.wait_job(b.admin(), "acme", "docs", j, timeout=600) for j in acked]
        assert [j["status"] for j in finals] == ["succeeded"] * UPLOADS, finals
        docs = b.admin().get("/v1/tenants/acme/collections/docs/documents", params={"limit": 1000}).json()
        names = sorted(d["name"] for d in docs["documents"])
        assert names == sorted(["warm.md"] + [f"r{u}-{f}.md" for u in range(UPLOADS) for f in range(FILES)])
        schema = schema_name(f"{ns}/acme/docs")
        with psycopg.connect(pg_dsn) as conn:
            per_doc = dict(conn.execute(f'SELECT doc_id, count(*) FROM "{schema}".chunks GROUP BY doc_id').fetchall())
            n_chunks = dict(conn.execute(f'SELECT doc_id, n_chunks FROM "{schema}".documents').fetchall())
            runs = {r[0]: r[1:] for r in conn.execute(f"SELECT id, attempts, lease_owner FROM {jobs_table}")}
        assert per_doc == n_chunks and len(per_doc) == UPLOADS * FILES + 1  # every chunk once, none lost
        assert runs[killed[0]][0] == 2 and runs[killed[0]][1] != a_worker  # run again, by B
        assert all(runs[j][0] == 1 for j in acked if j != killed[0])
    finally:
        for s in servers:
            if s.proc.poll() is None:
                stop_server(s)


def test_an_acknowledged_upload_survives_a_killed_server_on_the_embedded_store(tmp_path):
    """Without PostgreSQL the job table is SQLite beside the server's data: a server killed right
    after acknowledging an upload indexes it after it is started again."""
    home = tmp_path / "home"
    env = {"RAGLINE_SERVE__JOB_LEASE_S": "1", "RAGLINE_SERVE__JOB_WORKERS": "1"}
    first = start_server(home, env, "first.log")
    try:
        first.tenant("acme")
        first.collection("acme", "docs")
        files = {f"r{f}.md": _text(9, f) for f in range(3)}
        job = first.upload(first.admin(), "acme", "docs", files, wait=False)
    finally:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(30)
    assert (home / "serve" / "jobs.sqlite").exists()
    second = start_server(home, env, "second.log")
    try:
        done = second.wait_job(second.admin(), "acme", "docs", job["id"], timeout=300)
        assert done["status"] == "succeeded", done
        docs = second.admin().get("/v1/tenants/acme/collections/docs/documents").json()["documents"]
        assert sorted(d["name"] for d in docs) == sorted(files)
    finally:
        stop_server(second)
    from ragline.store.lance import LanceStore

    [index] = [p for p in home.rglob("lance") if p.is_dir()]
    store = LanceStore(index, None)
    assert store.count() == sum(r.n_chunks for r in store.documents().values()) > 0  # indexed once
