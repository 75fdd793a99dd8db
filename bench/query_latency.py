"""Query latency on a persisted index, in a fresh process (as `ragline query` or a server sees it).

    .venv/bin/ragline eval beir ../shared/datasets/scifact --index-dir /tmp/scifact-idx --modes dense
    .venv/bin/python bench/query_latency.py /tmp/scifact-idx ../shared/datasets/scifact

Reports p50/p95/p99 in ms per mode through `Retriever.search` (k=10, chunk level, default
settings), the query embedding alone, after 10 untimed warm-up queries; modes interleaved.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ragline.config import load_settings
from ragline.embed.local import LocalEmbedder
from ragline.evaluate.beir import load_beir
from ragline.evaluate.metrics import percentile
from ragline.retrieve.search import Retriever
from ragline.store.lance import LanceStore

MODES = ("dense", "sparse", "hybrid")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index_dir", type=Path, help="a folder holding lance/ (from eval beir --index-dir)")
    ap.add_argument("dataset", type=Path, help="the BEIR folder whose queries to run")
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    settings = load_settings()
    embedder = LocalEmbedder(settings.embed.model, settings.embed.batch_size, settings.embed.precision)
    store = LanceStore(args.index_dir / "lance", embedder.dim)
    retriever = Retriever(store, embedder, settings.retrieve)
    queries = list(load_beir(args.dataset).queries.values())[: args.queries]
    for text in queries[:10]:
        for mode in MODES:
            retriever.search(retriever.request(text, k=10, mode=mode))
    lat: dict[str, list[float]] = {m: [] for m in (*MODES, "embed")}
    for i, text in enumerate(queries):
        for j in range(len(MODES)):
            mode = MODES[(i + j) % len(MODES)]
            t = time.perf_counter()
            retriever.search(retriever.request(text, k=10, mode=mode))
            lat[mode].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        embedder.embed_query(text)
        lat["embed"].append((time.perf_counter() - t) * 1000)
    result = {name: {f"p{q}": round(percentile(xs, q), 2) for q in (50, 95, 99)} for name, xs in lat.items()}
    result["settings"] = {"chunks": store.count(), "queries": len(queries), "model": embedder.model_id,
                          "retrieve": settings.retrieve.model_dump()}
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
