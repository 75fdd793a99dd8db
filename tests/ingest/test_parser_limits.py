"""Hostile and oversized input: decompression bombs, text caps, pathological
shapes that used to take minutes or lose text. Every file is built here."""

from __future__ import annotations

import io
import json
import random
import struct
import zipfile
import zlib

import pytest

from ragline.ingest.parsers import ParseError, base, parse_bytes

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_CT = ('<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
       'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
       'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName='
       '"/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.'
       'document.main+xml"/><Override PartName="/word/styles.xml" ContentType="application/vnd.'
       'openxmlformats-officedocument.wordprocessingml.styles+xml"/></Types>')
_RELS = ('<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
         '2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/'
         '2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>')


def reason(data: bytes, kind: str, source: str = "f") -> str:
    with pytest.raises(ParseError) as info:
        parse_bytes(data, f"{source}.{kind}", kind)
    return info.value.reason


def docx_bytes(body: str, extra: dict[str, str | bytes] | None = None) -> bytes:
    """A minimal Word package whose document body is ``body`` (WordprocessingML)."""
    xml = f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{W}"><w:body>{body}</w:body></w:document>'
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("[Content_Types].xml", _CT)
        z.writestr("_rels/.rels", _RELS)
        z.writestr("word/document.xml", xml)
        for name, content in (extra or {}).items():
            z.writestr(name, content)
    return buf.getvalue()


def para(text: str) -> str:
    return f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>"


@pytest.fixture
def limits():
    """Set parse limits for one test and put the defaults back after it."""
    saved = base.LIMITS
    yield base.configure
    base.LIMITS = saved


# ---------------------------------------------------------------- DOCX


def test_docx_text_bomb_is_refused_before_it_is_expanded():
    # 48 MB of text in one run compresses to ~50 KB: refused from the zip's own numbers
    data = docx_bytes(para("lol " * 12_000_000))
    assert len(data) < 250_000
    why = reason(data, "docx")
    assert why.startswith("decompression bomb: word/document.xml expands to 45.8 MB")
    assert "more than 200 times" in why


def test_docx_total_unpacked_size_is_capped(limits):
    limits(max_unpacked_mb=1)
    words = " ".join(f"w{i}" for i in range(200_000))  # ~1.3 MB, compresses only a few times
    why = reason(docx_bytes(para(words)), "docx")
    assert why.startswith("decompression bomb: word/document.xml expands to")
    assert "limit 1.0 MB per file" in why


def _lie_about_size(data: bytes, member: str, size: int) -> bytes:
    """``data`` with ``member``'s uncompressed size rewritten in both zip headers."""
    out = bytearray(data)
    name = member.encode()
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = 0
        while (pos := out.find(sig, pos)) != -1:
            name_at = pos + (30 if sig == b"PK\x03\x04" else 46)
            if out[name_at : name_at + len(name)] == name:
                struct.pack_into("<I", out, pos + offset, size)
            pos += 4
    return bytes(out)


def test_docx_header_that_understates_a_member_does_not_let_it_through():
    honest = docx_bytes(para("lol " * 12_000_000))
    lying = _lie_about_size(honest, "word/document.xml", 100_000)
    assert zipfile.ZipFile(io.BytesIO(lying)).getinfo("word/document.xml").file_size == 100_000
    # the reader stops at the stated size and the checksum gives the lie away
    assert reason(lying, "docx").startswith("corrupt DOCX")


def test_docx_text_over_the_cap_fails_loudly(limits):
    limits(max_text_chars=5_000)
    body = "".join(para(f"Paragraph {i} says something.") for i in range(400))
    assert reason(docx_bytes(body), "docx") == "too much text: over 5,000 characters; raise ingest.max_text_chars"
    limits(max_text_chars=50_000)
    assert "Paragraph 399 says something." in parse_bytes(docx_bytes(body), "f.docx", "docx").text


def test_docx_text_run_over_10_mb_is_read_then_capped():
    # a single 12 MB text node: libxml2 refuses those by default ("corrupt"); we read it and the
    # text cap decides. Random-ish words keep the compression ratio ordinary.
    hexed = random.Random(0).randbytes(5 * 2**20).hex()
    words = " ".join(hexed[i : i + 8] for i in range(0, len(hexed), 8))
    assert len(words) > 10 * 2**20
    doc = parse_bytes(docx_bytes(para(words)), "f.docx", "docx")
    assert doc.text == words


def test_docx_many_empty_paragraphs_parse_fast():
    # 200,000 empty paragraphs took 123 s through python-docx (0.5 ms each); streamed, ~1 s
    data = docx_bytes("<w:p/>" * 200_000 + para("The only text is at the end."))
    assert parse_bytes(data, "f.docx", "docx").text == "The only text is at the end."


def test_docx_millions_of_empty_paragraphs_are_a_bomb():
    # the fuzzer's 66 KB file: 20 MB of <w:p/>, a few hundred times its compressed size
    why = reason(docx_bytes("<w:p/>" * 3_300_000), "docx")
    assert why.startswith("decompression bomb: word/document.xml expands to 18.9 MB from")


def test_docx_entity_bomb_is_refused():
    lol = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    xml = (f'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY l0 "lol">{lol}]><w:document xmlns:w="{W}"><w:body>'
           f'{para("&l9;")}</w:body></w:document>')
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("_rels/.rels", _RELS)
        z.writestr("word/document.xml", xml)
    assert reason(buf.getvalue(), "docx").startswith("corrupt DOCX")


def test_docx_media_is_never_unpacked(limits):
    # a 40 MB "image" beside a small document, a thousand times its packed size: python-docx
    # loaded every part; only the parts with text are read now, so a 1 MB cap is plenty
    limits(max_unpacked_mb=1)
    data = docx_bytes(para("Caption."), {"word/media/image1.png": b"\0" * (40 * 2**20)})
    assert parse_bytes(data, "f.docx", "docx").text == "Caption."


def test_docx_text_python_docx_skipped_is_kept():
    body = (
        '<w:sdt><w:sdtContent><w:p><w:r><w:t>In a content control.</w:t></w:r></w:p></w:sdtContent></w:sdt>'
        '<w:p><w:r><w:t xml:space="preserve">Tracked </w:t></w:r><w:ins><w:r><w:t>insertion</w:t></w:r></w:ins>'
        '<w:del><w:r><w:delText>deleted</w:delText></w:r></w:del><w:r><w:t>.</w:t></w:r></w:p>'
        '<w:p><w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr>'
        '<w:r><w:t>A</w:t><w:tab/><w:t>B</w:t></w:r></w:p>'
    )
    text = parse_bytes(docx_bytes(body), "f.docx", "docx").text
    assert text == "In a content control.\n\nTracked insertion.\n\nA B"


def test_docx_merged_cells_and_nested_tables():
    def cell(text: str, props: str = "") -> str:
        return f"<w:tc>{f'<w:tcPr>{props}</w:tcPr>' if props else ''}{para(text) if text else '<w:p/>'}</w:tc>"

    nested = f"<w:tbl><w:tr>{cell('inner')}</w:tr></w:tbl>"
    restart, cont, span2 = '<w:vMerge w:val="restart"/>', "<w:vMerge/>", '<w:gridSpan w:val="2"/>'
    body = (
        "<w:tbl>"
        f"<w:tr>{cell('Region', restart)}{cell('Q1 and Q2', span2)}</w:tr>"
        f"<w:tr>{cell('', cont)}{cell('10')}<w:tc>{para('20')}{nested}</w:tc></w:tr>"
        "</w:tbl>"
    )
    doc = parse_bytes(docx_bytes(body), "f.docx", "docx")
    assert doc.text == "Region | Q1 and Q2\nRegion | 10 | 20 inner"
    assert doc.sections[0].kind == "table"


def test_docx_headings_from_styles():
    styles = (f'<w:styles xmlns:w="{W}">'
              '<w:style w:type="paragraph" w:default="1" w:styleId="Normal"><w:name w:val="Normal"/></w:style>'
              '<w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="heading 1"/></w:style>'
              '<w:style w:type="paragraph" w:styleId="Mine"><w:name w:val="My Heading"/>'
              '<w:basedOn w:val="Heading1"/></w:style></w:styles>')
    doc_rels = ('<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
                'relationships/styles" Target="styles.xml"/></Relationships>')
    body = ('<w:p><w:pPr><w:pStyle w:val="Mine"/></w:pPr><w:r><w:t>Intro</w:t></w:r></w:p>'
            + para("Body text."))
    doc = parse_bytes(docx_bytes(body, {"word/styles.xml": styles, "word/_rels/document.xml.rels": doc_rels}),
                      "f.docx", "docx")
    assert doc.sections[0].heading_path == ("Intro",)
    assert doc.text == "Intro\n\nBody text."


def test_not_a_word_package():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("_rels/.rels", _RELS)
        z.writestr("word/document.xml", '<workbook xmlns="urn:x"><sheet>cells</sheet></workbook>')
    assert reason(buf.getvalue(), "docx") == "corrupt DOCX: not a Word document (main part is workbook)"


# ---------------------------------------------------------------- PDF


def pdf_bytes(content: bytes, pages: int = 1) -> bytes:
    """A PDF whose pages all show one Flate-compressed content stream."""
    packed = zlib.compress(content, 9)
    kids = " ".join(f"{4 + i} 0 R" for i in range(pages))
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream"]
    font = 4 + pages
    objs += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R "
             b"/Resources << /Font << /F1 %d 0 R >> >> >>" % font] * pages
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)


SHOW = b"BT /F1 12 Tf 72 712 Td (Hello from a real page) Tj ET\n"


def test_pdf_builder_gives_a_readable_page():
    assert parse_bytes(pdf_bytes(SHOW), "f.pdf", "pdf").text == "Hello from a real page"


def test_pdf_content_that_inflates_hundreds_of_times_is_a_bomb():
    # 28 KB that inflate to 9 MB of text operators: pypdf took 256 s and gave 7.8 M characters
    data = pdf_bytes(b"BT /F1 12 Tf 72 712 Td " + b"(lol lol lol lol lol lol lol lol lol lol) Tj T* " * 200_000 + b"ET")
    assert len(data) < 64 * 1024
    why = reason(data, "pdf")
    assert why.startswith("decompression bomb: page content expands to 9.2 MB from a")
    assert why.endswith("(more than 200 times)")


def test_pdf_stream_past_pypdfs_own_limit_is_named_a_bomb():
    why = reason(pdf_bytes(SHOW + b" " * 80_000_000), "pdf")
    assert why.startswith("decompression bomb: a stream inflates past pypdf's limit")


def test_pdf_text_over_the_cap_fails_loudly(limits):
    limits(max_text_chars=100)
    data = pdf_bytes(SHOW, pages=8)  # 8 x 22 characters
    assert reason(data, "pdf") == "too much text: over 100 characters; raise ingest.max_text_chars"


# ---------------------------------------------------------------- text formats


@pytest.mark.parametrize("kind,content", [
    ("txt", "word " * 3_000),
    ("md", "# Title\n\n" + "word " * 3_000),
    ("csv", "a,b\n" + "x,y\n" * 3_000),
    ("json", json.dumps([{"k": "v" * 10}] * 1_000)),
    ("py", "x = 1\n" * 3_000),
])
def test_text_over_the_cap_fails_loudly(limits, kind, content):
    limits(max_text_chars=10_000)
    kinds = {"txt": "text", "md": "markdown", "py": "code"}
    with pytest.raises(ParseError) as info:
        parse_bytes(content.encode(), f"f.{kind}", kinds.get(kind, kind))
    assert info.value.reason == "too much text: over 10,000 characters; raise ingest.max_text_chars"


def test_a_megabyte_without_spaces_parses_as_text():
    # dehyphenation tried every position of a run of letters against every later one: 40,000
    # letters took 43 s, so a 1 MB line would have taken hours
    run = "x" * 2**20
    text = parse_bytes(f"Start.\n\n{run}\n\nA hyphen-\nated word.".encode(), "f.txt", "text").text
    assert text == f"Start.\n\n{run}\n\nA hyphenated word."


def test_csv_sniffing_is_bounded(monkeypatch):
    # csv.Sniffer's quote guessing is quadratic in its sample: 64 KB of ',"' took a minute
    import csv

    seen: list[int] = []
    real = csv.Sniffer.sniff

    def spy(self, sample, delimiters=None):
        seen.append(len(sample))
        return real(self, sample, delimiters)

    monkeypatch.setattr(csv.Sniffer, "sniff", spy)
    doc = parse_bytes(("a,b\n" + "1,2\n" * 30_000).encode(), "f.csv", "csv")
    assert doc.metadata["records"] == 30_000
    assert seen and max(seen) <= 8 * 1024


def test_minified_code_with_many_functions_is_tiled():
    # line starts were searched from every definition (quadratic on one long line)
    js = "".join(f"function f{i}(a){{return a+{i}}};" for i in range(20_000))
    doc = parse_bytes(js.encode(), "min.js", "code")
    assert doc.text == js
    many = "".join(f"function f{i}(a){{return '\u00e9'+{i}}}\n" for i in range(2_000))
    doc = parse_bytes(many.encode(), "many.js", "code")
    assert len(doc.sections) == 2_000
    assert doc.text[doc.sections[7].start : doc.sections[7].end] == "function f7(a){return '\u00e9'+7}\n"


# ---------------------------------------------------------------- HTML

REAL = "<p>Real text that matters.</p>"


def html_text(page: str) -> str:
    return parse_bytes(page.encode(), "p.html", "html").text


def test_html_content_after_the_end_tags_belongs_to_the_body():
    assert html_text(f"<html><body>{REAL}</body></html><p>Appended later.</p>") == \
        "Real text that matters.\n\nAppended later."
    assert html_text(f"<html><body>{REAL}</body><p>Between.</p></html>\n<div>And after.</div>") == \
        "Real text that matters.\n\nBetween.\n\nAnd after."


@pytest.mark.parametrize("depth", [300, 1_500, 3_000])
def test_html_deep_nesting_keeps_its_text(depth):
    page = "<html><body>" + "<div>" * depth + "deep text" + "</div>" * depth + REAL + "</body></html>"
    assert html_text(page) == "deep text\n\nReal text that matters."


@pytest.mark.parametrize("open_tag,word", [("<ul><li>", "item"), ("<b>", "bold")])
def test_html_100k_unclosed_elements_keep_every_word(open_tag, word):
    page = f"<html><body>{REAL}" + f"{open_tag}{word} " * 100_000 + "end</body></html>"
    doc = parse_bytes(page.encode(), "p.html", "html")
    assert doc.text.startswith("Real text that matters.")
    assert doc.text.count(word) == 100_000
    assert doc.text.endswith("end")
    assert doc.metadata["parser"] == "fallback"


def test_html_fallback_keeps_headings_and_drops_scripts():
    page = ("<html><head><title>T</title><script>var x = 1;</script></head><body>" + "<div>" * 2_500
            + "<h1>Deep Title</h1><p>Under it.</p><nav>Menu</nav><h2>Sub</h2>Sub text" + "</div>" * 2_500)
    doc = parse_bytes(page.encode(), "p.html", "html")
    assert doc.text == "Deep Title\n\nUnder it.\n\nSub\n\nSub text"
    assert [s.heading_path for s in doc.sections] == [("Deep Title",), ("Deep Title", "Sub")]


def test_html_huge_text_node_and_attribute_keep_the_page():
    words = "word " * 2_300_000  # 11.5 MB in one text node
    text = html_text(f"<html><body>{REAL}<p>{words}</p></body></html>")
    assert text.startswith("Real text that matters.") and text.count("word") == 2_300_000
    title = "x" * 11_000_000
    assert html_text(f'<html><body>{REAL}<p title="{title}">After.</p></body></html>') == \
        "Real text that matters.\n\nAfter."


def test_html_huge_text_node_over_the_cap_fails_loudly(limits):
    limits(max_text_chars=1_000_000)
    page = f"<html><body>{REAL}<p>{'word ' * 2_300_000}</p></body></html>"
    assert reason(page.encode(), "html") == "too much text: over 1,000,000 characters; raise ingest.max_text_chars"


def test_html_ordinary_page_uses_the_tree():
    page = f"<html><head><title>T</title></head><body><nav>Menu</nav>{REAL}<footer>Legal</footer></body></html>"
    doc = parse_bytes(page.encode(), "p.html", "html")
    assert doc.text == "Real text that matters."
    assert "parser" not in doc.metadata
