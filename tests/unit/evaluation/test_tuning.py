from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.evaluation.tuning import (
    ALS_ALPHA,
    ALS_FACTORS,
    ALS_REGULARIZATION,
    ALS_STARTS,
    POPULARITY_HALF_LIVES,
    TuningParams,
    TuningResult,
    tune_popularity,
    tune_retrievers,
)
from fitpulse_orchestration.retrieval.als import AlsParams, build_interaction_matrix, train_als
from fitpulse_orchestration.retrieval.ease import EaseParams
from fitpulse_orchestration.retrieval.popularity import PopularityParams, compute_popular_items

AS_OF = pd.Timestamp("2026-11-01", tz="UTC")
PROFILES = pd.DataFrame(
    {"user_id": pd.Series(dtype=str), "fitness_level": pd.Series(dtype=str), "region": []}
)


def _log(classic_age_days: float, trend_age_days: float) -> pd.DataFrame:
    """60 old members completed the 10 classics; 3 recent members clicked 10 trend items."""
    rows = [
        (f"old{u}", f"classic{i}", "workout_complete", classic_age_days)
        for u in range(60)
        for i in range(10)
    ]
    rows += [(f"new{u}", f"trend{i}", "click", trend_age_days) for u in range(3) for i in range(10)]
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "ts": [AS_OF - pd.Timedelta(days=r[3]) for r in rows],
        }
    )


def test_no_half_life_is_all_time_popularity() -> None:
    events = _log(classic_age_days=4000.0, trend_age_days=1.0)

    table = compute_popular_items(events, PROFILES, AS_OF, PopularityParams(half_life_days=None))

    top = table[table["segment"] == "*|*"]["item_id"].head(10)
    assert set(top) == {f"classic{i}" for i in range(10)}
    assert PopularityParams(half_life_days=None).describe() == "none (all-time)"
    with pytest.raises(ValueError, match="half_life_days"):
        PopularityParams(half_life_days=0.0)


def test_a_sparse_log_of_classics_picks_all_time_popularity_on_validation() -> None:
    # Validation members come new and engage with the classics, rated 11 years ago.
    events = _log(classic_age_days=4000.0, trend_age_days=1.0)
    relevance = {f"val{u}": {f"classic{u % 10}": 1, f"classic{(u + 3) % 10}": 1} for u in range(40)}

    chosen, trials, best, default = tune_popularity(
        events, PROFILES, AS_OF, PopularityParams(), relevance
    )

    assert chosen.half_life_days is None
    assert len(trials) == len(POPULARITY_HALF_LIVES)
    assert trials[0]["params"] == {"half_life_days": "7 days"}  # the default is scored first
    assert default == 0.0  # a week's half-life ranks the 3 recent clickers' items first
    assert best > 0.5


def test_a_trend_the_validation_members_follow_keeps_the_default() -> None:
    events = _log(classic_age_days=4000.0, trend_age_days=1.0)
    relevance = {f"val{u}": {f"trend{u % 10}": 1} for u in range(40)}

    chosen, _, best, default = tune_popularity(
        events, PROFILES, AS_OF, PopularityParams(), relevance
    )

    assert chosen.half_life_days == 7.0
    assert best == default > 0.0


def _taste_groups() -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """40 members in 4 taste groups: each completed 8 of its group's 12 items, and the
    validation part holds two more of them."""
    rows = [
        (f"m{u}", f"g{u % 4}i{(u + k) % 12}", "workout_complete", 1.0 + k)
        for u in range(40)
        for k in range(8)
    ]
    events = pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "ts": [AS_OF - pd.Timedelta(days=r[3]) for r in rows],
        }
    )
    relevance = {
        f"m{u}": {f"g{u % 4}i{(u + 8) % 12}": 3, f"g{u % 4}i{(u + 9) % 12}": 3} for u in range(40)
    }
    return events, relevance


def _tuned(n_trials: int) -> TuningResult:
    """The search over ``_taste_groups`` from ALS defaults of 16 factors and 3 iterations."""
    events, relevance = _taste_groups()
    return tune_retrievers(
        events,
        PROFILES,
        AS_OF,
        relevance,
        AlsParams(factors=16, iterations=3),
        EaseParams(),
        PopularityParams(),
        TuningParams(n_trials=n_trials),
    )


def test_the_als_search_scores_the_defaults_then_the_starts_then_its_ranges() -> None:
    result = _tuned(n_trials=5)

    als = result.trials[result.trials["model"] == "als"].sort_values("trial")
    params = list(als["params"])
    assert len(params) == 5
    assert params[0] == {"factors": 16, "regularization": 0.05, "alpha": 4.0}
    assert params[1 : 1 + len(ALS_STARTS)] == list(ALS_STARTS)
    for searched in params[1 + len(ALS_STARTS) :]:
        assert ALS_FACTORS[0] <= searched["factors"] <= ALS_FACTORS[1]
        assert ALS_REGULARIZATION[0] <= searched["regularization"] <= ALS_REGULARIZATION[1]
        assert ALS_ALPHA[0] <= searched["alpha"] <= ALS_ALPHA[1]
    assert result.als.iterations == 3  # only the searched parameters change


def test_the_search_hands_over_its_fit_of_the_chosen_als() -> None:
    events, _ = _taste_groups()

    result = _tuned(n_trials=4)

    kept = result.als_model
    assert kept is not None
    assert kept.params == result.als
    again = train_als(build_interaction_matrix(events, result.als, before=AS_OF), result.als)
    np.testing.assert_array_equal(kept.user_factors, again.user_factors)
    np.testing.assert_array_equal(kept.item_factors, again.item_factors)
    chosen = result.trials[result.trials["model"] == "als"]["ndcg_at_10"]
    assert result.best_ndcg["als"] in set(chosen)
