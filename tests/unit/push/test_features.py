"""Push features: strict point-in-time windows, online/offline parity, and the examples table."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.features.point_in_time import ITEM_TYPES, FeatureInputs
from fitpulse_orchestration.features.reference import load_catalog, load_profiles
from fitpulse_orchestration.features.snapshot import load_feature_inputs
from fitpulse_orchestration.push.examples import (
    EXAMPLE_COLUMNS,
    FATIGUE_HORIZON_D,
    OPEN_HORIZON_H,
    PushExampleStats,
    build_push_examples,
)
from fitpulse_orchestration.push.features import (
    CAP_HOURS,
    DAY_S,
    HOUR_S,
    PUSH_FEATURES,
    PushHistory,
    PushItem,
    compute_push_histories,
    push_feature_matrix,
    push_features,
    push_items,
)
from fitpulse_orchestration.storage.online_store import CorruptRecordError

if TYPE_CHECKING:
    from conftest import TinyWorld

BERLIN = ZoneInfo("Europe/Berlin")
ITEM_COLUMNS = (
    "item_type",
    "item_difficulty",
    "item_intensity",
    "item_duration_min",
    "item_age_days",
    "category_share_28d",
    "level_gap",
)


def _at(*args: int, tz: dt.tzinfo = dt.UTC) -> float:
    return dt.datetime(*args, tzinfo=tz).timestamp()


def _f(values: np.ndarray, name: str) -> float:
    return float(values[PUSH_FEATURES.index(name)])


def _arr(*times: float) -> np.ndarray:
    return np.sort(np.asarray(times, dtype=float))


# Monday 2026-11-02 12:00 UTC (13:00 in Berlin).
AT = _at(2026, 11, 2, 12)

ITEM = PushItem(
    item_id="wk_1",
    item_type="plan",
    category="yoga",
    difficulty=2.0,
    intensity=1.0,
    duration_min=25.0,
    published=AT - 10 * DAY_S,
    unsafe_for_beginners=True,
)


# --- point-in-time windows -------------------------------------------------------------------


def test_an_event_exactly_at_the_decision_time_does_not_count() -> None:
    history = PushHistory(
        fitness_level="intermediate",
        sent=_arr(AT),
        opened=_arr(AT),
        dismissed=_arr(AT),
        app_opens=_arr(AT),
        engaged=_arr(AT),
        engaged_category=np.array(["yoga"], dtype=object),
    )
    feats = push_features(history, AT, ITEM)
    for name in (
        "pushes_1d",
        "pushes_7d",
        "pushes_28d",
        "opens_28d",
        "dismisses_28d",
        "app_opens_7d",
        "engagements_7d",
        "engagements_28d",
    ):
        assert _f(feats, name) == 0.0, name
    assert _f(feats, "hours_since_push") == CAP_HOURS
    assert _f(feats, "hours_since_app_open") == CAP_HOURS
    assert _f(feats, "category_share_28d") == pytest.approx(0.5 / 5.0)
    # One second later the same events count.
    later = push_features(history, AT + 1.0, ITEM)
    assert _f(later, "pushes_1d") == 1.0
    assert _f(later, "opens_28d") == 1.0
    assert _f(later, "dismisses_28d") == 1.0
    assert _f(later, "app_opens_7d") == 1.0
    assert _f(later, "engagements_28d") == 1.0
    assert _f(later, "hours_since_push") == pytest.approx(1.0 / HOUR_S)
    assert _f(later, "category_share_28d") == pytest.approx(1.5 / 6.0)


def test_window_edges_are_open_at_the_far_end() -> None:
    history = PushHistory(
        sent=_arr(
            AT - 7 * DAY_S,  # exactly 7 d before: outside the 7-day window
            AT - 7 * DAY_S + 1,  # just inside
            AT - DAY_S,  # exactly 1 d before: outside the 1-day window
            AT - DAY_S + 1,  # just inside
            AT - 28 * DAY_S,  # exactly 28 d before: outside every window
        ),
        app_opens=_arr(AT - 7 * DAY_S, AT - 7 * DAY_S + 1),
    )
    feats = push_features(history, AT, None)
    assert _f(feats, "pushes_1d") == 1.0
    assert _f(feats, "pushes_7d") == 3.0
    assert _f(feats, "pushes_28d") == 4.0
    assert _f(feats, "app_opens_7d") == 1.0
    assert _f(feats, "hours_since_push") == pytest.approx((DAY_S - 1) / HOUR_S)


def test_open_rate_is_smoothed() -> None:
    empty = push_features(PushHistory(), AT, None)
    assert _f(empty, "open_rate_28d") == pytest.approx(0.5 / 2.0)
    history = PushHistory(
        sent=_arr(AT - 3 * DAY_S, AT - 2 * DAY_S, AT - DAY_S),
        opened=_arr(AT - 2 * DAY_S + 60),
        dismissed=_arr(AT - 3 * DAY_S + 60, AT - DAY_S + 60),
    )
    feats = push_features(history, AT, None)
    assert _f(feats, "pushes_28d") == 3.0
    assert _f(feats, "opens_28d") == 1.0
    assert _f(feats, "dismisses_28d") == 2.0
    assert _f(feats, "open_rate_28d") == pytest.approx((1 + 0.5) / (3 + 2.0))


def test_hours_since_caps_without_events() -> None:
    assert CAP_HOURS == 24.0 * 28
    feats = push_features(PushHistory(), AT, None)
    assert _f(feats, "hours_since_push") == CAP_HOURS
    assert _f(feats, "hours_since_app_open") == CAP_HOURS
    old = PushHistory(sent=_arr(AT - 40 * DAY_S), app_opens=_arr(AT - 30 * DAY_S))
    feats = push_features(old, AT, None)
    assert _f(feats, "hours_since_push") == CAP_HOURS
    assert _f(feats, "hours_since_app_open") == CAP_HOURS
    recent = PushHistory(sent=_arr(AT - 2.5 * HOUR_S), app_opens=_arr(AT - 90 * 60))
    feats = push_features(recent, AT, None)
    assert _f(feats, "hours_since_push") == pytest.approx(2.5)
    assert _f(feats, "hours_since_app_open") == pytest.approx(1.5)


def test_item_features_are_nan_without_an_item() -> None:
    history = PushHistory(fitness_level="intermediate")
    feats = push_features(history, AT, None)
    for name in ITEM_COLUMNS:
        assert np.isnan(_f(feats, name)), name
    for name in set(PUSH_FEATURES) - set(ITEM_COLUMNS):
        assert np.isfinite(_f(feats, name)), name


def test_item_features_with_an_item() -> None:
    history = PushHistory(
        fitness_level="intermediate",
        engaged=_arr(AT - 20 * DAY_S, AT - 3 * DAY_S, AT - 2 * DAY_S, AT - 40 * DAY_S),
        # sorted times: -40 d (out of window), -20 d, -3 d, -2 d
        engaged_category=np.array(["yoga", "yoga", "run", "yoga"], dtype=object),
    )
    feats = push_features(history, AT, ITEM)
    assert _f(feats, "item_type") == float(ITEM_TYPES.index("plan"))
    assert _f(feats, "item_difficulty") == 2.0
    assert _f(feats, "item_intensity") == 1.0
    assert _f(feats, "item_duration_min") == 25.0
    assert _f(feats, "item_age_days") == pytest.approx(10.0)
    assert _f(feats, "engagements_28d") == 3.0
    assert _f(feats, "engagements_7d") == 2.0
    # yoga engagements in the window: -20 d and -2 d.
    assert _f(feats, "category_share_28d") == pytest.approx((2 + 0.5) / (3 + 5.0))
    assert _f(feats, "fitness_level") == 1.0
    assert _f(feats, "level_gap") == pytest.approx(2.0 - 1.0)
    unknown = PushItem(**{**vars(ITEM), "item_type": "podcast", "published": np.nan})
    feats = push_features(history, AT, unknown)
    assert np.isnan(_f(feats, "item_type"))
    assert np.isnan(_f(feats, "item_age_days"))
    # Unknown user level: no level, no gap.
    feats = push_features(PushHistory(), AT, ITEM)
    assert np.isnan(_f(feats, "fitness_level"))
    assert np.isnan(_f(feats, "level_gap"))


def test_local_hour_and_weekend_follow_the_users_timezone() -> None:
    # Friday 2026-11-06 23:30 UTC is Saturday 00:30 in Berlin and Saturday 08:30 in Tokyo.
    at = _at(2026, 11, 6, 23, 30)
    expected = {
        "UTC": (23.0, 0.0),
        "Europe/Berlin": (0.0, 1.0),
        "Asia/Tokyo": (8.0, 1.0),
        "America/New_York": (18.0, 0.0),
        "Not/AZone": (23.0, 0.0),  # unknown: UTC
        "": (23.0, 0.0),
    }
    for tz, (hour, weekend) in expected.items():
        feats = push_features(PushHistory(timezone=tz), at, None)
        assert (_f(feats, "local_hour"), _f(feats, "weekend")) == (hour, weekend), tz
    # Summer time: 2026-07-01 12:00 UTC is 14:00 in Berlin (CEST), a Wednesday.
    feats = push_features(PushHistory(timezone="Europe/Berlin"), _at(2026, 7, 1, 12), None)
    assert (_f(feats, "local_hour"), _f(feats, "weekend")) == (14.0, 0.0)


def test_record_round_trip_keeps_the_features() -> None:
    history = PushHistory(
        fitness_level="advanced",
        timezone="Europe/Berlin",
        opted_out=False,
        disabled_at=AT - 5 * DAY_S,
        sent=_arr(AT - 3 * DAY_S, AT - HOUR_S),
        opened=_arr(AT - 3 * DAY_S + 100),
        app_opens=_arr(AT - 2 * HOUR_S),
        engaged=_arr(AT - DAY_S, AT - 2 * HOUR_S),
        engaged_category=np.array(["yoga", "run"], dtype=object),
    )
    record = json.loads(json.dumps(history.to_record()))
    back = PushHistory.from_record(record)
    assert back.disabled_at == history.disabled_at
    assert back.notifications_off(AT)
    assert list(back.engaged_category) == ["yoga", "run"]
    np.testing.assert_array_equal(push_features(back, AT, ITEM), push_features(history, AT, ITEM))
    kept = history.since(AT - 2 * DAY_S)
    assert list(kept.sent) == [AT - HOUR_S]
    assert list(kept.engaged_category) == ["yoga", "run"]


# --- the tiny world --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tiny_world: TinyWorld) -> FeatureInputs:
    store = tiny_world.store
    return load_feature_inputs(
        store, load_catalog(store), load_profiles(store, tiny_world.pseudonymizer)
    )


@pytest.fixture(scope="module")
def examples(inputs: FeatureInputs) -> tuple[pd.DataFrame, PushExampleStats]:
    return build_push_examples(inputs)


def test_online_features_from_the_28_day_record_equal_the_examples(
    inputs: FeatureInputs, examples: tuple[pd.DataFrame, PushExampleStats]
) -> None:
    frame, _ = examples
    rng = np.random.default_rng(11)
    # Half the sample from rows with push history, so the windows are exercised.
    busy = frame.index[frame["pushes_28d"] > 0].to_numpy()
    any_row = frame.index.to_numpy()
    rows = np.unique(
        np.concatenate(
            [rng.choice(busy, size=25, replace=False), rng.choice(any_row, size=25, replace=False)]
        )
    )
    items = push_items(inputs.catalog)
    time_cols = [PUSH_FEATURES.index(c) for c in ("hours_since_push", "hours_since_app_open")]
    other_cols = [i for i in range(len(PUSH_FEATURES)) if i not in time_cols]
    got, want = [], []
    for row in rows:
        rec = frame.loc[row]
        user = str(rec["user_id"])
        ts = pd.Timestamp(rec["ts"])
        history = compute_push_histories(
            inputs.events, inputs.catalog, inputs.profiles, as_of=ts, user_ids=[user]
        )[user]
        assert history.sent.size == 0 or history.sent.min() >= ts.timestamp() - 28 * DAY_S
        online = PushHistory.from_record(json.loads(json.dumps(history.to_record())))
        at = ts.timestamp()
        got.append(push_features(online, at, items.get(str(rec["item_id"]))))
        want.append(rec[list(PUSH_FEATURES)].to_numpy(float))
        assert online.notifications_off(at) == bool(rec["notifications_off"]), row
        assert online.is_beginner == bool(rec["beginner"]), row
    got_a, want_a = np.array(got), np.array(want)
    assert len(rows) >= 45
    # The sample is not trivial: pushes, app opens and engagements all appear.
    for name in ("pushes_28d", "opens_28d", "app_opens_7d", "engagements_28d"):
        assert (want_a[:, PUSH_FEATURES.index(name)] > 0).any(), name
    assert (want_a[:, time_cols] < CAP_HOURS).any()
    np.testing.assert_allclose(got_a[:, other_cols], want_a[:, other_cols], rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        got_a[:, time_cols], want_a[:, time_cols], rtol=0, atol=1 / 3600 + 1e-9
    )


def test_examples_have_one_row_per_decision_and_orphan_send(
    inputs: FeatureInputs, examples: tuple[pd.DataFrame, PushExampleStats]
) -> None:
    frame, stats = examples
    events = inputs.events
    logged = events[events["event_type"] == "push_decision"]
    decision_ids = set(logged["request_id"].fillna(logged["event_id"]))
    sends = events[events["event_type"] == "push_sent"]
    orphans = sends[~sends["request_id"].isin(decision_ids)]
    assert len(logged) > 100
    assert len(frame) == len(logged) + len(orphans)
    assert list(frame.columns) == list(EXAMPLE_COLUMNS)
    assert frame["decision_id"].is_unique
    assert frame["ts"].is_monotonic_increasing
    assert set(frame.loc[frame["policy"] == "unlogged", "decision_id"]) == set(
        orphans["request_id"].fillna(orphans["event_id"])
    )
    assert frame.loc[frame["policy"] == "unlogged", "sent"].all()
    assert stats.decisions == len(logged)
    assert stats.sends_without_decision == len(orphans)
    assert stats.sends == int(frame["sent"].sum())
    assert stats.disables == int((events["event_type"] == "push_disable").sum())
    assert stats.users == frame["user_id"].nunique()


def test_examples_outcomes_and_propensities(
    inputs: FeatureInputs, examples: tuple[pd.DataFrame, PushExampleStats]
) -> None:
    frame, stats = examples
    events = inputs.events
    sent = frame["sent"].to_numpy(bool)
    assert 0 < sent.sum() < len(frame)
    # Opens only on sent rows, and exactly those with a push_open within the horizon.
    assert not frame.loc[~sent, "opened"].any()
    assert not (frame.loc[~sent, "starts"] != 0).any()
    opens = events[events["event_type"] == "push_open"][["request_id", "ts"]]
    joined = frame[sent].merge(
        opens.rename(columns={"request_id": "decision_id", "ts": "open_ts"}), on="decision_id"
    )
    in_time = joined[joined["open_ts"] - joined["ts"] <= pd.Timedelta(hours=OPEN_HORIZON_H)]
    assert set(frame.loc[frame["opened"], "decision_id"]) == set(in_time["decision_id"])
    assert stats.opens == int(frame["opened"].sum()) > 0
    # Propensity: the probability of the logged action.
    logged = frame[frame["policy"] != "unlogged"]
    expected = np.where(logged["sent"], logged["p_send"], 1.0 - logged["p_send"])
    np.testing.assert_allclose(logged["propensity"].to_numpy(float), expected, rtol=0, atol=0)
    assert logged["propensity"].between(0, 1, inclusive="neither").all()
    assert frame.loc[frame["policy"] == "unlogged", "propensity"].isna().all()
    # Fatigue is observed only for decisions whose 7 days the data covers.
    end = events["ts"].max()
    horizon = pd.Timedelta(days=FATIGUE_HORIZON_D)
    np.testing.assert_array_equal(frame["fatigue_observed"], frame["ts"] + horizon <= end)
    assert not frame.loc[frame["ts"] > end - horizon, "fatigue_observed"].any()
    assert frame["fatigue_observed"].any()
    assert not frame["fatigue_observed"].all()


def test_disables_are_attributed_once_to_the_last_send(
    inputs: FeatureInputs, examples: tuple[pd.DataFrame, PushExampleStats]
) -> None:
    frame, _ = examples
    events = inputs.events
    sends = events[events["event_type"] == "push_sent"]
    disables = events[events["event_type"] == "push_disable"]
    first_send = sends.groupby("user_id")["ts"].min()
    with_earlier_send = sum(
        1
        for user, ts in zip(disables["user_id"], disables["ts"], strict=True)
        if user in first_send.index and first_send[user] < ts
    )
    assert with_earlier_send > 0
    assert frame["disable_attributed"].sum() == with_earlier_send
    attributed = frame[frame["disable_attributed"] > 0]
    assert attributed["sent"].all()
    # Each attributed row is the user's last send before one of their switch-offs, and was
    # followed by that switch-off within 7 days only if disabled_7d says so.
    for rec in attributed.itertuples():
        user_disables = disables.loc[disables["user_id"] == rec.user_id, "ts"]
        after = user_disables[user_disables > rec.ts]
        assert len(after) > 0
        later_sends = frame[
            (frame["user_id"] == rec.user_id)
            & frame["sent"]
            & (frame["ts"] > rec.ts)
            & (frame["ts"] <= after.min())
        ]
        assert later_sends.empty
        within = (after.min() - rec.ts) <= pd.Timedelta(days=FATIGUE_HORIZON_D)
        assert bool(rec.disabled_7d) == within


def test_examples_need_push_events(inputs: FeatureInputs) -> None:
    events = inputs.events
    no_push = events[~events["event_type"].str.startswith("push_")]
    assert len(no_push) > 0
    with pytest.raises(ValueError, match="push_decision or push_sent"):
        build_push_examples(FeatureInputs(no_push, inputs.catalog, inputs.profiles))


def test_the_feature_matrix_equals_the_stacked_vectors() -> None:
    history = PushHistory(
        fitness_level="intermediate",
        sent=_arr(AT - 3 * DAY_S, AT - 2 * HOUR_S),
        opened=_arr(AT - 3 * DAY_S + 60),
        app_opens=_arr(AT - 5 * HOUR_S, AT - DAY_S),
        engaged=_arr(AT - 40 * DAY_S, AT - 6 * DAY_S, AT - 2 * DAY_S, AT - HOUR_S),
        engaged_category=np.array(["yoga", "yoga", "hiit", "yoga"], dtype=object),
        timezone="Europe/Berlin",
    )
    items = [
        ITEM,
        dataclasses.replace(ITEM, item_id="wk_2", category="hiit", published=np.nan),
        dataclasses.replace(ITEM, item_id="x_3", item_type="podcast", difficulty=np.nan),
    ]

    matrix = push_feature_matrix(history, AT, items)

    expected = np.vstack([push_features(history, AT, item) for item in items])
    np.testing.assert_array_equal(matrix, expected)
    assert _f(matrix[0], "category_share_28d") == pytest.approx((2 + 0.5) / (3 + 5.0))
    assert push_feature_matrix(history, AT, []).shape == (0, len(PUSH_FEATURES))


@pytest.mark.parametrize(
    "record",
    [{"sent": 5}, {"eng": 1.5}, {"off": "soon"}, {"app": [[1.0, 2.0]]}, {"cat": "yoga"}],
)
def test_a_push_record_of_the_wrong_shape_is_a_corrupt_record(record: dict[str, Any]) -> None:
    with pytest.raises(CorruptRecordError, match="a push record of the wrong shape"):
        PushHistory.from_record(record)
