"""Incremental sync against the real store and model: counts, replacement, pruning,
settings changes, bad files, and a kill in the middle of an ingest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragline.embed.cache import EmbeddingCache
from ragline.ingest.chunkers import ChunkPlan
from ragline.ingest.indexer import Indexer
from ragline.ingest.sync import Syncer
from ragline.store.lance import LanceStore

pytestmark = pytest.mark.slow


def make_syncer(home: Path, embedder, plan=ChunkPlan(), cache_path=None) -> Syncer:
    store = LanceStore(home / "lance", embedder.dim)
    cache = EmbeddingCache(cache_path or home / "embeddings.sqlite")
    return Syncer(Indexer(store, embedder, cache, plan), batch_docs=3)


def chunk_rows(syncer: Syncer) -> list[dict]:
    return syncer.store._chunks.to_lance().to_table(columns=["id", "doc_id", "source", "text"]).to_pylist()


def test_second_run_with_nothing_changed_does_nothing(tmp_path, embedder, corpus):
    s = make_syncer(tmp_path, embedder)
    first = s.sync([corpus])
    assert (first.added, first.failed, first.skipped) == (8, [], 0)
    assert first.embedded == first.chunks_written > 0
    version = s.store._chunks.version
    second = make_syncer(tmp_path, embedder).sync([corpus])
    assert (second.added, second.replaced, second.skipped, second.removed) == (0, 0, 8, 0)
    assert second.embedded == 0 and second.chunks_written == 0
    assert LanceStore(tmp_path / "lance", embedder.dim)._chunks.version == version  # wrote nothing


def test_changed_file_is_replaced_deleted_file_removed(tmp_path, embedder, corpus):
    s = make_syncer(tmp_path, embedder)
    s.sync([corpus])
    before = {r["source"] for r in chunk_rows(s)}
    (corpus / "tea-guide.txt").write_text("Matcha is whisked, not steeped, with water at about 75 degrees.\n")
    (corpus / "planets.csv").unlink()
    (corpus / "new.md").write_text("# Comets\n\nHalley's Comet returns about every 76 years.\n")
    r = make_syncer(tmp_path, embedder).sync([corpus])
    assert (r.added, r.replaced, r.removed, r.skipped) == (1, 1, 1, 6)
    rows = LanceStore(tmp_path / "lance", embedder.dim)._chunks.to_lance().to_table().to_pylist()
    tea = [x["text"] for x in rows if x["source"].endswith("tea-guide.txt")]
    assert tea == ["Matcha is whisked, not steeped, with water at about 75 degrees."]
    assert not any(x["source"].endswith("planets.csv") for x in rows)
    assert {x["source"] for x in rows} == (before - {str(corpus / "planets.csv")}) | {str(corpus / "new.md")}
    ids = [x["id"] for x in rows]
    assert len(ids) == len(set(ids))


def test_no_prune_keeps_deleted_files(tmp_path, embedder, corpus):
    make_syncer(tmp_path, embedder).sync([corpus])
    (corpus / "faq.json").unlink()
    r = make_syncer(tmp_path, embedder).sync([corpus], prune=False)
    assert r.removed == 0
    assert len(LanceStore(tmp_path / "lance", embedder.dim).documents()) == 8


def test_touched_but_identical_file_is_not_reindexed(tmp_path, embedder, corpus):
    make_syncer(tmp_path, embedder).sync([corpus])
    f = corpus / "units.py"
    os.utime(f, (time.time() + 100, time.time() + 100))
    r = make_syncer(tmp_path, embedder).sync([corpus])
    assert r.skipped == 8 and r.chunks_written == 0
    again = make_syncer(tmp_path, embedder).sync([corpus])  # the new mtime was remembered
    assert again.skipped == 8


def test_changed_chunk_settings_rechunk_from_stored_text(tmp_path, embedder, corpus):
    make_syncer(tmp_path, embedder, ChunkPlan("recursive", 256)).sync([corpus])
    n_before = LanceStore(tmp_path / "lance", embedder.dim).count()
    # the files are gone from disk, and no path is given: the stored parsed text is re-chunked
    moved = tmp_path / "elsewhere"
    corpus.rename(moved)
    r = make_syncer(tmp_path, embedder, ChunkPlan("recursive", 48)).sync([])
    assert r.rechunked == 8 and r.failed == []
    store = LanceStore(tmp_path / "lance", embedder.dim)
    assert store.count() > n_before
    assert len(store.documents()) == 8
    r2 = make_syncer(tmp_path, embedder, ChunkPlan("recursive", 48)).sync([])
    assert r2.rechunked == 0 and r2.chunks_written == 0


BAD_FILES = {
    "empty.txt": b"",
    "spaces.md": b"   \n\n  \t\n",
    "binary.txt": bytes(range(256)) * 20,
    "corrupt.pdf": b"%PDF-1.4 this is not really a pdf at all",
    "corrupt.docx": b"PK\x03\x04 not a zip archive",
    "broken.json": b'{"a": [1, 2,',
}


def test_bad_files_are_listed_and_the_rest_is_indexed(tmp_path, embedder, corpus):
    s = make_syncer(tmp_path, embedder)
    s.sync([corpus])
    for name, data in BAD_FILES.items():
        (corpus / name).write_bytes(data)
    locked = corpus / "locked.md"
    locked.write_text("# secret\n\ntext")
    locked.chmod(0)
    big = corpus / "big.txt"
    big.write_text("word " * 400_000)  # 2 MB
    s = make_syncer(tmp_path, embedder)
    s.max_bytes = 1 * 2**20
    (corpus / "extra.md").write_text("# Extra\n\nA good file beside the bad ones.\n")
    r = s.sync([corpus])
    failed = {Path(f.path).name: f.reason for f in r.failed}
    expected = set(BAD_FILES) | {"big.txt"} | ({"locked.md"} if os.geteuid() != 0 else set())
    assert set(failed) == expected, failed
    assert "too large" in failed["big.txt"] and "max_file_mb" in failed["big.txt"]
    assert "empty" in failed["empty.txt"]
    root = os.geteuid() == 0  # root reads a mode-000 file
    assert r.added == (2 if root else 1) and r.skipped == 8  # the good new file went in, nothing was lost
    store = LanceStore(tmp_path / "lance", embedder.dim)
    assert len(store.documents()) == (10 if root else 9)
    assert not r.ok


def test_kill_during_ingest_leaves_a_consistent_index(tmp_path, corpus):
    """SIGKILL an ingest of many files mid-way; the index stays queryable, a re-run completes it."""
    src = tmp_path / "many"
    src.mkdir()
    for i in range(120):
        (src / f"note{i:03}.md").write_text(f"# Note {i}\n\n" + f"Fact number {i} concerns topic {i % 7}. " * 40)
    home = tmp_path / "home"
    env = {**os.environ, "RAGLINE_HOME": str(home), "RAGLINE_INGEST__BATCH_DOCS": "8"}
    cmd = [sys.executable, "-m", "ragline.cli", "ingest", str(src), "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    lance_dir = home / "lance" / "documents.lance"
    while time.time() < deadline:  # wait until some batches are committed, then kill hard
        if lance_dir.exists() and len(list((lance_dir / "_versions").glob("*"))) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the store must open and answer after the kill
    store = LanceStore(home / "lance", 384)
    partial = len(store.documents())
    assert 0 < partial < 120
    assert store.count() >= partial
    hits = store.sparse_candidates("fact", 5)
    assert hits and len(store.fetch([h.key for h in hits])) == len(hits)
    # re-run: completes, and no chunk is duplicated
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    store = LanceStore(home / "lance", 384)
    assert len(store.documents()) == 120
    rows = store._chunks.to_lance().to_table(columns=["id", "doc_id", "ordinal"]).to_pylist()
    assert len(rows) == len({r["id"] for r in rows})
    assert len(rows) == len({(r["doc_id"], r["ordinal"]) for r in rows})


def test_changed_settings_with_files_present_rechunk_without_reparsing(tmp_path, embedder, corpus, monkeypatch):
    make_syncer(tmp_path, embedder, ChunkPlan("recursive", 256)).sync([corpus])
    import ragline.ingest.sync as sync_mod

    class NoParsing:  # a parse would fail the file, and the report would show it
        def parse(self, *a, **k):
            raise AssertionError("a file was re-parsed although its bytes did not change")

        def close(self) -> None:
            pass

    monkeypatch.setattr(sync_mod, "open_parser", lambda limits: NoParsing())
    r = make_syncer(tmp_path, embedder, ChunkPlan("fixed", 64, 8)).sync([corpus])
    assert r.rechunked == 8 and r.replaced == 0 and r.added == 0 and r.failed == []
