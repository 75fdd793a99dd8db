"""BM25 with statistics over the rows a caller may see (docs/adr/0006-sparse-statistics-under-acls.md).

The full-text index scores with a document frequency per term, a row count and a mean length
taken over every row of a collection. A caller restricted by an ACL would read in its scores
(and in the ranking they make) how many chunks it cannot see contain a word. For such a caller
the store scores here instead, from a term table of the collection's rows (the index's own
analyzer and formula) with every statistic counted over the caller's rows only. A caller who can
see every row gets the index's scores.
"""

from __future__ import annotations

import math
import operator
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

# Lance's BM25 parameters: the index scores with these, and a scope of every row must agree with it
K1 = 1.2
B = 0.75

# The analyzer the chunks' full-text index is built with (LanceStore._create_fts passes these).
ANALYZER: dict = dict(base_tokenizer="simple", language="English", stem=True, remove_stop_words=True,
                      lower_case=True, ascii_folding=True)
# Stemmed words the index drops as stop words but `lance.tokenize` keeps (measured on lance 14 over
# the 36k distinct words of SciFact plus English contractions: these 31 were the only differences).
# tests/retrieve/test_sparse_acl.py checks that a scope of every row scores as the index does.
EXTRA_STOP = frozenset(
    "ain aren couldn d didn doesn don hadn hasn haven isn ll m ma mightn mustn needn no nor not o s shan "
    "shouldn t ve wasn weren won wouldn y".split())


_TEXT = operator.attrgetter("text")


def analyze(text: str) -> list[str]:
    """The index's terms of ``text``, in order, repeats kept (a row's length is their number)."""
    import lance

    return [t for t in map(_TEXT, lance.tokenize(text, **ANALYZER)) if t not in EXTRA_STOP]


def query_terms(text: str) -> Counter:
    """Each term of a query with the number of times it occurs: every occurrence scores (as in
    the index)."""
    return Counter(analyze(text))


def idf(df: int, n: int) -> float:
    """Lance's (and Lucene's) idf: positive for every df, so a very common term still counts a little."""
    return math.log((n - df + 0.5) / (df + 0.5) + 1.0)


def saturation(tf: np.ndarray | float, dl: np.ndarray | float, avgdl: float):
    """BM25's term-frequency part: (k1 + 1) tf / (tf + k1 (1 - b + b dl / avgdl))."""
    return (K1 + 1.0) * tf / (tf + K1 * (1.0 - B + B * dl / max(avgdl, 1e-9)))


class Analyses:
    """The analysis of each chunk text, by content hash: its term ids and counts. Shared by the
    term tables of successive table versions, so a write costs the analysis of its new texts only."""

    def __init__(self) -> None:
        self.term_ids: dict[str, int] = {}
        self.by_hash: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.lock = threading.Lock()  # one build at a time: ids are handed out in order

    def add(self, content_hash: str, text: str) -> None:
        counts = Counter(analyze(text))
        known = self.term_ids
        for term in [t for t in counts if t not in known]:
            known[term] = len(known)
        ids = np.fromiter(map(known.__getitem__, counts), np.int32, len(counts))
        self.by_hash[content_hash] = (ids, np.fromiter(counts.values(), np.int32, len(counts)))

    def keep_only(self, hashes: set[str]) -> None:
        """Forget the analyses of texts no longer stored, and then the terms no stored text holds
        (a deleted document leaves none of its words behind)."""
        if len(hashes) == len(self.by_hash):
            return
        self.by_hash = {h: self.by_hash[h] for h in hashes}
        live = np.zeros(len(self.term_ids), bool)
        for ids, _ in self.by_hash.values():
            live[ids] = True
        if live.all():
            return
        new_id = np.cumsum(live) - 1
        names = list(self.term_ids)  # in id order: ids are handed out in insertion order
        # a new dict: tables built before keep the vocabulary their arrays were built with
        self.term_ids = {names[i]: int(new_id[i]) for i in np.flatnonzero(live)}
        self.by_hash = {h: (new_id[ids].astype(np.int32), c) for h, (ids, c) in self.by_hash.items()}


@dataclass(frozen=True)
class TermTable:
    """One table version's rows as BM25 needs them: each row's length, and for each term the
    rows holding it with their counts (rows are indexes into ``row_ids``, sorted)."""

    row_ids: np.ndarray  # the store's row ids, ascending
    positions: np.ndarray  # their scan positions in the table version (for `take`)
    lengths: np.ndarray  # terms per row
    term_ids: Mapping[str, int]  # the shared vocabulary: ids beyond ``starts`` came after this table
    starts: np.ndarray  # term id -> its first entry in rows/counts (term_ids order); one past the end last
    rows: np.ndarray
    counts: np.ndarray

    @classmethod
    def build(cls, row_ids: np.ndarray, positions: np.ndarray, hashes: Sequence[str],
              analyses: Analyses) -> "TermTable":
        """From rows (ascending row ids) and the content hashes of their texts, all analyzed."""
        parts = [analyses.by_hash[h] for h in hashes]
        lengths = np.fromiter((int(c.sum()) for _, c in parts), np.int64, len(parts))
        sizes = np.fromiter((len(ids) for ids, _ in parts), np.int64, len(parts))
        ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int32)
        counts = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int32)
        rows = np.repeat(np.arange(len(parts), dtype=np.int32), sizes)
        order = np.argsort(ids, kind="stable")  # by term, rows ascending within each
        n_terms = len(analyses.term_ids)
        starts = np.zeros(n_terms + 1, np.int64)
        np.cumsum(np.bincount(ids, minlength=n_terms), out=starts[1:])
        return cls(row_ids, positions, lengths, analyses.term_ids, starts, rows[order], counts[order])

    def search(self, terms: Mapping[str, int], visible: np.ndarray, allowed: np.ndarray,
               k: int) -> list[tuple[int, float]]:
        """The best ``k`` rows of ``allowed`` as (row id, score), with N, df and the mean length
        counted over ``visible`` (row ids of this version; ``allowed`` a subset). Ties go to the
        smaller row id."""
        if not len(visible) or not len(allowed):
            return []
        vis = np.zeros(len(self.row_ids), bool)
        vis[np.searchsorted(self.row_ids, visible)] = True
        ok = vis if allowed is visible else np.zeros(len(self.row_ids), bool)
        if ok is not vis:
            ok[np.searchsorted(self.row_ids, allowed)] = True
        n = len(visible)
        avgdl = float(self.lengths[vis].mean())
        scores = np.zeros(len(self.row_ids))
        for term, times in terms.items():  # in query order: the same sums, bit for bit, every time
            tid = self.term_ids.get(term)
            if tid is None or tid >= len(self.starts) - 1:  # in no row of this version
                continue
            span = slice(self.starts[tid], self.starts[tid + 1])
            rows, tf = self.rows[span], self.counts[span]
            df = int(np.count_nonzero(vis[rows]))
            if not df:
                continue
            mine = ok[rows]
            rows, tf = rows[mine], tf[mine]
            scores[rows] += times * idf(df, n) * saturation(tf.astype(np.float64), self.lengths[rows], avgdl)
        found = np.flatnonzero(scores > 0)
        if len(found) > k:
            kth = np.partition(scores[found], len(found) - k)[len(found) - k]
            found = found[scores[found] >= kth]
        found = found[np.lexsort((self.row_ids[found], -scores[found]))][:k]
        return [(int(self.row_ids[i]), float(scores[i])) for i in found]


def term_table(row_ids: np.ndarray, hashes: Sequence[str], analyses: Analyses,
               texts: Callable[[list[int]], Iterable[tuple[str, str]]]) -> TermTable:
    """The term table of a table version (rows in scan order with their content hashes). Texts
    not analyzed yet are read through ``texts`` (scan positions -> (content hash, text) pairs)."""
    with analyses.lock:
        missing = [i for i, h in enumerate(hashes) if h not in analyses.by_hash]
        for h, text in texts(missing) if missing else ():
            analyses.add(h, text or "")
        analyses.keep_only(set(hashes))
        order = np.argsort(row_ids, kind="stable")
        return TermTable.build(row_ids[order], order, [hashes[i] for i in order], analyses)
