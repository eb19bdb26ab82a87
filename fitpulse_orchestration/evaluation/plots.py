"""The held-out evaluation as a picture: NDCG@10 by slice with CIs, and the candidate's lifts.

Both come from ``HomeFeedEvaluation.per_user`` (one NDCG@10 per model and held-out user): a
percentile bootstrap over users for each model's mean, and a paired one for the candidate's
lift over every other row (the same users on both sides, as the promotion gate pairs them).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from fitpulse_orchestration.evaluation.home_feed import SLICES
from fitpulse_orchestration.evaluation.metrics import bootstrap_interval

CANDIDATE = "candidate"
INTERVAL_COLUMNS = ["model", "slice", "users", "ndcg_at_10", "low", "high"]
LIFT_COLUMNS = ["baseline", "slice", "users", "lift", "low", "high"]


def _slice(per_user: pd.DataFrame, name: str) -> pd.DataFrame:
    return per_user if name == "all" else per_user[per_user["cold"].astype(bool)]


def slice_intervals(
    per_user: pd.DataFrame, confidence: float = 0.95, samples: int = 1000, seed: int = 7
) -> pd.DataFrame:
    """Mean NDCG@10 and its bootstrap interval per model and slice (``INTERVAL_COLUMNS``).

    Models keep their order of appearance; a slice without users has no row.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for model, frame in per_user.groupby("model", sort=False):
        for name in SLICES:
            values = _slice(frame, name)["ndcg_at_10"].to_numpy(dtype=float)
            if values.size == 0:
                continue
            low, high = bootstrap_interval(values, rng, confidence, samples)
            rows.append((model, name, values.size, float(values.mean()), low, high))
    return pd.DataFrame(rows, columns=INTERVAL_COLUMNS)


def lift_intervals(
    per_user: pd.DataFrame, confidence: float = 0.95, samples: int = 1000, seed: int = 7
) -> pd.DataFrame:
    """The candidate's mean NDCG@10 minus each other model's, per slice (``LIFT_COLUMNS``).

    Paired per user: the interval is a bootstrap of the per-user differences. Empty when the
    evaluation has no ``candidate`` row.
    """
    rng = np.random.default_rng(seed)
    wide = per_user.pivot_table(
        index=["user_id", "cold"], columns="model", values="ndcg_at_10", sort=False
    ).reset_index()
    rows = []
    if CANDIDATE in wide.columns:
        baselines = [m for m in per_user["model"].unique() if m != CANDIDATE]
        for baseline in baselines:
            for name in SLICES:
                part = _slice(wide, name)
                diff = (part[CANDIDATE] - part[baseline]).dropna().to_numpy(dtype=float)
                if diff.size == 0:
                    continue
                low, high = bootstrap_interval(diff, rng, confidence, samples)
                rows.append((baseline, name, diff.size, float(diff.mean()), low, high))
    return pd.DataFrame(rows, columns=LIFT_COLUMNS)


def evaluation_plot(intervals: pd.DataFrame, lifts: pd.DataFrame, title: str = "") -> bytes:
    """Two panels (PNG): NDCG@10 per model and slice, and the candidate's lift over each row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(intervals["model"]))
    # One panel above the other: the asset page's metadata column is about 800 pixels wide.
    fig, axes = plt.subplots(2, 1, figsize=(7.5, 0.9 * max(len(models), 4) + 2.4))
    offsets = dict(zip(SLICES, (-0.18, 0.18), strict=True))
    for ax, frame, value, label in (
        (axes[0], intervals.rename(columns={"model": "row"}), "ndcg_at_10", "NDCG@10"),
        (axes[1], lifts.rename(columns={"baseline": "row"}), "lift", "candidate minus row"),
    ):
        rows = [m for m in models if m in set(frame["row"])]
        position = {m: i for i, m in enumerate(rows)}
        for name in SLICES:
            part = frame[frame["slice"] == name]
            y = [position[m] + offsets[name] for m in part["row"]]
            x, low, high = (part[c].to_numpy(dtype=float) for c in (value, "low", "high"))
            ax.errorbar(
                x,
                y,
                xerr=[x - low, high - x],
                fmt="o",
                capsize=3,
                label=f"{name} users",
            )
        ax.set_yticks(range(len(rows)), rows)
        ax.invert_yaxis()
        ax.set_xlabel(f"{label} (95% bootstrap CI)")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].axvline(0.0, color="grey", linewidth=1)
    axes[0].set_title("held-out NDCG@10 by slice")
    axes[1].set_title("the candidate's lift, paired per user")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
