from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.simulation.closed_loop import (
    PUSH_COLUMNS,
    REQUEST_COLUMNS,
    ArmRun,
    Population,
)
from fitpulse_orchestration.simulation.report import (
    INTERVAL_METRICS,
    arm_table,
    check_targets,
    daily_table,
    format_table,
    plots,
    user_values,
)

NAN = float("nan")


def _population(n: int) -> Population:
    return Population(
        user_ids=np.array([f"u{i}" for i in range(n)], dtype=object),
        pseudo_ids=np.array([f"p{i}" for i in range(n)], dtype=object),
        rows=np.arange(n),
        level=np.zeros(n, dtype=int),
        activity=np.full(n, 0.5),
        utc_offset=np.zeros(n, dtype=int),
        opted_out=np.zeros(n, dtype=bool),
        peak_hour=np.full(n, 18),
        sensitivity=np.zeros(n),
    )


def _request(
    user: int,
    served: tuple[str, ...] = ("w1", "w2"),
    latency_ms: float = 10.0,
    fallback: str | None = None,
    unsafe_shown: int = 0,
) -> dict[str, Any]:
    return {
        "arm": "arm",
        "day": 0,
        "user": user,
        "request_id": f"req-{user}",
        "variant": None,
        "model_version": "1",
        "items": len(served),
        "fallback": fallback,
        "latency_ms": latency_ms,
        "beginner": True,
        "unsafe_shown": unsafe_shown,
        "served": served,
    }


def _push(user: int, latency_ms: float = 1.0, unsafe_to_beginner: bool = False) -> dict[str, Any]:
    return {
        "arm": "arm",
        "day": 0,
        "user": user,
        "request_id": f"push-{user}",
        "send": True,
        "item": "w1",
        "blocked_by": None,
        "latency_ms": latency_ms,
        "opened": False,
        "disabled": False,
        "unsafe_to_beginner": unsafe_to_beginner,
    }


def _run(
    arm: str,
    active: np.ndarray,
    starts: np.ndarray | None = None,
    pushes: np.ndarray | None = None,
    disabled_day: np.ndarray | None = None,
    churned_day: np.ndarray | None = None,
    requests: list[dict[str, Any]] | None = None,
    push_log: list[dict[str, Any]] | None = None,
) -> ArmRun:
    n = active.shape[0]
    return ArmRun(
        arm=arm,
        population=_population(n),
        active=active.astype(bool),
        starts=np.zeros(active.shape, dtype=int) if starts is None else starts,
        pushes=np.zeros(active.shape, dtype=int) if pushes is None else pushes,
        disabled_day=np.full(n, -1) if disabled_day is None else disabled_day,
        churned_day=np.full(n, -1) if churned_day is None else churned_day,
        requests=pd.DataFrame(requests or [], columns=list(REQUEST_COLUMNS)),
        push_log=pd.DataFrame(push_log or [], columns=list(PUSH_COLUMNS)),
    )


def _champion() -> ArmRun:
    """6 users over 14 days (so 7 / days = 0.5), with requests and pushes."""
    days = 14
    active = np.zeros((6, days), dtype=bool)
    active[[0, 1, 2], [7, 10, 13]] = True
    active[3, 6] = True
    starts = np.zeros((6, days), dtype=int)
    starts[0, 0], starts[1, 3], starts[2, 13], starts[5, 1] = 3, 1, 2, 4
    pushes = np.zeros((6, days), dtype=int)
    pushes[0, :4] = 1
    pushes[4, 2] = 2
    return _run(
        "champion",
        active,
        starts=starts,
        pushes=pushes,
        disabled_day=np.array([-1, 0, -1, 13, -1, -1]),
        churned_day=np.array([-1, 3, -1, -1, -1, 10]),
        requests=[
            _request(0, ("a", "b"), latency_ms=10.0),
            _request(1, ("b", "c"), latency_ms=NAN, unsafe_shown=2),
            _request(2, (), latency_ms=30.0, fallback="popularity"),
        ],
        push_log=[
            _push(0, latency_ms=1.0, unsafe_to_beginner=True),
            _push(4, latency_ms=3.0),
        ],
    )


def _popularity() -> ArmRun:
    """4 users over 14 days; its feed latencies were not measured (NaN) and it sent no pushes."""
    active = np.zeros((4, 14), dtype=bool)
    active[0, 8] = True
    starts = np.zeros((4, 14), dtype=int)
    starts[0, 8] = 1
    return _run(
        "popularity",
        active,
        starts=starts,
        requests=[_request(0, ("a", "x", "y", "z"), latency_ms=NAN)],
    )


def test_user_values_of_hand_built_users() -> None:
    days = 28  # 7 / 28 = 0.25
    active = np.zeros((5, days), dtype=bool)
    active[0, 6] = True  # before the window
    active[1, [0, 7]] = True  # first day of the window
    active[2, 13] = True  # last day of the window
    active[3, [14, 27]] = True  # after the window
    starts = np.zeros((5, days), dtype=int)
    starts[0, 0], starts[0, 20], starts[2, 5] = 1, 2, 4
    pushes = np.zeros((5, days), dtype=int)
    pushes[0, :4] = 1
    pushes[1, 27] = 2
    run = _run(
        "arm",
        active,
        starts=starts,
        pushes=pushes,
        disabled_day=np.array([-1, 0, 27, -1, 5]),
    )

    values = user_values(run)

    np.testing.assert_array_equal(
        values,
        [
            [0.0, 3.0, 1.0, 0.0],
            [1.0, 0.0, 0.5, 0.25],
            [1.0, 4.0, 0.0, 0.25],
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.25],
        ],
    )


def test_retention_window_is_cut_at_the_last_simulated_day() -> None:
    active = np.zeros((2, 8), dtype=bool)
    active[0, 7] = True
    active[1, :7] = True

    assert user_values(_run("arm", active))[:, 0].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("days", [1, 7])
def test_user_values_need_eight_days(days: int) -> None:
    run = _run("arm", np.ones((2, days), dtype=bool))

    with pytest.raises(ValueError, match=f"at least 8 simulated days, got {days}"):
        user_values(run)


def test_arm_table_metrics_are_the_means_of_the_user_values() -> None:
    runs = [_champion(), _popularity()]

    table = arm_table(runs, catalog_size=10, n_boot=300, seed=3)

    assert table["arm"].tolist() == ["champion", "popularity"]
    assert table["users"].tolist() == [6, 4]
    for i, run in enumerate(runs):
        means = user_values(run).mean(axis=0)
        row = table.iloc[i]
        for j, name in enumerate(INTERVAL_METRICS):
            assert row[name] == means[j], (run.arm, name)
            assert row[f"{name}_low"] <= row[name] <= row[f"{name}_high"], (run.arm, name)
    champion = table.iloc[0]
    assert champion["retention_7d"] == pytest.approx(3 / 6)
    assert champion["workout_starts_per_user"] == pytest.approx(10 / 6)
    assert champion["pushes_per_user_week"] == pytest.approx(6 * 0.5 / 6)
    assert champion["disables_per_user_week"] == pytest.approx(2 * 0.5 / 6)


def test_an_arm_with_constant_values_has_a_point_interval() -> None:
    table = arm_table([_popularity()], catalog_size=10, n_boot=100, seed=3)
    row = table.iloc[0]

    for name in ("pushes_per_user_week", "disables_per_user_week"):
        assert row[name] == row[f"{name}_low"] == row[f"{name}_high"] == 0.0


def test_arm_table_is_a_function_of_the_runs_and_the_seed() -> None:
    runs = [_champion(), _popularity()]

    first = arm_table(runs, catalog_size=10, n_boot=200, seed=11)
    second = arm_table([_champion(), _popularity()], catalog_size=10, n_boot=200, seed=11)
    alone = arm_table(runs[:1], catalog_size=10, n_boot=200, seed=11)

    pd.testing.assert_frame_equal(first, second)
    # Arm k draws from child k of the seed: the first arm's row does not depend on the others.
    pd.testing.assert_frame_equal(alone, first.iloc[:1])


def test_arm_table_counts_and_rates() -> None:
    table = arm_table([_champion(), _popularity()], catalog_size=10, n_boot=50, seed=0)
    champion, popularity = table.iloc[0], table.iloc[1]

    # 2 unsafe items shown in feeds + 1 unsafe push.
    assert champion["beginner_violations"] == 3
    assert popularity["beginner_violations"] == 0
    assert champion["coverage"] == pytest.approx(3 / 10)  # a, b, c
    assert popularity["coverage"] == pytest.approx(4 / 10)
    assert champion["requests"] == 3
    assert champion["fallback_rate"] == pytest.approx(1 / 3)
    assert champion["empty_feed_rate"] == pytest.approx(1 / 3)
    assert popularity["fallback_rate"] == popularity["empty_feed_rate"] == 0.0
    assert champion["churned"] == pytest.approx(2 / 6)
    assert popularity["churned"] == 0.0


def test_latency_percentiles_ignore_missing_latencies() -> None:
    table = arm_table([_champion(), _popularity()], catalog_size=10, n_boot=50, seed=0)
    champion, popularity = table.iloc[0], table.iloc[1]

    assert champion["feed_p50_ms"] == pytest.approx(20.0)
    assert champion["feed_p99_ms"] == pytest.approx(float(np.percentile([10.0, 30.0], 99)))
    assert champion["push_p99_ms"] == pytest.approx(float(np.percentile([1.0, 3.0], 99)))
    assert math.isnan(popularity["feed_p50_ms"])
    assert math.isnan(popularity["feed_p99_ms"])
    assert math.isnan(popularity["push_p99_ms"])


def test_an_arm_without_requests() -> None:
    run = _run("quiet", np.zeros((3, 8), dtype=bool))

    row = arm_table([run], catalog_size=10, n_boot=20, seed=0).iloc[0]

    assert (row["requests"], row["coverage"], row["beginner_violations"]) == (0, 0.0, 0)
    assert row["fallback_rate"] == row["empty_feed_rate"] == 0.0
    assert math.isnan(row["feed_p99_ms"])


def _table_row(
    arm: str,
    retention: tuple[float, float, float] = (0.5, 0.45, 0.55),
    starts: tuple[float, float, float] = (2.0, 1.8, 2.2),
    pushes: float = 1.0,
    disables: float = 0.1,
    violations: int = 0,
) -> dict[str, Any]:
    row: dict[str, Any] = {"arm": arm, "users": 100}
    for name, (value, low, high) in (
        ("retention_7d", retention),
        ("workout_starts_per_user", starts),
        ("pushes_per_user_week", (pushes, pushes - 0.1, pushes + 0.1)),
        ("disables_per_user_week", (disables, disables - 0.01, disables + 0.01)),
    ):
        row[name], row[f"{name}_low"], row[f"{name}_high"] = value, low, high
    row.update(
        beginner_violations=violations,
        coverage=0.25,
        requests=1000,
        feed_p50_ms=12.34,
        feed_p99_ms=56.78,
        push_p99_ms=3.0,
        fallback_rate=0.01,
        empty_feed_rate=0.0,
        churned=0.1,
    )
    return row


def _outcomes(table: pd.DataFrame, **names: str) -> list[tuple[str, bool]]:
    return [(t.name, t.passed) for t in check_targets(table, **names)]


def test_targets_of_all_arms() -> None:
    table = pd.DataFrame(
        [
            _table_row("champion", retention=(0.5, 0.45, 0.55), starts=(2.0, 1.8, 2.2)),
            _table_row("popularity", retention=(0.4, 0.35, 0.44), starts=(1.9, 1.7, 1.85)),
            _table_row("push-daily", pushes=7.0, disables=0.05),
        ]
    )

    targets = check_targets(table)

    assert [(t.name, t.passed) for t in targets] == [
        ("champion: zero beginner-safety violations", True),
        ("champion beats popularity on retention_7d", True),
        ("champion beats popularity on workout_starts_per_user", False),
        ("champion pushes_per_user_week <= push-daily", True),
        ("champion disables_per_user_week <= push-daily", False),
    ]
    assert [t.detail for t in targets] == [
        "0 violations",
        "champion [0.450, 0.550] vs popularity [0.350, 0.440]",
        "champion [1.800, 2.200] vs popularity [1.700, 1.850]",
        "1.000 vs 7.000",
        "0.100 vs 0.050",
    ]


def test_touching_intervals_do_not_beat_the_baseline() -> None:
    table = pd.DataFrame(
        [
            _table_row("champion", retention=(0.5, 0.45, 0.55)),
            _table_row("popularity", retention=(0.4, 0.35, 0.45)),
        ]
    )

    outcomes = dict(_outcomes(table))

    assert outcomes["champion beats popularity on retention_7d"] is False


def test_equal_push_and_disable_rates_pass() -> None:
    table = pd.DataFrame(
        [
            _table_row("champion", pushes=2.0, disables=0.1),
            _table_row("push-daily", pushes=2.0, disables=0.1),
        ]
    )

    assert _outcomes(table) == [
        ("champion: zero beginner-safety violations", True),
        ("champion pushes_per_user_week <= push-daily", True),
        ("champion disables_per_user_week <= push-daily", True),
    ]


def test_a_violation_fails_the_safety_target() -> None:
    table = pd.DataFrame([_table_row("champion", violations=2)])

    (target,) = check_targets(table)

    assert (target.passed, target.detail) == (False, "2 violations")


def test_only_targets_with_their_arms_are_checked() -> None:
    baselines = pd.DataFrame([_table_row("popularity"), _table_row("push-daily")])

    assert check_targets(baselines) == []
    assert len(check_targets(pd.DataFrame([_table_row("champion")]))) == 1


def test_targets_of_other_arm_names() -> None:
    table = pd.DataFrame(
        [
            _table_row("challenger", retention=(0.6, 0.56, 0.64), starts=(3.0, 2.8, 3.2)),
            _table_row("champion"),
        ]
    )

    assert _outcomes(table, platform="challenger", baseline="champion") == [
        ("challenger: zero beginner-safety violations", True),
        ("challenger beats champion on retention_7d", True),
        ("challenger beats champion on workout_starts_per_user", True),
    ]


def test_format_table_has_a_row_per_arm_with_intervals() -> None:
    table = pd.DataFrame([_table_row("champion"), _table_row("popularity", violations=4)])

    lines = format_table(table).splitlines()

    assert len(lines) == 4
    assert lines[0].startswith("| arm | users | 7-day retention |")
    assert lines[1] == "|" + "---|" * 10
    assert lines[2] == (
        "| champion | 100 | 0.500 [0.450, 0.550] | 2.000 [1.800, 2.200] "
        "| 1.000 [0.900, 1.100] | 0.100 [0.090, 0.110] | 0 | 0.250 | 12.3 / 56.8 | 0.010 |"
    )
    assert lines[3].startswith("| popularity | 100 |")
    assert "| 4 |" in lines[3]


def test_format_table_of_an_arm_table() -> None:
    table = arm_table([_champion(), _popularity()], catalog_size=10, n_boot=50, seed=0)

    text = format_table(table)

    for _, row in table.iterrows():
        assert f"| {row['arm']} | {row['users']} |" in text
        low, high = row["retention_7d_low"], row["retention_7d_high"]
        assert f"{row['retention_7d']:.3f} [{low:.3f}, {high:.3f}]" in text


def test_daily_table_per_arm_and_day() -> None:
    daily = daily_table([_champion(), _popularity()])

    assert len(daily) == 28
    assert list(daily.columns) == ["arm", "day", "active_share", "starts_per_user"]
    champion = daily[daily["arm"] == "champion"].set_index("day")
    assert champion.loc[7, "active_share"] == pytest.approx(1 / 6)
    assert champion.loc[0, "starts_per_user"] == pytest.approx(3 / 6)
    assert champion.loc[1, "starts_per_user"] == pytest.approx(4 / 6)
    popularity = daily[daily["arm"] == "popularity"].set_index("day")
    assert popularity.loc[8, "active_share"] == pytest.approx(1 / 4)
    assert popularity["active_share"].sum() == pytest.approx(1 / 4)


def test_plots_are_two_pngs() -> None:
    images = plots(daily_table([_champion(), _popularity()]))

    assert sorted(images) == ["retention_curve", "starts_per_day"]
    for image in images.values():
        assert image.startswith(b"\x89PNG\r\n\x1a\n")
