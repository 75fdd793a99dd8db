"""A reranker that needs no model beyond the bundled embedding model.

Each candidate gets up to three signals, each min-max normalised over the candidate list:

- passage cosine: the query against the whole passage (a passage longer than the model window is
  cut into windows of whole sentences; its best window counts),
- max sentence cosine: the query against the passage's best sentence (``ragline.text.sentence_spans``;
  a sentence longer than the window is cut at token offsets), which finds the one sentence that
  answers a claim inside an abstract that is mostly about something else,
- the first-stage score (``prior``), when the caller passes it.

Both cosines use the query after dense pseudo-relevance feedback (the query vector plus the mean
passage vector of the first-stage top 3). The score is their weighted sum; the weights were chosen by measurement on SciFact only
(bench/rerank_lab.py, /work/notes/minilm-lab.md). Every vector goes through the embedding cache when
one is given, so an indexed passage or a sentence seen before costs a lookup, not a model call.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ragline.embed.base import Embedder
from ragline.embed.cache import EmbeddingCache, embed_with_cache
from ragline.rerank.base import RerankError, Scored, ordered
from ragline.text import sentence_spans

# margin below the window: a substring cut at token offsets can re-tokenise a few pieces longer
_MARGIN = 8


def fit_window(text: str, count: Callable[[str], int], offsets: Callable[[str], list[tuple[int, int]]],
               max_tokens: int) -> list[str]:
    """``text`` as pieces that each fit ``max_tokens`` word pieces: itself when it fits, else cuts at
    token offsets (re-checked, halved again if a piece still does not fit). Never raises on length."""
    text = text.strip()
    if not text:
        return []
    if count(text) <= max_tokens:
        return [text]
    spans = offsets(text)
    step = max(1, max_tokens - _MARGIN)
    cuts = [spans[i][0] for i in range(step, len(spans), step)]
    if not cuts:  # one giant piece the tokenizer will not split: halve by characters
        cuts = [len(text) // 2]
    bounds = [0, *cuts, len(text)]
    out: list[str] = []
    for a, b in zip(bounds, bounds[1:]):
        part = text[a:b]
        if len(part) >= len(text):  # no progress possible (should not happen): cut by characters
            half = max(1, len(text) // 2)
            out += fit_window(text[:half], count, offsets, max_tokens) + fit_window(text[half:], count, offsets, max_tokens)
            return out
        out += fit_window(part, count, offsets, max_tokens)
    return out


def sentences(text: str, count: Callable[[str], int], offsets: Callable[[str], list[tuple[int, int]]],
              max_tokens: int) -> list[str]:
    """The sentences of ``text``, each cut to fit the model window."""
    out: list[str] = []
    for a, b in sentence_spans(text):
        out += fit_window(text[a:b], count, offsets, max_tokens)
    return out


def windows(sents: Sequence[str], count: Callable[[str], int], max_tokens: int) -> list[str]:
    """Whole sentences packed greedily into windows of at most ``max_tokens`` word pieces."""
    out, cur, used = [], [], 0
    for s, n in zip(sents, (count(s) for s in sents)):
        if cur and used + n + 1 > max_tokens:
            out.append(" ".join(cur))
            cur, used = [], 0
        cur.append(s)
        used += n + 1
    if cur:
        out.append(" ".join(cur))
    return out


def minmax(values: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1] over the candidate list (all equal -> all 1: the signal cannot tell them apart)."""
    lo, hi = float(values.min()), float(values.max())
    return (values - lo) / (hi - lo) if hi > lo else np.ones_like(values)


class MiniLMReranker:
    """Query-passage and query-best-sentence cosine of the bundled MiniLM, mixed with the first-stage
    score, after dense pseudo-relevance feedback; weights default to the lab's SciFact choice.

    Feedback (Rocchio in embedding space): the query vector plus ``feedback`` times the mean passage
    vector of the ``feedback_docs`` best first-stage documents (by ``prior`` when given, else the
    input order, which is the first stage's), re-normalised; ``feedback=0`` turns it off."""

    name = "minilm"

    def __init__(self, embedder: Embedder, cache: EmbeddingCache | None = None, batch_size: int = 32, *,
                 passage: float = 0.2, sentence: float = 0.2, prior: float = 0.6,
                 feedback: float = 1.0, feedback_docs: int = 3) -> None:
        if min(passage, sentence, prior, feedback) < 0 or passage + sentence <= 0 or feedback_docs < 0:
            raise RerankError("MiniLMReranker weights must be non-negative, passage + sentence above 0 and "
                              f"feedback_docs at least 0 (got passage={passage}, sentence={sentence}, "
                              f"prior={prior}, feedback={feedback}, feedback_docs={feedback_docs})")
        self.embedder, self.cache, self.batch_size = embedder, cache, batch_size
        self.weights = {"passage": passage, "sentence": sentence, "prior": prior}
        self.feedback, self.feedback_docs = feedback, feedback_docs

    def _vectors(self, texts: list[str]) -> np.ndarray:
        """Vectors of texts that each fit the window, through the cache when there is one."""
        if not texts:
            return np.zeros((0, self.embedder.dim), np.float32)
        if self.cache is not None:
            return embed_with_cache(self.embedder, self.cache, texts)[0]
        unique = list(dict.fromkeys(texts))
        vecs = np.concatenate([self.embedder.embed_documents(unique[i:i + self.batch_size])
                               for i in range(0, len(unique), self.batch_size)])
        row = {t: i for i, t in enumerate(unique)}
        return vecs[[row[t] for t in texts]]

    def _units(self, doc: str, with_sentences: bool = True) -> tuple[list[str], list[str]]:
        """(passage windows, sentences) of one document; both empty for a blank document. Without
        ``with_sentences`` only a passage that overflows the window is split (into sentence windows)."""
        tok, limit = self.embedder.tokenizer, self.embedder.max_tokens
        if not doc.strip():
            return [], []
        # the text as given when it fits: an indexed chunk's text is then a cache hit
        fits = tok.count(doc) <= limit
        if fits and not with_sentences:
            return [doc], []
        sents = sentences(doc, tok.count, tok.offsets, limit)
        passage = [doc] if fits else windows(sents, tok.count, limit)
        return passage, sents if with_sentences else []

    def _query(self, q: np.ndarray, pvecs: np.ndarray, order: Sequence[int]) -> np.ndarray:
        """The query vector after feedback from the passages of the first documents of ``order``."""
        top = [i for i in order if np.any(pvecs[i])][: self.feedback_docs]
        if not top or self.feedback <= 0:
            return q
        v = q + self.feedback * pvecs[top].mean(0)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def features(self, query: str, documents: Sequence[str],
                 order: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per document: (best passage-window cosine, best sentence cosine) with the feedback query
        (feedback from the documents first in ``order``, default input order); -1 for a blank
        document. With a zero sentence weight, sentences are not embedded and the passage stands in."""
        with_sentences = self.weights["sentence"] > 0  # a zero weight costs no sentence embedding
        parts = [self._units(d, with_sentences) for d in documents]
        texts = [t for p, s in parts for t in (*p, *s)]
        vecs = self._vectors(texts)
        pvecs = np.zeros((len(documents), vecs.shape[1]), np.float32)
        spans, pos = [], 0
        for i, (p, s) in enumerate(parts):
            if p:
                mean = vecs[pos:pos + len(p)].mean(0)
                pvecs[i] = mean / max(float(np.linalg.norm(mean)), 1e-12)
            spans.append((pos, pos + len(p), pos + len(p) + len(s)))
            pos += len(p) + len(s)
        q = self._query(self.embedder.embed_query(query), pvecs, range(len(documents)) if order is None else order)
        sims = vecs @ q
        passage, sentence = np.full(len(documents), -1.0), np.full(len(documents), -1.0)
        for i, (a, b, c) in enumerate(spans):
            if b > a:
                passage[i] = sims[a:b].max()
                sentence[i] = sims[b:c].max() if c > b else passage[i]
        return passage, sentence

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None,
               prior: Sequence[float] | None = None) -> list[Scored]:
        """Documents best first. ``prior`` (optional, one per document, higher = better) is the
        first-stage score: it picks the feedback documents and its weight counts only when given
        (without it, feedback uses the input order and the score is passage + sentence alone)."""
        if not documents:
            return []
        if prior is not None and len(prior) != len(documents):
            raise RerankError(f"reranker '{self.name}' got {len(prior)} prior scores for {len(documents)} documents")
        order = None if prior is None else sorted(range(len(documents)), key=lambda i: (-prior[i], i))
        passage, sentence = self.features(query, documents, order)
        w = self.weights
        score = w["passage"] * minmax(passage) + w["sentence"] * minmax(sentence)
        if prior is not None and w["prior"] > 0:
            score = score + w["prior"] * minmax(np.asarray(prior, dtype=np.float64))
        return ordered(score.tolist(), top_n)
