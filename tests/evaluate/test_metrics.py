"""Ranking metrics against values worked out by hand."""

from __future__ import annotations

from math import log2

import pytest

from ragline.evaluate.metrics import (average_precision_at_k, mrr_at_k, ndcg_at_k, percentile, precision_at_k,
                                      recall_at_k)


# ------------------------------------------------------------------------------------- nDCG
def test_ndcg_binary():
    # relevant at ranks 1 and 3 of 3 relevant docs overall
    ranked = ["a", "x", "b", "y"]
    qrels = {"a": 1, "b": 1, "c": 1}
    dcg = 1 / log2(2) + 1 / log2(4)
    idcg = 1 / log2(2) + 1 / log2(3) + 1 / log2(4)
    assert ndcg_at_k(ranked, qrels, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(ranked, qrels, 1) == pytest.approx(1.0)  # ideal@1 is also one relevant doc
    assert ndcg_at_k(ranked, qrels, 2) == pytest.approx(1 / (1 + 1 / log2(3)))


def test_ndcg_perfect_and_worst():
    qrels = {"a": 1, "b": 1}
    assert ndcg_at_k(["a", "b", "x"], qrels, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["b", "a"], qrels, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], qrels, 10) == 0.0
    assert ndcg_at_k(["x", "a"], qrels, 1) == 0.0  # the relevant doc is past the cut


def test_ndcg_graded_gains_are_two_to_the_grade_minus_one():
    ranked = ["a", "b", "c"]
    qrels = {"a": 1, "b": 0, "c": 2, "d": 2}
    dcg = (2**1 - 1) / log2(2) + 0 + (2**2 - 1) / log2(4)  # 1 + 1.5
    idcg = 3 / log2(2) + 3 / log2(3) + 1 / log2(4)  # grades 2, 2, 1
    assert ndcg_at_k(ranked, qrels, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(ranked, qrels, 10) == pytest.approx(0.46358, abs=1e-5)
    # a grade-2 doc first beats a grade-1 doc first
    assert ndcg_at_k(["c", "a"], qrels, 10) > ndcg_at_k(["a", "c"], qrels, 10)


def test_ndcg_fewer_results_than_k():
    qrels = {"a": 1, "b": 1}
    assert ndcg_at_k(["a"], qrels, 10) == pytest.approx(1 / (1 + 1 / log2(3)))
    assert ndcg_at_k([], qrels, 10) == 0.0


def test_ndcg_no_relevant_documents_is_zero():
    assert ndcg_at_k(["a", "b"], {}, 10) == 0.0
    assert ndcg_at_k(["a", "b"], {"a": 0, "b": 0}, 10) == 0.0


def test_ndcg_negative_grades_count_as_non_relevant():
    qrels = {"spam": -2, "a": 1}
    value = ndcg_at_k(["spam", "a"], qrels, 10)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(ndcg_at_k(["x", "a"], {"a": 1}, 10))


# --------------------------------------------------------------------- recall, precision, MRR
def test_recall_at_k():
    qrels = {"a": 1, "b": 2, "c": 1, "z": 0}
    ranked = ["a", "x", "b", "z", "c"]
    assert recall_at_k(ranked, qrels, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, qrels, 3) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, qrels, 5) == pytest.approx(1.0)
    assert recall_at_k(ranked, qrels, 100) == pytest.approx(1.0)
    assert recall_at_k(ranked, {}, 10) == 0.0
    assert recall_at_k(["z"], {"z": 0}, 10) == 0.0


def test_precision_at_k_divides_by_k():
    qrels = {"a": 1, "b": 1}
    assert precision_at_k(["a", "x", "b", "y"], qrels, 2) == pytest.approx(1 / 2)
    assert precision_at_k(["a", "x", "b", "y"], qrels, 4) == pytest.approx(2 / 4)
    assert precision_at_k(["a"], qrels, 5) == pytest.approx(1 / 5)  # fewer results than k
    assert precision_at_k(["x", "y"], qrels, 2) == 0.0


def test_mrr_at_k():
    qrels = {"b": 1, "d": 3}
    assert mrr_at_k(["a", "b", "d"], qrels, 10) == pytest.approx(1 / 2)
    assert mrr_at_k(["d", "b"], qrels, 10) == pytest.approx(1.0)
    assert mrr_at_k(["a", "c", "x", "d"], qrels, 10) == pytest.approx(1 / 4)
    assert mrr_at_k(["a", "c", "x", "d"], qrels, 3) == 0.0  # first relevant is past the cut
    assert mrr_at_k([], qrels, 10) == 0.0
    assert mrr_at_k(["a"], {"a": 0}, 10) == 0.0


# ------------------------------------------------------------------------------------- MAP
def test_average_precision_divides_by_all_relevant_documents():
    qrels = {"a": 1, "b": 1, "c": 1}  # c is never retrieved
    ranked = ["a", "x", "b", "y"]
    assert average_precision_at_k(ranked, qrels, 100) == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert average_precision_at_k(ranked, qrels, 2) == pytest.approx((1 / 1) / 3)  # trec_eval map_cut
    assert average_precision_at_k(["x", "y", "a", "b", "c"], qrels, 100) == pytest.approx(
        (1 / 3 + 2 / 4 + 3 / 5) / 3)
    assert average_precision_at_k(["a", "b", "c"], qrels, 3) == pytest.approx(1.0)
    assert average_precision_at_k(["a"], {}, 10) == 0.0
    assert average_precision_at_k(["a"], {"a": 0}, 10) == 0.0


def test_average_precision_graded_counts_any_positive_grade():
    assert average_precision_at_k(["x", "a"], {"a": 3}, 10) == pytest.approx(1 / 2)


# ------------------------------------------------------------------------------ percentile
def test_percentile_interpolates_linearly():
    values = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)  # between 2 and 3
    assert percentile(values, 25) == pytest.approx(1.75)  # position 0.75
    assert percentile(values, 95) == pytest.approx(3.85)  # position 2.85
    assert percentile([10.0, 20.0], 30) == pytest.approx(13.0)
    assert values == [4.0, 1.0, 3.0, 2.0]  # input untouched


def test_percentile_edge_cases():
    assert percentile([], 50) == 0.0
    assert percentile([7.5], 0) == percentile([7.5], 95) == 7.5
    assert percentile([5.0, 5.0, 5.0], 50) == 5.0
