"""Synthetic test sets (evaluate/synth.py, `ragline eval synth`) from a small corpus ingested with the
real bundled model: question types, that each reference passage really holds the answer, dedup,
provenance, and that the file goes through qa.py and `ragline eval answers`."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from tests.conftest import CLI

from ragline.app import Engine
from ragline.config import load_settings
from ragline.evaluate.qa import load_qa
from ragline.evaluate.synth import (BLANK, GENERATORS, LLMWriter, dedup, generate, index_fingerprint,
                                    normalise_question, quotas, read_chunks)
from ragline.text import content_words

DOCS = {
    "volcanoes.md": "# Volcanoes\n\nA volcano is an opening in the crust through which magma escapes. "
                    "The 1815 eruption of Mount Tambora was the largest in recorded history. "
                    "Basalt forms when lava cools quickly at the surface of the Earth.\n",
    "iceland.txt": "Iceland\n\nIceland sits on the Mid-Atlantic Ridge and has about 130 active volcanoes. "
                   "Geothermal power heats nearly 90 percent of the homes in Reykjavik. "
                   "Black basalt columns line the beach at Reynisfjara on the south coast.\n",
    "tea.txt": "Tea\n\nGreen tea is brewed with water at about 80 degrees Celsius for two minutes. "
               "Black tea needs boiling water and steeps for four minutes in a warmed pot. "
               "Matcha is a powdered green tea grown in the shade in Japan.\n",
    "coffee.md": "# Coffee\n\nEspresso is brewed by forcing hot water through finely ground coffee beans. "
                 "A single espresso shot uses about 7 grams of ground coffee. "
                 "Japan imports most of its green coffee beans from Brazil and Vietnam.\n",
}
N = 10


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    corpus = root / "corpus"
    corpus.mkdir()
    for name, text in DOCS.items():
        (corpus / name).write_text(text, encoding="utf-8")
    cli = CLI(root / "home")
    cli.run("ingest", str(corpus))
    return root / "home"


@pytest.fixture(scope="module")
def engine(home):
    return Engine(load_settings(home=home))


@pytest.fixture(scope="module")
def chunks(engine):
    return read_chunks(engine.store)


@pytest.fixture(scope="module")
def result(chunks, engine):
    return generate(chunks, n=N, seed=0, embedder=engine.embedder)


def test_all_three_types_in_the_asked_proportions(result):
    types = [it["type"] for it in result.items]
    assert len(result.items) == N
    assert result.by_type == quotas(N) == {"factoid": 6, "multi-hop": 2, "unanswerable": 2}
    assert types.count("factoid") == 6 and types.count("multi-hop") == 2 and types.count("unanswerable") == 2
    assert len({it["id"] for it in result.items}) == N
    assert result.notes == []


def test_factoid_references_are_in_their_source_chunk_and_hold_the_answer(result, chunks):
    by_id = {c.id: c for c in chunks}
    factoids = [it for it in result.items if it["type"] == "factoid"]
    for it in factoids:
        (chunk_id,) = it["provenance"]["chunk_ids"]
        chunk = by_id[chunk_id]
        (context,) = it["contexts"]
        assert context in chunk.text, it
        assert it["answerable"] is True and it["relevant_ids"] == [chunk.doc_id]
        template = it["provenance"]["template"]
        if template == "definition":
            assert it["answer"] == context and it["question"].startswith("What ")
        else:  # a cloze: putting the answer in the blank gives back the source sentence
            quoted = re.search(r'"(.*)"', it["question"]).group(1)
            assert quoted.count(BLANK) == 1 and quoted.replace(BLANK, it["answer"]) == context, it


def test_multi_hop_items_join_two_documents_through_a_shared_term(result, chunks):
    by_id = {c.id: c for c in chunks}
    for it in (i for i in result.items if i["type"] == "multi-hop"):
        a, b = (by_id[c] for c in it["provenance"]["chunk_ids"])
        assert a.doc_id != b.doc_id and it["relevant_ids"] == [a.doc_id, b.doc_id]
        assert it["contexts"][0] in a.text and it["contexts"][1] in b.text
        term = it["provenance"]["term"]
        assert term in it["question"] and all(term in content_words(ctx) for ctx in it["contexts"]), it
        assert it["answer"] == " ".join(it["contexts"])


def test_unanswerable_items_name_nothing_absent_from_the_corpus(result, chunks):
    corpus_words = set().union(*(content_words(c.text) for c in chunks))
    for it in (i for i in result.items if i["type"] == "unanswerable"):
        assert it["answerable"] is False and it["relevant_ids"] == [] and it["contexts"] == []
        assert it["answer"] is None and it["provenance"]["chunk_ids"] == []
        topic = it["provenance"]["term"]
        assert topic in it["question"]
        assert content_words(topic) and not content_words(topic) & corpus_words, topic


def test_provenance_is_in_every_item(result, chunks, engine):
    fp = index_fingerprint(chunks)
    assert result.index_fingerprint == fp and result.generator == GENERATORS["heuristic"] == "heuristic-v1"
    for it in result.items:
        p = it["provenance"]
        assert p["generator"] == "heuristic-v1" and p["seed"] == 0 and p["index_fingerprint"] == fp
        assert datetime.fromisoformat(p["created"]).tzinfo is not None
        assert len(p["chunk_ids"]) == len(it["contexts"]) and p["doc_ids"] == it["relevant_ids"]


def test_same_seed_same_set(chunks, result):
    again = generate(chunks, n=N, seed=0)
    assert [it["question"] for it in again.items] == [it["question"] for it in result.items]
    assert index_fingerprint(chunks[:-1]) != result.index_fingerprint


def test_dedup_removes_exact_and_near_duplicates(embedder):
    items = [{"question": "How many moons does Mars have?"}, {"question": "What is a volcano?"},
             {"question": "how many MOONS does Mars have"},  # same normalised text
             {"question": "What is a volcano? (the volcano)"},  # same content words
             {"question": "How many moons has Mars got?"}]  # a paraphrase: only the embeddings catch it
    kept, dropped = dedup(items)
    assert [k["question"] for k in kept] == ["How many moons does Mars have?", "What is a volcano?",
                                             "How many moons has Mars got?"]
    assert [r for _, r in dropped][0] == "same normalised question"
    kept, dropped = dedup(items, embedder=embedder)
    assert len(kept) == 2 and dropped[-1][1].startswith("embedding cosine")
    assert normalise_question("  What's  UP? ") == "what s up"


def test_a_duplicated_chunk_yields_its_questions_once(chunks):
    # the same text indexed twice (a copied file): its questions are made twice, then deduplicated
    copies = [replace(c, id=c.id + "-copy", doc_id=c.doc_id + "-copy", source=c.source + ".copy") for c in chunks]
    res = generate(list(chunks) + copies, n=N, seed=0)
    assert res.duplicates_removed >= 1
    norms = [normalise_question(it["question"]) for it in res.items]
    assert len(norms) == len(set(norms))


def test_a_tiny_corpus_gives_fewer_items_and_says_so(chunks):
    res = generate(chunks[:1], n=30, seed=1, now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert len(res.items) < 30 and res.notes
    assert all(it["provenance"]["created"] == "2026-01-01T00:00:00+00:00" for it in res.items)


def test_cli_synth_output_loads_and_runs_through_eval_answers(home, tmp_path):
    cli = CLI(home)
    out = tmp_path / "set.jsonl"
    summary = cli.json("eval", "synth", "--output", str(out), "--n", str(N), "--seed", "3")
    assert summary["items"] == N and summary["generator"] == "heuristic-v1" and summary["seed"] == 3
    assert summary["by_type"] == quotas(N)
    items = load_qa(out)
    assert len(items) == N
    assert sum(not i.answerable for i in items) == 2
    assert all(i.contexts for i in items if i.answerable)
    raw = [json.loads(line) for line in out.read_text().splitlines()]
    assert all("provenance" in r and r["type"] in ("factoid", "multi-hop", "unanswerable") for r in raw)

    data = cli.json("eval", "answers", str(out), "-k", "3")
    assert data["counts"]["items"] == N and data["counts"]["unanswerable"] == 2
    assert data["counts"]["with_relevant_ids"] == N - 2
    assert 0.0 <= data["retrieval"]["recall@3"] <= 1.0
    assert data["judge"].startswith("offline-v1")


def test_cli_synth_errors_are_one_line(home, tmp_path):
    cli = CLI(home)
    env_free = {k: v for k, v in cli.env.items() if not k.startswith("RAGLINE_LLM__")}
    cli.env = env_free
    for args, needle in ((["--generator", "llm"], "llm.base_url"), (["--generator", "magic"], "--generator"),
                         (["--n", "0"], "--n")):
        proc = cli.run("eval", "synth", "--output", str(tmp_path / "x.jsonl"), *args, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    empty = CLI(tmp_path / "empty-home")
    proc = empty.run("eval", "synth", "--output", str(tmp_path / "y.jsonl"), check=False)
    assert proc.returncode == 2 and "ragline ingest" in proc.stderr
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.llm
@pytest.mark.slow
def test_llm_generator_keeps_only_verified_items(llama_server, chunks):
    from ragline.generate.llm import ChatClient

    writer = LLMWriter(ChatClient(llama_server, "gemma", timeout_s=600), max_tokens=128)
    res = generate(chunks, n=3, seed=0, generator="llm", writer=writer)
    assert res.generator == "synth-llm-v2" and writer.calls >= 1
    assert writer.prompt_tokens and writer.prompt_tokens > 0
    by_id = {c.id: c for c in chunks}
    # the 270M model's questions are not judged here; what must hold is that every kept item's
    # evidence was found verbatim in its chunk, and that the rest were counted as rejected
    for it in res.items:
        assert it["provenance"]["generator"] == "synth-llm-v2"
        for ctx, cid in zip(it["contexts"], it["provenance"]["chunk_ids"]):
            assert ctx in by_id[cid].text
    made = res.candidates["factoid"] + res.candidates["multi-hop"]
    assert made + res.rejected == writer.calls
    assert res.by_type["unanswerable"] == 1
