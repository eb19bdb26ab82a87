"""Request-time cross features from history records equal the offline SQL on real data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.features.online import (
    COLD_USER_FEATURES,
    UserHistory,
    compute_user_histories,
    cross_features,
)
from fitpulse_orchestration.features.point_in_time import (
    CROSS_FEATURES,
    USER_FEATURES,
    FeatureInputs,
    compute_cross_features,
    compute_user_features,
)
from fitpulse_orchestration.features.reference import (
    DIFFICULTY_ORDINAL,
    load_catalog,
    load_profiles,
)
from fitpulse_orchestration.features.snapshot import load_feature_inputs
from fitpulse_orchestration.ranking.feed import recently_completed
from fitpulse_orchestration.retrieval.candidates import seen_items
from fitpulse_orchestration.storage.online_store import CorruptRecordError

if TYPE_CHECKING:
    from conftest import TinyWorld


@pytest.fixture(scope="module")
def inputs(tiny_world: TinyWorld) -> FeatureInputs:
    store = tiny_world.store
    return load_feature_inputs(
        store, load_catalog(store), load_profiles(store, tiny_world.pseudonymizer)
    )


@pytest.fixture(scope="module")
def as_of(inputs: FeatureInputs) -> pd.Timestamp:
    return inputs.events["ts"].max().ceil("D") - pd.Timedelta(days=1)


def test_cross_features_match_the_offline_sql(inputs: FeatureInputs, as_of: pd.Timestamp) -> None:
    rng = np.random.default_rng(7)
    active = inputs.events.loc[inputs.events["ts"] < as_of, "user_id"].unique()
    users = rng.choice(active, size=40, replace=False)
    histories = compute_user_histories(inputs, list(users), as_of, recent_days=7.0)
    catalog = inputs.catalog.set_index("item_id")
    # Items each user saw or engaged with (non-trivial features) plus random catalog items.
    rows = []
    for u in users:
        h = histories[u]
        items = list(h.impressions_7d)[:10] + list(h.engaged)[:10]
        items += list(rng.choice(catalog.index.to_numpy(), size=10, replace=False))
        rows += [(u, i) for i in dict.fromkeys(items)]
    spine = pd.DataFrame(rows, columns=["user_id", "item_id"]).assign(as_of=as_of)
    offline = compute_cross_features(inputs, spine).set_index(["user_id", "item_id"])
    online = []
    for u, group in spine.groupby("user_id", sort=False):
        items = group["item_id"].to_numpy()
        frame = cross_features(
            histories[u],
            list(items),
            list(catalog["category"].reindex(items).fillna("unknown")),
            catalog["difficulty"].reindex(items).map(DIFFICULTY_ORDINAL).to_numpy(dtype=float),
        )
        online.append(frame.assign(user_id=u, item_id=items))
    got = pd.concat(online).set_index(["user_id", "item_id"]).loc[offline.index]
    nonzero = {c: int((got[c].fillna(0) != 0).sum()) for c in CROSS_FEATURES}
    assert all(n > 0 for n in nonzero.values()), nonzero
    for col in CROSS_FEATURES:
        np.testing.assert_allclose(
            got[col].to_numpy(dtype=float), offline[col].to_numpy(dtype=float), err_msg=col
        )


def test_histories_hold_seen_and_recently_completed_items(
    inputs: FeatureInputs, as_of: pd.Timestamp
) -> None:
    users = list(inputs.events["user_id"].unique()[:60])
    histories = compute_user_histories(inputs, users, as_of, recent_days=7.0)
    seen = seen_items(inputs.events, as_of)
    done = recently_completed(inputs.events, as_of, 7.0)
    for u in users:
        assert histories[u].engaged == frozenset(seen.get(u, set()))
        assert histories[u].completed_recent == frozenset(done.get(u, set()))
    assert any(h.completed_recent for h in histories.values())


def test_history_records_round_trip_through_json(
    inputs: FeatureInputs, as_of: pd.Timestamp
) -> None:
    import json

    user = str(inputs.events["user_id"].iloc[0])
    history = compute_user_histories(inputs, [user], as_of, 7.0)[user]
    assert UserHistory.from_record(json.loads(json.dumps(history.to_record()))) == history


def test_unknown_user_gets_an_empty_history(inputs: FeatureInputs, as_of: pd.Timestamp) -> None:
    history = compute_user_histories(inputs, ["u_nobody"], as_of, 7.0)["u_nobody"]
    assert history == UserHistory()
    frame = cross_features(history, ["a", "b"], ["yoga", "unknown"], np.array([0.0, np.nan]))
    assert frame["x_category_affinity"].tolist() == [0.0, 0.0]
    assert frame["x_difficulty_gap"].isna().all()


def test_cold_user_defaults_are_what_the_offline_code_computes(inputs: FeatureInputs) -> None:
    spine = pd.DataFrame(
        {"user_id": ["u_never_seen"], "as_of": [pd.Timestamp("2026-11-01", tz="UTC")]}
    )
    offline = compute_user_features(inputs, spine).iloc[0]
    for col in USER_FEATURES:
        expected = offline[col]
        got = COLD_USER_FEATURES[col]
        assert (np.isnan(expected) and np.isnan(got)) or expected == pytest.approx(got), col


@pytest.mark.parametrize(
    "record",
    [{"cat": 5}, {"engaged": 3}, {"imps7": {"wk_1": "many"}}, {"cat": ["yoga"]}],
)
def test_a_history_record_of_the_wrong_shape_is_a_corrupt_record(record: dict[str, Any]) -> None:
    with pytest.raises(CorruptRecordError, match="a history record of the wrong shape"):
        UserHistory.from_record(record)
