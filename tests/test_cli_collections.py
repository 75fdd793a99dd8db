"""Collections on the command line, end to end as subprocesses with the bundled model: ingest into
collections, describe them, and query or ask over several (routed, searched each with its own
defaults, fused, every hit and citation naming its collection)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

NOTES = {
    "cooking": {
        "bread.txt": "Baking sourdough bread. Feed the starter the night before with flour and water, knead the "
                     "dough, let it rise for four hours, then bake it at 230 degrees in a covered pot.",
        "pasta.txt": "Fresh pasta. Mix two eggs with two hundred grams of flour, rest the dough for thirty minutes, "
                     "roll it thin and cut tagliatelle; boil in salted water and toss with butter and sage.",
    },
    "astronomy": {
        "mars.txt": "Mars, the red planet. Mars has two small moons, Phobos and Deimos, discovered by Asaph Hall "
                    "in 1877. Olympus Mons on Mars is the tallest volcano in the solar system.",
        "jupiter.txt": "Jupiter is the largest planet of the solar system, a gas giant with the Great Red Spot and "
                       "dozens of moons, among them Io, Europa, Ganymede and Callisto.",
    },
    "code": {
        "retry.py": 'def retry_with_backoff(fn, attempts=5):\n    """Call fn again with exponential backoff."""\n'
                    "    for i in range(attempts):\n        try:\n            return fn()\n"
                    "        except ConnectionError:\n            time.sleep(2 ** i)\n",
        "parse.py": 'def parse_port(text):\n    """A TCP port number from text."""\n    return int(text)\n',
    },
}


def write_notes(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for file, text in NOTES[name].items():
        (folder / file).write_text(text + "\n")
    return folder


@pytest.fixture
def two(cli, tmp_path):
    """Cooking (no description: routed by its centroid) and astronomy (described) collections."""
    for name in ("cooking", "astronomy"):
        assert cli.json("ingest", str(write_notes(tmp_path / "notes", name)), "--collection", name)["added"] == 2
    cli.run("collections", "describe", "astronomy", "--description", "Notes on the planets and moons of the "
            "solar system", "--meta", "topic=space", "--meta", "year=2024")
    return cli


def test_collections_are_listed_and_a_mars_question_is_routed_to_astronomy(two):
    listed = {c["name"]: c for c in two.json("collections")["collections"]}
    assert set(listed) == {"astronomy", "cooking"}
    assert listed["astronomy"]["documents"] == 2 and listed["astronomy"]["chunks"] >= 2
    assert listed["astronomy"]["metadata"] == {"topic": "space", "year": 2024}
    assert listed["cooking"]["description"] == ""

    res = two.json("query", "How many moons does Mars have?", "-c", "cooking", "-c", "astronomy",
                   "--max-collections", "1")
    route = res["route"]
    assert route["method"] == "embedding" and route["chosen"] == ["astronomy"]
    scores = {r["collection"]: r for r in route["routes"]}
    assert scores["astronomy"]["score"] > scores["cooking"]["score"]
    assert scores["cooking"]["score"] is not None and "centroid" in scores["cooking"]["reason"]
    assert "beyond max_collections 1" in scores["cooking"]["reason"]
    assert res["hits"][0]["source"].endswith("mars.txt")
    assert {h["collection"] for h in res["hits"]} == {"astronomy"}

    rules = two.json("query", "anything at all", "-c", "cooking", "-c", "astronomy", "--route", "rules",
                     "--rule", "topic=space")
    assert rules["route"]["chosen"] == ["astronomy"]

    human = two.run("query", "How many moons does Mars have?", "-c", "cooking", "-c", "astronomy").stdout
    assert "route (embedding)" in human and "[astronomy]" in human and "mars.txt" in human


def test_route_all_searches_every_collection_and_labels_each_hit(two):
    res = two.json("query", "flour, moons and planets", "-c", "cooking", "-c", "astronomy", "--route", "all")
    assert sorted(res["route"]["chosen"]) == ["astronomy", "cooking"]
    assert {h["collection"] for h in res["hits"]} == {"astronomy", "cooking"}
    for h in res["hits"]:
        assert Path(h["source"]).parent.name == h["collection"]  # each hit names the collection it came from
        assert h["collection_score"] > 0 and h["score"] > 0
    assert len({h["chunk_id"] for h in res["hits"]}) == len(res["hits"])


def test_a_collections_own_config_sets_its_retrieval_mode_over_the_main_config(cli, tmp_path):
    cli.home.mkdir(parents=True)
    (cli.home / "config.toml").write_text("[retrieve]\nk = 1\n")  # the main home's config, layered underneath
    cli.run("collections", "describe", "code", "--mode", "sparse", "--meta", "language=python")
    cli.json("ingest", str(write_notes(tmp_path / "src", "code")), "--collection", "code")
    assert cli.json("status", "--collection", "code")["mode"] == "sparse"

    res = cli.json("query", "backoff", "-c", "code", "--trace")
    assert res["route"] is None and len(res["hits"]) == 1  # k = 1 from the main config
    assert res["hits"][0]["source"].endswith("retry.py") and res["hits"][0]["collection"] == "code"
    retrieve = [s for s in res["trace"] if s["stage"] == "retrieve"]
    assert retrieve[0]["detail"]["mode"] == "sparse" and retrieve[0]["detail"]["collection"] == "code"
    assert [s["stage"] for s in retrieve[0]["detail"]["stages"] if s["stage"] in ("dense", "sparse")] == ["sparse"]
    human = cli.run("query", "backoff", "-c", "code", "--trace").stdout
    assert "collection=code, mode=sparse" in human

    cli.env["RAGLINE_RETRIEVE__MODE"] = "dense"  # the environment is above the collection's config
    res = cli.json("query", "backoff", "-c", "code", "--trace")
    assert [s for s in res["trace"] if s["stage"] == "retrieve"][0]["detail"]["mode"] == "dense"


def test_ask_over_two_collections_cites_with_collection_names(two):
    ans = two.json("ask", "Who discovered Phobos and Deimos?", "-c", "cooking", "-c", "astronomy", "--route", "all")
    assert ans["grounded"] is True and "Asaph Hall" in ans["answer"]
    assert ans["route"]["method"] == "all"
    assert ans["citations"] and ans["citations"][0]["collection"] == "astronomy"
    assert ans["citations"][0]["source"].endswith("mars.txt")

    human = two.run("ask", "Who discovered Phobos and Deimos?", "-c", "cooking", "-c", "astronomy",
                    "--no-stream").stdout
    assert "Sources" in human and "[astronomy]" in human and "mars.txt" in human


def test_unknown_collections_and_bad_names_are_clear_errors(two):
    proc = two.run("query", "Mars", "-c", "astronomy", "-c", "gardening", check=False)
    assert proc.returncode == 2
    assert "unknown collection 'gardening'" in proc.stderr and "astronomy, cooking" in proc.stderr
    assert "Traceback" not in proc.stderr
    for args in (("query", "Mars", "-c", "no/such"), ("ingest", ".", "--collection", "bad name"),
                 ("collections", "describe", "x" * 65, "--description", "too long")):
        proc = two.run(*args, check=False)
        assert proc.returncode == 2 and "invalid collection name" in proc.stderr, args
    proc = two.run("query", "Mars", "-c", "cooking", "-c", "astronomy", "--route", "rules", "--rule", "topic",
                   check=False)
    assert proc.returncode == 2 and "--rule takes key=value" in proc.stderr
    proc = two.run("status", "--collection", "gardening", check=False)
    assert proc.returncode == 2 and "unknown collection 'gardening'" in proc.stderr


def test_llm_routing_and_one_llm_answer_over_two_collections(two, llama_server):
    """The chat model routes (its pick, or a recorded fallback to every collection) and writes the
    one answer; the main home's [llm] settings reach every collection."""
    two.env.update({"RAGLINE_LLM__BASE_URL": llama_server, "RAGLINE_LLM__MODEL": "gemma",
                    "RAGLINE_LLM__CONTEXT_WINDOW": "1024", "RAGLINE_LLM__MAX_TOKENS": "128"})
    res = two.json("query", "How many moons does Mars have?", "-c", "cooking", "-c", "astronomy",
                   "--route", "llm", "--max-collections", "1")
    route = res["route"]
    assert route["method"] == "llm" and {r["collection"] for r in route["routes"]} == {"cooking", "astronomy"}
    if route.get("fallback"):  # a reply naming no collection: every one is searched, and the reason says so
        assert sorted(route["chosen"]) == ["astronomy", "cooking"]
        assert all(r["reason"].startswith("fallback") for r in route["routes"])
    else:
        assert len(route["chosen"]) == 1
    assert {h["collection"] for h in res["hits"]} <= set(route["chosen"])

    ans = two.json("ask", "Who discovered Phobos and Deimos?", "-c", "cooking", "-c", "astronomy", "--route", "all",
                   "-k", "2")
    assert ans["generator"] == "gemma"  # the main home's answerer, not the extractive one
    assert all(c["collection"] in ("astronomy", "cooking") for c in ans["citations"])
    assert all(Path(c["source"]).parent.name == c["collection"] for c in ans["citations"])
