"""Per-arm metrics of a simulated A/B with bootstrap intervals, the launch targets, the plots.

Metrics per arm (intervals: 95% percentile bootstrap over the arm's users):

- ``retention_7d``: share of the arm's users active on at least one of days 7..13 (day 0 is
  the first simulated day; the window is cut at the last simulated day);
- ``workout_starts_per_user``: workout starts over the whole run per user;
- ``pushes_per_user_week`` and ``disables_per_user_week``: pushes received and notification
  switch-offs per user, scaled to 7 days;
- ``beginner_violations``: advanced, high-intensity or unknown items shown or pushed to
  beginners (a count; the target is zero);
- ``coverage``: distinct items served over the catalog's items;
- feed latency p50/p99 and push-decision latency p99 (ms), fallback and empty-feed rates.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.evaluation.experiments import bootstrap_sums
from fitpulse_orchestration.serving.rollout import arm_metrics, percentile_ms
from fitpulse_orchestration.simulation.closed_loop import ArmRun

RETENTION_FROM_DAY: Final = 7
RETENTION_TO_DAY: Final = 13
MIN_DAYS: Final = RETENTION_FROM_DAY + 1
INTERVAL_METRICS: Final = (
    "retention_7d",
    "workout_starts_per_user",
    "pushes_per_user_week",
    "disables_per_user_week",
)


def user_values(run: ArmRun) -> np.ndarray:
    """(users, 4) per-user values of ``INTERVAL_METRICS`` (their means are the metrics)."""
    days = run.active.shape[1]
    if days < MIN_DAYS:
        raise ValueError(f"7-day retention needs at least {MIN_DAYS} simulated days, got {days}")
    window = run.active[:, RETENTION_FROM_DAY : RETENTION_TO_DAY + 1]
    return np.column_stack(
        [
            window.any(axis=1).astype(float),
            run.starts.sum(axis=1).astype(float),
            run.pushes.sum(axis=1) * 7.0 / days,
            (run.disabled_day >= 0) * 7.0 / days,
        ]
    )


def arm_table(runs: list[ArmRun], catalog_size: int, n_boot: int, seed: int) -> pd.DataFrame:
    """One row per arm: each metric, with ``_low`` and ``_high`` for the interval metrics.

    Arm ``k`` bootstraps with its own child of ``seed``, so the table is a function of the runs
    and the seed.
    """
    children = np.random.SeedSequence(seed).spawn(len(runs))
    rows = []
    for run, child in zip(runs, children, strict=True):
        values = user_values(run)
        n = len(values)
        reps = bootstrap_sums(values, n_boot, np.random.default_rng(child)) / n
        row: dict[str, object] = {"arm": run.arm, "users": n}
        for j, name in enumerate(INTERVAL_METRICS):
            row[name] = float(values[:, j].mean())
            row[f"{name}_low"] = float(np.percentile(reps[:, j], 2.5))
            row[f"{name}_high"] = float(np.percentile(reps[:, j], 97.5))
        req, pushes = run.requests, run.push_log
        served = {item for items in req["served"] for item in items}
        feeds = arm_metrics(req, set())
        row["beginner_violations"] = feeds.beginner_violations + int(
            pushes["unsafe_to_beginner"].sum()
        )
        row["coverage"] = len(served) / catalog_size if catalog_size else float("nan")
        row["requests"] = len(req)
        row["feed_p50_ms"] = percentile_ms(req["latency_ms"], 50)
        row["feed_p99_ms"] = percentile_ms(req["latency_ms"], 99)
        row["push_p99_ms"] = percentile_ms(pushes["latency_ms"], 99)
        row["fallback_rate"] = feeds.fallback_rate
        row["empty_feed_rate"] = feeds.empty_feed_rate
        row["churned"] = float((run.churned_day >= 0).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def daily_table(runs: list[ArmRun]) -> pd.DataFrame:
    """Per arm and day: share of the arm's users active, and workout starts per user."""
    frames = []
    for run in runs:
        n = max(len(run.active), 1)
        frames.append(
            pd.DataFrame(
                {
                    "arm": run.arm,
                    "day": np.arange(run.active.shape[1]),
                    "active_share": run.active.sum(axis=0) / n,
                    "starts_per_user": run.starts.sum(axis=0) / n,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class Target:
    """One launch target and whether the simulation met it."""

    name: str
    passed: bool
    detail: str
    key: str
    """A short identifier (metric names, check metadata)."""


def _row(table: pd.DataFrame, arm: str) -> pd.Series | None:
    rows = table[table["arm"] == arm]
    return rows.iloc[0] if len(rows) else None


def check_targets(
    table: pd.DataFrame,
    platform: str = "champion",
    baseline: str = "popularity",
    push_baseline: str = "push-daily",
) -> list[Target]:
    """The launch targets that the arms in ``table`` allow checking.

    The platform beats the baseline feed on 7-day retention and workout starts with
    non-overlapping intervals; it sends no more pushes and causes no more disables per
    user-week than the push baseline (point estimates); it shows beginners nothing unsafe.
    """
    mine = _row(table, platform)
    if mine is None:
        return []
    targets = [
        Target(
            f"{platform}: zero beginner-safety violations",
            int(mine["beginner_violations"]) == 0,
            f"{int(mine['beginner_violations'])} violations",
            "zero_beginner_violations",
        )
    ]
    base = _row(table, baseline)
    if base is not None:
        for metric in ("retention_7d", "workout_starts_per_user"):
            low, high = float(mine[f"{metric}_low"]), float(base[f"{metric}_high"])
            targets.append(
                Target(
                    f"{platform} beats {baseline} on {metric}",
                    low > high,
                    f"{platform} [{low:.3f}, {float(mine[f'{metric}_high']):.3f}] vs "
                    f"{baseline} [{float(base[f'{metric}_low']):.3f}, {high:.3f}]",
                    f"beats_{baseline}.{metric}",
                )
            )
    push = _row(table, push_baseline)
    if push is not None:
        for metric in ("pushes_per_user_week", "disables_per_user_week"):
            targets.append(
                Target(
                    f"{platform} {metric} <= {push_baseline}",
                    float(mine[metric]) <= float(push[metric]),
                    f"{float(mine[metric]):.3f} vs {float(push[metric]):.3f}",
                    f"at_most_{push_baseline}.{metric}",
                )
            )
    return targets


def format_table(table: pd.DataFrame) -> str:
    """The A/B table as Markdown: value [low, high] for the interval metrics."""

    def interval(row: pd.Series, name: str) -> str:
        return f"{row[name]:.3f} [{row[name + '_low']:.3f}, {row[name + '_high']:.3f}]"

    head = (
        "| arm | users | 7-day retention | workout starts / user | pushes / user-week "
        "| disables / user-week | beginner violations | coverage | feed p50 / p99 ms "
        "| fallbacks |"
    )
    lines = [head, "|" + "---|" * 10]
    for _, row in table.iterrows():
        lines.append(
            f"| {row['arm']} | {row['users']} | {interval(row, 'retention_7d')} "
            f"| {interval(row, 'workout_starts_per_user')} "
            f"| {interval(row, 'pushes_per_user_week')} "
            f"| {interval(row, 'disables_per_user_week')} | {row['beginner_violations']} "
            f"| {row['coverage']:.3f} | {row['feed_p50_ms']:.1f} / {row['feed_p99_ms']:.1f} "
            f"| {row['fallback_rate']:.3f} |"
        )
    return "\n".join(lines)


def plots(daily: pd.DataFrame) -> dict[str, bytes]:
    """PNG plots: ``retention_curve`` (active share per day) and ``starts_per_day``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    for name, column, label in (
        ("retention_curve", "active_share", "share of the arm's users active"),
        ("starts_per_day", "starts_per_user", "workout starts per user"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4))
        for arm, part in daily.groupby("arm", sort=False):
            ax.plot(part["day"], part[column], marker="o", label=str(arm))
        ax.set_xlabel("simulated day")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        out[name] = buf.getvalue()
    return out
