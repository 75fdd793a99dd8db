"""ragline for bench/peers.py: default settings in a fresh, empty home; the dense, sparse and hybrid modes.

Runs in ragline's own virtualenv. The index is built as ``ragline eval beir`` builds it (``Indexer`` in write
batches of 256 documents, then ``store.finish()``), except that each document's text is title + ". " + text
like every other system here (``eval beir`` joins them with a blank line). Queries go through
``Retriever.search`` with ``aggregate="document"`` and k = depth, as ``eval beir`` does.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import _common as c

SYSTEM = "ragline"
WRITE_BATCH = 256  # documents per Indexer.index call, as ragline.evaluate.beir.index_corpus


def main() -> int:
    args = c.parse_args()
    load_start = [round(x, 2) for x in os.getloadavg()]
    records, queries = c.load_work(args.work)

    from ragline.app import Engine
    from ragline.config import load_settings
    from ragline.ingest.indexer import Indexer, record_fields
    from ragline.retrieve.search import Retriever, SearchRequest
    from ragline.store.base import DocRecord
    from ragline.types import Document, Section, content_hash

    with tempfile.TemporaryDirectory(prefix="ragline-peers-") as tmp:
        home = Path(tmp)
        # a fresh home: defaults (+ RAGLINE_* environment), no config.toml, an empty embedding cache
        settings = load_settings({}, home=home)
        if settings.embed.model.startswith("bundled:"):
            from ragline.embed.local import bundled_model_path

            if bundled_model_path().resolve() != args.model.resolve():
                raise SystemExit(f"ragline's bundled model {bundled_model_path()} is not {args.model}")
        engine = Engine(settings)
        t = time.perf_counter()
        embedder = engine.embedder
        model_load_s = time.perf_counter() - t
        embedder.embed_documents(c.warmup_texts(records))  # untimed warm-up, straight to the model
        c.log(SYSTEM, f"model {embedder.model_id} loaded in {model_load_s:.1f}s; ingesting {len(records)} documents")

        rss = c.RssPeak()
        state: dict = {}

        def ingest() -> dict:
            store = engine.open_store(home / "lance")
            indexer = Indexer(store, embedder, engine.cache, engine.plan)
            chunks = embedded = 0
            batch: list = []

            def flush() -> None:
                nonlocal chunks, embedded
                r = indexer.index(batch)
                chunks, embedded = chunks + r.chunks, embedded + r.embedded
                batch.clear()

            for rec in records:
                text = c.doc_text(rec)
                title = (rec.get("title") or "").strip()
                source = f"beir:{rec['id']}"
                doc = Document(source=source, type="text", text=text, sections=(Section(0, len(text)),),
                               metadata={"title": title})
                row = DocRecord(doc_id=rec["id"], source=source, root="beir", type="text",
                                file_hash=content_hash(text), size=len(text), mtime=0.0, fingerprint="",
                                n_chunks=0, **record_fields(doc))
                batch.append((doc, row))
                if len(batch) >= WRITE_BATCH:
                    flush()
            if batch:
                flush()
            store.finish()
            state["store"] = store
            return {"chunks": chunks, "embedded": embedded}

        ing = c.timed_ingest(ingest)
        ing.update(documents=len(records), model_load_seconds=round(model_load_s, 3),
                   docs_per_s=round(len(records) / ing["seconds"], 3), rss_peak_mb=rss.stop())
        c.log(SYSTEM, f"ingest {ing['seconds']:.1f}s, {ing['docs_per_s']:.1f} docs/s, {ing['chunks']} chunks")

        retriever = Retriever(state["store"], embedder, settings.retrieve)

        def mode(m: str):
            def search(text: str) -> list[str]:
                hits = retriever.search(SearchRequest(text, k=args.depth, mode=m, aggregate="document"))
                return [h.chunk.doc_id for h in hits]
            return search

        modes = {"dense": mode("dense"), "sparse": mode("sparse"), "hybrid": mode("hybrid")}
        rerank = os.environ.get("RAGLINE_PEERS_RERANK")
        if rerank:  # bench/peers.py --ragline-rerank METHOD: the hybrid list reranked
            reranked = Engine(load_settings({"rerank": {"method": rerank}}, home=home), embedder=embedder,
                              store=state["store"]).retriever

            def search_reranked(text: str) -> list[str]:
                hits = reranked.search(SearchRequest(text, k=args.depth, mode="hybrid", aggregate="document"))
                return [h.chunk.doc_id for h in hits]

            modes["hybrid+rerank"] = search_reranked
        results = c.run_queries(SYSTEM, modes, queries, args.warmup)

    r, ch, e = settings.retrieve, settings.chunk, settings.embed
    c.write(args.out, {
        "system": SYSTEM, "loadavg_start": load_start, "ingest": ing, "modes": results,
        "versions": c.versions("ragline", "torch", "sentence-transformers", "transformers", "lancedb", "pylance",
                               "numpy"),
        "settings": {
            "embedder": {"model_id": embedder.model_id, "precision": e.precision,
                         "bf16": bool(getattr(embedder, "bf16", False)), "batch_size": e.batch_size},
            "chunking": {"strategy": ch.strategy, "size_tokens": ch.size, "overlap": ch.overlap,
                         "title_prefix": ch.title_prefix, "truncation": "none (chunks fit the model window)"},
            "retrieve": {"fusion": r.fusion, "dense_weight": r.dense_weight, "candidates": r.candidates,
                         "k": args.depth, "aggregate": "document", "ann_min_rows": r.ann_min_rows},
            "store": "LanceDB on local disk (vectors exact below ann_min_rows, BM25 = Lance full-text index)",
            **c.torch_info(),
        },
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
