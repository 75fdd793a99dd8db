"""What the HTTP API reads and writes: the request bodies (pydantic, so FastAPI validates them
and describes them in the OpenAPI document) and the JSON shapes of documents, hits and answers."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from ragline.serve.collections import Collection
from ragline.store.base import DocRecord
from ragline.types import Answer, Hit


# --------------------------------------------------------------------------- request bodies
class TenantIn(BaseModel):
    name: str


class KeyIn(BaseModel):
    name: str = ""
    principals: list[str] = Field(default_factory=list, description="e.g. ['user:alice', 'group:eng']")
    kind: Literal["tenant", "upstream"] = Field(
        "tenant", description="'upstream': a trusted service of this tenant that states each request's user "
                              "principals in X-Ragline-Principals (docs/security.md)")


class CollectionIn(BaseModel):
    name: str


class RegisterIn(BaseModel):
    paths: list[str] = Field(min_length=1, description="server-side files or folders (admin key only)")
    acl: list[str] | None = None


class RetrievalIn(BaseModel):
    mode: Literal["hybrid", "dense", "sparse"] | None = None  # default: the server's retrieve.mode
    filter: str | None = Field(None, max_length=2000, description="a filter expression (docs/filters.md)")
    rerank: bool | None = Field(None, description="false skips the server's reranker ([rerank]); true requires one")
    rerank_depth: int | None = Field(None, ge=1, le=1000, description="candidates reranked [default: rerank.depth]")
    trace: bool = Field(False, description="return each stage run: candidates in and out, time, scores")
    transform: Literal["none", "hyde", "multi-query", "decompose", "step-back", "prf"] | None = Field(
        None, description="query transformation [default: the server's transform.method]; all but prf need an LLM")


class QueryIn(RetrievalIn):
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(10, ge=1, le=100)
    documents: bool = False


class AskIn(RetrievalIn):
    question: str = Field(min_length=1, max_length=4000)
    k: int = Field(5, ge=1, le=50)
    stream: bool = False
    strategy: Literal["standard", "corrective", "self-check", "agent"] | None = Field(
        None, description="how the answer is made [default: the server's answer.strategy]; the steps come back "
                          "as 'steps' (SSE: 'step' events); agent needs an LLM")


class EvalIn(BaseModel):
    items: list[dict[str, Any]] = Field(min_length=1, max_length=1000,
                                        description="QA items: question, answer, relevant_ids, contexts, answerable")
    k: int = Field(5, ge=1, le=50)
    mode: Literal["hybrid", "dense", "sparse"] | None = None


# --------------------------------------------------------------------------- serialisers
def doc_json(col: Collection, rec: DocRecord, text: bool = False) -> dict:
    out = {"id": rec.doc_id, "name": col.display(rec.source), "type": rec.type, "title": rec.title,
           "year": rec.year, "chunks": rec.n_chunks, "size": rec.size, "acl": list(rec.acl),
           "updated": rec.mtime}
    if '"injection"' in rec.metadata and (json.loads(rec.metadata).get("injection") or {}).get("flagged"):
        out["flags"] = ["instruction-like text"]  # aimed at a model: docs/security-injection.md
    if text:
        out["text"] = rec.text
        out["sections"] = json.loads(rec.sections)
    return out


def hit_json(col: Collection, rank: int, hit: Hit) -> dict:
    c = hit.chunk
    return {"rank": rank, "score": round(hit.score, 6), "scores": {k: round(v, 6) for k, v in hit.scores.items()},
            "document_id": c.doc_id, "chunk_id": c.id, "source": col.display(c.source), "text": c.text,
            "span": [c.start, c.end], "page": c.page, "heading_path": list(c.heading_path)}


def answer_json(col: Collection, question: str, answer: Answer) -> dict:
    return {"question": question, "answer": answer.text, "grounded": answer.grounded, "generator": answer.generator,
            "citations": [{"n": c.n, "document_id": c.chunk.doc_id, "chunk_id": c.chunk.id,
                           "source": col.display(c.chunk.source),
                           "page": c.page if c.page is not None else c.chunk.page,
                           "heading_path": list(c.heading_path or c.chunk.heading_path),
                           "span": [c.start, c.end] if c.start is not None else [c.chunk.start, c.chunk.end],
                           "snippet": c.snippet} for c in answer.citations]}
