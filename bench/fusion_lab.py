"""Fusion lab (issue #3): cache dense and sparse candidate lists once, then score fusion methods
offline in numpy on SciFact and DBpedia-Entity-5k.

    .venv/bin/python bench/fusion_lab.py build    # index each corpus once (embedding cache reused)
    .venv/bin/python bench/fusion_lab.py cache    # test-query and pseudo-query candidate lists
    .venv/bin/python bench/fusion_lab.py ict      # inverse-cloze pseudo-queries (a second index)
    .venv/bin/python bench/fusion_lab.py eval     # the nDCG@10 table of every method (seconds)

The first three steps take about an hour on two busy cores; ``eval`` reads only the cache.

Everything lives under $FUSION_LAB (default /work/bench-home/fusion-lab), one folder per corpus:
``lance/`` (the index, default chunking), ``docs.json`` (doc ids in index order), ``stats.json``
(BM25 corpus statistics over chunks: document frequencies with an approximation of the index's
analyser), ``test.npz`` and ``pseudo-<kind>.npz`` (per query: the top chunks of each mode with row
key, doc and score), ``test-qvec.npy`` (query vectors), ``ict-lance/`` and ``ict.json`` (the
inverse-cloze index and its queries), ``results.json`` (the last table).

Settings are the defaults of ``ragline eval beir`` (hybrid = chunk-level fusion over 300 candidates
per mode, then best chunk per document); the cache holds 1,000 chunks per mode, so every document
list below is cut to the top 200 documents (best chunk per document).

Honesty rules of the lab (see docs/quality.md, "Query-adaptive fusion"): every constant of a method
is fixed a priori or tuned on SciFact labels only, then frozen before DBpedia is scored; unsupervised
per-corpus calibration uses pseudo-queries generated from the corpus itself, never the judgements.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
LAB = Path(os.environ.get("FUSION_LAB", "/work/bench-home/fusion-lab"))
HOME = Path(os.environ.get("FUSION_HOME", "/work/bench-home"))
CORPORA = {"scifact": DATA / "scifact", "dbpedia": DATA / "dbpedia-entity-5k"}
CHUNK_DEPTH = 1000  # chunks cached per mode and query
DOC_DEPTH = 200  # documents per mode after best-chunk aggregation
PIPELINE_DEPTH = 300  # what `ragline eval beir` fuses (k=100 documents -> 3x chunks)


# ---------------------------------------------------------------------------------------------
# building and caching (slow, run once)
# ---------------------------------------------------------------------------------------------

sys.path.insert(0, str(ROOT / "src"))


def _engine():
    from ragline.app import Engine
    from ragline.config import load_settings

    return Engine(load_settings(home=HOME))


def _open(engine, name: str):
    return engine.open_store(LAB / name / "lance")


def build(names: list[str]) -> None:
    from ragline.evaluate.beir import index_corpus, load_beir
    from ragline.ingest.indexer import Indexer

    engine = _engine()
    for name in names:
        out = LAB / name
        if (out / "docs.json").exists():
            print(f"{name}: index exists, skipped")
            continue
        out.mkdir(parents=True, exist_ok=True)
        ds = load_beir(CORPORA[name])
        store = _open(engine, name)
        stats = index_corpus(ds, Indexer(store, engine.embedder, engine.cache, engine.plan))
        print(name, stats)
        _, _, doc_ids = store._vectors()
        (out / "docs.json").write_text(json.dumps(sorted(set(doc_ids))))
        _write_stats(store, out / "stats.json")


_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
# tantivy's English stop words (Lance's analyser with remove_stop_words=True)
STOP = set("a an and are as at be but by for if in into is it no not of on or such that the their then there "
           "these they this to was will with".split())


def analyser():
    import unicodedata

    import Stemmer

    stem = Stemmer.Stemmer("english")

    def terms(text: str) -> list[str]:
        text = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
        return [stem.stemWord(t) for t in _TOKEN.findall(text) if t not in STOP and len(t) < 40]

    return terms


def _write_stats(store, path: Path) -> None:
    terms = analyser()
    t = store._ds()[1].to_table(columns=["search_text", "doc_id"])
    df: dict[str, int] = {}
    lengths = []
    for text in t.column("search_text").to_pylist():
        toks = terms(text)
        lengths.append(len(toks))
        for w in set(toks):
            df[w] = df.get(w, 0) + 1
    path.write_text(json.dumps({"n_chunks": len(lengths), "avgdl": float(np.mean(lengths)), "df": df}))


def _lists(store, engine, texts: list[str], doc_index: dict[str, int]) -> dict[str, np.ndarray]:
    """Chunk-level top CHUNK_DEPTH of each mode: doc index and score (-1 / nan padding)."""
    n = len(texts)
    kinds = {"doc": (-1, np.int32), "key": (-1, np.int64), "score": (np.nan, np.float32)}
    out = {f"{m}_{f}": np.full((n, CHUNK_DEPTH), fill, dtype=dtype)
           for m in ("dense", "sparse") for f, (fill, dtype) in kinds.items()}
    t0 = time.perf_counter()
    for i, text in enumerate(texts):
        for mode in ("dense", "sparse"):
            if mode == "dense":
                cands = store.dense_candidates(engine.embedder.embed_query(text), CHUNK_DEPTH)
            else:
                cands = store.sparse_candidates(text, CHUNK_DEPTH)
            out[f"{mode}_doc"][i, : len(cands)] = [doc_index[c.doc_id] for c in cands]
            out[f"{mode}_key"][i, : len(cands)] = [int(c.key) for c in cands]
            out[f"{mode}_score"][i, : len(cands)] = [c.score for c in cands]
        if (i + 1) % 200 == 0:
            print(f"  {i + 1}/{n} queries, {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def cache(names: list[str], kinds: list[str], n_pseudo: int) -> None:
    from ragline.evaluate.beir import load_beir

    engine = _engine()
    for name in names:
        out = LAB / name
        store = _open(engine, name)
        docs = json.loads((out / "docs.json").read_text())
        doc_index = {d: i for i, d in enumerate(docs)}
        ds = load_beir(CORPORA[name])
        if not (out / "test.npz").exists():
            qids = list(ds.queries)
            arrays = _lists(store, engine, [ds.queries[q] for q in qids], doc_index)
            np.savez_compressed(out / "test.npz", qids=np.array(qids), texts=np.array([ds.queries[q] for q in qids]),
                                **arrays)
            (out / "qrels.json").write_text(json.dumps(ds.qrels))
            print(f"{name}: test lists cached")
        if not (out / "test-qvec.npy").exists():  # query vectors, for feedback experiments
            texts = [str(t) for t in np.load(out / "test.npz")["texts"]]
            np.save(out / "test-qvec.npy", np.stack([engine.embedder.embed_query(t) for t in texts]))
        corpus = {str(r["_id"]): r for r in ds.corpus()}
        stats = json.loads((out / "stats.json").read_text())
        for kind in kinds:
            path = out / f"pseudo-{kind}.npz"
            if path.exists():
                continue
            queries = pseudo_queries(kind, corpus, docs, stats, n_pseudo)
            arrays = _lists(store, engine, [q for q, _ in queries], doc_index)
            np.savez_compressed(path, texts=np.array([q for q, _ in queries]),
                                target=np.array([doc_index[d] for _, d in queries], dtype=np.int32), **arrays)
            print(f"{name}: pseudo-queries '{kind}' cached ({len(queries)})")


def build_ict(names: list[str], n: int) -> None:
    """Inverse-cloze pseudo-queries (Lee et al., 2019) without copied text: a second index of each
    corpus in which ``n`` random documents lose their title (the title is the query) and ``n`` others
    lose one sentence (the sentence is the query); the source document stays the target. Only the
    changed documents are embedded again."""
    from ragline.evaluate.beir import index_corpus, load_beir
    from ragline.ingest.indexer import Indexer

    engine = _engine()
    for name in names:
        out = LAB / name
        if (out / "ict.json").exists():
            continue
        ds = load_beir(CORPORA[name])
        rows = [dict(r) for r in ds.corpus()]
        rng = random.Random(7)
        order = list(range(len(rows)))
        rng.shuffle(order)
        queries: dict[str, list[list[str]]] = {"title": [], "sentence": []}
        for j in order:
            r = rows[j]
            title, body = (r.get("title") or "").strip(), (r.get("text") or "").strip()
            sents = _SENT.split(body)
            if len(queries["title"]) < n and title and len(body.split()) >= 20:
                queries["title"].append([title, str(r["_id"])])
                r["title"] = ""
            elif len(queries["sentence"]) < n and len(sents) >= 3:
                k = rng.randrange(len(sents))
                if 6 <= len(sents[k].split()) <= 40:
                    queries["sentence"].append([sents[k], str(r["_id"])])
                    r["text"] = " ".join(sents[:k] + sents[k + 1:])
            if len(queries["title"]) >= n and len(queries["sentence"]) >= n:
                break

        class Modified:
            n_docs = len(rows)

            def corpus(self):
                return iter(rows)

        store = engine.open_store(out / "ict-lance")
        print(name, "ICT index", index_corpus(Modified(), Indexer(store, engine.embedder, engine.cache, engine.plan)))
        docs = json.loads((out / "docs.json").read_text())
        doc_index = {d: i for i, d in enumerate(docs)}
        for kind, pairs in queries.items():
            pairs = [(q.replace('"', " ").strip(), d) for q, d in pairs]
            arrays = _lists(store, engine, [q for q, _ in pairs], doc_index)
            np.savez_compressed(out / f"pseudo-ict_{kind}.npz", texts=np.array([q for q, _ in pairs]),
                                target=np.array([doc_index[d] for _, d in pairs], dtype=np.int32), **arrays)
        (out / "ict.json").write_text(json.dumps(queries))


# ---------------------------------------------------------------------------------------------
# pseudo-queries: generated from the corpus itself, the source document is the one relevant
# ---------------------------------------------------------------------------------------------

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z][A-Za-z\-']+")


def pseudo_queries(kind: str, corpus: dict, docs: list[str], stats: dict, n: int, seed: int = 13) -> list[tuple[str, str]]:
    """``n`` (query, source doc id) pairs of one kind; deterministic per seed.

    sentence   a random sentence of the body (copied text: favours BM25)
    content    the sentence's content words only (stop words and words under 4 letters dropped)
    droprare   the content words minus the rarest third (by corpus df): no copied rare term
    keywords   4 mid-frequency content words of the document, shuffled (keyword-list style)
    title      the document title (entity names in entity corpora)
    """
    rng = random.Random(seed)
    terms = analyser()
    df, n_chunks = stats["df"], stats["n_chunks"]
    order = list(docs)
    rng.shuffle(order)
    out: list[tuple[str, str]] = []

    def content_words(text: str) -> list[str]:
        return [w for w in _WORD.findall(text) if w.lower() not in STOP and len(w) >= 4 and w.lower() not in EXTRA_STOP]

    def dfw(w: str) -> int:
        t = terms(w)
        return df.get(t[0], 1) if t else n_chunks

    for doc_id in order:
        if len(out) >= n:
            break
        row = corpus[doc_id]
        body, title = (row.get("text") or "").strip(), (row.get("title") or "").strip()
        sents = [s for s in _SENT.split(body) if 6 <= len(s.split()) <= 40]
        if kind == "title":
            if title:
                out.append((title, doc_id))
            continue
        if kind == "keywords":
            words = list(dict.fromkeys(w.lower() for w in content_words(body)))
            mid = [w for w in words if 2 <= dfw(w) <= n_chunks * 0.05]
            if len(mid) >= 4:
                out.append((" ".join(rng.sample(mid, 4)), doc_id))
            continue
        if not sents:
            continue
        s = rng.choice(sents)
        if kind == "sentence":
            out.append((s, doc_id))
        elif kind == "content":
            words = content_words(s)
            if len(words) >= 3:
                out.append((" ".join(words), doc_id))
        elif kind == "droprare":
            words = content_words(s)
            if len(words) >= 4:
                rare = sorted(range(len(words)), key=lambda i: dfw(words[i]))[: len(words) // 3]
                out.append((" ".join(w for i, w in enumerate(words) if i not in set(rare)), doc_id))
        else:
            raise ValueError(kind)
    # a double quote makes Lance parse a phrase query, which the index (no positions) refuses
    return [(q.replace('"', " ").strip(), d) for q, d in out]


EXTRA_STOP = set("also from have been were which when where while this that these those with would could should "
                 "after before about between during other some than them they their there into more most only over "
                 "such very what whom whose both each many much".split())


# ---------------------------------------------------------------------------------------------
# evaluation from the cache (fast)
# ---------------------------------------------------------------------------------------------

class Lists:
    """Cached lists of one query set: chunk level and document level (best chunk per doc)."""

    def __init__(self, path: Path, n_docs: int) -> None:
        z = np.load(path)
        self.z = z
        self.n_docs = n_docs
        self.texts = [str(t) for t in z["texts"]]
        self.target = z["target"] if "target" in z else None
        self.qids = [str(q) for q in z["qids"]] if "qids" in z else None
        self.chunk = {m: (z[f"{m}_doc"], z[f"{m}_score"]) for m in ("dense", "sparse")}
        self.key = {m: z[f"{m}_key"] for m in ("dense", "sparse")}
        self.doc = {m: _doc_level(*self.chunk[m], DOC_DEPTH) for m in ("dense", "sparse")}

    def __len__(self) -> int:
        return len(self.texts)


def _doc_level(docs: np.ndarray, scores: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(docs)
    d_out = np.full((n, depth), -1, dtype=np.int32)
    s_out = np.full((n, depth), np.nan, dtype=np.float32)
    for i in range(n):
        seen: set[int] = set()
        j = 0
        for d, s in zip(docs[i], scores[i]):
            if d < 0 or j >= depth:
                break
            if d not in seen:
                seen.add(int(d))
                d_out[i, j], s_out[i, j] = d, s
                j += 1
    return d_out, s_out


def ndcg10(ranked: list[int] | np.ndarray, rel: dict[int, int]) -> float:
    gains = sorted((g for g in rel.values() if g > 0), reverse=True)
    if not gains:
        return 0.0
    def gain(g: int) -> float:
        return 2 ** max(0, g) - 1  # as ragline.evaluate.metrics: 2^grade - 1

    dcg = sum(gain(rel.get(int(d), 0)) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    idcg = sum(gain(g) / math.log2(i + 2) for i, g in enumerate(gains[:10]))
    return dcg / idcg


class Corpus:
    """A cached corpus: doc ids, qrels (doc index -> grade), BM25 statistics, test and pseudo lists."""

    def __init__(self, name: str) -> None:
        out = LAB / name
        self.name = name
        self.docs = json.loads((out / "docs.json").read_text())
        index = {d: i for i, d in enumerate(self.docs)}
        self.stats = json.loads((out / "stats.json").read_text())
        self.test = Lists(out / "test.npz", len(self.docs))
        qrels = json.loads((out / "qrels.json").read_text())
        self.qrels = [{index[d]: g for d, g in qrels[q].items() if d in index} for q in self.test.qids]
        self.pseudo = {p.stem.split("-", 1)[1]: Lists(p, len(self.docs)) for p in sorted(out.glob("pseudo-*.npz"))}
        self.terms = analyser()

    def idf(self, term: str) -> float:
        n, big_n = self.stats["df"].get(term, 0), self.stats["n_chunks"]
        return math.log(1 + (big_n - n + 0.5) / (n + 0.5))


def score_set(rankings: list[np.ndarray], qrels: list[dict[int, int]]) -> float:
    return float(np.mean([ndcg10(r, q) for r, q in zip(rankings, qrels)]))


def mrr10(rankings: list[np.ndarray], targets: np.ndarray) -> float:
    out = []
    for r, t in zip(rankings, targets):
        hit = np.flatnonzero(np.asarray(r[:10]) == t)
        out.append(1.0 / (hit[0] + 1) if len(hit) else 0.0)
    return float(np.mean(out))


# ---------------------------------------------------------------------------------------------
# fusion methods: each returns, for query i of a Lists, the top 100 doc indices
# ---------------------------------------------------------------------------------------------

TOP = 100


def union(L: Lists, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Doc ids of the union of both doc-level lists; each list's score and 1-based rank (nan/inf if absent)."""
    parts = []
    for m in ("dense", "sparse"):
        d, s = L.doc[m][0][i], L.doc[m][1][i]
        ok = d >= 0
        parts.append((d[ok], s[ok]))
    ids = np.union1d(parts[0][0], parts[1][0])
    out = [ids]
    for d, s in parts:
        pos = np.searchsorted(ids, d)
        sc = np.full(len(ids), np.nan)
        sc[pos] = s
        rk = np.full(len(ids), np.inf)
        rk[pos] = np.arange(1, len(d) + 1)
        out += [sc, rk]
    return tuple(out)  # ids, dense score, dense rank, sparse score, sparse rank


def _rank(ids: np.ndarray, fused: np.ndarray) -> np.ndarray:
    order = np.lexsort((ids, -fused))
    return ids[order][:TOP]


def norm_minmax(s: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(s)
    if not ok.any():
        return np.zeros_like(s)
    lo, hi = np.nanmin(s), np.nanmax(s)
    out = np.where(ok, 1e-6 + (1 - 1e-6) * (s - lo) / (hi - lo) if hi > lo else 1.0, 0.0)
    return out


def norm_z(s: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(s)
    if ok.sum() < 2:
        return np.where(ok, 1.0, 0.0)
    mu, sd = np.nanmean(s), np.nanstd(s)
    z = (s - mu) / (sd or 1.0)
    return np.where(ok, z, np.nanmin(z))


def single(L: Lists, i: int, mode: str) -> np.ndarray:
    d = L.doc[mode][0][i]
    return d[d >= 0][:TOP]


def chunk_minmax(L: Lists, i: int, w: float = 0.5, depth: int = PIPELINE_DEPTH) -> np.ndarray:
    """Exactly the pipeline's hybrid: min-max over the top `depth` chunks of each mode, fused per
    chunk, then best chunk per document."""
    fused: dict[int, float] = {}
    doc_of: dict[int, int] = {}
    for mode, weight in (("dense", w), ("sparse", 1 - w)):
        d, s = L.chunk[mode][0][i][:depth], L.chunk[mode][1][i][:depth]
        ok = d >= 0
        d, s = d[ok], s[ok]
        if not len(s):
            continue
        lo, hi = s.min(), s.max()
        keys = L.key[mode][i][:depth][ok]
        for key, dd, ss in zip(keys.tolist(), d.tolist(), s.tolist()):
            norm = 1e-6 + (1 - 1e-6) * (ss - lo) / (hi - lo) if hi > lo else 1.0
            fused[key] = fused.get(key, 0.0) + weight * norm
            doc_of[key] = dd
    best: dict[int, float] = {}
    for key, v in fused.items():
        best[doc_of[key]] = max(best.get(doc_of[key], -1.0), v)
    ids = np.array(sorted(best))
    return _rank(ids, np.array([best[k] for k in ids]))


def fuse(ids, a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    return _rank(ids, w * a + (1 - w) * b)


def doc_minmax(L: Lists, i: int, w: float = 0.5) -> np.ndarray:
    ids, ds, _, ss, _ = union(L, i)
    return fuse(ids, norm_minmax(ds), norm_minmax(ss), w)


def doc_z(L: Lists, i: int, w: float = 0.5) -> np.ndarray:
    ids, ds, _, ss, _ = union(L, i)
    return fuse(ids, norm_z(ds), norm_z(ss), w)


def rrf(L: Lists, i: int, k: float = 60, w: float = 0.5) -> np.ndarray:
    ids, _, dr, _, sr = union(L, i)
    return _rank(ids, w / (k + dr) + (1 - w) / (k + sr))


def combmnz(L: Lists, i: int, w: float = 0.5) -> np.ndarray:
    ids, ds, _, ss, _ = union(L, i)
    a, b = norm_minmax(ds), norm_minmax(ss)
    return _rank(ids, (w * a + (1 - w) * b) * ((a > 0).astype(float) + (b > 0)))


class Features:
    """Per-query, label-free features of one query set (from the query text, the two lists and the
    corpus's BM25 statistics)."""

    def __init__(self, corpus: Corpus, L: Lists) -> None:
        rows = []
        for i, text in enumerate(L.texts):
            terms = sorted(set(corpus.terms(text)))
            idfs = np.array([corpus.idf(t) for t in terms]) if terms else np.zeros(1)
            ub = 2.2 * idfs.sum()  # BM25 upper bound: every term saturated (k1 = 1.2)
            f = {"n_terms": len(terms), "ub": ub, "max_idf": idfs.max(), "mean_idf": idfs.mean()}
            for m in ("dense", "sparse"):
                s = L.doc[m][1][i]
                s = s[~np.isnan(s)]
                if not len(s):
                    s = np.zeros(2)
                f[f"{m}_top"] = s[0]
                f[f"{m}_gap10"] = (s[0] - s[min(9, len(s) - 1)])
                f[f"{m}_relgap10"] = f[f"{m}_gap10"] / (abs(s[0]) or 1.0)
                f[f"{m}_z1"] = (s[0] - s.mean()) / (s.std() or 1.0)
                f[f"{m}_z1_10"] = (s[0] - s[:10].mean()) / (s[:10].std() or 1.0)
            f["sparse_top_ub"] = f["sparse_top"] / ub if ub else 0.0
            d10, s10 = set(L.doc["dense"][0][i][:10].tolist()), set(L.doc["sparse"][0][i][:10].tolist())
            f["overlap10"] = len(d10 & s10) / 10
            f["top1_agree"] = float(L.doc["dense"][0][i][0] == L.doc["sparse"][0][i][0])
            rows.append(f)
        self.names = list(rows[0])
        self.x = {n: np.array([r[n] for r in rows], dtype=float) for n in self.names}


def weighted(fn, weights: np.ndarray, **kw):
    """A per-query dense weight for a fusion function that takes w."""
    return lambda L, i: fn(L, i, w=float(weights[i]), **kw)


def run(L: Lists, method) -> list[np.ndarray]:
    return [method(L, i) for i in range(len(L))]


GRID = np.round(np.linspace(0, 1, 21), 2)


def methods(corpus: Corpus) -> list[tuple[str, str, object, str]]:
    """(name, what its constants were tuned on, method over the test Lists, note) for one corpus."""
    L = corpus.test
    fe = Features(corpus, L)
    out: list[tuple[str, str, object, str]] = [
        ("dense only", "-", lambda L, i: single(L, i, "dense"), ""),
        ("sparse only", "-", lambda L, i: single(L, i, "sparse"), ""),
        ("min-max, w 0.5 (default, chunk level)", "-", lambda L, i: chunk_minmax(L, i, 0.5), ""),
        ("min-max, w 0.5 (document level)", "-", lambda L, i: doc_minmax(L, i, 0.5), ""),
        ("min-max, w 0.4", "SciFact", lambda L, i: doc_minmax(L, i, 0.4), ""),
        ("min-max, w 0.7", "-", lambda L, i: doc_minmax(L, i, 0.7), ""),
        ("min-max, w 0.8", "-", lambda L, i: doc_minmax(L, i, 0.8), ""),
        ("min-max, w 0.9", "-", lambda L, i: doc_minmax(L, i, 0.9), ""),
        ("z-score, w 0.5", "a priori", lambda L, i: doc_z(L, i, 0.5), ""),
        ("z-score, w 0.4", "SciFact", lambda L, i: doc_z(L, i, 0.4), ""),
        ("RRF k 60", "a priori", lambda L, i: rrf(L, i, 60), ""),
        ("RRF k 20", "SciFact", lambda L, i: rrf(L, i, 20), ""),
        ("CombMNZ (min-max), w 0.5", "a priori", lambda L, i: combmnz(L, i, 0.5), ""),
        ("theoretical min-max (cos from -1), w 0.5", "a priori", lambda L, i: tm2c2(L, i, None, 0.5), ""),
        ("theoretical min-max (cos from -1), w 0.7", "SciFact", lambda L, i: tm2c2(L, i, None, 0.7), ""),
        ("BM25 / query upper bound + raw cosine, w 0.5", "a priori",
         lambda L, i: tm2c2(L, i, fe.x["ub"], 0.5, 0.0), ""),
    ]
    # query-adaptive: per-query dense weight = c_dense / (c_dense + c_sparse), c a list's confidence
    clarity = {
        "peakedness@10 (1 - mean min-max score of ranks 2-10)": (peakedness(L, "dense"), peakedness(L, "sparse")),
        "relative gap top1-top10": (fe.x["dense_relgap10"], fe.x["sparse_relgap10"]),
        "z-score of top 1 in top 200": (fe.x["dense_z1"], fe.x["sparse_z1"]),
    }
    for label, (cd, cs) in clarity.items():
        w = np.clip(cd / np.maximum(cd + cs, 1e-9), 0, 1)
        out.append((f"adaptive w, clarity = {label}", "a priori", weighted(doc_minmax, w), f"median w {np.median(w):.2f}"))
    # single-list confidence: sparse weight = BM25's relative top1-top10 gap (flat BM25 top -> dense)
    # (chosen after looking at the unlabelled feature distributions of both corpora, no labels)
    for label, w in (("1 - BM25 relative gap top1-top10", 1 - fe.x["sparse_relgap10"]),
                     ("1 - BM25 peakedness@10", 1 - peakedness(L, "sparse"))):
        w = np.clip(w, 0, 1)
        out.append((f"adaptive w = {label}", "a priori (unlabelled features seen)", weighted(doc_minmax, w),
                    f"median w {np.median(w):.2f}"))
    # unsupervised per-corpus calibration on pseudo-queries (source doc = the one relevant document)
    for kind, P in corpus.pseudo.items():
        w, _ = calibrate(P, doc_minmax, GRID)
        d = mrr10(run(P, lambda L, i: single(L, i, "dense")), P.target)
        s = mrr10(run(P, lambda L, i: single(L, i, "sparse")), P.target)
        out.append((f"min-max, w calibrated on pseudo-queries '{kind}'", "pseudo-queries of the corpus",
                    lambda L, i, w=w: doc_minmax(L, i, w), f"w {w:.2f} (pseudo MRR@10 dense {d:.2f}, sparse {s:.2f})"))
    ict = [corpus.pseudo[k] for k in ("ict_title", "ict_sentence") if k in corpus.pseudo]
    if ict:
        pooled = lambda fn: float(GRID[int(np.argmax([np.mean([mrr10(run(P, lambda L, i: fn(L, i, w=float(w))), P.target)
                                                                for P in ict]) for w in GRID]))])
        w = pooled(doc_minmax)
        out.append(("min-max, w calibrated on both ICT sets", "pseudo-queries of the corpus",
                    lambda L, i, w=w: doc_minmax(L, i, w), f"w {w:.2f}"))
        wz = pooled(doc_z)
        out.append(("z-score, w calibrated on both ICT sets", "pseudo-queries of the corpus",
                    lambda L, i, w=wz: doc_z(L, i, w), f"w {wz:.2f}"))
    qvec = LAB / corpus.name / "test-qvec.npy"
    if qvec.exists():
        first = run(L, lambda L, i: doc_minmax(L, i, 0.5))
        fb = DenseFeedback(corpus, np.load(qvec)).lists(L, first, 0.6, 1)
        out.append(("dense feedback (Rocchio, top 1 of hybrid, beta 0.6) then min-max w 0.5", "SciFact",
                    lambda _L, i: doc_minmax(fb, i, 0.5), ""))
    return out


def paired_ci(a: np.ndarray, b: np.ndarray, n: int = 5000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over queries and its 95% paired-bootstrap interval."""
    diff = a - b
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, len(diff), (n, len(diff)))].mean(1)
    return float(diff.mean()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def evaluate_all(names: list[str]) -> None:
    table: dict[str, dict] = {}
    per_query: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        corpus = Corpus(name)
        for label, tuned, method, note in methods(corpus):
            row = table.setdefault(label, {"tuned": tuned})
            values = np.array([ndcg10(r, q) for r, q in zip(run(corpus.test, method), corpus.qrels)])
            per_query.setdefault(name, {})[label] = values
            row[name] = float(values.mean())
            row[f"{name} note"] = note
    print("| method | constants tuned on | " + " | ".join(f"{n} nDCG@10" for n in names) + " | notes |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " | --- |")
    for label, row in table.items():
        notes = "; ".join(f"{n}: {row[f'{n} note']}" for n in names if row.get(f"{n} note"))
        print(f"| {label} | {row['tuned']} | " + " | ".join(f"{row[n]:.4f}" for n in names) + f" | {notes} |")
    (LAB / "results.json").write_text(json.dumps(table, indent=1))
    base, dense = "min-max, w 0.5 (default, chunk level)", "dense only"
    print("\npaired bootstrap, mean nDCG@10 difference [95% interval]:")
    for label in ("min-max, w calibrated on pseudo-queries 'ict_sentence'", "min-max, w calibrated on both ICT sets",
                  "adaptive w = 1 - BM25 relative gap top1-top10", "z-score, w calibrated on both ICT sets"):
        parts = []
        for name in names:
            pq = per_query[name]
            for ref in (base, dense):
                m, lo, hi = paired_ci(pq[label], pq[ref])
                parts.append(f"{name} vs {'default' if ref == base else 'dense'} {m:+.4f} [{lo:+.4f}, {hi:+.4f}]")
        print(f"- {label}: " + "; ".join(parts))

def tm2c2(L: Lists, i: int, ub: np.ndarray, w: float = 0.5, dense_min: float = -1.0) -> np.ndarray:
    """Theoretical min-max (Bruch et al. 2023): each score mapped by (s - theoretical min) / (list max -
    theoretical min): cosine from -1 (or ``dense_min``), BM25 from 0; absent = the theoretical min.
    With ``ub`` set (per-query BM25 upper bound), BM25 is divided by it instead of by the list max."""
    ids, ds, _, ss, _ = union(L, i)
    dmax = np.nanmax(ds)
    a = np.where(np.isnan(ds), 0.0, (ds - dense_min) / max(dmax - dense_min, 1e-9))
    smax = np.nanmax(ss) if (~np.isnan(ss)).any() else 1.0
    b = np.where(np.isnan(ss), 0.0, ss / (ub[i] if ub is not None else max(smax, 1e-9)))
    return fuse(ids, a, b, w)


def peakedness(L: Lists, mode: str, k: int = 10, depth: int = DOC_DEPTH) -> np.ndarray:
    """Per query: 1 - mean min-max-normalised score of ranks 2..k (0 = flat top, 1 = one clear winner)."""
    s = L.doc[mode][1][:, :depth].astype(float)
    lo, hi = np.nanmin(s, 1, keepdims=True), s[:, :1]
    n = (s - lo) / np.maximum(hi - lo, 1e-9)
    return np.nan_to_num(1 - np.nanmean(n[:, 1:k], 1), nan=0.0)


def calibrate(pseudo: Lists, fn, grid: np.ndarray, **kw) -> tuple[float, list[float]]:
    """The weight of ``fn`` that maximises MRR@10 of the source document over pseudo-queries."""
    scores = [mrr10(run(pseudo, lambda L, i: fn(L, i, w=float(w), **kw)), pseudo.target) for w in grid]
    return float(grid[int(np.argmax(scores))]), scores


def chunk_vectors(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row ids sorted, unit vectors, doc index) of a corpus index's chunks, cached as chunks.npz."""
    path = LAB / name / "chunks.npz"
    if not path.exists():
        import lancedb

        t = lancedb.connect(str(LAB / name / "lance")).open_table("chunks").to_lance() \
            .to_table(columns=["vector", "doc_id"], with_row_id=True)
        index = {d: i for i, d in enumerate(json.loads((LAB / name / "docs.json").read_text()))}
        doc = np.array([index[d] for d in t.column("doc_id").to_pylist()], dtype=np.int32)
        rows = t.column("_rowid").to_numpy()
        vecs = np.asarray(t.column("vector").combine_chunks().flatten(), dtype=np.float32).reshape(len(rows), -1)
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        order = np.argsort(rows)
        np.savez(path, rows=rows[order], vecs=vecs[order], doc=doc[order])
    z = np.load(path)
    return z["rows"], z["vecs"], z["doc"]


class DenseFeedback:
    """Dense pseudo-relevance feedback (Rocchio in embedding space): the query vector plus ``beta``
    times the mean vector of the best chunks of the top ``fb`` documents of a first fused ranking;
    chunks re-scored exhaustively, then best chunk per document (a new dense doc list)."""

    def __init__(self, corpus: Corpus, qvec: np.ndarray) -> None:
        self.rows, self.vecs, self.chunk_doc = chunk_vectors(corpus.name)
        self.qvec = qvec / np.linalg.norm(qvec, axis=1, keepdims=True)
        self.n_docs = len(corpus.docs)

    def lists(self, L: Lists, first: list[np.ndarray], beta: float, fb: int) -> Lists:
        import copy

        out = copy.copy(L)
        docs = np.full((len(L), DOC_DEPTH), -1, dtype=np.int32)
        scores = np.full((len(L), DOC_DEPTH), np.nan, dtype=np.float32)
        # the best chunk of each feedback doc: its dense-list chunk (cached keys) with the highest score
        for i in range(len(L)):
            keys, dd = L.key["dense"][i], L.chunk["dense"][0][i]
            fbv = []
            for d in first[i][:fb]:
                hit = np.flatnonzero(dd == d)
                if len(hit):
                    fbv.append(self.vecs[np.searchsorted(self.rows, keys[hit[0]])])
            q = self.qvec[i] + (beta * np.mean(fbv, 0) if fbv else 0)
            s = self.vecs @ (q / np.linalg.norm(q))
            best = np.full(self.n_docs, -np.inf)
            np.maximum.at(best, self.chunk_doc, s)
            top = np.argsort(-best, kind="stable")[:DOC_DEPTH]
            docs[i], scores[i] = top, best[top]
        out.doc = {"dense": (docs, scores), "sparse": L.doc["sparse"]}
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["build", "cache", "ict", "eval"])
    ap.add_argument("--corpus", action="append", choices=list(CORPORA), help="default: both")
    ap.add_argument("--pseudo", default="sentence,content,droprare,keywords,title")
    ap.add_argument("--n-pseudo", type=int, default=500)
    args = ap.parse_args()
    names = args.corpus or list(CORPORA)
    if args.step == "build":
        build(names)
    elif args.step == "ict":
        build_ict(names, args.n_pseudo)
    elif args.step == "cache":
        cache(names, [k for k in args.pseudo.split(",") if k], args.n_pseudo)
    else:
        evaluate_all(names)


if __name__ == "__main__":
    main()
