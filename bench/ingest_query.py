"""Ingest throughput, memory and query latency of ragline on a BEIR dataset, in one process.

Measures, in this order:
  1. ragline ingest end to end: a fresh index and a fresh, empty embedding cache in a temporary
     directory, built with ``Indexer`` + ``index_corpus`` exactly as ``ragline eval beir`` does;
     RSS is sampled in a background thread throughout.
  2. the plain baseline: ``SentenceTransformer(bundled model).encode(texts, batch_size=64)`` in
     fp32 over the same document texts (title + "\\n\\n" + text), unless --skip-baseline.
  3. query latency per mode (dense, sparse, hybrid) through ``Retriever.search`` with k=10,
     plus the query-embedding time alone and the dense store search alone.

Prints a table on stdout (progress goes to stderr) and writes everything to a JSON file.

    .venv/bin/python bench/ingest_query.py                       # full SciFact run
    .venv/bin/python bench/ingest_query.py --limit-docs 300 --limit-queries 30 --output /tmp/s.json
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import gc  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterator, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from machine import cpu_model, version  # noqa: E402  (bench/machine.py)

REPO = Path(__file__).resolve().parent.parent
MODES = ("dense", "sparse", "hybrid")
QUERY_K = 10
WARMUP_QUERIES = 10
BASELINE_BATCH = 64
WARMUP_TEXTS = 32  # short texts encoded, untimed, by both the baseline and ragline before timing
MB = 2**20

TARGET_INGEST_RATIO = 1.5  # ragline ingest docs/s >= 1.5x the plain encode baseline
TARGET_HYBRID_P50_MS = 20.0  # hybrid query p50 end to end


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ memory
def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def maxrss_bytes() -> int:
    # Linux reports ru_maxrss in KiB (macOS in bytes)
    v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return v if sys.platform == "darwin" else v * 1024


class RssSampler:
    """Samples this process's RSS in a background thread; ``peak`` is the highest seen."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def _sample(self) -> int:
        rss = self._proc.memory_info().rss
        self.peak = max(self.peak, rss)
        self.samples += 1
        return rss

    def start(self) -> "RssSampler":
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.peak


# ------------------------------------------------------------------------------------ stats
def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def latency_summary(ms: Sequence[float]) -> dict:
    return {"n": len(ms), "p50": round(pct(ms, 50), 3), "p95": round(pct(ms, 95), 3),
            "p99": round(pct(ms, 99), 3), "mean": round(float(np.mean(ms)), 3) if ms else None,
            "max": round(float(np.max(ms)), 3) if ms else None}


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def make_dataset(path: Path, limit_docs: int | None, limit_queries: int | None):
    from ragline.evaluate.beir import BeirDataset, load_beir

    @dataclass
    class LimitedDataset(BeirDataset):
        """A BEIR dataset whose corpus stops after ``limit`` documents (None = all)."""

        limit: int | None = None

        def corpus(self) -> Iterator[dict]:
            rows = super().corpus()
            return itertools.islice(rows, self.limit) if self.limit else rows

    ds = load_beir(path)
    queries = dict(itertools.islice(ds.queries.items(), limit_queries)) if limit_queries else ds.queries
    n_docs = min(ds.n_docs, limit_docs) if limit_docs else ds.n_docs
    return LimitedDataset(ds.path, queries, {q: ds.qrels[q] for q in queries}, n_docs, limit_docs)


def warmup_texts(ds) -> list[str]:
    """A few short real document texts (cut to 500 characters so no input exceeds the window)."""
    from ragline.evaluate.beir import beir_document

    return [beir_document(row)[0].text[:500] for row in itertools.islice(ds.corpus(), WARMUP_TEXTS)]


# ------------------------------------------------------------------------------------ phases
def run_ingest(ds, engine, settings, home: Path) -> dict:
    from ragline.evaluate.beir import index_corpus
    from ragline.ingest.indexer import Indexer
    from ragline.store.lance import LanceStore

    r = settings.retrieve
    embedder = engine.embedder
    cache = engine.cache  # $home/embeddings.sqlite in the fresh temporary home: empty
    cached_before = cache.count()
    if cached_before:
        raise SystemExit(f"the embedding cache at {home} is not empty ({cached_before} vectors)")
    store = LanceStore(home / "lance", embedder.dim, r.hnsw_m, r.hnsw_ef_construction, r.ann_min_rows)
    indexer = Indexer(store, embedder, cache, engine.plan)

    gc.collect()
    rss_pre = rss_bytes()
    maxrss_pre = maxrss_bytes()
    sampler = RssSampler().start()
    fractions = [0.25, 0.5, 0.75, 1.0]
    checkpoints: list[dict] = []
    t0 = time.perf_counter()

    def on_progress(done: int, chunks: int) -> None:
        # index_corpus calls this after every write batch (256 documents)
        now = rss_bytes()
        while fractions and done >= fractions[0] * ds.n_docs:
            checkpoints.append({
                "fraction": fractions.pop(0), "documents": done, "chunks": chunks,
                "seconds": round(time.perf_counter() - t0, 3),
                "rss_mb": round(now / MB, 1), "rss_growth_mb": round((now - rss_pre) / MB, 1),
                "peak_growth_so_far_mb": round((max(sampler.peak, now) - rss_pre) / MB, 1),
            })
        log(f"ingest: {done}/{ds.n_docs} documents, {chunks} chunks, {done / (time.perf_counter() - t0):.1f} docs/s")

    stats = index_corpus(ds, indexer, progress=on_progress)
    peak = sampler.stop()
    index_dir = home / "lance"
    seconds = stats["seconds"]
    out = {
        "documents": stats["documents"], "chunks": stats["chunks"], "embedded": stats["embedded"],
        "chunks_per_doc": round(stats["chunks"] / stats["documents"], 3) if stats["documents"] else None,
        "seconds": round(seconds, 3), "embed_seconds": round(stats["embed_seconds"], 3),
        "embed_share": round(stats["embed_seconds"] / seconds, 4) if seconds else None,
        "docs_per_s": round(stats["docs_per_s"], 2),
        "chunks_per_s": round(stats["chunks"] / seconds, 2) if seconds else None,
        "index_bytes": dir_bytes(index_dir),
        "embedding_cache_bytes": sum(f.stat().st_size for f in home.glob("embeddings.sqlite*")),
        "ann_index": store.has_ann_index(),
    }
    # tokens the model saw (with [CLS]/[SEP]), counted after the timed run: chunking can embed
    # more tokens than the baseline, which truncates each document at the model window
    texts = store._chunks.to_lance().to_table(columns=["search_text"]).column("search_text").to_pylist()
    out["tokens_encoded"] = sum(embedder.tokenizer.count(t) + 2 for t in texts)
    out["tokens_per_s"] = round(out["tokens_encoded"] / seconds, 1) if seconds else None
    memory = {
        "rss_pre_ingest_mb": round(rss_pre / MB, 1),
        "rss_post_ingest_mb": round(rss_bytes() / MB, 1),
        "ingest_peak_rss_mb": round(peak / MB, 1),
        "ingest_peak_growth_mb": round((peak - rss_pre) / MB, 1),
        "ru_maxrss_pre_ingest_mb": round(maxrss_pre / MB, 1),
        "ru_maxrss_after_ingest_mb": round(maxrss_bytes() / MB, 1),
        "rss_samples": sampler.samples,
        "sample_interval_s": sampler.interval_s,
        "growth_checkpoints": checkpoints,
    }
    return {"ingest": out, "memory": memory, "store": store}


def run_baseline(ds, embedder_device: str | None, warm: list[str]) -> dict:
    import torch
    from ragline.embed.local import bundled_model_path
    from ragline.evaluate.beir import beir_document
    from sentence_transformers import SentenceTransformer

    texts = [beir_document(row)[0].text for row in ds.corpus()]
    t = time.perf_counter()
    model = SentenceTransformer(str(bundled_model_path()), device=embedder_device)
    load_s = time.perf_counter() - t
    window = int(model.max_seq_length)
    lengths = model.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    truncated = sum(1 for ids in lengths if len(ids) > window)
    tokens_seen = sum(min(len(ids), window) for ids in lengths)
    with torch.inference_mode():
        model.encode(warm, batch_size=BASELINE_BATCH, show_progress_bar=False)
        log(f"baseline: encoding {len(texts)} documents (fp32, batch {BASELINE_BATCH})")
        t = time.perf_counter()
        vecs = model.encode(texts, batch_size=BASELINE_BATCH, show_progress_bar=False, convert_to_numpy=True)
        seconds = time.perf_counter() - t
    result = {
        "what": "SentenceTransformer(bundled model).encode(texts, batch_size=64), fp32",
        "documents": len(texts), "seconds": round(seconds, 3),
        "docs_per_s": round(len(texts) / seconds, 2) if seconds else None,
        "model_load_seconds": round(load_s, 3), "batch_size": BASELINE_BATCH, "precision": "fp32",
        "device": str(model.device), "max_seq_length": window,
        "docs_truncated_by_window": truncated, "tokens_encoded": tokens_seen,
        "tokens_per_s": round(tokens_seen / seconds, 1) if seconds else None,
        "vectors_shape": list(vecs.shape),
    }
    del model, vecs, texts, lengths
    gc.collect()
    return result


def run_queries(ds, retriever, embedder, store, settings) -> dict:
    queries = list(ds.queries.values())
    warm = queries[:WARMUP_QUERIES]
    result: dict = {"k": QUERY_K, "queries": len(queries), "warmup_queries": len(warm),
                    "aggregate": settings.retrieve.aggregate, "modes": {}}
    for text in warm:
        for mode in MODES:
            retriever.search(retriever.request(text, k=QUERY_K, mode=mode))
    lat: dict[str, list[float]] = {m: [] for m in MODES}
    n_hits: dict[str, list[int]] = {m: [] for m in MODES}
    # modes interleaved per query (order rotated), so a drift in machine load hits all alike
    for i, text in enumerate(queries):
        for j in range(len(MODES)):
            mode = MODES[(i + j) % len(MODES)]
            req = retriever.request(text, k=QUERY_K, mode=mode)
            t = time.perf_counter()
            hits = retriever.search(req)
            lat[mode].append((time.perf_counter() - t) * 1000)
            n_hits[mode].append(len(hits))
    for mode in MODES:
        result["modes"][mode] = {**latency_summary(lat[mode]), "mean_hits": round(float(np.mean(n_hits[mode])), 2)}
        log(f"queries: {mode} p50 {result['modes'][mode]['p50']:.2f} ms")
    # the split: query embedding alone, and the dense store search alone (same depth and ef as
    # Retriever.search uses for k=10 at chunk level)
    for text in warm:
        embedder.embed_query(text)
    emb, vecs = [], []
    for text in queries:
        t = time.perf_counter()
        vecs.append(embedder.embed_query(text))
        emb.append((time.perf_counter() - t) * 1000)
    r = settings.retrieve
    depth = max(r.candidates, QUERY_K)
    ef = max(r.hnsw_ef, depth)
    for v in vecs[:WARMUP_QUERIES]:
        store.dense_candidates(v, depth, None, ef)
    dense_store = []
    for v in vecs:
        t = time.perf_counter()
        store.dense_candidates(v, depth, None, ef)
        dense_store.append((time.perf_counter() - t) * 1000)
    result["query_embed_ms"] = latency_summary(emb)
    result["dense_store_search_ms"] = {**latency_summary(dense_store), "depth": depth, "ef": ef}
    return result


# ------------------------------------------------------------------------------------ output
def fmt_table(rows: list[tuple[str, str]], title: str) -> str:
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * len(title)]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)


def report(data: dict) -> str:
    ing, mem, base, q = data["ingest"], data["memory"], data["baseline"], data["query"]
    s = data["settings"]
    parts = [
        f"ragline bench: {data['dataset']['name']}, {ing['documents']} documents, {q['queries']} queries, "
        f"{s['embed']['model_id']}, batch {s['embed']['batch_size']}, "
        f"{data['environment']['cpu_count']} CPUs / {data['environment']['torch_threads']} torch threads, "
        f"load avg {data['environment']['loadavg_start'][0]:.1f} -> {data['environment']['loadavg_end'][0]:.1f}",
        "",
    ]
    rows = [
        ("ragline docs/s", f"{ing['docs_per_s']:.1f}"),
        ("ragline chunks/s", f"{ing['chunks_per_s']:.1f}"),
        ("ragline seconds", f"{ing['seconds']:.2f} (embedding {ing['embed_seconds']:.2f}, "
                            f"share {ing['embed_share']:.1%})"),
        ("chunks", f"{ing['chunks']} ({ing['chunks_per_doc']:.2f} per document)"),
        ("ragline tokens/s", f"{ing['tokens_per_s']:.0f} ({ing['tokens_encoded']} tokens)"),
        ("index size", f"{ing['index_bytes'] / MB:.1f} MB (+ cache {ing['embedding_cache_bytes'] / MB:.1f} MB)"),
    ]
    if base:
        rows += [
            ("baseline docs/s", f"{base['docs_per_s']:.1f} ({base['seconds']:.2f} s, fp32, batch "
                                f"{base['batch_size']}, {base['docs_truncated_by_window']} docs truncated)"),
            ("baseline tokens/s", f"{base['tokens_per_s']:.0f} ({base['tokens_encoded']} tokens)"),
            ("ragline / baseline", f"{data['ratio_vs_baseline']:.2f}x docs/s"),
        ]
    parts += [fmt_table(rows, "Ingest"), ""]
    rows = [
        ("RSS before ingest", f"{mem['rss_pre_ingest_mb']:.0f} MB"),
        ("ingest peak RSS (sampled)", f"{mem['ingest_peak_rss_mb']:.0f} MB "
                                      f"(+{mem['ingest_peak_growth_mb']:.0f} MB over pre-ingest)"),
        ("ru_maxrss after ingest", f"{mem['ru_maxrss_after_ingest_mb']:.0f} MB"),
        ("ru_maxrss at end", f"{mem['ru_maxrss_end_mb']:.0f} MB (lifetime high-water mark"
                              + (", baseline model included)" if base else ")")),
    ]
    for c in mem["growth_checkpoints"]:
        rows.append((f"RSS growth at {c['fraction']:.0%}",
                     f"+{c['rss_growth_mb']:.0f} MB at {c['documents']} docs "
                     f"(peak so far +{c['peak_growth_so_far_mb']:.0f} MB)"))
    parts += [fmt_table(rows, "Memory"), ""]
    rows = [(m, f"p50 {v['p50']:7.2f}   p95 {v['p95']:7.2f}   p99 {v['p99']:7.2f}   ({v['mean_hits']:.1f} hits)")
            for m, v in q["modes"].items()]
    e, d = q["query_embed_ms"], q["dense_store_search_ms"]
    rows += [("query embed only", f"p50 {e['p50']:7.2f}   p95 {e['p95']:7.2f}   p99 {e['p99']:7.2f}"),
             ("dense store only", f"p50 {d['p50']:7.2f}   p95 {d['p95']:7.2f}   p99 {d['p99']:7.2f}")]
    parts += [fmt_table(rows, f"Query latency, ms (k={q['k']}, {q['aggregate']} level, "
                              f"{q['warmup_queries']} warm-up queries not counted, modes interleaved)"), ""]
    t = data["targets"]
    rows = [(name, "n/a" if v["met"] is None else f"{v['measured']} vs {v['target']}: "
                                                  f"{'MET' if v['met'] else 'NOT MET'}") for name, v in t.items()]
    parts += [fmt_table(rows, "Targets")]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, default=REPO / "../shared/datasets/scifact",
                   help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) "
                        "[default: ../shared/datasets/scifact from the repository root]")
    p.add_argument("--limit-docs", type=int, default=None, help="ingest only the first N documents")
    p.add_argument("--limit-queries", type=int, default=None, help="time only the first N test queries")
    p.add_argument("--batch-size", type=int, default=None, help="ragline embedder batch [default: embed.batch_size]")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                   help="ragline embedder precision [default: embed.precision]")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON result path [default: bench/results/<dataset>-<date>.json]")
    p.add_argument("--skip-baseline", action="store_true", help="do not run the plain encode baseline")
    args = p.parse_args(argv)
    for name in ("limit_docs", "limit_queries", "batch_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now().astimezone()
    load_start = [round(x, 2) for x in os.getloadavg()]  # a busy machine skews every number
    dataset = args.dataset.resolve()
    output = args.output or REPO / "bench" / "results" / f"{dataset.name}-{started:%Y-%m-%d}.json"

    import torch
    from ragline.app import Engine
    from ragline.config import load_settings
    from ragline.embed.local import cpu_has_bf16
    from ragline.retrieve.search import Retriever

    ds = make_dataset(dataset, args.limit_docs, args.limit_queries)
    if not ds.queries:
        raise SystemExit(f"{dataset}: no test queries")
    warm = warmup_texts(ds)
    log(f"dataset {dataset.name}: {ds.n_docs} documents, {len(ds.queries)} queries")

    overrides = {"embed": {k: v for k, v in (("batch_size", args.batch_size), ("precision", args.precision))
                           if v is not None}}
    with tempfile.TemporaryDirectory(prefix="ragline-bench-") as tmp:
        home = Path(tmp)
        # a fresh home: defaults + RAGLINE_* environment, an empty cache, no config.toml
        settings = load_settings(overrides, home=home)
        engine = Engine(settings)
        t = time.perf_counter()
        embedder = engine.embedder
        model_load_s = time.perf_counter() - t
        embedder.embed_documents(warm)  # untimed warm-up; straight to the model, not the cache
        log(f"ragline embedder {embedder.model_id} loaded in {model_load_s:.1f}s; ingesting")

        phase = run_ingest(ds, engine, settings, home)
        ingest, memory, store = phase["ingest"], phase["memory"], phase["store"]
        ingest["model_load_seconds"] = round(model_load_s, 3)

        baseline = None
        if not args.skip_baseline:
            device = "cpu" if not torch.cuda.is_available() else None  # as LocalEmbedder chooses
            baseline = run_baseline(ds, device, warm)
            memory["ru_maxrss_after_baseline_mb"] = round(maxrss_bytes() / MB, 1)

        retriever = Retriever(store, embedder, settings.retrieve)
        log(f"queries: {len(ds.queries)} per mode, modes {', '.join(MODES)}")
        query = run_queries(ds, retriever, embedder, store, settings)
        memory["ru_maxrss_end_mb"] = round(maxrss_bytes() / MB, 1)

    ratio = ingest["docs_per_s"] / baseline["docs_per_s"] if baseline and baseline["docs_per_s"] else None
    hybrid_p50 = query["modes"]["hybrid"]["p50"]
    e = settings.embed
    data = {
        "benchmark": "ingest_query",
        "date": started.isoformat(timespec="seconds"),
        "dataset": {"name": dataset.name, "path": str(dataset), "documents": ds.n_docs,
                    "queries": len(ds.queries), "limit_docs": args.limit_docs,
                    "limit_queries": args.limit_queries},
        "environment": {
            "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "cpu_model": cpu_model(),
            "cpu_bf16": cpu_has_bf16(),
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "cuda": torch.cuda.is_available(),
            "loadavg_start": load_start, "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(), "python": platform.python_version(),
            "versions": {d: version(d) for d in ("ragline", "torch", "lancedb", "pylance", "pyarrow",
                                                 "sentence-transformers", "transformers", "numpy")},
        },
        "settings": {
            "embed": {"model": e.model, "model_id": embedder.model_id, "provider": e.provider,
                      "precision": e.precision, "bf16": bool(getattr(embedder, "bf16", False)),
                      "batch_size": e.batch_size, "dim": embedder.dim, "max_tokens": embedder.max_tokens},
            "chunk": {**settings.chunk.model_dump(), "effective_size": min(settings.chunk.size, embedder.max_tokens)},
            "retrieve": settings.retrieve.model_dump(),
            "index_corpus_batch_docs": 256,
        },
        "baseline": baseline,
        "ingest": ingest,
        "ratio_vs_baseline": round(ratio, 3) if ratio else None,
        "memory": memory,
        "query": query,
        "targets": {
            "ingest_vs_baseline": {"target": f">= {TARGET_INGEST_RATIO}x",
                                   "measured": f"{ratio:.2f}x" if ratio else None,
                                   "met": None if ratio is None else ratio >= TARGET_INGEST_RATIO},
            "hybrid_p50_ms": {"target": f"<= {TARGET_HYBRID_P50_MS} ms", "measured": f"{hybrid_p50:.2f} ms",
                              "met": hybrid_p50 <= TARGET_HYBRID_P50_MS},
        },
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(data, indent=2) + "\n")
    print(report(data))
    print(f"\nwritten: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
