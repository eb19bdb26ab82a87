from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from audit_keys import AUDIT_KEY

from fitpulse_orchestration.serving.rollout import (
    ArmMetrics,
    Guardrails,
    RolloutConfig,
    RolloutController,
    RolloutState,
    arm_metrics,
    breaches,
    load_rollout_config,
    rate_rises,
    served_split,
)
from fitpulse_orchestration.storage import LocalObjectStore

USERS = [f"usr_{i:07d}" for i in range(2_000)]

EXAMPLE = """
[rollout]
name = "ranker-v7"
challenger_version = "7"
steps = [0.01, 0.1, 1.0]

[rollout.guardrails]
max_fallback_rise = 0.05
min_requests = 100
"""

# A healthy arm: big enough that a real rise is significant.
GOOD = ArmMetrics(
    requests=10_000,
    users=2_000,
    empty_feed_rate=0.01,
    fallback_rate=0.01,
    p99_ms=100.0,
    disable_rate=0.01,
    beginner_violations=0,
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rollout.toml"
    path.write_text(text)
    return path


def _controller(tmp_path: Path) -> tuple[LocalObjectStore, RolloutController]:
    store = LocalObjectStore(tmp_path / "store")
    return store, RolloutController(store, AUDIT_KEY)


def test_default_config_is_valid() -> None:
    config = RolloutConfig("r", "7")

    assert config.steps == (0.01, 0.05, 0.25, 1.0)
    assert config.guardrails == Guardrails()


def test_a_single_full_step_is_valid() -> None:
    assert RolloutConfig("r", "7", steps=(1.0,)).steps == (1.0,)


@pytest.mark.parametrize(("name", "version"), [("", "7"), ("r", ""), ("", "")])
def test_config_needs_a_name_and_a_version(name: str, version: str) -> None:
    with pytest.raises(ValueError, match="needs a name and a challenger version"):
        RolloutConfig(name, version)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((0.05, 0.01, 1.0), "increase strictly and end at 1.0"),
        ((0.05, 0.05, 1.0), "increase strictly and end at 1.0"),
        ((0.01, 0.5), "increase strictly and end at 1.0"),
        ((0.0, 1.0), r"shares in \(0, 1\]"),
        ((-0.1, 1.0), r"shares in \(0, 1\]"),
        ((0.5, 1.5), r"shares in \(0, 1\]"),
        ((), r"shares in \(0, 1\]"),
    ],
)
def test_config_refuses_bad_steps(steps: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RolloutConfig("r", "7", steps=steps)


def test_example_file_loads(tmp_path: Path) -> None:
    config = load_rollout_config(_write(tmp_path, EXAMPLE))

    assert config == RolloutConfig(
        name="ranker-v7",
        challenger_version="7",
        steps=(0.01, 0.1, 1.0),
        guardrails=Guardrails(max_fallback_rise=0.05, min_requests=100),
    )


def test_file_without_steps_or_guardrails_takes_the_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, '[rollout]\nname = "r"\nchallenger_version = 7\n')

    config = load_rollout_config(path)

    assert config == RolloutConfig("r", "7")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            EXAMPLE.replace("min_requests = 100", "min_request = 100"),
            r"unknown guardrails \['min_request'\]",
        ),
        ('title = "no rollout"\n', r"expected a \[rollout\] table"),
        ("rollout = 3\n", r"expected a \[rollout\] table"),
        (EXAMPLE.replace("steps = [0.01", "steps = 0.01"), "cannot read rollout file"),
        (EXAMPLE.replace('name = "ranker-v7"\n', ""), "needs a name and a challenger version"),
        (EXAMPLE.replace("[0.01, 0.1, 1.0]", "[0.1, 0.01, 1.0]"), "increase strictly"),
        (EXAMPLE.replace("[0.01, 0.1, 1.0]", '["a", 1.0]'), "could not convert"),
        (EXAMPLE.replace("[0.01, 0.1, 1.0]", "0.5"), "not iterable"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)

    with pytest.raises(ValueError, match=message) as raised:
        load_rollout_config(path)

    assert str(path) in str(raised.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    with pytest.raises(ValueError, match="cannot read rollout file") as raised:
        load_rollout_config(path)

    assert str(path) in str(raised.value)


@pytest.mark.parametrize("value", ["5", '"ab"'])
def test_a_guardrails_value_that_is_not_a_table_is_refused(tmp_path: Path, value: str) -> None:
    path = _write(
        tmp_path, f'[rollout]\nname = "r"\nchallenger_version = "7"\nguardrails = {value}\n'
    )

    with pytest.raises(ValueError, match="guardrails") as raised:
        load_rollout_config(path)

    assert str(path) in str(raised.value)


def test_a_non_numeric_guardrail_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, EXAMPLE.replace("max_fallback_rise = 0.05", 'max_fallback_rise = "x"'))

    with pytest.raises(ValueError, match="max_fallback_rise") as raised:
        load_rollout_config(path)

    assert str(path) in str(raised.value)


def test_a_rise_within_the_tolerance_is_not_flagged() -> None:
    assert not rate_rises(0.105, 100_000, 0.10, 100_000, tol=0.01)
    assert not rate_rises(0.10, 100_000, 0.10, 100_000, tol=0.0)
    assert not rate_rises(0.05, 100_000, 0.10, 100_000, tol=0.01)


def test_a_large_significant_rise_is_flagged() -> None:
    assert rate_rises(0.30, 10_000, 0.10, 10_000, tol=0.01)


def test_a_small_sample_rise_is_noise_where_a_large_sample_one_is_not() -> None:
    # Same rates, same tolerance: z = 0.04 / sd. sd ~ 0.066 at 50 + 50 (z ~ 0.6),
    # ~ 0.0033 at 20000 + 20000 (z ~ 12).
    assert rate_rises(0.15, 20_000, 0.10, 20_000, tol=0.01)
    assert not rate_rises(0.15, 50, 0.10, 50, tol=0.01)


def test_z_threshold_is_one_sided_95() -> None:
    # pooled 0.5, variance 0.25 * 2 / n, sd = sqrt(0.5 / n); excess = 0.1 - tol.
    n = 200  # sd = 0.05
    assert rate_rises(0.55, n, 0.45, n, tol=0.1 - 0.05 * 1.7)  # z = 1.7
    assert not rate_rises(0.55, n, 0.45, n, tol=0.1 - 0.05 * 1.6)  # z = 1.6


def test_no_canary_requests_is_no_rise() -> None:
    assert not rate_rises(0.9, 0, 0.0, 10_000, tol=0.01)


def test_a_canary_equal_to_the_control_breaks_nothing() -> None:
    assert breaches(GOOD, GOOD, Guardrails()) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"empty_feed_rate": 0.05}, "empty feeds 0.050 > control 0.010 + 0.01 (significant)"),
        ({"fallback_rate": 0.10}, "fallbacks 0.100 > control 0.010 + 0.02 (significant)"),
        ({"disable_rate": 0.10}, "disables 0.100 > control 0.010 + 0.02 (significant)"),
        ({"p99_ms": 155.5}, "latency p99 155.5 ms > 155.0 ms"),
        ({"beginner_violations": 1}, "beginner-safety violations 1"),
    ],
)
def test_each_guardrail_breaks_on_its_own(change: dict[str, Any], expected: str) -> None:
    canary = replace(GOOD, **change)

    assert breaches(GOOD, canary, Guardrails()) == [expected]


@pytest.mark.parametrize(
    "change",
    [
        {"empty_feed_rate": 0.015},  # within max_empty_feed_rise 0.01
        {"fallback_rate": 0.025},  # within max_fallback_rise 0.02
        {"disable_rate": 0.025},  # within max_disable_rise 0.02
        {"p99_ms": 155.0},  # exactly 100 x 1.5 + 5
    ],
)
def test_changes_within_the_guardrails_break_nothing(change: dict[str, Any]) -> None:
    assert breaches(GOOD, replace(GOOD, **change), Guardrails()) == []


def test_disables_are_judged_on_users_not_requests() -> None:
    # Same rates: significant with 2000 users per arm, noise with 20.
    control = replace(GOOD, users=20)
    canary = replace(GOOD, users=20, disable_rate=0.10)

    assert breaches(control, canary, Guardrails()) == []
    assert len(breaches(GOOD, replace(GOOD, disable_rate=0.10), Guardrails())) == 1


def test_guardrail_settings_are_applied() -> None:
    canary = replace(GOOD, p99_ms=250.0, beginner_violations=2)

    loose = Guardrails(max_p99_ratio=2.0, p99_slack_ms=50.0, max_beginner_violations=2)

    assert breaches(GOOD, canary, loose) == []
    assert breaches(GOOD, canary, Guardrails()) == [
        "latency p99 250.0 ms > 155.0 ms",
        "beginner-safety violations 2",
    ]


def test_arm_metrics_of_a_small_frame() -> None:
    latencies = [10.0, 20.0, 30.0, 40.0, 50.0]
    exposures = pd.DataFrame(
        {
            "user": ["a", "a", "b", "c", "d"],
            "items": [20, 0, 20, 0, 20],
            "fallback": [None, "popularity", None, "popularity", None],
            "latency_ms": latencies,
            "unsafe_shown": [0, 2, 0, 1, 0],
        }
    )

    metrics = arm_metrics(exposures, disabled_users={"b", "someone-else"})

    assert metrics == ArmMetrics(
        requests=5,
        users=4,
        empty_feed_rate=0.4,
        fallback_rate=0.4,
        p99_ms=float(np.percentile(latencies, 99)),
        disable_rate=0.25,
        beginner_violations=3,
    )
    assert metrics.p99_ms == pytest.approx(49.6)


def test_arm_metrics_of_no_requests_are_zero() -> None:
    exposures = pd.DataFrame(
        {
            "user": pd.Series([], dtype=object),
            "items": pd.Series([], dtype=int),
            "fallback": pd.Series([], dtype=object),
            "latency_ms": pd.Series([], dtype=float),
            "unsafe_shown": pd.Series([], dtype=int),
        }
    )

    assert arm_metrics(exposures, {"a"}) == ArmMetrics(0, 0, 0.0, 0.0, 0.0, 0.0, 0)


def _state(step: int, status: str = "running") -> RolloutState:
    return RolloutState(RolloutConfig("r", "7", steps=(0.05, 0.25, 1.0)), status, step)


@pytest.mark.parametrize(("step", "status"), [(-1, "running"), (1, "rolled_back"), (2, "killed")])
def test_no_share_means_no_experiment(step: int, status: str) -> None:
    state = _state(step, status)

    assert state.share == 0.0
    assert state.experiment() is None


def test_a_partial_step_splits_canary_and_control() -> None:
    experiment = _state(0).experiment()

    assert experiment is not None
    assert experiment.name == experiment.salt == "rollout-r"
    assert [(v.name, v.share, v.model_alias) for v in experiment.variants] == [
        ("canary", 0.05, "challenger"),
        ("control", 0.95, "champion"),
    ]


def test_the_full_step_sends_everyone_to_the_canary() -> None:
    experiment = _state(2).experiment()

    assert experiment is not None
    assert [(v.name, v.share, v.model_alias) for v in experiment.variants] == [
        ("canary", 1.0, "challenger")
    ]
    assert {experiment.assign(u).variant for u in USERS[:200]} == {"canary"}


def test_canary_users_stay_in_the_canary_as_the_share_grows() -> None:
    at_5, at_25 = _state(0).experiment(), _state(1).experiment()
    assert at_5 is not None
    assert at_25 is not None

    canary_5 = {u for u in USERS if at_5.assign(u).variant == "canary"}
    canary_25 = {u for u in USERS if at_25.assign(u).variant == "canary"}

    assert canary_5 <= canary_25
    # Binomial(2000, p) within 4.5 sd.
    for users, share in ((canary_5, 0.05), (canary_25, 0.25)):
        sd = (len(USERS) * share * (1 - share)) ** 0.5
        assert abs(len(users) - len(USERS) * share) <= 4.5 * sd, len(users)


def test_state_round_trips_through_json() -> None:
    config = RolloutConfig(
        "r", "7", steps=(0.1, 0.5, 1.0), guardrails=Guardrails(max_p99_ratio=2.0, min_requests=9)
    )
    state = RolloutState(config, status="rolled_back", step=1, reason="fallbacks 0.5 > 0.0")

    back = RolloutState.from_json(state.to_json())

    assert back == state
    assert back.config.steps == (0.1, 0.5, 1.0)
    assert isinstance(back.config.guardrails, Guardrails)


def _config(name: str = "ranker-v7", min_step_hours: float = 0.0) -> RolloutConfig:
    return RolloutConfig(name, "7", steps=(0.01, 0.05, 0.25, 1.0), min_step_hours=min_step_hours)


def test_start_stores_the_first_step(tmp_path: Path) -> None:
    store, controller = _controller(tmp_path)

    state = controller.start(_config(), "alice")

    assert (state.status, state.step, state.share) == ("running", 0, 0.01)
    assert controller.state("ranker-v7") == state
    assert store.exists(RolloutController(store, AUDIT_KEY).key("ranker-v7"))
    assert RolloutController(store, AUDIT_KEY).key("ranker-v7") == "serving/rollouts/ranker-v7.json"


def test_good_reviews_advance_step_by_step_to_completion(tmp_path: Path) -> None:
    _, controller = _controller(tmp_path)
    controller.start(_config(), "alice")

    reviews = [controller.review("ranker-v7", GOOD, GOOD) for _ in range(4)]

    assert [(r.action, r.share, r.breaches) for r in reviews] == [
        ("advance", 0.01, []),
        ("advance", 0.05, []),
        ("advance", 0.25, []),
        ("complete", 1.0, []),
    ]
    state = controller.state("ranker-v7")
    assert (state.status, state.step, state.share) == ("completed", 3, 1.0)
    experiment = state.experiment()
    assert experiment is not None
    assert [v.name for v in experiment.variants] == ["canary"]
    with pytest.raises(ValueError, match="is completed, not running"):
        controller.review("ranker-v7", GOOD, GOOD)


def test_too_few_canary_requests_hold_the_step(tmp_path: Path) -> None:
    _, controller = _controller(tmp_path)
    controller.start(_config(), "alice")
    controller.review("ranker-v7", GOOD, GOOD)
    few = replace(GOOD, requests=Guardrails().min_requests - 1)

    review = controller.review("ranker-v7", GOOD, few)

    assert (review.action, review.share) == ("hold", 0.05)
    state = controller.state("ranker-v7")
    assert (state.status, state.step) == ("running", 1)
    assert controller.review("ranker-v7", GOOD, replace(GOOD, requests=50)).action == "advance"


def test_a_breach_rolls_back_and_halts(tmp_path: Path) -> None:
    _, controller = _controller(tmp_path)
    controller.start(_config(), "alice")
    controller.review("ranker-v7", GOOD, GOOD)

    review = controller.review("ranker-v7", GOOD, replace(GOOD, fallback_rate=0.5))

    assert (review.action, review.share) == ("rollback", 0.05)
    assert review.breaches == ["fallbacks 0.500 > control 0.010 + 0.02 (significant)"]
    state = controller.state("ranker-v7")
    assert state.status == "rolled_back"
    assert state.share == 0.0
    assert state.experiment() is None
    assert state.reason == review.breaches[0]
    with pytest.raises(ValueError, match="is rolled_back, not running"):
        controller.review("ranker-v7", GOOD, GOOD)


def test_a_breach_with_few_requests_still_rolls_back(tmp_path: Path) -> None:
    _, controller = _controller(tmp_path)
    controller.start(_config(), "alice")

    review = controller.review("ranker-v7", GOOD, replace(GOOD, requests=3, beginner_violations=1))

    assert review.action == "rollback"


def test_kill_switch_stops_a_running_rollout(tmp_path: Path) -> None:
    _, controller = _controller(tmp_path)
    controller.start(_config(), "alice")
    controller.review("ranker-v7", GOOD, GOOD)

    state = controller.kill("ranker-v7", "bob", "support tickets about empty feeds")

    assert (state.status, state.share, state.reason) == (
        "killed",
        0.0,
        "support tickets about empty feeds",
    )
    assert state.experiment() is None
    assert controller.state("ranker-v7") == state
    with pytest.raises(ValueError, match="is killed, not running"):
        controller.review("ranker-v7", GOOD, GOOD)


@pytest.mark.parametrize("reason", ["", "   "])
def test_kill_switch_needs_a_reason(tmp_path: Path, reason: str) -> None:
    _, controller = _controller(tmp_path)
    controller.start(_config(), "alice")

    with pytest.raises(ValueError, match="needs a reason"):
        controller.kill("ranker-v7", "bob", reason)

    assert controller.state("ranker-v7").status == "running"
    assert [e.action for e in controller.history("ranker-v7")] == ["start"]


def test_a_running_rollout_cannot_be_started_again(tmp_path: Path) -> None:
    _, controller = _controller(tmp_path)
    controller.start(_config(), "alice")
    controller.review("ranker-v7", GOOD, GOOD)

    with pytest.raises(ValueError, match="already running"):
        controller.start(_config(), "alice")

    assert controller.state("ranker-v7").step == 1


def test_a_rolled_back_rollout_may_restart(tmp_path: Path) -> None:
    _, controller = _controller(tmp_path)
    controller.start(_config(), "alice")
    controller.review("ranker-v7", GOOD, replace(GOOD, beginner_violations=3))

    state = controller.start(_config(), "alice")

    assert (state.status, state.step, state.share) == ("running", 0, 0.01)
    assert controller.state("ranker-v7") == state


def test_a_killed_rollout_may_restart(tmp_path: Path) -> None:
    _, controller = _controller(tmp_path)
    controller.start(_config(), "alice")
    controller.kill("ranker-v7", "bob", "pager")

    assert controller.start(_config(), "alice").status == "running"


def test_start_needs_an_actor(tmp_path: Path) -> None:
    _, controller = _controller(tmp_path)

    with pytest.raises(ValueError, match="needs an actor"):
        controller.start(_config(), "  ")

    with pytest.raises(KeyError):
        controller.state("ranker-v7")


def test_unknown_rollouts_raise_key_error(tmp_path: Path) -> None:
    _, controller = _controller(tmp_path)

    with pytest.raises(KeyError, match="no rollout named 'nope'"):
        controller.state("nope")
    with pytest.raises(KeyError):
        controller.review("nope", GOOD, GOOD)
    with pytest.raises(KeyError):
        controller.kill("nope", "bob", "reason")
    assert controller.history("nope") == []


def test_every_action_is_audited_in_order(tmp_path: Path) -> None:
    store, controller = _controller(tmp_path)
    controller.start(_config(), "alice")
    controller.review("ranker-v7", GOOD, GOOD)
    controller.review("ranker-v7", GOOD, replace(GOOD, requests=10), actor="carol")
    controller.review("ranker-v7", GOOD, replace(GOOD, p99_ms=400.0))
    controller.start(_config(), "alice")
    controller.kill("ranker-v7", "bob", "pager went off")

    history = controller.history("ranker-v7")

    assert [(e.action, e.actor) for e in history] == [
        ("start", "alice"),
        ("advance", "rollout-controller"),
        ("hold", "carol"),
        ("rollback", "rollout-controller"),
        ("start", "alice"),
        ("kill", "bob"),
    ]
    assert {e.model for e in history} == {"ranker-v7"}
    assert {e.version for e in history} == {"7"}
    start, advance, hold, rollback, _, kill = history
    assert start.details["steps"] == [0.01, 0.05, 0.25, 1.0]
    assert start.details["guardrails"]["min_requests"] == 50
    assert (advance.details["share"], advance.details["next_share"]) == (0.01, 0.05)
    assert (hold.details["share"], hold.details["next_share"]) == (0.05, 0.05)
    assert hold.details["canary"]["requests"] == 10
    assert (rollback.details["share"], rollback.details["next_share"]) == (0.05, 0.0)
    assert rollback.note == "latency p99 400.0 ms > 155.0 ms"
    assert kill.note == "pager went off"
    assert kill.details == {"share_before": 0.01}

    keys = store.list_keys("audit/")
    assert len(keys) == len(history)
    assert all(k.startswith("audit/rollout/ranker-v7/") for k in keys)


def test_histories_of_two_rollouts_are_separate(tmp_path: Path) -> None:
    store, controller = _controller(tmp_path)
    controller.start(_config("a"), "alice")
    controller.start(_config("a-b"), "alice")
    controller.review("a-b", GOOD, GOOD)

    assert [e.action for e in controller.history("a")] == ["start"]
    assert [e.action for e in controller.history("a-b")] == ["start", "advance"]
    assert controller.state("a").step == 0
    assert len(store.list_keys("audit/rollout/a/")) == 1


def test_a_step_holds_until_it_has_lasted_min_step_hours(tmp_path: Path) -> None:
    controller = RolloutController(LocalObjectStore(tmp_path), AUDIT_KEY)
    start = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
    controller.start(_config(min_step_hours=24.0), "alice", now=start)
    good = GOOD

    early = controller.review("ranker-v7", good, good, now=start + dt.timedelta(hours=23))
    on_time = controller.review("ranker-v7", good, good, now=start + dt.timedelta(hours=24))
    next_step = controller.state("ranker-v7")
    too_soon = controller.review("ranker-v7", good, good, now=start + dt.timedelta(hours=30))

    assert (early.action, on_time.action, too_soon.action) == ("hold", "advance", "hold")
    assert next_step.step_started_at == (start + dt.timedelta(hours=24)).isoformat()
    assert controller.running() == ["ranker-v7"]


def test_a_breach_rolls_back_even_before_min_step_hours(tmp_path: Path) -> None:
    controller = RolloutController(LocalObjectStore(tmp_path), AUDIT_KEY)
    start = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
    controller.start(_config(min_step_hours=24.0), "alice", now=start)

    review = controller.review(
        "ranker-v7",
        GOOD,
        replace(GOOD, fallback_rate=0.9),
        now=start + dt.timedelta(hours=1),
    )

    assert review.action == "rollback"
    assert controller.running() == []


def test_a_replica_serves_the_split_only_with_the_rollouts_challenger_loaded() -> None:
    state = RolloutState(RolloutConfig("r", "7", steps=(0.05, 1.0)))

    split = served_split(state, "7")

    assert split is not None
    assert [v.model_alias for v in split.variants] == ["challenger", "champion"]
    assert served_split(state, "8") is None  # the alias moved to another version
    assert served_split(state, None) is None  # the challenger failed to load
