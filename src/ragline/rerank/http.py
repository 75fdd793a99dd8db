"""A reranker behind an HTTP endpoint, in one of two wire formats (``rerank.api``).

``cohere``: POST ``{"model", "query", "documents": [str], "return_documents": false}`` and read
``{"results": [{"index", "relevance_score"}]}``. Spoken by Cohere v2 (``/v2/rerank``), Jina
(``/v1/rerank``), Infinity (``/rerank``; its older releases answer under ``"data"``, read too),
llama.cpp's server started with ``--reranking`` (``/v1/rerank``) and ragline's own ``/v1/rerank``.

``tei``: Hugging Face text-embeddings-inference, POST ``{"query", "texts", "truncate": true}``
and read a JSON list ``[{"index", "score"}]``.

Choices, and why:

- ``top_n`` is never sent: every batch asks for all its scores, so each answer can be checked to
  hold every index exactly once, and the cut to ``top_n`` is made after the batches are merged.
- ``max_tokens_per_doc`` (``rerank.max_tokens``) is a Cohere v2 field; it is sent only to a URL
  whose path ends in ``/v2/rerank``. The other servers do not define it (the pydantic and JSON
  readers of Infinity and llama.cpp ignore unknown fields, but a strict endpoint need not), and
  cut to their model's own window instead.
- ``truncate: true`` is sent to TEI: without it TEI refuses a pair over its model's window, which
  would fail a search; with it TEI cuts the pair to that window (TEI's ``--max-input-length``).
- Error messages name the URL (without any user:password part) and the HTTP status, never the key.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

from ragline.rerank.base import RerankError, Scored, ordered

_HINTS = {
    401: "; check rerank.api_key",
    403: "; check rerank.api_key",
    404: "; check rerank.url (e.g. .../v2/rerank, .../v1/rerank or .../rerank)",
    413: "; lower rerank.batch_size (the endpoint takes fewer documents per request)",
    422: "; check rerank.api ('cohere' or 'tei') and rerank.model",
    400: "; check rerank.api ('cohere' or 'tei') and rerank.model",
}


def shown_url(url: str) -> str:
    """``url`` as it may appear in a message or log: without a ``user:password@`` part or a query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class HTTPReranker:
    """Calls a rerank endpoint with ``batch_size`` documents per request (one HTTP client,
    reused and thread-safe); merges the batches' scores, best first."""

    def __init__(self, url: str, *, api: Literal["cohere", "tei"] = "cohere", model: str | None = None,
                 api_key: str | None = None, batch_size: int = 32, max_tokens: int = 512,
                 timeout_s: float = 60.0) -> None:
        if api not in ("cohere", "tei"):
            raise RerankError(f"rerank.api must be 'cohere' or 'tei', not {api!r}")
        if batch_size < 1:
            raise RerankError(f"rerank.batch_size must be at least 1, not {batch_size}")
        self.url, self.api, self.model = url, api, model
        self.batch_size, self.max_tokens, self.timeout_s = batch_size, max_tokens, timeout_s
        self.shown = shown_url(url)
        self.name = f"http:{model or urlsplit(url).hostname or url}"
        self._key = api_key
        self._send_max_tokens = api == "cohere" and urlsplit(url).path.rstrip("/").endswith("/v2/rerank")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self._http.close()

    # -- the protocol --------------------------------------------------------------------------
    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None,
               prior: Sequence[float] | None = None) -> list[Scored]:
        """One ``Scored`` per document (or the ``top_n`` best), best first; ties keep input order."""
        docs = list(documents)
        scores: list[float] = [0.0] * len(docs)
        for start in range(0, len(docs), self.batch_size):
            batch = docs[start : start + self.batch_size]
            for index, score in self._call(query, batch):
                scores[start + index] = score
        return ordered(scores, top_n)

    # -- one request ---------------------------------------------------------------------------
    def body(self, query: str, batch: list[str]) -> dict:
        """The JSON request for one batch, in the endpoint's wire format."""
        if self.api == "tei":
            return {"query": query, "texts": batch, "truncate": True}
        out: dict = {"query": query, "documents": batch, "return_documents": False}
        if self.model:
            out["model"] = self.model
        if self._send_max_tokens:
            out["max_tokens_per_doc"] = self.max_tokens
        return out

    def _call(self, query: str, batch: list[str]) -> list[tuple[int, float]]:
        try:
            resp = self._http.post(self.url, json=self.body(query, batch))
        except httpx.TimeoutException:
            raise RerankError(f"rerank endpoint {self.shown} did not answer within {self.timeout_s:g} s "
                              "(rerank.timeout_s)") from None
        except httpx.HTTPError as exc:
            raise RerankError(f"rerank endpoint {self.shown} is unreachable ({type(exc).__name__}: "
                              f"{self._redact(str(exc))}); check rerank.url") from None
        if resp.status_code != 200:
            raise RerankError(f"rerank endpoint {self.shown} answered HTTP {resp.status_code}"
                              f"{_HINTS.get(resp.status_code, '')}: {self._excerpt(resp.text)}")
        try:
            payload = resp.json()
        except ValueError:
            raise RerankError(f"rerank endpoint {self.shown} answered with a body that is not JSON: "
                              f"{self._excerpt(resp.text)}") from None
        pairs = self._parse(payload, resp.text)
        self._check(pairs, len(batch))
        return pairs

    def _parse(self, payload: object, text: str) -> list[tuple[int, float]]:
        """(index, score) pairs from a response body; a RerankError that says what was wrong."""
        if self.api == "tei":
            items, field = payload, "score"
            if isinstance(payload, dict) and "results" in payload:
                raise RerankError(f"rerank endpoint {self.shown} answered in the Cohere shape "
                                  "({'results': ...}); set rerank.api to 'cohere'")
        else:
            if isinstance(payload, list):
                raise RerankError(f"rerank endpoint {self.shown} answered with a JSON list (the TEI shape); "
                                  "set rerank.api to 'tei'")
            items = payload.get("results", payload.get("data")) if isinstance(payload, dict) else None
            field = "relevance_score"
        try:
            return [_pair(item, field) for item in items]  # type: ignore[union-attr]
        except (TypeError, KeyError, ValueError):
            expected = "[{'index', 'score'}]" if self.api == "tei" else "{'results': [{'index', 'relevance_score'}]}"
            raise RerankError(f"rerank endpoint {self.shown} answered with an unexpected body (expected "
                              f"{expected} for rerank.api '{self.api}'): {self._excerpt(text)}") from None

    def _check(self, pairs: list[tuple[int, float]], n: int) -> None:
        """Every document of the batch scored exactly once."""
        indices = sorted(i for i, _ in pairs)
        if indices != list(range(n)):
            bad = sorted({i for i in indices if not 0 <= i < n} | {i for i in indices if indices.count(i) > 1})
            detail = f"; bad or repeated indices: {bad[:10]}" if bad else ""
            raise RerankError(f"rerank endpoint {self.shown} returned {len(pairs)} results for {n} documents"
                              f"{detail}")

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _excerpt(self, text: str) -> str:
        text = self._redact(text.strip())
        return (text[:300] + "...") if len(text) > 300 else (text or "(empty body)")


def _pair(item: object, field: str) -> tuple[int, float]:
    """One result item -> (index, score); ValueError/KeyError/TypeError when it is not one."""
    if not isinstance(item, dict):
        raise TypeError("not an object")
    index, score = item["index"], item[field]
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError("index is not an integer")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise ValueError("score is not a finite number")
    return index, float(score)
