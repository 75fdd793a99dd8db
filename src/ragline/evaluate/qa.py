"""A JSONL question-answering dataset: one question per line, with optional reference answer,
relevant document ids and reference passages.

Each line is a JSON object::

    {"id": "q1", "question": "...", "answer": "...", "relevant_ids": ["d1"],
     "contexts": ["reference passage"], "answerable": true}

Only ``id`` and ``question`` are required. ``answerable`` defaults to true; an unanswerable
item is one the documents do not answer, so the right reply is to abstain.
Other fields are ignored; blank lines are skipped. Every error names the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ragline.evaluate.beir import DatasetError

@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    answer: str | None = None  # the reference answer, when given
    relevant_ids: tuple[str, ...] = ()
    contexts: tuple[str, ...] = ()  # reference passages that hold the answer
    answerable: bool = True


def _string_list(value: object, field: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DatasetError(f"{where}: '{field}' must be a list of strings, got {json.dumps(value)[:80]}")
    return tuple(value)


def _item(obj: object, where: str) -> QAItem:
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("id", "question"):
        if key not in obj:
            raise DatasetError(f"{where}: missing required field '{key}'")
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise DatasetError(f"{where}: '{key}' must be a non-empty string")
    answer = obj.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise DatasetError(f"{where}: 'answer' must be a string")
    answerable = obj.get("answerable", True)
    if not isinstance(answerable, bool):
        raise DatasetError(f"{where}: 'answerable' must be true or false")
    return QAItem(
        id=obj["id"],
        question=obj["question"],
        answer=answer,
        relevant_ids=_string_list(obj.get("relevant_ids", []), "relevant_ids", where),
        contexts=_string_list(obj.get("contexts", []), "contexts", where),
        answerable=answerable,
    )


def load_qa(path: str | Path) -> list[QAItem]:
    """Read a QA JSONL file; raise DatasetError naming ``file:line`` for the first bad line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    items: list[QAItem] = []
    first_line: dict[str, int] = {}
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: invalid JSON ({exc.msg})") from None
        item = _item(obj, where)
        if item.id in first_line:
            raise DatasetError(f"{where}: duplicate id '{item.id}' (first on line {first_line[item.id]})")
        first_line[item.id] = line_no
        items.append(item)
    return items
