"""CSV and JSON/JSONL as records: one line and one Section (kind="record")
per record, rendered "field: value; field: value" with nested keys
flattened as a.b.c (list items as a.0.b)."""

from __future__ import annotations

import csv
import io
import json

from ragline.ingest.parsers.base import ParseError, Segment, assemble, check_length, decode_text, stem_of
from ragline.types import Document

# csv.Sniffer's quote detection is quadratic in its sample: 64 KB of ',"' took 58 s, 8 KB 1 s
_SNIFF_BYTES = 8 * 1024


def _value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return " ".join(str(value).split())


def _scalar(value: object) -> bool:
    return not isinstance(value, (dict, list))


def flatten(value: object, prefix: str = "") -> list[tuple[str, str]]:
    """``{"a": {"b": 1}, "tags": ["x", "y"]}`` -> [("a.b", "1"), ("tags", "x, y")]."""
    out: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list):
        if all(_scalar(v) for v in value):
            if value:
                out.append((prefix or "value", ", ".join(_value(v) for v in value)))
        else:
            for i, item in enumerate(value):
                out.extend(flatten(item, f"{prefix}.{i}" if prefix else str(i)))
    else:
        out.append((prefix or "value", _value(value)))
    return out


def render(fields: list[tuple[str, str]]) -> str:
    """``"field: value; field: value"``; empty values left out."""
    return "; ".join(f"{k}: {v}" for k, v in fields if v != "")


def _document(source: str, type_: str, records: list[str], meta: dict) -> Document:
    segments = [Segment(r, heading_path=(f"record {i}",), kind="record")
                for i, r in enumerate(records, start=1) if r.strip()]
    if not segments:
        raise ParseError("empty: no records")
    text, sections = assemble(segments, clean=lambda s: " ".join(s.split()), sep="\n")
    meta = {"title": stem_of(source), **meta, "records": len(sections)}
    return Document(source=source, type=type_, text=text, sections=sections, metadata=meta)


# ---------------------------------------------------------------- CSV


def _dialect(text: str):
    sample = text[:_SNIFF_BYTES]
    if len(text) > _SNIFF_BYTES and "\n" in sample:
        sample = sample[: sample.rfind("\n")]  # never cut a record in half
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:  # one column, or too irregular to tell: plain CSV
        return csv.excel_tab if "\t" in sample.split("\n", 1)[0] else csv.excel


def _header(row: list[str]) -> list[str]:
    names, seen = [], set()
    for i, cell in enumerate(row, start=1):
        name = " ".join(cell.split()) or f"column {i}"
        if name in seen:
            name = f"{name} ({i})"
        seen.add(name)
        names.append(name)
    return names


def parse_csv(data: bytes, source: str) -> Document:
    """The first row names the fields; every later row is a record."""
    text, encoding = decode_text(data)
    check_length(len(text))
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), _dialect(text), strict=True))
    except csv.Error as exc:
        raise ParseError(f"invalid CSV: {exc}") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise ParseError("empty: no text")
    if len(rows) == 1:
        raise ParseError("empty: CSV has a header row but no records")
    header = _header(rows[0])
    records = []
    for row in rows[1:]:
        names = header + [f"column {i}" for i in range(len(header) + 1, len(row) + 1)]
        records.append(render([(n, _value(v)) for n, v in zip(names, row)]))
    return _document(source, "csv", records, {"columns": header, "encoding": encoding})


# ---------------------------------------------------------------- JSON


def _json_lines(text: str) -> list[object] | None:
    """Every non-blank line as a JSON value, or None if any line is not one."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    try:
        return [json.loads(line) for line in lines]
    except (json.JSONDecodeError, RecursionError):
        return None


def parse_json(data: bytes, source: str) -> Document:
    """A JSON array (one record per item), a JSON object or scalar (one
    record), or JSON Lines (one record per line)."""
    text, encoding = decode_text(data)
    check_length(len(text))
    try:
        value = json.loads(text)
        items = value if isinstance(value, list) else [value]
        layout = "array" if isinstance(value, list) else "object"
    except json.JSONDecodeError as exc:
        items = _json_lines(text)
        if items is None:
            raise ParseError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        layout = "lines"
    except RecursionError:
        raise ParseError("invalid JSON: nested too deeply") from None
    records = [render(flatten(item)) for item in items]
    return _document(source, "json", records, {"layout": layout, "encoding": encoding})
