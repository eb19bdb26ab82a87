"""The evaluation plot's numbers: bootstrap intervals by slice and the candidate's paired lifts."""

from __future__ import annotations

import pandas as pd
import pytest

from fitpulse_orchestration.evaluation.plots import (
    INTERVAL_COLUMNS,
    LIFT_COLUMNS,
    evaluation_plot,
    lift_intervals,
    slice_intervals,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _per_user(rows: dict[str, list[float]], cold: list[bool]) -> pd.DataFrame:
    """``per_user`` of ``HomeFeedEvaluation``: each model's NDCG@10 for users u0, u1, ..."""
    return pd.DataFrame(
        [
            (model, f"u{i}", cold[i], value)
            for model, values in rows.items()
            for i, value in enumerate(values)
        ],
        columns=["model", "user_id", "cold", "ndcg_at_10"],
    )


COLD = [False, False, True, True]


def test_a_constant_model_has_an_interval_of_zero_width() -> None:
    per_user = _per_user({"candidate": [0.5] * 4, "popularity": [0.1, 0.3, 0.0, 0.0]}, COLD)

    table = slice_intervals(per_user)

    assert list(table.columns) == INTERVAL_COLUMNS
    assert table[["model", "slice", "users"]].values.tolist() == [
        ["candidate", "all", 4],
        ["candidate", "cold", 2],
        ["popularity", "all", 4],
        ["popularity", "cold", 2],
    ]
    candidate = table[table["model"] == "candidate"]
    assert candidate[["ndcg_at_10", "low", "high"]].values.tolist() == [[0.5, 0.5, 0.5]] * 2
    popularity = table[(table["model"] == "popularity") & (table["slice"] == "all")].iloc[0]
    assert popularity["ndcg_at_10"] == pytest.approx(0.1)
    assert 0.0 <= popularity["low"] < 0.1 < popularity["high"] <= 0.3
    cold = table[(table["model"] == "popularity") & (table["slice"] == "cold")].iloc[0]
    assert (cold["ndcg_at_10"], cold["low"], cold["high"]) == (0.0, 0.0, 0.0)


def test_the_lift_is_paired_per_user() -> None:
    # The candidate is exactly 0.1 above the ranker for every user, whatever the user's level:
    # a paired interval has no width, an unpaired one would.
    ranker = [0.0, 0.4, 0.1, 0.7]
    per_user = _per_user(
        {"candidate": [v + 0.1 for v in ranker], "ranker": ranker, "popularity": [0.2] * 4}, COLD
    )

    lifts = lift_intervals(per_user)

    assert list(lifts.columns) == LIFT_COLUMNS
    assert lifts[["baseline", "slice", "users"]].values.tolist() == [
        ["ranker", "all", 4],
        ["ranker", "cold", 2],
        ["popularity", "all", 4],
        ["popularity", "cold", 2],
    ]
    ranker_rows = lifts[lifts["baseline"] == "ranker"]
    assert ranker_rows[["lift", "low", "high"]].to_numpy().ravel() == pytest.approx([0.1] * 6)
    cold = lifts[(lifts["baseline"] == "popularity") & (lifts["slice"] == "cold")].iloc[0]
    assert cold["lift"] == pytest.approx((0.2 + 0.8) / 2 - 0.2)


def test_without_a_candidate_there_is_no_lift() -> None:
    per_user = _per_user({"ranker": [0.1] * 4, "popularity": [0.2] * 4}, COLD)

    assert lift_intervals(per_user).empty


def test_the_plot_is_a_png() -> None:
    per_user = _per_user({"candidate": [0.3, 0.1, 0.2, 0.0], "popularity": [0.1] * 4}, COLD)

    png = evaluation_plot(slice_intervals(per_user), lift_intervals(per_user), "a protocol")

    assert png.startswith(PNG)
