from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from fitpulse_orchestration.ranking.ranker import (
    RankerArtifacts,
    RankerParams,
    score_candidates,
    train_ranker,
)

FEATURES = ["f0", "f1"]
# min_child_samples must fit the tiny frame; the defaults are sized for real traffic.
PARAMS = RankerParams(
    min_child_samples=5, n_estimators=60, early_stopping_rounds=20, learning_rate=0.1
)


@pytest.fixture
def ranker(training_frame: pd.DataFrame) -> RankerArtifacts:
    return train_ranker(training_frame, FEATURES, PARAMS)


def test_ranker_orders_fresh_group_by_f0(ranker: RankerArtifacts, rng: np.random.Generator) -> None:
    fresh = pd.DataFrame({"f0": np.linspace(-2.0, 2.0, 12), "f1": rng.normal(size=12)})

    scores = score_candidates(ranker, fresh)

    rho = spearmanr(scores, fresh["f0"]).statistic
    assert rho > 0.9
    assert int(np.argmax(scores)) >= 9
    assert int(np.argmin(scores)) <= 2


def test_ranker_relies_on_f0_not_noise(ranker: RankerArtifacts) -> None:
    assert ranker.feature_importance["f0"] > 5 * ranker.feature_importance["f1"]
    assert ranker.feature_names == FEATURES


def test_ranker_metrics_describe_the_split(ranker: RankerArtifacts) -> None:
    assert ranker.metrics["train_groups"] == 32.0
    assert ranker.metrics["valid_groups"] == 8.0
    assert ranker.metrics["train_rows"] == 32 * 8
    assert 0.5 < ranker.metrics["valid_ndcg_at_10"] <= 1.0
    assert 1 <= ranker.metrics["trees_used"] <= PARAMS.n_estimators
    assert ranker.param_dict()["min_child_samples"] == 5


def test_scores_are_one_per_row_and_deterministic(
    ranker: RankerArtifacts, ranking_frame: pd.DataFrame
) -> None:
    first = score_candidates(ranker, ranking_frame)
    second = score_candidates(ranker, ranking_frame.iloc[::-1])

    assert first.shape == (len(ranking_frame),)
    np.testing.assert_allclose(first, second[::-1])


def test_train_ranker_needs_ten_groups(ranking_frame: pd.DataFrame) -> None:
    nine = ranking_frame[ranking_frame["group_id"] != "q09"]

    with pytest.raises(ValueError, match="at least 10 training groups, got 9"):
        train_ranker(nine, FEATURES, PARAMS)


def test_train_ranker_accepts_exactly_ten_groups(ranking_frame: pd.DataFrame) -> None:
    artifacts = train_ranker(ranking_frame, FEATURES, PARAMS)

    assert artifacts.metrics["train_groups"] == 8.0
    assert artifacts.metrics["valid_groups"] == 2.0


def test_train_ranker_rejects_non_contiguous_groups(training_frame: pd.DataFrame) -> None:
    first_group = training_frame["group_id"] == "q00"
    split_group = pd.concat(
        [
            training_frame[first_group].iloc[:4],
            training_frame[~first_group],
            training_frame[first_group].iloc[4:],
        ],
        ignore_index=True,
    )

    with pytest.raises(ValueError, match="contiguous"):
        train_ranker(split_group, FEATURES, PARAMS)


def test_train_ranker_rejects_interleaved_training_groups(training_frame: pd.DataFrame) -> None:
    early = training_frame[training_frame["group_id"].isin(["q00", "q01"])]
    interleaved = pd.concat(
        [
            early.iloc[::2],
            early.iloc[1::2],
            training_frame[~training_frame.index.isin(early.index)],
        ],
        ignore_index=True,
    )

    with pytest.raises(ValueError, match="contiguous"):
        train_ranker(interleaved, FEATURES, PARAMS)


def test_score_candidates_on_empty_frame(ranker: RankerArtifacts) -> None:
    scores = score_candidates(ranker, pd.DataFrame(columns=FEATURES))

    assert scores.shape == (0,)
    assert scores.dtype == np.float64


def test_training_is_reproducible_with_two_threads(ranking_frame: pd.DataFrame) -> None:
    # Multithreaded LightGBM was not reproducible before deterministic=True/force_row_wise.
    frame = pd.concat(
        [ranking_frame.assign(group_id=ranking_frame["group_id"] + f"-{k}") for k in range(4)],
        ignore_index=True,
    )
    params = RankerParams(min_child_samples=5, n_estimators=40, num_threads=2)
    first = train_ranker(frame, FEATURES, params)
    second = train_ranker(frame, FEATURES, params)

    np.testing.assert_array_equal(score_candidates(first, frame), score_candidates(second, frame))
    assert first.metrics["trees_used"] == 40
