from __future__ import annotations

import pickle
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.evaluation.home_feed import MODELS, SLICES, evaluate_home_feed, metric
from fitpulse_orchestration.features.point_in_time import feature_columns
from fitpulse_orchestration.features.reference import (
    load_catalog,
    load_profiles,
    unsafe_for_beginners,
)
from fitpulse_orchestration.features.snapshot import TrainingSnapshot, build_training_snapshot
from fitpulse_orchestration.features.training import SplitParams, build_ranker_examples
from fitpulse_orchestration.privacy.traces import bytes_texts
from fitpulse_orchestration.ranking.bundle import FeedBundle, forget_users
from fitpulse_orchestration.ranking.feed import (
    FeedResult,
    HomeFeedModel,
    build_feeds,
    build_ranker_training_frame,
    fallback_feeds,
    fit_validation_models,
    recently_completed,
)
from fitpulse_orchestration.ranking.ranker import RankerParams, train_ranker
from fitpulse_orchestration.ranking.rerank import REASONS, RerankParams
from fitpulse_orchestration.retrieval.als import AlsParams, build_interaction_matrix, train_als
from fitpulse_orchestration.retrieval.candidates import seen_items
from fitpulse_orchestration.retrieval.ease import EaseParams
from fitpulse_orchestration.retrieval.index import build_item_index
from fitpulse_orchestration.retrieval.popularity import PopularityParams, compute_popular_items

NEW_USER = "p_never_seen_before"


@dataclass
class Trained:
    snapshot: TrainingSnapshot
    model: HomeFeedModel


@dataclass
class Served:
    users: pd.DataFrame
    as_of: pd.Timestamp
    result: FeedResult


@pytest.fixture(scope="module")
def trained(tiny_world: Any) -> Trained:
    """Every component trained on the tiny world (conftest's ``TinyWorld``), as assets wire them."""
    store = tiny_world.store
    snapshot = build_training_snapshot(
        store, load_catalog(store), load_profiles(store, tiny_world.pseudonymizer), SplitParams()
    )
    inputs, split = snapshot.inputs, snapshot.split
    als_params = AlsParams()
    examples = build_ranker_examples(inputs.events, inputs.catalog, split)
    validation = fit_validation_models(
        snapshot.fit_inputs(),
        split.ranker_start,
        als_params,
        EaseParams(),
        None,
        PopularityParams(),
    )
    frame, _ = build_ranker_training_frame(snapshot.example_inputs(), examples, validation)
    als = train_als(
        build_interaction_matrix(inputs.events, als_params, before=split.eval_start), als_params
    )
    model = HomeFeedModel(
        als=als,
        index=build_item_index(als.item_ids, als.item_factors),
        popular=compute_popular_items(
            inputs.events, inputs.profiles, split.eval_start, PopularityParams()
        ),
        ranker=train_ranker(frame, feature_columns(), RankerParams()),
    )
    return Trained(snapshot=snapshot, model=model)


@pytest.fixture(scope="module")
def served(trained: Trained) -> Served:
    """Feeds, as of the end of the snapshot, for a mix of beginners, others, cold and new users."""
    profiles = trained.snapshot.inputs.profiles
    als = trained.model.als
    warm = profiles[[als.user_row(u) is not None for u in profiles["user_id"]]]
    cold = profiles[[als.user_row(u) is None for u in profiles["user_id"]]]
    picked = pd.concat(
        [
            warm[warm["fitness_level"] == "beginner"].head(3),
            warm[warm["fitness_level"] == "advanced"].head(2),
            warm[warm["fitness_level"] == "intermediate"].head(1),
            cold.head(2),
        ]
    )
    users = pd.concat(
        [
            picked[["user_id", "fitness_level", "region"]],
            pd.DataFrame({"user_id": [NEW_USER], "fitness_level": ["unknown"], "region": ["?"]}),
        ],
        ignore_index=True,
    )
    as_of = trained.snapshot.split.end
    return Served(users, as_of, build_feeds(trained.model, trained.snapshot.inputs, users, as_of))


def _feeds_by_user(served: Served) -> dict[str, pd.DataFrame]:
    return {str(u): f for u, f in served.result.feeds.groupby("user_id")}


def test_every_user_gets_a_ranked_feed_of_at_most_20(served: Served) -> None:
    feeds = _feeds_by_user(served)

    assert set(feeds) == set(served.users["user_id"])
    for feed in feeds.values():
        assert 0 < len(feed) <= 20
        assert feed["rank"].tolist() == list(range(len(feed)))
        assert not feed["item_id"].duplicated().any()
        assert np.isfinite(feed["score"]).all()


def test_feeds_skip_seen_and_unpublished_items(served: Served, trained: Trained) -> None:
    inputs = trained.snapshot.inputs
    seen = seen_items(inputs.events, served.as_of)
    published = set(inputs.catalog.loc[inputs.catalog["published_at"] < served.as_of, "item_id"])

    for user, feed in _feeds_by_user(served).items():
        assert not set(feed["item_id"]) & seen.get(user, set())
        assert set(feed["item_id"]) <= published


def test_beginners_get_no_unsafe_items(served: Served, trained: Trained) -> None:
    catalog = trained.snapshot.inputs.catalog
    unsafe = set(catalog.loc[unsafe_for_beginners(catalog), "item_id"])
    beginners = set(served.users.loc[served.users["fitness_level"] == "beginner", "user_id"])
    feeds = served.result.feeds

    assert len(beginners) >= 3
    assert not set(feeds.loc[feeds["user_id"].isin(beginners), "item_id"]) & unsafe
    assert served.result.guardrails["unsafe_removed"] > 0


def test_reasons_come_from_the_reason_codes(served: Served) -> None:
    feeds = served.result.feeds

    assert set(feeds["reason"]) <= set(REASONS.values())
    not_promoted = feeds["reason"] != "new_release"
    expected = feeds.loc[not_promoted, "source"].map(REASONS)
    assert (feeds.loc[not_promoted, "reason"] == expected).all()


def test_users_without_als_factors_get_cold_start_feed(served: Served, trained: Trained) -> None:
    feeds = _feeds_by_user(served)
    cold = [u for u in served.users["user_id"] if trained.model.als.user_row(u) is None]

    assert NEW_USER in cold
    assert len(cold) == 3
    for user in cold:
        assert set(feeds[user]["source"]) <= {"popular", "fresh"}
    warm_sources = set(
        served.result.feeds.loc[~served.result.feeds["user_id"].isin(cold), "source"]
    )
    assert "als" in warm_sources


def test_fallback_feeds_are_guarded_popular_and_fresh_items(
    served: Served, trained: Trained
) -> None:
    inputs = trained.snapshot.inputs
    seen = seen_items(inputs.events, served.as_of)
    catalog = inputs.catalog
    unsafe = set(catalog.loc[unsafe_for_beginners(catalog), "item_id"])
    popular = trained.model.popular

    feeds = fallback_feeds(popular, inputs, served.users, served.as_of, RerankParams(n=10))

    by_user = {str(u): f for u, f in feeds.groupby("user_id")}
    assert set(by_user) == set(served.users["user_id"])
    assert set(feeds["source"]) == {"popular", "fresh"}
    assert set(feeds.loc[feeds["source"] == "popular", "item_id"]) <= set(popular["item_id"])
    beginners = served.users.loc[served.users["fitness_level"] == "beginner", "user_id"]
    for user, feed in by_user.items():
        assert len(feed) == 10, user
        assert not set(feed["item_id"]) & seen.get(user, set()), user
        if user in set(beginners):
            assert not set(feed["item_id"]) & unsafe, user


def test_a_forgotten_member_leaves_the_bundle_and_is_served_as_new(
    served: Served, trained: Trained
) -> None:
    als = trained.model.als
    member, other = str(als.user_ids[0]), str(als.user_ids[1])
    frame = pd.DataFrame({"user_id": [member, other, member], "score": [1.0, 2.0, 3.0]})
    bundle = FeedBundle(trained.model, frame, frame.drop(columns="user_id"))

    forgotten = forget_users(bundle, {member})

    kept = forgotten.model.als
    assert kept.user_row(member) is None
    assert kept.user_row(other) is not None
    np.testing.assert_array_equal(
        kept.user_factors[kept.user_row(other)], als.user_factors[als.user_row(other)]
    )
    assert kept.seen.shape == (len(als.user_ids) - 1, als.seen.shape[1])
    assert (kept.seen[kept.user_row(other)] != als.seen[als.user_row(other)]).nnz == 0
    assert forgotten.reference_features["user_id"].tolist() == [other]
    assert len(forgotten.reference_scores) == 3  # no user column: nothing of theirs
    assert not any(member in t for t in bytes_texts(pickle.dumps(forgotten.model)))
    assert any(member in t for t in bytes_texts(pickle.dumps(trained.model)))
    assert trained.model.als.user_row(member) is not None  # the original is untouched


def test_no_recently_completed_items(served: Served, trained: Trained) -> None:
    completed = recently_completed(
        trained.snapshot.inputs.events, served.as_of, trained.model.rerank_params.recent_days
    )

    for user, feed in _feeds_by_user(served).items():
        assert not set(feed["item_id"]) & completed.get(user, set())


def test_scored_pool_holds_every_candidate(served: Served) -> None:
    scored = served.result.scored
    feeds = served.result.feeds

    assert np.isfinite(scored["score"]).all()
    assert not scored.duplicated(["user_id", "item_id"]).any()
    pool = set(zip(scored["user_id"], scored["item_id"], strict=True))
    assert set(zip(feeds["user_id"], feeds["item_id"], strict=True)) <= pool


def test_evaluate_home_feed_beats_popularity_safely(trained: Trained) -> None:
    evaluation = evaluate_home_feed(trained.model, trained.snapshot.inputs, trained.snapshot.split)
    table, result = evaluation.table, evaluation.feeds

    rows = set(zip(table["model"], table["slice"], strict=True))
    assert rows == {(m, s) for m in MODELS for s in SLICES}
    assert metric(table, "candidate", "beginner_safety_violations") == 0
    assert metric(table, "candidate", "beginner_safety_violations", "cold") == 0
    assert metric(table, "candidate", "ndcg_at_10") > metric(table, "popularity", "ndcg_at_10")
    assert table.groupby("slice")["users"].nunique().max() == 1
    assert result.feeds.groupby("user_id").size().max() <= 20
    per_user = evaluation.per_user
    assert set(per_user["model"]) == set(MODELS)
    for model in MODELS:
        mine = per_user[per_user["model"] == model]
        assert len(mine) == int(metric(table, model, "users"))
        assert mine["ndcg_at_10"].mean() == pytest.approx(metric(table, model, "ndcg_at_10"))
        assert mine.loc[mine["cold"], "ndcg_at_10"].mean() == pytest.approx(
            metric(table, model, "ndcg_at_10", "cold")
        )
    assert metric(table, "candidate", "scoring_p99_ms") > 0
    assert np.isnan(metric(table, "popularity", "scoring_p99_ms"))


def test_duplicate_user_rows_are_rejected(served: Served, trained: Trained) -> None:
    # A duplicated user would make the level lookup ambiguous; the safety rule must not guess.
    users = served.users[served.users["fitness_level"] == "beginner"]

    with pytest.raises(ValueError, match="more than once"):
        build_feeds(trained.model, trained.snapshot.inputs, pd.concat([users, users]), served.as_of)


def test_the_evaluation_in_batches_is_the_evaluation_at_once(trained: Trained) -> None:
    inputs, split = trained.snapshot.inputs, trained.snapshot.split
    timed = ["scoring_p50_ms", "scoring_p99_ms"]  # wall-clock latencies differ run to run

    at_once = evaluate_home_feed(trained.model, inputs, split, batch_users=1_000_000)
    batched = evaluate_home_feed(trained.model, inputs, split, batch_users=17)

    pd.testing.assert_frame_equal(
        batched.table.drop(columns=timed), at_once.table.drop(columns=timed)
    )
    pd.testing.assert_frame_equal(batched.per_user, at_once.per_user)
    pd.testing.assert_frame_equal(batched.feeds.feeds, at_once.feeds.feeds)
    assert batched.feeds.guardrails == at_once.feeds.guardrails
    assert (
        batched.heldout_users
        == at_once.heldout_users
        == int(metric(at_once.table, "candidate", "users"))
    )


def test_above_the_cap_a_seeded_sample_of_users_is_evaluated(trained: Trained) -> None:
    inputs, split = trained.snapshot.inputs, trained.snapshot.split

    sampled = evaluate_home_feed(trained.model, inputs, split, max_users=40)
    again = evaluate_home_feed(trained.model, inputs, split, max_users=40, batch_users=9)

    assert sampled.heldout_users > 40
    assert set(sampled.table.loc[sampled.table["slice"] == "all", "users"]) == {40}
    assert sampled.per_user["user_id"].nunique() == 40
    pd.testing.assert_frame_equal(sampled.per_user, again.per_user)
    # The interval is that of the 40 evaluated users' mean.
    mine = sampled.per_user.loc[sampled.per_user["model"] == "candidate", "ndcg_at_10"]
    assert metric(sampled.table, "candidate", "ndcg_at_10_ci95") == pytest.approx(
        1.96 * mine.std(ddof=1) / np.sqrt(40)
    )


def test_validation_models_take_the_searchs_als_only_when_fitted_on_the_same_matrix(
    trained: Trained,
) -> None:
    fit, start = trained.snapshot.fit_inputs(), trained.snapshot.split.ranker_start
    params = AlsParams()
    events = fit.events
    searched = train_als(build_interaction_matrix(events, params, before=start), params)
    other_params = train_als(
        build_interaction_matrix(events, params, before=start), replace(params, factors=9)
    )
    one_user_less = events[events["user_id"] != events["user_id"].iloc[0]]
    other_data = train_als(build_interaction_matrix(one_user_less, params, before=start), params)

    def validation_als(fitted: Any) -> Any:
        return fit_validation_models(
            fit, start, params, EaseParams(), None, PopularityParams(), fitted_als=fitted
        ).als

    assert validation_als(searched) is searched
    for stranger in (other_params, other_data):
        refit = validation_als(stranger)
        assert refit is not stranger
        np.testing.assert_array_equal(refit.user_factors, searched.user_factors)
