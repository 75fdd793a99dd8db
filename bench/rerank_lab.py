"""Rerank lab: a second stage built only on the bundled all-MiniLM-L6-v2, measured offline.

    .venv/bin/python bench/rerank_lab.py build      # index each corpus once (default settings)
    .venv/bin/python bench/rerank_lab.py cache      # hybrid top-100 documents per test query
    .venv/bin/python bench/rerank_lab.py vectors    # passage and sentence vectors of every candidate
    .venv/bin/python bench/rerank_lab.py eval       # the nDCG@10 table of every formula (~4 min)
    .venv/bin/python bench/rerank_lab.py pipeline --corpus scifact --depth 50 [--seed] [--limit N]
                                                    # MiniLMReranker after Retriever.search: nDCG@10, latency

On two busy cores: build ~25 min, cache ~10 min, vectors ~20 min; eval reads only the caches.

Everything lives under $RERANK_LAB_HOME (default /work/bench-home), one home per corpus:
``<corpus>/`` is a ragline home (``lance/`` index, ``embeddings.sqlite`` cache) built with default
settings; ``<corpus>/rerank-lab/`` holds ``candidates.json`` (per query: the hybrid top 100 at
document level, each with doc id, best-chunk text, fused score and the dense / sparse raw scores),
``qvec.npy`` (query vectors) and ``vec.npy`` + ``vec-keys.json`` (one row per passage or sentence
text, keyed by its ``content_hash``); ``<corpus>/index-cache.sqlite`` is the embedding cache as
indexing left it (the pipeline's cold start). Results: ``rerank-lab-results.json`` beside the homes.

Honesty rule: every weight is chosen on SciFact labels only, then frozen; DBpedia is scored with
the SciFact choice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "datasets"
BASE = Path(os.environ.get("RERANK_LAB_HOME", "/work/bench-home"))
CORPORA = {"scifact": DATA / "scifact", "dbpedia": DATA / "dbpedia-entity-5k"}
DEPTH = 100


def _engine(name: str):
    from ragline.app import Engine
    from ragline.config import load_settings

    return Engine(load_settings(home=BASE / name))


def build(names: list[str]) -> None:
    """Index each corpus once into its own home (skipped when the index is complete)."""
    from ragline.evaluate.beir import index_corpus, load_beir

    for name in names:
        done = BASE / name / "indexed.json"
        if done.exists():
            print(f"{name}: index exists, skipped")
            continue
        engine = _engine(name)
        ds = load_beir(CORPORA[name])
        t0 = time.perf_counter()
        stats = index_corpus(ds, engine.indexer(engine.open_store()),
                             progress=lambda d, c: print(f"  {name}: {d} docs, {c} chunks, "
                                                         f"{time.perf_counter() - t0:.0f} s", flush=True))
        done.write_text(json.dumps(stats))
        print(name, stats, flush=True)



# ---------------------------------------------------------------------------------------------
# caching (slow, run once): candidates, query vectors, passage and sentence vectors
# ---------------------------------------------------------------------------------------------

def lab_dir(name: str) -> Path:
    out = BASE / name / "rerank-lab"
    out.mkdir(parents=True, exist_ok=True)
    return out


def cache_candidates(names: list[str]) -> None:
    """Per test query: the pipeline's hybrid top 100 documents (best chunk each), no reranker."""
    from ragline.evaluate.beir import load_beir
    from ragline.ingest.chunkers import embed_text
    from ragline.retrieve.search import Retriever, SearchRequest

    for name in names:
        path = lab_dir(name) / "candidates.json"
        if path.exists():
            print(f"{name}: candidates cached, skipped")
            continue
        engine = _engine(name)
        ds = load_beir(CORPORA[name])
        retriever = Retriever(engine.store, engine.embedder, engine.settings.retrieve)
        out, qvecs, t0 = {}, [], time.perf_counter()
        for qid, text in ds.queries.items():
            hits = retriever.search(SearchRequest(text, k=DEPTH, mode="hybrid", aggregate="document"))
            out[qid] = {"text": text, "hits": [
                {"doc": h.chunk.doc_id, "text": h.chunk.text, "embed_text": embed_text(h.chunk), "fused": h.score,
                 "dense": h.scores.get("dense"), "sparse": h.scores.get("sparse")} for h in hits]}
            qvecs.append(engine.embedder.embed_query(text))
        np.save(lab_dir(name) / "qvec.npy", np.stack(qvecs))
        path.write_text(json.dumps({"qrels": ds.qrels, "queries": out}))
        print(f"{name}: {len(out)} queries cached in {time.perf_counter() - t0:.0f} s", flush=True)


class VecStore:
    """Vectors keyed by text hash, kept on disk as one .npy matrix plus its list of hashes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.keys_path, self.vec_path = folder / "vec-keys.json", folder / "vec.npy"
        keys = json.loads(self.keys_path.read_text()) if self.keys_path.exists() else []
        self.index = {k: i for i, k in enumerate(keys)}
        self.mat = np.load(self.vec_path) if self.vec_path.exists() else np.zeros((0, 384), np.float32)

    def missing(self, texts: list[str]) -> list[str]:
        from ragline.types import content_hash

        return list(dict.fromkeys(t for t in texts if content_hash(t) not in self.index))

    def add(self, texts: list[str], vecs: np.ndarray) -> None:
        from ragline.types import content_hash

        for t in texts:
            self.index[content_hash(t)] = len(self.index)
        self.mat = np.concatenate([self.mat, vecs.astype(np.float32)])
        np.save(self.vec_path, self.mat)
        self.keys_path.write_text(json.dumps(list(self.index)))

    def get(self, texts: list[str]) -> np.ndarray:
        from ragline.types import content_hash

        return self.mat[[self.index[content_hash(t)] for t in texts]]


_UNITS: dict[str, tuple[list[str], list[str]]] = {}


def units(engine, text: str) -> tuple[list[str], list[str]]:
    """(passage windows, sentences) of a candidate text, exactly as MiniLMReranker splits it (memoised)."""
    from ragline.rerank.minilm import MiniLMReranker

    if text not in _UNITS:
        _UNITS[text] = MiniLMReranker(engine.embedder)._units(text)
    return _UNITS[text]


def cache_vectors(names: list[str], max_depth: int, batch: int = 1024) -> None:
    """Passage and sentence vectors of every candidate to ``max_depth``, best ranks first. Passages
    go through the home's embedding cache (an indexed chunk is a lookup); all land in the VecStore."""
    from ragline.embed.cache import embed_with_cache

    for name in names:
        engine = _engine(name)
        data = json.loads((lab_dir(name) / "candidates.json").read_text())["queries"]
        store = VecStore(lab_dir(name))
        passages: list[str] = []
        sents: list[str] = []
        for rank in range(max_depth):
            for q in data.values():
                if rank < len(q["hits"]):
                    p, s = units(engine, q["hits"][rank]["text"])
                    passages += p
                    sents += s
        t0 = time.perf_counter()
        todo = store.missing(passages)
        if todo:
            vecs, fresh = embed_with_cache(engine.embedder, engine.cache, todo)
            store.add(todo, vecs)
            print(f"{name}: {len(todo)} passages ({fresh} embedded) in {time.perf_counter() - t0:.0f} s", flush=True)
        todo = store.missing(sents)
        print(f"{name}: {len(todo)} sentences to embed", flush=True)
        for i in range(0, len(todo), batch):
            part = todo[i:i + batch]
            store.add(part, engine.embedder.embed_documents(part))
            print(f"  {name}: {i + len(part)}/{len(todo)} in {time.perf_counter() - t0:.0f} s", flush=True)



# ---------------------------------------------------------------------------------------------
# offline scoring: features per (query, candidate), formulas, nDCG@10 via score_query
# ---------------------------------------------------------------------------------------------

class Feats:
    """One corpus's cached candidates as [query, rank] arrays (nan where a query has fewer hits)."""

    def __init__(self, name: str, sentence_depth: int = DEPTH) -> None:
        data = json.loads((lab_dir(name) / "candidates.json").read_text())
        engine = _engine(name)
        store = VecStore(lab_dir(name))
        self.name, self.qrels = name, data["qrels"]
        queries = data["queries"]
        self.qids = list(queries)
        nq = len(self.qids)
        self.docs = [[h["doc"] for h in queries[q]["hits"]] for q in self.qids]
        shape = (nq, DEPTH)
        self.raw = {k: np.full(shape, np.nan) for k in ("fused", "dense", "sparse")}
        self.qvec = np.load(lab_dir(name) / "qvec.npy")
        self.pvec = np.zeros((nq, DEPTH, self.qvec.shape[1]), np.float32)
        self.svec: list[np.ndarray] = []  # per query: every sentence vector of its candidates
        self.owner: list[np.ndarray] = []  # per query: the rank of the candidate each sentence is from
        for i, q in enumerate(self.qids):
            sv, own = [], []
            for r, h in enumerate(queries[q]["hits"]):
                for k in self.raw:
                    self.raw[k][i, r] = np.nan if h[k] is None else h[k]
                p, s = units(engine, h["text"])
                if not p:
                    continue
                pv = store.get(p).mean(0)
                self.pvec[i, r] = pv / np.linalg.norm(pv)
                if r < sentence_depth:  # sentence vectors cached to this depth (best ranks first)
                    sv.append(store.get(s))
                    own += [r] * len(s)
            self.svec.append(np.concatenate(sv) if sv else np.zeros((0, self.qvec.shape[1]), np.float32))
            self.owner.append(np.array(own, dtype=np.int64))
        self.n = np.array([len(d) for d in self.docs])

    def passage(self, qv: np.ndarray) -> np.ndarray:
        """[query, rank] cosine of each (unit) query vector with each candidate's passage vector."""
        out = np.einsum("qrd,qd->qr", self.pvec, qv).astype(float)
        out[np.arange(DEPTH)[None, :] >= self.n[:, None]] = np.nan
        return out

    def sentence(self, qv: np.ndarray, top: int = 1) -> np.ndarray:
        """[query, rank] mean of the ``top`` best sentence cosines of each candidate."""
        out = np.full((len(self.qids), DEPTH), np.nan)
        for i in range(len(self.qids)):
            sims = self.svec[i] @ qv[i]
            own = self.owner[i]
            order = np.lexsort((-sims, own))  # by candidate, best sentence first
            own_s, sims_s = own[order], sims[order]
            starts = np.flatnonzero(np.r_[True, own_s[1:] != own_s[:-1]])
            for a, b in zip(starts, np.r_[starts[1:], len(own_s)]):
                out[i, own_s[a]] = sims_s[a:min(b, a + top)].mean()
        return out


def mm(x: np.ndarray, d: int) -> np.ndarray:
    """Per query, min-max over the first ``d`` candidates (nan -> 0: absent from that list)."""
    x = x[:, :d]
    lo, hi = np.nanmin(x, 1, keepdims=True), np.nanmax(x, 1, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.nan_to_num(np.where(hi > lo, (x - lo) / span, 1.0), nan=0.0)


def ranked_docs(F: Feats, score: np.ndarray, d: int) -> list[list[str]]:
    """The first ``d`` candidates re-ordered by ``score`` (ties keep first-stage order), then the rest."""
    out = []
    for i, docs in enumerate(F.docs):
        k = min(d, len(docs))
        order = sorted(range(k), key=lambda r: (-score[i, r], r))
        out.append([docs[r] for r in order] + docs[k:])
    return out


def measure(F: Feats, score: np.ndarray, d: int) -> dict:
    from ragline.evaluate.beir import score_query

    per = [score_query(r, F.qrels[q]) for r, q in zip(ranked_docs(F, score, d), F.qids)]
    return {"ndcg@10": float(np.mean([p["ndcg@10"] for p in per])),
            "recall@10": float(np.mean([p["recall@10"] for p in per])),
            "per_query": [p["ndcg@10"] for p in per]}


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def prf_query(F: Feats, beta: float, m: int) -> np.ndarray:
    """Rocchio in embedding space: query + beta x mean passage vector of the first-stage top m."""
    return unit(F.qvec + beta * F.pvec[:, :m].mean(1))


def base_features(F: Feats) -> dict[str, np.ndarray]:
    q = unit(F.qvec)
    return {"fused": F.raw["fused"], "dense": F.raw["dense"], "sparse": F.raw["sparse"],
            "p": F.passage(q), "s1": F.sentence(q, 1), "s2": F.sentence(q, 2), "s3": F.sentence(q, 3)}


def mix(f: dict[str, np.ndarray], d: int, **w: float) -> np.ndarray:
    return sum(wt * mm(f[k], d) for k, wt in w.items() if wt)


def weight_grid(keys: tuple[str, ...], step: float = 0.1) -> list[dict[str, float]]:
    """Every weighting of ``keys`` on a ``step`` grid that sums to 1 (each key may be 0)."""
    n = round(1 / step)
    out: list[dict[str, float]] = []

    def rec(i: int, left: int, cur: dict[str, float]) -> None:
        if i == len(keys) - 1:
            out.append({**cur, keys[i]: round(left * step, 3)})
            return
        for k in range(left + 1):
            rec(i + 1, left - k, {**cur, keys[i]: round(k * step, 3)})

    rec(0, n, {})
    return out


def fmt(w: dict[str, float]) -> str:
    return " + ".join(f"{v:g}·{k}" for k, v in w.items() if v)



DEPTHS = (20, 50, 100)
FIXED = {  # label -> weights of a mix (a single key: that signal alone)
    "first stage (hybrid fused score, no rerank)": {"fused": 1},
    "dense raw cosine of the best chunk (first stage)": {"dense": 1},
    "BM25 raw of the best chunk (first stage)": {"sparse": 1},
    "passage cosine (chunk text)": {"p": 1},
    "max sentence cosine": {"s1": 1},
    "mean of top-2 sentence cosines": {"s2": 1},
    "mean of top-3 sentence cosines": {"s3": 1},
    "0.5 passage + 0.5 max sentence": {"p": 0.5, "s1": 0.5},
    "1/3 passage + 1/3 max sentence + 1/3 fused": {"p": 1 / 3, "s1": 1 / 3, "fused": 1 / 3},
}
GRIDS = {  # family -> the signals whose weights are searched (step 0.1, sum 1) on SciFact
    "grid: passage, max sentence (no prior)": ("p", "s1"),
    "grid: passage, top-2 sentence (no prior)": ("p", "s2"),
    "grid: passage, max sentence, fused": ("p", "s1", "fused"),
    "grid: passage, top-2 sentence, fused": ("p", "s2", "fused"),
    "grid: passage, max sentence, BM25 (no fused)": ("p", "s1", "sparse"),
    "grid: passage, max sentence, fused, BM25": ("p", "s1", "fused", "sparse"),
    "grid: passage, fused (no sentence)": ("p", "fused"),
    "grid: passage, BM25 (no sentence, no fused)": ("p", "sparse"),
    "grid: passage, fused, BM25 (no sentence)": ("p", "fused", "sparse"),
}
PRF = [(b, m) for b in (0.3, 0.6, 1.0) for m in (1, 3, 5)]


def paired_ci(a: list[float], b: list[float], n: int = 5000) -> str:
    diff = np.array(a) - np.array(b)
    boot = diff[np.random.default_rng(0).integers(0, len(diff), (n, len(diff)))].mean(1)
    return f"{diff.mean():+.4f} [{np.percentile(boot, 2.5):+.4f}, {np.percentile(boot, 97.5):+.4f}]"


def evaluate_all(names: list[str], sentence_depth: int = DEPTH) -> None:
    """Every formula at every depth; grid and feedback settings chosen on SciFact, then frozen.
    Formulas with a sentence signal run only at depths within ``sentence_depth``."""
    feats = {n: Feats(n, sentence_depth) for n in names}
    base = {n: base_features(F) for n, F in feats.items()}
    rows: list[dict] = []

    def add(label: str, d: int, settings: str, scores: dict[str, np.ndarray]) -> None:
        row = {"formula": label, "depth": d, "settings": settings}
        for n, sc in scores.items():
            r = measure(feats[n], sc, d)
            row[n], row[f"{n} recall@10"], row[f"{n} per_query"] = r["ndcg@10"], r["recall@10"], r["per_query"]
        rows.append(row)
        print(f"{label} | d {d} | {settings} | " + " | ".join(f"{n} {row[n]:.4f}" for n in scores), flush=True)

    def ok(keys, d: int) -> bool:
        return d <= sentence_depth or not any(k.startswith("s") and k != "sparse" for k in keys)

    for d in sorted({*DEPTHS, sentence_depth}):
        for label, w in FIXED.items():
            if ok(w, d):
                add(label, d, fmt(w), {n: mix(base[n], d, **w) for n in names})
        for label, keys in GRIDS.items():
            if not ok(keys, d):
                continue
            best = max(weight_grid(keys), key=lambda w: measure(feats["scifact"], mix(base["scifact"], d, **w), d)["ndcg@10"])
            add(label, d, fmt(best) + " (chosen on SciFact)", {n: mix(base[n], d, **best) for n in names})
        # dense pseudo-relevance feedback: re-score passages / sentences with the Rocchio query
        prf = {}
        for beta, m in PRF:
            for n, F in feats.items():
                qv = prf_query(F, beta, m)
                prf[(n, beta, m)] = {**base[n], "p": F.passage(qv), "s1": F.sentence(qv, 1)}
        for label, w in (("PRF: passage cosine", {"p": 1}), ("PRF: 0.5 passage + 0.5 max sentence", {"p": .5, "s1": .5}),
                         ("PRF: 1/3 passage + 1/3 max sentence + 1/3 fused", {"p": 1 / 3, "s1": 1 / 3, "fused": 1 / 3}),
                         ("PRF: 0.5 passage + 0.5 fused", {"p": .5, "fused": .5})):
            if not ok(w, d):
                continue
            beta, m = max(PRF, key=lambda bm: measure(feats["scifact"], mix(prf[("scifact", *bm)], d, **w), d)["ndcg@10"])
            add(label, d, f"{fmt(w)}, beta {beta}, m {m} (chosen on SciFact)",
                {n: mix(prf[(n, beta, m)], d, **w) for n in names})
        # feedback and weights searched jointly (SciFact), the richest family
        fam = [(bm, w) for bm in PRF for w in weight_grid(("p", "s1", "fused"), 0.1)]
        if ok(("s1",), d):
            bm, w = max(fam, key=lambda c: measure(feats["scifact"], mix(prf[("scifact", *c[0])], d, **c[1]), d)["ndcg@10"])
            add("PRF + grid: passage, max sentence, fused", d, f"{fmt(w)}, beta {bm[0]}, m {bm[1]} (chosen on SciFact)",
                {n: mix(prf[(n, *bm)], d, **w) for n in names})
    ref = {r["depth"]: r for r in rows if r["formula"].startswith("first stage")}
    best = max(rows, key=lambda r: r["scifact"])
    print(f"\nbest on SciFact: {best['formula']} d {best['depth']} {best['settings']}")
    for n in names:
        print(f"  {n}: {best[n]:.4f} vs first stage {ref[best['depth']][n]:.4f}, paired diff "
              f"{paired_ci(best[f'{n} per_query'], ref[best['depth']][f'{n} per_query'])}")
    (BASE / "rerank-lab-results.json").write_text(json.dumps(rows, indent=1))
    print("\n| formula | depth | settings | " + " | ".join(f"{n} nDCG@10 | {n} R@10" for n in names) + " |")
    print("| --- | --- | --- | " + " | ".join("--- | ---" for _ in names) + " |")
    for r in rows:
        print(f"| {r['formula']} | {r['depth']} | {r['settings']} | "
              + " | ".join(f"{r[n]:.4f} | {r[f'{n} recall@10']:.3f}" for n in names) + " |")



# ---------------------------------------------------------------------------------------------
# the product's own path: Retriever.search, then MiniLMReranker, over every SciFact test query
# ---------------------------------------------------------------------------------------------

def rerank_hits_with_prior(reranker, query: str, hits: list) -> list:
    """What ``ragline.rerank.base.rerank_hits`` would do with the interface change proposed in the
    notes: pass the first-stage scores as ``prior`` to a reranker that accepts one."""
    from dataclasses import replace

    scored = reranker.rerank(query, [h.chunk.text for h in hits], prior=[h.score for h in hits])
    return [replace(hits[s.index], score=s.score,
                    scores={**hits[s.index].scores, "retrieval": hits[s.index].score, "rerank": s.score})
            for s in scored]


def pipeline(name: str, depth: int, weights: dict[str, float], limit: int | None, fresh: bool, seed: bool,
             runs: int = 2) -> None:
    """nDCG@10 and per-query latency of hybrid search + MiniLMReranker at ``depth``, twice: first with
    a reranker cache holding only the index's chunk vectors (or empty with ``fresh``), then warm."""
    import shutil

    from ragline.embed.cache import EmbeddingCache
    from ragline.evaluate.beir import load_beir, score_query
    from ragline.evaluate.metrics import percentile
    from ragline.rerank.base import rerank_hits
    from ragline.rerank.minilm import MiniLMReranker
    from ragline.retrieve.search import Retriever, SearchRequest

    engine = _engine(name)
    ds = load_beir(CORPORA[name])
    path = lab_dir(name) / "pipeline-cache.sqlite"
    for p in path.parent.glob(path.name + "*"):
        p.unlink()
    if not fresh:  # the index's own vectors only, as after `ragline ingest`
        shutil.copy(BASE / name / "index-cache.sqlite", path)
    cache = EmbeddingCache(path)
    if seed:  # the lab's sentence and passage vectors: the state after every query has been seen once
        store = VecStore(lab_dir(name))
        keys = list(store.index)
        for i in range(0, len(keys), 5000):
            cache.put_many(engine.embedder.model_id, {k: store.mat[store.index[k]] for k in keys[i:i + 5000]})
    reranker = MiniLMReranker(engine.embedder, cache, batch_size=engine.settings.rerank.batch_size, **weights)
    retriever = Retriever(engine.store, engine.embedder, engine.settings.retrieve)
    queries = list(ds.queries.items())[:limit]
    uses_prior = reranker.weights["prior"] > 0
    for run in ("first", "warm")[:runs]:
        lat, per, t_all = [], [], time.perf_counter()
        before = cache.count()
        for qid, text in queries:
            t = time.perf_counter()
            hits = retriever.search(SearchRequest(text, k=depth, mode="hybrid", aggregate="document"))
            hits = (rerank_hits_with_prior if uses_prior else rerank_hits)(reranker, text, hits)[:10]
            lat.append((time.perf_counter() - t) * 1000)
            per.append(score_query([h.chunk.doc_id for h in hits], ds.qrels[qid]))
        print(f"{name} {run} run, depth {depth}, {fmt(weights) or 'default weights'}, prior {uses_prior}: nDCG@10 "
              f"{np.mean([p['ndcg@10'] for p in per]):.4f}, recall@10 {np.mean([p['recall@10'] for p in per]):.4f}, "
              f"latency p50 {percentile(lat, 50):.0f} ms, p99 {percentile(lat, 99):.0f} ms over {len(queries)} queries "
              f"({time.perf_counter() - t_all:.0f} s; {cache.count() - before} vectors added to the cache)", flush=True)
    cache.close()


def snapshot_index_cache(names: list[str]) -> None:
    """A copy of each home's embedding cache as indexing left it (before the lab adds anything)."""
    import sqlite3

    for name in names:
        dst = BASE / name / "index-cache.sqlite"
        if not dst.exists():
            src = sqlite3.connect(str(BASE / name / "embeddings.sqlite"))
            out = sqlite3.connect(str(dst))
            src.backup(out)
            out.close()
            src.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["build", "cache", "vectors", "eval", "pipeline"])
    ap.add_argument("--corpus", action="append", choices=list(CORPORA), help="default: both")
    ap.add_argument("--depth", type=int, default=None, help="vectors: candidates per query to embed (100); pipeline: rerank depth (50)")
    ap.add_argument("--weights", default="", help="pipeline: MiniLMReranker weights, e.g. passage=0.5,sentence=0.5")
    ap.add_argument("--limit", type=int, default=None, help="pipeline: first N queries only")
    ap.add_argument("--fresh", action="store_true", help="pipeline: start from an empty reranker cache")
    ap.add_argument("--seed", action="store_true", help="pipeline: seed the reranker cache with the lab's vectors")
    ap.add_argument("--runs", type=int, default=2, help="pipeline: 1 = one pass, 2 = a pass then a warm pass")
    ap.add_argument("--sentence-depth", type=int, default=DEPTH, help="eval: sentence vectors cached to this rank")
    args = ap.parse_args()
    names = args.corpus or list(CORPORA)
    if args.step == "build":
        build(names)
    elif args.step == "cache":
        snapshot_index_cache(names)
        cache_candidates(names)
    elif args.step == "vectors":
        cache_vectors(names, args.depth or DEPTH)
    elif args.step == "eval":
        evaluate_all(names, args.sentence_depth)
    else:
        weights = {k: (int(v) if k == "feedback_docs" else float(v))
                   for k, v in (kv.split("=") for kv in args.weights.split(",") if kv)}
        pipeline(names[0], args.depth or 50, weights, args.limit, args.fresh, args.seed, args.runs)


if __name__ == "__main__":
    main()
