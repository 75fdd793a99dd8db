"""A sentence-transformers ``CrossEncoder`` as the second stage: query and passage read together.

The model comes from a local directory (``rerank.model``). A value that is not a directory and does
not look like a path is tried as a Hugging Face hub id, which loads only from the local model cache:
``HF_HUB_OFFLINE`` defaults to 1 here, as for the embedding model, so nothing is downloaded unless
the operator sets ``HF_HUB_OFFLINE=0`` themselves.

Scores are the model's raw output, never squashed: a one-logit model (the ms-marco family) gives its
logit; a two-label model gives ``logit[1] - logit[0]``, the log-odds of label 1 ("relevant"), whose
sigmoid is the softmax probability of label 1. So both kinds give the same quantity on the same
scale (a logit), and no float saturates to a tie near probability 1. A model with more labels (an
NLI model, say) is refused: its labels say nothing of relevance.

Token limit: a pair is cut to ``max_tokens`` tokens of the model's own tokenizer, special tokens
included, or to the model's window when that is smaller (``self.max_tokens`` holds the limit in
force). The budget is that limit less the special tokens ([CLS], [SEP] ...). The query is kept whole
when it takes at most half of the budget (rounded up), and the document is cut at a token boundary
to the rest. A longer query is cut too: the document keeps the first half of the budget (rounded
down) and the model's ``longest_first`` truncation cuts the query to the other half, so a long
query never crowds the document out. The tokenizer's own truncation to the same limit stays on
behind this as a guard.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Sequence

from ragline.rerank.base import RerankError, Scored, ordered

_PATH_PREFIXES = ("/", "./", "../", "~", "\\")


def _looks_like_path(model: str) -> bool:
    """True for values a user meant as a directory (absolute, relative or home paths, Windows paths);
    a hub id is ``name`` or ``org/name``."""
    return model.startswith(_PATH_PREFIXES) or model.count("/") > 1 or "\\" in model or model.endswith("/")


def _reason(exc: Exception) -> str:
    """The first line of a library error, without its final full stop (it goes mid-sentence)."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__).rstrip(".")


def _load(model: str):
    """The ``CrossEncoder`` for ``model`` (a directory, else a cached hub id), or a RerankError that
    names ``rerank.model``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not model.strip():
        raise RerankError("rerank.model is empty; set it to a local CrossEncoder directory")
    path = Path(model).expanduser()
    is_dir = path.is_dir()
    if not is_dir and (path.exists() or _looks_like_path(model)):
        raise RerankError(f"cross-encoder directory not found: {path}; set rerank.model to a local "
                          "sentence-transformers CrossEncoder directory")
    import torch
    from sentence_transformers import CrossEncoder

    device = None if torch.cuda.is_available() else "cpu"
    try:
        return CrossEncoder(str(path) if is_dir else model, device=device)
    except OSError as exc:
        if is_dir:
            raise RerankError(f"could not load the cross-encoder from {path}: {_reason(exc)}; set "
                              "rerank.model to a sentence-transformers CrossEncoder directory") from None
        raise RerankError(
            f"cross-encoder '{model}' is not a local directory and is not in the local Hugging Face cache "
            f"({type(exc).__name__}; downloads are off while HF_HUB_OFFLINE=1); set rerank.model to a local "
            "CrossEncoder directory") from None
    except Exception as exc:  # the library raises many types for a directory that is not a model
        raise RerankError(f"could not load the cross-encoder from {path if is_dir else model}: {_reason(exc)}; "
                          "set rerank.model to a sentence-transformers CrossEncoder directory") from None


class CrossEncoderReranker:
    """Scores (query, passage) pairs with a local cross-encoder, ``batch_size`` pairs per forward pass."""

    def __init__(self, model: str, batch_size: int = 32, max_tokens: int = 512) -> None:
        import torch

        self._torch = torch
        self._model = _load(model)
        self.name = f"cross-encoder:{Path(model.rstrip('/')).name or model}"
        self.batch_size = batch_size
        self.num_labels = int(self._model.num_labels)
        if self.num_labels not in (1, 2):
            raise RerankError(f"the cross-encoder at {model} has {self.num_labels} labels; a reranker needs 1 "
                              "(a relevance logit) or 2 (not relevant, relevant): set rerank.model to a "
                              "relevance cross-encoder")
        tokenizer = getattr(self._model, "tokenizer", None)
        if tokenizer is None:
            raise RerankError(f"the cross-encoder at {model} has no text tokenizer; set rerank.model to a "
                              "text CrossEncoder directory")
        self.tokenizer = tokenizer  # the model's own; counts and cuts use it (under the lock)
        window = int(tokenizer.model_max_length)
        self.max_tokens = min(max_tokens, window)  # the limit in force: the setting, or the model's window
        tokenizer.model_max_length = self.max_tokens  # the library truncates every pair to it (the guard)
        self._specials = int(tokenizer.num_special_tokens_to_add(pair=True))
        if self.max_tokens - self._specials < 2:
            raise RerankError(f"rerank.max_tokens={max_tokens} leaves no room for a query and a passage")
        # One call at a time: a fast tokenizer keeps its truncation mode as state shared by callers.
        self._lock = threading.Lock()

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def _cut(self, text: str, keep: int) -> str:
        """``text`` cut after its first ``keep`` tokens (at a token boundary, by character offsets)."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        spans = enc["offset_mapping"]
        return text if len(spans) <= keep else text[: spans[keep - 1][1]]

    def pairs(self, query: str, documents: Sequence[str]) -> list[tuple[str, str]]:
        """The (query, document) pairs as the model reads them, documents cut to the budget (see the
        module docstring); a caller may inspect what was scored."""
        with self._lock:
            return self._pairs(query, documents)

    def _pairs(self, query: str, documents: Sequence[str]) -> list[tuple[str, str]]:
        budget = self.max_tokens - self._specials
        keep = budget - min(self._count(query), budget - budget // 2)  # the query keeps up to half, rounded up
        return [(query, self._cut(doc, keep)) for doc in documents]

    def _scores(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Raw scores (see the module docstring), in input order."""
        torch = self._torch
        with torch.inference_mode():
            logits = self._model.predict(pairs, batch_size=self.batch_size, activation_fn=torch.nn.Identity(),
                                         apply_softmax=False, convert_to_numpy=True, show_progress_bar=False)
        if self.num_labels == 2:
            logits = logits[:, 1] - logits[:, 0]
        return [float(s) for s in logits.reshape(-1)]

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None,
               prior: Sequence[float] | None = None) -> list[Scored]:
        if not documents:
            return []
        with self._lock:
            return ordered(self._scores(self._pairs(query, documents)), top_n)
