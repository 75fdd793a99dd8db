"""MiniLMReranker with the real bundled model: ordering, long documents, cache reuse, top_n, prior."""

from __future__ import annotations

import pytest

from ragline.embed.cache import EmbeddingCache
from ragline.rerank.base import RerankError
from ragline.rerank.minilm import MiniLMReranker, fit_window, sentences

QUERY = "What causes the seasons on Earth?"
ANSWER = ("The Earth's axis is tilted by about 23 degrees. Because of this tilt, each hemisphere receives "
          "more direct sunlight for part of the year, which causes summer, and less for the rest, which causes winter.")
UNRELATED = [
    "Sourdough bread is leavened with a culture of wild yeast and lactic acid bacteria.",
    "The violin has four strings tuned in perfect fifths. It is played with a bow.",
    "Python lists are dynamic arrays; appending is amortised constant time.",
]


def test_the_passage_that_answers_ranks_first(embedder):
    docs = [*UNRELATED[:2], ANSWER, UNRELATED[2]]
    out = MiniLMReranker(embedder).rerank(QUERY, docs)
    assert [s.index for s in out][0] == 2
    assert sorted(s.index for s in out) == [0, 1, 2, 3]
    assert [s.score for s in out] == sorted((s.score for s in out), reverse=True)


def test_an_answer_buried_in_a_long_off_topic_document_is_found(embedder):
    # far beyond the 256-token window: the document is windowed and split, never truncated or refused
    filler = " ".join(f"Bread recipe step {i}: knead the dough and let it rest for an hour." for i in range(120))
    long_doc = f"{filler} {ANSWER} {filler}"
    assert embedder.tokenizer.count(long_doc) > 4 * embedder.max_tokens
    out = MiniLMReranker(embedder).rerank(QUERY, [UNRELATED[1], long_doc, UNRELATED[2]])
    assert out[0].index == 1


def test_text_without_sentence_breaks_is_cut_to_the_window(embedder):
    text = "x" * 20000 + " " + "word " * 2000  # one giant token run, then 2,000 words, no full stop
    pieces = fit_window(text, embedder.tokenizer.count, embedder.tokenizer.offsets, embedder.max_tokens)
    assert len(pieces) > 1
    assert all(embedder.tokenizer.count(p) <= embedder.max_tokens for p in pieces)
    out = MiniLMReranker(embedder).rerank("a query", [text, "", "   "])
    assert sorted(s.index for s in out) == [0, 1, 2]
    assert out[-1].index in (1, 2)  # blank documents score lowest


def test_sentences_follow_the_text(embedder):
    tok = embedder.tokenizer
    assert sentences("First one here. Second one here.", tok.count, tok.offsets, embedder.max_tokens) == [
        "First one here.", "Second one here."]


def test_a_second_call_embeds_nothing_new(embedder, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    reranker = MiniLMReranker(embedder, cache)
    docs = [ANSWER, *UNRELATED]
    first = reranker.rerank(QUERY, docs)
    stored = cache.count()
    assert stored >= len(docs) + 2  # passages and their sentences
    second = reranker.rerank("How does the tilt of the Earth's axis matter?", docs)
    assert cache.count() == stored
    assert first[0].index == 0 and second[0].index == 0
    cache.close()


def test_top_n_keeps_the_best(embedder):
    docs = [*UNRELATED, ANSWER]
    full = MiniLMReranker(embedder).rerank(QUERY, docs)
    top = MiniLMReranker(embedder).rerank(QUERY, docs, top_n=2)
    assert top == full[:2]
    assert MiniLMReranker(embedder).rerank(QUERY, []) == []


def test_a_prior_moves_a_close_call_and_must_match_the_documents(embedder):
    reranker = MiniLMReranker(embedder, passage=0.1, sentence=0.1, prior=0.8)
    docs = [ANSWER, UNRELATED[0]]
    assert reranker.rerank(QUERY, docs)[0].index == 0  # no prior given: its weight does not count
    assert reranker.rerank(QUERY, docs, prior=[0.0, 1.0])[0].index == 1
    with pytest.raises(RerankError, match="prior scores"):
        reranker.rerank(QUERY, docs, prior=[1.0])
    with pytest.raises(RerankError, match="weights"):
        MiniLMReranker(embedder, passage=0, sentence=0)


def test_feedback_pulls_the_query_toward_the_first_stage_top(embedder):
    docs = [ANSWER, UNRELATED[0], "Rye and wheat sourdough loaves need a long, slow fermentation."]
    plain = MiniLMReranker(embedder, feedback=0).features(QUERY, docs)[0]
    # the prior puts the bread passage first: feedback from it raises the other bread passage
    fed = MiniLMReranker(embedder, feedback=1.0, feedback_docs=1).features(QUERY, docs, order=[1, 0, 2])[0]
    assert fed[2] - plain[2] > 0.1
    assert fed[0] < plain[0]
