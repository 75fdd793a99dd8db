"""Chunkers with the real bundled tokenizer: limits, spans, provenance, overlap, structure."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest

from ragline.ingest.chunkers import CHARS_PER_TOKEN, ChunkPlan, chunk_document, embed_text
from ragline.ingest.parsers import detect_type, parse_bytes
from ragline.types import Document, Section

SENT = "The quick brown fox jumps over the lazy dog near the riverbank at dawn. "


def _doc(text: str, sections=(), title: str = "") -> Document:
    return Document(source="mem://doc", type="text", text=text, sections=tuple(sections), metadata={"title": title})


@pytest.mark.parametrize("strategy", ["fixed", "recursive", "structure"])
def test_no_chunk_exceeds_the_model_window(embedder, strategy):
    long_para = SENT * 200  # ~3,000 tokens, no paragraph breaks
    one_giant_word = "x" * 5000  # no whitespace at all
    text = f"Intro\n\n{long_para}\n\n{one_giant_word}\n\nOutro sentence here."
    doc = _doc(text, title="A Title That Prefixes Every Chunk")
    chunks = chunk_document(doc, "d1", ChunkPlan(strategy, 256, 32), embedder.tokenizer, embedder.max_tokens)
    assert len(chunks) > 10
    for c in chunks:
        assert embedder.tokenizer.count(embed_text(c)) <= embedder.max_tokens
    # embedding them raises nothing: the embedder refuses inputs it would truncate
    embedder.embed_documents([embed_text(c) for c in chunks[:4]])


def test_spans_point_into_the_parsed_text_and_cover_it(embedder):
    text = "\n\n".join(f"Paragraph {i}. " + SENT * 6 for i in range(12))
    doc = _doc(text)
    chunks = chunk_document(doc, "d1", ChunkPlan("recursive", 128, 0), embedder.tokenizer, embedder.max_tokens)
    covered = 0
    for prev, c in zip([None, *chunks], chunks):
        assert doc.text[c.start : c.end] == c.text
        if prev is not None:
            assert c.start >= prev.end  # no overlap asked, none given
        covered += len(c.text)
    assert covered >= len(text.replace("\n\n", "")) * 0.97
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert len({c.id for c in chunks}) == len(chunks)
    assert all(c.content_hash for c in chunks)


def test_recursive_prefers_sentence_boundaries(embedder):
    text = SENT * 40
    chunks = chunk_document(_doc(text), "d", ChunkPlan("recursive", 64, 0), embedder.tokenizer, embedder.max_tokens)
    assert len(chunks) > 3
    assert all(c.text.endswith(".") for c in chunks)


def test_overlap_repeats_trailing_text(embedder):
    text = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(80))
    plan = ChunkPlan("recursive", 64, 16)
    chunks = chunk_document(_doc(text), "d", plan, embedder.tokenizer, embedder.max_tokens)
    assert any(b.start < a.end for a, b in zip(chunks, chunks[1:]))
    fixed = chunk_document(_doc(text), "d", ChunkPlan("fixed", 64, 16), embedder.tokenizer, embedder.max_tokens)
    assert all(b.start < a.end for a, b in zip(fixed, fixed[1:]))


def test_structure_keeps_heading_paths_and_pages(embedder):
    parts = [("Install", ("Guide", "Install"), 1), ("Usage", ("Guide", "Usage"), 2)]
    text, sections = "", []
    for body, path, page in parts:
        start = len(text)
        text += f"{body} details. " + SENT * 30 + "\n\n"
        sections.append(Section(start, len(text), page=page, heading_path=path))
    doc = _doc(text, sections, title="Manual")
    chunks = chunk_document(doc, "d", ChunkPlan("structure", 128, 0), embedder.tokenizer, embedder.max_tokens)
    assert {c.heading_path for c in chunks} == {("Guide", "Install"), ("Guide", "Usage")}
    for c in chunks:  # no chunk crosses a section
        sec = next(s for s in sections if s.heading_path == c.heading_path)
        assert sec.start <= c.start and c.end <= sec.end
        assert c.page == sec.page
        assert embed_text(c).startswith("Manual > Guide > " + c.heading_path[-1])


def test_title_prefix_only_where_the_chunk_lacks_it(embedder):
    text = "Mars Facts\n\n" + SENT * 60
    chunks = chunk_document(_doc(text, title="Mars Facts"), "d", ChunkPlan("recursive", 100, 0),
                            embedder.tokenizer, embedder.max_tokens)
    assert embed_text(chunks[0]) == chunks[0].text  # already starts with its title
    assert all(embed_text(c).startswith("Mars Facts\n\n") for c in chunks[1:])


def test_fingerprint_changes_with_settings_and_model():
    a = ChunkPlan("recursive", 256, 0).fingerprint("m1")
    assert a == ChunkPlan("recursive", 256, 0).fingerprint("m1")
    assert a != ChunkPlan("recursive", 200, 0).fingerprint("m1")
    assert a != ChunkPlan("fixed", 256, 0).fingerprint("m1")
    assert a != ChunkPlan("recursive", 256, 0).fingerprint("m2")


def test_recursive_balances_chunk_sizes(embedder):
    # ~1.2 windows of sentences: two even halves, not a full window plus a small tail
    text = " ".join(f"Sentence {i} says something about subject {i}." for i in range(40))
    tok = embedder.tokenizer
    total = tok.count(text)
    assert 256 < total < 380
    chunks = chunk_document(_doc(text), "d", ChunkPlan("recursive", 256, 0), tok, embedder.max_tokens)
    sizes = [tok.count(c.text) for c in chunks]
    assert len(sizes) == 2
    assert min(sizes) > 0.35 * total and max(sizes) <= 254


# ---------------------------------------------------------------- long runs and long lines

BLOBS = {
    "blob.txt": lambda run: f"Before the blob.\n\n{run}\n\nAfter the blob.",
    "blob.json": lambda run: json.dumps({run: 1, "note": "a key of a megabyte"}),
    "blob.go": lambda run: f'package main\n\nvar blob = "{run}"\n\nfunc main() {{}}\n',
}


@pytest.mark.parametrize("name", sorted(BLOBS))
@pytest.mark.parametrize("strategy", ["fixed", "recursive", "structure"])
def test_a_megabyte_without_spaces_is_cut_by_characters(embedder, name, strategy):
    # one "word" of 1 MB counts as a single unknown token: a token bound alone kept it whole
    run = "".join(random.Random(7).choices(string.ascii_letters, k=2**20))
    doc = parse_bytes(BLOBS[name](run).encode(), name, detect_type(Path(name)))
    plan = ChunkPlan(strategy, 256, 0)
    chunks = chunk_document(doc, "d", plan, embedder.tokenizer, embedder.max_tokens)
    bound = 256 * CHARS_PER_TOKEN
    assert max(len(c.text) for c in chunks) <= bound
    assert sum(len(c.text) for c in chunks) >= len(run)  # nothing dropped
    assert run[:bound // 2] in chunks[0].text + chunks[1].text
    for c in chunks:
        assert embedder.tokenizer.count(embed_text(c)) <= embedder.max_tokens


class _Recording:
    """The real tokenizer, noting the longest input it was given."""

    def __init__(self, tok) -> None:
        self.tok, self.longest = tok, 0

    def count(self, text: str) -> int:
        self.longest = max(self.longest, len(text))
        return self.tok.count(text)

    def offsets(self, text: str) -> list[tuple[int, int]]:
        self.longest = max(self.longest, len(text))
        return self.tok.offsets(text)


@pytest.mark.parametrize("strategy", ["fixed", "recursive", "structure"])
def test_a_long_line_is_tokenized_in_bounded_blocks(embedder, strategy):
    # a fast tokenizer's time and memory grow faster than the input: a 1 MB single-line CSV
    # took 27 s and 1.2 GB tokenized whole, a 4 MB one 155 s and 5.6 GB
    rng = random.Random(3)
    row = ",".join(f"{rng.choice(['alpha', 'beta', 'gamma'])}{i}" for i in range(40_000))
    doc = parse_bytes(f"a,b\n{row}\n".encode(), "wide.csv", "csv")
    assert len(doc.text) > 400_000 and "\n" not in doc.text
    tok = _Recording(embedder.tokenizer)
    chunks = chunk_document(doc, "d", ChunkPlan(strategy, 256, 32), tok, embedder.max_tokens)
    assert tok.longest <= 16_384
    assert len(chunks) > 100
    assert "column 40000: " in chunks[-1].text
    for c in chunks[:50]:
        assert embedder.tokenizer.count(embed_text(c)) <= embedder.max_tokens


def test_chunks_find_their_section_among_many(embedder):
    # 5,000 sections: each chunk's section is found by binary search, not a scan from the start
    text, sections = "", []
    for i in range(5_000):
        start = len(text)
        text += f"Heading {i}\n\nShort body {i}.\n\n"
        sections.append(Section(start, len(text), heading_path=(f"Heading {i}",)))
    doc = _doc(text, sections)
    chunks = chunk_document(doc, "d", ChunkPlan("recursive", 256, 0), embedder.tokenizer, embedder.max_tokens)
    for c in chunks[::50]:
        sec = next(s for s in sections if s.start <= c.start < s.end)
        assert c.heading_path == sec.heading_path
