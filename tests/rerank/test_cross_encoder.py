"""The cross-encoder reranker on a tiny cross-encoder built here.

No trained cross-encoder is available offline, so the model is a randomly initialised two-layer BERT
(with the bundled MiniLM's tokenizer) saved as a sentence-transformers CrossEncoder directory. Its
scores mean nothing about relevance: these tests check loading, batching, truncation, the score
each kind of model gives and the ordering against the same model called directly, never quality.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ragline.config import load_settings
from ragline.rerank.base import RerankError, rerank_hits
from ragline.rerank.cross_encoder import CrossEncoderReranker
from ragline.types import Chunk, Hit

pytestmark = pytest.mark.slow

WINDOW = 128  # the tiny model's position embeddings

QUERY = "how do plants turn sunlight into energy"
DOCS = [
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The stock market closed higher on Friday after a volatile week.",
    "Chlorophyll absorbs mostly blue and red light and reflects green.",
    "A recipe for sourdough bread needs flour, water, salt and a starter.",
    "Solar panels turn sunlight into electricity with photovoltaic cells.",
    "Mitochondria release energy from glucose through cellular respiration.",
]


def build_cross_encoder(dest: Path, num_labels: int = 1, seed: int = 0) -> Path:
    """A random tiny BERT sequence classifier, saved with the bundled tokenizer so that
    ``CrossEncoder(dest)`` loads it. A wide initialiser spreads its scores apart."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from ragline.embed.local import bundled_model_path

    tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_path()))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=WINDOW, num_labels=num_labels,
                        initializer_range=0.5)
    BertForSequenceClassification(config).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def direct_logits(model_dir: Path, pairs: list[tuple[str, str]]):
    """The model's logits for ``pairs``, called through transformers alone (no sentence-transformers)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = BertForSequenceClassification.from_pretrained(str(model_dir)).eval()
    out = []
    with torch.inference_mode():
        for q, d in pairs:  # one at a time: no padding at all
            enc = tokenizer(q, d, truncation="longest_first", max_length=WINDOW, return_tensors="pt")
            out.append(model(**enc).logits[0].tolist())
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-ce")


@pytest.fixture(scope="module")
def reranker(model_dir) -> CrossEncoderReranker:
    return CrossEncoderReranker(str(model_dir), batch_size=4, max_tokens=64)


def test_loads_from_a_directory_with_its_name_and_limit(reranker, model_dir):
    assert reranker.name == "cross-encoder:tiny-ce"
    assert reranker.num_labels == 1
    assert reranker.max_tokens == 64
    big = CrossEncoderReranker(str(model_dir), max_tokens=4096)
    assert big.max_tokens == WINDOW  # the setting is capped at the model's window
    # a passage of thousands of tokens is scored without running past the position embeddings
    scored = big.rerank(QUERY, ["energy " * 3000, DOCS[0]])
    assert sorted(s.index for s in scored) == [0, 1]


def test_scores_are_the_models_raw_logits_best_first(reranker, model_dir):
    scored = reranker.rerank(QUERY, DOCS)
    assert sorted(s.index for s in scored) == list(range(len(DOCS)))  # a permutation
    assert all(isinstance(s.score, float) for s in scored)
    assert [s.score for s in scored] == sorted((s.score for s in scored), reverse=True)
    expected = [row[0] for row in direct_logits(model_dir, reranker.pairs(QUERY, DOCS))]
    by_index = {s.index: s.score for s in scored}
    assert [by_index[i] for i in range(len(DOCS))] == pytest.approx(expected, abs=1e-4)
    assert len(set(expected)) == len(DOCS)  # distinct scores, so the order checked above is a real one
    assert any(not 0.0 <= x <= 1.0 for x in expected)  # raw logits: no sigmoid squashed them
    assert [s.index for s in reranker.rerank(QUERY, DOCS, top_n=2)] == [s.index for s in scored[:2]]
    assert reranker.rerank(QUERY, []) == []


def test_batch_size_does_not_change_the_scores(model_dir):
    docs = DOCS + ["short", "a much longer passage " * 20]
    one = CrossEncoderReranker(str(model_dir), batch_size=1, max_tokens=64).rerank(QUERY, docs)
    many = CrossEncoderReranker(str(model_dir), batch_size=16, max_tokens=64).rerank(QUERY, docs)
    assert [s.index for s in one] == [s.index for s in many]
    assert [s.score for s in one] == pytest.approx([s.score for s in many], abs=1e-5)


def test_pairs_are_cut_to_max_tokens_keeping_the_query_whole(reranker):
    tok = reranker.tokenizer
    long_doc = " ".join(f"word{i}" for i in range(2000))
    pairs = reranker.pairs(QUERY, [long_doc, DOCS[0]])
    assert [q for q, _ in pairs] == [QUERY, QUERY]
    assert long_doc.startswith(pairs[0][1]) and len(pairs[0][1]) < len(long_doc)
    assert pairs[1][1] == DOCS[0]  # a passage that fits is not touched
    n = len(tok(pairs[0][0], pairs[0][1])["input_ids"])
    assert n == reranker.max_tokens  # cut to the limit exactly, special tokens included
    # a query longer than half the budget is cut to half, so the passage keeps the other half
    budget = reranker.max_tokens - 3  # [CLS] query [SEP] passage [SEP]
    long_query = " ".join(f"query{i}" for i in range(500))
    (q, d), = reranker.pairs(long_query, [long_doc])
    assert len(tok(d, add_special_tokens=False)["input_ids"]) == budget // 2
    seen = tok(q, d, truncation="longest_first", max_length=reranker.max_tokens).sequence_ids()  # as the model
    assert (seen.count(0), seen.count(1)) == (budget - budget // 2, budget // 2)


def test_text_beyond_the_limit_does_not_change_the_score(reranker):
    base = "Photosynthesis " + " ".join(f"leaf{i}" for i in range(40))
    same_within_limit = base + " but the ending differs completely here"
    # the endings differ past max_tokens (64) but inside the model's window (128): only the cut hides them
    assert reranker.max_tokens < len(reranker.tokenizer(QUERY, same_within_limit)["input_ids"]) < WINDOW
    changed_within_limit = "Banking " + base[len("Photosynthesis "):]  # differs in its first word
    scored = {s.index: s.score for s in reranker.rerank(QUERY, [base, same_within_limit, changed_within_limit])}
    assert scored[0] == pytest.approx(scored[1], abs=1e-6)
    assert scored[0] != pytest.approx(scored[2], abs=1e-6)  # control: text inside the limit does count


def test_a_two_label_model_scores_the_log_odds_of_label_1(tmp_path):
    model_dir = build_cross_encoder(tmp_path / "two-label", num_labels=2, seed=1)
    reranker = CrossEncoderReranker(str(model_dir), max_tokens=64)
    assert reranker.num_labels == 2
    scored = {s.index: s.score for s in reranker.rerank(QUERY, DOCS)}
    logits = direct_logits(model_dir, reranker.pairs(QUERY, DOCS))
    assert [scored[i] for i in range(len(DOCS))] == pytest.approx([b - a for a, b in logits], abs=1e-4)


def test_a_model_with_more_labels_is_refused(tmp_path):
    model_dir = build_cross_encoder(tmp_path / "nli", num_labels=3)
    with pytest.raises(RerankError, match="3 labels.*rerank.model"):
        CrossEncoderReranker(str(model_dir))


def test_bad_model_settings_raise_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RerankError, match=f"could not load the cross-encoder from {empty}.*rerank.model"):
        CrossEncoderReranker(str(empty))
    with pytest.raises(RerankError, match="directory not found.*rerank.model"):
        CrossEncoderReranker(str(tmp_path / "missing"))
    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"not a model")
    with pytest.raises(RerankError, match="directory not found.*rerank.model"):
        CrossEncoderReranker(str(a_file))
    with pytest.raises(RerankError, match="not in the local Hugging Face cache.*rerank.model"):
        CrossEncoderReranker("no-such-org/no-such-cross-encoder")


def test_the_engine_builds_it_from_settings_and_the_stage_reorders_hits(model_dir, tmp_path):
    from ragline.app import Engine

    settings = load_settings({"rerank": {"method": "cross-encoder", "model": str(model_dir), "max_tokens": 48}},
                             home=tmp_path / "home")
    reranker = Engine(settings).reranker
    assert isinstance(reranker, CrossEncoderReranker) and reranker.max_tokens == 48
    hits = [Hit(Chunk(id=f"c{i}", doc_id=f"d{i}", source=f"/d/{i}.txt", text=t, start=0, end=len(t), ordinal=0),
                1.0 - i / 10) for i, t in enumerate(DOCS)]
    out = rerank_hits(reranker, QUERY, hits)
    expected = reranker.rerank(QUERY, DOCS)
    assert [h.chunk.id for h in out] == [f"c{s.index}" for s in expected]
    assert [h.scores["rerank"] for h in out] == pytest.approx([s.score for s in expected])
