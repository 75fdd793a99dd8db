"""Bad input at ingest: one bad file must never cost the others.

Each test feeds a real bad input (a lone surrogate, a name that is not UTF-8, a FIFO, a link to a
device, a parse that hangs, eats memory or dies) beside good files, and checks that the bad one is
reported with its reason while the good ones are indexed and the report lists every file once.
Anything that could hang or exhaust memory on a regression runs under a timeout (and a memory
limit) in a subprocess, so a regression fails instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ragline.embed.cache import EmbeddingCache
from ragline.ingest.chunkers import ChunkPlan
from ragline.ingest.indexer import Indexer
from ragline.ingest.parsers import ParseError, parse_bytes, parse_file
from ragline.ingest.sync import Syncer, discover, display_path, doc_id_for
from ragline.ingest.worker import ParseLimits, WorkerParser
from ragline.store.lance import LanceStore

SURROGATE_VALUE = b'{"text": "lone \\ud800 surrogate in a value"}'
SURROGATE_KEY = b'{"lone \\udfff key": "a value under a broken key"}'
BAD_NAME = os.fsdecode(b"bad_\xff\xfe_name.txt")  # surrogate escapes, as os.listdir returns it
ENTRY = f"{__name__}:unruly_parse"


def unruly_parse(data: bytes, source: str, kind: str):
    """A worker entry that misbehaves on request (runs in the worker process): the real process
    handling is what is under test, not a parser bug of the day."""
    if data.startswith(b"sleep"):
        time.sleep(3600)
    if data.startswith(b"hog"):
        return b"x" * (8 * 2**30)  # far over any limit the tests set
    if data.startswith(b"die"):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.kill(os.getpid(), signal.SIGSEGV)
    return parse_bytes(data, source, kind)


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


# ------------------------------------------------------------------------ parse boundary (1)
@pytest.mark.parametrize("data", [SURROGATE_VALUE, SURROGATE_KEY], ids=["value", "key"])
def test_parsed_text_never_carries_a_lone_surrogate(data):
    doc = parse_bytes(data, "/docs/odd.json", "json")
    assert "\ufffd" in doc.text
    strings = [doc.text, doc.title, json.dumps(dict(doc.metadata), ensure_ascii=False)]
    strings += [h for s in doc.sections for h in s.heading_path]
    assert not any(has_surrogate(s) for s in strings)
    doc.text.encode("utf-8")  # strict: what the tokenizer and Arrow need


# ------------------------------------------------------------------------- file names (2)
def test_ids_and_display_of_a_name_that_is_not_utf8():
    a, b = doc_id_for("/d/" + BAD_NAME), doc_id_for("/d/" + os.fsdecode(b"bad_\xff\xfd_name.txt"))
    assert a != b and a == doc_id_for("/d/" + BAD_NAME)  # stable and distinct
    assert display_path("/d/" + BAD_NAME) == "/d/bad_\\xff\\xfe_name.txt"
    assert display_path("/d/ok é.txt") == "/d/ok é.txt"


# -------------------------------------------------------- only regular files are read (3, 4)
def _run_python(code: str, timeout: float = 120, memory_mb: int | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter under a timeout (and an address-space limit), so a
    regression that hangs or reads forever fails the test instead of stalling the machine."""
    def limit() -> None:
        if memory_mb:
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    proc = _run_python(f"""
        from pathlib import Path
        from ragline.ingest.parsers import ParseError, read_file
        try:
            read_file(Path({str(fifo)!r}), 1024)
        except ParseError as exc:
            print(exc.reason)
        """, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "not a regular file: fifo"


@pytest.mark.parametrize("name,device", [("x.txt", "/dev/zero"), ("x.md", "/dev/urandom")])
def test_a_link_to_a_device_is_refused_not_read_forever(tmp_path, name, device):
    link = tmp_path / name
    link.symlink_to(device)
    proc = _run_python(f"""
        from pathlib import Path
        from ragline.ingest.parsers import ParseError, parse_file
        try:
            parse_file(Path({str(link)!r}), 2**20)
        except ParseError as exc:
            print(exc.reason)
        """, timeout=60, memory_mb=1024)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "not a regular file: character device"


def test_regular_files_still_read_and_size_is_bounded(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("hello world\n" * 100)
    assert parse_file(f).text.startswith("hello world")
    with pytest.raises(ParseError, match="too large"):
        parse_file(f, max_bytes=100)


def test_discovery_lists_links_to_folders_without_following_them(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.md").write_text("# A\n")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path)  # a cycle back to the root
    (tmp_path / "self").symlink_to(".")
    found = list(discover(tmp_path))
    assert found == [tmp_path / "sub" / "a.md"]


def test_a_path_that_is_not_a_folder_or_file_is_yielded_to_be_reported(tmp_path):
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    assert list(discover(fifo)) == [fifo]  # the old walk silently yielded nothing


# --------------------------------------------------------------- parse worker (5, 9)
def test_the_worker_applies_the_parsers_caps_configured_in_this_process():
    from ragline.ingest.parsers import base

    saved = base.LIMITS
    try:
        base.configure(max_text_chars=1000)
        with WorkerParser(timeout_s=60, memory_mb=1024) as w:
            with pytest.raises(ParseError, match="too much text"):
                w.parse(b"word " * 1000, "/d/long.txt", "text")
    finally:
        base.LIMITS = saved


def test_worker_times_out_is_restarted_and_parses_the_next_file():
    with WorkerParser(timeout_s=2, memory_mb=1024, entry=ENTRY) as w:
        with pytest.raises(ParseError, match=r"^parse timed out after 2 s$"):
            w.parse(b"sleep", "/d/slow.txt", "text")
        assert w.parse(b"a good file after the slow one", "/d/ok.txt", "text").text.startswith("a good")
        assert w.restarts == 1


def test_worker_out_of_memory_and_crash_are_reported_and_survived():
    with WorkerParser(timeout_s=60, memory_mb=512, entry=ENTRY) as w:
        with pytest.raises(ParseError, match=r"^parse ran out of memory \(limit 512 MB\)$"):
            w.parse(b"hog", "/d/hog.txt", "text")
        assert w.parse(b"fine", "/d/ok.txt", "text").text == "fine"
        with pytest.raises(ParseError, match=r"^parse crashed the worker \(SIGSEGV\)$"):
            w.parse(b"die", "/d/die.txt", "text")
        assert w.parse(b"fine again", "/d/ok.txt", "text").text == "fine again"
        assert w.restarts == 2


def test_a_real_parse_over_the_memory_limit_fails_that_file_only():
    big = b"[" + b'{"a":1.5,"b":2.5},' * 1_000_000 + b"{}]"  # 18 MB of JSON: 1 M dicts, ~300 MB as objects
    with WorkerParser(timeout_s=300, memory_mb=256) as w:
        with pytest.raises(ParseError, match=r"^parse ran out of memory \(limit 256 MB\)$"):
            w.parse(big, "/d/big.json", "json")
        assert "ok" in w.parse(b'{"status": "ok"}', "/d/small.json", "json").text


# ------------------------------------------------------------------ with the real index
def make_syncer(home: Path, embedder, cache_path: Path, **kw) -> Syncer:
    store = LanceStore(home / "lance", embedder.dim)
    return Syncer(Indexer(store, embedder, EmbeddingCache(cache_path), ChunkPlan()), **kw)


@pytest.mark.slow
def test_files_the_worker_abandons_are_failed_and_the_report_is_complete(tmp_path, embedder, shared_cache_path):
    src = tmp_path / "src"
    src.mkdir()
    files = {"a_ok.txt": b"Saturn has a system of bright rings.", "b_slow.txt": b"sleep please",
             "c_die.txt": b"die now", "d_hog.txt": b"hog memory", "e_ok.txt": b"Jupiter is the largest planet."}
    for name, data in files.items():
        (src / name).write_bytes(data)
    events: list[tuple[str, str]] = []
    s = make_syncer(tmp_path, embedder, shared_cache_path, batch_docs=2,
                    limits=ParseLimits(timeout_s=5, memory_mb=512, entry=ENTRY),
                    on_event=lambda kind, d: events.append((Path(d["path"]).name, d["status"])) if kind == "file" else 0)
    r = s.sync([src])
    failed = {Path(f.path).name: f.reason for f in r.failed}
    assert failed == {"b_slow.txt": "parse timed out after 5 s",
                      "c_die.txt": "parse crashed the worker (SIGSEGV)",
                      "d_hog.txt": "parse ran out of memory (limit 512 MB)"}
    assert r.added == 2
    assert sorted(name for name, _ in events) == sorted(files)  # every file exactly once
    assert {Path(d.source).name for d in s.store.documents().values()} == {"a_ok.txt", "e_ok.txt"}


@pytest.mark.slow
def test_bad_inputs_beside_good_ones_in_one_cli_run(tmp_path):
    """The fuzzing campaign's first four findings in one folder with good files: the run finishes
    under a timeout, exits 1, indexes every good file and names every bad one with its reason."""
    src = tmp_path / "mixed"
    src.mkdir()
    (src / "good.md").write_text("# Tides\n\nThe Moon raises the ocean tides.\n")
    (src / "value.json").write_bytes(SURROGATE_VALUE)
    (src / "key.json").write_bytes(SURROGATE_KEY)
    (src / BAD_NAME).write_text("A file whose name is not UTF-8 still has good text.\n")
    os.mkfifo(src / "fifo.txt")
    (src / "x.txt").symlink_to("/dev/zero")
    (src / "x.md").symlink_to("/dev/urandom")
    home = tmp_path / "home"
    env = {**os.environ, "RAGLINE_HOME": str(home), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "ragline.cli", "ingest", str(src)]
    proc = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    failed = {Path(f["path"]).name: f["reason"] for f in report["failed"]}
    assert failed == {"fifo.txt": "not a regular file: fifo", "x.txt": "not a regular file: character device",
                      "x.md": "not a regular file: character device"}
    assert report["added"] == 4 and report["skipped"] == 0
    store = LanceStore(home / "lance", 384)
    docs = {Path(d.source).name: d for d in store.documents().values()}
    assert set(docs) == {"good.md", "value.json", "key.json", "bad_\\xff\\xfe_name.txt"}
    assert docs["bad_\\xff\\xfe_name.txt"].doc_id == doc_id_for(str(src / BAD_NAME))
    texts = [r["text"] for r in store._chunks.to_lance().to_table(columns=["text"]).to_pylist()]
    assert any("\ufffd" in t and "surrogate in a value" in t for t in texts)
    assert any("broken key" in t for t in texts)
    # the human report, a second time: nothing re-indexed (stable ids), every bad file named
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1, again.stderr[-3000:]
    assert "added 0, replaced 0, unchanged 4" in again.stdout and "failed 3" in again.stdout
    assert "fifo.txt: not a regular file: fifo" in again.stdout
    assert "Traceback" not in again.stderr


@pytest.mark.slow
def test_commits_are_bounded_by_chunks_so_a_large_file_holds_nothing_back(tmp_path, embedder, shared_cache_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.md").write_text("# A\n\nAlpha is the first letter.\n")
    (src / "b.md").write_text("# B\n\nBeta is the second letter.\n")
    (src / "c_large.txt").write_text(" ".join(f"Sentence {i} about the large report." for i in range(3000)))
    events: list[tuple[str, dict]] = []
    s = make_syncer(tmp_path, embedder, shared_cache_path, batch_docs=64, batch_chunks=16,
                    on_event=lambda kind, d: events.append((kind, d)))
    r = s.sync([src])
    assert r.added == 3 and r.failed == []
    order = [(k, Path(d["path"]).name if k == "file" else d.get("docs")) for k, d in events if k in ("file", "batch")]
    # a and b are committed (and reported) in their own batch before the large file's
    assert order[:3] == [("file", "a.md"), ("file", "b.md"), ("batch", 2)]
    assert order[3:] == [("file", "c_large.txt"), ("batch", 1)]
    batches = [d for k, d in events if k == "batch"]
    assert batches[-1]["chunks"] > 16  # one document is never split across commits


class FaultyIndexer(Indexer):
    """The real indexer, except that chunking ``boom.md`` raises and storing ``poison.md`` fails,
    standing for a document that trips a library bug in the main process."""

    def chunk(self, doc, rec):
        if rec.source.endswith("boom.md"):
            raise RuntimeError("chunker bug")
        return super().chunk(doc, rec)

    def write(self, prepared):
        if any(rec.source.endswith("poison.md") for rec, _ in prepared):
            raise ValueError("store rejected a row")
        return super().write(prepared)


@pytest.mark.slow
def test_any_exception_of_one_file_fails_that_file_only(tmp_path, embedder, shared_cache_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.md", "boom.md", "c.md", "poison.md", "e.md"):
        (src / name).write_text(f"# {name}\n\nText of {name}.\n")
    store = LanceStore(tmp_path / "lance", embedder.dim)
    indexer = FaultyIndexer(store, embedder, EmbeddingCache(shared_cache_path), ChunkPlan())
    r = Syncer(indexer, batch_docs=8).sync([src])
    assert {Path(f.path).name: f.reason for f in r.failed} == {
        "boom.md": "chunking failed: RuntimeError: chunker bug",
        "poison.md": "indexing failed: ValueError: store rejected a row"}
    assert r.added == 3  # the batch was retried document by document
    assert {Path(d.source).name for d in store.documents().values()} == {"a.md", "c.md", "e.md"}


@pytest.mark.slow
def test_a_store_that_fails_every_document_ends_the_run(tmp_path, embedder, shared_cache_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("poison.md", "x_poison.md"):
        (src / name).write_text(f"# {name}\n\nText.\n")
    store = LanceStore(tmp_path / "lance", embedder.dim)
    indexer = FaultyIndexer(store, embedder, EmbeddingCache(shared_cache_path), ChunkPlan())
    with pytest.raises(ValueError, match="store rejected"):  # not "2 files failed": the run failed
        Syncer(indexer, batch_docs=8).sync([src])


# ----------------------------------------------------------------------- exit codes (8)
@pytest.mark.slow
def test_a_crash_of_the_run_exits_2_with_one_line_and_no_traceback(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    home = tmp_path / "home-is-a-file"
    home.write_text("not a folder")
    env = {**os.environ, "RAGLINE_HOME": str(home)}
    env.pop("RAGLINE_DEBUG", None)
    cmd = [sys.executable, "-m", "ragline.cli", "ingest", str(tmp_path / "a.txt")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Not a directory" in lines[0]
    debug = subprocess.run(cmd, env={**env, "RAGLINE_DEBUG": "1"}, capture_output=True, text=True, timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_parse_settings_come_from_the_ingest_section():
    from ragline.config import load_settings
    from ragline.ingest.worker import InProcessParser, open_parser

    ingest = load_settings({"ingest": {"parse_workers": 0, "parse_timeout_s": 7, "parse_memory_mb": 512}}).ingest
    limits = ParseLimits.from_settings(ingest)
    assert (limits.workers, limits.timeout_s, limits.memory_mb) == (0, 7, 512)
    assert isinstance(open_parser(limits), InProcessParser)
    assert isinstance(open_parser(ParseLimits()), WorkerParser)  # the default isolates
    assert open_parser(limits).parse(SURROGATE_VALUE, "/d/a.json", "json").text.count("\ufffd") == 1


@pytest.mark.slow
def test_the_parsers_caps_from_settings_reach_the_worker_in_a_cli_run(tmp_path):
    """[ingest] max_text_chars, set by the environment, fails an over-long file (in the parse
    worker) and leaves the short one indexed."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "short.txt").write_text("The heron waits by the reservoir.\n")
    (src / "long.txt").write_text("The heron waits by the reservoir. " * 200)
    env = {**os.environ, "RAGLINE_HOME": str(tmp_path / "home"), "RAGLINE_INGEST__MAX_TEXT_CHARS": "1000"}
    proc = subprocess.run([sys.executable, "-m", "ragline.cli", "ingest", str(src), "--json"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert [(Path(f["path"]).name, f["reason"].split(";")[0]) for f in report["failed"]] == [
        ("long.txt", "too much text: over 1,000 characters")]
    assert report["added"] == 1
