"""The push policy: send when the expected value clears a threshold, inside hard guardrails.

``expected value = P(open) x value of the content - fatigue_weight x P(fatigue)``. No score
overrides a guardrail; they are checked first and in this order:

=====================  ===================================================================
``opted_out``          the user opted out, or switched notifications off
``unsafe_for_beginner``  a beginner (or a user of unknown level) and advanced, high-intensity
                       or unknown content
``quiet_hours``        the user's local time is in the quiet hours
``recent_app_open``    the user used the app within the cool-down
``daily_cap``          ``per_day`` pushes in the last 24 hours
``weekly_cap``         ``per_week`` pushes in the last 7 days
=====================  ===================================================================

The same vectorised ``blocking_guardrails`` runs offline over logged decisions (off-policy
evaluation) and online for one request; online, the caps are finally enforced by an atomic
reservation in the cap store (``push.caps``), so concurrent decisions cannot both pass.
"""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np

from fitpulse_orchestration.push.caps import CapPolicy
from fitpulse_orchestration.push.features import (
    DAY_S,
    HOUR_S,
    PUSH_FEATURES,
    PushHistory,
    local_time,
)
from fitpulse_orchestration.push.models import PushClassifier

GUARDRAILS: Final = (
    "opted_out",
    "unsafe_for_beginner",
    "quiet_hours",
    "recent_app_open",
    "daily_cap",
    "weekly_cap",
)
CONTENT_VALUE: Final = {"workout": 1.0, "plan": 1.2, "video": 0.6, "article": 0.4}
"""Value of an opened push by content type (workout starts are the business goal)."""


@dataclass(frozen=True)
class PushPolicyParams:
    """The policy's knobs; caps and quiet hours are guardrails, the rest is the score."""

    fatigue_weight: float = 1.0
    threshold: float = 0.05
    # The caps' defaults are CapPolicy's: one default per setting.
    per_day: int = CapPolicy.per_day
    per_week: int = CapPolicy.per_week
    quiet_start_hour: int = 21
    quiet_end_hour: int = 8
    app_open_cooldown_h: float = 3.0
    content_value: Mapping[str, float] = field(default_factory=lambda: dict(CONTENT_VALUE))

    def __post_init__(self) -> None:
        if self.fatigue_weight < 0:
            raise ValueError("fatigue_weight must be >= 0")
        if not (0 <= self.quiet_start_hour < 24 and 0 <= self.quiet_end_hour < 24):
            raise ValueError("quiet hours must be local hours in [0, 24)")
        if self.app_open_cooldown_h < 0:
            raise ValueError("app_open_cooldown_h must be >= 0")
        CapPolicy(self.per_day, self.per_week)  # validates the caps

    @property
    def caps(self) -> CapPolicy:
        """The frequency caps."""
        return CapPolicy(self.per_day, self.per_week)

    def is_quiet(self, local_hour: np.ndarray) -> np.ndarray:
        """Whether each local hour is inside the quiet hours (which may wrap midnight)."""
        hours = np.asarray(local_hour)
        start, end = self.quiet_start_hour, self.quiet_end_hour
        if start == end:
            return np.zeros(hours.shape, dtype=bool)
        if start < end:
            return (hours >= start) & (hours < end)
        return (hours >= start) | (hours < end)

    def value_of(self, item_types: Sequence[str]) -> np.ndarray:
        """Content value per item type (0 for unknown types)."""
        return np.array([float(self.content_value.get(t, 0.0)) for t in item_types])


def _feature(features: np.ndarray, name: str) -> np.ndarray:
    return np.atleast_2d(features)[:, PUSH_FEATURES.index(name)]


def blocking_guardrails(
    features: np.ndarray,
    notifications_off: np.ndarray,
    beginner: np.ndarray,
    unsafe_item: np.ndarray,
    params: PushPolicyParams,
    sends_day: np.ndarray | None = None,
    sends_week: np.ndarray | None = None,
) -> np.ndarray:
    """The first guardrail that blocks each row (``GUARDRAILS`` order), or None.

    ``features`` are ``PUSH_FEATURES`` rows; the caps count ``sends_day``/``sends_week`` when
    given (the cap store's counts online) and the features' ``pushes_1d``/``pushes_7d`` else.
    """
    feats = np.atleast_2d(features)
    day = _feature(feats, "pushes_1d") if sends_day is None else np.asarray(sends_day)
    week = _feature(feats, "pushes_7d") if sends_week is None else np.asarray(sends_week)
    checks = [
        np.asarray(notifications_off, dtype=bool),
        np.asarray(beginner, dtype=bool) & np.asarray(unsafe_item, dtype=bool),
        params.is_quiet(_feature(feats, "local_hour")),
        _feature(feats, "hours_since_app_open") < params.app_open_cooldown_h,
        day >= params.per_day,
        week >= params.per_week,
    ]
    blocked = np.full(len(feats), None, dtype=object)
    for name, mask in zip(reversed(GUARDRAILS), reversed(checks), strict=True):
        blocked[mask] = name
    return blocked


def earliest_send_time(
    history: PushHistory, at: float, params: PushPolicyParams, sends: np.ndarray
) -> float:
    """The earliest time >= ``at`` at which no time guardrail blocks a push.

    Time guardrails are the quiet hours, the app-open cool-down and the caps (``sends``: the
    user's send times); the answer assumes no further app open or push in between.
    """
    sends = np.sort(np.asarray(sends, dtype=float))
    t = at
    for _ in range(8):
        start = t
        last_open = history.last_app_open(t + 1e-6)
        if last_open is not None and t - last_open < params.app_open_cooldown_h * HOUR_S:
            t = last_open + params.app_open_cooldown_h * HOUR_S
        for cap, window in ((params.per_day, DAY_S), (params.per_week, 7 * DAY_S)):
            recent = sends[(sends > t - window) & (sends <= t)]
            if cap == 0:
                continue
            if len(recent) >= cap:
                t = float(recent[len(recent) - cap]) + window + 1.0
        local = local_time(t, history.timezone)
        if params.is_quiet(np.array(local.hour)):
            # The end of the quiet hours on the local calendar (a DST switch at night makes the
            # wait one hour shorter or longer than the clock difference).
            days = 0 if local.hour < params.quiet_end_hour else 1
            end = (local + dt.timedelta(days=days)).replace(
                hour=params.quiet_end_hour, minute=0, second=0, microsecond=0
            )
            t = end.timestamp()
        if t == start:
            return t
    return t


@dataclass
class PushModels:
    """The two calibrated classifiers the policy scores with."""

    open_model: PushClassifier
    fatigue_model: PushClassifier


def expected_values(
    models: PushModels,
    features: np.ndarray,
    item_types: Sequence[str],
    params: PushPolicyParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p_open, p_fatigue, expected value)`` per row of ``features``."""
    p_open = models.open_model.predict(features)
    p_fatigue = models.fatigue_model.predict(features)
    value = p_open * params.value_of(item_types) - params.fatigue_weight * p_fatigue
    return p_open, p_fatigue, value


POLICY_FILE: Final = "push_policy.pkl"
"""The file of a registered push-policy version's bundle."""


@dataclass
class PushPolicyBundle:
    """What a registered push-policy version holds: both models and the policy's settings."""

    models: PushModels
    params: PushPolicyParams
    trained_until: str = ""
    """End of the data the models were trained on (ISO)."""

    def files(self) -> dict[str, bytes]:
        """File name -> bytes, for the registry."""
        return {POLICY_FILE: pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)}

    @classmethod
    def load(cls, folder: Path) -> PushPolicyBundle:
        """Read a bundle folder written from ``files``.

        Raises:
            FileNotFoundError: without the bundle file.
            TypeError: when the file holds something else.
        """
        with (folder / POLICY_FILE).open("rb") as handle:
            bundle = pickle.load(handle)
        if not isinstance(bundle, cls):
            raise TypeError(f"{folder / POLICY_FILE} does not hold a push policy bundle")
        return bundle
