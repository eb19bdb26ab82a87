from __future__ import annotations

import math

import pandas as pd
import pytest

from fitpulse_orchestration.evaluation.home_feed import (
    METRICS,
    EvaluationContext,
    RankedLists,
    evaluate_models,
    format_markdown,
    format_table,
    metric,
)

CTX = EvaluationContext(
    relevance={"u1": {"a": 3, "b": 1}, "u2": {"c": 2}, "u3": {"d": 1}},
    cold_users=frozenset({"u2", "u3"}),
    beginners=frozenset({"u1", "u3"}),
    unsafe_items=frozenset({"x", "d"}),
    item_category={"a": "yoga", "b": "yoga", "c": "hiit", "x": "hiit", "d": "run"},
    catalog_size=10,
)
LISTS = {
    "ranked": {
        "u1": RankedLists(retrieval=["a", "b", "x"], feed=["a", "x", "b"]),
        # u2 is no beginner: the unsafe x in its feed is no violation.
        "u2": RankedLists(retrieval=["c"], feed=["c", "x"]),
        # u3 has no list; u9 has no held-out engagement and is not evaluated.
        "u9": RankedLists(retrieval=["x", "e"], feed=["x", "e"]),
    },
    "nothing": {},
}


@pytest.fixture
def table() -> pd.DataFrame:
    return evaluate_models(LISTS, CTX)


def _row(table: pd.DataFrame, model: str, slice_name: str) -> dict[str, float]:
    rows = table[(table["model"] == model) & (table["slice"] == slice_name)]
    assert len(rows) == 1
    return rows.iloc[0].to_dict()


def test_evaluate_models_all_slice_hand_computed(table: pd.DataFrame) -> None:
    row = _row(table, "ranked", "all")

    ndcg_u1 = (7 + 1 / math.log2(4)) / (7 + 1 / math.log2(3))
    assert row["users"] == 3
    assert row["recall_at_100"] == pytest.approx(2 / 3)
    assert row["ndcg_at_10"] == pytest.approx((ndcg_u1 + 1.0 + 0.0) / 3)
    assert row["map_at_10"] == pytest.approx(((1 + 2 / 3) / 2 + 1.0 + 0.0) / 3)
    assert row["coverage"] == pytest.approx(4 / 10)
    assert row["intra_list_diversity"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    assert row["beginner_safety_violations"] == 1


def test_evaluate_models_cold_slice(table: pd.DataFrame) -> None:
    row = _row(table, "ranked", "cold")

    assert row["users"] == 2
    assert row["recall_at_100"] == pytest.approx(0.5)
    assert row["ndcg_at_10"] == pytest.approx(0.5)
    assert row["map_at_10"] == pytest.approx(0.5)
    assert row["coverage"] == pytest.approx(2 / 10)
    assert row["beginner_safety_violations"] == 0


def test_users_without_lists_count_as_empty(table: pd.DataFrame) -> None:
    for slice_name, users in (("all", 3), ("cold", 2)):
        row = _row(table, "nothing", slice_name)
        assert row["users"] == users
        assert [row[m] for m in METRICS] == [0.0] * len(METRICS)


def test_table_layout(table: pd.DataFrame) -> None:
    assert list(table.columns) == ["model", "slice", "users", *METRICS, "ndcg_at_10_ci95"]
    assert list(zip(table["model"], table["slice"], strict=True)) == [
        ("ranked", "all"),
        ("ranked", "cold"),
        ("nothing", "all"),
        ("nothing", "cold"),
    ]


def test_cold_slice_skipped_without_cold_users() -> None:
    ctx = EvaluationContext(
        relevance=CTX.relevance,
        cold_users=frozenset(),
        beginners=CTX.beginners,
        unsafe_items=CTX.unsafe_items,
        item_category=CTX.item_category,
        catalog_size=CTX.catalog_size,
    )

    table = evaluate_models(LISTS, ctx)

    assert set(table["slice"]) == {"all"}


def test_violations_count_every_unsafe_item_of_every_beginner() -> None:
    lists = {
        "m": {
            "u1": RankedLists([], ["x", "d", "a"]),
            "u2": RankedLists([], ["x", "d"]),
            "u3": RankedLists([], ["d"]),
        }
    }

    table = evaluate_models(lists, CTX)

    assert metric(table, "m", "beginner_safety_violations") == 3
    assert metric(table, "m", "beginner_safety_violations", "cold") == 1


def test_metric_lookup(table: pd.DataFrame) -> None:
    assert metric(table, "ranked", "coverage") == pytest.approx(0.4)
    assert metric(table, "ranked", "users", "cold") == 2
    with pytest.raises(KeyError, match="no row for model='missing'"):
        metric(table, "missing", "ndcg_at_10")


def test_format_table_contains_models_and_rounded_metrics(table: pd.DataFrame) -> None:
    text = format_table(table)

    assert "ranked" in text
    assert "nothing" in text
    assert "0.4000" in text
    assert "ndcg_at_10" in text
    assert len(text.splitlines()) == len(table) + 1


def test_format_markdown(table: pd.DataFrame) -> None:
    text = format_markdown(table)

    lines = text.splitlines()
    assert lines[0] == "| " + " | ".join(table.columns) + " |"
    assert lines[1] == "|" + "|".join("---" for _ in table.columns) + "|"
    assert len(lines) == len(table) + 2
    assert lines[2].startswith("| ranked | all | 3 | 0.6667 |")
    assert any(line.startswith("| nothing | cold | 2 |") for line in lines)
    assert all(line.count("|") == len(table.columns) + 1 for line in lines)
