"""The bundled embedder used from several threads at once, as `ragline serve` does."""

from __future__ import annotations

import threading

import pytest

pytestmark = pytest.mark.slow


def test_counting_tokens_while_another_thread_embeds_a_padded_batch(embedder):
    texts = ["short one here.", "a somewhat longer sentence " * 8, "mid length sentence about tea and water " * 3] * 6
    expected = embedder.embed_documents(texts)
    done = threading.Event()
    errors: list[str] = []
    counts: list[int] = []

    def count() -> None:
        while not done.is_set():
            counts.append(embedder.tokenizer.count("count these words please " * 5))
            embedder.tokenizer.offsets("and where they are")

    t = threading.Thread(target=count)
    t.start()
    try:
        for _ in range(15):
            try:
                got = embedder.embed_documents(texts)
                assert abs(got - expected).max() < 1e-3
            except ValueError as exc:  # "Unable to create tensor": the padding mode switched mid-batch
                errors.append(str(exc)[:200])
    finally:
        done.set()
        t.join()
    assert errors == []
    assert counts and set(counts) == {counts[0]}
