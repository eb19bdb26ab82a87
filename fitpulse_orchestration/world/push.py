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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from fitpulse_orchestration.world.engagement import EventLog, Streams, engage
from fitpulse_orchestration.world.params import WorldParams
from fitpulse_orchestration.world.population import Items, Users

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


@dataclass
class PushState:
    """The legacy push scheduler's random streams, the users' push traits and their history."""

    streams: Streams
    population: PushPopulation
    disabled_at: np.ndarray  # datetime64[s]; far future while notifications are on
    sent: list[list[np.datetime64]]
    counter: int = 0

    @classmethod
    def start(cls, streams: Streams, n_users: int) -> PushState:
        """Every user's push state at the world's start, drawn from ``streams``."""
        uniforms = np.stack([streams.user_uniform(n_users) for _ in range(4)])
        return cls(
            streams=streams,
            population=PushPopulation.draw(uniforms),
            disabled_at=np.full(n_users, np.datetime64("2100-01-01T00:00:00"), "datetime64[s]"),
            sent=[[] for _ in range(n_users)],
        )


@dataclass
class PushOutcome:
    """Per user, what the day's pushes did: opened, started unsafe content, churned."""

    opened: np.ndarray
    unsafe_started: np.ndarray
    churned: np.ndarray


def simulate_pushes(
    p: WorldParams,
    push: PushState,
    users: Users,
    items: Items,
    log: EventLog,
    day: np.datetime64,
    exists: np.ndarray,
    last_open: np.ndarray,
    base_affinity: Callable[[np.ndarray], np.ndarray],
) -> PushOutcome:
    """One day of the legacy push scheduler (see ``world.push``) and the users' responses.

    Every draw comes from ``push.streams``, so the scheduler never shifts the feed's draws.
    """
    rng = push.streams.main
    n_users = len(users.ids)
    n_items = len(items.ids)
    hour_draw = push.streams.user_uniform(n_users)
    send_draw = push.streams.user_uniform(n_users)
    minute_draw = push.streams.user_uniform(n_users)
    slot = np.minimum(
        np.searchsorted(np.cumsum(LEGACY_HOUR_P), hour_draw, side="right"),
        len(LEGACY_HOURS) - 1,
    )
    hours = LEGACY_HOURS[slot]
    p_send = legacy_send_probability(push.population.heavy)
    out = PushOutcome(np.zeros(n_users, bool), np.zeros(n_users, bool), np.zeros(n_users, bool))
    for u in np.flatnonzero(exists & ~users.opted_out):
        local_hour = int(hours[u])
        ts = day + np.timedelta64((local_hour - int(users.utc_offset[u])) % 24 * 3600, "s")
        ts += np.timedelta64(int(minute_draw[u] * 3600), "s")
        if ts <= users.signup[u] or ts >= push.disabled_at[u]:
            continue
        affinity = base_affinity(np.array([u]))[0]
        scores = np.where(
            items.published < ts, affinity + push.streams.item_gumbel((), n_items), -np.inf
        )
        it = int(np.argmax(scores))
        push.counter += 1
        decision = f"pd_{push.counter:09d}"
        send = bool(send_draw[u] < p_send[u])
        common = {"user_id": users.ids[u], "item_id": items.ids[it], "request_id": decision}
        plat = users.platform[u]
        log.add(
            event_type="push_decision",
            ts=ts,
            platform=plat,
            payload={
                "action": "send" if send else "skip",
                "p_send": round(float(p_send[u]), 6),
                "policy": LEGACY_POLICY,
                "local_hour": local_hour,
            },
            **common,
        )
        if not send:
            continue
        t_sent = ts + np.timedelta64(1, "s")
        log.add(
            event_type="push_sent",
            ts=t_sent,
            platform=plat,
            payload={"propensity": round(float(p_send[u]), 6), "local_hour": local_hour},
            **common,
        )
        week_ago = t_sent - np.timedelta64(7 * 86400, "s")
        push.sent[u] = [t for t in push.sent[u] if t > week_ago] + [t_sent]
        quiet = bool(is_quiet_hour(local_hour))
        fit = float(hour_fit(push.population.peak_hour[u], local_hour))
        aff = float(affinity[it])
        p_open = open_probability(aff, fit, float(users.activity[u]), len(push.sent[u]), quiet)
        draw = rng.random()
        if draw < p_open:
            t_open = t_sent + np.timedelta64(int(rng.integers(60, OPEN_WINDOW_S)), "s")
            log.add(event_type="push_open", ts=t_open, platform=plat, **common)
            out.opened[u] = True
            last_open[u] = t_open
            started = engage(
                p,
                rng,
                log,
                users,
                items,
                int(u),
                it,
                decision,
                t_open + np.timedelta64(20, "s"),
                f"ps_{push.counter:09d}",
                plat,
                aff,
            )
            unsafe = (items.difficulty[it] == 2) | (items.intensity[it] == 2)
            if started and users.level[u] == 0 and unsafe:
                out.unsafe_started[u] = True
                out.churned[u] = rng.random() < 0.35
        elif draw < p_open + 0.4:
            t_dismiss = t_sent + np.timedelta64(int(rng.integers(10, 600)), "s")
            log.add(event_type="push_dismiss", ts=t_dismiss, platform=plat, **common)
        recent_use = bool(t_sent - last_open[u] < np.timedelta64(3 * 3600, "s"))
        p_disable = disable_probability(
            aff, len(push.sent[u]), quiet, recent_use, float(push.population.sensitivity[u])
        )
        if rng.random() < p_disable:
            t_off = t_sent + np.timedelta64(int(rng.integers(60, 36 * 3600)), "s")
            log.add(
                event_type="push_disable",
                user_id=users.ids[u],
                ts=t_off,
                platform=plat,
                payload={"mode": "silenced" if rng.random() < 0.3 else "disabled"},
            )
            push.disabled_at[u] = t_off
    return out
