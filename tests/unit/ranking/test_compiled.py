from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.ranking.compiled import PARITY_TOLERANCE, CompiledRanker
from fitpulse_orchestration.ranking.feed import ranker_features
from fitpulse_orchestration.ranking.ranker import RankerParams, score_candidates, train_ranker

FEATURES = ["f0", "f1"]


@pytest.mark.parametrize(
    "params",
    [
        RankerParams(min_child_samples=5, n_estimators=60, early_stopping_rounds=0),
        # Early stopping: LightGBM predicts with the best iteration's trees, so must the
        # compiled ranker.
        RankerParams(
            min_child_samples=5, n_estimators=200, early_stopping_rounds=5, learning_rate=0.3
        ),
    ],
    ids=["all trees", "early stopping"],
)
def test_compiled_scores_equal_lightgbm_on_every_row(
    training_frame: pd.DataFrame, params: RankerParams, rng: np.random.Generator
) -> None:
    ranker = train_ranker(training_frame, FEATURES, params)
    fresh = pd.DataFrame({"f0": rng.normal(size=500), "f1": rng.normal(size=500)})
    fresh.loc[::7, "f1"] = np.nan  # missing values take the trees' default branches

    compiled = CompiledRanker(ranker)

    for frame in (training_frame, fresh):
        expected = score_candidates(ranker, frame)
        assert np.max(np.abs(compiled.score(frame) - expected)) <= PARITY_TOLERANCE
    expected_trees = ranker.model.best_iteration_ or ranker.model.booster_.num_trees()
    assert compiled.trees == expected_trees


def test_an_empty_pool_scores_nothing(training_frame: pd.DataFrame) -> None:
    ranker = train_ranker(training_frame, FEATURES, RankerParams(min_child_samples=5))

    scores = CompiledRanker(ranker).score(training_frame.iloc[0:0])

    assert scores.shape == (0,)


def test_a_requests_columns_score_as_their_whole_frame(
    training_frame: pd.DataFrame, rng: np.random.Generator
) -> None:
    """The request path hands the rankers only their own columns (``ranker_features``)."""
    ranker = train_ranker(training_frame, FEATURES, RankerParams(min_child_samples=5))
    n = 40
    columns = {
        "user_id": np.full(n, "p_1", dtype=object),
        "item_id": np.array([f"wk_{i}" for i in range(n)], dtype=object),
        "f1": rng.normal(size=n),
        "rank_als": np.where(np.arange(n) % 3, np.arange(n, dtype=float), np.nan),
        "f0": rng.normal(size=n),
    }
    columns["f1"][::5] = np.nan

    only = ranker_features(columns, ranker.feature_names)

    assert list(only.columns) == FEATURES
    whole = pd.DataFrame(columns)
    assert ranker_features(whole, ranker.feature_names) is whole
    expected = score_candidates(ranker, whole)
    np.testing.assert_array_equal(score_candidates(ranker, only), expected)
    compiled = CompiledRanker(ranker)
    np.testing.assert_array_equal(
        compiled.score(ranker_features(columns, compiled.feature_names)), compiled.score(whole)
    )
