"""Source code: Sections for top-level functions and classes and for the
methods inside classes, found with tree-sitter; code between definitions is
a Section of its own. heading_path names the enclosing definitions, e.g.
("class Store", "def add").

Grammars come from ``tree_sitter_language_pack.get_parser`` or, failing
that, a per-language ``tree_sitter_<lang>`` package. Without a grammar,
Python falls back to the standard library's ``ast``; other languages get a
single Section.
"""

from __future__ import annotations

import ast
import bisect
import functools
import importlib
from dataclasses import dataclass, field

from ragline.ingest.clean import normalize_whitespace
from ragline.ingest.parsers.base import check_length, decode_text, line_starts, source_path, stem_of
from ragline.types import Document, Section

LANGUAGES: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".jsx": "javascript", ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp",
    ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp", ".cs": "csharp", ".rb": "ruby",
    ".php": "php", ".sh": "bash", ".bash": "bash", ".zsh": "bash", ".sql": "sql", ".kt": "kotlin",
    ".kts": "kotlin", ".swift": "swift", ".scala": "scala", ".lua": "lua", ".r": "r", ".pl": "perl",
    ".hs": "haskell", ".ex": "elixir", ".exs": "elixir", ".dart": "dart", ".jl": "julia",
}
_ALIASES = {"csharp": ("csharp", "c_sharp")}
# per-language grammar packages whose entry point is not ``tree_sitter_<lang>.language``
_MODULES = {
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "php": ("tree_sitter_php", "language_php"),
    "csharp": ("tree_sitter_c_sharp", "language"),
}
_FUNC_WORD = {
    "python": "def", "go": "func", "rust": "fn", "ruby": "def", "kotlin": "fun", "swift": "func",
    "scala": "def", "elixir": "def", "julia": "function", "lua": "function",
}
_METHOD_WORD = {"method_definition": "method", "method_declaration": "method",
                "constructor_declaration": "constructor"}
_FUNCTIONS = {
    "function_definition", "function_declaration", "function_item", "method_definition",
    "method_declaration", "method", "singleton_method", "constructor_declaration",
    "generator_function_declaration", "function_signature_item", "abstract_method_declaration",
}
_CONTAINERS = {
    "class_definition", "class_declaration", "abstract_class_declaration", "class", "module",
    "class_specifier", "struct_item", "enum_item", "trait_item", "impl_item", "mod_item",
    "interface_declaration", "enum_declaration", "struct_declaration", "record_declaration",
    "namespace_declaration", "namespace_definition", "object_declaration", "object_definition",
    "trait_definition", "trait_declaration", "protocol_declaration", "type_declaration",
}
_WRAPPERS = {"export_statement", "decorated_definition", "template_declaration"}
_CONTAINER_WORDS = ("interface", "struct", "enum", "trait", "impl", "module", "namespace", "object",
                    "protocol", "record", "mod", "type")
_NAMES = {"identifier", "field_identifier", "type_identifier", "property_identifier", "constant",
          "name", "simple_identifier", "word", "qualified_identifier", "scoped_identifier",
          "scoped_type_identifier", "generic_type", "destructor_name", "operator_name"}


@dataclass
class _Def:
    start: int  # character offsets into the text
    end: int
    label: str
    children: list[_Def] = field(default_factory=list)


def language_for(source: str) -> str | None:
    return LANGUAGES.get(source_path(source).suffix.lower())


@functools.lru_cache(maxsize=None)
def _parser(lang: str):
    """A tree-sitter parser for ``lang``, or None (looked up once per process)."""
    names = _ALIASES.get(lang, (lang,))
    try:
        import tree_sitter_language_pack as pack

        for name in names:
            try:
                return pack.get_parser(name)
            except Exception:  # unknown language, or a grammar it cannot fetch
                continue
    except Exception:
        pass
    try:
        import tree_sitter

        for name in names:
            module, attr = _MODULES.get(name, (f"tree_sitter_{name}", "language"))
            try:
                fn = getattr(importlib.import_module(module), attr, None)
            except ImportError:
                continue
            if fn is not None:
                return tree_sitter.Parser(tree_sitter.Language(fn()))
    except Exception:
        pass
    return None


def _char_offsets(text: str, raw: bytes):
    """Byte offset -> character offset for ``raw = text.encode()``: the number
    of bytes before it that start a character (not UTF-8 continuation bytes).
    A numpy prefix sum, 4 bytes per byte: a Python list took ~50 per byte."""
    if len(raw) == len(text):
        return lambda b: b
    import numpy as np

    starts = (np.frombuffer(raw, dtype=np.uint8) & 0xC0) != 0x80
    table = np.zeros(len(raw) + 1, dtype=np.uint32)
    np.cumsum(starts, dtype=np.uint32, out=table[1:])
    return lambda b: int(table[b])


def _node_text(node, raw: bytes) -> str:
    return " ".join(raw[node.start_byte : node.end_byte].decode("utf-8", "replace").split())[:80]


def _field(node, *names: str):
    """The first of the named fields that ``node`` has (tree-sitter Nodes are
    compared with None, never used as booleans)."""
    for name in names:
        child = node.child_by_field_name(name)
        if child is not None:
            return child
    return None


def _name(node, raw: bytes) -> str:
    for key in ("name", "declarator", "type", None):
        cur = node.child_by_field_name(key) if key else (node.named_children or [None])[0]
        for _ in range(6):
            if cur is None:
                break
            if cur.type in _NAMES or not cur.named_children:
                return _node_text(cur, raw)
            nxt = _field(cur, "declarator", "name")
            cur = nxt if nxt is not None else cur.named_children[0]
    return ""


def _unwrap(node):
    """The definition inside an export/decorator/template wrapper, or ``node``."""
    for _ in range(3):
        if node.type not in _WRAPPERS:
            break
        inner = _field(node, "definition", "declaration")
        if inner is None:
            inner = next((c for c in node.named_children if c.type in _FUNCTIONS | _CONTAINERS | _WRAPPERS), None)
        if inner is None:
            break
        node = inner
    return node


def _arrow_function(node, raw: bytes) -> str | None:
    """``const add = (a, b) => ...`` (JS/TS): the name bound to a function."""
    if node.type not in ("lexical_declaration", "variable_declaration"):
        return None
    decls = [c for c in node.named_children if c.type == "variable_declarator"]
    if len(decls) != 1:
        return None
    value = decls[0].child_by_field_name("value")
    if value is not None and value.type in ("arrow_function", "function_expression", "function"):
        return _name(decls[0], raw)
    return None


def _collect(node, raw: bytes, pos, lang: str, depth: int) -> list[_Def]:
    defs = []
    for child in node.children:
        target = _unwrap(child)
        word, name, inner = None, "", None
        if target.type in _FUNCTIONS:
            word = _FUNC_WORD.get(lang) or _METHOD_WORD.get(target.type, "function")
            name = _name(target, raw)
        elif target.type in _CONTAINERS:
            word = next((w for w in _CONTAINER_WORDS if w in target.type), "class")
            name = _name(target, raw)
            inner = _field(target, "body")
            if inner is None:
                inner = next((c for c in target.named_children
                              if "body" in c.type or c.type.endswith("_list")), target)
        else:
            arrow = _arrow_function(target, raw)
            if arrow is None:
                continue
            word, name = "const", arrow
        d = _Def(pos(child.start_byte), pos(child.end_byte), f"{word} {name}".strip())
        if inner is not None and depth < 2:
            d.children = _collect(inner, raw, pos, lang, depth + 1)
        defs.append(d)
    return defs


def _treesitter_defs(text: str, lang: str) -> list[_Def] | None:
    parser = _parser(lang)
    if parser is None:
        return None
    try:
        raw = text.encode("utf-8")
        tree = parser.parse(raw)
        return _collect(tree.root_node, raw, _char_offsets(text, raw), lang, 0)
    except Exception:  # an unexpected binding API: fall back
        return None


def _python_defs(text: str) -> list[_Def] | None:
    try:
        module = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    starts = line_starts(text)

    def convert(nodes: list[ast.stmt], depth: int) -> list[_Def]:
        defs = []
        for n in nodes:
            if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            first = min([n.lineno, *(d.lineno for d in n.decorator_list)])
            last = n.end_lineno or n.lineno
            end = starts[last] if last < len(starts) else len(text)
            is_class = isinstance(n, ast.ClassDef)
            d = _Def(starts[first - 1], end, f"{'class' if is_class else 'def'} {n.name}")
            if is_class and depth < 2:
                d.children = convert(n.body, depth + 1)
            defs.append(d)
        return defs

    return convert(module.body, 0)


class _Lines:
    """Line boundaries by binary search over the line starts (searching the
    text for them from each definition was quadratic on minified code: 60,000
    functions on one line took 20 s)."""

    def __init__(self, text: str) -> None:
        self.starts = line_starts(text)
        self.size = len(text)

    def start(self, i: int) -> int:
        """Start of the line holding offset ``i``."""
        return self.starts[bisect.bisect_right(self.starts, i) - 1]

    def end(self, i: int) -> int:
        """``i`` itself at a line start (but 0), else the start of the next line."""
        if i > 0 and self.start(i) == i:
            return i
        j = bisect.bisect_right(self.starts, i)
        return self.starts[j] if j < len(self.starts) else self.size


def _tile(lines: _Lines, defs: list[_Def], path: tuple[str, ...], start: int, end: int) -> list[Section]:
    """Sections covering [start, end): each definition (whole lines) and the
    code between them, recursing into class bodies."""
    out: list[Section] = []
    cur = start
    for d in sorted(defs, key=lambda d: d.start):
        s, e = max(lines.start(d.start), cur), min(lines.end(d.end), end)
        if e <= s:
            continue
        if s > cur:
            out.append(Section(cur, s, heading_path=path, kind="code"))
        inner = path + (d.label,)
        if d.children and lines.start(min(c.start for c in d.children)) > s:
            out.extend(_tile(lines, d.children, inner, s, e))
        else:
            out.append(Section(s, e, heading_path=inner, kind="code"))
        cur = e
    if cur < end:
        out.append(Section(cur, end, heading_path=path, kind="code"))
    return out


def _absorb_blank(text: str, sections: list[Section]) -> tuple[Section, ...]:
    """Merge whitespace-only Sections into the one before (or after)."""
    out: list[Section] = []
    pending = None  # start of a leading blank run
    for sec in sections:
        if not text[sec.start : sec.end].strip():
            if out:
                out[-1] = Section(out[-1].start, sec.end, out[-1].page, out[-1].heading_path, out[-1].kind)
            elif pending is None:
                pending = sec.start
            continue
        if pending is not None:
            sec = Section(pending, sec.end, sec.page, sec.heading_path, sec.kind)
            pending = None
        out.append(sec)
    return tuple(out)


def parse(data: bytes, source: str) -> Document:
    raw, encoding = decode_text(data)
    check_length(len(raw))
    text = normalize_whitespace(raw, collapse=False)
    lang = language_for(source)
    meta: dict = {"title": stem_of(source), "language": lang or "unknown", "encoding": encoding}
    defs, how = None, "none"
    if lang is not None:
        defs, how = _treesitter_defs(text, lang), "tree-sitter"
        if defs is None and lang == "python":
            defs, how = _python_defs(text), "ast"
    sections: tuple[Section, ...] = ()
    if defs:
        sections = _absorb_blank(text, _tile(_Lines(text), defs, (), 0, len(text)))
    if not sections and text:
        sections, how = (Section(0, len(text), kind="code"),), "none"
    meta["structure"] = how if defs else "none"
    return Document(source=source, type="code", text=text, sections=sections, metadata=meta)
