from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.evaluation.metrics import ndcg_at_k
from fitpulse_orchestration.events.ingest import read_clean_events
from fitpulse_orchestration.events.schema import ENGAGEMENT_TYPES
from fitpulse_orchestration.features.reference import load_catalog
from fitpulse_orchestration.features.training import (
    SplitParams,
    TimeSplit,
    compute_time_split,
    heldout_relevance,
)
from fitpulse_orchestration.retrieval.candidates import seen_items
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.world import vocab
from fitpulse_orchestration.world.generator import generate_world
from fitpulse_orchestration.world.oracle import trending_bonus, world_oracle
from fitpulse_orchestration.world.params import SHIFT_USER_TASTE_FACTOR, ShiftParams, world_params
from fitpulse_orchestration.world.respond import load_latent
from fitpulse_orchestration.world.writers import read_world_params

if TYPE_CHECKING:
    from conftest import TinyWorld


@dataclass(frozen=True)
class HeldOut:
    events: pd.DataFrame
    split: TimeSplit
    relevance: dict[str, dict[str, int]]


@pytest.fixture(scope="module")
def heldout(tiny_world: TinyWorld) -> HeldOut:
    events = read_clean_events(tiny_world.store)
    split = compute_time_split(events, SplitParams(eval_days=3, ranker_days=2))
    return HeldOut(events, split, heldout_relevance(events, split))


@pytest.fixture(scope="module")
def oracle(tiny_world: TinyWorld, heldout: HeldOut) -> dict[str, list[str]]:
    lists = world_oracle(
        tiny_world.store,
        tiny_world.pseudonymizer.pseudonymize,
        sorted(heldout.relevance),
        heldout.split.eval_start,
    )
    assert lists is not None
    return lists


def test_oracle_orders_every_heldout_user(oracle: dict[str, list[str]], heldout: HeldOut) -> None:
    assert sorted(oracle) == sorted(heldout.relevance)
    for items in oracle.values():
        assert len(items) == 300
        assert len(set(items)) == 300


def test_oracle_ranks_only_items_published_before_as_of(
    tiny_world: TinyWorld, heldout: HeldOut
) -> None:
    as_of = heldout.split.eval_start
    catalog = load_catalog(tiny_world.store)
    published = set(catalog.loc[catalog["published_at"] < as_of, "item_id"])
    user = sorted(heldout.relevance)[0]
    lists = world_oracle(
        tiny_world.store, tiny_world.pseudonymizer.pseudonymize, [user], as_of, k=100_000
    )

    assert lists is not None
    assert len(published) < len(catalog)
    assert sorted(lists[user]) == sorted(published)


def test_oracle_follows_the_world_affinity(
    tiny_world: TinyWorld, oracle: dict[str, list[str]]
) -> None:
    latent = load_latent(tiny_world.store)
    raw = {tiny_world.pseudonymizer.pseudonymize(str(u)): str(u) for u in latent.user_ids}
    for user, items in oracle.items():
        rows = latent.user_rows([raw[user]])
        affinity = latent.affinity(rows, latent.item_rows(items))
        assert np.all(np.diff(affinity) <= 0)


def test_oracle_beats_popularity_on_heldout_engagements(
    oracle: dict[str, list[str]], heldout: HeldOut
) -> None:
    as_of = heldout.split.eval_start
    train = heldout.split.train_events(heldout.events)
    seen = seen_items(train, as_of)
    engaged = train[train["event_type"].isin(list(ENGAGEMENT_TYPES))]
    popular = engaged["item_id"].value_counts().index.tolist()

    def mean_ndcg(ranked: dict[str, list[str]]) -> float:
        scores = [
            ndcg_at_k([i for i in ranked[u] if i not in seen.get(u, set())], grades, 10)
            for u, grades in heldout.relevance.items()
        ]
        return float(np.mean(scores))

    oracle_ndcg = mean_ndcg(oracle)
    popularity_ndcg = mean_ndcg(dict.fromkeys(heldout.relevance, popular))

    assert oracle_ndcg == pytest.approx(0.2694, abs=1e-3)
    assert popularity_ndcg == pytest.approx(0.0496, abs=1e-3)
    assert oracle_ndcg > popularity_ndcg


def test_oracle_truncates_to_k_and_skips_unknown_users(
    tiny_world: TinyWorld, heldout: HeldOut, oracle: dict[str, list[str]]
) -> None:
    user = sorted(heldout.relevance)[0]
    lists = world_oracle(
        tiny_world.store,
        tiny_world.pseudonymizer.pseudonymize,
        [user, "p_not_in_the_world"],
        heldout.split.eval_start,
        k=5,
    )

    assert lists == {user: oracle[user][:5]}


def test_oracle_is_none_without_a_world(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)

    assert world_oracle(store, str, ["p_anyone"], pd.Timestamp("2026-11-01", tz="UTC")) is None


def test_spec_round_trips_the_world_params(tiny_world: TinyWorld) -> None:
    assert read_world_params(tiny_world.store) == tiny_world.summary.params


def test_trending_bonus_favours_shift_users() -> None:
    params = world_params("tiny", shift=ShiftParams(days=2, trending_taste=1.5))

    bonus = trending_bonus(params, params.n_users + 4)

    assert bonus is not None
    assert bonus.tolist() == [1.5] * params.n_users + [1.5 * SHIFT_USER_TASTE_FACTOR] * 4
    assert trending_bonus(world_params("tiny"), 10) is None


def test_oracle_puts_trending_items_first_under_a_strong_trend(tmp_path: Path) -> None:
    params = world_params(
        "tiny", days=4, shift=ShiftParams(days=2, new_users=20, trending_taste=50.0)
    )
    store = LocalObjectStore(tmp_path)
    generate_world(params, store)
    latent = load_latent(store)
    catalog = load_catalog(store).set_index("item_id")

    lists = world_oracle(store, str, latent.user_ids.tolist(), pd.Timestamp("2026-11-02", tz="UTC"))

    assert read_world_params(store) == params
    assert lists is not None
    assert len(lists) == len(latent.user_ids)
    firsts = catalog.loc[[items[0] for items in lists.values()], "category"]
    assert set(firsts) == {vocab.TRENDING_CATEGORY}
