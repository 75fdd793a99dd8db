"""An offline answer judge: checks an answer's statements against passages with the embedding
model and word overlap, no LLM needed. Formulas are in docs/metrics.md ("Answer metrics and judges").

Every number it reports should carry ``OfflineJudge.label``: scores depend on the judge version,
the embedding model and the support threshold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ragline.embed.base import Embedder
from ragline.text import STOPWORDS, sentence_spans
from ragline.types import Answer

_MARK = re.compile(r"\s*\[(\d+(?:\s*,\s*\d+)*)\]")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[.,][0-9]+)*")
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
_NEGATIONS = frozenset({"not", "no", "never", "without", "cannot", "nor"})
# support = 0.7 * cosine + 0.3 * lexical overlap, minus the penalties below
DENSE_WEIGHT = 0.7
LEXICAL_WEIGHT = 1.0 - DENSE_WEIGHT
NUMBER_PENALTY = 0.35  # the statement states a number the sentence does not
NEGATION_PENALTY = 0.25  # one of the two is negated and the other is not
# calibrated on tests/fixtures/judge_calibration.jsonl with all-MiniLM-L6-v2 (see docs/metrics.md)
DEFAULT_SUPPORT_THRESHOLD = 0.687


@dataclass(frozen=True)
class JudgeThresholds:
    support: float = DEFAULT_SUPPORT_THRESHOLD  # a statement is supported when its support >= this


@dataclass(frozen=True)
class SupportScore:
    score: float  # best blended score over the passages' sentences (0.0 when there are none)
    best_passage_index: int | None  # which passage held the best sentence
    best_sentence: str | None


@dataclass(frozen=True)
class StatementJudgement:
    text: str
    support: SupportScore
    supported: bool | None  # None: an LLM judge's verdict on it could not be parsed
    cited: tuple[int, ...]  # citation numbers marked on the statement
    citation_supported: bool | None  # None when the statement cites nothing (or its verdict is unparsed)
    note: str | None = None  # an LLM judge's reason, or why its verdict was not usable


@dataclass(frozen=True)
class AnswerJudgement:
    judge: str  # the judge's label (OfflineJudge.label, LLMJudge.label)
    faithfulness: float | None  # None only when an LLM judge parsed no verdict for any statement
    hallucinated: bool | None
    citation_accuracy: float | None  # None when no statement cites a source
    context_precision: float | None  # None when there are no contexts or no statements
    abstained: bool
    statements: tuple[StatementJudgement, ...]
    # measured against the item's reference answer by judges that can (the LLM judge); else None
    answer_relevance: float | None = None
    context_recall: float | None = None
    unparsed: int = 0  # LLM judge: verdicts that could not be parsed (left out of every number)
    usage: dict | None = None  # LLM judge: calls, prompt/completion tokens, estimated cost


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def judge_words(text: str) -> set[str]:
    """Lower-cased, crudely stemmed content words; numbers (digits or "one".."twelve") as digits,
    single digits included, and negations kept (they are stopwords elsewhere)."""
    out = set()
    for tok in (t.lower() for t in _TOKEN.findall(text)):
        tok = _NUMBER_WORDS.get(tok, tok)
        if tok[0].isdigit():
            out.add(tok)
        elif tok in _NEGATIONS or (tok not in STOPWORDS and len(tok) > 1):
            out.add(_stem(tok))
    return out


def _numbers(words: set[str]) -> set[str]:
    return {w for w in words if w[0].isdigit()}


def _negated(text: str, words: set[str]) -> bool:
    return bool(words & _NEGATIONS) or "n't" in text.lower()


def _clean(text: str) -> str:
    return re.sub(r"\s+([.,;:!?])", r"\1", " ".join(text.split()))


def split_statements(answer_text: str) -> list[tuple[str, tuple[int, ...]]]:
    """The answer's sentences, citation marks stripped, each with the numbers it cited.

    A mark belongs to the sentence it closes: "A is B [1]." and "A is B. [1]" both cite 1.
    A mark also ends a statement, so quoted passages without end punctuation (table rows,
    titles) each stand alone: "row one [1] row two [2]" is two statements.
    """
    pieces, cites, pos = [], [], 0
    for m in _MARK.finditer(answer_text):
        pieces.append(answer_text[pos:m.start()])
        cites.append(tuple(int(n) for n in m.group(1).split(",")))
        pos = m.end()
    pieces.append(answer_text[pos:])
    for i in range(1, len(pieces)):  # "B [1]." : the full stop goes back to its sentence
        lead = len(pieces[i]) - len(pieces[i].lstrip(".!?;:,"))
        pieces[i - 1], pieces[i] = pieces[i - 1] + pieces[i][:lead], pieces[i][lead:]
    # each mark sits at the end of its piece; pieces are joined by blank lines (always a boundary)
    ends = [sum(len(p) + 2 for p in pieces[: i + 1]) - 2 for i in range(len(cites))]
    marks = list(zip(ends, cites))  # (position in stripped text, numbers)
    stripped = "\n\n".join(pieces)
    out = []
    for a, b in sentence_spans(stripped):
        cited = tuple(dict.fromkeys(n for p, ns in marks if a < p <= b for n in ns))
        sentence = _clean(stripped[a:b])
        if judge_words(sentence):
            out.append((sentence, cited))
    return out


def _sentences(passage: str) -> list[str]:
    return [s for s in (_clean(passage[a:b]) for a, b in sentence_spans(passage)) if s]


class OfflineJudge:
    name = "offline"
    version = "offline-v1"

    def __init__(self, embedder: Embedder, thresholds: JudgeThresholds | None = None) -> None:
        self.embedder = embedder
        self.thresholds = thresholds or JudgeThresholds()

    @property
    def label(self) -> str:
        return (f"{self.version} (model {self.embedder.model_id}, support>={self.thresholds.support:.3f}, "
                f"cosine {DENSE_WEIGHT:.2f} / lexical {LEXICAL_WEIGHT:.2f}, penalties number {NUMBER_PENALTY:.2f} / "
                f"negation {NEGATION_PENALTY:.2f})")

    def statements(self, answer_text: str) -> list[str]:
        return [s for s, _ in split_statements(answer_text)]

    def _embed(self, texts: list[str]) -> np.ndarray:
        tok = self.embedder.tokenizer
        if all(tok.count(t) <= self.embedder.max_tokens for t in texts):
            return self.embedder.embed_documents(texts)
        # an over-long sentence is cut to the model's window rather than failing the judgement
        return np.stack([self.embedder.embed_query(t) for t in texts])

    def support_matrix(self, statements: Sequence[str], passages: Sequence[str]) -> list[list[SupportScore]]:
        """``[i][j]``: statement i's best support within passage j alone."""
        sents = [(j, s) for j, p in enumerate(passages) for s in _sentences(p)]
        if not statements:
            return []
        if not sents:
            return [[SupportScore(0.0, None, None) for _ in passages] for _ in statements]
        vecs = self._embed(list(statements) + [s for _, s in sents])
        cos = vecs[: len(statements)] @ vecs[len(statements):].T
        sent_words = [judge_words(s) for _, s in sents]
        sent_nums = [_numbers(w) for w in sent_words]
        sent_neg = np.array([_negated(s, w) for (_, s), w in zip(sents, sent_words)])
        out = []
        for i, st in enumerate(statements):
            words = judge_words(st)
            nums, neg = _numbers(words), _negated(st, words)
            lex = np.array([len(words & w) / len(words) if words else 0.0 for w in sent_words])
            score = DENSE_WEIGHT * cos[i] + LEXICAL_WEIGHT * lex
            score = score - NUMBER_PENALTY * np.array([bool(nums - n) for n in sent_nums])
            score = score - NEGATION_PENALTY * (sent_neg != neg)
            row = []
            for j in range(len(passages)):
                idx = [k for k, (p, _) in enumerate(sents) if p == j]
                if not idx:
                    row.append(SupportScore(0.0, None, None))
                    continue
                k = max(idx, key=lambda k: score[k])  # first of equal maxima
                row.append(SupportScore(round(float(score[k]), 6), j, sents[k][1]))
            out.append(row)
        return out

    def support(self, statement: str, passages: Sequence[str]) -> SupportScore:
        """The best support for ``statement`` over all sentences of all ``passages``."""
        row = self.support_matrix([statement], passages)[0]
        return _best(row)

    def judge(self, answer: Answer, contexts: Sequence[str]) -> AnswerJudgement:
        if not answer.grounded:
            return AnswerJudgement(self.label, 1.0, False, None, None, True, ())
        parts = split_statements(answer.text)
        texts = [s for s, _ in parts]
        threshold = self.thresholds.support
        by_n = {c.n: (c.snippet if answer.generator == "extractive" else c.chunk.text) for c in answer.citations}
        sources = list(by_n.values())
        matrix = self.support_matrix(texts, list(contexts) + sources)
        judged = []
        for (text, cited), row in zip(parts, matrix):
            best = _best(row[: len(contexts)])
            cit_ok = None
            if cited:
                cited_scores = [row[len(contexts) + list(by_n).index(n)].score for n in cited if n in by_n]
                cit_ok = bool(cited_scores) and max(cited_scores) >= threshold
            judged.append(StatementJudgement(text, best, best.score >= threshold, cited, cit_ok))
        if not judged:
            return AnswerJudgement(self.label, 1.0, False, None, None, False, ())
        supported = [s.supported for s in judged]
        cit = [s.citation_supported for s in judged if s.citation_supported is not None]
        precision = None
        if contexts:
            useful = sum(any(row[j].score >= threshold for row in matrix) for j in range(len(contexts)))
            precision = useful / len(contexts)
        return AnswerJudgement(
            judge=self.label,
            faithfulness=sum(supported) / len(supported),
            hallucinated=not all(supported),
            citation_accuracy=sum(cit) / len(cit) if cit else None,
            context_precision=precision,
            abstained=False,
            statements=tuple(judged),
        )


def _best(row: Sequence[SupportScore]) -> SupportScore:
    best = SupportScore(0.0, None, None)
    for s in row:
        if s.best_sentence is not None and (best.best_sentence is None or s.score > best.score):
            best = s
    return best
