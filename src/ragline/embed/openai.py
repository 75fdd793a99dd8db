"""Any OpenAI-compatible ``/v1/embeddings`` endpoint."""

from __future__ import annotations

from typing import Sequence

import httpx
import numpy as np

from ragline.embed.base import EmbedError, Tokenizer, normalize


def _pooled(embedding: list) -> list[float]:
    """A vector as given, or the mean of per-token vectors (llama.cpp servers whose model
    has no pooling answer with one vector per token)."""
    if embedding and isinstance(embedding[0], list):
        return np.asarray(embedding, dtype=np.float32).mean(axis=0).tolist()
    return embedding


class OpenAIEmbedder:
    """Calls ``POST {base_url}/embeddings``; batches inputs; L2-normalises results.

    Chunk sizes are counted with ``tokenizer`` (the bundled model's word pieces by
    default, which over-count compared with BPE tokenizers for English text), and
    ``max_tokens`` is the endpoint model's input limit.
    """

    def __init__(self, base_url: str, model: str, tokenizer: Tokenizer, max_tokens: int = 512,
                 api_key: str | None = None, batch_size: int = 64, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers)
        self.model_id = f"openai:{model}@{self.base_url}"
        self.dim = len(self._call(["dimension probe"])[0])

    def _call(self, texts: list[str]) -> list[list[float]]:
        url = f"{self.base_url}/embeddings"
        try:
            resp = self._http.post(url, json={"model": self.model, "input": texts})
        except httpx.HTTPError as exc:
            raise EmbedError(f"embedding endpoint {url} unreachable: {exc}") from None
        if resp.status_code != 200:
            raise EmbedError(f"embedding endpoint {url} answered {resp.status_code}: {resp.text[:300]}")
        try:
            data = sorted(resp.json()["data"], key=lambda d: d.get("index", 0))
            vectors = [_pooled(d["embedding"]) for d in data]
        except (ValueError, KeyError, TypeError):
            raise EmbedError(f"embedding endpoint {url} returned an unexpected body: {resp.text[:300]}") from None
        if len(vectors) != len(texts):
            raise EmbedError(f"embedding endpoint {url} returned {len(vectors)} vectors for {len(texts)} inputs")
        return vectors

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            rows.extend(self._call(list(texts[i : i + self.batch_size])))
        return normalize(np.asarray(rows, dtype=np.float32))

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]
