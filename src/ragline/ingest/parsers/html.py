"""HTML with lxml: the main content, headings kept as heading_path.

Boilerplate goes before the walk: script/style, nav, footer, aside, a page
header (one not inside <main>/<article>), ARIA landmark roles for navigation,
banner and footer, hidden elements, and elements whose class/id names them
as menus, sidebars, cookie banners and the like. If the page has a <main>
(or role=main, or a single <article>) only that is read.
"""

from __future__ import annotations

import re

from ragline.ingest.clean import normalize_whitespace
from ragline.ingest.parsers.base import (
    OutlineBuilder,
    ParseError,
    assemble,
    bom_encoding,
    check_text,
    decode_text,
    short,
    stem_of,
    year_of,
)
from ragline.types import Document

_DROP_TAGS = {
    "script", "style", "noscript", "template", "nav", "footer", "aside", "iframe", "svg",
    "canvas", "button", "select", "input", "textarea", "object", "embed", "dialog", "head",
}
_DROP_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar"}
_DROP_NAMES = {
    "nav", "navbar", "navigation", "menu", "sidebar", "breadcrumb", "breadcrumbs", "cookie",
    "cookies", "footer", "banner", "advert", "advertisement", "ads", "share", "sharing", "social",
    "skip", "masthead", "topbar", "toc", "pagination",
}
_KEEP_TAGS = {"html", "body", "main", "article"}
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_BLOCKS = {
    "p", "div", "section", "article", "main", "header", "li", "ul", "ol", "dl", "dt", "dd",
    "blockquote", "pre", "figure", "figcaption", "address", "details", "summary", "hr", "form",
    "fieldset", "body", "center", "caption", "table", "tr", "td", "th",
}
_DATE_KEYS = {
    "date", "dc.date", "dc.date.issued", "dc.date.created", "dcterms.date", "dcterms.created",
    "dcterms.issued", "article:published_time", "og:published_time", "citation_publication_date",
    "citation_date", "pubdate", "publishdate", "publish_date", "datepublished", "datecreated",
    "created", "creation_date",
}
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")
_SPACE = re.compile(r"[ \t\r\n\f\v]+")  # not \u2028: that marks a <br>


def _decode(data: bytes) -> str:
    """BOM, then a <meta charset>, then the generic text detection."""
    if bom_encoding(data) is None and b"\x00" not in data:
        m = _META_CHARSET.search(data[:4096])
        declared = m.group(1).decode("ascii").lower() if m else ""
        if declared and not declared.startswith(("utf-16", "utf16", "utf-32", "utf32")):  # those lie in HTML
            try:
                return check_text(data.decode(declared))
            except (LookupError, UnicodeDecodeError, ParseError):
                pass  # a wrong or unknown declaration: detect instead
    return decode_text(data)[0]


def _is_boilerplate(el) -> bool:
    tag = el.tag.lower()
    if tag in _KEEP_TAGS:
        return False
    if tag in _DROP_TAGS:
        return True
    if (el.get("role") or "").lower() in _DROP_ROLES:
        return True
    if el.get("hidden") is not None or (el.get("aria-hidden") or "").lower() == "true":
        return True
    if re.search(r"display\s*:\s*none", el.get("style") or "", re.IGNORECASE):
        return True
    if tag == "header" and not el.xpath("ancestor::article | ancestor::main"):
        return True
    names = set(re.split(r"[\s_-]+", f"{el.get('class') or ''} {el.get('id') or ''}".lower()))
    if names & _DROP_NAMES:
        return not el.xpath(".//main | .//article | .//h1")
    return False


def _drop_boilerplate(root) -> None:
    doomed = [el for el in root.iter() if isinstance(el.tag, str) and _is_boilerplate(el)]
    for el in doomed:
        el.drop_tree()  # keeps the element's tail text


def _content_root(root):
    mains = root.xpath("//main | //*[@role='main']")
    if mains:
        return mains[0]
    articles = root.xpath("//article")
    if len(articles) == 1:
        return articles[0]
    body = root.find("body")
    return body if body is not None else root


def _table_rows(table) -> list[str]:
    rows = []
    for tr in table.iter("tr"):
        cells = [" ".join(c.text_content().split()) for c in tr if isinstance(c.tag, str) and c.tag in ("td", "th")]
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


class _Walker:
    def __init__(self) -> None:
        self.outline = OutlineBuilder()
        self.buf: list[str] = []

    def flush(self) -> None:
        text = _SPACE.sub(" ", "".join(self.buf))
        self.buf.clear()
        self.outline.block(text)

    def walk(self, el) -> None:
        tag = el.tag.lower() if isinstance(el.tag, str) else None
        if tag in _HEADINGS:
            self.flush()
            self.outline.heading(_HEADINGS[tag], el.text_content())
        elif tag == "table":
            self.flush()
            self.outline.table(_table_rows(el))
        elif tag == "br":
            self.buf.append("\u2028")
        elif tag is not None:
            block = tag in _BLOCKS
            if block:
                self.flush()
            self.buf.append(el.text or "")
            for child in el:
                self.walk(child)
            if block:
                self.flush()
        self.buf.append(el.tail or "")

    def read(self, root) -> OutlineBuilder:
        """Walk inside ``root`` (its own tail is outside the content)."""
        self.buf.append(root.text or "")
        for child in root:
            self.walk(child)
        self.flush()
        return self.outline


def _meta(root, source: str) -> dict:
    meta: dict = {"title": stem_of(source)}
    title_el = root.find(".//title")
    title = " ".join(title_el.text_content().split()) if title_el is not None else ""
    if not title:
        h1 = root.find(".//h1")
        title = " ".join(h1.text_content().split()) if h1 is not None else ""
    if title:
        meta["title"] = title
    for m in root.iter("meta"):
        key = (m.get("name") or m.get("property") or m.get("itemprop") or "").strip().lower()
        if key in _DATE_KEYS:
            year = year_of(m.get("content") or "")
            if year is not None:
                meta["year"] = year
                break
    return meta


def parse(data: bytes, source: str) -> Document:
    import lxml.html

    markup = _XML_DECL.sub("", _decode(data), count=1)
    try:
        root = lxml.html.document_fromstring(markup)
    except Exception as exc:
        raise ParseError(f"invalid HTML: {short(exc)}") from None
    meta = _meta(root, source)
    _drop_boilerplate(root)
    outline = _Walker().read(_content_root(root))
    text, sections = assemble(outline.finish(), clean=normalize_whitespace)
    return Document(source=source, type="html", text=text, sections=sections, metadata=meta)
