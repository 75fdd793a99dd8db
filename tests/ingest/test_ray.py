"""`ragline ingest --ray`: parsing and chunking in Ray tasks, embedding in Ray actors, on a real
local Ray instance. The index must be the one a single-process ingest builds (same chunk ids and
texts), and a worker killed mid-run must be retried without losing or duplicating anything."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow


def _index(home: Path) -> tuple[dict, dict]:
    """(chunk id -> text, doc id -> (n_chunks, fingerprint, file hash)) of the index at ``home``."""
    from ragline.store.lance import LanceStore

    store = LanceStore(home / "lance", None)
    chunks = {}
    for c in store.iter_chunks():
        assert c.id not in chunks, f"duplicate chunk {c.id}"
        chunks[c.id] = c.text
    docs = {d.doc_id: (d.n_chunks, d.fingerprint, d.file_hash) for d in store.documents().values()}
    return chunks, docs


def _corpus(root: Path, corpus: Path, n: int) -> Path:
    shutil.copytree(corpus, root)
    for i in range(n):
        (root / f"note-{i:03d}.md").write_text(
            f"# Note {i}\n\nObservation {i}: the tide rose {i % 7} metres near pier {i % 13}.\n\n"
            + "Longer paragraph of field notes. " * (5 + i % 40), encoding="utf-8")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    return root


def test_ray_ingest_builds_the_same_index_as_one_process(cli, corpus, tmp_path):
    docs = _corpus(tmp_path / "docs", corpus, 40)
    local = cli.json("ingest", str(docs), check=False)
    ray_cli = type(cli)(tmp_path / "ray-home")
    ray_cli.env.update(cli.env, RAGLINE_HOME=str(tmp_path / "ray-home"))
    remote = ray_cli.json("ingest", str(docs), "--ray", "auto", check=False)
    assert remote["added"] == local["added"] == 48
    assert [f["path"] for f in remote["failed"]] == [f["path"] for f in local["failed"]] == [str(docs / "broken.pdf")]
    assert remote["failed"][0]["reason"] == local["failed"][0]["reason"]
    assert _index(tmp_path / "ray-home") == _index(cli.home)
    # a second run is incremental on Ray too: nothing changed, nothing re-indexed
    (docs / "note-000.md").write_text("# Note 0\n\nRewritten entirely.", encoding="utf-8")
    again = ray_cli.json("ingest", str(docs), "--ray", "auto", check=False)
    assert (again["added"], again["replaced"], again["skipped"]) == (0, 1, 47)


def test_a_worker_killed_mid_run_is_retried_without_duplicates(cli, corpus, tmp_path):
    docs = _corpus(tmp_path / "docs", corpus, 240)
    proc = subprocess.Popen([sys.executable, "-m", "ragline.cli", "ingest", str(docs), "--ray", "auto", "--json"],
                            env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 600
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if "ray::build_batch" in cmd:
                os.kill(p.info["pid"], signal.SIGKILL)
                killed = p.info["pid"]
                break
        time.sleep(0.02)
    out, errs = proc.communicate(timeout=600)
    assert killed is not None, "no parse task was seen running; the run ended first"
    report = json.loads(out)
    assert report["added"] == 248 and [f["path"] for f in report["failed"]] == [str(docs / "broken.pdf")], errs
    chunks, records = _index(cli.home)
    assert sum(n for n, _, _ in records.values()) == len(chunks)  # every chunk once, none lost
    local_home = tmp_path / "local"
    subprocess.run([sys.executable, "-m", "ragline.cli", "ingest", str(docs), "--home", str(local_home)],
                   env=cli.env, capture_output=True, timeout=900)
    assert _index(local_home) == (chunks, records)


def test_an_unreachable_cluster_is_one_clear_error(cli, corpus):
    proc = cli.run("ingest", str(corpus), "--ray", "127.0.0.1:1", check=False)
    assert proc.returncode == 2
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr
