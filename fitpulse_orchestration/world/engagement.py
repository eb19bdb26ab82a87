"""The world's random streams, its event log, and how a user engages with an item they see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fitpulse_orchestration.world.params import WorldParams
from fitpulse_orchestration.world.population import Items, Users, sigmoid


@dataclass(frozen=True)
class Streams:
    """Random streams of the simulation.

    A shift's users and items come after the base world's. Per-user and per-item draws take
    the base rows from ``main`` and the appended rows from ``shift``, so the base world's draws
    do not depend on the shift: until the shift starts (its users have not signed up, its items
    are unpublished) a shifted world simulates exactly the base world's events.
    """

    main: np.random.Generator
    shift: np.random.Generator | None
    n_base_users: int
    n_base_items: int

    def user_uniform(self, n_users: int) -> np.ndarray:
        """One uniform draw per user, shape (n_users,)."""
        draws = self.main.random(self.n_base_users)
        if self.shift is None:
            return draws
        return np.concatenate([draws, self.shift.random(n_users - self.n_base_users)])

    def item_gumbel(self, rows: tuple[int, ...], n_items: int) -> np.ndarray:
        """Gumbel noise per item, shape (*rows, n_items)."""
        draws = self.main.gumbel(size=(*rows, self.n_base_items))
        if self.shift is None:
            return draws
        extra = self.shift.gumbel(size=(*rows, n_items - self.n_base_items))
        return np.concatenate([draws, extra], axis=-1)


def iso(ts: np.datetime64) -> str:
    """ISO-8601 text of a second-resolution timestamp, UTC ``Z``."""
    return f"{ts.astype('datetime64[ms]')!s}Z"


class EventLog:
    """Collects events column-wise while the simulation runs."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._next = 0

    def add(self, **fields: Any) -> None:
        """Append one event (its fields as keyword arguments)."""
        self._next += 1
        fields["event_id"] = f"ev_{self._next:010d}"
        self.rows.append(fields)


def engage(
    p: WorldParams,
    rng: np.random.Generator,
    log: EventLog,
    users: Users,
    items: Items,
    u: int,
    it: int,
    request_id: str | None,
    t: np.datetime64,
    session_id: str,
    platform: str,
    affinity: float,
) -> int:
    """Log a click and what follows; return 1 when the user went on to consume the item."""
    common = {
        "user_id": users.ids[u],
        "item_id": items.ids[it],
        "session_id": session_id,
        "platform": platform,
        "request_id": request_id,
    }
    log.add(event_type="click", ts=t, **common)
    kind = items.type_[it]
    t2 = t + np.timedelta64(int(rng.integers(10, 120)), "s")
    if kind in ("article", "video"):
        if rng.random() < float(sigmoid(np.array(0.5 + 0.6 * affinity))):
            etype = "article_read" if kind == "article" else "video_watch"
            log.add(
                event_type=etype, ts=t2, payload={"seconds": int(items.duration[it]) * 60}, **common
            )
            return 1
        return 0
    if rng.random() >= float(sigmoid(np.array(0.2 + 0.7 * affinity))):
        return 0
    log.add(event_type="workout_start", ts=t2, **common)
    too_hard = items.difficulty[it] - users.level[u]
    p_complete = 0.8 if too_hard <= 0 else (0.35 if too_hard == 1 else 0.15)
    if rng.random() < p_complete:
        minutes = int(items.duration[it]) if kind == "workout" else 30
        log.add(
            event_type="workout_complete",
            ts=t2 + np.timedelta64(minutes * 60, "s"),
            payload={
                "duration_s": minutes * 60,
                "avg_heart_rate": int(rng.normal(115 + 12 * items.intensity[it], 8)),
                "calories": int(minutes * (5 + 3 * items.intensity[it])),
            },
            **common,
        )
    return 1
