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
    """Replica A acknowledges six uploads and is killed while it runs the first; A restarted and
    a second replica B then share what is left: the killed job is run again once its lease ran
    out, and every uploaded file ends up indexed exactly once."""
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
        client = a.admin()
        acked = [a.upload(client, "acme", "docs", {f"r{u}-{f}.md": _text(u, f) for f in range(FILES)},
                          wait=False)["id"] for u in range(UPLOADS)]
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 300
            while not conn.execute(f"SELECT count(*) FROM {jobs_table} WHERE status = 'running'").fetchone()[0]:
                assert time.monotonic() < deadline, "no job started"
                time.sleep(0.05)
            a.proc.send_signal(signal.SIGKILL)  # in the middle of a job
            a.proc.wait(30)
            killed = [r[0] for r in conn.execute(f"SELECT id FROM {jobs_table} WHERE status = 'running'")]
        assert len(killed) == 1
        servers = [start_server(home, env, "a2.log"), start_server(home, env, "b.log")]
        b = servers[1]
        finals = [b.wait_job(b.admin(), "acme", "docs", j, timeout=600) for j in acked]
        assert [j["status"] for j in finals] == ["succeeded"] * UPLOADS, finals
        docs = b.admin().get("/v1/tenants/acme/collections/docs/documents", params={"limit": 1000}).json()
        names = sorted(d["name"] for d in docs["documents"])
        assert names == sorted(f"r{u}-{f}.md" for u in range(UPLOADS) for f in range(FILES))
        schema = schema_name(f"{ns}/acme/docs")
        with psycopg.connect(pg_dsn) as conn:
            per_doc = dict(conn.execute(f'SELECT doc_id, count(*) FROM "{schema}".chunks GROUP BY doc_id').fetchall())
            n_chunks = dict(conn.execute(f'SELECT doc_id, n_chunks FROM "{schema}".documents').fetchall())
            attempts = dict(conn.execute(f"SELECT id, attempts FROM {jobs_table}").fetchall())
        assert per_doc == n_chunks and len(per_doc) == UPLOADS * FILES  # every chunk once, none lost
        assert attempts[killed[0]] == 2  # the killed job ran again, once
        assert all(attempts[j] == 1 for j in acked if j != killed[0])
    finally:
        for s in servers:
            if s.proc.poll() is None:
                stop_server(s)
