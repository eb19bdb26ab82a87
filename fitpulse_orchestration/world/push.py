"""Push notifications in the synthetic world: the legacy push scheduler and how users respond.

The legacy scheduler considers every user who can receive pushes once a day, at a local hour
it draws from ``LEGACY_HOURS`` (the *slot*; some slots fall in the night), picks the item the
user likes best (ignoring beginner safety) and sends with probability ``p_send``: 0.5 for a
"heavy" segment, 0.25 for everyone else, mixed with ``EXPLORATION_SHARE`` of coin flips. Every
decision, sent or skipped, is logged as a ``push_decision`` event with its ``p_send``, so
policies can be evaluated off-line (the send probability is never 0 or 1).

How users respond (ground truth the platform never reads):

* P(open) rises with the user's affinity for the item, their activity, and how close the local
  hour is to their *chronotype* peak (morning, noon or evening); it falls with the pushes they
  received in the last 7 days and at night (``QUIET_HOURS``).
* Every received push risks the user switching notifications off (or silencing the app):
  more so with many pushes in the last 7 days, at night, within 3 hours after they used the
  app, and for users with a high latent ``sensitivity``. After that the user receives nothing.
* An opened push opens the app (the user is active that day) and the user engages with the
  pushed item as with a clicked one; beginners who start unsafe content may churn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

LEGACY_POLICY: Final = "legacy-v1"
LEGACY_HOURS: Final = np.array([7, 8, 12, 18, 20, 22])
LEGACY_HOUR_P: Final = np.array([0.1, 0.2, 0.15, 0.3, 0.15, 0.1])
EXPLORATION_SHARE: Final = 0.1
"""Share of legacy decisions that are a fair coin flip (keeps every action's propensity > 0)."""
HEAVY_SHARE: Final = 0.1
CHRONOTYPE_PEAKS: Final = np.array([8, 12, 19])
QUIET_HOURS: Final = (22, 7)
"""The world's night, local time: pushes from 22:00 to 06:59 annoy users."""
OPEN_WINDOW_S: Final = 7200
"""Opens happen within 2 hours of the push."""


@dataclass(frozen=True)
class PushPopulation:
    """Per-user latent push traits, rows follow the world's users."""

    peak_hour: np.ndarray
    sensitivity: np.ndarray
    heavy: np.ndarray

    @classmethod
    def draw(cls, uniforms: np.ndarray) -> PushPopulation:
        """Traits from a (4, n_users) array of uniforms (the caller's shift-stable draws)."""
        chronotype = np.minimum((uniforms[0] * len(CHRONOTYPE_PEAKS)).astype(int), 2)
        # Box-Muller: a standard normal from two uniforms.
        normal = np.sqrt(-2.0 * np.log(np.clip(uniforms[1], 1e-12, 1.0))) * np.cos(
            2.0 * np.pi * uniforms[2]
        )
        return cls(
            peak_hour=CHRONOTYPE_PEAKS[chronotype],
            sensitivity=0.6 * normal,
            heavy=uniforms[3] < HEAVY_SHARE,
        )


def legacy_send_probability(heavy: np.ndarray) -> np.ndarray:
    """The legacy scheduler's P(send) per user: its own rule mixed with exploration."""
    base = np.where(heavy, 0.5, 0.25)
    return (1.0 - EXPLORATION_SHARE) * base + EXPLORATION_SHARE * 0.5


def is_quiet_hour(local_hour: int | np.ndarray) -> bool | np.ndarray:
    """Whether ``local_hour`` is in the world's night."""
    start, end = QUIET_HOURS
    return (np.asarray(local_hour) >= start) | (np.asarray(local_hour) < end)


def hour_fit(peak_hour: int | np.ndarray, local_hour: int | np.ndarray) -> np.ndarray:
    """How well a local hour suits a user's chronotype, in [-0.45, 0.45]."""
    gap = np.abs(np.asarray(local_hour) - np.asarray(peak_hour)) % 24
    gap = np.minimum(gap, 24 - gap)
    return np.asarray(0.9 * np.exp(-(gap.astype(float) ** 2) / 8.0) - 0.45)


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def open_probability(
    affinity: float, fit: float, activity: float, pushes_7d: int, quiet: bool
) -> float:
    """P(the user opens a push) given the push's context; ``pushes_7d`` counts this one."""
    return _sigmoid(
        -1.6 + 0.5 * affinity + fit + 1.5 * activity - 0.3 * max(pushes_7d - 1, 0) - 0.5 * quiet
    )


def disable_probability(
    affinity: float, pushes_7d: int, quiet: bool, used_app_recently: bool, sensitivity: float
) -> float:
    """P(the user switches notifications off because of this push); ``pushes_7d`` counts it."""
    return _sigmoid(
        -4.7
        + 0.35 * pushes_7d
        + 1.3 * quiet
        + 0.7 * used_app_recently
        - 0.25 * affinity
        + sensitivity
    )
