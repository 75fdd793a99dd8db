"""ragline against its peers, LlamaIndex and Haystack, on one BEIR dataset in one run.

Every system gets the same document records (text = title + ". " + text), the same embedding model (the
all-MiniLM-L6-v2 directory bundled with ragline), the same test queries and the same retrieval depth. Each
runs in its own process (bench/peers/run_<system>.py): ragline in ragline's virtualenv, the peers in a
virtualenv of their own that this script creates (bench/.peers-venv: torch==2.13.0 first, then
bench/peers/requirements.txt; the peers are never ragline dependencies). A runner loads the model and warms
it up (untimed), ingests the records (timed: parse + embed + index), warms up every mode on the first
queries (untimed), then times every test query once per mode, one client, modes interleaved per query.
It returns ranked document ids; this script scores all of them with ragline's own metric functions
(ragline.evaluate.beir.score_query -> ragline.evaluate.metrics), so the scoring is identical.

Prints one table with ratios against ragline hybrid and writes JSON (versions, settings, load averages)
to bench/results/peers-<date>.json.

    .venv/bin/python bench/peers.py                                   # full SciFact (make bench-peers)
    .venv/bin/python bench/peers.py --max-docs 500 --max-queries 50 --output /tmp/peers-slice.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
RUNNERS = REPO / "bench" / "peers"
REQUIREMENTS = RUNNERS / "requirements.txt"
DEFAULT_VENV = REPO / "bench" / ".peers-venv"
TORCH = "torch==2.13.0"  # installed first and pinned: an unpinned torch pulls gigabytes of CUDA packages
SYSTEMS = ("ragline", "llamaindex", "haystack")
BASELINE = ("ragline", "hybrid")
# the issue's goals (issue 3, item 7)
GOAL_INGEST_RATIO = 2.0  # ragline docs/s >= 2x each peer's
GOAL_P50_RATIO = 0.5  # ragline hybrid p50 <= 0.5x each peer's hybrid p50


def log(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------ the peers' venv
def ensure_venv(venv: Path) -> Path:
    """Create (or refresh, when requirements.txt changed) the peers' virtualenv; return its python."""
    py = venv / "bin" / "python"
    stamp = venv / ".installed"
    want = hashlib.sha256(REQUIREMENTS.read_bytes() + TORCH.encode()).hexdigest()
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return py
    if not py.exists():
        log(f"creating the peers' virtualenv {venv}")
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "--quiet"]
    log(f"installing {TORCH} (first, pinned) into {venv}")
    subprocess.run(pip + [TORCH], check=True)
    log(f"installing {REQUIREMENTS.relative_to(REPO)}")
    subprocess.run(pip + ["-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(want)
    return py


# ------------------------------------------------------------------------------------ data
def prepare(dataset: Path, max_docs: int | None, max_queries: int | None, work: Path):
    """Write the corpus records and test queries every runner reads; return the (possibly sliced) dataset."""
    from ragline.evaluate.beir import load_beir, slice_corpus

    ds = load_beir(dataset)
    if max_queries:
        ds.queries = dict(list(ds.queries.items())[:max_queries])
    if max_docs is not None:
        ds = slice_corpus(ds, max_docs)
    n = 0
    with open(work / "corpus.jsonl", "w", encoding="utf-8") as f:
        for row in ds.corpus():
            f.write(json.dumps({"id": str(row["_id"]), "title": row.get("title") or "",
                                "text": row.get("text") or ""}) + "\n")
            n += 1
    (work / "queries.json").write_text(json.dumps(list(ds.queries.items())), encoding="utf-8")
    return ds, n


# ------------------------------------------------------------------------------------ scoring
def score(ds, ranked: dict[str, list[str]], depth: int) -> dict[str, float]:
    from ragline.evaluate.beir import METRICS, score_query

    per = [score_query(ranked.get(qid, [])[:depth], ds.qrels[qid]) for qid in ds.queries]
    return {m: round(sum(q[m] for q in per) / max(1, len(per)), 4) for m in METRICS}


def latency(values: Sequence[float]) -> dict[str, float]:
    from ragline.evaluate.metrics import percentile

    return {"p50": round(percentile(values, 50), 2), "p95": round(percentile(values, 95), 2),
            "p99": round(percentile(values, 99), 2), "mean": round(sum(values) / max(1, len(values)), 2)}


def thread_env(threads: int | None) -> dict[str, str]:
    """The same thread limits for every runner (torch's intra-op pool, OpenMP, BLAS)."""
    if not threads:
        return {}
    return {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def run_system(system: str, python: Path, work: Path, model: Path, depth: int, warmup: int,
               threads: int | None) -> dict:
    out = work / f"{system}.json"
    cmd = [str(python), str(RUNNERS / f"run_{system}.py"), "--work", str(work), "--model", str(model),
           "--out", str(out), "--depth", str(depth), "--warmup", str(warmup)]
    log(f"{system}: {' '.join(cmd[1:2])}")
    env = {**os.environ, "PYTHONPATH": str(RUNNERS), **thread_env(threads)}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=sys.stderr)  # the table alone goes to stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    data["wall_seconds"] = round(time.perf_counter() - t, 1)
    return data


# ------------------------------------------------------------------------------------ report
def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def build_rows(raw: dict[str, dict], ds, depth: int) -> list[dict]:
    rows = []
    for system, data in raw.items():
        for mode, m in data["modes"].items():
            rows.append({"system": system, "mode": mode, **score(ds, m["ranked"], depth),
                         "latency_ms": latency(m["latency_ms"]), "docs_per_s": data["ingest"]["docs_per_s"],
                         "unique_docs_mean": m["unique_docs_mean"]})
    base = next(r for r in rows if (r["system"], r["mode"]) == BASELINE)
    for r in rows:
        r["vs_ragline_hybrid"] = {
            "ndcg@10": ratio(r["ndcg@10"], base["ndcg@10"]), "recall@100": ratio(r["recall@100"], base["recall@100"]),
            "docs_per_s": ratio(r["docs_per_s"], base["docs_per_s"]),
            "p50": ratio(r["latency_ms"]["p50"], base["latency_ms"]["p50"]),
            "p99": ratio(r["latency_ms"]["p99"], base["latency_ms"]["p99"]),
        }
    return rows


def per_query_ndcg(ds, ranked: dict[str, list[str]], depth: int) -> dict[str, float]:
    from ragline.evaluate.beir import score_query

    return {qid: score_query(ranked.get(qid, [])[:depth], ds.qrels[qid])["ndcg@10"] for qid in ds.queries}


def paired(ds, ranked_a: dict[str, list[str]], ranked_b: dict[str, list[str]], depth: int,
           resamples: int = 10000, seed: int = 0) -> dict:
    """ragline's best against a peer's best, query by query on nDCG@10: wins, losses, ties, the mean
    difference with its 95% paired-bootstrap interval, and the one-sided bootstrap p-value of
    "ragline is not better" (the share of resampled mean differences at or below 0)."""
    import numpy as np

    from ragline.evaluate.report import bootstrap_mean_ci

    qa, qb = per_query_ndcg(ds, ranked_a, depth), per_query_ndcg(ds, ranked_b, depth)
    qids = sorted(qa)
    d = np.array([qa[q] - qb[q] for q in qids])
    mean, lo, hi = bootstrap_mean_ci(d, resamples, seed)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1) if d.size else np.zeros(1)
    return {"queries": int(d.size), "wins": int((d > 1e-9).sum()), "losses": int((d < -1e-9).sum()),
            "ties": int((abs(d) <= 1e-9).sum()), "mean_diff": round(mean, 4), "ci95": [round(lo, 4), round(hi, 4)],
            "p_not_better": round(float((means <= 0).mean()), 4), "resamples": resamples, "seed": seed}


def goals(rows: list[dict], raw: dict[str, dict], ds=None, depth: int = 100) -> dict:
    ours = [r for r in rows if r["system"] == "ragline"]
    best = max(ours, key=lambda r: r["ndcg@10"])
    base = next(r for r in ours if r["mode"] == BASELINE[1])
    out: dict = {"ragline_best": {"mode": best["mode"], "ndcg@10": best["ndcg@10"]}, "peers": {}}
    for system in raw:
        if system == "ragline":
            continue
        theirs = [r for r in rows if r["system"] == system]
        pbest = max(theirs, key=lambda r: r["ndcg@10"])
        hybrids = [r for r in theirs if r["mode"].startswith("hybrid")]
        phyb = min(hybrids, key=lambda r: r["latency_ms"]["p50"]) if hybrids else None
        ingest = ratio(base["docs_per_s"], pbest["docs_per_s"])
        p50 = ratio(base["latency_ms"]["p50"], phyb["latency_ms"]["p50"]) if phyb else None
        significance = None
        if ds is not None:
            significance = paired(ds, raw["ragline"]["modes"][best["mode"]]["ranked"],
                                  raw[system]["modes"][pbest["mode"]]["ranked"], depth)
        out["peers"][system] = {
            "best_mode": pbest["mode"], "best_ndcg@10": pbest["ndcg@10"],
            "ndcg_goal_met": best["ndcg@10"] >= pbest["ndcg@10"],
            "paired_ndcg@10": significance,
            "ingest_ratio": ingest, "ingest_goal_met": ingest is not None and ingest >= GOAL_INGEST_RATIO,
            "hybrid_p50_mode": phyb["mode"] if phyb else None, "p50_ratio": p50,
            "p50_goal_met": p50 is not None and p50 <= GOAL_P50_RATIO,
        }
    return out


def fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def print_table(rows: list[dict], g: dict, header: str) -> None:
    cols = ["system", "mode", "nDCG@10", "R@100", "docs/s", "p50 ms", "p99 ms",
            "×nDCG", "×R@100", "×docs/s", "×p50", "×p99"]
    lines = [[r["system"], r["mode"], fmt(r["ndcg@10"], ".4f"), fmt(r["recall@100"], ".4f"),
              fmt(r["docs_per_s"], ".1f"), fmt(r["latency_ms"]["p50"], ".1f"), fmt(r["latency_ms"]["p99"], ".1f"),
              *(fmt(r["vs_ragline_hybrid"][k], ".2f") for k in ("ndcg@10", "recall@100", "docs_per_s", "p50", "p99"))]
             for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in lines)) for i, c in enumerate(cols)]
    print(header)
    print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths))))
    for x in lines:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths))))
    print("(× = ratio to ragline hybrid; docs/s is per system: one ingest serves all its modes)")
    rb = g["ragline_best"]
    for system, p in g["peers"].items():
        print(f"goals vs {system}: best nDCG@10 ragline {rb['ndcg@10']:.4f} ({rb['mode']}) vs "
              f"{p['best_ndcg@10']:.4f} ({p['best_mode']}) -> {'met' if p['ndcg_goal_met'] else 'NOT met'}; "
              f"ingest {fmt(p['ingest_ratio'], '.2f')}x (goal >= {GOAL_INGEST_RATIO:g}x) -> "
              f"{'met' if p['ingest_goal_met'] else 'NOT met'}; hybrid p50 {fmt(p['p50_ratio'], '.2f')}x of "
              f"{p['hybrid_p50_mode']} (goal <= {GOAL_P50_RATIO:g}x) -> {'met' if p['p50_goal_met'] else 'NOT met'}")
        sig = p.get("paired_ndcg@10")
        if sig:
            print(f"  paired over {sig['queries']} queries (nDCG@10, ragline {rb['mode']} - {system} "
                  f"{p['best_mode']}): {sig['wins']} wins, {sig['losses']} losses, {sig['ties']} ties; mean "
                  f"{sig['mean_diff']:+.4f} [95% CI {sig['ci95'][0]:+.4f}, {sig['ci95'][1]:+.4f}]; "
                  f"p(not better) = {sig['p_not_better']:.4f} (one-sided paired bootstrap, "
                  f"{sig['resamples']} resamples)")


# ------------------------------------------------------------------------------------ main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "datasets" / "scifact")
    p.add_argument("--max-docs", type=int, default=None,
                   help="judged documents of the scored queries plus the first N others (a slice)")
    p.add_argument("--max-queries", type=int, default=None, help="only the first N test queries")
    p.add_argument("--depth", type=int, default=100, help="results per query (scored: nDCG@10, R@100)")
    p.add_argument("--warmup", type=int, default=10, help="queries run untimed per mode before timing")
    p.add_argument("--threads", type=int, default=None,
                   help="limit every runner to N threads (OMP/MKL/OpenBLAS); default: each library's own "
                        "(torch: one per core). On a loaded machine 1 avoids threads waiting on each other")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument("--ragline-rerank", default=None, metavar="METHOD",
                   help="also score ragline's hybrid with this reranker (rerank.method, e.g. minilm) as mode "
                        "hybrid+rerank; RAGLINE_RERANK__* variables set its other settings")
    p.add_argument("--peers-venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--setup-only", action="store_true", help="create the peers' virtualenv and stop")
    p.add_argument("--output", type=Path, default=None, help="default: bench/results/peers-<date>.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad or "ragline" not in systems:
        raise SystemExit(f"--systems: use a subset of {','.join(SYSTEMS)} that includes ragline (got {args.systems})")
    peers_py = ensure_venv(args.peers_venv) if len(systems) > 1 else None
    if args.setup_only:
        print(peers_py)
        return 0
    if not args.dataset.is_dir():
        raise SystemExit(f"no BEIR dataset at {args.dataset}")

    from ragline.embed.local import bundled_model_path

    model = bundled_model_path().resolve()
    started = dt.datetime.now().astimezone()
    output = args.output or REPO / "bench" / "results" / f"peers-{started:%Y-%m-%d}.json"
    up_start, load_start = uptime(), loadavg()
    log(f"start: {up_start}")

    raw: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ragline-peers-work-") as tmp:
        work = Path(tmp)
        ds, n_docs = prepare(args.dataset, args.max_docs, args.max_queries, work)
        log(f"{args.dataset.name}: {n_docs} documents, {len(ds.queries)} queries, depth {args.depth}, "
            f"model {model}")
        for system in systems:
            python = Path(sys.executable) if system == "ragline" else peers_py
            if system == "ragline" and args.ragline_rerank:
                os.environ["RAGLINE_PEERS_RERANK"] = args.ragline_rerank
            raw[system] = run_system(system, python, work, model, args.depth, args.warmup, args.threads)
            log(f"{system} done in {raw[system]['wall_seconds']}s; load {loadavg()}")
    up_end, load_end = uptime(), loadavg()
    log(f"end: {up_end}")

    rows = build_rows(raw, ds, args.depth)
    g = goals(rows, raw, ds, args.depth) if len(raw) > 1 else {"ragline_best": {}, "peers": {}}
    header = (f"{args.dataset.name}: {n_docs} documents, {len(ds.queries)} queries, depth {args.depth}, "
              f"model all-MiniLM-L6-v2 (bundled), threads {args.threads or 'default'}; "
              f"load average {load_start} -> {load_end}")
    print_table(rows, g, header)

    data = {
        "benchmark": "peers",
        "command": " ".join([Path(sys.executable).name, "bench/peers.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "date": started.isoformat(timespec="seconds"),
        "dataset": {"name": args.dataset.name, "path": str(args.dataset), "documents": n_docs,
                    "queries": len(ds.queries), "max_docs": args.max_docs, "max_queries": args.max_queries},
        "settings": {"depth": args.depth, "warmup_queries": args.warmup, "threads": args.threads,
                     "document_text": 'title + ". " + text',
                     "embedding_model": str(model), "scoring": "ragline.evaluate.beir.score_query (all systems)",
                     "latency": "one client, per query end to end through each system's query API, after "
                                "warm-up, modes interleaved per query",
                     "ingest": "records in memory -> documents -> chunks -> embeddings -> index ready; "
                               "model load and a 32-text warm-up excluded",
                     "systems": {s: raw[s]["settings"] for s in raw}},
        "environment": {"uptime_start": up_start, "uptime_end": up_end, "loadavg_start": load_start,
                        "loadavg_end": load_end, "cpu_count": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(),
                        "per_system": {s: {"loadavg_start": raw[s].get("loadavg_start"),
                                           "loadavg_end": raw[s].get("loadavg_end"),
                                           "wall_seconds": raw[s].get("wall_seconds")} for s in raw}},
        "versions": {s: raw[s]["versions"] for s in raw},
        "ingest": {s: raw[s]["ingest"] for s in raw},
        "results": rows,
        "goals": g,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
