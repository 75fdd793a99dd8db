"""Pseudo-relevance feedback: query expansion that needs no LLM.

The original request is searched once; its top ``feedback`` passages are taken as relevant, and
the content words most of them share, absent from the question, are added to the question for a
second search on the sparse (BM25) side. The two hit lists are fused by reciprocal rank, so the
original ranking still counts and an expansion that drifts off topic cannot replace it.

Term choice, stated plainly: a term's weight is the number of feedback passages that contain it
(ties: the rank of the first passage that does, then the term), and a term must appear in at
least two of them when there are two or more. There are no corpus statistics here (the store
offers no cheap document frequency), so a word common everywhere can be chosen if the feedback
passages share it; requiring it in several passages and adding only a few terms keeps that small.
The feedback passages come from the request itself, with its filter and principals, so the
added terms come only from text the caller may read.
"""

from __future__ import annotations

import re
from typing import Sequence

from ragline.text import content_words
from ragline.transform.base import FirstPass, Rewrite, unchanged

_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9]*")


def expansion_terms(question: str, passages: Sequence[str], n_terms: int, min_share: int | None = None) -> list[str]:
    """The ``n_terms`` content words shared by the most of ``passages`` (best first) that are not
    in ``question``; a term needs ``min_share`` passages (default: 2, or 1 with one passage)."""
    asked = content_words(question)
    need = min_share if min_share is not None else (2 if len(passages) > 1 else 1)
    share: dict[str, int] = {}
    first: dict[str, int] = {}
    for rank, text in enumerate(passages):
        words = {w.lower() for w in _TOKEN.findall(text)} & content_words(text)
        for word in words:
            if len(word) < 3 or word in asked:
                continue
            share[word] = share.get(word, 0) + 1
            first.setdefault(word, rank)
    ranked = sorted((w for w, c in share.items() if c >= need), key=lambda w: (-share[w], first[w], w))
    return ranked[:n_terms]


class PseudoRelevanceFeedback:
    """Expands the sparse query with the top passages' shared terms (``transform.method = prf``)."""

    name = "prf"
    needs_llm = False

    def __init__(self, feedback: int = 3, n_terms: int = 5) -> None:
        if feedback < 1 or n_terms < 1:
            raise ValueError(f"transform.prf_feedback and transform.prf_terms must be at least 1, "
                             f"not {feedback} and {n_terms}")
        self.feedback, self.n_terms = feedback, n_terms

    def transform(self, question: str, first_pass: FirstPass) -> Rewrite:
        top = list(first_pass())[: self.feedback]
        if not top:
            return unchanged(question, self.name, "the first search found nothing to learn from")
        terms = expansion_terms(question, [h.chunk.text for h in top], self.n_terms)
        detail = {"method": self.name, "feedback": [h.chunk.id for h in top]}
        if not terms:
            return unchanged(question, self.name, "the top passages share no word the question lacks", detail)
        expanded = f"{question} {' '.join(terms)}"
        return Rewrite(question, (question,), sparse_texts=(expanded,), detail={**detail, "terms": terms})
