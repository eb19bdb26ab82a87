from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.events.schema import clean_events_from_records
from fitpulse_orchestration.features.point_in_time import (
    FeatureInputs,
    attach_features,
    feature_columns,
)
from fitpulse_orchestration.features.reference import CATALOG_SCHEMA, PROFILES_SCHEMA
from fitpulse_orchestration.monitoring.serving import (
    arrival_times,
    compute_skew,
    notifications_per_user_week,
    prediction_columns,
    served_predictions,
    ux_metrics,
)

AS_OF = pd.Timestamp("2026-10-10T00:00", tz="UTC")
FEATURES = feature_columns(include_als=False)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _ev(event_type: str, user: str, ts: str, item: str | None = None, **extra: Any) -> dict:
    return {"event_type": event_type, "user_id": user, "item_id": item, "ts": utc(ts), **extra}


CATALOG = CATALOG_SCHEMA.validate(
    pd.DataFrame(
        {
            "item_id": ["y1", "y2", "h1"],
            "item_type": ["workout", "video", "article"],
            "title": "t",
            "category": ["yoga", "yoga", "hiit"],
            "difficulty": ["beginner", "intermediate", "advanced"],
            "intensity": ["low", "medium", "high"],
            "duration_min": [10.0, 20.0, 5.0],
            "equipment": "none",
            "tags": "",
            "published_at": [utc("2026-09-01"), utc("2026-10-01"), utc("2026-10-08T12:00")],
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
    _ev("click", "p_a", "2026-10-01T09:00", "h1"),
    _ev("push_sent", "p_a", "2026-10-08T06:00", "y2"),
    _ev("push_open", "p_a", "2026-10-08T06:10", "y2"),
    _ev("impression", "p_a", "2026-10-08T08:00", "y1", request_id="r1", position=0),
    _ev("impression", "p_a", "2026-10-08T08:00", "h1", request_id="r1", position=1),
    _ev("click", "p_a", "2026-10-08T08:01", "y1", request_id="r1"),
    _ev("workout_complete", "p_a", "2026-10-08T08:30", "y1", request_id="r1"),
    _ev("video_watch", "p_a", "2026-10-09T06:00", "y2"),
    _ev("click", "p_b", "2026-10-09T07:00", "h1"),
]


def _inputs() -> FeatureInputs:
    return FeatureInputs(clean_events_from_records(HISTORY), CATALOG, PROFILES)


def _served(inputs: FeatureInputs) -> pd.DataFrame:
    """A served log whose features come from the training code path, plus one empty feed."""
    keys = pd.DataFrame(
        {
            "user_id": ["p_a", "p_a", "p_a", "p_b", "p_new"],
            "item_id": ["y1", "h1", "y2", "y1", "y2"],
            "as_of": AS_OF,
        }
    )
    served = attach_features(inputs, keys)
    served["as_of"] = AS_OF
    served["request_id"] = ["q1", "q1", "q1", "q2", "q3"]
    empty = pd.DataFrame({"request_id": ["q4"], "user_id": ["p_b"], "as_of": [AS_OF]})
    return pd.concat([served, empty], ignore_index=True)


# ---- arrival_times ----------------------------------------------------------------------


def test_landing_batch_events_arrive_when_their_hour_closes() -> None:
    events = clean_events_from_records(
        [
            _ev(
                "app_open",
                "p_a",
                "2026-01-02T05:30",
                source_file="landing/events/date=2026-01-02/hour=05/x.ndjson.gz",
            ),
            _ev(
                "app_open",
                "p_a",
                "2026-01-02T23:59",
                source_file="s3://bucket/landing/events/date=2026-01-02/hour=23/y.ndjson.gz",
            ),
        ]
    )

    arrived = arrival_times(events)

    assert arrived.tolist() == [utc("2026-01-02T06:00"), utc("2026-01-03T00:00")]


def test_events_without_a_landing_batch_arrive_at_their_ts() -> None:
    events = clean_events_from_records(
        [
            _ev("app_open", "p_a", "2026-01-01T03:30"),  # source_file "records"
            _ev("app_open", "p_a", "2026-01-01T04:30", source_file="imports/history-2025.csv"),
            _ev(
                "app_open",
                "p_a",
                "2026-01-02T05:30",
                source_file="landing/events/date=2026-01-02/hour=05/x.ndjson.gz",
            ),
        ]
    )

    arrived = arrival_times(events)

    assert arrived.tolist() == [
        utc("2026-01-01T03:30"),
        utc("2026-01-01T04:30"),
        utc("2026-01-02T06:00"),
    ]
    assert str(arrived.dtype).startswith("datetime64")
    assert arrived.index.equals(events.index)


# ---- ux_metrics -------------------------------------------------------------------------


def _log(rows: list[tuple[str, str, str | None, str | None, bool]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["request_id", "fitness_level", "item_id", "source", "unsafe_for_beginner"]
    )


def test_ux_metrics_of_a_hand_built_log() -> None:
    served = _log(
        [
            # personalized beginner feed with one unsafe item: a violation
            ("r1", "beginner", "y1", "als", False),
            ("r1", "beginner", "h1", "popularity", True),
            # popularity and fresh only: a fallback; unsafe items are fine for advanced users
            ("r2", "advanced", "h1", "popularity", True),
            ("r2", "advanced", "y2", "fresh", False),
            # empty feed: one row with a null item
            ("r3", "beginner", None, None, False),
            ("r4", "intermediate", "y2", "als", False),
        ]
    )

    metrics = ux_metrics(served)

    assert metrics == {
        "requests": 4.0,
        "empty_feed_rate": 0.25,
        "fallback_rate": 0.25,
        "beginner_violations": 1.0,
    }


def test_empty_feed_is_not_a_fallback() -> None:
    served = _log([("r1", "beginner", None, None, False), ("r2", "advanced", None, None, False)])

    metrics = ux_metrics(served)

    assert metrics["empty_feed_rate"] == 1.0
    assert metrics["fallback_rate"] == 0.0
    assert metrics["beginner_violations"] == 0.0


def test_ux_metrics_of_an_empty_log_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        ux_metrics(_log([]))


def test_served_predictions_keep_served_items_only() -> None:
    served = _log([("r1", "beginner", "y1", "als", False), ("r2", "beginner", None, None, False)])
    served["score"] = [0.3, np.nan]

    predictions = served_predictions(served, ["score", "source"])

    assert predictions.to_dict("list") == {"score": [0.3], "source": ["als"]}


def test_prediction_columns_follow_the_reference() -> None:
    recorded = pd.DataFrame({"score": [0.1], "source": ["als"]})
    score_only = pd.DataFrame({"score": [0.1]})

    assert prediction_columns(recorded) == (["score"], ["source"])
    assert prediction_columns(score_only) == (["score"], [])


# ---- notifications_per_user_week --------------------------------------------------------


def _pushes(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return clean_events_from_records([_ev(kind, user, ts, "y1") for kind, user, ts in rows])


def test_notifications_per_user_week() -> None:
    end = utc("2026-10-10")
    events = _pushes(
        [
            ("push_sent", "p_a", "2026-10-03T00:00"),  # the first instant of the window
            ("push_sent", "p_a", "2026-10-05T00:00"),
            ("push_sent", "p_a", "2026-10-09T23:59"),
            ("push_sent", "p_b", "2026-10-06T00:00"),
            ("push_sent", "p_b", "2026-10-02T23:59"),  # before the window
            ("push_sent", "p_b", "2026-10-10T00:00"),  # at end: excluded
            ("push_open", "p_c", "2026-10-06T00:00"),  # not a send
        ]
    )

    out = notifications_per_user_week(events, end)

    assert out["pushed_users"] == 2.0
    assert out["mean"] == 2.0
    assert out["max"] == 3.0
    assert out["p95"] == pytest.approx(1 + 0.95 * 2)


def test_notifications_are_scaled_to_a_week() -> None:
    events = _pushes(
        [
            ("push_sent", "p_a", "2026-09-27T00:00"),
            ("push_sent", "p_a", "2026-10-01T00:00"),
            ("push_sent", "p_a", "2026-10-05T00:00"),
            ("push_sent", "p_a", "2026-10-09T00:00"),
        ]
    )

    out = notifications_per_user_week(events, utc("2026-10-10"), days=14)

    assert out == {"pushed_users": 1.0, "mean": 2.0, "p95": 2.0, "max": 2.0}


def test_no_notifications_gives_zeros() -> None:
    events = _pushes([("push_open", "p_a", "2026-10-05T00:00")])

    out = notifications_per_user_week(events, utc("2026-10-10"))

    assert out == {"pushed_users": 0.0, "mean": 0.0, "p95": 0.0, "max": 0.0}


# ---- compute_skew -----------------------------------------------------------------------


def test_features_served_from_the_training_path_have_no_skew() -> None:
    inputs = _inputs()

    skew = compute_skew(_served(inputs), inputs, FEATURES)

    assert list(skew.columns) == ["feature", "rows", "mismatches", "mismatch_rate", "max_abs_diff"]
    assert sorted(skew["feature"]) == sorted(FEATURES)
    assert (skew["rows"] == 5).all()  # the empty feed's null-item row is not recomputed
    assert (skew["mismatches"] == 0).all()
    assert (skew["mismatch_rate"] == 0.0).all()
    assert (skew["max_abs_diff"] == 0.0).all()


def test_one_corrupted_value_is_one_mismatch_of_that_feature() -> None:
    inputs = _inputs()
    served = _served(inputs)
    served.loc[1, "u_engaged_7d"] += 2.0

    result = compute_skew(served, inputs, FEATURES)

    assert result.loc[0, "feature"] == "u_engaged_7d"  # worst first
    skew = result.set_index("feature")
    assert skew.loc["u_engaged_7d", "mismatches"] == 1
    assert skew.loc["u_engaged_7d", "mismatch_rate"] == pytest.approx(1 / 5)
    assert skew.loc["u_engaged_7d", "max_abs_diff"] == pytest.approx(2.0)
    others = skew.drop(index="u_engaged_7d")
    assert (others["mismatch_rate"] == 0.0).all()


def test_null_on_one_side_only_is_a_mismatch_and_null_on_both_is_not() -> None:
    inputs = _inputs()
    served = _served(inputs)
    assert np.isnan(served.loc[4, "u_tenure_days"])  # p_new has no profile: null both sides
    served.loc[0, "i_age_days"] = np.nan

    skew = compute_skew(served, inputs, ["u_tenure_days", "i_age_days"]).set_index("feature")

    assert skew.loc["u_tenure_days", "mismatches"] == 0
    assert skew.loc["i_age_days", "mismatches"] == 1


def test_differences_within_the_relative_tolerance_match() -> None:
    inputs = _inputs()
    served = _served(inputs)
    served.loc[0, "u_tenure_days"] *= 1 + 1e-9
    served.loc[1, "u_tenure_days"] *= 1 + 1e-3

    skew = compute_skew(served, inputs, ["u_tenure_days"])

    assert skew.loc[0, "mismatches"] == 1


def test_missing_feature_column_raises() -> None:
    inputs = _inputs()
    served = _served(inputs).drop(columns=["i_ctr_7d"])

    with pytest.raises(ValueError, match="i_ctr_7d"):
        compute_skew(served, inputs, FEATURES)


def test_log_without_served_items_raises() -> None:
    inputs = _inputs()
    served = _served(inputs)
    served["item_id"] = None

    with pytest.raises(ValueError, match="no served items"):
        compute_skew(served, inputs, FEATURES)
