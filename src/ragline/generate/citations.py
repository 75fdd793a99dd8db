"""Pinpoint where each citation's passage sits: its own page and heading path."""

from __future__ import annotations

import json
from dataclasses import replace
from ragline.store.base import Store
from ragline.types import Answer, Citation


def _locate(sections: list[dict], pos: int) -> dict | None:
    for sec in sections:
        if sec["start"] <= pos < sec["end"]:
            return sec
    return None


def pinpoint(answer: Answer, store: Store) -> Answer:
    """Resolve page/heading of each citation's snippet from its document's stored sections."""
    todo = [c for c in answer.citations if c.start is not None]
    if not todo:
        return answer
    records = {r.doc_id: r for r in store.get_documents(sorted({c.chunk.doc_id for c in todo}))}
    fixed: list[Citation] = []
    for c in answer.citations:
        rec = records.get(c.chunk.doc_id)
        sec = _locate(json.loads(rec.sections), c.start) if rec and c.start is not None else None
        if sec is not None:
            c = replace(c, page=sec.get("page"), heading_path=tuple(sec.get("heading_path") or ()))
        fixed.append(c)
    return replace(answer, citations=tuple(fixed))

