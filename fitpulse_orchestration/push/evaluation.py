"""Off-policy evaluation of a push policy on the logged policy's decisions.

Each logged decision is one user-day opportunity: the logging policy sent or skipped with a
known probability. The evaluated policy (deterministic) takes its own action on the same
context; inverse propensity scoring reweights the decisions where both agree:

* IPS: ``sum(w r) / n`` and self-normalized IPS ``sum(w r) / sum(w)``, ``w = 1[agree] / p``;
* outcomes: pushes sent, opens, push-attributed workout starts, and switch-offs attributed to
  the push by last touch; all reported per user-week (decisions per user-day x 7);
* intervals: user-level cluster bootstrap (``push.estimators``).

Assumptions, stated: the guardrail state (pushes already received, last app open) is the
logged one, and a decision's outcomes depend on that decision only (a contextual bandit);
the sequential effect of the new policy's own earlier pushes on fatigue is what the closed-loop
simulation, not this estimate, measures.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.features.point_in_time import ITEM_TYPES
from fitpulse_orchestration.push.estimators import Estimate, off_policy_value, on_policy_value
from fitpulse_orchestration.push.features import PUSH_FEATURES
from fitpulse_orchestration.push.policy import (
    PushModels,
    PushPolicyParams,
    blocking_guardrails,
    expected_values,
)

OUTCOMES: Final = {
    "pushes": "sent",
    "opens": "opened",
    "starts": "starts",
    "disables": "disable_attributed",
}
DEFAULT_SWEEP: Final = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass(frozen=True)
class PushGateConfig:
    """Limits the new policy must respect (estimates per user-week)."""

    max_pushes_per_user_week: float = 3.0
    max_disable_ratio: float = 1.0
    """Estimated disables per user-week at most this multiple of the logged policy's."""


PUSH_GATE_CHECKS = ("pushes_per_user_week", "disables_per_user_week")
"""The push policy's gate checks, in the order ``evaluate_push_policy`` records them."""


def describe_push_check(name: str, gate: PushGateConfig) -> str:
    """What push gate check ``name`` measures and its threshold under ``gate``, in one paragraph.

    It ends with ``Threshold: value <= T``, where ``value`` and ``T`` are the check's recorded
    ``value`` and ``threshold`` (for switch-offs, a multiple of the logged policy's estimate).

    Raises:
        KeyError: for a name that is not one of ``PUSH_GATE_CHECKS``.
    """
    rules = {
        "pushes_per_user_week": (
            "Pushes per user-week the new policy would send (SNIPS off-policy estimate over the "
            "logged window) may not exceed max_pushes_per_user_week. "
            f"Threshold: value <= {gate.max_pushes_per_user_week:g}."
        ),
        "disables_per_user_week": (
            "Notification switch-offs per user-week under the new policy (SNIPS) may not exceed "
            "max_disable_ratio times the logged policy's on the same window (the result's "
            "threshold holds that product). "
            f"Threshold: value <= {gate.max_disable_ratio:g} x logged."
        ),
    }
    return rules[name]


@dataclass
class PushPolicyEvaluation:
    """Estimates for the logged and the new policy, the fatigue-weight sweep, the gate."""

    table: pd.DataFrame
    sweep: pd.DataFrame
    checks: list[dict[str, Any]]
    """Gate checks: ``name``, ``passed``, ``value``, ``threshold``, ``detail``."""
    blocked_by: dict[str, int]
    window: dict[str, Any]
    plot_png: bytes = field(repr=False, default=b"")

    @property
    def gate_passed(self) -> bool:
        """Every gate check passed."""
        return all(c["passed"] for c in self.checks)

    def metrics(self) -> dict[str, float]:
        """Flat ``<policy>.<estimator>.<outcome>`` numbers for MLflow and metadata."""
        out: dict[str, float] = {"gate_passed": float(self.gate_passed)}
        for row in self.table.itertuples(index=False):
            out[f"{row.policy}.{row.estimator}.{row.outcome}"] = float(row.value)
        return out

    def readable(self) -> str:
        """The estimate table as text."""
        table = self.table.assign(
            estimate=[
                f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
                for v, lo, hi in zip(
                    self.table["value"], self.table["low"], self.table["high"], strict=True
                )
            ]
        )
        wide = table.pivot(index=["policy", "estimator"], columns="outcome", values="estimate")
        failed = [c["detail"] for c in self.checks if not c["passed"]]
        verdict = "PASSED" if not failed else "FAILED: " + "; ".join(failed)
        return f"{wide[list(OUTCOMES)].to_string()}\ngate: {verdict}"


def evaluation_rows(examples: pd.DataFrame, start: pd.Timestamp | None) -> pd.DataFrame:
    """Logged decisions usable for evaluation: a known propensity, outcomes observed."""
    rows = examples[examples["propensity"].notna() & examples["fatigue_observed"]]
    if start is not None:
        rows = rows[rows["ts"] >= start]
    if rows.empty:
        raise ValueError("no logged push decisions with propensities in the evaluation window")
    return rows.reset_index(drop=True)


def policy_actions(
    rows: pd.DataFrame, models: PushModels, params: PushPolicyParams
) -> tuple[np.ndarray, np.ndarray]:
    """The evaluated policy's action on each logged context: (send, blocked_by)."""
    features = rows[list(PUSH_FEATURES)].to_numpy(float)
    blocked = blocking_guardrails(
        features,
        rows["notifications_off"].to_numpy(bool),
        rows["beginner"].to_numpy(bool),
        rows["unsafe_item"].to_numpy(bool),
        params,
    )
    codes = rows["item_type"].to_numpy(float)
    types = [ITEM_TYPES[int(c)] if np.isfinite(c) else "unknown" for c in codes]
    _, _, value = expected_values(models, features, types, params)
    send = (blocked == None) & (value >= params.threshold)  # noqa: E711 - object array
    return send, blocked


def _per_user_week(rows: pd.DataFrame) -> float:
    user_days = rows.assign(day=rows["ts"].dt.floor("D"))[["user_id", "day"]].drop_duplicates()
    return 7.0 * len(rows) / len(user_days)


def _estimates(
    rows: pd.DataFrame, send: np.ndarray, scale: float, n_boot: int, seed: int
) -> dict[str, dict[str, Estimate]]:
    logged = rows["sent"].to_numpy(bool)
    agree = (send == logged).astype(float)
    propensity = rows["propensity"].to_numpy(float)
    clusters = rows["user_id"].to_numpy()
    return {
        outcome: off_policy_value(
            rows[column].to_numpy(float),
            agree,
            propensity,
            clusters,
            scale=scale,
            n_boot=n_boot,
            seed=seed,
        )
        for outcome, column in OUTCOMES.items()
    }


def evaluate_push_policy(
    examples: pd.DataFrame,
    models: PushModels,
    params: PushPolicyParams,
    gate: PushGateConfig,
    start: pd.Timestamp | None = None,
    sweep: tuple[float, ...] = DEFAULT_SWEEP,
    n_boot: int = 300,
    seed: int = 0,
) -> PushPolicyEvaluation:
    """Estimate the logged and the new policy per user-week, sweep the fatigue weight, gate.

    Args:
        examples: ``push.examples.build_push_examples`` rows.
        models: the open and fatigue classifiers the new policy scores with.
        params: the new policy.
        gate: the limits the new policy's estimates must respect.
        start: evaluate decisions from here on (the models' later window); None: all.
        sweep: fatigue weights of the trade-off curve.
        n_boot: bootstrap resamples of the main estimates.
        seed: seed of the resampling.
    """
    rows = evaluation_rows(examples, start)
    scale = _per_user_week(rows)
    clusters = rows["user_id"].to_numpy()
    records = []
    for outcome, column in OUTCOMES.items():
        est = on_policy_value(
            rows[column].to_numpy(float), clusters, scale=scale, n_boot=n_boot, seed=seed
        )
        records.append(("logged", "on_policy", outcome, est))
    send, blocked = policy_actions(rows, models, params)
    for outcome, ests in _estimates(rows, send, scale, n_boot, seed).items():
        for estimator, est in ests.items():
            records.append(("new", estimator, outcome, est))
    table = pd.DataFrame(
        [(p, e, o, est.value, est.low, est.high) for p, e, o, est in records],
        columns=["policy", "estimator", "outcome", "value", "low", "high"],
    )
    sweep_rows = []
    for weight in sweep:
        varied = PushPolicyParams(**{**vars(params), "fatigue_weight": weight})
        varied_send, _ = policy_actions(rows, models, varied)
        snips = {o: e["snips"] for o, e in _estimates(rows, varied_send, scale, 100, seed).items()}
        sweep_rows.append(
            {"fatigue_weight": weight, "send_share": float(varied_send.mean())}
            | {f"{o}": snips[o].value for o in OUTCOMES}
            | {f"{o}_low": snips[o].low for o in OUTCOMES}
            | {f"{o}_high": snips[o].high for o in OUTCOMES}
        )
    sweep_frame = pd.DataFrame(sweep_rows)
    new = table[(table["policy"] == "new") & (table["estimator"] == "snips")].set_index("outcome")
    old = table[table["policy"] == "logged"].set_index("outcome")
    pushes = float(new.at["pushes", "value"])
    disables = float(new.at["disables", "value"])
    disable_limit = gate.max_disable_ratio * float(old.at["disables", "value"])
    checks = [
        {
            "name": "pushes_per_user_week",
            "passed": pushes <= gate.max_pushes_per_user_week,
            "value": pushes,
            "threshold": gate.max_pushes_per_user_week,
            "detail": f"new policy {pushes:.3f} pushes per user-week (SNIPS), limit "
            f"{gate.max_pushes_per_user_week:g}",
        },
        {
            "name": "disables_per_user_week",
            "passed": disables <= disable_limit,
            "value": disables,
            "threshold": disable_limit,
            "detail": f"new policy {disables:.4f} switch-offs per user-week (SNIPS), limit "
            f"{disable_limit:.4f} = {gate.max_disable_ratio:g} x logged",
        },
    ]
    counts = pd.Series(blocked[blocked != None]).value_counts()  # noqa: E711
    return PushPolicyEvaluation(
        table=table,
        sweep=sweep_frame,
        checks=checks,
        blocked_by={str(k): int(v) for k, v in counts.items()},
        window={
            "start": rows["ts"].min().isoformat(),
            "end": rows["ts"].max().isoformat(),
            "decisions": len(rows),
            "users": int(rows["user_id"].nunique()),
            "decisions_per_user_week": scale,
            "new_send_share": float(send.mean()),
            "logged_send_share": float(rows["sent"].mean()),
        },
        plot_png=plot_sweep(sweep_frame, table),
    )


def plot_sweep(sweep: pd.DataFrame, table: pd.DataFrame) -> bytes:
    """The fatigue-weight trade-off: opens and disables against pushes per user-week (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logged = table[table["policy"] == "logged"].set_index("outcome")["value"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, outcome, label in (
        (axes[0], "opens", "opens per user-week"),
        (axes[1], "disables", "switch-offs per user-week"),
    ):
        ax.errorbar(
            sweep["pushes"],
            sweep[outcome],
            yerr=[
                sweep[outcome] - sweep[f"{outcome}_low"],
                sweep[f"{outcome}_high"] - sweep[outcome],
            ],
            marker="o",
            capsize=3,
            label="new policy (SNIPS, 95% CI)",
        )
        for x, y, w in zip(sweep["pushes"], sweep[outcome], sweep["fatigue_weight"], strict=True):
            ax.annotate(f"λ={w:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.scatter(
            [logged["pushes"]],
            [logged[outcome]],
            color="red",
            marker="x",
            s=60,
            label="logged policy",
        )
        ax.set_xlabel("pushes per user-week")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Push policy: fatigue weight λ sweep (off-policy estimates)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
