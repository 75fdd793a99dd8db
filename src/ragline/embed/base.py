"""The Embedder and Tokenizer protocols: the seam between chunking/retrieval and models."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class EmbedError(Exception):
    """An embedding model could not be loaded or called; the message says what to fix."""


class Tokenizer(Protocol):
    def count(self, text: str) -> int:
        """Tokens the model sees for ``text``, excluding special tokens."""

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token of ``text`` (excluding special tokens)."""


class Embedder(Protocol):
    model_id: str  # stable identity for caches and the index fingerprint
    dim: int
    max_tokens: int  # content tokens one input may hold without truncation
    tokenizer: Tokenizer

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 matrix, one row per text. Never truncates silently."""

    def embed_query(self, text: str) -> np.ndarray:
        """L2-normalised float32 vector."""


def normalize(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms
