"""The store-neutral query contract: a small metadata filter language and the tree it parses to.

    type = "pdf" and (year >= 2020 or source startswith "s3://") and not draft = true

``parse_filter`` turns text into a tree of frozen dataclasses and ``compile_filter``
checks it against the known ``Field``s. The tree is what every ``Store`` takes: each
backend renders it in its own language (``ragline.store.sql`` for SQL), and ``matches``
evaluates it in Python with the same three-valued (SQL NULL) logic. Access control is a
node of the same tree (``HasAny``, built by ``ragline.acl.visible_to``), so a filter and
a caller's ACL travel to the store as one value. See docs/filters.md for the syntax.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field as dc_field
from typing import Any, Literal, Mapping, Union

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

Value = Union[str, int, float, bool]
Kind = Literal["str", "int", "float", "bool", "strs"]  # strs: a list of strings (a document's ACL)
INT64_MAX = 2**63 - 1
MAX_DEPTH = 400  # and/or/not nesting; keeps to_sql and matches clear of the recursion limit
# Nesting of and/or groups in the SQL (a chain of one operator is one group): DataFusion's SQL
# parser refuses about 20 levels of alternating groups, and the store wraps a filter in its own
# clauses (the ACL prefilter), so a filter keeps well inside that.
MAX_GROUP_DEPTH = 12
MAX_TERMS = 4096  # predicates plus list values: bounds the SQL text and the work of a query
KEYWORDS = ("and", "or", "not", "in", "contains", "startswith", "is", "null", "true", "false")


class FilterError(ValueError):
    """A filter that cannot be parsed or does not fit the fields.

    ``reason`` is the bare message, ``pos`` the 0-based offset into ``expr``
    (when known), ``column`` the 1-based column shown to users."""

    def __init__(self, reason: str, expr: str | None = None, pos: int | None = None):
        self.reason, self.expr, self.pos = reason, expr, pos
        self.column: int | None = None
        msg = reason
        if pos is not None and expr is not None:
            line_start = expr.rfind("\n", 0, pos) + 1
            line_end = expr.find("\n", pos)
            line = expr[line_start : None if line_end < 0 else line_end]
            self.column = pos - line_start + 1
            where = f"line {expr.count(chr(10), 0, pos) + 1}, column" if "\n" in expr else "column"
            msg = f"{reason} (at {where} {self.column})\n  {line}\n  {' ' * (pos - line_start)}^"
        elif pos is not None:
            self.column = pos + 1
            msg = f"{reason} (at column {self.column})"
        super().__init__(msg)


@dataclass(frozen=True)
class Field:
    """A filterable field: the name users write, the column it maps to (a
    dotted path such as ``meta.year`` reaches into a struct), and its type."""

    name: str
    column: str
    kind: Kind
    bits: Literal[32, 64] = 64  # an int column's width: a literal outside its range is refused


def _pos():
    return dc_field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Compare:
    field: str
    op: Literal["=", "!=", "<", "<=", ">", ">="]
    value: Value
    pos: int | None = _pos()


@dataclass(frozen=True)
class InList:
    field: str
    values: tuple[Value, ...]
    negated: bool = False
    pos: int | None = _pos()


@dataclass(frozen=True)
class Contains:
    field: str
    value: str
    pos: int | None = _pos()


@dataclass(frozen=True)
class StartsWith:
    field: str
    value: str
    pos: int | None = _pos()


@dataclass(frozen=True)
class IsNull:
    field: str
    negated: bool = False
    pos: int | None = _pos()


@dataclass(frozen=True)
class HasAny:
    """A list-valued field holds at least one of ``values`` (no filter text produces it: the ACL
    prefilter is built in code, ``ragline.acl.visible_to``)."""

    field: str
    values: tuple[str, ...]
    pos: int | None = _pos()


@dataclass(frozen=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    operand: Node


Node = Union[Compare, InList, Contains, StartsWith, IsNull, HasAny, And, Or, Not]


# Fields a query filter may name (docs/filters.md). A store holds each as a column of its chunks.
FILTER_FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("source", "source", "str"),
        Field("type", "type", "str"),
        Field("title", "title", "str"),
        Field("year", "year", "int", bits=32),  # int32 columns
        Field("page", "page", "int", bits=32),
        Field("heading", "heading", "str"),
        Field("language", "language", "str"),
        Field("doc_id", "doc_id", "str"),
    )
}
# What a store query may name besides: the ACL, which only code (never filter text) puts in a tree.
ACL = Field("acl", "acl", "strs")
STORE_FIELDS: dict[str, Field] = {**FILTER_FIELDS, ACL.name: ACL}
# Fields of a document record (``Store.list_documents``): a subset of the chunks' fields.
DOCUMENT_FIELDS: dict[str, Field] = {n: STORE_FIELDS[n] for n in ("doc_id", "source", "type", "title", "year", "acl")}


def all_of(*nodes: Node | None) -> Node | None:
    """The conjunction of the given trees, None ones left out (None when none is left)."""
    kept = [n for n in nodes if n is not None]
    if not kept:
        return None
    out = kept[0]
    for n in kept[1:]:
        out = And(out, n)
    return out

_KW = "\n".join(f"{k.upper()}.2: /{k}\\b/i" for k in KEYWORDS)
_GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr | or_expr OR and_expr -> or_
?and_expr: not_expr | and_expr AND not_expr -> and_
?not_expr: atom | NOT not_expr -> not_
?atom: predicate | "(" or_expr ")"
predicate: NAME OP value -> compare
    | NAME IN list -> in_
    | NAME NOT IN list -> not_in
    | NAME CONTAINS value -> contains
    | NAME STARTSWITH value -> startswith
    | NAME IS NULL -> is_null
    | NAME IS NOT NULL -> is_not_null
list: "[" [value ("," value)*] "]"
?value: STRING | NUMBER | TRUE | FALSE
OP: "<=" | ">=" | "!=" | "=" | "<" | ">"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
STRING: /"(?:[^"\\\n]|\\.)*"/ | /'(?:[^'\\\n]|\\.)*'/
NUMBER: /[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?/
%ignore /\s+/
""" + _KW

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}
_FRIENDLY = {"NAME": "a field name", "OP": "a comparison (= != < <= > >=)", "STRING": "a string",
             "NUMBER": "a number", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'",
             "COMMA": "','", "$END": "end of input", **{k.upper(): repr(k) for k in KEYWORDS}}


def _unquote(tok: Token) -> str:
    body, out, i = tok[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2 : i + 6]):
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        else:
            raise FilterError(f"unknown escape '\\{nxt}' in string; allowed: \\\\ \\\" \\' \\n \\t \\r \\0 \\uXXXX",
                              pos=tok.start_pos + 1 + i)
    return "".join(out)


def _value(tok: Token) -> Value:
    if tok.type == "STRING":
        return _unquote(tok)
    if tok.type in ("TRUE", "FALSE"):
        return tok.type == "TRUE"
    if re.fullmatch(r"[+-]?\d+", tok):
        # sized before int(), which refuses more than 4,300 digits with a ValueError
        digits = tok.lstrip("+-").lstrip("0") or "0"
        v = (-1 if tok.startswith("-") else 1) * (int(digits) if len(digits) <= 19 else INT64_MAX + 1)
        if abs(v) > INT64_MAX:
            raise FilterError(f"integer {tok} is out of the 64-bit range", pos=tok.start_pos)
        return v
    v = float(tok)
    if not math.isfinite(v):
        raise FilterError(f"number {tok} is too large", pos=tok.start_pos)
    return v


def _string(tok: Token, op: str) -> str:
    if tok.type != "STRING":
        raise FilterError(f"'{op}' needs a quoted string, got {tok}", pos=tok.start_pos)
    return _unquote(tok)


def _name(tok: Token) -> str:
    if tok.lower() in KEYWORDS:
        raise FilterError(f"'{tok}' is a reserved word and cannot be a field name", pos=tok.start_pos)
    return str(tok)


@v_args(inline=True)
class _Build(Transformer_NonRecursive):
    def or_(self, a, _, b): return Or(a, b)
    def and_(self, a, _, b): return And(a, b)
    def not_(self, _, a): return Not(a)
    def compare(self, n, op, v): return Compare(_name(n), str(op), _value(v), n.start_pos)
    def in_(self, n, _, vs): return InList(_name(n), vs, False, n.start_pos)
    def not_in(self, n, _a, _b, vs): return InList(_name(n), vs, True, n.start_pos)
    def contains(self, n, op, v): return Contains(_name(n), _string(v, "contains"), n.start_pos)
    def startswith(self, n, op, v): return StartsWith(_name(n), _string(v, "startswith"), n.start_pos)
    def is_null(self, n, *_): return IsNull(_name(n), False, n.start_pos)
    def is_not_null(self, n, *_): return IsNull(_name(n), True, n.start_pos)

    def list(self, *vals):
        return tuple(_value(v) for v in vals if v is not None)


_PARSER = Lark(_GRAMMAR, parser="lalr", propagate_positions=False, maybe_placeholders=True)


def parse_filter(expr: str) -> Node:
    """Parse filter text into a tree; raise FilterError with a caret on bad input."""
    if not expr or not expr.strip():
        raise FilterError("empty filter expression; expected e.g. type = \"pdf\" and year >= 2020")
    try:
        node = _Build().transform(_PARSER.parse(expr))
    except VisitError as e:
        err = e.orig_exc
        if isinstance(err, FilterError):
            raise FilterError(err.reason, expr, err.pos) from None
        raise FilterError(f"cannot read this filter ({type(err).__name__})", expr) from None
    except UnexpectedInput as e:
        at_end = getattr(e, "token", None) is None or e.token.type == "$END"
        pos = e.pos_in_stream if isinstance(e, UnexpectedCharacters) or not at_end else len(expr)
        raise FilterError(_syntax_reason(e), expr, pos) from None
    except (LarkError, RecursionError) as e:  # any other parser failure is still a bad filter
        raise FilterError(f"cannot read this filter ({type(e).__name__})", expr) from None
    level, depth, terms = [(node, 1)], 0, 0
    while level:
        n, d = level.pop()
        depth = max(depth, d)
        terms += len(n.values) if isinstance(n, InList) else 0 if isinstance(n, (And, Or, Not)) else 1
        level.extend((c, d + 1) for c in (getattr(n, a, None) for a in ("left", "right", "operand")) if c)
    if depth > MAX_DEPTH:
        raise FilterError(f"filter nests and/or/not {depth} deep; at most {MAX_DEPTH} allowed "
                          "(use 'in [...]' instead of long or-chains)", expr)
    if terms > MAX_TERMS:
        raise FilterError(f"filter has {terms} comparisons and list values; at most {MAX_TERMS} allowed", expr)
    return node


def _syntax_reason(e: UnexpectedInput) -> str:
    if isinstance(e, UnexpectedCharacters):
        if e.char in "\"'":
            return f"unterminated string starting with {e.char}; close it with a matching {e.char}"
        return f"unexpected character {e.char!r}"
    tok = e.token if isinstance(e, UnexpectedToken) else None
    expected = sorted({_FRIENDLY.get(t, t) for t in getattr(e, "expected", ()) if not t.startswith("__")})
    what = "end of input" if tok is None or tok.type == "$END" else repr(str(tok))
    hint = "; use 'is null' / 'is not null' to test for null" if tok is not None and tok.type == "NULL" else ""
    if tok is not None and tok.type in {k.upper() for k in KEYWORDS} and "a field name" in expected:
        hint = f"; {str(tok)!r} is a reserved word and cannot be a field name"
    return f"unexpected {what}; expected {', '.join(expected) or 'something else'}{hint}"


def check_predicate(node: Node, fields: Mapping[str, Field]) -> Field:
    """The Field a predicate refers to, after checking its values fit the kind."""
    f = fields.get(node.field)
    if f is None:
        close = difflib.get_close_matches(node.field, list(fields), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise FilterError(f"unknown field '{node.field}'; known fields: {', '.join(sorted(fields))}{hint}",
                          pos=node.pos)
    if isinstance(node, HasAny) != (f.kind == "strs"):
        raise FilterError(f"field '{f.name}' is {f.kind}: " + ("only code may test it for membership" if f.kind == "strs"
                          else "it is not a list"), pos=node.pos)
    if isinstance(node, HasAny):
        if not node.values or not all(isinstance(v, str) for v in node.values):
            raise FilterError(f"'{f.name}' is tested against a non-empty list of strings", pos=node.pos)
        return f
    if isinstance(node, (Contains, StartsWith)) and f.kind != "str":
        op = "contains" if isinstance(node, Contains) else "startswith"
        raise FilterError(f"'{op}' works on text fields only; '{f.name}' is {f.kind}", pos=node.pos)
    if isinstance(node, Compare) and f.kind == "bool" and node.op not in ("=", "!="):
        raise FilterError(f"'{node.op}' cannot order bool field '{f.name}'; use = or !=", pos=node.pos)
    if isinstance(node, InList) and not node.values:
        raise FilterError("empty list after 'in'; give at least one value", pos=node.pos)
    values = node.values if isinstance(node, InList) else (node.value,) if isinstance(node, Compare) else ()
    for v in values:
        ok = {"str": isinstance(v, str), "bool": isinstance(v, bool),
              "int": isinstance(v, int) and not isinstance(v, bool),
              "float": isinstance(v, (int, float)) and not isinstance(v, bool)}[f.kind]
        if not ok:
            got = {str: "string", bool: "bool", int: "int", float: "float"}[type(v)]
            want = {"str": "a quoted string", "int": "an integer", "float": "a number",
                    "bool": "true or false"}[f.kind]
            raise FilterError(f"field '{f.name}' is {f.kind} but {literal(v)} is a {got}; "
                              f"expected {want}", pos=node.pos)
        if f.kind == "int" and not -(2 ** (f.bits - 1)) <= v < 2 ** (f.bits - 1):
            raise FilterError(f"integer {v} is out of range for field '{f.name}' ({f.bits}-bit: "
                              f"{-(2 ** (f.bits - 1))} to {2 ** (f.bits - 1) - 1})", pos=node.pos)
    return f


def literal(v: Value) -> str:
    """A value written as a SQL literal (strings single-quoted with quotes doubled, booleans in
    capitals): how error messages show a value, and how SQL renderers write one."""
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, float)):
        return repr(v)
    return "'" + v.replace("'", "''") + "'"


@dataclass
class Group:
    """A flat chain of one operator after ``not`` was pushed down to the predicates (De Morgan):
    ``word`` is AND or OR, ``parts`` are groups or ``(predicate, negated)`` leaves. Every backend
    renders this normal form; the language's nesting limit is counted on it."""

    word: str
    parts: list[Union["Group", tuple[Node, bool]]]


def flatten(node: Node, neg: bool = False) -> Union[Group, tuple[Node, bool]]:
    if isinstance(node, Not):
        return flatten(node.operand, not neg)
    if isinstance(node, (And, Or)):
        word = "AND" if isinstance(node, And) != neg else "OR"
        left, right = flatten(node.left, neg), flatten(node.right, neg)
        # a left-deep chain hands its own fresh list on: linear, not quadratic, in its length
        parts = left.parts if isinstance(left, Group) and left.word == word else [left]
        parts.extend(right.parts if isinstance(right, Group) and right.word == word else [right])
        return Group(word, parts)
    return node, neg


def group_depth(tree: Union[Group, tuple[Node, bool]]) -> int:
    if not isinstance(tree, Group):
        return 0
    return 1 + max((group_depth(p) for p in tree.parts), default=0)


def check_leaves(tree: Union[Group, tuple[Node, bool]], fields: Mapping[str, Field]) -> None:
    stack = [tree]
    while stack:
        t = stack.pop()
        if isinstance(t, Group):
            stack.extend(reversed(t.parts))
        else:
            check_predicate(t[0], fields)


def validate(node: Node, fields: Mapping[str, Field]) -> None:
    """Check every predicate against ``fields`` (known field, fitting values) and the nesting of
    and/or groups: SQL parsers refuse deep nesting (DataFusion's about 20 levels of alternating
    groups) and a store wraps a filter in its own clauses (the ACL prefilter), so a filter keeps
    well inside that."""
    tree = flatten(node)
    depth = group_depth(tree)
    if depth > MAX_GROUP_DEPTH:
        raise FilterError(f"filter nests and/or groups {depth} deep (alternating 'and' and 'or' in parentheses); "
                          f"at most {MAX_GROUP_DEPTH} allowed")
    check_leaves(tree, fields)


def compile_filter(expr: str, fields: Mapping[str, Field]) -> Node:
    """Parse ``expr`` and check it against ``fields``: the tree every store renders in its own
    language. Errors carry a caret into ``expr``."""
    node = parse_filter(expr)
    try:
        validate(node, fields)
    except FilterError as e:
        raise FilterError(e.reason, expr, e.pos) from None
    return node


def _eval(node: Node, rec: Mapping[str, Any]) -> bool | None:
    """SQL three-valued logic: None stands for NULL (unknown)."""
    if isinstance(node, And):
        a, b = _eval(node.left, rec), _eval(node.right, rec)
        return False if a is False or b is False else None if a is None or b is None else True
    if isinstance(node, Or):
        a, b = _eval(node.left, rec), _eval(node.right, rec)
        return True if a is True or b is True else None if a is None or b is None else False
    if isinstance(node, Not):
        a = _eval(node.operand, rec)
        return None if a is None else not a
    x = rec.get(node.field)
    if isinstance(node, IsNull):
        return (x is not None) if node.negated else (x is None)
    if x is None:
        return None
    if isinstance(node, HasAny):
        return not set(node.values).isdisjoint(x)
    try:
        if isinstance(node, InList):
            return (x in node.values) != node.negated
        if isinstance(node, Contains):
            return node.value in x
        if isinstance(node, StartsWith):
            return x.startswith(node.value)
        return _CMP[node.op](x, node.value)
    except (TypeError, AttributeError):
        raise FilterError(f"field '{node.field}' holds {x!r}, which this filter cannot test") from None


_CMP = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def matches(node: Node, record: Mapping[str, Any]) -> bool:
    """True when ``record`` passes the filter, as a SQL WHERE would decide:
    missing keys and None are NULL, and NULL results are excluded."""
    return _eval(node, record) is True
