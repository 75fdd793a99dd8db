"""Chunk, embed (through the cache) and store a batch of parsed documents."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from typing import Sequence

from ragline.embed.base import Embedder, Tokenizer
from ragline.embed.cache import EmbeddingCache, embed_with_cache
from ragline.ingest.chunkers import ChunkPlan, chunk_document, embed_text
from ragline.store.base import DocRecord, Store
from ragline.types import Chunk, Document, Section


@dataclass
class BatchResult:
    chunks: int = 0
    embedded: int = 0  # texts sent to the model
    cached: int = 0  # texts whose vectors came from the cache
    embed_seconds: float = 0.0


def document_from_record(rec: DocRecord) -> Document:
    """Rebuild the parsed document stored with a record (re-chunking needs no re-parsing)."""
    sections = tuple(
        Section(start=s["start"], end=s["end"], page=s.get("page"), heading_path=tuple(s.get("heading_path", ())),
                kind=s.get("kind", "text"))
        for s in json.loads(rec.sections)
    )
    return Document(source=rec.source, type=rec.type, text=rec.text, sections=sections,
                    metadata=json.loads(rec.metadata))


def record_fields(doc: Document) -> dict:
    """The parts of a DocRecord that come from the parsed document. A document whose text looks like
    instructions aimed at a model gets ``metadata["injection"]`` (ingest/injection.py); the scan is
    redone on every (re)index, so a stale flag does not survive an edit."""
    from ragline.ingest.injection import detect

    year = doc.metadata.get("year")
    metadata = {k: v for k, v in doc.metadata.items() if k != "injection"}
    found = detect(doc.text)
    if found.flagged:
        metadata["injection"] = found.as_metadata()
    return {
        "title": doc.title,
        "year": int(year) if isinstance(year, (int, float)) or (isinstance(year, str) and year.isdigit()) else None,
        "text": doc.text,
        "sections": json.dumps([asdict(s) for s in doc.sections]),
        "metadata": json.dumps(metadata, default=str),
    }


def chunk_record(doc: Document, rec: DocRecord, plan: ChunkPlan, tokenizer: Tokenizer, max_tokens: int,
                 fingerprint: str) -> tuple[DocRecord, list[Chunk]]:
    """``Indexer.chunk`` without an embedder: what a distributed worker runs with the model's
    tokenizer alone (ingest/distributed.py)."""
    chunks = chunk_document(doc, rec.doc_id, plan, tokenizer, max_tokens)
    return replace(rec, n_chunks=len(chunks), fingerprint=fingerprint), list(chunks)


class Indexer:
    def __init__(self, store: Store, embedder: Embedder, cache: EmbeddingCache, plan: ChunkPlan) -> None:
        self.store, self.embedder, self.cache, self.plan = store, embedder, cache, plan
        self.fingerprint = plan.fingerprint(embedder.model_id)

    def index(self, items: Sequence[tuple[Document, DocRecord]]) -> BatchResult:
        """Replace the chunks of each (document, record) pair; one atomic commit for the batch."""
        return self.write([self.chunk(doc, rec) for doc, rec in items])

    def chunk(self, doc: Document, rec: DocRecord) -> tuple[DocRecord, list[Chunk]]:
        """The chunks of one document and its record stamped with their count and this index's
        fingerprint (a separate step, so a caller can bound batches by chunks before embedding)."""
        return chunk_record(doc, rec, self.plan, self.embedder.tokenizer, self.embedder.max_tokens, self.fingerprint)

    def write(self, prepared: Sequence[tuple[DocRecord, Sequence[Chunk]]]) -> BatchResult:
        """Embed (through the cache) and store chunked documents; one atomic commit for all of them."""
        records = [rec for rec, _ in prepared]
        chunks = [c for _, doc_chunks in prepared for c in doc_chunks]
        texts = [embed_text(c) for c in chunks]
        t0 = time.perf_counter()
        vectors, fresh = embed_with_cache(self.embedder, self.cache, texts)
        seconds = time.perf_counter() - t0
        self.store.write(records, chunks, vectors, texts)
        return BatchResult(chunks=len(chunks), embedded=fresh, cached=len(texts) - fresh, embed_seconds=seconds)
