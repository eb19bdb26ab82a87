"""The push policy: each guardrail on real features, their order, send times and the score."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.features.point_in_time import FeatureInputs
from fitpulse_orchestration.features.reference import load_catalog, load_profiles
from fitpulse_orchestration.features.snapshot import load_feature_inputs
from fitpulse_orchestration.push.examples import build_push_examples
from fitpulse_orchestration.push.features import (
    DAY_S,
    HOUR_S,
    PUSH_FEATURES,
    PushHistory,
    PushItem,
    local_time,
    push_features,
)
from fitpulse_orchestration.push.models import PushModelParams, train_push_classifier
from fitpulse_orchestration.push.policy import (
    GUARDRAILS,
    PushModels,
    PushPolicyParams,
    blocking_guardrails,
    earliest_send_time,
    expected_values,
)

if TYPE_CHECKING:
    from conftest import TinyWorld

TZ = "Europe/Berlin"
BERLIN = ZoneInfo(TZ)
PARAMS = PushPolicyParams()


def berlin(*args: int) -> float:
    """Epoch seconds of a Berlin wall-clock time."""
    return dt.datetime(*args, tzinfo=BERLIN).timestamp()


def _arr(*times: float) -> np.ndarray:
    return np.sort(np.asarray(times, dtype=float))


# Monday 2026-11-02 14:00 in Berlin: outside the default quiet hours (21-8).
AT = berlin(2026, 11, 2, 14)

SAFE = PushItem(
    item_id="wk_safe",
    item_type="workout",
    category="yoga",
    difficulty=0.0,
    intensity=0.0,
    duration_min=20.0,
    published=AT - 30 * DAY_S,
    unsafe_for_beginners=False,
)
UNSAFE = PushItem(
    item_id="wk_hiit",
    item_type="workout",
    category="hiit",
    difficulty=2.0,
    intensity=2.0,
    duration_min=30.0,
    published=AT - 30 * DAY_S,
    unsafe_for_beginners=True,
)


def history(**kwargs: object) -> PushHistory:
    base: dict[str, object] = {"fitness_level": "intermediate", "timezone": TZ}
    return PushHistory(**(base | kwargs))  # type: ignore[arg-type]


def blocked(
    hist: PushHistory,
    at: float,
    item: PushItem = SAFE,
    params: PushPolicyParams = PARAMS,
    **kwargs: np.ndarray,
) -> str | None:
    """The guardrail blocking one push, from features computed on ``hist``."""
    feats = push_features(hist, at, item)
    out = blocking_guardrails(
        feats,
        np.array([hist.notifications_off(at)]),
        np.array([hist.is_beginner]),
        np.array([item.unsafe_for_beginners]),
        params,
        **kwargs,
    )
    assert out.shape == (1,)
    return out[0]


# --- each guardrail --------------------------------------------------------------------------


def test_a_clean_push_passes() -> None:
    assert blocked(history(), AT) is None
    assert blocked(history(), AT, UNSAFE) is None  # intermediate users may get any content


def test_opted_out() -> None:
    assert blocked(history(opted_out=True), AT) == "opted_out"
    assert blocked(history(disabled_at=AT - DAY_S), AT) == "opted_out"
    assert blocked(history(disabled_at=AT), AT) == "opted_out"
    assert blocked(history(disabled_at=AT + 60), AT) is None  # switched off later


def test_unsafe_for_beginner() -> None:
    assert blocked(history(fitness_level="beginner"), AT, UNSAFE) == "unsafe_for_beginner"
    assert blocked(history(fitness_level="unknown"), AT, UNSAFE) == "unsafe_for_beginner"
    assert blocked(history(fitness_level="beginner"), AT, SAFE) is None
    assert blocked(history(fitness_level="unknown"), AT, SAFE) is None
    assert blocked(history(fitness_level="intermediate"), AT, UNSAFE) is None
    assert blocked(history(fitness_level="advanced"), AT, UNSAFE) is None


def test_quiet_hours_in_the_users_local_time() -> None:
    night = berlin(2026, 11, 2, 23, 30)  # 22:30 UTC
    assert blocked(history(), night) == "quiet_hours"
    assert blocked(history(), berlin(2026, 11, 2, 10)) is None
    assert blocked(history(), berlin(2026, 11, 2, 7, 59)) == "quiet_hours"
    assert blocked(history(), berlin(2026, 11, 2, 8)) is None
    assert blocked(history(), berlin(2026, 11, 2, 20, 59)) is None
    assert blocked(history(), berlin(2026, 11, 2, 21)) == "quiet_hours"
    # The same instant in New York is 17:30: not quiet there.
    assert blocked(history(timezone="America/New_York"), night) is None


def test_quiet_hours_wrap_midnight_or_not() -> None:
    hours = np.arange(24)
    wrapping = PushPolicyParams(quiet_start_hour=22, quiet_end_hour=6).is_quiet(hours)
    assert list(hours[wrapping]) == [0, 1, 2, 3, 4, 5, 22, 23]
    inside = PushPolicyParams(quiet_start_hour=1, quiet_end_hour=5).is_quiet(hours)
    assert list(hours[inside]) == [1, 2, 3, 4]
    none = PushPolicyParams(quiet_start_hour=7, quiet_end_hour=7).is_quiet(hours)
    assert not none.any()
    # Through the guardrail: 03:30 Berlin with quiet 1-5 blocks, with 7-7 passes.
    early = berlin(2026, 11, 2, 3, 30)
    lunch = PushPolicyParams(quiet_start_hour=1, quiet_end_hour=5)
    assert blocked(history(), early, params=lunch) == "quiet_hours"
    assert blocked(history(), berlin(2026, 11, 2, 23, 30), params=lunch) is None
    never = PushPolicyParams(quiet_start_hour=7, quiet_end_hour=7)
    assert blocked(history(), early, params=never) is None


def test_recent_app_open() -> None:
    assert blocked(history(app_opens=_arr(AT - HOUR_S)), AT) == "recent_app_open"
    assert blocked(history(app_opens=_arr(AT - 4 * HOUR_S)), AT) is None
    assert blocked(history(app_opens=_arr(AT - 3 * HOUR_S)), AT) is None  # exactly the cool-down
    no_cooldown = PushPolicyParams(app_open_cooldown_h=0.0)
    assert blocked(history(app_opens=_arr(AT - 60)), AT, params=no_cooldown) is None
    # An open at the decision time itself is not in the features (strictly before).
    assert blocked(history(app_opens=_arr(AT)), AT) is None


def test_daily_cap() -> None:
    one_today = history(sent=_arr(AT - 3 * HOUR_S))
    assert blocked(one_today, AT) == "daily_cap"
    assert blocked(one_today, AT, params=PushPolicyParams(per_day=2, per_week=3)) is None
    assert blocked(history(sent=_arr(AT - 25 * HOUR_S)), AT) is None


def test_weekly_cap() -> None:
    three_days = history(sent=_arr(AT - 25 * HOUR_S, AT - 49 * HOUR_S, AT - 73 * HOUR_S))
    assert blocked(three_days, AT) == "weekly_cap"
    assert blocked(three_days, AT, params=PushPolicyParams(per_day=1, per_week=4)) is None
    two = history(sent=_arr(AT - 25 * HOUR_S, AT - 49 * HOUR_S, AT - 8 * DAY_S))
    assert blocked(two, AT) is None


def test_explicit_send_counts_override_the_history() -> None:
    capped = history(sent=_arr(AT - 3 * HOUR_S, AT - 25 * HOUR_S, AT - 49 * HOUR_S))
    assert blocked(capped, AT) == "daily_cap"
    zero = np.array([0])
    assert blocked(capped, AT, sends_day=zero, sends_week=zero) is None
    assert blocked(capped, AT, sends_day=zero) == "weekly_cap"
    clean = history()
    assert blocked(clean, AT, sends_day=np.array([1])) == "daily_cap"
    assert blocked(clean, AT, sends_day=zero, sends_week=np.array([3])) == "weekly_cap"
    assert blocked(clean, AT, sends_day=zero, sends_week=np.array([2])) is None


def test_the_first_guardrail_in_order_is_reported() -> None:
    night = berlin(2026, 11, 2, 23, 30)
    evening = berlin(2026, 11, 2, 20, 30)
    worst = {
        "opted_out": True,
        "fitness_level": "beginner",
        "app_opens": _arr(evening - HOUR_S, night - HOUR_S),
        "sent": _arr(evening - 2 * HOUR_S, evening - 26 * HOUR_S, evening - 50 * HOUR_S),
    }
    opted_in = worst | {"opted_out": False}
    after_open = opted_in | {"app_opens": _arr(evening - 4 * HOUR_S)}
    weekly_only = after_open | {
        "sent": _arr(evening - 26 * HOUR_S, evening - 50 * HOUR_S, evening - 74 * HOUR_S)
    }
    # Remove the causes one at a time, in GUARDRAILS order; each time the next one shows.
    steps = [
        (worst, night, UNSAFE),
        (opted_in, night, UNSAFE),
        (opted_in, night, SAFE),
        (opted_in, evening, SAFE),
        (after_open, evening, SAFE),
        (weekly_only, evening, SAFE),
    ]
    got = [blocked(history(**h), at, item) for h, at, item in steps]
    assert got == list(GUARDRAILS)
    # Vectorised: the same answers row by row.
    rows = [(history(**h), at, item) for h, at, item in steps]
    rows.append((history(), AT, SAFE))
    out = blocking_guardrails(
        np.array([push_features(h, at, item) for h, at, item in rows]),
        np.array([h.notifications_off(at) for h, at, _ in rows]),
        np.array([h.is_beginner for h, _, _ in rows]),
        np.array([item.unsafe_for_beginners for _, _, item in rows]),
        PARAMS,
    )
    assert list(out) == [*GUARDRAILS, None]


# --- the earliest send time ------------------------------------------------------------------


def _local(t: float) -> dt.datetime:
    return local_time(t, TZ)


def test_earliest_send_after_quiet_hours_is_the_next_morning() -> None:
    at = berlin(2026, 11, 2, 23, 30)
    t = earliest_send_time(history(), at, PARAMS, np.empty(0))
    assert t == berlin(2026, 11, 3, 8)
    assert earliest_send_time(history(), berlin(2026, 11, 3, 2, 15), PARAMS, np.empty(0)) == t
    assert earliest_send_time(history(), AT, PARAMS, np.empty(0)) == AT  # nothing blocks


def test_earliest_send_after_quiet_hours_across_the_spring_dst_switch() -> None:
    # Clocks jump 02:00 -> 03:00 in Berlin on Sunday 2027-03-28.
    at = berlin(2027, 3, 27, 23, 30)
    assert earliest_send_time(history(), at, PARAMS, np.empty(0)) == berlin(2027, 3, 28, 8)


def test_earliest_send_after_quiet_hours_across_the_autumn_dst_switch() -> None:
    # Clocks go back 03:00 -> 02:00 in Berlin on Sunday 2026-10-25.
    at = berlin(2026, 10, 24, 23, 30)
    assert earliest_send_time(history(), at, PARAMS, np.empty(0)) == berlin(2026, 10, 25, 8)


def test_earliest_send_after_an_app_open() -> None:
    opened = AT - HOUR_S  # 13:00
    t = earliest_send_time(history(app_opens=_arr(opened)), AT, PARAMS, np.empty(0))
    assert t == opened + 3 * HOUR_S
    # 19:00 + 3 h = 22:00 is quiet: the next morning at 08:00.
    evening = berlin(2026, 11, 2, 19)
    t = earliest_send_time(history(app_opens=_arr(evening)), evening + 1800, PARAMS, np.empty(0))
    assert t == berlin(2026, 11, 3, 8)


def test_earliest_send_after_the_daily_cap() -> None:
    sent = AT - 3 * HOUR_S  # 11:00
    t = earliest_send_time(history(sent=_arr(sent)), AT, PARAMS, _arr(sent))
    assert t == sent + DAY_S + 1.0
    assert (_local(t).hour, _local(t).minute, _local(t).second) == (11, 0, 1)
    # Sent at 07:30 (a quiet hour, e.g. a manual send): 24 h later is still quiet -> 08:00.
    early = berlin(2026, 11, 2, 7, 30)
    t = earliest_send_time(history(sent=_arr(early)), AT, PARAMS, _arr(early))
    assert t == berlin(2026, 11, 3, 8)


def test_earliest_send_after_the_weekly_cap() -> None:
    sends = _arr(AT - 25 * HOUR_S, AT - 49 * HOUR_S, AT - 73 * HOUR_S)
    t = earliest_send_time(history(sent=sends), AT, PARAMS, sends)
    assert t == sends[0] + 7 * DAY_S + 1.0


def _time_guardrail(hist: PushHistory, t: float, params: PushPolicyParams) -> str | None:
    return blocking_guardrails(
        push_features(hist, t, SAFE),
        np.array([False]),
        np.array([False]),
        np.array([False]),
        params,
    )[0]


@pytest.mark.parametrize(
    "params",
    [
        PARAMS,
        PushPolicyParams(per_day=2, per_week=4, quiet_start_hour=22, quiet_end_hour=7),
        PushPolicyParams(per_day=1, per_week=2, quiet_start_hour=1, quiet_end_hour=9),
        PushPolicyParams(app_open_cooldown_h=6.0, quiet_start_hour=12, quiet_end_hour=12),
    ],
)
def test_earliest_send_time_is_never_blocked_by_a_time_guardrail(
    params: PushPolicyParams,
) -> None:
    rng = np.random.default_rng(3)
    base = berlin(2026, 11, 2)
    checked = moved = 0
    for _ in range(150):
        at = base + float(rng.integers(0, 14 * 86400))
        sends = _arr(*(at - rng.integers(1, 8 * 86400, size=rng.integers(0, 6))))
        opens = _arr(*(at - rng.integers(1, 8 * 3600, size=rng.integers(0, 3))))
        hist = history(sent=sends, app_opens=opens)
        t = earliest_send_time(hist, at, params, sends)
        assert t >= at
        assert _time_guardrail(hist, t, params) is None, (at, t, _local(t))
        checked += 1
        moved += t > at
    assert checked == 150
    assert 10 < moved < 150


# --- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fatigue_weight": -0.1}, "fatigue_weight"),
        ({"quiet_start_hour": 24}, "quiet hours"),
        ({"quiet_end_hour": 24}, "quiet hours"),
        ({"quiet_start_hour": -1}, "quiet hours"),
        ({"app_open_cooldown_h": -1.0}, "app_open_cooldown_h"),
        ({"per_day": 4, "per_week": 3}, "per_day"),
        ({"per_day": -1}, "per_day"),
    ],
)
def test_params_validation(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PushPolicyParams(**kwargs)  # type: ignore[arg-type]


def test_params_defaults_and_values() -> None:
    assert PARAMS.caps.per_day == 1
    assert PARAMS.caps.per_week == 3
    assert PushPolicyParams(per_day=0, per_week=0).caps.per_week == 0
    np.testing.assert_array_equal(
        PARAMS.value_of(["workout", "plan", "video", "article", "podcast"]),
        [1.0, 1.2, 0.6, 0.4, 0.0],
    )


# --- the score on real models ----------------------------------------------------------------


@pytest.fixture(scope="module")
def scored(tiny_world: TinyWorld) -> tuple[PushModels, pd.DataFrame, list[str]]:
    store = tiny_world.store
    inputs: FeatureInputs = load_feature_inputs(
        store, load_catalog(store), load_profiles(store, tiny_world.pseudonymizer)
    )
    examples, _ = build_push_examples(inputs)
    params = PushModelParams(n_estimators=30, min_child_samples=10)
    open_model, _ = train_push_classifier(examples, "open", params)
    fatigue_model, _ = train_push_classifier(examples, "fatigue", params)
    rows = examples.sample(n=300, random_state=5)
    types = inputs.catalog.set_index("item_id")["item_type"]
    item_types = [str(types.get(i, "unknown")) for i in rows["item_id"]]
    return PushModels(open_model, fatigue_model), rows, item_types


def test_expected_value_is_value_times_open_minus_weighted_fatigue(
    scored: tuple[PushModels, pd.DataFrame, list[str]],
) -> None:
    models, rows, item_types = scored
    x = rows[list(PUSH_FEATURES)].to_numpy(float)
    params = PushPolicyParams(fatigue_weight=2.5)
    p_open, p_fatigue, ev = expected_values(models, x, item_types, params)
    np.testing.assert_array_equal(p_open, models.open_model.predict(x))
    np.testing.assert_array_equal(p_fatigue, models.fatigue_model.predict(x))
    assert p_open.shape == p_fatigue.shape == ev.shape == (len(rows),)
    assert ((p_open >= 0) & (p_open <= 1)).all()
    assert ((p_fatigue >= 0) & (p_fatigue <= 1)).all()
    assert np.ptp(p_open) > 0
    assert (p_fatigue > 0).any()
    value = np.array(
        [
            {"workout": 1.0, "plan": 1.2, "video": 0.6, "article": 0.4}.get(t, 0.0)
            for t in item_types
        ]
    )
    np.testing.assert_array_equal(ev, p_open * value - 2.5 * p_fatigue)


def test_raising_the_fatigue_weight_never_raises_the_expected_value(
    scored: tuple[PushModels, pd.DataFrame, list[str]],
) -> None:
    models, rows, item_types = scored
    x = rows[list(PUSH_FEATURES)].to_numpy(float)
    evs = [
        expected_values(models, x, item_types, PushPolicyParams(fatigue_weight=w))[2]
        for w in (0.0, 0.5, 1.0, 2.0, 10.0)
    ]
    for lower, higher in itertools.pairwise(evs):
        assert (higher <= lower).all()
    assert (evs[-1] < evs[0]).any()
    # With no fatigue weight the score is the expected content value of an open.
    p_open = models.open_model.predict(x)
    np.testing.assert_array_equal(evs[0], p_open * PARAMS.value_of(item_types))
