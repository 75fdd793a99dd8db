import json
import os
import random
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import docx
import pytest
from fpdf import FPDF

from ragline.ingest.parsers import SUPPORTED_EXTENSIONS, ParseError, code, detect_type, parse_bytes, parse_file
from ragline.types import Document


def assert_tiles(doc: Document) -> None:
    """Sections are ordered, non-empty, non-overlapping and cover all the text."""
    assert doc.sections, "no sections"
    assert doc.sections[0].start == 0
    for a, b in zip(doc.sections, doc.sections[1:]):
        assert a.end == b.start, (a, b)
    assert doc.sections[-1].end == len(doc.text)
    assert all(s.start < s.end for s in doc.sections)


def section_text(doc: Document, section) -> str:
    return doc.text[section.start : section.end]


def reason_of(path_or_call) -> str:
    with pytest.raises(ParseError) as info:
        path_or_call()
    assert isinstance(info.value.reason, str) and info.value.reason
    return info.value.reason


# ---------------------------------------------------------------- detection


def test_detect_type():
    assert detect_type(Path("a/report.PDF")) == "pdf"
    assert detect_type(Path("notes.docx")) == "docx"
    assert detect_type(Path("page.htm")) == "html"
    assert detect_type(Path("README.md")) == "markdown"
    assert detect_type(Path("log.txt")) == "text"
    assert detect_type(Path("store.py")) == "code"
    assert detect_type(Path("app.tsx")) == "code"
    assert detect_type(Path("data.tsv")) == "csv"
    assert detect_type(Path("rows.jsonl")) == "json"
    assert detect_type(Path("image.png")) is None
    assert detect_type(Path("Makefile")) is None
    for ext in (".py", ".js", ".ts", ".go", ".rs", ".java", ".c", ".h", ".cpp", ".hpp", ".cs", ".rb", ".php",
                ".sh", ".sql", ".kt", ".swift", ".scala"):
        assert SUPPORTED_EXTENSIONS[ext] == "code", ext


# ---------------------------------------------------------------- PDF


class _ReportPDF(FPDF):
    def header(self):
        self.set_font("Helvetica", size=10)
        self.cell(0, 10, "ACME Quarterly Report", new_x="LMARGIN", new_y="NEXT")

    def footer(self):
        self.set_y(-15)
        self.set_font("Helvetica", size=10)
        self.cell(0, 10, f"Page {self.page_no()}")


def _write_pdf(path: Path, pages: list[str], pdf: FPDF | None = None) -> Path:
    pdf = pdf or _ReportPDF()
    for body in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        for line in body.split("\n"):
            pdf.cell(0, 10, line, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


def test_pdf_pages_headers_and_metadata(tmp_path):
    pdf = _ReportPDF()
    pdf.set_title("Quarterly Results")
    pdf.set_creation_date(datetime(2021, 3, 4, tzinfo=timezone.utc))
    path = _write_pdf(tmp_path / "report.pdf", [
        "Revenue grew in the first quarter.\nThe retrie-\nval system was rebuilt.",
        "Costs fell in the second quarter.",
        "Outlook for the third quarter is stable.",
    ], pdf)
    doc = parse_file(path)
    assert doc.type == "pdf"
    assert doc.metadata["pages"] == 3
    assert doc.metadata["title"] == "Quarterly Results"
    assert doc.metadata["year"] == 2021
    assert_tiles(doc)
    assert [s.page for s in doc.sections] == [1, 2, 3]
    assert "second quarter" in section_text(doc, doc.sections[1])
    assert "third quarter" in section_text(doc, doc.sections[2])
    assert "ACME Quarterly Report" not in doc.text  # running header
    assert "Page 2" not in doc.text and "Page" not in doc.text  # footer with page numbers
    assert "retrieval system" in doc.text  # hyphenation joined


def test_pdf_title_falls_back_to_file_stem(tmp_path):
    path = _write_pdf(tmp_path / "plain-notes.pdf", ["Just one page of notes."], FPDF())
    doc = parse_file(path)
    assert doc.metadata["title"] == "plain-notes"
    assert "year" not in doc.metadata or isinstance(doc.metadata["year"], int)
    assert doc.text == "Just one page of notes."


def test_pdf_encrypted_with_user_password(tmp_path):
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner", user_password="secret")
    path = _write_pdf(tmp_path / "locked.pdf", ["Top secret text."], pdf)
    assert reason_of(lambda: parse_file(path)) == "encrypted PDF (password required)"


def test_pdf_with_owner_password_only_is_readable(tmp_path):
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner")
    path = _write_pdf(tmp_path / "restricted.pdf", ["Readable despite restrictions."], pdf)
    assert "Readable despite restrictions." in parse_file(path).text


def test_pdf_without_text(tmp_path):
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50)  # a drawing, no text: what a scan looks like to pypdf
    pdf.add_page()
    path = tmp_path / "scan.pdf"
    pdf.output(str(path))
    assert reason_of(lambda: parse_file(path)) == "no extractable text (scanned PDF?)"


def test_pdf_corrupt(tmp_path):
    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(random.Random(7).randbytes(4000))
    assert reason_of(lambda: parse_file(garbage)).startswith("corrupt PDF")
    real = _write_pdf(tmp_path / "real.pdf", ["Some text."], FPDF()).read_bytes()
    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes(real[: len(real) // 3])
    assert reason_of(lambda: parse_file(truncated)).startswith("corrupt PDF")


# ---------------------------------------------------------------- DOCX


def _write_docx(path: Path) -> Path:
    d = docx.Document()
    d.core_properties.title = "Design Notes"
    d.core_properties.created = datetime(2019, 5, 1)
    d.add_paragraph("Preface before any heading.")
    d.add_heading("Overview", 1)
    d.add_paragraph("The system indexes documents.")
    d.add_heading("Storage", 2)
    d.add_paragraph("Chunks are stored in SQLite.")
    table = d.add_table(rows=3, cols=2)
    for r, (name, size) in enumerate([("Name", "Size"), ("alpha", "10"), ("beta", "20")]):
        table.cell(r, 0).text = name
        table.cell(r, 1).text = size
    d.add_paragraph("Text after the table.")
    d.add_heading("Search", 1)
    d.add_paragraph("BM25 and vectors are fused.")
    d.save(str(path))
    return path


def test_docx_headings_and_table(tmp_path):
    doc = parse_file(_write_docx(tmp_path / "design.docx"))
    assert doc.type == "docx"
    assert doc.metadata["title"] == "Design Notes"
    assert doc.metadata["year"] == 2019
    assert_tiles(doc)
    by_text = {section_text(doc, s).strip(): s for s in doc.sections}
    assert by_text["Preface before any heading."].heading_path == ()
    assert by_text["Overview\n\nThe system indexes documents."].heading_path == ("Overview",)
    assert by_text["Storage\n\nChunks are stored in SQLite."].heading_path == ("Overview", "Storage")
    table = by_text["Name | Size\nalpha | 10\nbeta | 20"]
    assert table.kind == "table" and table.heading_path == ("Overview", "Storage")
    assert by_text["Text after the table."].heading_path == ("Overview", "Storage")
    assert by_text["Search\n\nBM25 and vectors are fused."].heading_path == ("Search",)
    # document order: the table sits between the paragraphs around it
    assert doc.text.index("stored in SQLite") < doc.text.index("alpha | 10") < doc.text.index("after the table")


def test_docx_corrupt(tmp_path):
    garbage = tmp_path / "garbage.docx"
    garbage.write_bytes(b"this is not a zip file at all" * 20)
    assert reason_of(lambda: parse_file(garbage)).startswith("corrupt DOCX")
    not_word = tmp_path / "other.docx"
    with zipfile.ZipFile(not_word, "w") as z:
        z.writestr("hello.txt", "a zip, but no Word document inside")
    assert reason_of(lambda: parse_file(not_word)).startswith("corrupt DOCX")


# ---------------------------------------------------------------- HTML

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Install Guide</title>
<meta property="article:published_time" content="2020-02-02T10:00:00Z">
<style>body { color: red }</style><script>var tracking = 1;</script></head>
<body>
<header><a href="/">Home</a> | <a href="/about">About us</a></header>
<nav><ul><li>Menu one</li><li>Menu two</li></ul></nav>
<main>
  <h1>Install</h1>
  <p>Run the <b>installer</b> now.<br>It takes a minute.</p>
  <h2>On Linux</h2>
  <p>Use the package manager.</p>
  <ul><li>step one</li><li>step two</li></ul>
  <table><tr><th>Distro</th><th>Command</th></tr><tr><td>Debian</td><td>apt install x</td></tr></table>
  <h3>Arch</h3><p>Use pacman.</p>
  <h2>On Mac</h2><p>Use brew.</p>
  <script>console.log("inline script");</script>
</main>
<aside>Related links</aside>
<footer>Copyright 2020 ACME</footer>
</body></html>"""


def test_html_main_content_and_headings(tmp_path):
    path = tmp_path / "guide.html"
    path.write_text(PAGE, encoding="utf-8")
    doc = parse_file(path)
    assert doc.type == "html"
    assert doc.metadata["title"] == "Install Guide"
    assert doc.metadata["year"] == 2020
    assert_tiles(doc)
    for junk in ("Home", "About us", "Menu one", "Related links", "Copyright", "tracking", "inline script", "color"):
        assert junk not in doc.text, junk
    assert "Run the installer now.\nIt takes a minute." in doc.text
    paths = {section_text(doc, s).strip().split("\n")[0]: s.heading_path for s in doc.sections}
    assert paths["Install"] == ("Install",)
    assert paths["On Linux"] == ("Install", "On Linux")
    assert paths["Arch"] == ("Install", "On Linux", "Arch")
    assert paths["On Mac"] == ("Install", "On Mac")
    table = next(s for s in doc.sections if s.kind == "table")
    assert section_text(doc, table).strip() == "Distro | Command\nDebian | apt install x"
    assert table.heading_path == ("Install", "On Linux")


def test_html_without_main_drops_class_named_boilerplate():
    page = b"""<html><head><title>T</title></head><body>
    <div id="top-navbar">Products Pricing Login</div>
    <div class="content"><h1>Hello</h1><p>Real text here.</p></div>
    <div class="cookie-banner">We use cookies</div>
    <div class="site-footer">Legal stuff</div></body></html>"""
    doc = parse_bytes(page, "page.html", "html")
    assert doc.text == "Hello\n\nReal text here."
    assert doc.sections[0].heading_path == ("Hello",)


def test_html_legacy_encoding_from_meta():
    page = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"></head>' \
           "<body><p>Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e</p></body></html>"
    doc = parse_bytes(page.encode("latin-1"), "menu.html", "html")
    assert doc.text == "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e"
    assert doc.metadata["title"] == "menu"


# ---------------------------------------------------------------- Markdown

MARKDOWN = """---
date: 2022-06-01
---
Intro before headings.

# Ragline Guide

Opening words.

## Install

```bash
# not a heading: inside a code block
pip install ragline
```

### From source

Clone it.

Usage
-----

Run it.

# Appendix

The end.
"""


def test_markdown_nested_headings(tmp_path):
    path = tmp_path / "guide.md"
    path.write_text(MARKDOWN, encoding="utf-8")
    doc = parse_file(path)
    assert doc.type == "markdown"
    assert doc.metadata["title"] == "Ragline Guide"
    assert doc.metadata["year"] == 2022
    assert_tiles(doc)
    assert "pip install ragline" in doc.text and "```bash" in doc.text  # the source is kept
    paths = [s.heading_path for s in doc.sections]
    assert paths == [
        (),
        ("Ragline Guide",),
        ("Ragline Guide", "Install"),
        ("Ragline Guide", "Install", "From source"),
        ("Ragline Guide", "Usage"),
        ("Appendix",),
    ]
    install = section_text(doc, doc.sections[2])
    assert install.startswith("## Install") and "# not a heading" in install
    assert section_text(doc, doc.sections[4]).startswith("Usage\n-----")


def test_markdown_title_falls_back_to_stem():
    doc = parse_bytes(b"## Only a level two heading\n\ntext\n", "docs/notes.md", "markdown")
    assert doc.metadata["title"] == "notes"
    assert doc.sections[0].heading_path == ("Only a level two heading",)


# ---------------------------------------------------------------- text

FRENCH = "Le caf\u00e9 est tr\u00e8s chaud; d\u00e9j\u00e0 servi \u00e0 la fen\u00eatre, na\u00efve id\u00e9e."


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "utf-8-sig", "utf-16-le"])
def test_text_encodings(tmp_path, encoding):
    path = tmp_path / "note.txt"
    path.write_bytes(f"{FRENCH}\n\nSecond   paragraph.\n".encode(encoding))
    doc = parse_file(path)
    assert doc.type == "text"
    assert doc.text == f"{FRENCH}\n\nSecond paragraph."
    assert doc.metadata["title"] == "note"
    assert_tiles(doc)


def test_text_cleaning_applied():
    doc = parse_bytes(b"The retrie-\nval\xc2\xa0step.\r\n\r\n\r\n\r\nDone.  \n", "a.txt", "text")
    assert doc.text == "The retrieval step.\n\nDone."


# ---------------------------------------------------------------- code

PYTHON = '''"""Store module."""
import os

LIMIT = 10


@cached
def helper(x):
    return x * 2


class Store:
    """Keeps items."""

    def add(self, item):
        self.items.append(item)

    async def get(self, key):
        return self.items[key]


def main():
    Store().add(helper(1))
'''

JAVASCRIPT = """// utilities
const LIMIT = 10;

export function add(a, b) {
  return a + b;
}

class Store {
  constructor() {
    this.items = [];
  }

  put(item) {
    this.items.push(item);
  }
}
"""


def test_python_functions_and_methods(tmp_path):
    path = tmp_path / "store.py"
    path.write_text(PYTHON, encoding="utf-8")
    doc = parse_file(path)
    assert doc.type == "code" and doc.metadata["language"] == "python"
    assert_tiles(doc)
    assert all(s.kind == "code" for s in doc.sections)
    found = {s.heading_path: section_text(doc, s) for s in doc.sections}
    assert found[("def helper",)].startswith("@cached\ndef helper(x):")
    assert found[("class Store", "def add")].startswith("    def add(self, item):")
    assert found[("class Store", "def get")].lstrip().startswith("async def get")
    assert found[("def main",)].startswith("def main():")
    assert found[("class Store",)].startswith("class Store:")
    assert "import os" in found[()]  # code between definitions is its own section
    assert doc.text == PYTHON.rstrip("\n").replace("\n\n\n", "\n\n")


def test_javascript_language_and_tiling(tmp_path):
    path = tmp_path / "util.js"
    path.write_text(JAVASCRIPT, encoding="utf-8")
    doc = parse_file(path)
    assert doc.metadata["language"] == "javascript"
    assert_tiles(doc)
    assert "export function add" in doc.text


def test_javascript_functions_found(tmp_path):
    doc = parse_bytes(JAVASCRIPT.encode(), "util.js", "code")
    if doc.metadata["structure"] != "tree-sitter":
        pytest.skip("no tree-sitter grammar for javascript available offline")
    assert_tiles(doc)
    paths = {s.heading_path for s in doc.sections}
    assert ("function add",) in paths
    assert ("class Store", "method put") in paths
    assert ("class Store", "method constructor") in paths


def test_code_without_grammar_is_one_section(monkeypatch):
    monkeypatch.setattr(code, "_parser", lambda lang: None)
    doc = parse_bytes(b"package main\n\nfunc main() {\n}\n", "main.go", "code")
    assert doc.metadata["language"] == "go"
    assert len(doc.sections) == 1 and doc.sections[0].end == len(doc.text)
    # Python still finds its definitions through the standard library
    assert ("def helper",) in {s.heading_path for s in parse_bytes(PYTHON.encode(), "s.py", "code").sections}


def test_python_syntax_error_falls_back_to_one_section(monkeypatch):
    monkeypatch.setattr(code, "_parser", lambda lang: None)
    doc = parse_bytes(b"def broken(:\n    pass\n", "bad.py", "code")
    assert len(doc.sections) == 1


# ---------------------------------------------------------------- tabular


def test_csv_records(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text('name,city,note\nAda,London,"likes, commas"\nLinus,Helsinki,\n', encoding="utf-8")
    doc = parse_file(path)
    assert doc.type == "csv"
    assert doc.text == "name: Ada; city: London; note: likes, commas\nname: Linus; city: Helsinki"
    assert_tiles(doc)
    assert [s.kind for s in doc.sections] == ["record", "record"]
    assert section_text(doc, doc.sections[1]) == "name: Linus; city: Helsinki"
    assert doc.metadata["columns"] == ["name", "city", "note"]


def test_csv_dialect_sniffed(tmp_path):
    semi = tmp_path / "semi.csv"
    semi.write_text("id;label\n1;first\n2;second\n", encoding="utf-8")
    assert parse_file(semi).text == "id: 1; label: first\nid: 2; label: second"
    tabs = tmp_path / "data.tsv"
    tabs.write_text("id\tlabel\n7\tseven, with comma\n", encoding="utf-8")
    assert parse_file(tabs).text == "id: 7; label: seven, with comma"


def test_json_array_nested_keys(tmp_path):
    path = tmp_path / "items.json"
    items = [
        {"id": 1, "meta": {"author": {"name": "Ada"}}, "tags": ["x", "y"], "ok": True},
        {"id": 2, "meta": {"author": {"name": "Bob"}}, "parts": [{"n": 1}, {"n": 2}], "none": None},
    ]
    path.write_text(json.dumps(items), encoding="utf-8")
    doc = parse_file(path)
    assert doc.type == "json"
    assert doc.text.split("\n") == [
        "id: 1; meta.author.name: Ada; tags: x, y; ok: true",
        "id: 2; meta.author.name: Bob; parts.0.n: 1; parts.1.n: 2; none: null",
    ]
    assert_tiles(doc)
    assert all(s.kind == "record" for s in doc.sections)


def test_json_object_is_one_record():
    doc = parse_bytes(b'{"name": "ragline", "config": {"chunk": {"size": 512}}}', "cfg.json", "json")
    assert doc.text == "name: ragline; config.chunk.size: 512"
    assert len(doc.sections) == 1


def test_jsonl_records(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "start", "at": {"h": 9}}\n\n{"event": "stop", "at": {"h": 17}}\n', encoding="utf-8")
    doc = parse_file(path)
    assert doc.text == "event: start; at.h: 9\nevent: stop; at.h: 17"
    assert len(doc.sections) == 2
    assert_tiles(doc)


# ---------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    assert reason_of(lambda: parse_file(tmp_path / "nope.pdf")) == "missing: file not found"


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text("hidden", encoding="utf-8")
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: simulate the denial
        def deny(self):
            raise PermissionError(13, "Permission denied", str(self))
        monkeypatch.setattr(Path, "read_bytes", deny)
        real_open = os.open

        def deny_open(file, *args, **kwargs):
            if os.fspath(file) == str(path):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)
        monkeypatch.setattr(os, "open", deny_open)
    try:
        assert reason_of(lambda: parse_file(path)) == "unreadable: permission denied"
    finally:
        path.chmod(0o644)


def test_directory_and_unsupported(tmp_path):
    folder = tmp_path / "folder.md"
    folder.mkdir()
    assert reason_of(lambda: parse_file(folder)) == "is a directory"
    other = tmp_path / "picture.png"
    other.write_bytes(b"\x89PNG")
    assert "unsupported" in reason_of(lambda: parse_file(other))
    assert "unsupported" in reason_of(lambda: parse_bytes(b"x", "a.xyz", "xyz"))


@pytest.mark.parametrize("name", ["empty.txt", "empty.md", "empty.py", "empty.csv", "empty.json", "empty.html",
                                  "empty.pdf", "empty.docx"])
@pytest.mark.parametrize("content", [b"", b"   \n\t\n  "])
def test_empty_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert reason_of(lambda: parse_file(path)) == "empty: no text"


def test_whitespace_only_after_decoding():
    assert reason_of(lambda: parse_bytes("  \n \u00a0 ".encode("utf-16"), "a.txt", "text")) == "empty: no text"
    assert reason_of(lambda: parse_bytes(b"<html><body>  </body></html>", "a.html", "html")) == "empty: no text"


@pytest.mark.parametrize("name", ["blob.txt", "blob.py", "blob.md", "blob.csv", "blob.json", "blob.html"])
def test_binary_content(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)) * 8)
    assert reason_of(lambda: parse_file(path)).startswith("binary content")


def test_mostly_non_text_without_nul():
    data = bytes(b % 31 + 1 for b in range(4000))  # control characters, no NUL
    assert reason_of(lambda: parse_bytes(data, "x.txt", "text")).startswith("binary content")


def test_undecodable_text():
    data = bytes(range(0x80, 0x100)) * 10  # valid in no encoding with a sane result
    assert reason_of(lambda: parse_bytes(data, "x.txt", "text")).startswith(("undecodable text", "binary content"))


def test_too_large(tmp_path):
    path = tmp_path / "huge.txt"
    with open(path, "wb") as f:
        f.truncate(int(61.2 * 2**20))  # sparse: no disk used, never read
    assert reason_of(lambda: parse_file(path)) == "too large: 61.2 MB > 50.0 MB limit; raise ingest.max_file_mb"
    small = tmp_path / "small.txt"
    small.write_text("x" * 3000, encoding="utf-8")
    assert reason_of(lambda: parse_file(small, max_bytes=1024)).startswith("too large: 0.0 MB > 0.0 MB")


def test_invalid_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"a": [1, 2', encoding="utf-8")
    assert reason_of(lambda: parse_file(path)).startswith("invalid JSON: ")
    lines = tmp_path / "bad.jsonl"
    lines.write_text('{"a": 1}\n{"b": \n', encoding="utf-8")
    assert reason_of(lambda: parse_file(lines)).startswith("invalid JSON: ")
    assert reason_of(lambda: parse_bytes(b"[]", "e.json", "json")) == "empty: no records"


def test_invalid_csv(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('a,b\n1,"unterminated quote\n', encoding="utf-8")
    assert reason_of(lambda: parse_file(path)).startswith("invalid CSV: ")
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b\n", encoding="utf-8")
    assert reason_of(lambda: parse_file(header_only)).startswith("empty: ")


@pytest.mark.parametrize("kind", ["pdf", "docx", "html", "markdown", "text", "code", "csv", "json"])
def test_random_bytes_only_raise_parse_error(kind):
    rng = random.Random(kind)
    samples = [rng.randbytes(n) for n in (1, 7, 100, 5000)]
    samples += [b"%PDF-1.7\n" + rng.randbytes(300), b"PK\x03\x04" + rng.randbytes(300), b"{" * 50, b"\xff\xfe\x00"]
    for data in samples:
        try:
            doc = parse_bytes(data, f"fuzz.{kind}", kind)
        except ParseError as exc:
            assert exc.reason
        else:
            assert isinstance(doc, Document) and doc.text.strip()
