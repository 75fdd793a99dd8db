"""What a query transformation returns, and the protocol every one follows.

A transformation turns the user's question into the searches that feed one answer: rewrites
searched with the request's own options (``queries``), texts searched on one side only
(``dense_texts``: HyDE's hypothetical answer; ``sparse_texts``: pseudo-relevance feedback's
expanded query), and, for decomposition, the sub-questions. It never retrieves with options of
its own: ``ragline.retrieve.multi`` runs every search with the request's filter, principals and
depth, so a transformation cannot widen what a caller may read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol, Sequence

from ragline.types import Hit

Fusion = Literal["rrf", "interleave"]
METHODS: tuple[str, ...] = ("none", "hyde", "multi-query", "decompose", "step-back", "prf")
LLM_METHODS: frozenset[str] = frozenset({"hyde", "multi-query", "decompose", "step-back"})


@dataclass(frozen=True)
class Rewrite:
    """The searches one question became.

    ``queries`` are searched with the request's mode (the original question among them when the
    transformation keeps it); ``dense_texts`` on the dense side and ``sparse_texts`` on the sparse
    side only (a side the request's mode lacks falls back to the request's mode). ``fusion`` says
    how the hit lists combine: ``rrf`` (an item several searches found ranks high) or
    ``interleave`` (round robin by rank, so every sub-question's best hits are kept). ``detail``
    records what happened (the model's usage, a fallback taken and why) for the trace.
    """

    question: str
    queries: tuple[str, ...]
    dense_texts: tuple[str, ...] = ()
    sparse_texts: tuple[str, ...] = ()
    sub_questions: tuple[str, ...] = ()
    fusion: Fusion = "rrf"
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def fallback(self) -> str | None:
        """Why the transformation fell back to the original question alone, or None."""
        return self.detail.get("fallback")

    def searches(self) -> list[tuple[str, str, str | None]]:
        """Every search as (label, text, side): side None is the request's own mode."""
        out: list[tuple[str, str, str | None]] = []
        for i, text in enumerate(self.queries):
            out.append(("original" if text == self.question else f"query {i + 1}", text, None))
        for side, texts in (("dense", self.dense_texts), ("sparse", self.sparse_texts)):
            out += [(f"original ({side})" if t == self.question else f"{side} {i + 1}", t, side)
                    for i, t in enumerate(texts)]
        return out


def unchanged(question: str, method: str, reason: str | None = None, detail: dict[str, Any] | None = None) -> Rewrite:
    """The original question alone; ``reason`` (recorded as the fallback) says why nothing else."""
    info: dict[str, Any] = {**(detail or {}), "method": method}
    if reason:
        info["fallback"] = reason
    return Rewrite(question, (question,), detail=info)


# what a transformation may ask for: the original request's hits (run at most once, lazily;
# pseudo-relevance feedback reads them, the LLM transformations never call it)
FirstPass = Callable[[], Sequence[Hit]]


class QueryTransform(Protocol):
    """Turns a question into searches. ``needs_llm`` says whether it calls the chat model."""

    name: str
    needs_llm: bool

    def transform(self, question: str, first_pass: FirstPass) -> Rewrite: ...


class Identity:
    """No transformation: the question is searched as asked (``transform.method = none``)."""

    name = "none"
    needs_llm = False

    def transform(self, question: str, first_pass: FirstPass) -> Rewrite:
        return unchanged(question, self.name)


# a list marker at the start of a line: "1.", "2)", "(3)", "-", "*", "•", "Q1:", "Query 2 -"
_MARKER = re.compile(r"^\s*(?:[-*\u2022>]+(?=\s)\s*|\(?\d{1,2}[.):](?=\s)\s*"
                     r"|(?:sub-?)?(?:query|question|q)\s*\d+\s*[:.)-]\s*|(?:sub-?)?(?:query|question)\s*:\s*)+", re.I)
_PREAMBLE = re.compile(r"^(?:here (?:are|is)|sure|okay|ok|the (?:queries|questions|sub-questions)|"
                       r"(?:search )?queries|sub-questions|questions)\b.*:$", re.I)


def clean_line(line: str) -> str:
    """One reply line without its list marker, markdown emphasis, or surrounding quotes."""
    text = _MARKER.sub("", line.replace("**", "").replace("__", "").strip()).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return " ".join(text.split())


def normal(text: str) -> str:
    """The form two queries are compared in: lower case, letters and digits only."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def parse_lines(reply: str, limit: int, exclude: Sequence[str] = (), truncated: bool = False,
                max_chars: int = 300) -> list[str]:
    """Queries from a model's reply: one per line, numbered or bulleted or bare; preambles
    ("Here are three queries:"), blank lines and lines without a letter dropped; duplicates (and
    anything in ``exclude``, compared case- and punctuation-blind) dropped; at most ``limit``.
    A reply cut off at its token limit (``truncated``) loses its last line, which may be partial."""
    lines = reply.splitlines()
    if truncated and len(lines) > 1:
        lines = lines[:-1]
    seen = {normal(e) for e in exclude}
    out: list[str] = []
    for raw in lines:
        text = clean_line(raw)
        key = normal(text)
        if not key or not re.search(r"[A-Za-z]", text) or _PREAMBLE.match(text) or key in seen:
            continue
        seen.add(key)
        out.append(text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0])
        if len(out) >= limit:
            break
    return out
