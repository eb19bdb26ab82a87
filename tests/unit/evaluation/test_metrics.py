from __future__ import annotations

import math

import pytest

from fitpulse_orchestration.evaluation.metrics import (
    average_precision_at_k,
    catalog_coverage,
    intra_list_diversity,
    ndcg_at_k,
    recall_at_k,
)

RELEVANCE = {"a": 3, "b": 1, "c": 0, "d": 2}


def test_ndcg_hand_computed_with_graded_gains() -> None:
    ranked = ["b", "x", "a", "c", "d"]

    dcg = 1 / math.log2(2) + 7 / math.log2(4) + 3 / math.log2(6)
    idcg = 7 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, RELEVANCE, 5) == pytest.approx(dcg / idcg)


def test_ndcg_cuts_at_k_on_both_sides() -> None:
    ranked = ["d", "a", "b"]

    dcg = 3 / math.log2(2) + 7 / math.log2(3)
    idcg = 7 / math.log2(2) + 3 / math.log2(3)
    assert ndcg_at_k(ranked, RELEVANCE, 2) == pytest.approx(dcg / idcg)


def test_ndcg_perfect_and_empty() -> None:
    assert ndcg_at_k(["a", "d", "b", "c"], RELEVANCE, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], RELEVANCE, 10) == 0.0
    assert ndcg_at_k([], RELEVANCE, 10) == 0.0
    assert ndcg_at_k(["a", "b"], {}, 10) == 0.0
    assert ndcg_at_k(["c"], {"c": 0}, 10) == 0.0


def test_average_precision_hand_computed() -> None:
    ranked = ["x", "a", "c", "b", "d"]

    assert average_precision_at_k(ranked, RELEVANCE, 5) == pytest.approx(
        (1 / 2 + 2 / 4 + 3 / 5) / 3
    )
    assert average_precision_at_k(ranked, RELEVANCE, 2) == pytest.approx((1 / 2) / 2)
    assert average_precision_at_k(["a", "b", "d"], RELEVANCE, 10) == pytest.approx(1.0)


def test_average_precision_edge_cases() -> None:
    assert average_precision_at_k(["a"], {}, 10) == 0.0
    assert average_precision_at_k(["c"], {"c": 0}, 10) == 0.0
    assert average_precision_at_k([], RELEVANCE, 10) == 0.0


def test_recall_hand_computed() -> None:
    assert recall_at_k(["a", "x", "b", "d"], RELEVANCE, 2) == pytest.approx(1 / 3)
    assert recall_at_k(["a", "x", "b", "d"], RELEVANCE, 4) == pytest.approx(1.0)
    assert recall_at_k(["c"], RELEVANCE, 10) == 0.0
    assert recall_at_k(["a"], {"c": 0}, 10) == 0.0
    assert recall_at_k([], {}, 10) == 0.0


def test_intra_list_diversity() -> None:
    assert intra_list_diversity(["yoga", "yoga", "hiit"]) == pytest.approx(2 / 3)
    assert intra_list_diversity(["a", "b", "c", "d"]) == pytest.approx(1.0)
    assert intra_list_diversity(["a", "a", "a"]) == 0.0
    assert intra_list_diversity(["a", "a", "b", "b"]) == pytest.approx(4 / 6)
    assert intra_list_diversity(["a"]) == 0.0
    assert intra_list_diversity([]) == 0.0


def test_catalog_coverage() -> None:
    assert catalog_coverage([["a", "b"], ["b", "c"], []], 10) == pytest.approx(0.3)
    assert catalog_coverage([], 10) == 0.0
    assert catalog_coverage([["a"]], 0) == 0.0
    assert catalog_coverage(iter([["a"], ["a"]]), 4) == pytest.approx(0.25)
