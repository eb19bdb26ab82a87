"""The evaluation's asset checks on constructed evaluations with a known verdict."""

from __future__ import annotations

import pandas as pd
import pytest

from assets.evaluation import served_feed_beats_retrievers
from fitpulse_orchestration.evaluation.home_feed import HomeFeedEvaluation
from fitpulse_orchestration.ranking.feed import FeedResult

USERS = [f"u{k}" for k in range(30)]


def _evaluation(scores: dict[str, list[float]]) -> HomeFeedEvaluation:
    per_user = pd.DataFrame(
        [
            (model, user, False, value)
            for model, values in scores.items()
            for user, value in zip(USERS, values, strict=True)
        ],
        columns=["model", "user_id", "cold", "ndcg_at_10"],
    )
    empty = pd.DataFrame()
    return HomeFeedEvaluation(
        table=empty, per_user=per_user, feeds=FeedResult(empty, empty, {}), protocol="t"
    )


def test_stage_check_fails_a_ranker_that_loses_to_its_own_retriever() -> None:
    ease = [0.4 + 0.01 * (k % 4) for k in range(30)]
    evaluation = _evaluation(
        {
            # The ranker reorders EASE's pool and pushes its hits down for every user.
            "candidate_unguarded": [v - 0.15 for v in ease],
            "als_only": [0.2] * 30,
            "ease_only": ease,
            "two_tower_only": [0.1] * 30,
            "popularity": [0.05] * 30,
        }
    )

    result = served_feed_beats_retrievers(evaluation)

    assert not result.passed
    assert "best single retriever ease_only 0.4143" in result.description


@pytest.mark.parametrize("lift", [0.0, 0.05])
def test_stage_check_passes_a_served_order_at_least_as_good(lift: float) -> None:
    ease = [0.4 + 0.01 * (k % 4) for k in range(30)]
    evaluation = _evaluation({"candidate_unguarded": [v + lift for v in ease], "ease_only": ease})

    assert served_feed_beats_retrievers(evaluation).passed
