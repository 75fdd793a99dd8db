"""HTML with lxml: the main content, headings kept as heading_path.

Boilerplate goes before the walk: script/style, nav, footer, aside, a page
header (one not inside <main>/<article>), ARIA landmark roles for navigation,
banner and footer, hidden elements, and elements whose class/id names them
as menus, sidebars, cookie banners and the like. If the page has a <main>
(or role=main, or a single <article>) only that is read. Permalink anchors
(Sphinx's ``a.headerlink`` "¶", and any in-page link whose whole text is a
mark such as "#", "§" or "🔗") are dropped too, so heading paths read
"5. Data Structures", not "5. Data Structures¶".

Each heading is a Section of its own (kind="heading"), and each ``<pre>`` a
Section of kind="code" whose line breaks and indentation are kept: the
answerer must never quote a heading as a sentence, and must be able to show
a code block whole after the sentence that introduces it.

Nothing a browser shows is lost to the parser: content after ``</body>`` or
``</html>`` belongs to the body (HTML5 tree construction), so those end tags
are ignored; text nodes and attributes over 10 MB are read (lxml's
``huge_tree``, the text then meets ``max_text_chars``); and a page nested
deeper than libxml2 will go (2,048 levels) is read by a tokenizer that keeps
no tree (``_Fallback``), as is any page whose tree holds clearly less text
than its markup.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import replace
from html.parser import HTMLParser

from ragline.ingest.clean import normalize_whitespace
from ragline.ingest.parsers.base import (
    OutlineBuilder,
    ParseError,
    Segment,
    assemble,
    bom_encoding,
    check_length,
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
# "</body>" and "</html>" end nothing: what follows them is body content (HTML5 "after body")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_NAME_SPLIT = re.compile(r"[\s_-]+")
_STRAY_END = re.compile(r"</(?:body|html)\s*>", re.IGNORECASE)
# A tag for the cheap text count: "<" then a letter, "/", "!" or "?", up to the next ">"
# ([^<>] keeps the scan linear: each start stops at the next "<")
_TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")
_RAW_TEXT = re.compile(r"<(script|style)\b", re.IGNORECASE)
# Permalink marks: a link's whole text is one of these (Sphinx "¶", MkDocs/Docusaurus "#", "§", link emoji)
_PERMALINK_MARKS = {"¶", "#", "§", "🔗", "⚓", "¶¶"}
# the same marks left at the end of a heading's text (the fallback reader, markup without a link)
_TRAILING_MARK = re.compile(r"\s*[¶§🔗⚓]+\s*$")


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
    style = el.get("style")
    if style and _HIDDEN_STYLE.search(style):
        return True
    if tag == "header" and not el.xpath("ancestor::article | ancestor::main"):
        return True
    cls, ident = el.get("class"), el.get("id")
    if not (cls or ident):
        return False
    names = set(_NAME_SPLIT.split(f"{cls or ''} {ident or ''}".lower()))
    if names & _DROP_NAMES:
        return not el.xpath(".//main | .//article | .//h1")
    return False


def _is_permalink(el) -> bool:
    """An in-page link that only marks its heading's address (Sphinx's "¶" and the like)."""
    if el.tag.lower() != "a":
        return False
    if "headerlink" in (el.get("class") or "").lower().split():
        return True
    text = "".join(el.itertext()).strip()
    return (el.get("href") or "").startswith("#") and text in _PERMALINK_MARKS


def heading_title(text: str) -> str:
    """A heading's text, spaces collapsed and any trailing permalink mark removed."""
    return _TRAILING_MARK.sub("", " ".join(text.split()))


def _drop_boilerplate(root) -> None:
    doomed = [el for el in root.iter() if isinstance(el.tag, str) and (_is_boilerplate(el) or _is_permalink(el))]
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


class _Outline(OutlineBuilder):
    """An outline whose headings and ``<pre>`` blocks are Sections of their own
    (kind "heading" and "code"), so later stages can tell them from prose."""

    def heading(self, level: int, text: str) -> None:
        title = heading_title(text)
        if not title:
            return
        super().heading(level, title)
        self._blocks = []
        self.segments.append(Segment(title, heading_path=self.path, kind="heading"))

    def code(self, text: str) -> None:
        body = text.strip("\n")
        if body.strip():
            self._close()
            self.segments.append(Segment(body, heading_path=self.path, kind="code"))


class _Walker:
    """Turns a (cleaned) tree into an outline, iteratively: a tree may be 2,048 deep."""

    def __init__(self, outline: OutlineBuilder | None = None) -> None:
        self.outline = outline if outline is not None else _Outline()
        self.buf: list[str] = []

    def flush(self) -> None:
        text = _SPACE.sub(" ", "".join(self.buf))
        self.buf.clear()
        self.outline.block(text)

    def read(self, root) -> OutlineBuilder:
        """Walk inside ``root`` (its own tail is outside the content)."""
        self.buf.append(root.text or "")
        stack: list[tuple[object, bool]] = [(child, False) for child in reversed(root)]
        while stack:
            el, closing = stack.pop()
            tag = el.tag.lower() if isinstance(el.tag, str) else None
            if closing:
                if tag in _BLOCKS:
                    self.flush()
            elif tag in _HEADINGS:
                self.flush()
                self.outline.heading(_HEADINGS[tag], el.text_content())
            elif tag == "table":
                self.flush()
                self.outline.table(_table_rows(el))
            elif tag == "pre":
                self.flush()
                self.outline.code(el.text_content())
            elif tag == "br":
                self.buf.append("\u2028")
            elif tag is not None:
                if tag in _BLOCKS:
                    self.flush()
                self.buf.append(el.text or "")
                stack.append((el, True))
                stack.extend((child, False) for child in reversed(el))
                continue  # the tail comes after the children
            self.buf.append(el.tail or "")
        self.flush()
        return self.outline


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
         "track", "wbr"}
_FALLBACK_SKIP = _DROP_TAGS | {"title", "math"}
_END_SEARCH = 64  # how far down the open elements an end tag looks for its start


class _Fallback(HTMLParser):
    """Text and headings from the token stream, with no tree and so no depth
    limit: for pages libxml2 cannot hold. Boilerplate is dropped by tag and
    hidden attributes only; an end tag closes the nearest open element of its
    name (among the innermost ``_END_SEARCH``), and elements left open never
    cost more than their place on a list."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.walker = _Walker(OutlineBuilder())  # headings stay inside their text Sections here
        self.open: list[tuple[str, bool]] = []  # (tag, skipped)
        self.skipping = 0
        self.heading: tuple[int, list[str]] | None = None
        self.chars = 0

    def _end_heading(self) -> None:
        if self.heading is not None:
            level, parts = self.heading
            self.heading = None
            title = heading_title("".join(parts))
            if len(title) <= 300:
                self.walker.outline.heading(level, title)
            else:  # an unclosed heading ran on over the page: it is text, not a title
                self.walker.buf.append(title)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            if tag == "br":
                self.handle_data("\u2028")
            elif tag == "hr":
                self.walker.flush()
            return
        attr = dict(attrs)
        skip = tag in _FALLBACK_SKIP or "hidden" in attr or (attr.get("aria-hidden") or "").lower() == "true"
        self.open.append((tag, skip))
        if skip:
            self.skipping += 1
        elif tag in _HEADINGS:
            self._end_heading()
            self.walker.flush()
            self.heading = (_HEADINGS[tag], [])
        elif tag in _BLOCKS or tag in ("tr", "li"):
            if self.heading is None:
                self.walker.flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, max(-1, len(self.open) - 1 - _END_SEARCH), -1):
            if self.open[i][0] == tag:
                break
        else:
            return  # nothing of that name open nearby: a stray end tag
        for name, skipped in reversed(self.open[i:]):
            if skipped:
                self.skipping -= 1
            elif name in _HEADINGS:
                self._end_heading()
            elif name in _BLOCKS and self.heading is None:
                self.walker.flush()
        del self.open[i:]

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        self.chars += len(data)
        check_length(self.chars)
        if self.heading is not None:
            self.heading[1].append(data)
        else:
            self.walker.buf.append(data)

    def outline(self, markup: str) -> OutlineBuilder:
        self.feed(markup)
        self.close()
        self._end_heading()
        self.walker.flush()
        return self.walker.outline


def _visible_chars(markup: str) -> int:
    """Non-space characters of text in ``markup``, tags, comments, scripts and
    styles removed: what a tree of the page should hold, roughly (linear time)."""
    low = markup.lower()
    parts: list[str] = []
    pos = 0
    while pos < len(markup):
        comment = low.find("<!--", pos)
        raw = _RAW_TEXT.search(markup, pos)
        starts = [x for x in (comment, raw.start() if raw else -1) if x != -1]
        if not starts:
            parts.append(markup[pos:])
            break
        at = min(starts)
        parts.append(markup[pos:at])
        if at == comment:
            end = low.find("-->", at + 4)
            pos = len(markup) if end == -1 else end + 3
        else:
            end = low.find(f"</{raw.group(1).lower()}", raw.end())
            pos = len(markup) if end == -1 else end
    text = html_lib.unescape(_TAG.sub(" ", "".join(parts)))
    return sum(map(len, text.split()))


def _tree_chars(root) -> int:
    """Non-space characters of text in the tree, scripts and styles left out."""
    total = sum(map(len, root.text_content().split()))
    for el in root.iter("script", "style"):
        total -= sum(map(len, (el.text or "").split()))
    return total


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


def _lost_text(parser, root, markup: str) -> bool:
    """Did the tree lose text: libxml2 gave up (a fatal error, such as nesting
    over 2,048 levels), or it holds under 80 % of the markup's text?"""
    if any(e.level_name == "FATAL" for e in parser.error_log):
        return True
    expected = _visible_chars(markup)
    return expected > 200 and _tree_chars(root) < 0.8 * expected


def _clean(seg: Segment) -> Segment:
    """Whitespace tidied: prose collapsed, code keeping its line breaks and indentation."""
    return replace(seg, text=normalize_whitespace(seg.text, collapse=seg.kind != "code"))


def parse(data: bytes, source: str) -> Document:
    import lxml.html

    markup = _STRAY_END.sub("", _XML_DECL.sub("", _decode(data), count=1))
    parser = lxml.html.HTMLParser(huge_tree=True)
    try:
        root = lxml.html.document_fromstring(markup, parser=parser)
    except Exception as exc:
        raise ParseError(f"invalid HTML: {short(exc)}") from None
    meta = _meta(root, source)
    if _lost_text(parser, root, markup):
        meta["parser"] = "fallback"
        outline = _Fallback().outline(markup)
    else:
        _drop_boilerplate(root)
        outline = _Walker().read(_content_root(root))
    text, sections = assemble([_clean(seg) for seg in outline.finish()], clean=str)
    return Document(source=source, type="html", text=text, sections=sections, metadata=meta)
