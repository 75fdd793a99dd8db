"""Grounded prompting without a server: budget fitting and citation validation."""

from __future__ import annotations

from ragline.generate.grounded import build_messages, fit_sources, format_source, validate_citations
from ragline.types import Chunk, Hit


def hit(i: int, text: str) -> Hit:
    return Hit(Chunk(id=f"c{i}", doc_id=f"d{i}", source=f"/docs/{i}.md", text=text, start=0, end=len(text),
                     ordinal=0, heading_path=("Guide", f"Part {i}")), 1.0 / (i + 1))


def words(text: str) -> int:
    return len(text.split())


def test_fit_drops_lowest_ranked_sources_first():
    hits = [hit(i, f"source {i} " + "word " * 100) for i in range(6)]
    kept, budget = fit_sources("q?", hits, words, window=500, reserve=100)
    assert [h.chunk.id for h in kept] == [f"c{i}" for i in range(len(kept))]  # a prefix of the ranking
    assert 1 <= len(kept) < 6
    assert budget.prompt_tokens <= 400 and budget.dropped_sources == 6 - len(kept)
    rendered = "\n".join(m["content"] for m in build_messages("q?", [format_source(i + 1, h) for i, h in enumerate(kept)]))
    assert words(rendered) == budget.prompt_tokens <= 400


def test_a_source_too_big_alone_is_skipped_not_truncated():
    hits = [hit(0, "word " * 2000), hit(1, "short passage")]
    kept, budget = fit_sources("q?", hits, words, window=300, reserve=50)
    assert [h.chunk.id for h in kept] == ["c1"]
    assert kept[0].chunk.text == "short passage"


def test_nothing_fits():
    kept, budget = fit_sources("q?", [hit(0, "word " * 500)], words, window=100, reserve=90)
    assert kept == [] and budget.used_sources == 0


def test_citations_pointing_nowhere_are_removed():
    hits = [hit(0, "a"), hit(1, "b")]
    text, cites, invalid = validate_citations("Alpha [1]. Beta [2, 7]. Gamma [9].", hits)
    assert text == "Alpha [1]. Beta [2]. Gamma ."
    assert [c.n for c in cites] == [1, 2] and [c.chunk.id for c in cites] == ["c0", "c1"]
    assert invalid == [7, 9]


def test_prompt_numbers_sources_with_their_provenance():
    msgs = build_messages("Why?", [format_source(1, hit(0, "text zero"))])
    assert msgs[0]["role"] == "system" and "[n]" in msgs[0]["content"]
    assert "[1] /docs/0.md (Guide > Part 0)\ntext zero" in msgs[1]["content"]
    assert msgs[1]["content"].rstrip().endswith("Question: Why?\nAnswer:")


def test_a_citation_points_at_the_sentence_its_claim_rests_on():
    text = ("Kettles are common in kitchens. At altitude the air pressure is lower, so water boils "
            "below 100 degrees. Tea tastes different there.")
    h = Hit(Chunk(id="c", doc_id="d", source="/docs/k.md", text=text, start=500, end=500 + len(text), ordinal=0), 1.0)
    clean, cites, _ = validate_citations("Water boils below 100 degrees at altitude because the pressure is lower [1].",
                                         [h])
    c = cites[0]
    assert c.snippet == "At altitude the air pressure is lower, so water boils below 100 degrees."
    assert (c.start, c.end) == (500 + text.index("At altitude"), 500 + text.index(" Tea"))
    # a claim sharing no word with the source cites the chunk's opening, with no made-up span
    _, cites, _ = validate_citations("Something else entirely [1].", [h])
    assert cites[0].snippet == text[:300] and cites[0].start is None
