"""Guarded canary rollout of a challenger feed model, with automatic rollback and a kill switch.

A rollout moves a share of users (the same salted hash as experiments, so a user who is in the
canary at 1% stays in it at 5%) from the champion to the challenger in steps, e.g. 1% -> 5% ->
25% -> 100%. After each step the controller compares the canary's exposure-log guardrails
with the control's over the same window:

Rates are compared with a one-sided two-proportion z-test (``rate_rises``): a rise counts when it
exceeds the tolerance beyond sampling noise.

=========================  ===============================================================
empty feeds                canary rate <= control rate + ``max_empty_feed_rise``
fallbacks                  canary rate <= control rate + ``max_fallback_rise``
latency p99                canary p99 <= control p99 x ``max_p99_ratio`` + ``p99_slack_ms``
disables                   share of canary users who switched notifications off <=
                           control's + ``max_disable_rise``
beginner violations        canary count <= ``max_beginner_violations`` (0)
=========================  ===============================================================

A step with fewer than ``min_requests`` canary requests holds (it needs more traffic). A step
that holds advances; a breach halts the rollout and rolls it back (share 0: everyone on the
champion). ``kill`` does the same at once, from any state, by hand. Every start, advance,
hold, rollback and kill is an audit entry (``audit/rollout/<name>/``), and the state is one
JSON object (``serving/rollouts/<name>.json``) that serving replicas poll.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.features.reference import treated_as_beginner
from fitpulse_orchestration.serving.experiments import Experiment, Variant
from fitpulse_orchestration.storage import ObjectStore
from fitpulse_orchestration.storage.audit import AuditEntry, AuditLog

log = logging.getLogger(__name__)

ROLLOUT_PREFIX: Final = "serving/rollouts"
AUDIT_PREFIX: Final = "audit/rollout"
CANARY: Final = "canary"
CONTROL: Final = "control"
ROLLOUT_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Guardrails:
    """How much worse than the control the canary may be."""

    max_empty_feed_rise: float = 0.01
    max_fallback_rise: float = 0.02
    max_p99_ratio: float = 1.5
    p99_slack_ms: float = 5.0
    max_disable_rise: float = 0.02
    max_beginner_violations: int = 0
    min_requests: int = 50


@dataclass(frozen=True)
class RolloutConfig:
    """A rollout of ``challenger_version`` in ``steps`` (shares, increasing, ending at 1)."""

    name: str
    challenger_version: str
    steps: tuple[float, ...] = (0.01, 0.05, 0.25, 1.0)
    guardrails: Guardrails = field(default_factory=Guardrails)
    min_step_hours: float = 24.0
    """A step lasts at least this long (late signals such as disables need time)."""

    def __post_init__(self) -> None:
        if not self.name or not self.challenger_version:
            raise ValueError("a rollout needs a name and a challenger version")
        if not ROLLOUT_NAME.fullmatch(self.name):
            raise ValueError(f"rollout name {self.name!r}: use letters, digits, '.', '_', '-'")
        if self.min_step_hours < 0:
            raise ValueError("min_step_hours must be >= 0")
        steps = list(self.steps)
        if not steps or any(not 0.0 < s <= 1.0 for s in steps):
            raise ValueError(f"rollout steps must be shares in (0, 1], got {steps}")
        if steps != sorted(set(steps)) or steps[-1] != 1.0:
            raise ValueError(f"rollout steps must increase strictly and end at 1.0, got {steps}")


def load_rollout_config(path: Path) -> RolloutConfig:
    """Read a rollout TOML file.

    The file::

        [rollout]
        name = "ranker-v7"
        challenger_version = "7"
        steps = [0.01, 0.05, 0.25, 1.0]

        [rollout.guardrails]
        max_fallback_rise = 0.02

    Raises:
        ValueError: naming the file and what is wrong.
    """
    try:
        section = tomllib.loads(path.read_text()).get("rollout")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read rollout file {path}: {exc}") from exc
    if not isinstance(section, dict):
        raise ValueError(f"{path}: expected a [rollout] table")
    raw_guards = section.get("guardrails", {})
    if not isinstance(raw_guards, dict):
        raise ValueError(f"{path}: [rollout.guardrails] must be a table")
    known = {f.name for f in fields(Guardrails)}
    unknown = sorted(set(raw_guards) - known)
    if unknown:
        raise ValueError(f"{path}: unknown guardrails {unknown}; allowed: {sorted(known)}")
    for name, value in raw_guards.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{path}: guardrail {name} must be a number, got {value!r}")
    try:
        return RolloutConfig(
            name=str(section.get("name", "")),
            challenger_version=str(section.get("challenger_version", "")),
            steps=tuple(float(s) for s in section.get("steps", RolloutConfig.steps)),
            guardrails=Guardrails(**raw_guards),
            min_step_hours=float(section.get("min_step_hours", RolloutConfig.min_step_hours)),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class ArmMetrics:
    """Guardrail metrics of one variant over a step's window."""

    requests: int
    users: int
    empty_feed_rate: float
    fallback_rate: float
    p99_ms: float
    disable_rate: float
    beginner_violations: int


def percentile_ms(values: pd.Series, q: float) -> float:
    """The ``q``-th percentile of latencies, ignoring missing ones (NaN when none is known)."""
    known = values.dropna()
    return float(np.percentile(known, q)) if len(known) else float("nan")


def arm_metrics(exposures: pd.DataFrame, disabled_users: set[Any]) -> ArmMetrics:
    """Metrics of one variant's requests.

    Args:
        exposures: one row per served feed: ``user``, ``items`` (how many were served),
            ``fallback`` (None when none), ``latency_ms``, ``unsafe_shown`` (unsafe items
            shown to a beginner).
        disabled_users: the users (of any variant) who switched notifications off in the window.
    """
    users = set(exposures["user"])
    n = len(exposures)
    return ArmMetrics(
        requests=n,
        users=len(users),
        empty_feed_rate=float((exposures["items"] == 0).mean()) if n else 0.0,
        fallback_rate=float(exposures["fallback"].notna().mean()) if n else 0.0,
        p99_ms=percentile_ms(exposures["latency_ms"], 99) if n else 0.0,
        disable_rate=len(users & disabled_users) / len(users) if users else 0.0,
        beginner_violations=int(exposures["unsafe_shown"].sum()),
    )


def metrics_from_served_log(rows: pd.DataFrame, disabled_users: set[Any]) -> dict[str, ArmMetrics]:
    """``ArmMetrics`` per variant from served-feature log rows (``serving.logs``).

    One row per served item (an empty feed keeps one row with a null ``item_id``); a
    beginner-safety violation is an unsafe item served to a beginner or a user of unknown
    level. ``disabled_users`` are pseudonyms, as the log's ``user_id``.
    """
    if rows.empty:
        return {}
    if "latency_ms" not in rows:  # logged before latencies were
        rows = rows.assign(latency_ms=np.nan)
    frame = rows.assign(
        _violation=rows["unsafe_for_beginner"].fillna(False).astype(bool)
        & rows["fitness_level"].map(treated_as_beginner).astype(bool)
        & rows["item_id"].notna()
    )
    per_request = frame.groupby("request_id", sort=False).agg(
        user=("user_id", "first"),
        variant=("variant", "first"),
        items=("item_id", "count"),
        fallback=("fallback", "first"),
        latency_ms=("latency_ms", "first"),
        unsafe_shown=("_violation", "sum"),
    )
    return {
        str(variant): arm_metrics(part, disabled_users)
        for variant, part in per_request.groupby("variant")
    }


def step_metrics(
    state: RolloutState,
    served_rows: pd.DataFrame,
    events: pd.DataFrame,
    previous_control: ArmMetrics | None = None,
) -> tuple[ArmMetrics, ArmMetrics]:
    """Control and canary metrics of the current step from production logs.

    Args:
        state: the running rollout (its ``step_started_at`` opens the window).
        served_rows: served-feature log rows (``serving.logs.read_served_features``).
        events: clean events; ``push_disable`` events in the window mark disabled users.
        previous_control: the control of the previous review, used when this step has no
            control traffic (the 100% step).

    Raises:
        ValueError: when there is no control to compare with.
    """
    start = pd.Timestamp(state.step_started_at)
    rows = served_rows
    if not rows.empty:
        as_of = pd.to_datetime(rows["as_of"], utc=True)
        rows = rows[(as_of >= start) & rows["variant"].isin([CANARY, CONTROL])]
    disabled: set[Any] = set()
    if not events.empty:
        ts = pd.to_datetime(events["ts"], utc=True)
        disabled = set(events.loc[(events["event_type"] == "push_disable") & (ts >= start),
                                  "user_id"])  # fmt: skip
    metrics = metrics_from_served_log(rows, disabled)
    control = metrics.get(CONTROL, previous_control)
    if control is None:
        raise ValueError(
            f"rollout {state.config.name!r}: no control traffic logged since "
            f"{state.step_started_at} and no earlier review to compare with"
        )
    return control, metrics.get(CANARY, ArmMetrics(0, 0, 0.0, 0.0, 0.0, 0.0, 0))


Z_ONE_SIDED_95: Final = 1.645


def rate_rises(canary: float, n_canary: int, control: float, n_control: int, tol: float) -> bool:
    """Whether the canary's rate exceeds the control's by more than ``tol``, beyond noise.

    One-sided two-proportion z-test of ``canary - control > tol`` at 95%: a small step's few
    users must not roll back a challenger that is as good as the champion.
    """
    excess = canary - control - tol
    if excess <= 0 or n_canary == 0:
        return False
    pooled = (canary * n_canary + control * n_control) / max(n_canary + n_control, 1)
    variance = pooled * (1 - pooled) * (1 / n_canary + 1 / max(n_control, 1))
    return variance == 0 or excess / math.sqrt(variance) > Z_ONE_SIDED_95


def breaches(control: ArmMetrics, canary: ArmMetrics, guard: Guardrails) -> list[str]:
    """The guardrails the canary breaks, each with its numbers (empty: it holds)."""
    out = []
    rates = (
        ("empty feeds", "empty_feed_rate", "requests", guard.max_empty_feed_rise),
        ("fallbacks", "fallback_rate", "requests", guard.max_fallback_rise),
        ("disables", "disable_rate", "users", guard.max_disable_rise),
    )
    for label, rate, count, tol in rates:
        mine, theirs = getattr(canary, rate), getattr(control, rate)
        if rate_rises(mine, getattr(canary, count), theirs, getattr(control, count), tol):
            out.append(f"{label} {mine:.3f} > control {theirs:.3f} + {tol} (significant)")
    limit = control.p99_ms * guard.max_p99_ratio + guard.p99_slack_ms
    if canary.p99_ms > limit:
        out.append(f"latency p99 {canary.p99_ms:.1f} ms > {limit:.1f} ms")
    if canary.beginner_violations > guard.max_beginner_violations:
        out.append(f"beginner-safety violations {canary.beginner_violations}")
    return out


@dataclass
class RolloutState:
    """Where a rollout stands; ``step`` indexes ``config.steps`` (-1: nobody on the canary).

    ``status`` is ``running``, ``completed``, ``rolled_back`` or ``killed``.
    """

    config: RolloutConfig
    status: str = "running"
    step: int = 0
    reason: str = ""
    step_started_at: str = ""
    """When the current step began (ISO 8601, UTC)."""

    @property
    def share(self) -> float:
        """Share of users on the challenger now."""
        if self.status in ("rolled_back", "killed") or self.step < 0:
            return 0.0
        return self.config.steps[self.step]

    def experiment(self) -> Experiment | None:
        """The traffic split serving applies (None: everyone on the champion)."""
        share = self.share
        if share <= 0.0:
            return None
        canary = Variant(CANARY, share, "challenger")
        variants = (canary,) if share >= 1.0 else (canary, Variant(CONTROL, 1.0 - share))
        return Experiment(f"rollout-{self.config.name}", f"rollout-{self.config.name}", variants)

    def to_json(self) -> bytes:
        """The stored form."""
        body = asdict(self)
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RolloutState:
        """Inverse of ``to_json``."""
        body = json.loads(data)
        config = dict(body["config"])
        config["steps"] = tuple(config["steps"])
        config["guardrails"] = Guardrails(**config["guardrails"])
        return cls(
            config=RolloutConfig(**config),
            status=str(body["status"]),
            step=int(body["step"]),
            reason=str(body.get("reason", "")),
            step_started_at=str(body.get("step_started_at", "")),
        )


def served_split(state: RolloutState, challenger_version: str | None) -> Experiment | None:
    """The split a replica serves for ``state``.

    Everyone stays on the champion (None) unless the replica's loaded ``challenger`` alias is
    the rollout's version: an alias moved mid-rollout, or a challenger that failed to load,
    never receives the canary's traffic.
    """
    if challenger_version != state.config.challenger_version:
        if state.share > 0:
            log.warning(
                "rollout %s wants challenger version %s, the service holds %s: champion only",
                state.config.name,
                state.config.challenger_version,
                challenger_version,
            )
        return None
    return state.experiment()


@dataclass(frozen=True)
class StepReview:
    """The controller's verdict on one step."""

    action: str
    """``advance``, ``complete``, ``hold`` or ``rollback``."""
    share: float
    breaches: list[str]
    control: ArmMetrics
    canary: ArmMetrics


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.UTC)


class RolloutController:
    """Starts, reviews and kills rollouts; state and audit live in the object store.

    ``namespace`` prefixes both (``simulations/`` keeps rehearsals apart from real rollouts).
    """

    def __init__(self, store: ObjectStore, audit_key: str, namespace: str = "") -> None:
        self.store = store
        self.namespace = namespace
        self.audit = AuditLog(store, audit_key, f"{namespace}{AUDIT_PREFIX}")

    def key(self, name: str) -> str:
        """Object-store key of a rollout's state."""
        return f"{self.namespace}{ROLLOUT_PREFIX}/{name}.json"

    def running(self) -> list[str]:
        """Names of the rollouts that are running, sorted."""
        names = []
        for key in self.store.list_keys(f"{self.namespace}{ROLLOUT_PREFIX}/"):
            state = RolloutState.from_json(self.store.get_bytes(key))
            if state.status == "running":
                names.append(state.config.name)
        return sorted(names)

    def state(self, name: str) -> RolloutState:
        """The stored state of rollout ``name``.

        Raises:
            KeyError: when no such rollout was started.
        """
        try:
            return RolloutState.from_json(self.store.get_bytes(self.key(name)))
        except FileNotFoundError as exc:
            raise KeyError(f"no rollout named {name!r} was started") from exc

    def _save(self, state: RolloutState) -> None:
        self.store.put_bytes(self.key(state.config.name), state.to_json())

    def start(
        self, config: RolloutConfig, actor: str, now: dt.datetime | None = None
    ) -> RolloutState:
        """Start at the first step.

        Raises:
            ValueError: when a rollout of that name is still running, or no actor is given.
        """
        try:
            current = self.state(config.name)
        except KeyError:
            current = None
        if current is not None and current.status == "running":
            raise ValueError(f"rollout {config.name!r} is already running")
        state = RolloutState(config, step_started_at=_now(now).isoformat())
        self.audit.append(
            "start",
            config.name,
            config.challenger_version,
            actor,
            details={"steps": list(config.steps), "guardrails": asdict(config.guardrails)},
        )
        self._save(state)
        return state

    def review(
        self,
        name: str,
        control: ArmMetrics,
        canary: ArmMetrics,
        actor: str = "rollout-controller",
        now: dt.datetime | None = None,
    ) -> StepReview:
        """Judge the current step from its window's metrics and act on the verdict.

        A breach rolls back at once; otherwise the step holds until it has lasted
        ``min_step_hours`` and served ``min_requests`` canary requests, then advances (or
        completes at the last step).

        Raises:
            KeyError: no such rollout. ValueError: the rollout is not running.
        """
        state = self.state(name)
        if state.status != "running":
            raise ValueError(f"rollout {name!r} is {state.status}, not running")
        guard = state.config.guardrails
        found = breaches(control, canary, guard)
        share = state.share
        if found:
            action = "rollback"
            state.status, state.reason = "rolled_back", "; ".join(found)
        elif canary.requests < guard.min_requests or self._too_early(state, now):
            action = "hold"
        elif state.step == len(state.config.steps) - 1:
            action = "complete"
            state.status = "completed"
        else:
            action = "advance"
            state.step += 1
            state.step_started_at = _now(now).isoformat()
        self.audit.append(
            action,
            name,
            state.config.challenger_version,
            actor,
            note="; ".join(found),
            details={
                "share": share,
                "next_share": state.share,
                "control": asdict(control),
                "canary": asdict(canary),
            },
        )
        self._save(state)
        return StepReview(action, share, found, control, canary)

    @staticmethod
    def _too_early(state: RolloutState, now: dt.datetime | None) -> bool:
        if not state.step_started_at:
            return False
        started = dt.datetime.fromisoformat(state.step_started_at)
        hours = (_now(now) - started).total_seconds() / 3600.0
        return hours < state.config.min_step_hours

    def kill(self, name: str, actor: str, reason: str) -> RolloutState:
        """The kill switch: everyone back on the champion now, whatever the state.

        Raises:
            KeyError: no such rollout. ValueError: no reason given.
        """
        if not reason.strip():
            raise ValueError("the kill switch needs a reason")
        state = self.state(name)
        previous = state.share
        state.status, state.reason = "killed", reason
        self.audit.append(
            "kill", name, state.config.challenger_version, actor, note=reason,
            details={"share_before": previous},
        )  # fmt: skip
        self._save(state)
        return state

    def previous_control(self, name: str) -> ArmMetrics | None:
        """The control metrics of the rollout's latest review, if any."""
        for entry in reversed(self.history(name)):
            if "control" in entry.details:
                return ArmMetrics(**entry.details["control"])
        return None

    def history(self, name: str) -> list[AuditEntry]:
        """The rollout's audit entries, oldest first."""
        return self.audit.entries(name)
