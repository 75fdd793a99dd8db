"""ragline on PostgreSQL end to end: the CLI (ingest, status, query, an incremental sync) and
`ragline serve` (a collection's index is a schema named by tenant/collection, dropped with it),
both selected by configuration only, against a real PostgreSQL from ``pgserver``."""

from __future__ import annotations

import shutil

import pytest

from tests.serve.conftest import ADMIN, start_server, stop_server

psycopg = pytest.importorskip("psycopg")
from ragline.store.postgres import schema_name  # noqa: E402

pytestmark = pytest.mark.slow


def _schemas(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'rl_%'")}


def test_cli_ingest_query_status_and_sync_on_postgres(cli, corpus, pg_dsn, tmp_path):
    cli.env.update({"RAGLINE_STORE__BACKEND": "postgres", "RAGLINE_STORE__DSN": pg_dsn,
                    "RAGLINE_STORE__NAMESPACE": f"cli-{tmp_path.name}"})
    cli.run("ingest", str(corpus))
    st = cli.json("status")
    assert st["store"].startswith("postgres") and st["database"]["schema"] == schema_name(f"cli-{tmp_path.name}")
    assert st["documents"] == 8 and st["chunks"] >= 8
    assert not (cli.home / "lance").exists()  # nothing was written to the embedded store
    hits = cli.json("query", "How many moons does Mars have?", "-k", "3")["hits"]
    assert hits[0]["source"].endswith("mars.html")
    (corpus / "mars.html").unlink()
    cli.run("ingest", str(corpus))
    assert cli.json("status")["documents"] == 7
    assert all(not h["source"].endswith("mars.html") for h in cli.json("query", "moons of Mars", "-k", "10")["hits"])


def test_a_bad_dsn_is_one_clear_error(cli, corpus):
    cli.env.update({"RAGLINE_STORE__BACKEND": "postgres",
                    "RAGLINE_STORE__DSN": "postgresql://ragline:hunter2@127.0.0.1:1/none?connect_timeout=1"})
    proc = cli.run("ingest", str(corpus), check=False)
    assert proc.returncode != 0
    assert "cannot connect to PostgreSQL" in proc.stderr and "hunter2" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    cli.env["RAGLINE_STORE__DSN"] = ""
    proc = cli.run("status", check=False)
    assert proc.returncode != 0 and "store.dsn" in proc.stderr


def test_serve_keeps_each_collection_in_its_own_schema(tmp_path, pg_dsn):
    server = start_server(tmp_path / "serve", {"RAGLINE_STORE__BACKEND": "postgres", "RAGLINE_STORE__DSN": pg_dsn,
                                               "RAGLINE_STORE__NAMESPACE": f"srv-{tmp_path.name}"})
    try:
        server.tenant("acme")
        server.collection("acme", "docs")
        admin = server.admin()
        job = server.upload(admin, "acme", "docs", {"walrus.md": "# Walruses\n\nWalruses bask on Arctic ice floes."})
        assert job["status"] == "succeeded", job
        r = admin.post("/v1/tenants/acme/collections/docs/query", json={"query": "where do walruses bask", "k": 3})
        assert r.status_code == 200, r.text
        assert r.json()["hits"][0]["source"] == "walrus.md"
        schema = schema_name(f"srv-{tmp_path.name}/acme/docs")
        assert schema in _schemas(pg_dsn)
        assert server.client(ADMIN).delete("/v1/tenants/acme/collections/docs").status_code in (200, 204)
        assert schema not in _schemas(pg_dsn)
    finally:
        stop_server(server)
