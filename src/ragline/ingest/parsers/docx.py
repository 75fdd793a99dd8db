"""DOCX: body paragraphs and tables in document order, read straight from the
package's XML with lxml.

Heading-styled paragraphs set the heading_path of what follows them; each
table becomes a Section of kind "table" with one "cell | cell" line per row.

The package is opened with ``Unpacker`` (declared and actual unpacked sizes
and expansion ratios checked against ``base.LIMITS``), only the parts we need
are read (the document, its styles, the core properties; never the media),
and the document is streamed: each body-level paragraph or table is handled
and freed as soon as it ends. python-docx built an object per paragraph and
looked its style up each time (0.5 ms a paragraph: a 66 KB file of 3.3 M empty
paragraphs took half an hour) and held the whole tree and every part in memory.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Iterator

from ragline.ingest.clean import normalize_whitespace
from ragline.ingest.parsers.base import (
    OutlineBuilder,
    ParseError,
    Unpacker,
    assemble,
    check_length,
    short,
    stem_of,
    year_of,
)
from ragline.types import Document

_HEADING = re.compile(r"heading\s*(\d)", re.IGNORECASE)
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"
_DC_CREATED = "{http://purl.org/dc/terms/}created"
# WordprocessingML: the transitional namespace (what Word writes) and strict OOXML
_NAMESPACES = (
    "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
    "http://purl.oclc.org/ooxml/wordprocessingml/main",
)


@functools.lru_cache(maxsize=4)
def _names(ns: str) -> dict[str, str]:
    """Qualified tag and attribute names (``w:val`` is namespaced too) in namespace ``ns``."""
    return {local: f"{{{ns}}}{local}" for local in (
        "p", "tbl", "tr", "tc", "t", "tab", "ptab", "br", "cr", "noBreakHyphen", "pPr", "rPr", "tcPr",
        "trPr", "del", "moveFrom", "pStyle", "val", "type", "gridSpan", "vMerge", "gridBefore", "style",
        "styleId", "name", "basedOn", "default", "outlineLvl",
    )}


def _xml_parser():
    import lxml.etree

    # no entity expansion, no DTD or network: a package's XML is data, not instructions
    return lxml.etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def _parse_xml(pkg: Unpacker, name: str):
    import lxml.etree

    try:
        return lxml.etree.fromstring(pkg.read(name), _xml_parser())
    except lxml.etree.XMLSyntaxError as exc:
        raise ParseError(f"corrupt DOCX: {name}: {short(exc)}") from None


def _targets(pkg: Unpacker, rels_name: str, base_dir: str) -> dict[str, str]:
    """Relationship type suffix -> part name, from a ``.rels`` part (empty if absent)."""
    if not pkg.has(rels_name):
        return {}
    found: dict[str, str] = {}
    for rel in _parse_xml(pkg, rels_name).iter(_REL):
        kind, target = rel.get("Type") or "", rel.get("Target") or ""
        if rel.get("TargetMode") == "External" or not target:
            continue
        name = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join(base_dir, target))
        found.setdefault(kind.rsplit("/", 1)[-1], name)
    return found


def _main_part(pkg: Unpacker) -> tuple[str, dict[str, str]]:
    """(name of the main document part, the package-level relationships)."""
    rels = _targets(pkg, "_rels/.rels", "")
    main = rels.get("officeDocument") or "word/document.xml"
    if not pkg.has(main):
        raise ParseError("corrupt DOCX: no Word document inside")
    return main, rels


# ---------------------------------------------------------------- styles


class _Styles:
    """Heading levels of paragraph styles: 1-9 for "Heading N" (by name or id,
    or based on such a style, or with an outline level), 0 for "Title"."""

    def __init__(self, root, n: dict[str, str]) -> None:
        self.n = n
        self.styles: dict[str, tuple[str, str | None, int | None]] = {}
        self.default: str | None = None
        self._levels: dict[str | None, int | None] = {}
        if root is None:
            return
        for st in root.iter(n["style"]):
            if st.get(n["type"], "paragraph") != "paragraph":
                continue
            sid = st.get(n["styleId"]) or ""
            name_el, base_el = st.find(n["name"]), st.find(n["basedOn"])
            lvl_el = st.find(f"{n['pPr']}/{n['outlineLvl']}")
            outline = None
            if lvl_el is not None and (lvl_el.get(n["val"]) or "").isdigit() and int(lvl_el.get(n["val"])) < 9:
                outline = int(lvl_el.get(n["val"])) + 1
            self.styles[sid] = (name_el.get(n["val"]) or "" if name_el is not None else "",
                                base_el.get(n["val"]) if base_el is not None else None, outline)
            if st.get(n["default"]) in ("1", "true", "on") and self.default is None:
                self.default = sid

    def level(self, style_id: str | None) -> int | None:
        if style_id not in self._levels:
            self._levels[style_id] = self._level(style_id)
        return self._levels[style_id]

    def _level(self, style_id: str | None) -> int | None:
        sid = style_id if style_id in self.styles else self.default  # unknown ids fall back, as in Word
        for _ in range(4):  # follow a short chain of base styles
            if sid is None or sid not in self.styles:
                return None
            name, base, outline = self.styles[sid]
            for label in (name, sid):
                m = _HEADING.match(label.strip())
                if m:
                    return int(m.group(1))
                if label.strip().lower() == "title":
                    return 0
            if outline is not None:
                return outline
            sid = base
        return None


# ---------------------------------------------------------------- text


def _para_text(p, n: dict[str, str]) -> str:
    """A paragraph's visible text: runs, hyperlinks, insertions, fields and
    content controls alike; tabs and line breaks as characters; deleted or
    moved-away text, formatting properties and fallback copies of drawings left out."""
    skip = {n["pPr"], n["rPr"], n["del"], n["moveFrom"], _MC_FALLBACK}
    out: list[str] = []
    stack = [iter(p)]
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
            continue
        tag = node.tag
        if not isinstance(tag, str) or tag in skip:
            continue
        if tag == n["t"]:
            out.append(node.text or "")
        elif tag == n["tab"] or tag == n["ptab"]:
            out.append("\t")
        elif tag == n["br"]:
            if node.get(n["type"]) in (None, "textWrapping"):  # page and column breaks are not text
                out.append("\n")
        elif tag == n["cr"]:
            out.append("\n")
        elif tag == n["noBreakHyphen"]:
            out.append("-")
        else:
            if tag == n["p"]:  # a paragraph in a text box: a line of its own
                out.append("\n")
            stack.append(iter(node))
    return "".join(out)


def _block_texts(el, n: dict[str, str]) -> Iterator[str]:
    """Texts of the paragraphs inside ``el`` in order, tables' cells included."""
    stack = [iter(el)]
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
        elif node.tag == n["p"]:
            yield _para_text(node, n)
        elif isinstance(node.tag, str) and node.tag != _MC_FALLBACK:
            stack.append(iter(node))


def _children(el, tag: str) -> Iterator:
    """Children of ``el`` with ``tag``, also those wrapped in content controls or custom XML."""
    stack = [iter(el)]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
        elif child.tag == tag:
            yield child
        elif isinstance(child.tag, str) and child.tag.rsplit("}", 1)[-1] in ("sdt", "sdtContent", "customXml"):
            stack.append(iter(child))


def _int(el, path: str, n: dict[str, str], default: int) -> int:
    found = el.find(path)
    value = found.get(n["val"]) if found is not None else None
    return int(value) if value is not None and value.isdigit() else default


def _rows(tbl, n: dict[str, str]) -> list[str]:
    """A table as "a | b" lines. A cell spanning columns comes once; a cell
    merged down repeats its text in every row it covers (a row reads alone)."""
    lines = []
    merged: dict[int, str] = {}  # grid column -> text of the vertically merged cell open there
    for tr in _children(tbl, n["tr"]):
        col = _int(tr, f"{n['trPr']}/{n['gridBefore']}", n, 0)
        cells = []
        for tc in _children(tr, n["tc"]):
            vmerge = tc.find(f"{n['tcPr']}/{n['vMerge']}")
            if vmerge is not None and vmerge.get(n["val"], "continue") == "continue":
                text = merged.get(col, "")
            else:
                text = " ".join(" ".join(_block_texts(tc, n)).split())
                if vmerge is not None:
                    merged[col] = text
                else:
                    merged.pop(col, None)
            cells.append(text)
            col += max(1, _int(tc, f"{n['tcPr']}/{n['gridSpan']}", n, 1))
        if any(cells):
            lines.append(" | ".join(cells))
    return lines


# ---------------------------------------------------------------- document


def _walk(pkg: Unpacker, main: str, styles_name: str | None) -> OutlineBuilder:
    """Stream the main part: handle each body-level paragraph or table when it
    ends, then free it and what came before it."""
    import lxml.etree

    outline = OutlineBuilder()
    tags = [tag for ns in _NAMESPACES for tag in (f"{{{ns}}}p", f"{{{ns}}}tbl")]
    styles: _Styles | None = None
    n: dict[str, str] = {}
    depth = 0  # open paragraphs and tables
    chars = 0
    with pkg.open(main) as stream:
        # huge_tree: a text run over 10 MB is read (and then meets max_text_chars) rather than
        # failing as XML; entity expansion stays off and libxml2 still refuses entity bombs
        events = lxml.etree.iterparse(stream, events=("start", "end"), tag=tags, resolve_entities=False,
                                      no_network=True, load_dtd=False, huge_tree=True)
        try:
            for event, el in events:
                if event == "start":
                    depth += 1
                    continue
                depth -= 1
                if depth:
                    continue  # inside a table or a text box: handled with its outer block
                if not n:  # the first block tells the namespace
                    n = _names(el.tag[1 : el.tag.index("}")])
                    styles = _Styles(_parse_xml(pkg, styles_name) if styles_name else None, n)
                if len(el):  # an empty <w:p/> has no children: nothing to read
                    if el.tag == n["tbl"]:
                        rows = _rows(el, n)
                        chars += sum(len(r) + 1 for r in rows)
                        outline.table(rows)
                    else:
                        text = _para_text(el, n)
                        chars += len(text) + 2
                        style = el.find(f"{n['pPr']}/{n['pStyle']}")
                        level = styles.level(style.get(n["val"]) if style is not None else None) if styles else None
                        if level is not None and text.strip():
                            outline.heading(level, text)
                        else:
                            outline.block(text)
                    check_length(chars)
                el.clear()
                parent = el.getparent()
                if parent is not None:
                    while el.getprevious() is not None:
                        del parent[0]
        except lxml.etree.XMLSyntaxError as exc:
            raise ParseError(f"corrupt DOCX: {main}: {short(exc)}") from None
        root = getattr(events, "root", None)
    if root is not None and root.tag.rsplit("}", 1)[-1] != "document":
        raise ParseError(f"corrupt DOCX: not a Word document (main part is {root.tag.rsplit('}', 1)[-1]})")
    return outline


def _meta(pkg: Unpacker, core_name: str | None, source: str) -> dict:
    meta: dict = {"title": stem_of(source)}
    if not core_name or not pkg.has(core_name):
        return meta
    try:
        core = _parse_xml(pkg, core_name)
    except ParseError as exc:
        if exc.reason.startswith("decompression bomb"):
            raise
        return meta  # bad core properties: keep the defaults
    title_el, created_el = core.find(_DC_TITLE), core.find(_DC_CREATED)
    title = " ".join((title_el.text or "").split()) if title_el is not None else ""
    if title:
        meta["title"] = title
    year = year_of(created_el.text or "") if created_el is not None else None
    if year is not None:
        meta["year"] = year
    return meta


def parse(data: bytes, source: str) -> Document:
    pkg = Unpacker(data, "DOCX")
    main, rels = _main_part(pkg)
    doc_rels = _targets(pkg, posixpath.join(posixpath.dirname(main), "_rels", posixpath.basename(main) + ".rels"),
                        posixpath.dirname(main))
    styles_name = doc_rels.get("styles")
    outline = _walk(pkg, main, styles_name if styles_name and pkg.has(styles_name) else None)
    text, sections = assemble(outline.finish(), clean=normalize_whitespace)
    meta = _meta(pkg, rels.get("core-properties"), source)
    return Document(source=source, type="docx", text=text, sections=sections, metadata=meta)
