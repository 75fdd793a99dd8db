"""`ragline eval beir DIR`: build a fresh index of a BEIR-format folder and score retrieval."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ragline.evaluate.metrics import (average_precision_at_k, hit_rate_at_k, mrr_at_k, ndcg_at_k, percentile,
                                      precision_at_k, recall_at_k)
from ragline.ingest.indexer import Indexer, record_fields
from ragline.retrieve.search import Retriever, SearchRequest
from ragline.store.base import DocRecord
from ragline.transform.base import QueryTransform
from ragline.types import Document, Section, content_hash


class DatasetError(Exception):
    """The folder is not a usable BEIR dataset; the message names the file and line."""


@dataclass
class BeirDataset:
    path: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    n_docs: int

    def corpus(self) -> Iterator[dict]:
        with open(self.path / "corpus.jsonl", encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError as exc:
                        raise DatasetError(f"{self.path / 'corpus.jsonl'}:{line_no}: invalid JSON ({exc})") from None


def load_beir(path: Path, split: str = "test") -> BeirDataset:
    path = Path(path)
    need = beir_files(path, split)
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise DatasetError(f"not a BEIR folder, missing: {', '.join(missing)}")
    qrels: dict[str, dict[str, int]] = {}
    with open(need[2], encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if line_no == 1 and parts[0] == "query-id":
                continue
            if not line.strip():
                continue
            if len(parts) != 3 or not parts[2].strip().lstrip("-").isdigit():
                raise DatasetError(f"{need[2]}:{line_no}: expected 'query-id<TAB>corpus-id<TAB>integer score'")
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    queries = {}
    with open(need[1], encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    q = json.loads(line)
                    qid, text = str(q["_id"]), str(q["text"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise DatasetError(f"{need[1]}:{line_no}: expected a JSON object with _id and text "
                                       f"({type(exc).__name__}: {exc})") from None
                if qid in qrels:
                    queries[qid] = text
    with open(need[0], encoding="utf-8") as f:
        n_docs = sum(1 for line in f if line.strip())
    return BeirDataset(path, queries, {q: qrels[q] for q in queries}, n_docs)


def beir_files(path: Path, split: str = "test") -> list[Path]:
    """The three files a BEIR folder is made of, in a fixed order."""
    path = Path(path)
    return [path / "corpus.jsonl", path / "queries.jsonl", path / "qrels" / f"{split}.tsv"]


def dataset_fingerprint(path: Path, split: str = "test") -> str:
    """sha256 over the bytes of corpus.jsonl, queries.jsonl and qrels/<split>.tsv, concatenated in that
    order; the first 16 hex digits. Same as ``cat corpus.jsonl queries.jsonl qrels/test.tsv | sha256sum``."""
    h = hashlib.sha256()
    for f in beir_files(path, split):
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


@dataclass
class SlicedDataset(BeirDataset):
    """A BEIR dataset whose corpus holds only the documents in ``keep`` (corpus order is kept)."""

    keep: frozenset[str] = frozenset()

    def corpus(self) -> Iterator[dict]:
        for row in super().corpus():
            if str(row.get("_id")) in self.keep:
                yield row


def slice_corpus(ds: BeirDataset, max_docs: int) -> SlicedDataset:
    """Keep every document judged for ``ds.queries`` (any grade) plus the first ``max_docs`` other
    documents in corpus order: deterministic, and every judged document can still be found."""
    judged = {d for q in ds.queries for d in ds.qrels.get(q, {})}
    keep: set[str] = set()
    others = 0
    for row in ds.corpus():
        doc_id = str(row.get("_id"))
        if doc_id in judged:
            keep.add(doc_id)
        elif others < max_docs and doc_id not in keep:
            keep.add(doc_id)
            others += 1
    return SlicedDataset(ds.path, dict(ds.queries), {q: ds.qrels[q] for q in ds.queries}, len(keep),
                         frozenset(keep))


def beir_document(row: dict) -> tuple[Document, DocRecord]:
    title, body = (row.get("title") or "").strip(), (row.get("text") or "").strip()
    text = f"{title}\n\n{body}" if title and body else (title or body)
    source = f"beir:{row['_id']}"
    doc = Document(source=source, type="text", text=text, sections=(Section(0, len(text)),),
                   metadata={"title": title})
    rec = DocRecord(doc_id=str(row["_id"]), source=source, root="beir", type="text",
                    file_hash=content_hash(text), size=len(text), mtime=0.0, fingerprint="", n_chunks=0,
                    **record_fields(doc))
    return doc, rec


def index_corpus(ds: BeirDataset, indexer: Indexer, batch: int = 256,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    t0 = time.perf_counter()
    chunks = embedded = 0
    embed_s = 0.0
    items: list = []
    done = 0

    def flush() -> None:
        nonlocal chunks, embedded, embed_s, done
        r = indexer.index(items)
        chunks, embedded, embed_s = chunks + r.chunks, embedded + r.embedded, embed_s + r.embed_seconds
        done += len(items)
        items.clear()
        if progress:
            progress(done, chunks)

    for row in ds.corpus():
        items.append(beir_document(row))
        if len(items) >= batch:
            flush()
    if items:
        flush()
    indexer.store.finish()
    seconds = time.perf_counter() - t0
    return {"documents": done, "chunks": chunks, "embedded": embedded, "seconds": seconds,
            "embed_seconds": embed_s, "docs_per_s": done / seconds if seconds else 0.0}


@dataclass
class ModeResult:
    mode: str
    metrics: dict[str, float]
    latency_ms: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)  # query id -> metric -> value


METRICS = ("ndcg@10", "recall@10", "recall@100", "precision@10", "hit_rate@10", "mrr@10", "map@100")


def score_query(ranked: Sequence[str], rel: dict[str, int]) -> dict[str, float]:
    """Every metric in ``METRICS`` for one query's ranked document ids."""
    return {
        "ndcg@10": ndcg_at_k(ranked, rel, 10),
        "recall@10": recall_at_k(ranked, rel, 10),
        "recall@100": recall_at_k(ranked, rel, 100),
        "precision@10": precision_at_k(ranked, rel, 10),
        "hit_rate@10": hit_rate_at_k(ranked, rel, 10),
        "mrr@10": mrr_at_k(ranked, rel, 10),
        "map@100": average_precision_at_k(ranked, rel, 100),
    }


def evaluate(ds: BeirDataset, retriever: Retriever, modes: Sequence[str], depth: int = 100,
             progress: Callable[[str, int], None] | None = None, transform: QueryTransform | None = None
             ) -> list[ModeResult]:
    """Each mode over every query (documents ranked by their best chunk, ``depth`` deep); with
    ``transform``, each query is rewritten first, as ``ragline ask --transform`` does."""
    from ragline.retrieve.multi import transformed_search

    results = []
    for mode in modes:
        lat: list[float] = []
        per_query: dict[str, dict[str, float]] = {}
        for i, (qid, text) in enumerate(ds.queries.items()):
            t = time.perf_counter()
            req = SearchRequest(text, k=depth, mode=mode, aggregate="document")  # type: ignore[arg-type]
            hits = retriever.search(req) if transform is None else transformed_search(transform, retriever, req)[0]
            lat.append((time.perf_counter() - t) * 1000)
            per_query[qid] = score_query([h.chunk.doc_id for h in hits], ds.qrels[qid])
            if progress:
                progress(mode, i + 1)
        n = max(1, len(per_query))
        means = {name: sum(q[name] for q in per_query.values()) / n for name in METRICS}
        results.append(ModeResult(mode, means,
                                  {"p50": percentile(lat, 50), "p95": percentile(lat, 95),
                                   "p99": percentile(lat, 99)}, per_query))
    return results
