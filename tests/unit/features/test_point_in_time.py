from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.events.schema import (
    clean_events_from_records,
)
from fitpulse_orchestration.features.point_in_time import (
    CROSS_FEATURES,
    ITEM_FEATURES,
    NO_HISTORY_DAYS,
    USER_FEATURES,
    FeatureInputs,
    as_float_matrix,
    attach_features,
    compute_cross_features,
    compute_item_features,
    compute_user_features,
    feature_columns,
    snapshot_item_features,
    snapshot_user_features,
)
from fitpulse_orchestration.features.reference import CATALOG_SCHEMA, PROFILES_SCHEMA

AS_OF = pd.Timestamp("2026-10-10T12:00", tz="UTC")


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _events(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return clean_events_from_records(rows)


def _ev(event_type: str, user: str, ts: str, item: str | None = None, **extra: Any) -> dict:
    return {"event_type": event_type, "user_id": user, "item_id": item, "ts": utc(ts), **extra}


CATALOG = CATALOG_SCHEMA.validate(
    pd.DataFrame(
        {
            "item_id": ["y1", "y2", "h1", "late"],
            "item_type": ["workout", "video", "article", "plan"],
            "title": "t",
            "category": ["yoga", "yoga", "hiit", "running"],
            "difficulty": ["beginner", "intermediate", "advanced", "intermediate"],
            "intensity": ["low", "medium", "high", "medium"],
            "duration_min": [10.0, 20.0, 5.0, 28.0],
            "equipment": "none",
            "tags": "",
            "published_at": [
                utc("2026-09-01"),
                utc("2026-10-01"),
                utc("2026-10-08T12:00"),
                utc("2026-10-11"),
            ],
        }
    )
)
PROFILES = PROFILES_SCHEMA.validate(
    pd.DataFrame(
        {
            "user_id": ["p_a", "p_b"],
            "signup_at": [utc("2026-09-01"), utc("2026-10-05")],
            "region": ["uk", "jp"],
            "timezone": "UTC",
            "fitness_level": ["beginner", "advanced"],
            "goals": "",
            "push_opt_out": False,
        }
    )
)
HISTORY = [
    _ev("app_open", "p_a", "2026-09-20T06:00"),
    _ev("click", "p_a", "2026-09-01T06:00", "y1"),  # 39.25 days before AS_OF: outside 28 days
    _ev("click", "p_a", "2026-10-01T09:00", "h1"),
    _ev("push_sent", "p_a", "2026-10-08T06:00", "y2"),
    _ev("push_open", "p_a", "2026-10-08T06:10", "y2"),
    _ev("impression", "p_a", "2026-10-09T08:00", "y1", request_id="r1", position=0),
    _ev("impression", "p_a", "2026-10-09T08:00", "h1", request_id="r1", position=1),
    _ev("click", "p_a", "2026-10-09T08:01", "y1", request_id="r1"),
    _ev("workout_start", "p_a", "2026-10-09T08:02", "y1", request_id="r1"),
    _ev("workout_complete", "p_a", "2026-10-09T08:30", "y1", request_id="r1"),
    _ev("video_watch", "p_a", "2026-10-10T06:00", "y2"),
]
FUTURE = [
    _ev("click", "p_a", "2026-10-10T12:00", "h1"),
    _ev("workout_complete", "p_a", "2026-10-10T12:00", "y1"),
    _ev("impression", "p_a", "2026-10-10T12:00", "y1", request_id="r9", position=0),
    _ev("push_sent", "p_a", "2026-10-10T12:00", "y2"),
    _ev("push_open", "p_a", "2026-10-10T12:01", "y2"),
    _ev("click", "p_b", "2026-10-10T12:00:01", "y1"),
    _ev("workout_start", "p_b", "2026-10-11T08:00", "h1"),
    _ev("app_open", "p_b", "2026-10-12T08:00"),
    _ev("click", "p_new", "2026-10-10T13:00", "y2"),
]


def _inputs(rows: list[dict[str, Any]]) -> FeatureInputs:
    return FeatureInputs(events=_events(rows), catalog=CATALOG, profiles=PROFILES)


def _by(frame: pd.DataFrame, *keys: str) -> pd.DataFrame:
    return frame.set_index(list(keys)).sort_index()


USER_SPINE = pd.DataFrame({"user_id": ["p_a", "p_b", "p_new"], "as_of": AS_OF})
ITEM_SPINE = pd.DataFrame({"item_id": ["y1", "y2", "h1", "late", "ghost"], "as_of": AS_OF})
CROSS_SPINE = pd.DataFrame(
    {"user_id": ["p_a", "p_a", "p_a", "p_b"], "item_id": ["y1", "h1", "y2", "y1"], "as_of": AS_OF}
)


def test_user_features_count_the_28_days_strictly_before_as_of() -> None:
    features = _by(compute_user_features(_inputs(HISTORY), USER_SPINE), "user_id")
    a = features.loc["p_a"]

    assert len(features) == 3
    assert a["u_engaged_7d"] == 4  # click, start, complete on 10-09; watch on 10-10
    assert a["u_engaged_28d"] == 5  # ... plus the click on 10-01; 09-01 is outside
    assert a["u_completes_28d"] == 1
    assert a["u_impressions_28d"] == 2
    assert a["u_ctr_28d"] == pytest.approx((2 + 1) / (2 + 20))
    assert a["u_active_days_28d"] == 5  # 09-20, 10-01, 10-08, 10-09, 10-10
    assert a["u_days_since_engaged"] == pytest.approx(0.25)
    assert a["u_push_open_rate_28d"] == pytest.approx((1 + 0.5) / (1 + 5))
    assert a["u_level"] == 0
    assert a["u_tenure_days"] == pytest.approx(39.5)
    assert a["u_is_cold"] == 0
    assert (a["fitness_level"], a["region"]) == ("beginner", "uk")
    assert set(USER_FEATURES) <= set(features.columns)
    assert all(dtype == np.float64 for dtype in features[list(USER_FEATURES)].dtypes)


def test_user_without_history_is_cold_with_no_history_days() -> None:
    features = _by(compute_user_features(_inputs(HISTORY), USER_SPINE), "user_id")
    b = features.loc["p_b"]
    unknown = features.loc["p_new"]

    for row in (b, unknown):
        assert row["u_days_since_engaged"] == NO_HISTORY_DAYS
        assert row["u_is_cold"] == 1
        assert row["u_engaged_28d"] == row["u_impressions_28d"] == row["u_active_days_28d"] == 0
        assert row["u_ctr_28d"] == pytest.approx(1 / 20)
        assert row["u_push_open_rate_28d"] == pytest.approx(0.5 / 5)
    assert (b["u_level"], b["u_tenure_days"]) == (2, pytest.approx(5.5))
    assert np.isnan(unknown["u_level"])
    assert np.isnan(unknown["u_tenure_days"])
    assert (unknown["fitness_level"], unknown["region"]) == ("unknown", "unknown")


def test_user_is_cold_below_five_engagements() -> None:
    four = [_ev("click", "p_b", f"2026-10-0{d}T10:00", "y1") for d in range(6, 10)]
    five = [*four, _ev("click", "p_b", "2026-10-09T11:00", "y2")]
    spine = USER_SPINE.iloc[[1]]

    assert compute_user_features(_inputs(four), spine)["u_is_cold"].tolist() == [1.0]
    assert compute_user_features(_inputs(five), spine)["u_is_cold"].tolist() == [0.0]


def test_user_window_edges_exclude_events_just_outside() -> None:
    rows = [
        _ev("click", "p_b", "2026-09-12T11:59:59", "y1"),  # 28 days + 1 s before AS_OF
        _ev("click", "p_b", "2026-10-03T11:59:59", "y1"),  # 7 days + 1 s before AS_OF
        _ev("click", "p_b", "2026-10-10T11:59:59", "y1"),  # 1 s before AS_OF
    ]

    b = compute_user_features(_inputs(rows), USER_SPINE.iloc[[1]]).iloc[0]

    assert (b["u_engaged_28d"], b["u_engaged_7d"]) == (2, 1)
    assert b["u_days_since_engaged"] == pytest.approx(1 / 86400)


def test_events_at_or_after_as_of_never_change_user_features() -> None:
    before = _by(compute_user_features(_inputs(HISTORY), USER_SPINE), "user_id")
    after = _by(compute_user_features(_inputs(HISTORY + FUTURE), USER_SPINE), "user_id")

    pd.testing.assert_frame_equal(after, before)


def test_item_features_count_whole_days_before_the_as_of_day() -> None:
    features = _by(compute_item_features(_inputs(HISTORY), ITEM_SPINE), "item_id")

    assert len(features) == 5
    y1, y2, h1 = features.loc["y1"], features.loc["y2"], features.loc["h1"]
    assert (y1["i_impressions_7d"], y1["i_engaged_7d"]) == (1, 3)  # 10-09; 09-01 is outside
    assert y1["i_ctr_7d"] == pytest.approx((3 + 1) / (1 + 20))
    assert (y2["i_impressions_7d"], y2["i_engaged_7d"]) == (0, 0)  # watched on the as_of day
    assert (h1["i_impressions_7d"], h1["i_engaged_7d"]) == (1, 0)  # click on 10-01 is 9 days back
    assert h1["i_engaged_28d"] == 1  # ... but inside the 28-day window
    assert h1["i_ctr_7d"] == pytest.approx(1 / 21)
    assert h1["i_age_days"] == pytest.approx(2.0)
    assert (h1["i_difficulty"], h1["i_intensity"], h1["i_duration_min"]) == (2, 2, 5)
    assert (h1["i_type"], h1["i_category"]) == (2, 3)  # article, hiit
    assert (y2["i_type"], y2["i_category"]) == (3, 2)  # video, yoga
    assert features.loc["late", "i_age_days"] == 0  # published after as_of: clipped
    content = list(ITEM_FEATURES[ITEM_FEATURES.index("i_age_days") :])
    assert features.loc["ghost", content].isna().all()
    assert features.loc["ghost", "i_impressions_7d"] == 0
    assert all(dtype == np.float64 for dtype in features[list(ITEM_FEATURES)].dtypes)


def test_item_window_is_the_seven_days_before_the_as_of_day() -> None:
    rows = [
        _ev("click", "p_b", "2026-10-02T23:59:59", "y1"),  # 8 days before the as_of day
        _ev("click", "p_b", "2026-10-03T00:00:00", "y1"),  # first day of the window
        _ev("click", "p_b", "2026-10-09T23:59:59", "y1"),  # last day of the window
        _ev("click", "p_b", "2026-10-10T00:00:00", "y1"),  # the as_of day itself
    ]

    features = compute_item_features(_inputs(rows), ITEM_SPINE.iloc[[0]])

    assert features["i_engaged_7d"].tolist() == [2.0]


def test_events_on_the_as_of_day_or_later_never_change_item_features() -> None:
    same_day = [_ev("click", "p_b", "2026-10-10T00:00", "y2"), *FUTURE]
    before = _by(compute_item_features(_inputs(HISTORY), ITEM_SPINE), "item_id")
    after = _by(compute_item_features(_inputs(HISTORY + same_day), ITEM_SPINE), "item_id")

    pd.testing.assert_frame_equal(after, before)


def test_cross_features_as_of() -> None:
    features = _by(compute_cross_features(_inputs(HISTORY), CROSS_SPINE), "user_id", "item_id")

    assert len(features) == 4
    # p_a's engagements in 28 days: 4 yoga (y1 click/start/complete, y2 watch), 1 hiit.
    assert features.loc[("p_a", "y1"), "x_category_affinity"] == pytest.approx(0.8)
    assert features.loc[("p_a", "y2"), "x_category_affinity"] == pytest.approx(0.8)
    assert features.loc[("p_a", "h1"), "x_category_affinity"] == pytest.approx(0.2)
    assert features.loc[("p_b", "y1"), "x_category_affinity"] == 0
    assert features.loc[("p_a", "h1"), "x_difficulty_gap"] == 2
    assert features.loc[("p_b", "y1"), "x_difficulty_gap"] == -2
    assert features["x_item_engaged_before"].tolist() == [1, 1, 1, 0]
    assert features.loc[("p_a", "h1"), "x_item_impressions_7d"] == 1
    assert features.loc[("p_a", "y2"), "x_item_impressions_7d"] == 0
    assert all(dtype == np.float64 for dtype in features[list(CROSS_FEATURES)].dtypes)


def test_category_affinity_is_a_share_of_engagements() -> None:
    rows = [
        _ev("click", "p_b", "2026-10-09T08:00", "y1"),
        _ev("click", "p_b", "2026-10-09T09:00", "h1"),
        _ev("workout_start", "p_b", "2026-10-09T09:01", "h1"),
        _ev("impression", "p_b", "2026-10-09T07:00", "y1", request_id="r", position=0),
    ]
    spine = pd.DataFrame({"user_id": "p_b", "item_id": ["y1", "h1", "late"], "as_of": AS_OF})

    features = _by(compute_cross_features(_inputs(rows), spine), "item_id")

    assert features.loc["y1", "x_category_affinity"] == pytest.approx(1 / 3)
    assert features.loc["h1", "x_category_affinity"] == pytest.approx(2 / 3)
    assert features.loc["late", "x_category_affinity"] == 0


def test_events_at_or_after_as_of_never_change_cross_features() -> None:
    before = _by(compute_cross_features(_inputs(HISTORY), CROSS_SPINE), "user_id", "item_id")
    after = _by(
        compute_cross_features(_inputs(HISTORY + FUTURE), CROSS_SPINE), "user_id", "item_id"
    )

    pd.testing.assert_frame_equal(after, before)


def test_each_spine_row_uses_its_own_as_of() -> None:
    later = AS_OF + pd.Timedelta(days=2)
    spine = pd.DataFrame({"user_id": ["p_b", "p_b", "p_b"], "as_of": [AS_OF, later, AS_OF]})

    features = compute_user_features(_inputs(HISTORY + FUTURE), spine).sort_values("as_of")

    assert features["u_engaged_28d"].tolist() == [0.0, 2.0]


def test_attach_features_keeps_rows_and_order() -> None:
    frame = CROSS_SPINE.iloc[[2, 0, 3, 1, 0]].reset_index(drop=True)
    frame["label"] = [5, 4, 3, 2, 1]
    inputs = _inputs(HISTORY)

    out = attach_features(inputs, frame)

    assert len(out) == len(frame)
    assert out[["user_id", "item_id"]].equals(frame[["user_id", "item_id"]])
    assert out["label"].tolist() == [5, 4, 3, 2, 1]
    assert set(feature_columns(include_als=False)) <= set(out.columns)
    users = _by(compute_user_features(inputs, USER_SPINE), "user_id")
    assert out["u_engaged_28d"].tolist() == users.loc[out["user_id"], "u_engaged_28d"].tolist()
    assert out["i_engaged_7d"].tolist() == [0, 3, 3, 0, 3]
    assert out["x_category_affinity"].tolist() == pytest.approx([0.8, 0.8, 0.0, 0.2, 0.8])


def test_feature_matrix_is_float32_in_model_order() -> None:
    out = attach_features(_inputs(HISTORY), CROSS_SPINE)
    columns = feature_columns(include_als=False)

    matrix = as_float_matrix(out, columns)

    assert feature_columns()[-2:] == ["als_score", "x_source"]
    assert matrix.shape == (4, len(columns))
    assert matrix.dtype == np.float32
    assert matrix.flags["C_CONTIGUOUS"]


def test_snapshots_cover_profiled_active_users_and_published_items() -> None:
    inputs = _inputs([*HISTORY, _ev("click", "p_new", "2026-10-09T08:00", "y1")])

    users = snapshot_user_features(inputs, AS_OF)
    items = snapshot_item_features(inputs, AS_OF)

    assert sorted(users["user_id"]) == ["p_a", "p_b", "p_new"]
    assert sorted(items["item_id"]) == ["h1", "y1", "y2"]


def test_user_snapshot_before_a_signup_does_not_fail() -> None:
    users = snapshot_user_features(_inputs(HISTORY), utc("2026-10-03"))

    assert (users["u_tenure_days"].dropna() >= 0).all()
