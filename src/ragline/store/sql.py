"""Rendering the neutral filter tree (``ragline.filters``) as a SQL boolean expression.

Two dialects: LanceDB's (DataFusion) and PostgreSQL's. Only a ``Field.column`` and quoted
literals ever reach the SQL; the text a user typed never does.
"""

from __future__ import annotations

import re
from typing import Callable, Literal, Mapping, Union

from ragline.filters import (Contains, Field, FilterError, Group, HasAny, InList, IsNull, Node, StartsWith, Compare,
                             Value, check_predicate, flatten, literal as _lit, validate)

Dialect = Literal["lance", "postgres"]

_RESERVED = frozenset("""and or not in contains startswith is null true false all any as asc between by case cast
    check column create cross current_date current_time current_timestamp current_user default desc distinct do
    else end except exists fetch for foreign from full group having ilike inner intersect interval into join
    lateral left like limit natural offset on only order outer primary references right select similar some
    table then to union unique user using values when where window with""".split())
_NEGATED_OP = {"=": "<>", "!=": "=", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}


def _ident(column: str) -> str:
    parts = column.split(".")
    if not column or not all(parts):
        raise FilterError(f"bad column name {column!r} in field definition")
    return ".".join(p if re.fullmatch(r"[a-z_][a-z0-9_]*", p) and p not in _RESERVED
                    else '"' + p.replace('"', '""') + '"' for p in parts)


def render(node: Node, fields: Mapping[str, Field], dialect: Dialect = "lance") -> str:
    """SQL for a tree already checked (``compile_filter``) or built by code (an ACL clause joined
    to a filter). ``not`` is pushed down to the predicates (De Morgan; ``not x = 1`` becomes
    ``x <> 1``), which is exact under SQL's three-valued logic, and in the lance dialect
    ``not in`` becomes a chain of ``<>``. Together these keep DataFusion's IN-list rewrites
    (which fold ``x IN ()`` to FALSE, and ``x NOT IN ()`` to TRUE, even for NULL x) from
    changing which rows match. A chain of one operator is rendered flat (``a OR b OR c``), and
    equalities on one field joined by ``or`` become one ``IN`` list (the same rows, NULL
    included), since DataFusion's parser refuses deeply nested SQL."""
    if dialect not in ("lance", "postgres"):
        raise FilterError(f"unknown SQL dialect {dialect!r}; expected 'lance' or 'postgres'")
    return _render(flatten(node), fields, dialect)


def to_sql(node: Node, fields: Mapping[str, Field], dialect: Dialect = "lance") -> str:
    """Check ``node`` against ``fields`` (``ragline.filters.validate``), then render it."""
    if dialect not in ("lance", "postgres"):
        raise FilterError(f"unknown SQL dialect {dialect!r}; expected 'lance' or 'postgres'")
    validate(node, fields)
    return render(node, fields, dialect)


def to_postgres(node: Node, fields: Mapping[str, Field]) -> tuple[str, list[Value]]:
    """PostgreSQL with bound parameters: the SQL holds ``%s`` placeholders and column names only,
    every value travels in the returned list (for psycopg's ``execute(sql, params)``). This is
    what the PostgreSQL store runs; ``render(..., "postgres")`` writes the same tree with quoted
    literals, for showing a filter to a person."""
    params: list[Value] = []

    def bind(v: Value) -> str:
        params.append(v)
        return "%s"

    return _render(flatten(node), fields, "postgres", bind), params


def compile_sql(expr: str, fields: Mapping[str, Field], dialect: Dialect = "lance") -> str:
    """Filter text straight to SQL (parse, check, render); errors carry a caret into ``expr``."""
    from ragline.filters import compile_filter

    return render(compile_filter(expr, fields), fields, dialect)


def _render(tree: Union[Group, tuple[Node, bool]], fields: Mapping[str, Field], dialect: str,
            lit: Callable[[Value], str] = _lit) -> str:
    if not isinstance(tree, Group):
        node, neg = tree
        return _predicate(node, check_predicate(node, fields), dialect, neg, lit)
    out: list[str | None] = []
    equal: dict[str, tuple[Field, int, list[tuple[Node, bool]]]] = {}  # field -> (Field, slot in out, leaves)
    for part in tree.parts:
        if isinstance(part, Group):
            out.append(_render(part, fields, dialect, lit))
            continue
        node, neg = part
        f = check_predicate(node, fields)
        if tree.word != "OR" or _equalities(node, neg) is None:
            out.append(_predicate(node, f, dialect, neg, lit))
        elif node.field in equal:
            equal[node.field][2].append(part)
        else:
            equal[node.field] = (f, len(out), [part])
            out.append(None)
    for f, slot, leaves in equal.values():
        if len(leaves) == 1:
            out[slot] = _predicate(leaves[0][0], f, dialect, leaves[0][1], lit)
        else:
            values = tuple(v for node, neg in leaves for v in _equalities(node, neg) or ())
            out[slot] = _predicate(InList(f.name, values), f, dialect, False, lit)
    kept = [s for s in out if s is not None]
    return kept[0] if len(kept) == 1 else "(" + f" {tree.word} ".join(kept) + ")"


def _equalities(node: Node, neg: bool) -> tuple[Value, ...] | None:
    """The values a predicate tests its field to equal (``=``, or ``in``, after negation),
    else None: or-ed together they make one IN list."""
    if isinstance(node, Compare) and node.op == ("!=" if neg else "="):
        return (node.value,)
    if isinstance(node, InList) and node.negated == neg:
        return node.values
    return None


def _predicate(node: Node, f: Field, dialect: str, neg: bool, _lit: Callable[[Value], str] = _lit) -> str:
    col = _ident(f.column)
    if isinstance(node, Compare):
        op = _NEGATED_OP[node.op] if neg else node.op
        return f"({col} {'<>' if op == '!=' else op} {_lit(node.value)})"
    if isinstance(node, InList):
        if node.negated == neg:
            return f"({col} IN ({', '.join(_lit(v) for v in dict.fromkeys(node.values))}))"
        if dialect == "postgres":
            return f"({col} NOT IN ({', '.join(_lit(v) for v in node.values)}))"
        return "(" + " AND ".join(f"{col} <> {_lit(v)}" for v in dict.fromkeys(node.values)) + ")"
    if isinstance(node, Contains):
        return f"(strpos({col}, {_lit(node.value)}) {'=' if neg else '>'} 0)"
    if isinstance(node, StartsWith):
        if dialect == "postgres":
            return f"(left({col}, {len(node.value)}) {'<>' if neg else '='} {_lit(node.value)})"
        return f"({'NOT ' if neg else ''}starts_with({col}, {_lit(node.value)}))"
    if isinstance(node, IsNull):
        return f"({col} IS {'NOT ' if node.negated != neg else ''}NULL)"
    if isinstance(node, HasAny):
        names = ", ".join(_lit(v) for v in sorted(set(node.values)))
        if dialect == "postgres":
            return f"({'NOT ' if neg else ''}{col} && ARRAY[{names}]::text[])"
        return f"({'NOT ' if neg else ''}array_has_any({col}, [{names}]))"
    raise TypeError(f"not a filter node: {node!r}")
