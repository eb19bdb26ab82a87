from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.evaluation.experiments import (
    EXPOSURE_COLUMNS,
    METRICS,
    analyze_experiment,
    exposures_of,
)
from fitpulse_orchestration.events.schema import CLEAN_EVENT_COLUMNS, clean_events_from_records

EXP = "ranker-ab"
T0 = pd.Timestamp("2026-11-02 09:00", tz="UTC")
HOUR = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)


def payload(variant: str | None, experiment: str | None = EXP) -> str:
    return json.dumps(
        {
            "source": "feed_service",
            "experiment": experiment,
            "variant": variant,
            "model_version": "3",
            "fallback": None,
        }
    )


def served(
    user: str, request: str, items: list[str], ts: pd.Timestamp, variant: str, exp: str = EXP
) -> list[dict[str, Any]]:
    return [
        {
            "event_type": "impression",
            "user_id": user,
            "ts": ts,
            "item_id": item,
            "request_id": request,
            "position": pos,
            "payload": payload(variant, exp),
        }
        for pos, item in enumerate(items)
    ]


def event(
    kind: str, user: str, ts: pd.Timestamp, item: str | None = None, request: str | None = None
) -> dict[str, Any]:
    return {"event_type": kind, "user_id": user, "ts": ts, "item_id": item, "request_id": request}


def hand_log() -> list[dict[str, Any]]:
    """Two control users and one treatment user whose metrics are worked out by hand.

    control: u1 sees 3 items (r1), clicks a twice (one clicked impression), starts at +1h and
    +2d (any item), reopens at +3d. u2 sees 2 + 2 items (r2 at +1h, r3 at +2d), clicks g in r3,
    starts 8 days after its first exposure and opens the app exactly at it (neither counts).
    treatment: u3 sees 2 items (r4), clicks both, starts at +30min, reopens at exactly +7d.
    """
    return [
        event("app_open", "u1", T0 - pd.Timedelta(minutes=1)),
        *served("u1", "r1", ["a", "b", "c"], T0, "control"),
        event("click", "u1", T0 + pd.Timedelta(minutes=2), "a", "r1"),
        event("click", "u1", T0 + pd.Timedelta(minutes=3), "a", "r1"),
        event("workout_start", "u1", T0 + HOUR, "a", "r1"),
        event("workout_start", "u1", T0 + 2 * DAY, "z"),
        event("app_open", "u1", T0 + 3 * DAY),
        event("app_open", "u2", T0 + HOUR),
        *served("u2", "r2", ["d", "e"], T0 + HOUR, "control"),
        *served("u2", "r3", ["f", "g"], T0 + 2 * DAY, "control"),
        event("click", "u2", T0 + 2 * DAY, "g", "r3"),
        event("workout_start", "u2", T0 + HOUR + 8 * DAY, "g"),
        event("app_open", "u2", T0 + HOUR + 8 * DAY),
        *served("u3", "r4", ["a", "b"], T0, "treatment"),
        event("click", "u3", T0 + pd.Timedelta(minutes=1), "a", "r4"),
        event("click", "u3", T0 + pd.Timedelta(minutes=2), "b", "r4"),
        event("workout_start", "u3", T0 + pd.Timedelta(minutes=30), "b", "r4"),
        event("app_open", "u3", T0 + 7 * DAY),
        # Noise: another experiment, an app-side impression, a click on r4 by someone else,
        # a click on an item r1 did not show, and an unexposed user's start.
        *served("u4", "r9", ["a"], T0, "control", exp="other-exp"),
        {**event("impression", "u1", T0, "c", "r1"), "position": 2},
        event("click", "u9", T0, "a", "r4"),
        event("click", "u1", T0, "x", "r1"),
        event("workout_start", "u9", T0 + HOUR, "a"),
    ]


def row(analysis: Any, variant: str) -> pd.Series:
    table = analysis.table.set_index("variant")
    return table.loc[variant]


def test_exposures_of_parses_served_impressions_of_the_experiment() -> None:
    events = clean_events_from_records(hand_log())

    exposures = exposures_of(events, EXP)

    assert tuple(exposures.columns) == EXPOSURE_COLUMNS
    assert len(exposures) == 9
    assert exposures["problem"].isna().all()
    assert set(exposures["request_id"]) == {"r1", "r2", "r3", "r4"}
    assert exposures.groupby("user_id")["variant"].first().to_dict() == {
        "u1": "control",
        "u2": "control",
        "u3": "treatment",
    }
    assert (exposures["model_version"] == "3").all()
    first = exposures.iloc[0]
    assert (first["user_id"], first["item_id"], first["position"], first["ts"]) == (
        "u1",
        "a",
        0,
        T0,
    )


def test_hand_built_log_gives_hand_computed_metrics() -> None:
    analysis = analyze_experiment(clean_events_from_records(hand_log()), EXP, "control")

    assert list(analysis.table["variant"]) == ["control", "treatment"]
    control, treatment = row(analysis, "control"), row(analysis, "treatment")
    assert (control["users"], control["requests"], control["impressions"]) == (2, 3, 7)
    assert (control["clicks"], control["workout_starts"], control["returned_users"]) == (2, 2, 1)
    assert control["ctr"] == pytest.approx(2 / 7)
    assert control["workout_starts_per_user"] == pytest.approx(1.0)
    assert control["return_rate_7d"] == pytest.approx(0.5)
    assert (treatment["users"], treatment["requests"], treatment["impressions"]) == (1, 1, 2)
    assert treatment["ctr"] == pytest.approx(1.0)
    assert treatment["workout_starts_per_user"] == pytest.approx(1.0)
    assert treatment["return_rate_7d"] == pytest.approx(1.0)
    assert treatment["ctr_diff"] == pytest.approx(1.0 - 2 / 7)
    assert treatment["workout_starts_per_user_diff"] == pytest.approx(0.0)
    assert treatment["return_rate_7d_diff"] == pytest.approx(0.5)
    for metric in METRICS:
        # One treatment user: every resample is that user, so the interval is the point.
        assert treatment[f"{metric}_lo"] == pytest.approx(treatment[metric])
        assert treatment[f"{metric}_hi"] == pytest.approx(treatment[metric])
        assert control[f"{metric}_lo"] <= control[metric] <= control[f"{metric}_hi"]
        assert np.isnan(control[f"{metric}_diff"])
    assert (analysis.mixed_users, analysis.malformed_exposures) == (0, 0)
    assert analysis.confidence == 0.95


def test_events_outside_the_horizon_do_not_count() -> None:
    analysis = analyze_experiment(
        clean_events_from_records(hand_log()), EXP, "control", horizon_days=1.0
    )

    control, treatment = row(analysis, "control"), row(analysis, "treatment")
    # u1's start at +2d and reopen at +3d, and u3's reopen at +7d, now fall outside.
    assert control["workout_starts_per_user"] == pytest.approx(0.5)
    assert control["return_rate_7d"] == pytest.approx(0.0)
    assert treatment["workout_starts_per_user"] == pytest.approx(1.0)
    assert treatment["return_rate_7d"] == pytest.approx(0.0)
    # CTR is attributed by request, not windowed.
    assert control["ctr"] == pytest.approx(2 / 7)


def test_user_in_two_variants_is_excluded_and_counted() -> None:
    log = [
        *hand_log(),
        *served("u5", "r5", ["a", "b"], T0, "control"),
        *served("u5", "r6", ["c"], T0 + DAY, "treatment"),
        event("click", "u5", T0, "a", "r5"),
        event("click", "u5", T0 + DAY, "c", "r6"),
        event("workout_start", "u5", T0 + HOUR, "a"),
    ]

    analysis = analyze_experiment(clean_events_from_records(log), EXP, "control")
    baseline = analyze_experiment(clean_events_from_records(hand_log()), EXP, "control")

    assert analysis.mixed_users == 1
    assert analysis.summary()["mixed_users"] == 1
    pd.testing.assert_frame_equal(analysis.table, baseline.table)


def test_malformed_payloads_are_returned_and_counted() -> None:
    log = [
        *hand_log(),
        {**event("impression", "u1", T0, "q", "r1"), "payload": "{not json"},
        {**event("impression", "u1", T0, "q", "r1"), "payload": payload(None)},
        {**event("impression", "u3", T0, "q", None), "payload": payload("treatment")},
    ]
    events = clean_events_from_records(log)

    exposures = exposures_of(events, EXP)
    analysis = analyze_experiment(events, EXP, "control")

    assert sorted(exposures["problem"].dropna()) == [
        "invalid_json",
        "missing_request_id",
        "missing_variant",
    ]
    assert analysis.malformed_exposures == 3
    baseline = analyze_experiment(clean_events_from_records(hand_log()), EXP, "control")
    pd.testing.assert_frame_equal(analysis.table, baseline.table)


def test_missing_experiment_or_control_raises() -> None:
    events = clean_events_from_records(hand_log())

    with pytest.raises(ValueError, match="no exposures of experiment 'nope'"):
        analyze_experiment(events, "nope", "control")
    with pytest.raises(ValueError, match=r"control 'baseline'.*found \['control', 'treatment'\]"):
        analyze_experiment(events, EXP, "baseline")


def simulated_log(
    rng: np.random.Generator, p_click: dict[str, float], users: int = 2000, feed: int = 5
) -> list[dict[str, Any]]:
    """``users`` users split evenly between the variants; one request of ``feed`` items each.

    Each impression is clicked with its variant's probability; starts (Poisson, mean 0.5) and
    returns (probability 0.4) are the same in every variant.
    """
    variants = list(p_click)
    log: list[dict[str, Any]] = []
    for u in range(users):
        variant = variants[u % len(variants)]
        user, request, ts = f"u{u}", f"r{u}", T0 + u * pd.Timedelta(seconds=30)
        items = [f"i{k}" for k in range(feed)]
        log += served(user, request, items, ts, variant)
        for item in items:
            if rng.random() < p_click[variant]:
                log.append(event("click", user, ts + HOUR, item, request))
        log += [event("workout_start", user, ts + DAY, "w")] * int(rng.poisson(0.5))
        if rng.random() < 0.4:
            log.append(event("app_open", user, ts + 2 * DAY))
    return log


def test_ab_with_a_real_ctr_lift_is_detected(rng: np.random.Generator) -> None:
    events = clean_events_from_records(simulated_log(rng, {"A": 0.05, "B": 0.10}))

    analysis = analyze_experiment(events, EXP, "A")

    b = row(analysis, "B")
    assert b["ctr_diff_lo"] > 0.0
    assert b["ctr_diff_lo"] <= 0.05 <= b["ctr_diff_hi"]
    assert row(analysis, "A")["ctr_lo"] <= 0.05 <= row(analysis, "A")["ctr_hi"]
    assert b["ctr_lo"] <= 0.10 <= b["ctr_hi"]
    assert (row(analysis, "A")["users"], b["users"]) == (1000, 1000)


def test_aa_difference_intervals_contain_zero(rng: np.random.Generator) -> None:
    events = clean_events_from_records(simulated_log(rng, {"A": 0.08, "B": 0.08}))

    analysis = analyze_experiment(events, EXP, "A")

    b = row(analysis, "B")
    for metric in METRICS:
        assert b[f"{metric}_diff_lo"] < 0.0 < b[f"{metric}_diff_hi"]


def test_intervals_resample_users_not_impressions() -> None:
    # Two users with 100 impressions each, one clicks all and one none: resampling users gives
    # CTR 0, 0.5 or 1 (probabilities 1/4, 1/2, 1/4), so the 95% interval is [0, 1]. Resampling
    # 200 independent impressions would give roughly 0.5 +- 0.07.
    log = [*served("u1", "r1", [f"i{k}" for k in range(100)], T0, "control")]
    log += [event("click", "u1", T0, f"i{k}", "r1") for k in range(100)]
    log += served("u2", "r2", [f"i{k}" for k in range(100)], T0, "control")
    log += served("u3", "r3", ["i0"], T0, "treatment")

    analysis = analyze_experiment(clean_events_from_records(log), EXP, "control")

    control = row(analysis, "control")
    assert control["ctr"] == pytest.approx(0.5)
    assert (control["ctr_lo"], control["ctr_hi"]) == (0.0, 1.0)


def test_bootstrap_is_seeded_and_summary_is_json_ready() -> None:
    events = clean_events_from_records(hand_log())

    first = analyze_experiment(events, EXP, "control", n_boot=200, seed=3)
    again = analyze_experiment(events, EXP, "control", n_boot=200, seed=3)

    pd.testing.assert_frame_equal(first.table, again.table)
    summary = json.loads(json.dumps(first.summary()))
    assert summary["n_boot"] == 200
    assert summary["users"] == 3
    assert summary["variants"]["treatment"]["ctr"] == pytest.approx(1.0)
    assert "ctr_diff" not in summary["variants"]["control"]
    assert summary["incomplete_horizon_users"] == 0


def test_scales_to_50k_users() -> None:
    rng = np.random.default_rng(11)
    users, feed = 50_000, 10
    user_ids = np.repeat([f"u{u}" for u in range(users)], feed)
    variant = np.where(np.arange(users) % 2 == 0, "control", "treatment")
    ts = T0 + pd.to_timedelta(rng.integers(0, 86_400, users), unit="s")
    impressions = pd.DataFrame(
        {
            "event_type": "impression",
            "user_id": user_ids,
            "ts": np.repeat(ts, feed),
            "item_id": np.tile([f"i{k}" for k in range(feed)], users),
            "request_id": np.repeat([f"r{u}" for u in range(users)], feed),
            "position": np.tile(np.arange(feed), users),
            "payload": np.repeat([payload(v) for v in variant], feed),
        }
    )
    clicks = impressions.loc[rng.random(len(impressions)) < 0.07].assign(
        event_type="click", payload=None
    )
    opens = pd.DataFrame(
        {"event_type": "app_open", "user_id": [f"u{u}" for u in range(users)], "ts": ts + DAY}
    )
    events = pd.concat([impressions, clicks, opens], ignore_index=True)
    events["event_id"] = [f"e{i}" for i in range(len(events))]
    events = events.reindex(columns=list(CLEAN_EVENT_COLUMNS))
    events["position"] = events["position"].astype("Int64")

    analysis = analyze_experiment(events, EXP, "control")

    assert analysis.table["users"].sum() == users
    assert analysis.table["return_rate_7d"].tolist() == [1.0, 1.0]
