from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.ranking.blend import (
    BLEND_SOURCES,
    COLD_SOURCES,
    RRF_K,
    blend_scores,
    describe_weights,
    history_less,
    weight_grid,
)


def test_blend_is_a_weighted_reciprocal_rank_fusion() -> None:
    pool = pd.DataFrame(
        {
            "item_id": ["x", "y", "z"],
            "rank_als": [0.0, 1.0, np.nan],
            "rank_ease": [np.nan, 0.0, 3.0],
            "rank_two_tower": [np.nan, np.nan, np.nan],
        }
    )

    got = blend_scores(pool, {"als": 0.5, "ease": 0.5, "two_tower": 0.0})

    np.testing.assert_allclose(
        got,
        [0.5 / RRF_K, 0.5 / (RRF_K + 1) + 0.5 / RRF_K, 0.5 / (RRF_K + 3)],
    )


def test_blend_with_one_weight_keeps_that_sources_order() -> None:
    pool = pd.DataFrame({"rank_ease": [2.0, 0.0, 1.0, np.nan]})

    got = blend_scores(pool, {"ease": 1.0})

    assert list(np.argsort(-got, kind="stable")) == [1, 2, 0, 3]
    assert got[3] == 0.0


def test_weight_grid_covers_the_simplex_in_quarters() -> None:
    grid = weight_grid(4)

    assert len(grid) == 35  # compositions of 4 quarters into 4 sources
    assert all(sum(w.values()) == pytest.approx(1.0) for w in grid)
    assert {s for w in grid for s, v in w.items() if v == 1.0} == set(BLEND_SOURCES)
    assert describe_weights({"als": 0.5, "ease": 0.5, "popular": 0.0}) == "als 0.50 + ease 0.50"


def test_blend_rejects_unknown_sources() -> None:
    with pytest.raises(ValueError, match="unknown blend sources"):
        blend_scores(pd.DataFrame({"rank_als": [0.0]}), {"fresh": 1.0})


def test_history_less_members_are_ordered_by_the_cold_weights() -> None:
    pool = pd.DataFrame(
        {
            "user_id": ["warm", "warm", "new", "new"],
            "item_id": ["a", "b", "a", "b"],
            "rank_als": [1.0, np.nan, np.nan, np.nan],
            "rank_ease": [np.nan, 0.0, np.nan, np.nan],
            "rank_two_tower": [0.0, np.nan, 0.0, 1.0],
            "rank_popular": [np.nan, 1.0, 1.0, 0.0],
        }
    )

    got = blend_scores(pool, {"als": 0.5, "ease": 0.5}, {"popular": 1.0})

    np.testing.assert_allclose(
        got, [0.5 / (RRF_K + 1), 0.5 / RRF_K, 1.0 / (RRF_K + 1), 1.0 / RRF_K]
    )
    assert list(history_less(pool)) == [False, False, True, True]
    assert list(history_less(pool.iloc[[2, 0, 3, 1]])) == [True, False, True, False]
    # One member's rows, as a request holds them (columns, not a frame).
    one = {c: pool[c].to_numpy()[:2] for c in pool}
    assert list(history_less(one)) == [False, False]
    one = {c: pool[c].to_numpy()[2:] for c in pool}
    assert list(history_less(one)) == [True, True]
    # Without cold weights the new member's pool would all score 0 under ALS + EASE.
    assert list(blend_scores(pool, {"als": 0.5, "ease": 0.5})[2:]) == [0.0, 0.0]


def test_cold_weights_may_weigh_only_sources_every_member_has() -> None:
    pool = pd.DataFrame({"user_id": ["u"], "rank_als": [0.0]})

    with pytest.raises(ValueError, match="cold weights weigh only"):
        blend_scores(pool, {"als": 1.0}, {"als": 1.0})


def test_cold_weight_grid_spans_two_tower_and_popularity() -> None:
    grid = weight_grid(4, COLD_SOURCES)

    assert [w["popular"] for w in grid] == [1.0, 0.75, 0.5, 0.25, 0.0]
