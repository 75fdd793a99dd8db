"""The extractive answerer on documentation pages shaped like Sphinx's output (built here,
not read from any installed docs): permalink marks and navigation never reach the text,
headings are never quoted as sentences, a sentence that introduces a code block brings
the block with it, and a "sort by key" question is answered by the ``key=`` sentence."""

from __future__ import annotations

import re

import pytest

from ragline.generate.extractive import ExtractiveAnswerer, ExtractiveSettings, is_heading, looks_like_code
from ragline.ingest.chunkers import ChunkPlan, chunk_document
from ragline.ingest.parsers.html import parse
from ragline.types import Chunk, Hit


def sphinx_page(title: str, body: str) -> bytes:
    """A page with Sphinx's chrome around ``body``: related bars, sidebar, footer."""
    related = ('<div class="related" role="navigation" aria-label="related navigation"><h3>Navigation</h3>'
               '<ul><li class="right"><a href="genindex.html">index</a></li><li class="right">'
               '<a href="py-modindex.html">modules</a> |</li><li class="right"><a href="next.html">next</a> |</li>'
               '<li class="right"><a href="prev.html">previous</a> |</li></ul></div>')
    sidebar = ('<div class="sphinxsidebar" role="navigation" aria-label="main navigation">'
               '<div class="sphinxsidebarwrapper"><h3><a href="contents.html">Table of Contents</a></h3>'
               '<h4>Previous topic</h4><p><a href="prev.html">Prev page</a></p><h4>Next topic</h4>'
               '<p><a href="next.html">Next page</a></p><div role="note"><h3>This Page</h3><ul>'
               '<li><a href="_sources/x.rst.txt">Show Source</a></li></ul></div></div></div>')
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head><body>{related}'
            f'<div class="document"><div class="documentwrapper"><div class="bodywrapper">'
            f'<div class="body" role="main">{body}</div></div></div>{sidebar}</div>{related}'
            f'<div class="footer">&copy; Copyright 2001-2023. Last updated on Aug 26, 2023.</div>'
            f'</body></html>').encode()


def h(level: int, number: str, text: str, anchor: str) -> str:
    return (f'<section id="{anchor}"><h{level}><span class="section-number">{number} </span>{text}'
            f'<a class="headerlink" href="#{anchor}" title="Permalink to this heading">¶</a></h{level}>')


def pre(code: str) -> str:
    return (f'<div class="highlight-python3 notranslate"><div class="highlight"><pre><span></span>{code}</pre>'
            '</div></div>')


VENV = sphinx_page("Virtual Environments", "".join([
    h(1, "12.", "Virtual Environments and Packages", "venv"),
    h(2, "12.1.", "Introduction", "intro"),
    "<p>Python applications will often use packages and modules that don’t come as part of the standard "
    "library. A virtual environment is a self-contained directory tree that contains a Python installation.</p>"
    "</section>",
    h(2, "12.2.", "Creating Virtual Environments", "creating"),
    "<p>The module used to create and manage virtual environments is called <code>venv</code>.</p>"
    "<p>To create a virtual environment, decide upon a directory where you want to place it, and run the "
    "<code>venv</code> module as a script with the directory path:</p>",
    pre("python3 -m venv tutorial-env\n"),
    "<p>This will create the <code>tutorial-env</code> directory if it doesn’t exist.</p>",
    "<p>On Unix or MacOS, run:</p>",
    pre("source tutorial-env/bin/activate\n"),
    "</section></section>",
]))

SORTING = sphinx_page("Sorting HOW TO", "".join([
    h(1, "", "Sorting HOW TO", "sorting"),
    "<p>Python lists have a built-in <code>list.sort()</code> method that modifies the list in-place.</p>",
    h(2, "", "Key Functions", "key-functions"),
    "<p>Both <code>list.sort()</code> and <code>sorted()</code> have a <em>key</em> parameter to specify a "
    "function to be called on each list element prior to making comparisons.</p>"
    "<p>To sort a list of dictionaries by one of their keys, pass a key function that picks that key:</p>",
    pre("&gt;&gt;&gt; rows = [{'name': 'dave', 'age': 10}, {'name': 'jane', 'age': 12}]\n"
        "&gt;&gt;&gt; sorted(rows, key=lambda row: row['age'])\n"
        "[{'name': 'dave', 'age': 10}, {'name': 'jane', 'age': 12}]\n"),
    "</section></section>",
    h(1, "5.5.", "Dictionaries", "dictionaries"),
    "<p>Performing <code>list(d)</code> on a dictionary returns a list of all the keys used in the dictionary, "
    "in insertion order (if you want it sorted, just use <code>sorted(d)</code> instead).</p></section>",
]))

LOGGING = sphinx_page("Logging HOWTO", "".join([
    h(1, "", "Logging HOWTO", "logging"),
    h(2, "", "Configuring Logging", "configuring"),
    "<p>Here is the logging.conf file:</p>",
    pre("[loggers]\nkeys=root,simpleExample\n\n[handlers]\nkeys=consoleHandler\n\n"
        "[logger_root]\nlevel=DEBUG\nhandlers=consoleHandler\n"),
    "<p>The output is nearly identical to that of the non-config-file-based example.</p>",
    "</section></section>",
]))
NAV_RESIDUE = ("Navigation", "Table of Contents", "Previous topic", "Next topic", "This Page", "Show Source",
               "Prev page", "Next page", "next |", "Copyright", "Last updated")


def doc_hits(embedder, page: bytes, name: str) -> list[Hit]:
    doc = parse(page, f"/docs/{name}.html")
    chunks = chunk_document(doc, f"doc-{name}", ChunkPlan(), embedder.tokenizer, embedder.max_tokens)
    return [Hit(c, 1.0 - 0.01 * i) for i, c in enumerate(chunks)]


def headings_of(page: bytes) -> set[str]:
    doc = parse(page, "/docs/p.html")
    return {doc.text[s.start : s.end].strip() for s in doc.sections if s.kind == "heading"}


@pytest.fixture(scope="module")
def answerer(embedder):
    return ExtractiveAnswerer(embedder)


def test_permalink_marks_and_navigation_never_reach_the_text():
    for page in (VENV, SORTING, LOGGING):
        doc = parse(page, "/docs/p.html")
        assert "¶" not in doc.text
        for residue in NAV_RESIDUE:
            assert residue not in doc.text, residue
        for sec in doc.sections:
            assert not any(re.search(r"[¶§#]\s*$", title) for title in sec.heading_path), sec.heading_path
    doc = parse(VENV, "/docs/venv.html")
    paths = {s.heading_path for s in doc.sections}
    assert ("12. Virtual Environments and Packages", "12.2. Creating Virtual Environments") in paths


def test_headings_and_code_blocks_are_sections_of_their_own_kind():
    doc = parse(LOGGING, "/docs/logging.html")
    kinds = [(s.kind, doc.text[s.start : s.end].strip()[:20]) for s in doc.sections]
    assert kinds[:3] == [("heading", "Logging HOWTO"), ("heading", "Configuring Logging"),
                         ("text", "Here is the logging.")]
    code = next(s for s in doc.sections if s.kind == "code")
    # the block keeps its lines and its blank lines, not one run-on line
    assert doc.text[code.start : code.end].strip() == ("[loggers]\nkeys=root,simpleExample\n\n[handlers]\n"
                                                       "keys=consoleHandler\n\n[logger_root]\nlevel=DEBUG\n"
                                                       "handlers=consoleHandler")


def test_code_keeps_its_indentation():
    page = sphinx_page("T", h(1, "", "Defaults", "d") + "<p>The default is evaluated once:</p>"
                       + pre("def f(a, L=[]):\n    L.append(a)\n    return L\n") + "</section>")
    doc = parse(page, "/docs/t.html")
    assert "def f(a, L=[]):\n    L.append(a)\n    return L" in doc.text


def test_a_heading_is_never_quoted_as_a_sentence(answerer, embedder):
    for page, name, question in [(VENV, "venv", "How do I create a virtual environment?"),
                                 (SORTING, "sorting", "How do I sort a list of dictionaries by a key?"),
                                 (LOGGING, "logging", "How do I configure logging with a file?")]:
        hits = doc_hits(embedder, page, name)
        answer = answerer.answer(question, hits)
        assert answer.grounded
        quoted = [line.strip() for line in re.sub(r" \[\d+\]", "\n", answer.text).split("\n")]
        for title in headings_of(page):
            assert title not in quoted, (question, title, answer.text)
            assert not answer.text.startswith(title)


def test_a_heading_left_in_old_chunk_text_is_not_quoted(answerer):
    """Chunks indexed before the parser kept headings apart still hold "Title¶" paragraphs."""
    text = ("12.2. Creating Virtual Environments¶\n\nCreating Virtual Environments¶\n\n"
            "To create a virtual environment, run the venv module as a script with the directory path.")
    c = Chunk(id="old", doc_id="d", source="/docs/venv.html", text=text, start=0, end=len(text), ordinal=0,
              heading_path=("12. Virtual Environments and Packages¶", "12.2. Creating Virtual Environments¶"))
    answer = answerer.answer("How do I create a virtual environment?", [Hit(c, 1.0)])
    assert answer.text == ("To create a virtual environment, run the venv module as a script with the "
                           "directory path. [1]")


def test_the_code_an_answer_sentence_introduces_follows_it_under_its_citation(answerer, embedder):
    hits = doc_hits(embedder, VENV, "venv")
    answer = answerer.answer("How do I create a virtual environment?", hits)
    intro = ("To create a virtual environment, decide upon a directory where you want to place it, and run "
             "the venv module as a script with the directory path:")
    assert f"{intro}\n\npython3 -m venv tutorial-env [1]" in answer.text


def test_the_citation_of_a_sentence_with_its_code_spans_both(embedder):
    intro = "To create a virtual environment, run the venv module as a script with the directory path:"
    text = f"Some unrelated remark about packaging.\n\n{intro}\n\npython3 -m venv tutorial-env\n\nThe end."
    c = Chunk(id="v", doc_id="d", source="/docs/venv.html", text=text, start=100, end=100 + len(text), ordinal=0)
    answerer = ExtractiveAnswerer(embedder, ExtractiveSettings(max_sentences=1))
    answer = answerer.answer("How do I create a virtual environment?", [Hit(c, 1.0)])
    assert answer.text == f"{intro}\n\npython3 -m venv tutorial-env [1]"
    (cite,) = answer.citations
    assert text[cite.start - 100 : cite.end - 100] == f"{intro}\n\npython3 -m venv tutorial-env"
    assert cite.snippet == f"{intro}\n\npython3 -m venv tutorial-env"


def test_a_code_block_with_blank_lines_comes_whole(answerer, embedder):
    hits = doc_hits(embedder, LOGGING, "logging")
    answer = answerer.answer("What does the logging.conf file look like?", hits)
    assert "Here is the logging.conf file:\n\n[loggers]\nkeys=root,simpleExample\n\n[handlers]" in answer.text
    assert "handlers=consoleHandler [1]" in answer.text
    assert "The output is nearly identical" not in answer.text.split("[1]")[0]


def test_a_long_code_block_is_cut_at_a_line_boundary(embedder):
    lines = [f"setting_{i:03d} = {i}" for i in range(200)]
    text = "Here is the settings file with every option:\n\n" + "\n".join(lines)
    c = Chunk(id="long", doc_id="d", source="/docs/settings.html", text=text, start=0, end=len(text), ordinal=0)
    answerer = ExtractiveAnswerer(embedder, ExtractiveSettings(max_code_chars=200, min_score=0.2))
    answer = answerer.answer("What options does the settings file have?", [Hit(c, 1.0)])
    body = answer.text.split("\n\n", 1)[1]
    assert body.endswith("\n… [1]")
    shown = body[: -len("\n… [1]")].split("\n")
    assert shown == lines[: len(shown)] and 8 <= len(shown) <= 12  # whole lines, about 200 characters
    assert len("\n".join(shown)) <= 200


def test_sort_by_key_question_picks_the_key_sentence_and_its_code(answerer, embedder):
    hits = doc_hits(embedder, SORTING, "sorting")
    answer = answerer.answer("How do I sort a list of dictionaries by a key?", hits)
    assert answer.text.startswith("To sort a list of dictionaries by one of their keys, pass a key function "
                                  "that picks that key:\n\n>>> rows = ")
    assert "sorted(rows, key=lambda row: row['age'])" in answer.text.split("[1]")[0]
    assert not answer.text.startswith("Performing list(d)")


def test_heading_and_code_recognisers():
    assert is_heading("5.1.3. List Comprehensions")
    assert is_heading("Ascending and Descending")
    assert is_heading("Creating Virtual Environments¶")
    assert is_heading("7.1.2. The String format() Method")
    assert is_heading("key functions", {"key functions"})
    assert not is_heading("Sorts are guaranteed to be stable.")
    assert not is_heading("python3 -m venv tutorial-env")
    assert not is_heading("Debian | apt install x")
    assert looks_like_code("python3 -m venv tutorial-env")
    assert looks_like_code(">>> sorted(d)\n['a', 'b']")
    assert looks_like_code("def f(a, L=[]):\n    L.append(a)")
    assert looks_like_code("[loggers]\nkeys=root")
    assert not looks_like_code("Of course, the __init__() method may have arguments for greater flexibility. "
                               "For example,")
    assert not looks_like_code("To create a virtual environment, run the venv module:")


def test_a_table_header_row_is_not_quoted(answerer):
    text = ("Regular String | Raw string\n\"ab*\" | r\"ab*\"\n\"\\\\\\\\section\" | r\"\\\\section\"\n\n"
            "Raw strings keep every backslash, so regular expressions are written in raw string notation.")
    c = Chunk(id="t", doc_id="d", source="/docs/regex.html", text=text, start=0, end=len(text), ordinal=0)
    answer = answerer.answer("Why use raw strings for regular expressions?", [Hit(c, 1.0)])
    assert answer.grounded and "Regular String | Raw string" not in answer.text
