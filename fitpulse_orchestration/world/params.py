"""The synthetic world's parameters, scales, shift and the summary of what it wrote."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any, Final

DIM: Final = 8
FEED_SLOTS: Final = 10
BAD_KINDS: Final = (
    "malformed_json",
    "missing_field",
    "wrong_type",
    "unknown_event_type",
    "future_timestamp",
    "duplicate_event_id",
)

SHIFT_USER_TASTE_FACTOR: Final = 1.5
"""Shift users get this multiple of ``ShiftParams.trending_taste`` as their affinity bonus."""
SHIFT_TRENDING_ALPHA: Final = 2.0
"""Dirichlet weight of the trending category in a shift user's taste (others weigh 0.35)."""
BASE_TASTE_ALPHA: Final = 0.35
"""Dirichlet weight of each base category in a user's taste."""

LATENT_KEY: Final = "world/latent.npz"
"""Object-store key of the world's hidden state (see ``write_latent``)."""
SPEC_KEY: Final = "world/spec.json"
"""Object-store key of the world's ``WorldParams`` as JSON (see ``read_world_params``)."""

STATUS_CHANGE_RATES: Final = {"unpublished": (0.001, 1), "flagged": (0.0003, 2)}
"""Per new status: (daily share of the live items published before the day, ``every``). In a
world with at least ``STATUS_CHANGE_MIN_ITEMS`` such items, at least one item changes to that
status every ``every`` days."""
STATUS_CHANGE_MIN_ITEMS: Final = 100


@dataclass(frozen=True)
class ShiftParams:
    """A distribution shift in the last days of a world.

    A January influx of beginners and a new trending category: extra users sign up during the
    shift (mostly beginners, active, fond of ``vocab.TRENDING_CATEGORY``), items of that
    category are published during the shift only, and every user likes the category more
    while it is trending.

    Attributes:
        days: the shift covers the last ``days`` simulated days.
        new_users: extra users who sign up during the shift; None means 40% of ``n_users``.
        beginner_share: share of those sign-ups who are beginners.
        trending_items_per_day: items of the trending category published per shift day; None
            means ``max(3, new_items_per_day)``.
        trending_taste: affinity bonus of every user for trending items (shift users get
            ``SHIFT_USER_TASTE_FACTOR`` times as much). Trending items exist only during the
            shift, so the bonus acts only then.
    """

    days: int = 4
    new_users: int | None = None
    beginner_share: float = 0.85
    trending_items_per_day: int | None = None
    trending_taste: float = 2.0

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ValueError("shift days must be at least 1")
        if self.new_users is not None and self.new_users < 0:
            raise ValueError("shift new_users must be >= 0")
        if not 0.0 <= self.beginner_share <= 1.0:
            raise ValueError("shift beginner_share must be in [0, 1]")
        if self.trending_items_per_day is not None and self.trending_items_per_day < 0:
            raise ValueError("shift trending_items_per_day must be >= 0")
        if not 0.0 <= self.trending_taste < float("inf"):
            raise ValueError("shift trending_taste must be finite and >= 0")

    def start_date(self, end_date: dt.date) -> dt.date:
        """First day of the shift in a world whose last day is ``end_date``."""
        return end_date - dt.timedelta(days=self.days - 1)

    def n_new_users(self, n_users: int) -> int:
        """Users who sign up because of the shift, in a world of ``n_users`` base users."""
        return round(0.4 * n_users) if self.new_users is None else self.new_users

    def n_trending_items_per_day(self, new_items_per_day: int) -> int:
        """Trending items published per shift day, given the base world's daily new items."""
        if self.trending_items_per_day is None:
            return max(3, new_items_per_day)
        return self.trending_items_per_day


@dataclass(frozen=True)
class WorldParams:
    """Size and behaviour of a synthetic world.

    Attributes:
        n_users: users who exist by the end of the window (about 1 in 5 sign up during it).
        n_items: catalog items published before the window starts.
        new_items_per_day: items published during each simulated day.
        days: simulated days; the window ends on ``end_date`` (inclusive).
        end_date: last simulated day.
        seed: seed of every random draw.
        bad_record_rate: share of landed event records that are corrupted or re-sent.
        dormant_share: share of users with a very low activity rate (most end up cold).
        shift: a distribution shift in the last days, or None for a stationary world.
    """

    n_users: int
    n_items: int
    new_items_per_day: int
    days: int
    end_date: dt.date = dt.date(2026, 11, 1)
    seed: int = 7
    bad_record_rate: float = 0.01
    dormant_share: float = 0.65
    shift: ShiftParams | None = None

    @property
    def start_date(self) -> dt.date:
        """First simulated day."""
        return self.end_date - dt.timedelta(days=self.days - 1)

    @property
    def shift_start(self) -> dt.date | None:
        """First day of the shift, or None without one."""
        return None if self.shift is None else self.shift.start_date(self.end_date)

    def __post_init__(self) -> None:
        if self.n_users < 10 or self.n_items < 20 or self.days < 1:
            raise ValueError("a world needs at least 10 users, 20 items and 1 day")
        if not 0.0 <= self.bad_record_rate < 0.5:
            raise ValueError("bad_record_rate must be in [0, 0.5)")
        if self.shift is not None and self.shift.days >= self.days:
            raise ValueError("shift days must be fewer than the world's days")


SCALES: Final = {
    "tiny": WorldParams(n_users=300, n_items=300, new_items_per_day=6, days=14),
    "demo": WorldParams(n_users=4000, n_items=2500, new_items_per_day=40, days=28),
    "large": WorldParams(n_users=40000, n_items=20000, new_items_per_day=300, days=28),
}


def world_params(scale: str, seed: int | None = None, **overrides: Any) -> WorldParams:
    """Return the preset ``scale`` with an optional seed and field overrides."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    params = SCALES[scale]
    if seed is not None:
        overrides["seed"] = seed
    return replace(params, **overrides) if overrides else params


@dataclass(frozen=True)
class StatusChange:
    """One catalog item whose status changed during the window (it changes at most once).

    Attributes:
        item_id: the item, published before the day of the change.
        status: its new status, ``unpublished`` or ``flagged`` (see ``features.reference``).
        at: when it changed (UTC); its row lands in that day's ``updates-HH`` file.
    """

    item_id: str
    status: str
    at: dt.datetime


@dataclass
class WorldSummary:
    """What a generated world contains; the ground truth for ingestion tests."""

    params: WorldParams
    n_users: int
    n_items: int
    n_valid_events: int
    """Distinct valid events written (each re-sent copy counts once)."""
    records_written: int
    """Lines written to the landing zone, bad and re-sent ones included."""
    bad_records: dict[str, int]
    """Injected bad records by kind (``BAD_KINDS``); duplicates are extra copies."""
    event_counts: dict[str, int]
    landed_days: list[dt.date]
    cold_user_share: float
    """Share of users with fewer than 5 meaningful interactions in the window."""
    beginner_churn: dict[str, float] = field(default_factory=dict)
    """Churn rate of beginners who did / did not start unsafe content."""
    shift_summary: dict[str, Any] = field(default_factory=dict)
    """What the shift injected (empty without one): ``start_date``, ``days``,
    ``trending_category``, ``shift_users``, ``shift_beginner_share``, ``trending_items`` and
    ``trending_engagement_share`` (share of simulated engagement events in the shift days that
    were on trending items)."""
    catalog_updates: dict[str, int] = field(default_factory=dict)
    """Items whose status changed during the window, by new status (every key of
    ``STATUS_CHANGE_RATES``)."""
    status_changes: list[StatusChange] = field(default_factory=list)
    """Every status change, in time order."""
