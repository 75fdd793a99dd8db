"""LlamaIndex for bench/peers.py, configured as its own documentation shows for hybrid retrieval.

Runs in the peers' virtualenv (bench/.peers-venv). The setup follows LlamaIndex's docs: the example
notebooks that its documentation site renders, in run-llama/llama_index under docs/docs/examples/retrievers/:
  - bm25_retriever.ipynb, section "Hybrid Retriever with BM25 + Chroma":
    ``QueryFusionRetriever([index.as_retriever(similarity_top_k=K),
    BM25Retriever.from_defaults(docstore=index.docstore, similarity_top_k=K)], num_queries=1, use_async=True)``,
    BM25 built with ``stemmer=Stemmer.Stemmer("english"), language="english"``;
  - reciprocal_rerank_fusion.ipynb, mode="reciprocal_rerank"
    (https://developers.llamaindex.ai/python/framework/integrations/retrievers/reciprocal_rerank_fusion/);
  - relative_score_dist_fusion.ipynb, mode="relative_score".
The vector index is the default ``VectorStoreIndex`` (in-memory SimpleVectorStore, default SentenceSplitter
node parser: 1,024-token chunks, 200 overlap) with ``HuggingFaceEmbedding`` on the same local MiniLM
directory (default batch size, normalize=True). ``num_queries=1`` turns LLM query generation off, so no LLM
is configured (``Settings.llm = None``). Documents carry no metadata, so the text embedded and BM25-indexed
is exactly title + ". " + text. Depth: similarity_top_k = depth for each retriever and the fusion.
"""

from __future__ import annotations

import os
import time

import _common as c

SYSTEM = "llamaindex"


def main() -> int:
    args = c.parse_args()
    load_start = [round(x, 2) for x in os.getloadavg()]
    records, queries = c.load_work(args.work)

    import Stemmer
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.retrievers.bm25 import BM25Retriever

    Settings.llm = None  # no LLM: num_queries=1 generates no extra queries
    t = time.perf_counter()
    embed_model = HuggingFaceEmbedding(model_name=str(args.model), device="cpu")
    Settings.embed_model = embed_model
    model_load_s = time.perf_counter() - t
    embed_model.get_text_embedding_batch(c.warmup_texts(records))  # untimed warm-up
    c.log(SYSTEM, f"model loaded in {model_load_s:.1f}s; ingesting {len(records)} documents")

    rss = c.RssPeak()
    state: dict = {}

    def ingest() -> dict:
        docs = [Document(text=c.doc_text(r), id_=r["id"]) for r in records]
        index = VectorStoreIndex.from_documents(docs, embed_model=embed_model)
        bm25 = BM25Retriever.from_defaults(docstore=index.docstore, similarity_top_k=args.depth,
                                           stemmer=Stemmer.Stemmer("english"), language="english")
        state.update(index=index, bm25=bm25)
        return {"chunks": len(index.docstore.docs)}

    ing = c.timed_ingest(ingest)
    ing.update(documents=len(records), model_load_seconds=round(model_load_s, 3),
               docs_per_s=round(len(records) / ing["seconds"], 3), rss_peak_mb=rss.stop())
    c.log(SYSTEM, f"ingest {ing['seconds']:.1f}s, {ing['docs_per_s']:.1f} docs/s, {ing['chunks']} nodes")

    index, bm25 = state["index"], state["bm25"]
    vector = index.as_retriever(similarity_top_k=args.depth)

    def fusion(mode: str) -> QueryFusionRetriever:
        return QueryFusionRetriever([index.as_retriever(similarity_top_k=args.depth), bm25],
                                    similarity_top_k=args.depth, num_queries=1, mode=mode, use_async=True)

    def ids(retriever):
        return lambda text: [n.node.ref_doc_id for n in retriever.retrieve(text)]

    modes = {"dense": ids(vector), "bm25": ids(bm25),
             "hybrid-rrf": ids(fusion("reciprocal_rerank")), "hybrid-relative": ids(fusion("relative_score"))}
    results = c.run_queries(SYSTEM, modes, queries, args.warmup)

    node_parser = Settings.node_parser
    c.write(args.out, {
        "system": SYSTEM, "loadavg_start": load_start, "ingest": ing, "modes": results,
        "versions": c.versions("llama-index-core", "llama-index-embeddings-huggingface",
                               "llama-index-retrievers-bm25", "bm25s", "PyStemmer", "torch",
                               "sentence-transformers", "transformers", "numpy"),
        "settings": {
            "embedder": {"class": "HuggingFaceEmbedding", "embed_batch_size": embed_model.embed_batch_size,
                         "max_seq_length": embed_model._model.max_seq_length, "precision": "fp32",
                         "normalize": True},
            "chunking": {"node_parser": type(node_parser).__name__,
                         "chunk_size": getattr(node_parser, "chunk_size", None),
                         "chunk_overlap": getattr(node_parser, "chunk_overlap", None),
                         "truncation": "nodes longer than the model window are truncated by the embedder"},
            "vector_store": "SimpleVectorStore (default, in memory, exact)",
            "bm25": {"class": "BM25Retriever (bm25s)", "stemmer": "english", "language": "english"},
            "fusion": {"class": "QueryFusionRetriever", "num_queries": 1, "use_async": True,
                       "modes": {"hybrid-rrf": "reciprocal_rerank", "hybrid-relative": "relative_score"}},
            "similarity_top_k": args.depth,
            **c.torch_info(),
        },
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
