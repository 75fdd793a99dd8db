"""What every runner of bench/peers.py shares: the work folder, document text, the query loop, the output.

Standard library only (plus psutil), because runners execute in two virtualenvs: ragline's and the peers'.
A runner is started by bench/peers.py as ``PYTHON bench/peers/run_<system>.py --work DIR --model DIR --out FILE``.
It loads the model (untimed), warms it up (untimed), ingests the corpus records (timed: parse + embed +
index), runs warm-up queries (untimed), then every test query once per mode, modes interleaved per query,
and writes the ranked document ids and per-query latencies as JSON. The parent scores them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Mapping

# Offline, quiet, and the same tokenizer threading for every system.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

WARMUP_TEXTS = 32  # short texts embedded, untimed, before the ingest clock starts


def log(system: str, msg: str) -> None:
    print(f"[{system}] {msg}", file=sys.stderr, flush=True)


def doc_text(rec: Mapping[str, str]) -> str:
    """BEIR convention, the same for every system: title + ". " + text."""
    title, body = (rec.get("title") or "").strip(), (rec.get("text") or "").strip()
    return f"{title}. {body}" if title and body else (title or body)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True, help="folder with corpus.jsonl and queries.json")
    p.add_argument("--model", type=Path, required=True, help="sentence-transformers model directory")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--depth", type=int, default=100, help="results asked of each retriever per query")
    p.add_argument("--warmup", type=int, default=10, help="queries run untimed per mode before timing")
    return p.parse_args(argv)


def load_work(work: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    with open(work / "corpus.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    queries = [(str(q), str(t)) for q, t in json.loads((work / "queries.json").read_text(encoding="utf-8"))]
    return records, queries


def warmup_texts(records: list[dict]) -> list[str]:
    return [doc_text(r)[:500] for r in records[:WARMUP_TEXTS]]


def versions(*dists: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = None
    return out


def dedupe(ids) -> list[str]:
    """Document ids in first-seen order: chunk-level results collapse to their document's best rank."""
    seen: set[str] = set()
    out = []
    for d in ids:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


class RssPeak:
    """This process's peak RSS, sampled every 50 ms in a thread."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return round(self.peak / 2**20, 1)


def timed_ingest(fn: Callable[[], dict]) -> dict:
    """Run ``fn`` (which builds everything from the in-memory records) and time it."""
    t0 = time.perf_counter()
    extra = fn() or {}
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), **extra}


def run_queries(system: str, modes: Mapping[str, Callable[[str], list[str]]], queries: list[tuple[str, str]],
                warmup: int) -> dict:
    """Warm up every mode on the first ``warmup`` queries (untimed), then time every query once per mode,
    modes interleaved per query so that a change in machine load touches every mode alike."""
    for _, text in queries[:warmup]:
        for fn in modes.values():
            fn(text)
    ranked: dict[str, dict[str, list[str]]] = {m: {} for m in modes}
    lat: dict[str, list[float]] = {m: [] for m in modes}
    n = len(queries)
    for i, (qid, text) in enumerate(queries, 1):
        for m, fn in modes.items():
            t = time.perf_counter()
            ids = fn(text)
            lat[m].append(round((time.perf_counter() - t) * 1000, 3))
            ranked[m][qid] = dedupe(ids)
        if i % 50 == 0 or i == n:
            log(system, f"queries {i}/{n}")
    return {m: {"ranked": ranked[m], "latency_ms": lat[m],
                "unique_docs_mean": round(sum(len(v) for v in ranked[m].values()) / max(1, n), 2)}
            for m in modes}


def write(out: Path, payload: dict) -> None:
    payload["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload), encoding="utf-8")


def torch_info() -> dict:
    import torch

    return {"torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
