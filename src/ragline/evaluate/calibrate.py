"""Calibrating the offline judge's support threshold on labelled (statement, passages, supported)
items; see docs/metrics.md ("Calibration")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ragline.evaluate.judge import OfflineJudge


@dataclass(frozen=True)
class Calibration:
    judge: str  # the judge's version and model (threshold excluded: it is the result)
    threshold: float
    balanced_accuracy: float  # (true-positive rate + true-negative rate) / 2 at the threshold
    n: int
    n_supported: int
    n_unsupported: int
    true_positives: int
    true_negatives: int


Labelled = tuple[str, Sequence[str], bool]


def balanced_accuracy(scores: Sequence[float], labels: Sequence[bool], threshold: float) -> tuple[float, int, int]:
    """(balanced accuracy, true positives, true negatives) when score >= threshold means supported."""
    pos = sum(labels)
    neg = len(labels) - pos
    tp = sum(1 for s, y in zip(scores, labels) if y and s >= threshold)
    tn = sum(1 for s, y in zip(scores, labels) if not y and s < threshold)
    rates = ([tp / pos] if pos else []) + ([tn / neg] if neg else [])
    return (sum(rates) / len(rates) if rates else 0.0), tp, tn


def calibrate(judge: OfflineJudge, labelled: Sequence[Labelled]) -> Calibration:
    """The support threshold maximising balanced accuracy on ``labelled`` (statement, passages, supported).

    Candidates are midpoints between consecutive distinct scores (plus one below and one above all);
    of equally good candidates the middle one is taken, to keep away from both classes.
    """
    if not labelled:
        raise ValueError("calibrate needs at least one labelled item")
    scores = [judge.support(st, passages).score for st, passages, _ in labelled]
    labels = [bool(y) for _, _, y in labelled]
    distinct = sorted(set(scores))
    cands = [distinct[0] - 0.01] + [(a + b) / 2 for a, b in zip(distinct, distinct[1:])] + [distinct[-1] + 0.01]
    results = [(balanced_accuracy(scores, labels, t), t) for t in cands]
    top = max(r[0][0] for r in results)
    ties = [r for r in results if r[0][0] == top]
    (acc, tp, tn), threshold = ties[(len(ties) - 1) // 2]
    return Calibration(f"{judge.version} (model {judge.embedder.model_id})", round(threshold, 6), acc, len(labels),
                       sum(labels), len(labels) - sum(labels), tp, tn)


def load_labelled(path: str | Path) -> list[Labelled]:
    """Read a calibration set: JSONL lines ``{"statement": str, "passages": [str], "supported": bool}``."""
    items: list[Labelled] = []
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            statement, passages, supported = obj["statement"], obj["passages"], obj["supported"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{line_no}: expected statement, passages and supported ({exc})") from None
        if not isinstance(statement, str) or not isinstance(supported, bool) or not isinstance(passages, list):
            raise ValueError(f"{path}:{line_no}: statement must be a string, passages a list, supported a bool")
        items.append((statement, tuple(passages), supported))
    return items
