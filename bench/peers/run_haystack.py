"""Haystack for bench/peers.py, configured as its own documentation shows for hybrid retrieval.

Runs in the peers' virtualenv (bench/.peers-venv). The setup follows Haystack's docs:
  - Tutorial "Creating a Hybrid Retrieval Pipeline" (https://haystack.deepset.ai/tutorials/33_hybrid_retrieval,
    deepset-ai/haystack-tutorials tutorials/33_Hybrid_Retrieval.ipynb): ``InMemoryDocumentStore()``; an
    indexing pipeline DocumentSplitter(split_by="word", ...) -> SentenceTransformersDocumentEmbedder ->
    DocumentWriter; a query pipeline SentenceTransformersTextEmbedder -> InMemoryEmbeddingRetriever, plus
    InMemoryBM25Retriever, both into a DocumentJoiner. The tutorial splits into 512 words and says to lower
    ``split_length`` to the model's token limit when the model is all-MiniLM-L6-v2 (256 word pieces): we
    use 200 words (DocumentSplitter's own default) with the tutorial's 32-word overlap.
  - The tutorial joins with the default ``concatenate`` and then reranks with a cross-encoder
    (TransformersSimilarityRanker, BAAI/bge-reranker-base). A cross-encoder is a different, far slower
    class of system that no other system here runs, and its model cannot be fetched here, so the joiner
    instead uses ``join_mode="reciprocal_rank_fusion"``, the mode the DocumentJoiner page describes for
    hybrid retrieval (https://docs.haystack.deepset.ai/docs/documentjoiner).
  - Haystack 3.x moved the SentenceTransformers embedders to the ``sentence-transformers-haystack``
    integration (https://haystack.deepset.ai/integrations/sentence-transformers/).
Store defaults are kept (BM25L, dot-product similarity; MiniLM's vectors are normalised, so dot = cosine),
as are the embedders' (batch 32, fp32). Depth: top_k = depth for both retrievers and the joiner.
"""

from __future__ import annotations

import os
import time

import _common as c

SYSTEM = "haystack"
SPLIT_WORDS, SPLIT_OVERLAP = 200, 32


def main() -> int:
    args = c.parse_args()
    load_start = [round(x, 2) for x in os.getloadavg()]
    records, queries = c.load_work(args.work)

    from haystack import Document, Pipeline
    from haystack.components.joiners import DocumentJoiner
    from haystack.components.preprocessors import DocumentSplitter
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever, InMemoryEmbeddingRetriever
    from haystack.components.writers import DocumentWriter
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack_integrations.components.embedders.sentence_transformers import (
        SentenceTransformersDocumentEmbedder, SentenceTransformersTextEmbedder)

    model = str(args.model)
    store = InMemoryDocumentStore()
    splitter = DocumentSplitter(split_by="word", split_length=SPLIT_WORDS, split_overlap=SPLIT_OVERLAP)
    doc_embedder = SentenceTransformersDocumentEmbedder(model=model, progress_bar=False)
    t = time.perf_counter()
    doc_embedder.warm_up()  # loads the model; untimed, as for every system
    model_load_s = time.perf_counter() - t
    doc_embedder.run([Document(content=x) for x in c.warmup_texts(records)])  # untimed warm-up
    c.log(SYSTEM, f"model loaded in {model_load_s:.1f}s; ingesting {len(records)} documents")

    indexing = Pipeline()
    indexing.add_component("document_splitter", splitter)
    indexing.add_component("document_embedder", doc_embedder)
    indexing.add_component("document_writer", DocumentWriter(store))
    indexing.connect("document_splitter", "document_embedder")
    indexing.connect("document_embedder", "document_writer")

    rss = c.RssPeak()

    def ingest() -> dict:
        docs = [Document(content=c.doc_text(r), meta={"doc_id": r["id"]}) for r in records]
        out = indexing.run({"document_splitter": {"documents": docs}})
        return {"chunks": out["document_writer"]["documents_written"]}

    ing = c.timed_ingest(ingest)
    ing.update(documents=len(records), model_load_seconds=round(model_load_s, 3),
               docs_per_s=round(len(records) / ing["seconds"], 3), rss_peak_mb=rss.stop())
    c.log(SYSTEM, f"ingest {ing['seconds']:.1f}s, {ing['docs_per_s']:.1f} docs/s, {ing['chunks']} chunks")

    def text_embedder():
        e = SentenceTransformersTextEmbedder(model=model, progress_bar=False)
        e.warm_up()
        return e

    hybrid = Pipeline()
    hybrid.add_component("text_embedder", text_embedder())
    hybrid.add_component("embedding_retriever", InMemoryEmbeddingRetriever(store, top_k=args.depth))
    hybrid.add_component("bm25_retriever", InMemoryBM25Retriever(store, top_k=args.depth))
    hybrid.add_component("document_joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=args.depth))
    hybrid.connect("text_embedder", "embedding_retriever")
    hybrid.connect("bm25_retriever", "document_joiner")
    hybrid.connect("embedding_retriever", "document_joiner")

    dense = Pipeline()
    dense.add_component("text_embedder", text_embedder())
    dense.add_component("embedding_retriever", InMemoryEmbeddingRetriever(store, top_k=args.depth))
    dense.connect("text_embedder", "embedding_retriever")

    bm25 = Pipeline()
    bm25.add_component("bm25_retriever", InMemoryBM25Retriever(store, top_k=args.depth))

    def ids(docs) -> list[str]:
        return [d.meta["doc_id"] for d in docs]

    modes = {
        "dense": lambda q: ids(dense.run({"text_embedder": {"text": q}})["embedding_retriever"]["documents"]),
        "bm25": lambda q: ids(bm25.run({"bm25_retriever": {"query": q}})["bm25_retriever"]["documents"]),
        "hybrid-rrf": lambda q: ids(hybrid.run({"text_embedder": {"text": q}, "bm25_retriever": {"query": q}})
                                    ["document_joiner"]["documents"]),
    }
    results = c.run_queries(SYSTEM, modes, queries, args.warmup)

    c.write(args.out, {
        "system": SYSTEM, "loadavg_start": load_start, "ingest": ing, "modes": results,
        "versions": c.versions("haystack-ai", "sentence-transformers-haystack", "torch", "sentence-transformers",
                               "transformers", "numpy"),
        "settings": {
            "embedder": {"class": "SentenceTransformersDocumentEmbedder/TextEmbedder", "batch_size": 32,
                         "precision": "float32", "normalize_embeddings": False,
                         "max_seq_length": "model default (256)"},
            "chunking": {"class": "DocumentSplitter", "split_by": "word", "split_length": SPLIT_WORDS,
                         "split_overlap": SPLIT_OVERLAP,
                         "truncation": "splits longer than the model window are truncated by the embedder"},
            "document_store": {"class": "InMemoryDocumentStore", "bm25_algorithm": "BM25L (default)",
                               "embedding_similarity_function": "dot_product (default)"},
            "joiner": {"join_mode": "reciprocal_rank_fusion", "top_k": args.depth},
            "top_k": args.depth,
            **c.torch_info(),
        },
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
