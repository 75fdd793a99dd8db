"""Store scale benchmark: both store backends (embedded LanceDB, PostgreSQL + pgvector) at growing
sizes (default 10k, 100k, 1M chunks) on SYNTHETIC data. Not run in CI: the 1M size takes hours on 2 cores.

For each backend and size, through the Store protocol (no embedding model, no fetch in the timings):

* build: ``write()`` seconds (batches of ``--batch`` chunks) and ``finish()`` seconds (full-text
  and ANN index builds), disk size, peak RSS of this process per phase (PostgreSQL: also the
  server's processes, RSS less shared memory, summed);
* dense: ``dense_candidates(k=10)`` p50/p99 and recall@10 against an exact numpy top 10 over the
  same vectors, at each ``--ef`` value;
* filtered dense: filters matching 1% and 10% of the chunks, p50/p99 and recall@10 (target ≥ 0.95);
* sparse: ``sparse_candidates(k=10)`` (BM25) p50/p99.

Synthetic data: unit vectors drawn around ``--clusters`` random unit centres (Gaussian noise),
dimension 384 (as all-MiniLM-L6-v2); texts of ``--words`` pseudo-words from a Zipf-distributed
vocabulary; 10 chunks per document; document type "pdf" for 1% of documents, "html" for 10%,
"text" otherwise; year 2000..2019. The data are a function of the seed and the batch size only,
so a smaller size is the prefix of a larger one and a resumed run sees the same rows.

    .venv/bin/python bench/scale_store.py --sizes 10000 --queries 50 --out /tmp/scale.json
    .venv/bin/python bench/scale_store.py --sizes 10000,100000,1000000 --backends lance,postgres \\
        --dsn "postgresql://postgres:@/postgres?host=/work/pgdata" --workdir /work/evhome/scale/stores \\
        --out /work/evhome/scale/results.json --pg-maintenance-work-mem 4GB
    .venv/bin/python bench/scale_store.py ... --resume   # skips finished (backend, size) entries and
                                                        # reuses a store whose writes (or build) were recorded
    .venv/bin/python bench/scale_store.py --report /work/evhome/scale/results.json   # tables only

The JSON (``--out``) is rewritten after every phase, so an interrupted run keeps what finished.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import psutil
from machine import cpu_model, version  # bench/machine.py

from ragline.evaluate.metrics import percentile
from ragline.filters import STORE_FIELDS, compile_filter

K = 10
CHUNKS_PER_DOC = 10
WARMUP = 10
FILTERS = {"1%": 'type = "pdf"', "10%": 'type = "html"'}
RECALL_TARGET = 0.95
MB = 1024 * 1024


def log(msg: str) -> None:
    print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", flush=True)


def doc_type(doc: int) -> str:
    """1% of documents are pdf, 10% html (disjoint), the rest text: the filters' selectivity is exact."""
    if doc % 100 == 0:
        return "pdf"
    return "html" if doc % 10 == 1 else "text"


def chunk_index(chunk_id: str) -> int:
    """The row number of a synthetic chunk id ``d0000012#3``."""
    doc, ordinal = chunk_id[1:].split("#")
    return int(doc) * CHUNKS_PER_DOC + int(ordinal)


# ---------------------------------------------------------------------------------- synthetic data
class Synthetic:
    """Clustered unit vectors and Zipf texts, generated a block at a time from (seed, block number)."""

    def __init__(self, dim: int, clusters: int, noise: float, vocab: int, words: int, zipf: float,
                 seed: int) -> None:
        self.dim, self.noise, self.words, self.seed = dim, noise, words, seed
        rng = np.random.default_rng(seed)
        self.centers = _unit(rng.normal(size=(clusters, dim)))
        syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
        found: dict[str, None] = {}
        while len(found) < vocab:
            found["".join(rng.choice(syllables, 3))] = None
        self.vocab = np.array(list(found))
        p = 1.0 / np.arange(1, vocab + 1) ** zipf
        self.p = p / p.sum()

    def settings(self) -> dict:
        return {"dim": self.dim, "clusters": len(self.centers), "noise_norm": self.noise, "vocab": len(self.vocab),
                "words_per_chunk": self.words, "seed": self.seed, "chunks_per_doc": CHUNKS_PER_DOC,
                "types": "pdf 1% of documents, html 10%, text 89%", "years": "2000 + doc % 20"}

    def _points(self, rng: np.random.Generator, n: int) -> np.ndarray:
        centre = self.centers[rng.integers(0, len(self.centers), n)]
        return _unit(centre + rng.normal(scale=self.noise / np.sqrt(self.dim), size=(n, self.dim)))

    def block(self, number: int, size: int) -> tuple[np.ndarray, list[str]]:
        rng = np.random.default_rng([self.seed, number, size])
        vectors = self._points(rng, size)
        picks = rng.choice(len(self.vocab), size=(size, self.words), p=self.p)
        return vectors, [" ".join(row) for row in self.vocab[picks].tolist()]

    def queries(self, n: int) -> np.ndarray:
        return self._points(np.random.default_rng([self.seed, 999_999_999]), n)

    def sparse_queries(self, n: int) -> list[str]:
        """Three words each, uniform over the vocabulary below its 20 most common words (which
        act as stop words would: in most chunks)."""
        rng = np.random.default_rng([self.seed, 888_888_888])
        return [" ".join(self.vocab[rng.integers(20, len(self.vocab), 3)]) for _ in range(n)]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def block_records(first: int, size: int, texts: Sequence[str]) -> tuple[list, list]:
    """Document records and chunks for rows ``first .. first + size`` (whole documents)."""
    from ragline.testing.store_helpers import chunk, record

    docs, chunks = [], []
    for doc in range(first // CHUNKS_PER_DOC, (first + size) // CHUNKS_PER_DOC):
        doc_id = f"d{doc:07d}"
        docs.append(record(doc_id, type=doc_type(doc), year=2000 + doc % 20, n_chunks=CHUNKS_PER_DOC))
        for ordinal in range(CHUNKS_PER_DOC):
            chunks.append(chunk(doc_id, ordinal, texts[doc * CHUNKS_PER_DOC + ordinal - first]))
    return docs, chunks


def block_masks(first: int, size: int) -> dict[str, np.ndarray | None]:
    types = np.array([doc_type(i // CHUNKS_PER_DOC) for i in range(first, first + size)])
    return {"all": None, "1%": types == "pdf", "10%": types == "html"}


class Exact:
    """The exact top k of every query (cosine), kept while the blocks stream by, over all rows and
    over each filter's rows."""

    def __init__(self, queries: np.ndarray, scopes: Sequence[str]) -> None:
        self.q = queries
        self.best = {s: (np.full((len(queries), K), -np.inf, np.float32), np.full((len(queries), K), -1)) for s in scopes}

    def add(self, vectors: np.ndarray, first: int, masks: dict[str, np.ndarray | None]) -> None:
        scores = self.q @ vectors.T
        for scope, mask in masks.items():
            cols = np.arange(len(vectors)) if mask is None else np.flatnonzero(mask)
            if not len(cols):
                continue
            s = np.concatenate([self.best[scope][0], scores[:, cols]], axis=1)
            i = np.concatenate([self.best[scope][1], np.broadcast_to(cols + first, (len(s), len(cols)))], axis=1)
            top = np.argpartition(-s, K - 1, axis=1)[:, :K]
            self.best[scope] = (np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1))

    def truth(self, scope: str) -> list[set[int]]:
        return [set(int(x) for x in row if x >= 0) for row in self.best[scope][1]]


# ---------------------------------------------------------------------------------- memory
class Rss:
    """Peak RSS of this process (every 50 ms) and of the PostgreSQL server's processes (RSS less
    shared memory, summed, every 0.5 s), per measured phase."""

    def __init__(self, pg_pid: int | None) -> None:
        self.me = psutil.Process()
        self.pg = psutil.Process(pg_pid) if pg_pid else None
        self.peak = self.pg_peak = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        tick = 0
        while True:
            self.peak = max(self.peak, self.me.memory_info().rss)
            if self.pg is not None and tick % 10 == 0:
                try:
                    procs = [self.pg, *self.pg.children(recursive=True)]
                    total = 0
                    for p in procs:
                        try:
                            m = p.memory_info()
                            total += m.rss - m.shared
                        except psutil.Error:
                            pass
                    self.pg_peak = max(self.pg_peak, total)
                except psutil.Error:
                    self.pg = None
            tick += 1
            time.sleep(0.05)

    @contextmanager
    def phase(self, into: dict, name: str, server: bool = False) -> Iterator[None]:
        self.peak = self.me.memory_info().rss
        self.pg_peak = 0
        start = self.peak
        yield
        into[f"{name}_rss_start_mb"] = round(start / MB, 1)
        into[f"{name}_rss_peak_mb"] = round(max(self.peak, self.me.memory_info().rss) / MB, 1)
        if server and self.pg is not None:
            into[f"{name}_pg_server_private_peak_mb"] = round(self.pg_peak / MB, 1)


def pg_pid(dsn: str) -> int | None:
    """The postmaster's pid when the server listens on a local socket directory holding its data."""
    m = re.search(r"host=([^&]+)", dsn)
    try:
        return int((Path(m.group(1)) / "postmaster.pid").read_text().split()[0]) if m else None
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------- stores
def bench_postgres_class(maintenance_work_mem: str | None, parallel_workers: int | None):
    """PostgresStore whose HNSW build runs with the benchmark's memory and parallel workers. The
    store sets maintenance_work_mem = 512MB per build, too little to hold a 1M-row graph (pgvector
    then goes on building it on disk, much slower); the store has no option for it yet, so the
    index is built here, with the store's name and parameters, before the store's own finish()."""
    from ragline.store.postgres import PostgresStore

    class BenchPostgresStore(PostgresStore):
        def finish(self) -> None:
            if (maintenance_work_mem or parallel_workers is not None) and not self.has_ann_index() \
                    and self.count() >= self.ann_min_rows:
                with self._conn() as conn, conn.transaction():
                    if maintenance_work_mem:
                        conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem,))
                    if parallel_workers is not None:
                        conn.execute("SELECT set_config('max_parallel_maintenance_workers', %s, true)",
                                     (str(parallel_workers),))
                    conn.execute(f"CREATE INDEX IF NOT EXISTS chunks_embedding_hnsw ON {self._s}.chunks USING hnsw "
                                 f"(embedding vector_cosine_ops) WITH (m = {int(self.hnsw_m)}, "
                                 f"ef_construction = {int(self.hnsw_ef_construction)})")
            super().finish()

    return BenchPostgresStore


def open_store(backend: str, size: int, args: argparse.Namespace, fresh: bool):
    if backend == "lance":
        from ragline.store.lance import LanceStore

        path = args.workdir / f"lance-{size}"
        if fresh and path.exists():
            shutil.rmtree(path)
        return LanceStore(path, args.dim, args.hnsw_m, args.hnsw_ef_construction, args.ann_min_rows)
    cls = bench_postgres_class(args.pg_maintenance_work_mem, args.pg_parallel_workers)
    make = lambda: cls(args.dsn, f"scale-bench-{size}", args.dim, args.hnsw_m, args.hnsw_ef_construction,  # noqa: E731
                       args.ann_min_rows, args.ef[len(args.ef) // 2])
    store = make()
    if fresh:
        store.drop()
        store = make()
    return store


def disk_bytes(store) -> int:
    if store.backend == "lancedb":
        return sum(f.stat().st_size for f in Path(store.path).rglob("*") if f.is_file())
    return store.stats().size_bytes


def store_details(store) -> dict:
    """What each backend says about its indexes: relation sizes (PostgreSQL), index list (Lance)."""
    try:
        if store.backend == "lancedb":
            table = store._chunks
            out = {"indices": [{"name": i.name, "type": str(i.index_type), "columns": i.columns}
                               for i in table.list_indices()],
                   "fragments": len(table.to_lance().get_fragments()), "version": table.version}
            for i in table.list_indices():
                if i.columns == ["vector"]:
                    out["vector_index_stats"] = json.loads(json.dumps(vars(table.index_stats(i.name)), default=str))
            return out
        with store._conn() as conn:
            rows = conn.execute("SELECT c.relname, c.relkind, pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n "
                                "ON n.oid = c.relnamespace WHERE n.nspname = %s ORDER BY 3 DESC", (store.schema,)).fetchall()
            postings = conn.execute(f"SELECT count(*) FROM {store._s}.postings").fetchone()[0]
        return {"relations_mb": {f"{r[0]} ({r[1]})": round(r[2] / MB, 1) for r in rows}, "postings_rows": int(postings)}
    except Exception as exc:  # details are extra: a failure here must not lose the measurements
        return {"error": repr(exc)}


# ---------------------------------------------------------------------------------- phases
def build(store, synth: Synthetic, size: int, block: int, exact: Exact, rss: Rss, write: bool, finish: bool,
          on_written: Callable[[dict], None]) -> dict:
    """Write every block (timed: the write call only; ``on_written`` gets those numbers) and finish
    (timed); the exact top k streams along. A store written (``write`` False) or also finished
    (``finish`` False) by an earlier run is not written again: only the exact top k is computed."""
    out: dict[str, Any] = {}
    write_s, batches = 0.0, 0
    server = store.backend == "postgres"
    with rss.phase(out, "write", server):
        for number in range(size // block):
            first = number * block
            vectors, texts = synth.block(number, block)
            exact.add(vectors, first, block_masks(first, block))
            if write:
                docs, chunks = block_records(first, block, texts)
                t = time.perf_counter()
                store.write(docs, chunks, vectors, texts)
                write_s += time.perf_counter() - t
                batches += 1
                if batches % 10 == 0:
                    log(f"  wrote {first + block:,} rows ({write_s:.0f} s in write)")
    out = {**out, "write_s": round(write_s, 2), "batches": batches, "batch_chunks": block,
           "write_rows_per_s": round(size / write_s, 1), "written_at": _now()} if write else {}
    if write:
        on_written(dict(out))
        log(f"  write done: {write_s:.1f} s; finish() ...")
    if not finish:
        return out
    t = time.perf_counter()
    with rss.phase(out, "finish", server):
        store.finish()
    finish_s = time.perf_counter() - t
    out.update(finish_s=round(finish_s, 2), disk_bytes=disk_bytes(store), disk_mb=round(disk_bytes(store) / MB, 1),
               ann_index=store.has_ann_index(), chunks=store.count())
    return out


def timed(fn: Callable[[Any], list], items: Sequence[Any]) -> tuple[list[float], list[list]]:
    """Milliseconds per call and each call's candidates, after WARMUP untimed calls."""
    for item in items[:WARMUP]:
        fn(item)
    ms, found = [], []
    for item in items[WARMUP:]:
        t = time.perf_counter()
        found.append(fn(item))
        ms.append((time.perf_counter() - t) * 1000)
    return ms, found


def recall(store, found: list[list], truth: list[set[int]]) -> tuple[float, float]:
    """Mean and minimum recall@10 of candidate lists against the exact top 10 (keys read back as
    chunk ids with ``fetch``, outside the timings)."""
    keys = list(dict.fromkeys(c.key for cands in found for c in cands))
    index: dict = {}
    for i in range(0, len(keys), 1000):
        index.update({key: chunk_index(c.id) for key, c in store.fetch(keys[i:i + 1000]).items()})
    per = [len({index.get(c.key) for c in cands} & want) / max(min(K, len(want)), 1) for cands, want in zip(found, truth)]
    return round(float(np.mean(per)), 4), round(float(np.min(per)), 4)


def lat(ms: list[float]) -> dict:
    return {"p50_ms": round(percentile(ms, 50), 2), "p99_ms": round(percentile(ms, 99), 2),
            "mean_ms": round(float(np.mean(ms)), 2), "n": len(ms)}


def queries_phase(store, queries: np.ndarray, sparse: list[str], exact: Exact, args: argparse.Namespace) -> dict:
    out: dict[str, Any] = {"dense": [], "filtered": [], "sparse": None}
    nq = WARMUP + args.queries
    for ef in args.ef:
        ms, found = timed(lambda q: store.dense_candidates(q, K, ef=ef), queries[:nq])
        r, worst = recall(store, found, exact.truth("all")[WARMUP:nq])
        out["dense"].append({"ef": ef, **lat(ms), "recall_at_10": r, "recall_min": worst})
        log(f"  dense ef={ef}: p50 {out['dense'][-1]['p50_ms']} ms, p99 {out['dense'][-1]['p99_ms']} ms, recall {r}")
    nf = WARMUP + min(args.filter_queries, args.queries)
    for name, expr in FILTERS.items():
        where = compile_filter(expr, STORE_FIELDS)
        matching = store.count(where)
        for ef in args.ef:
            ms, found = timed(lambda q: store.dense_candidates(q, K, where=where, ef=ef), queries[:nf])
            r, worst = recall(store, found, exact.truth(name)[WARMUP:nf])
            out["filtered"].append({"filter": name, "expr": expr, "matching_rows": matching, "ef": ef, **lat(ms),
                                    "recall_at_10": r, "recall_min": worst, "meets_0_95": r >= RECALL_TARGET})
            log(f"  filter {name} ef={ef}: p50 {out['filtered'][-1]['p50_ms']} ms, recall {r}")
        if store.backend == "postgres":
            out.setdefault("pg_plans", {})[name] = plan(store, queries[0], where)
    if store.backend == "postgres":
        out.setdefault("pg_plans", {})["unfiltered"] = plan(store, queries[0], None)
    ms, found = timed(lambda text: store.sparse_candidates(text, K), sparse[: WARMUP + args.queries])
    out["sparse"] = {**lat(ms), "mean_hits": round(float(np.mean([len(f) for f in found])), 2)}
    log(f"  sparse: p50 {out['sparse']['p50_ms']} ms, p99 {out['sparse']['p99_ms']} ms")
    return out


def plan(store, vector: np.ndarray, where) -> str:
    """PostgreSQL's plan for the first search of a query, the vector literal elided."""
    return re.sub(r"'\[[^\]]*\]'::vector", "'[...]'::vector", store.explain_dense(vector, K, where))


def run_one(backend: str, size: int, args: argparse.Namespace, synth: Synthetic, rss: Rss, entry: dict,
            save: Callable[[], None]) -> None:
    """Build (or reuse a recorded build of) one store, then query it; ``entry`` is filled in place
    and saved after each phase."""
    block = min(args.batch, size)
    if size % block or block % CHUNKS_PER_DOC:
        raise SystemExit(f"--sizes: {size} is not a multiple of the write batch {block} (--batch) "
                         f"or the batch not of {CHUNKS_PER_DOC}")
    queries = synth.queries(WARMUP + args.queries)
    exact = Exact(queries, ["all", *FILTERS])
    state = entry.get("status")  # "written" or "built" by an earlier run: reused if the rows are all there
    store = open_store(backend, size, args, fresh=False) if state in ("written", "built") else None
    if store is None or store.count() != size:
        state, store = None, open_store(backend, size, args, fresh=True)
    log(f"{backend} {size:,}: " + {None: "building", "written": "reusing the recorded writes; finish() ...",
                                   "built": "reusing the recorded build"}[state])

    def written(numbers: dict) -> None:
        entry.update(build=numbers, status="written")
        save()

    built = build(store, synth, size, block, exact, rss, write=state is None, finish=state != "built",
                  on_written=written)
    if state != "built":
        entry.update(build={**entry.get("build", {}), **built}, status="built", built_at=_now())
        entry["build"]["details"] = store_details(store)
        save()
        b = entry["build"]
        log(f"  finish {b['finish_s']} s, disk {b['disk_mb']} MB, ann {b['ann_index']}")
    store = open_store(backend, size, args, fresh=False)  # queries from a freshly opened store
    q: dict[str, Any] = {}
    with rss.phase(q, "query", store.backend == "postgres"):
        q.update(queries_phase(store, queries, synth.sparse_queries(WARMUP + args.queries), exact, args))
    entry.update(queries=q, status="done", done_at=_now())
    entry["pg_plans"] = q.pop("pg_plans", None)
    save()
    if not args.keep:
        store.drop() if backend == "postgres" else shutil.rmtree(args.workdir / f"lance-{size}", ignore_errors=True)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

# ---------------------------------------------------------------------------------- environment
def machine(args: argparse.Namespace) -> dict:
    out = {"cpu": cpu_model(), "cpus": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1),
           "platform": platform.platform(), "python": platform.python_version(),
           "versions": {d: version(d) for d in ("ragline", "lancedb", "pylance", "psycopg", "numpy")},
           "load_avg_start": os.getloadavg()}
    if "postgres" in args.backends:
        import psycopg

        try:
            with psycopg.connect(args.dsn) as conn:
                out["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
                row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
                out["pgvector"] = row[0] if row else None
                out["pg_settings"] = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in
                                      ("shared_buffers", "maintenance_work_mem", "max_parallel_maintenance_workers",
                                       "work_mem", "effective_cache_size")}
        except psycopg.Error as exc:
            raise SystemExit(f"cannot reach PostgreSQL at --dsn: {exc}") from None
    return out


# ---------------------------------------------------------------------------------- report
def tables(result: dict) -> str:
    """Markdown tables of a result JSON: build, dense, filtered, sparse."""
    done = [e for e in result["results"] if e.get("build")]
    lines = ["| backend | chunks | write s | finish s | rows/s written | disk MB | peak RSS write / finish MB | ANN |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for e in done:
        b = e["build"]
        pg = f" (server {b['finish_pg_server_private_peak_mb']})" if "finish_pg_server_private_peak_mb" in b else ""
        lines.append(f"| {e['backend']} | {e['size']:,} | {b['write_s']} | {b['finish_s']} | {b['write_rows_per_s']:,} "
                     f"| {b['disk_mb']:,} | {b['write_rss_peak_mb']} / {b['finish_rss_peak_mb']}{pg} | {b['ann_index']} |")
    queried = [e for e in done if e.get("queries")]
    lines += ["", "| backend | chunks | query | ef | p50 ms | p99 ms | recall@10 | ≥ 0.95 |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for e in queried:
        for d in e["queries"]["dense"]:
            lines.append(f"| {e['backend']} | {e['size']:,} | dense | {d['ef']} | {d['p50_ms']} | {d['p99_ms']} "
                         f"| {d['recall_at_10']} | {'yes' if d['recall_at_10'] >= RECALL_TARGET else 'NO'} |")
        for d in e["queries"]["filtered"]:
            lines.append(f"| {e['backend']} | {e['size']:,} | filter {d['filter']} ({d['matching_rows']:,} rows) "
                         f"| {d['ef']} | {d['p50_ms']} | {d['p99_ms']} | {d['recall_at_10']} | {'yes' if d['meets_0_95'] else 'NO'} |")
    lines += ["", "| backend | chunks | sparse (BM25) p50 ms | p99 ms | query RSS peak MB |", "| --- | ---: | ---: | ---: | ---: |"]
    for e in queried:
        s = e["queries"]["sparse"]
        lines.append(f"| {e['backend']} | {e['size']:,} | {s['p50_ms']} | {s['p99_ms']} | {e['queries']['query_rss_peak_mb']} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda s: [int(x.replace("_", "")) for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--sizes", type=ints, default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--backends", type=lambda s: [x for x in s.split(",") if x], default=["lance", "postgres"])
    ap.add_argument("--dsn", default="postgresql://postgres:@/postgres?host=/work/pgdata")
    ap.add_argument("--queries", type=int, default=200, help="timed dense and sparse queries (after 10 warm-up)")
    ap.add_argument("--filter-queries", type=int, default=100, help="timed queries per filter and ef")
    ap.add_argument("--ef", type=ints, default=[40, 100, 200], help="ANN search depths (hnsw.ef_search / Lance ef)")
    ap.add_argument("--out", type=Path, default=Path("scale-results.json"))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ragline-scale"), help="Lance stores go here")
    ap.add_argument("--batch", type=int, default=10_000, help="chunks per write() call")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.8, help="norm of the Gaussian noise around a cluster centre")
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--words", type=int, default=20)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hnsw-m", type=int, default=20)
    ap.add_argument("--hnsw-ef-construction", type=int, default=300)
    ap.add_argument("--ann-min-rows", type=int, default=50_000)
    ap.add_argument("--pg-maintenance-work-mem", default=None, help="e.g. 4GB for the HNSW build (store: 512MB)")
    ap.add_argument("--pg-parallel-workers", type=int, default=None, help="max_parallel_maintenance_workers for the build")
    ap.add_argument("--keep", action=argparse.BooleanOptionalAction, default=True, help="keep the stores afterwards")
    ap.add_argument("--resume", action="store_true", help="keep finished entries of --out; reuse recorded builds")
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)  # backend:size, run by the parent
    ap.add_argument("--report", type=Path, default=None, help="print the tables of a result JSON and exit")
    args = ap.parse_args(argv)
    if args.queries < 1 or min(args.sizes) < CHUNKS_PER_DOC:
        ap.error("--queries must be ≥ 1 and every size ≥ 10")
    return args


SETTING_KEYS = ("dim", "clusters", "noise", "vocab", "words", "zipf", "seed", "batch", "hnsw_m",
                "hnsw_ef_construction", "ann_min_rows", "pg_maintenance_work_mem", "pg_parallel_workers",
                "queries", "filter_queries", "ef")


def new_result(args: argparse.Namespace, settings: dict, synth: Synthetic) -> dict:
    """The result JSON to fill: a fresh one, or (``--resume``) the one at ``--out``, settings checked."""
    if args.resume and args.out.exists():
        result = json.loads(args.out.read_text())
        if result.get("settings") != json.loads(json.dumps(settings)):
            raise SystemExit(f"--resume: the settings differ from those recorded in {args.out}: "
                             f"{result.get('settings')}; rerun with those, or without --resume")
        result.setdefault("runs", []).append({"started": _now(), "machine": machine(args)})
        return result
    return {"benchmark": "bench/scale_store.py", "data": "SYNTHETIC vectors and texts (see synthetic)",
            "synthetic": synth.settings(), "settings": settings, "k": K, "warmup_queries": WARMUP,
            "timings": "store calls only: dense_candidates / sparse_candidates (no embedding, no fetch); "
                       "write_s sums the write() calls (not the data generation)",
            "memory": "each (backend, size) runs in its own child process: *_rss_* are that process's RSS "
                      "(sampled every 50 ms), process_ru_maxrss_mb its lifetime peak; *_pg_server_private_* "
                      "sums RSS less shared memory over the PostgreSQL server's processes",
            "runs": [{"started": _now(), "machine": machine(args)}], "results": []}


def save(result: dict, out: Path) -> None:
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(out)


def child(args: argparse.Namespace, synth: Synthetic) -> None:
    """``--only backend:size``: run one entry of the result JSON at ``--out`` in this process."""
    backend, size = args.only.split(":")
    result = json.loads(args.out.read_text())
    entry = next(e for e in result["results"] if e["backend"] == backend and e["size"] == int(size))
    rss = Rss(pg_pid(args.dsn) if backend == "postgres" else None)

    def keep() -> None:
        entry["process_ru_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        entry["load_avg"] = os.getloadavg()
        save(result, args.out)

    run_one(backend, int(size), args, synth, rss, entry, keep)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report:
        print(tables(json.loads(args.report.read_text())))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in SETTING_KEYS}
    synth = Synthetic(args.dim, args.clusters, args.noise, args.vocab, args.words, args.zipf, args.seed)
    if args.only:
        child(args, synth)
        return
    result = new_result(args, settings, synth)
    for size in sorted(args.sizes):
        for backend in args.backends:
            if not any(e["backend"] == backend and e["size"] == size for e in result["results"]):
                result["results"].append({"backend": backend, "size": size, "status": "pending"})
    save(result, args.out)
    for size in sorted(args.sizes):
        for backend in args.backends:
            entry = next(e for e in result["results"] if e["backend"] == backend and e["size"] == size)
            if entry.get("status") == "done":
                log(f"{backend} {size:,}: done in an earlier run, skipped")
                continue
            # a child process per entry: its RSS is that backend's and size's alone
            cmd = [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv), "--only", f"{backend}:{size}"]
            code = subprocess.run(cmd).returncode
            result = json.loads(args.out.read_text())
            if code:
                log(f"{backend} {size:,}: the child process failed (exit {code}); see the log above")
    result["runs"][-1].update(finished=_now(), load_avg_end=os.getloadavg())
    save(result, args.out)
    print(tables(result))


if __name__ == "__main__":
    main()
