"""The extractive answerer on hand-made hits, with the real embedding model:
it quotes, cites what it quotes, and says so when the sources do not answer."""

from __future__ import annotations

import re

import pytest

from ragline.generate.extractive import NOT_FOUND, ExtractiveAnswerer, ExtractiveSettings
from ragline.types import Chunk, Hit

TEA = [
    "Green tea should be brewed with water at about 80 degrees Celsius.",
    "Boiling water scalds green tea leaves and makes the drink bitter.",
    "Steep green tea for two to three minutes before pouring.",
]
VOLCANO = [
    "A volcano erupts when magma rises through cracks in the crust.",
    "Lava is the name for magma once it reaches the surface.",
    "Iceland has many active volcanoes because it sits on a rift.",
]
TRAINS = [
    "The first public steam railway opened in England in 1825.",
    "Early locomotives burned coal to boil water into steam.",
]
CITATION = re.compile(r"(.+?) \[(\d+)\](?: |$)")


def make_hit(name: str, sentences: list[str], score: float = 0.5) -> Hit:
    text = " ".join(sentences)
    c = Chunk(id=f"chunk-{name}", doc_id=f"doc-{name}", source=f"/corpus/{name}.txt", text=text, start=0,
              end=len(text), ordinal=0)
    return Hit(c, score, {"dense": score})


def parse(answer_text: str) -> list[tuple[str, int]]:
    """(sentence, citation number) pairs; the whole answer must be made of them."""
    pairs = [(m.group(1), int(m.group(2))) for m in CITATION.finditer(answer_text)]
    rebuilt = " ".join(f"{s} [{n}]" for s, n in pairs)
    assert rebuilt == answer_text, f"answer has text outside cited sentences: {answer_text!r}"
    return pairs


@pytest.fixture(scope="module")
def answerer(embedder):
    return ExtractiveAnswerer(embedder)


def check_grounded(answer, hits, sentences_of: dict[str, list[str]]) -> list[tuple[str, int]]:
    assert answer.grounded and answer.generator == "extractive"
    assert answer.hits == tuple(hits)
    pairs = parse(answer.text)
    assert pairs
    numbers = [c.n for c in answer.citations]
    assert numbers == list(range(1, len(numbers) + 1))  # start at 1, dense, in order
    assert {n for _, n in pairs} == set(numbers)  # every citation is used, every [n] exists
    by_n = {c.n: c for c in answer.citations}
    for sentence, n in pairs:
        cited = by_n[n].chunk
        assert sentence in sentences_of[cited.id], f"{sentence!r} is not a sentence of the chunk [{n}] cites"
    for c in answer.citations:
        assert c.snippet in sentences_of[c.chunk.id]
        assert c.chunk in [h.chunk for h in hits]
    # numbers follow first appearance in the answer
    assert list(dict.fromkeys(n for _, n in pairs)) == numbers
    return pairs


def test_answer_quotes_the_relevant_chunk_and_cites_it(answerer):
    hits = [make_hit("volcano", VOLCANO), make_hit("tea", TEA), make_hit("trains", TRAINS)]
    sentences_of = {"chunk-volcano": VOLCANO, "chunk-tea": TEA, "chunk-trains": TRAINS}
    answer = answerer.answer("What temperature should the water be for green tea?", hits)
    pairs = check_grounded(answer, hits, sentences_of)
    assert pairs[0] == (TEA[0], 1)  # the best sentence leads, cited as [1] although it is the second hit
    assert answer.citations[0].chunk.id == "chunk-tea"
    assert not any(s in VOLCANO or s in TRAINS for s, _ in pairs)


def test_sentences_from_two_chunks_get_two_citations(embedder):
    answerer = ExtractiveAnswerer(embedder, ExtractiveSettings(max_sentences=4, relative=0.5, min_score=0.3))
    hits = [make_hit("trains", TRAINS), make_hit("volcano", VOLCANO)]
    sentences_of = {"chunk-trains": TRAINS, "chunk-volcano": VOLCANO}
    answer = answerer.answer("What is magma and lava, and how did steam locomotives boil water?", hits)
    pairs = check_grounded(answer, hits, sentences_of)
    assert {c.chunk.id for c in answer.citations} == {"chunk-trains", "chunk-volcano"}
    assert len(pairs) <= 4


def test_unrelated_question_is_not_answered(answerer):
    hits = [make_hit("tea", TEA), make_hit("volcano", VOLCANO)]
    answer = answerer.answer("Which team won the 1998 FIFA World Cup final?", hits)
    assert answer.grounded is False
    assert answer.text == NOT_FOUND
    assert answer.citations == ()
    assert answer.hits == tuple(hits)


def test_no_hits_is_not_found(answerer):
    answer = answerer.answer("What temperature should the water be for green tea?", [])
    assert (answer.text, answer.citations, answer.grounded) == (NOT_FOUND, (), False)


def test_hits_without_usable_sentences_are_not_found(answerer):
    answer = answerer.answer("green tea?", [make_hit("tiny", ["Tea.", "Hot."])])  # under three words each
    assert (answer.text, answer.grounded) == (NOT_FOUND, False)


def test_near_duplicate_sentences_are_not_repeated(embedder):
    first = "Green tea should be brewed with water at about 80 degrees Celsius."
    second = "Green tea should be brewed with water at around 80 degrees Celsius."
    answerer = ExtractiveAnswerer(embedder, ExtractiveSettings(max_sentences=3, relative=0.5))
    hits = [make_hit("a", [first, TEA[2]]), make_hit("b", [second, TEA[1]]), make_hit("c", [first])]
    sentences_of = {"chunk-a": [first, TEA[2]], "chunk-b": [second, TEA[1]], "chunk-c": [first]}
    answer = answerer.answer("What temperature should the water be for green tea?", hits)
    pairs = check_grounded(answer, hits, sentences_of)
    quoted = [s for s, _ in pairs]
    assert sum(s in (first, second) for s in quoted) == 1
    assert len(quoted) == len(set(quoted))


def test_max_sentences_is_respected(embedder):
    answerer = ExtractiveAnswerer(embedder, ExtractiveSettings(max_sentences=1, relative=0.0, min_score=0.2))
    hits = [make_hit("tea", TEA)]
    answer = answerer.answer("How should green tea be brewed and steeped?", hits)
    pairs = check_grounded(answer, hits, {"chunk-tea": TEA})
    assert len(pairs) == 1 and len(answer.citations) == 1


def test_whitespace_inside_a_sentence_is_normalised_not_invented(answerer):
    c = Chunk(id="ws", doc_id="d", source="/s", text="Green tea   should be brewed\twith water at about 80 degrees "
              "Celsius. Volcanoes erupt lava.", start=0, end=10, ordinal=0)
    answer = answerer.answer("What temperature should the water be for green tea?", [Hit(c, 1.0)])
    pairs = parse(answer.text)
    assert pairs[0] == ("Green tea should be brewed with water at about 80 degrees Celsius.", 1)
