"""The bundled model, offline, and the embedding cache."""

from __future__ import annotations

import numpy as np
import pytest

from ragline.embed.base import EmbedError
from ragline.embed.cache import EmbeddingCache, embed_with_cache
from ragline.embed.local import LocalEmbedder, cpu_has_bf16


def test_bundled_model_embeds_offline(embedder):
    vecs = embedder.embed_documents(["A cat sat on the mat.", "A kitten rested on the rug.",
                                     "Quarterly revenue grew by four percent."])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    q = embedder.embed_query("A cat sat on the mat.")
    assert float(q @ vecs[0]) > 0.99


def test_over_long_input_is_refused_not_truncated(embedder):
    with pytest.raises(EmbedError, match="would be truncated"):
        embedder.embed_documents(["word " * 400])


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(EmbedError, match="not found"):
        LocalEmbedder(str(tmp_path / "no-such-model"))


@pytest.mark.skipif(not cpu_has_bf16(), reason="CPU has no native bfloat16")
def test_bf16_vectors_match_fp32(embedder):
    fp32 = LocalEmbedder("bundled:all-MiniLM-L6-v2", precision="fp32")
    texts = ["Water boils at a lower temperature at altitude.", "Mars has two moons."]
    a, b = fp32.embed_documents(texts), embedder.embed_documents(texts)
    assert embedder.model_id.endswith("@bf16") and fp32.model_id.endswith("@fp32")
    assert np.min(np.sum(a * b, axis=1)) > 0.999


def test_cache_embeds_each_text_once(tmp_path, embedder):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    texts = ["alpha beta", "gamma delta", "alpha beta"]
    first, fresh = embed_with_cache(embedder, cache, texts)
    assert fresh == 2 and first.shape == (3, 384)
    assert np.array_equal(first[0], first[2])
    again, fresh2 = embed_with_cache(embedder, cache, texts + ["new text"])
    assert fresh2 == 1 and np.array_equal(again[:3], first)
    reopened = EmbeddingCache(tmp_path / "c.sqlite")  # persisted
    assert reopened.count() == 3
    assert reopened.get_many("other-model@fp32", ["x"]) == {}
