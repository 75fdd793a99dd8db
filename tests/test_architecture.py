"""The seams of ADR 0008, checked on the source tree so that a later change cannot quietly undo them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ragline"
MAX_FUNCTION_LINES = 150
MAX_MODULE_LINES = 600  # a longer module says why in a "# long: <reason>" line near its top


def modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_store_layer_imports_nothing_from_retrieval():
    offenders = {str(p.relative_to(SRC)): sorted(m for m in imports(p) if m.startswith("ragline.retrieve"))
                 for p in (SRC / "store").rglob("*.py")}
    assert {p: m for p, m in offenders.items() if m} == {}


def test_the_neutral_query_modules_import_no_backend():
    for name in ("filters.py", "acl.py"):
        assert not {m for m in imports(SRC / name) if m.startswith(("ragline.store", "ragline.retrieve", "lance"))}


def test_no_part_is_injected_by_writing_into_an_instance_dict():
    pattern = re.compile(r"__dict__\s*\[[^\]]*\]\s*=")
    assert [str(p.relative_to(SRC)) for p in modules() if pattern.search(p.read_text("utf-8"))] == []


def test_no_function_is_longer_than_the_limit():
    long = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def test_a_long_module_says_why():
    unexplained = []
    for path in modules():
        lines = path.read_text("utf-8").splitlines()
        if len(lines) > MAX_MODULE_LINES and not any(line.startswith("# long: ") for line in lines[:30]):
            unexplained.append(f"{path.relative_to(SRC)} ({len(lines)} lines)")
    assert unexplained == []
