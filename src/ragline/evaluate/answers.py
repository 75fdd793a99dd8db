"""`ragline eval answers QA.jsonl`: answer every question of a QA dataset from an index and score the
answers with a judge, plus document-level retrieval metrics where items name their relevant documents.

Pure: it takes the RAG flow (``ragline.rag.RAG``), a judge and the items, and returns an ``AnswersResult``.
Formulas are in docs/metrics.md ("Answer evaluation").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from ragline.evaluate.judge import AnswerJudgement
from ragline.evaluate.metrics import mrr_at_k, ndcg_at_k, percentile, recall_at_k
from ragline.evaluate.qa import QAItem
from ragline.rag import RAG
from ragline.types import Answer, Hit


class AnswerJudge(Protocol):
    """``judge(answer, contexts)``. A judge with ``reference_metrics = True`` (the LLM judge) is also given
    ``question=`` and ``reference=`` (the item's reference answer, None for unanswerable items) and
    reports answer relevance, context recall, unparsed verdicts and token usage."""

    label: str

    def judge(self, answer: Answer, contexts: Sequence[str]) -> AnswerJudgement: ...


ANSWER_METRICS = ("faithfulness", "hallucination_rate", "citation_accuracy", "context_precision",
                  "abstention_rate", "correct_abstention_rate", "wrong_abstention_rate")
REFERENCE_METRICS = ("answer_relevance", "context_recall")  # only from judges with reference_metrics


@dataclass(frozen=True)
class ItemRecord:
    id: str
    question: str
    answerable: bool
    answer: str
    grounded: bool
    generator: str
    sources: tuple[str, ...]  # each citation's source, in citation order
    judgement: AnswerJudgement
    latency_ms: float  # retrieval + answer, judging excluded
    ranked_documents: tuple[str, ...]  # distinct documents of the retrieved passages, best first
    retrieval: dict[str, float] | None = None  # None when the item names no relevant documents
    answer_usage: dict[str, Any] | None = None  # the answering LLM's tokens and cost; None offline

    def as_dict(self) -> dict[str, Any]:
        j = self.judgement
        return {
            "id": self.id, "question": self.question, "answerable": self.answerable, "answer": self.answer,
            "grounded": self.grounded, "generator": self.generator, "sources": list(self.sources),
            "latency_ms": round(self.latency_ms, 2), "ranked_documents": list(self.ranked_documents),
            "retrieval": self.retrieval, "answer_usage": self.answer_usage,
            "judgement": {
                "judge": j.judge, "faithfulness": j.faithfulness, "hallucinated": j.hallucinated,
                "citation_accuracy": j.citation_accuracy, "context_precision": j.context_precision,
                "abstained": j.abstained, "answer_relevance": j.answer_relevance,
                "context_recall": j.context_recall, "unparsed": j.unparsed, "usage": j.usage,
                "statements": [{"text": s.text, "support": s.support.score, "supported": s.supported,
                                "cited": list(s.cited), "citation_supported": s.citation_supported,
                                "best_sentence": s.support.best_sentence, "note": s.note} for s in j.statements],
            },
        }


@dataclass
class AnswersResult:
    judge: str
    k: int
    mode: str
    filter: str | None
    metrics: dict[str, float | None]  # ANSWER_METRICS; None where no item defines the value
    counts: dict[str, int]
    retrieval: dict[str, float] | None  # recall@k, mrr@k, ndcg@k means; None when no item has relevant_ids
    latency_ms: dict[str, float]  # p50, p95, p99 of retrieval + answer per question
    items: list[ItemRecord] = field(default_factory=list)
    usage: dict[str, Any] | None = None  # the judge's LLM tokens and cost; None for judges without an LLM
    answer_usage: dict[str, Any] | None = None  # the answering LLM's tokens and cost; None offline


def matches(relevant_id: str, doc_id: str, source: str) -> bool:
    """A relevant id names a document by its doc_id, its source, or the ending of its source path
    ("mars.html" matches "/home/me/corpus/mars.html", not "/home/me/corpus/old-mars.html")."""
    if relevant_id in (doc_id, source):
        return True
    src = source.replace("\\", "/")
    rid = relevant_id.replace("\\", "/").lstrip("/")
    return bool(rid) and src.endswith("/" + rid)


def ranked_documents(hits: Sequence[Hit]) -> list[tuple[str, str]]:
    """(doc_id, source) of each distinct document among ``hits``, in order of its best passage."""
    seen: dict[str, str] = {}
    for h in hits:
        seen.setdefault(h.chunk.doc_id, h.chunk.source)
    return list(seen.items())


def score_retrieval(docs: Sequence[tuple[str, str]], relevant_ids: Sequence[str], k: int) -> dict[str, float]:
    """recall@k, mrr@k and ndcg@k of the ranked documents, each relevant id counted once: a document
    is replaced by the first relevant id it matches, so the metrics in metrics.py apply unchanged."""
    relevant = list(dict.fromkeys(relevant_ids))
    ranked: list[str] = []
    for doc_id, source in docs:
        label = next((r for r in relevant if matches(r, doc_id, source)), None)
        key = label if label is not None else f"\0{doc_id}"  # never equal to a relevant id
        if key not in ranked:
            ranked.append(key)
    qrels = {r: 1 for r in relevant}
    return {f"recall@{k}": recall_at_k(ranked, qrels, k), f"mrr@{k}": mrr_at_k(ranked, qrels, k),
            f"ndcg@{k}": ndcg_at_k(ranked, qrels, k)}


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def evaluate_answers(items: Sequence[QAItem], rag: RAG, judge: AnswerJudge,
                     k: int = 5, mode: str | None = None, filter: str | None = None,
                     progress: Callable[[int], None] | None = None,
                     prices: tuple[float | None, float | None] = (None, None),
                     principals: tuple[str, ...] | None = None, strategy=None) -> AnswersResult:
    """Retrieve ``k`` passages for each question, answer from them, judge the answer against them.
    ``principals`` restricts every retrieval to what they may read (None: everything). With a
    ``strategy`` (agentic/) other than standard, it answers, and the answer is judged against the
    passages it was finally given."""
    records: list[ItemRecord] = []
    request_mode = mode
    for i, item in enumerate(items):
        t = time.perf_counter()
        ask = rag.request(item.question, k=k, mode=mode, filter=filter, principals=principals)
        request_mode = ask.search.mode
        if strategy is not None and strategy.name != "standard":
            from ragline.agentic.base import Steps

            answer = strategy.run(rag, ask, Steps())
            hits = list(answer.hits)
        else:
            hits = rag.retrieve(ask)
            answer = rag.answer(ask, hits)
        latency = (time.perf_counter() - t) * 1000
        contexts = [h.chunk.text for h in hits]
        if getattr(judge, "reference_metrics", False):
            judgement = judge.judge(answer, contexts, question=item.question,  # type: ignore[call-arg]
                                    reference=item.answer if item.answerable else None)
        else:
            judgement = judge.judge(answer, contexts)
        docs = ranked_documents(hits)
        records.append(ItemRecord(
            id=item.id, question=item.question, answerable=item.answerable, answer=answer.text,
            grounded=answer.grounded, generator=answer.generator,
            sources=tuple(c.chunk.source for c in answer.citations), judgement=judgement, latency_ms=latency,
            ranked_documents=tuple(s for _, s in docs),
            retrieval=score_retrieval(docs, item.relevant_ids, k) if item.relevant_ids else None,
            answer_usage=_priced(answer.usage, prices),
        ))
        if progress:
            progress(i + 1)
    return summarise(records, judge.label, k, request_mode or rag.retriever.settings.mode, filter,
                     reference_metrics=bool(getattr(judge, "reference_metrics", False)))


def summarise(records: list[ItemRecord], judge_label: str, k: int, mode: str, filter: str | None,
              reference_metrics: bool = False) -> AnswersResult:
    """Means over the items. Faithfulness and hallucination leave out answers whose every statement
    verdict was unparsed (LLM judge); ``reference_metrics`` adds REFERENCE_METRICS and the count of
    unparsed verdicts."""
    answered = [r for r in records if not r.judgement.abstained]
    unanswerable = [r for r in records if not r.answerable]
    answerable = [r for r in records if r.answerable]
    n = len(records)
    metrics: dict[str, float | None] = {
        "faithfulness": _mean([r.judgement.faithfulness for r in answered if r.judgement.faithfulness is not None]),
        "hallucination_rate": _mean([float(r.judgement.hallucinated) for r in answered
                                     if r.judgement.hallucinated is not None]),
        "citation_accuracy": _mean([r.judgement.citation_accuracy for r in answered
                                    if r.judgement.citation_accuracy is not None]),
        "context_precision": _mean([r.judgement.context_precision for r in answered
                                    if r.judgement.context_precision is not None]),
        "abstention_rate": _mean([float(r.judgement.abstained) for r in records]),
        "correct_abstention_rate": _mean([float(not r.grounded) for r in unanswerable]),
        "wrong_abstention_rate": _mean([float(not r.grounded) for r in answerable]),
    }
    with_rel = [r.retrieval for r in records if r.retrieval is not None]
    retrieval = None
    if with_rel:
        retrieval = {name: sum(v[name] for v in with_rel) / len(with_rel) for name in with_rel[0]}
    lat = [r.latency_ms for r in records]
    counts = {"items": n, "answered": len(answered), "abstained": n - len(answered),
              "answerable": len(answerable), "unanswerable": len(unanswerable), "with_relevant_ids": len(with_rel)}
    if reference_metrics:
        metrics["answer_relevance"] = _mean([r.judgement.answer_relevance for r in answered
                                             if r.judgement.answer_relevance is not None])
        metrics["context_recall"] = _mean([r.judgement.context_recall for r in records
                                           if r.judgement.context_recall is not None])
        counts["unparsed_verdicts"] = sum(r.judgement.unparsed for r in records)
    usages = [r.judgement.usage for r in records if r.judgement.usage is not None]
    answering = [r.answer_usage for r in records if r.answer_usage is not None]
    return AnswersResult(judge_label, k, mode, filter, metrics, counts, retrieval,
                         {"p50": percentile(lat, 50), "p95": percentile(lat, 95), "p99": percentile(lat, 99)},
                         records,
                         usage=total_usage(usages, n) if usages else None,
                         answer_usage=total_usage(answering, n) if answering else None)


def _priced(usage: Any, prices: tuple[float | None, float | None]) -> dict[str, Any] | None:
    """An answer's LLM usage with its estimated cost (None: no price set, or a count missing)."""
    if usage is None:
        return None
    from ragline.evaluate.llm_judge import estimate_cost

    out = dict(usage)
    out["cost"] = estimate_cost(out.get("prompt_tokens"), out.get("completion_tokens"), *prices)
    return out


def total_usage(usages: Sequence[dict[str, Any]], n_items: int) -> dict[str, Any]:
    """Sum per-item LLM usage (``calls``, ``prompt_tokens``, ``completion_tokens``, ``cost``) and give
    per-query means. A total is None when some item lacks it (the endpoint sent no ``usage``, or no
    price is set), so an unknown is never reported as 0."""

    def total(key: str) -> float | int | None:
        values = [u.get(key) for u in usages]
        return None if len(usages) < n_items or any(v is None for v in values) else sum(values)  # type: ignore[misc]

    out: dict[str, Any] = {"calls": sum(u.get("calls", 0) for u in usages)}
    for key in ("prompt_tokens", "completion_tokens", "cost"):
        t = total(key)
        out[key] = t
        out[f"{key}_per_query"] = None if t is None or not n_items else t / n_items
    return out
