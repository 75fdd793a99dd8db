"""Fusion on hand-made hit lists, and the Retriever end to end on a small real index."""

from __future__ import annotations

import pytest

from tests.conftest import memory_document

from ragline.config import RetrieveSettings
from ragline.embed.cache import EmbeddingCache
from ragline.ingest.chunkers import ChunkPlan
from ragline.ingest.indexer import Indexer
from ragline.filters import FilterError
from ragline.retrieve.fusion import Candidate, best_per_document, minmax, rrf
from ragline.retrieve.search import Retriever, SearchRequest
from ragline.store.lance import LanceStore


def hit(cid: str, score: float, doc: str | None = None) -> Candidate:
    return Candidate(cid, doc or f"doc-{cid}", score)


def order(hits) -> list[str]:
    return [h.key for h in hits]


# --------------------------------------------------------------------------------------- rrf
def test_rrf_scores_are_sums_of_reciprocal_ranks():
    dense = [hit("a", 0.9), hit("b", 0.8), hit("c", 0.7)]
    sparse = [hit("c", 12.0), hit("d", 9.0), hit("a", 1.0)]
    fused = rrf({"dense": dense, "sparse": sparse}, k=60)
    by_id = {h.key: h.score for h in fused}
    assert by_id["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert by_id["b"] == pytest.approx(1 / 62)
    assert by_id["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert by_id["d"] == pytest.approx(1 / 62)
    # a and c tie, as do b and d: ties go to the smaller chunk id
    assert order(fused) == ["a", "c", "b", "d"]
    # per-mode raw scores are kept for explanation
    assert {h.key: dict(h.scores) for h in fused}["c"] == {"dense": 0.7, "sparse": 12.0}
    assert {h.key: dict(h.scores) for h in fused}["d"] == {"sparse": 9.0}


def test_rrf_k_and_weights():
    dense = [hit("a", 1.0), hit("b", 0.5)]
    sparse = [hit("b", 3.0)]
    fused = {h.key: h.score for h in rrf({"dense": dense, "sparse": sparse}, k=1)}
    assert fused == pytest.approx({"a": 1 / 2, "b": 1 / 3 + 1 / 2})
    weighted = {h.key: h.score for h in rrf({"dense": dense, "sparse": sparse}, k=1,
                                                  weights={"dense": 2.0, "sparse": 0.5})}
    assert weighted == pytest.approx({"a": 2 / 2, "b": 2 / 3 + 0.5 / 2})


def test_rrf_ignores_input_scores_only_ranks_matter():
    a = rrf({"dense": [hit("x", 0.99), hit("y", 0.98)], "sparse": [hit("y", 50.0)]})
    b = rrf({"dense": [hit("x", 0.2), hit("y", 0.01)], "sparse": [hit("y", 0.1)]})
    assert order(a) == order(b) == ["y", "x"]
    assert [h.score for h in a] == pytest.approx([h.score for h in b])


def test_rrf_tie_break_is_deterministic_whatever_the_input_order():
    one = rrf({"dense": [hit("q", 1.0)], "sparse": [hit("p", 1.0)]})
    two = rrf({"sparse": [hit("p", 1.0)], "dense": [hit("q", 1.0)]})
    assert order(one) == order(two) == ["p", "q"]


def test_rrf_empty_lists():
    assert rrf({"dense": [], "sparse": []}) == []
    assert order(rrf({"dense": [hit("a", 1.0), hit("b", 0.5)], "sparse": []})) == ["a", "b"]


# ------------------------------------------------------------------------------------ minmax
def test_minmax_normalises_and_weights():
    dense = [hit("a", 0.9), hit("b", 0.7), hit("c", 0.5)]
    sparse = [hit("c", 10.0), hit("b", 6.0), hit("d", 2.0)]
    fused = {h.key: h.score for h in minmax({"dense": dense, "sparse": sparse}, {"dense": 0.5, "sparse": 0.5})}
    # dense: a 1, b .5, c ~0 ; sparse: c 1, b .5, d ~0 (a list's last hit keeps a tiny floor > 0)
    assert fused == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.0}, abs=1e-5)
    assert fused["d"] > 0.0  # returned by sparse, so above a chunk no list returned
    fused = {h.key: h.score for h in minmax({"dense": dense, "sparse": sparse}, {"dense": 0.8, "sparse": 0.2})}
    assert fused == pytest.approx({"a": 0.8, "b": 0.8 * 0.5 + 0.2 * 0.5, "c": 0.2, "d": 0.0}, abs=1e-5)


def test_minmax_with_all_weight_on_one_mode_follows_that_mode():
    dense = [hit("a", 0.9), hit("b", 0.8), hit("c", 0.6), hit("d", 0.1)]
    sparse = [hit("d", 7.0), hit("c", 5.0), hit("a", 4.0), hit("b", 1.0)]
    lists = {"dense": dense, "sparse": sparse}
    assert order(minmax(lists, {"dense": 1.0, "sparse": 0.0})) == ["a", "b", "c", "d"]
    assert order(minmax(lists, {"dense": 0.0, "sparse": 1.0})) == ["d", "c", "a", "b"]


def test_minmax_weight_one_keeps_every_dense_hit_ahead_of_sparse_only_chunks():
    dense = [hit("m", 0.9), hit("n", 0.5), hit("z", 0.1)]
    sparse = [hit("a", 3.0), hit("n", 2.0)]
    fused = order(minmax({"dense": dense, "sparse": sparse}, {"dense": 1.0, "sparse": 0.0}))
    assert fused[:3] == ["m", "n", "z"]


def test_minmax_chunk_in_one_list_only_and_single_item_lists():
    dense = [hit("a", 0.9), hit("b", 0.3)]
    sparse = [hit("s", 4.0)]  # one item: span 0, normalised to 1
    fused = minmax({"dense": dense, "sparse": sparse}, {"dense": 0.6, "sparse": 0.4})
    assert {h.key: h.score for h in fused} == pytest.approx({"a": 0.6, "s": 0.4, "b": 0.0}, abs=1e-5)
    assert order(fused) == ["a", "s", "b"]
    assert dict(fused[1].scores) == {"sparse": 4.0}
    assert minmax({"dense": [], "sparse": []}, {"dense": 0.5, "sparse": 0.5}) == []


def test_minmax_ties_are_broken_by_chunk_id():
    dense = [hit("y", 0.9), hit("x", 0.1)]
    sparse = [hit("x", 5.0), hit("y", 1.0)]
    fused = minmax({"dense": dense, "sparse": sparse}, {"dense": 0.5, "sparse": 0.5})
    assert [h.score for h in fused] == pytest.approx([0.5, 0.5])
    assert order(fused) == ["x", "y"]


# -------------------------------------------------------------------------- best_per_document
def test_best_per_document_keeps_first_chunk_of_each_document_in_order():
    hits = [hit("1", 0.9, "A"), hit("2", 0.8, "B"), hit("3", 0.7, "A"), hit("4", 0.6, "C"), hit("5", 0.5, "B")]
    kept = best_per_document(hits)
    assert order(kept) == ["1", "2", "4"]
    assert [h.doc_id for h in kept] == ["A", "B", "C"]
    assert best_per_document([]) == []


# ------------------------------------------------------------------------- Retriever end to end
DOCS = {
    "tea": ("Brewing green tea", "text", 2018,
            "Green tea leaves should be steeped in water at about 80 degrees Celsius. "
            "Boiling water scalds the leaves and makes the tea bitter.\n\n"
            "Steep green tea for two to three minutes. Longer steeping releases more tannins.\n\n"
            "Matcha is a powdered green tea that is whisked rather than steeped."),
    "photosynthesis": ("How plants make food", "markdown", 2021,
                       "Photosynthesis is the process by which plants turn sunlight into chemical energy. "
                       "Chlorophyll in the leaves absorbs red and blue light.\n\n"
                       "Plants take in carbon dioxide and water and release oxygen during photosynthesis.\n\n"
                       "The sugars made by photosynthesis feed the plant and, in turn, the animals that eat it."),
    "volcano": ("Volcanoes", "text", 2015,
                "A volcano erupts when molten rock called magma rises through the crust. "
                "Lava is magma that has reached the surface.\n\n"
                "Explosive eruptions throw ash and pumice high into the atmosphere.\n\n"
                "Iceland sits on a rift and has many active volcanoes."),
    "python": ("Python lists", "markdown", 2023,
               "A Python list is an ordered, mutable sequence. Append adds an item at the end.\n\n"
               "List comprehensions build a new list from an iterable in one expression.\n\n"
               "Sorting a list in place uses the sort method; sorted returns a new list."),
    "football": ("The offside rule", "text", 2020,
                 "In football a player is offside when nearer the goal line than the ball and the "
                 "second-last defender.\n\n"
                 "Being offside is not an offence in itself; the player must be involved in active play.\n\n"
                 "A goal kick, throw-in or corner kick cannot be offside."),
    "bread": ("Sourdough bread", "text", 2022,
              "Sourdough bread rises thanks to wild yeast and lactic acid bacteria in the starter.\n\n"
              "Feed the starter with flour and water every day to keep it active.\n\n"
              "A long cold proof in the fridge deepens the sour flavour of the loaf."),
}


def make_item(doc_id: str, title: str, dtype: str, year: int, body: str):
    return memory_document(doc_id, title, body, dtype, year)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("search")
    store = LanceStore(root / "lance", embedder.dim)
    cache = EmbeddingCache(root / "embeddings.sqlite")
    indexer = Indexer(store, embedder, cache, ChunkPlan(size=32))  # small chunks: several per document
    result = indexer.index([make_item(d, *v) for d, v in DOCS.items()])
    store.finish()
    assert result.chunks > len(DOCS)
    return store


@pytest.fixture
def retriever(indexed, embedder):
    return Retriever(indexed, embedder, RetrieveSettings())


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
@pytest.mark.parametrize("question, expected", [
    ("how does photosynthesis let plants use sunlight", "photosynthesis"),
    ("what water temperature for steeping green tea", "tea"),
    ("when is a football player offside", "football"),
])
def test_every_mode_finds_the_relevant_document(retriever, mode, question, expected):
    hits = retriever.search(SearchRequest(question, k=5, mode=mode))
    assert hits, f"{mode} found nothing"
    assert hits[0].chunk.doc_id == expected
    assert all(hits[i].score >= hits[i + 1].score for i in range(len(hits) - 1))


def test_modes_report_their_own_scores(retriever):
    q = "magma lava eruption volcano"
    dense = retriever.search(SearchRequest(q, k=3, mode="dense"))
    sparse = retriever.search(SearchRequest(q, k=3, mode="sparse"))
    hybrid = retriever.search(SearchRequest(q, k=3, mode="hybrid"))
    assert all(set(h.scores) == {"dense"} for h in dense)
    assert all(set(h.scores) == {"sparse"} for h in sparse)
    assert all(set(h.scores) <= {"dense", "sparse"} and h.scores for h in hybrid)
    assert any(set(h.scores) == {"dense", "sparse"} for h in hybrid)
    assert all(0.0 <= h.score <= 1.0 for h in hybrid)  # minmax with weights summing to 1


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_document_aggregation_yields_unique_documents(retriever, mode):
    q = "green tea steeping water"
    chunks = retriever.search(SearchRequest(q, k=10, mode=mode, aggregate="chunk"))
    per_doc = [h.chunk.doc_id for h in chunks]
    assert len(per_doc) > len(set(per_doc))  # chunk mode repeats documents here...
    docs = retriever.search(SearchRequest(q, k=10, mode=mode, aggregate="document"))
    ids = [h.chunk.doc_id for h in docs]
    assert len(ids) == len(set(ids)) == len(DOCS)  # ...document mode does not, and loses none
    assert ids[0] == "tea"
    # each document is represented by its best chunk, in the chunk ranking's order
    first_seen = list(dict.fromkeys(per_doc))
    assert ids[: len(first_seen)] == first_seen


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_filter_restricts_results(retriever, mode):
    q = "how does photosynthesis let plants use sunlight and water"
    hits = retriever.search(SearchRequest(q, k=10, mode=mode, filter="year < 2020"))
    assert hits
    assert {h.chunk.doc_id for h in hits} <= {"tea", "volcano"}
    typed = retriever.search(SearchRequest(q, k=10, mode=mode, filter='type = "markdown"'))
    assert typed and {h.chunk.doc_id for h in typed} <= {"photosynthesis", "python"}
    assert typed[0].chunk.doc_id == "photosynthesis"


def test_bad_filter_raises_filter_error(retriever):
    with pytest.raises(FilterError, match="unknown field"):
        retriever.search(SearchRequest("tea", filter='colour = "red"'))


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_k_is_respected(retriever, indexed, mode, k):
    q = "water plants green tea volcano list football bread"
    hits = retriever.search(SearchRequest(q, k=k, mode=mode))
    assert len(hits) == k
    assert len({h.chunk.id for h in hits}) == k
    assert len(retriever.search(SearchRequest(q, k=k, mode=mode, aggregate="document"))) == min(k, len(DOCS))


def test_request_applies_settings_and_overrides(indexed, embedder):
    r = Retriever(indexed, embedder, RetrieveSettings(k=4, mode="sparse", aggregate="document"))
    req = r.request("bread starter")
    assert (req.k, req.mode, req.aggregate) == (4, "sparse", "document")
    req = r.request("bread starter", k=2, mode="dense", filter=None)
    assert (req.k, req.mode, req.filter) == (2, "dense", None)
    assert len(r.search(req)) == 2


def test_rrf_fusion_setting_is_used(indexed, embedder):
    r = Retriever(indexed, embedder, RetrieveSettings(fusion="rrf", rrf_k=60))
    hits = r.search(SearchRequest("sourdough starter wild yeast", k=5, mode="hybrid"))
    assert hits[0].chunk.doc_id == "bread"
    assert all(h.score <= 2 / 61 + 1e-12 for h in hits)  # two lists, best possible rank 1 in each
