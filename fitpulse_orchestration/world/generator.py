"""A deterministic, seeded FitPulse world: profiles, a growing catalog and app events.

Events come from a latent taste model. Each user has a category taste (Dirichlet) and an
8-dimensional taste vector; each item has category traits, a quality (popularity) and a
difficulty. The chance of engaging with an item is::

    sigmoid(bias + taste . traits + log taste[category] + quality
            - level mismatch - category fatigue + recency) x position examination

A legacy recommender (taste-ish, popular and random items mixed) produces the feeds users
see, so logged impressions carry exposure bias; users also find items on their own (browse and
search) in proportion to their taste. Beginners who start advanced or high-intensity content
often churn, which is what makes the beginner-safety guardrail measurable. About 40% of users
end the window *cold* (fewer than 5 meaningful interactions).

A ``ShiftParams`` adds a distribution shift in the last days (a January influx of beginners
and a new trending category, ``vocab.TRENDING_CATEGORY``), so drift detection, retraining and
promotion have something to react to. Its users and items are appended after the base world's
and every draw about them comes from a separate generator: before the shift starts, a shifted
world simulates the same events as the world without it.

The world writes what the app's collector and back office would write (see ``layout``):
hourly gzipped NDJSON event batches with injected bad records, and Parquet catalog and profile
files. ``generate_world`` returns a ``WorldSummary`` that states exactly what was injected.
Each day the back office also unpublishes a few items and moderation flags a few as unsafe
(hourly ``updates-HH`` catalog files, drawn from their own generator so that nothing else in
the world changes; ``WorldSummary.status_changes`` lists them).
It also writes the world's hidden state to ``LATENT_KEY``, so ``world.respond`` can simulate how
its users react to feeds served later; that is ground truth the platform never reads. Its
``WorldParams`` go to ``SPEC_KEY`` (``read_world_params``), for the parts of the taste model the
latent state leaves out (the shift's trending bonus).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import zipfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, TypeVar

import numpy as np
import pandas as pd

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.schema import ENGAGEMENT_TYPES
from fitpulse_orchestration.storage import ObjectStore, write_parquet
from fitpulse_orchestration.world import push as world_push
from fitpulse_orchestration.world import vocab

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
_SHIFT_TRENDING_ALPHA: Final = 2.0
"""Dirichlet weight of the trending category in a shift user's taste (others weigh 0.35)."""
_BASE_TASTE_ALPHA: Final = 0.35
"""Dirichlet weight of each base category in a user's taste."""

LATENT_KEY: Final = "world/latent.npz"
"""Object-store key of the world's hidden state (see ``_write_latent``)."""
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


def _top_k(keys: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest keys per row, largest first."""
    part = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class _Users:
    ids: np.ndarray
    signup: np.ndarray  # datetime64[s]
    region: np.ndarray
    level: np.ndarray  # 0 beginner, 1 intermediate, 2 advanced
    goals: list[list[str]]
    cat_taste: np.ndarray  # (n, n_categories): columns follow vocab.ALL_CATEGORIES
    vec: np.ndarray  # (n, DIM)
    activity: np.ndarray  # daily session probability
    utc_offset: np.ndarray
    platform: np.ndarray
    opted_out: np.ndarray


@dataclass
class _Items:
    ids: np.ndarray
    type_: np.ndarray
    category: np.ndarray  # index into vocab.ALL_CATEGORIES
    difficulty: np.ndarray
    intensity: np.ndarray
    duration: np.ndarray
    equipment: np.ndarray
    tags: list[list[str]]
    title: np.ndarray
    published: np.ndarray  # datetime64[s]
    quality: np.ndarray
    vec: np.ndarray


def _make_category_vectors(rng: np.random.Generator, n: int = len(vocab.CATEGORIES)) -> np.ndarray:
    vecs = rng.normal(size=(n, DIM))
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def _make_users(p: WorldParams, rng: np.random.Generator, cat_vecs: np.ndarray) -> _Users:
    n = p.n_users
    start = np.datetime64(p.start_date.isoformat(), "s")
    in_window = rng.random(n) < 0.2
    before = start - rng.integers(1, 365 * 86400, size=n).astype("timedelta64[s]")
    during = start + rng.integers(0, p.days * 86400, size=n).astype("timedelta64[s]")
    signup = np.where(in_window, during, before)
    region = rng.choice(vocab.REGIONS, size=n, p=vocab.REGION_WEIGHTS)
    level = rng.choice(3, size=n, p=vocab.FITNESS_WEIGHTS)
    goals = [
        list(rng.choice(vocab.GOALS, size=int(rng.integers(1, 3)), replace=False)) for _ in range(n)
    ]
    cat_taste = rng.dirichlet(np.full(len(vocab.CATEGORIES), _BASE_TASTE_ALPHA), size=n)
    vec = cat_taste @ cat_vecs + 0.35 * rng.normal(size=(n, DIM))
    dormant = rng.random(n) < p.dormant_share
    activity = np.where(
        dormant, rng.uniform(0.002, 0.02, size=n), np.clip(rng.beta(2.0, 3.5, size=n), 0.08, 0.95)
    )
    offsets = np.array([vocab.REGION_TIMEZONES[r][1] for r in region])
    platform = rng.choice(vocab.PLATFORMS, size=n, p=vocab.PLATFORM_WEIGHTS)
    opted_out = rng.random(n) < 0.12
    ids = np.array([f"usr_{i:07d}" for i in rng.permutation(n * 3)[:n]])
    return _Users(
        ids, signup, region, level, goals, cat_taste, vec, activity, offsets, platform, opted_out
    )


def _make_items(
    n: int,
    published: np.ndarray,
    rng: np.random.Generator,
    cat_vecs: np.ndarray,
    id_offset: int,
) -> _Items:
    type_ = rng.choice(vocab.ITEM_TYPES, size=n, p=vocab.ITEM_TYPE_WEIGHTS)
    category = rng.integers(0, len(vocab.CATEGORIES), size=n)
    difficulty = rng.choice(3, size=n, p=vocab.DIFFICULTY_WEIGHTS)
    # Intensity follows difficulty (and HIIT/running skew high, meditation low).
    base = difficulty + rng.normal(0, 0.7, size=n)
    cat_names = np.array(vocab.CATEGORIES)[category]
    base += np.where(np.isin(cat_names, ["hiit", "running", "cycling"]), 0.8, 0.0)
    base -= np.where(np.isin(cat_names, ["meditation", "nutrition", "mobility", "yoga"]), 0.8, 0.0)
    intensity = np.clip(np.round(base), 0, 2).astype(int)
    duration = _make_durations(type_, rng)
    equipment = np.where(
        np.isin(cat_names, ["meditation", "nutrition"]),
        "none",
        rng.choice(vocab.EQUIPMENT, size=n, p=(0.35, 0.25, 0.15, 0.08, 0.1, 0.07)),
    )
    tags = [
        list(rng.choice(vocab.CATEGORY_TAGS[c], size=int(rng.integers(2, 4)), replace=False))
        for c in cat_names
    ]
    title = np.array(
        [
            f"{rng.choice(vocab.TITLE_WORDS)} {c.title()} {t.title()}"
            for c, t in zip(cat_names, type_, strict=True)
        ]
    )
    return _finish_items(
        rng,
        cat_vecs,
        id_offset,
        type_,
        category,
        difficulty,
        intensity,
        duration,
        equipment,
        tags,
        title,
        published,
    )


def _finish_items(
    rng: np.random.Generator,
    cat_vecs: np.ndarray,
    id_offset: int,
    type_: np.ndarray,
    category: np.ndarray,
    difficulty: np.ndarray,
    intensity: np.ndarray,
    duration: np.ndarray,
    equipment: np.ndarray,
    tags: list[list[str]],
    title: np.ndarray,
    published: np.ndarray,
) -> _Items:
    """Draw quality and taste vectors (in that order) and number the ids from ``id_offset``."""
    n = len(type_)
    quality = rng.normal(0.0, 0.6, size=n)
    vec = cat_vecs[category] + 0.45 * rng.normal(size=(n, DIM))
    ids = np.array([f"{vocab.ITEM_ID_PREFIX[t]}_{id_offset + i:07d}" for i, t in enumerate(type_)])
    return _Items(
        ids,
        type_,
        category,
        difficulty,
        intensity,
        duration,
        equipment,
        tags,
        title,
        published,
        quality,
        vec,
    )


def _make_durations(type_: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Minutes per item: articles 3-14, plans 4-12 weeks (in days), the rest 10-60."""
    n = len(type_)
    return np.where(
        type_ == "article",
        rng.integers(3, 15, size=n),
        np.where(type_ == "plan", rng.integers(4, 13, size=n) * 7, rng.integers(2, 13, size=n) * 5),
    )


_Rows = TypeVar("_Rows", _Users, _Items)


def _concat(a: _Rows, b: _Rows) -> _Rows:
    """Rows of ``a`` followed by rows of ``b``."""
    return type(a)(
        *[  # type: ignore[arg-type]
            (x + y) if isinstance(x, list) else np.concatenate([x, y])
            for x, y in zip(vars(a).values(), vars(b).values(), strict=True)
        ]
    )


def _make_shift_users(
    p: WorldParams, shift: ShiftParams, rng: np.random.Generator, cat_vecs: np.ndarray
) -> _Users:
    """The users a shift brings: they sign up during the shift, mostly beginners and active.

    ``cat_vecs`` has one row per ``vocab.ALL_CATEGORIES``; their taste favours the trending
    category. Ids continue after the base world's (``usr_`` numbers from ``3 * n_users`` on).
    """
    n = shift.n_new_users(p.n_users)
    start = np.datetime64(shift.start_date(p.end_date).isoformat(), "s")
    signup = start + rng.integers(0, shift.days * 86400, size=n).astype("timedelta64[s]")
    region = rng.choice(vocab.REGIONS, size=n, p=vocab.REGION_WEIGHTS)
    others = np.array(vocab.FITNESS_WEIGHTS[1:]) / sum(vocab.FITNESS_WEIGHTS[1:])
    level = np.where(rng.random(n) < shift.beginner_share, 0, 1 + rng.choice(2, size=n, p=others))
    goals = [
        list(rng.choice(vocab.GOALS, size=int(rng.integers(1, 3)), replace=False)) for _ in range(n)
    ]
    alpha = np.full(len(vocab.ALL_CATEGORIES), _BASE_TASTE_ALPHA)
    alpha[-1] = _SHIFT_TRENDING_ALPHA
    cat_taste = rng.dirichlet(alpha, size=n)
    vec = cat_taste @ cat_vecs + 0.35 * rng.normal(size=(n, DIM))
    # New-year resolutions: nobody in the influx is dormant (yet).
    activity = np.clip(rng.beta(3.0, 3.0, size=n), 0.15, 0.95)
    offsets = np.array([vocab.REGION_TIMEZONES[r][1] for r in region], dtype=int)
    platform = rng.choice(vocab.PLATFORMS, size=n, p=vocab.PLATFORM_WEIGHTS)
    opted_out = rng.random(n) < 0.12
    ids = np.array([f"usr_{p.n_users * 3 + i:07d}" for i in rng.permutation(n * 3)[:n]], dtype=str)
    return _Users(
        ids, signup, region, level, goals, cat_taste, vec, activity, offsets, platform, opted_out
    )


def _make_trending_items(
    p: WorldParams,
    shift: ShiftParams,
    rng: np.random.Generator,
    cat_vecs: np.ndarray,
    id_offset: int,
) -> _Items:
    """Items of ``vocab.TRENDING_CATEGORY``, published during the shift only.

    Mostly beginner or intermediate, low or medium intensity; ``cat_vecs`` has one row per
    ``vocab.ALL_CATEGORIES``.
    """
    n = shift.n_trending_items_per_day(p.new_items_per_day) * shift.days
    start = np.datetime64(shift.start_date(p.end_date).isoformat(), "s")
    published = start + rng.integers(0, shift.days * 86400, size=n).astype("timedelta64[s]")
    type_ = rng.choice(vocab.ITEM_TYPES, size=n, p=vocab.TRENDING_ITEM_TYPE_WEIGHTS)
    category = np.full(n, len(vocab.ALL_CATEGORIES) - 1)
    difficulty = rng.choice(3, size=n, p=vocab.TRENDING_DIFFICULTY_WEIGHTS)
    intensity = np.clip(np.round(difficulty - 0.3 + rng.normal(0, 0.5, size=n)), 0, 2).astype(int)
    duration = _make_durations(type_, rng)
    equipment = rng.choice(("none", "mat"), size=n, p=(0.85, 0.15))
    tags = [
        list(
            rng.choice(
                vocab.CATEGORY_TAGS[vocab.TRENDING_CATEGORY],
                size=int(rng.integers(2, 4)),
                replace=False,
            )
        )
        for _ in range(n)
    ]
    title = np.array(
        [
            f"{rng.choice(vocab.TITLE_WORDS)} {vocab.TRENDING_CATEGORY.title()} {t.title()}"
            for t in type_
        ],
        dtype=str,
    )
    return _finish_items(
        rng,
        cat_vecs,
        id_offset,
        type_,
        category,
        difficulty,
        intensity,
        duration,
        equipment,
        tags,
        title,
        published,
    )


@dataclass(frozen=True)
class _Streams:
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


def _iso(ts: np.datetime64) -> str:
    return f"{ts.astype('datetime64[ms]')!s}Z"


class _EventLog:
    """Collects events column-wise while the simulation runs."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._next = 0

    def add(self, **fields: Any) -> None:
        self._next += 1
        fields["event_id"] = f"ev_{self._next:010d}"
        self.rows.append(fields)


def _simulate(
    p: WorldParams,
    streams: _Streams,
    users: _Users,
    items: _Items,
    log: _EventLog,
    push: _PushState,
    trending_bonus: np.ndarray | None = None,
) -> dict[str, float]:
    """Simulate every day into ``log``; return the churn rates of beginners.

    ``push`` holds the push scheduler's random streams and state; ``trending_bonus``
    (n_users,) is each user's affinity bonus for trending items (None without a shift).
    """
    rng = streams.main
    n_users = len(users.ids)
    n_items = len(items.ids)
    # Taste is scaled by the base category count, so a uniform base taste scores log(1) = 0
    # and a shift's extra category leaves the base affinities as they were.
    taste_scale = len(vocab.CATEGORIES)
    trending = np.flatnonzero(items.category >= len(vocab.CATEGORIES))
    churned = np.zeros(n_users, dtype=bool)
    unsafe_started = np.zeros(n_users, dtype=bool)
    cat_fatigue = np.zeros((n_users, users.cat_taste.shape[1]))
    last_open = np.full(n_users, np.datetime64("1970-01-01T00:00:00"), dtype="datetime64[s]")
    unsafe_for_beginner = (items.difficulty == 2) | (items.intensity == 2)

    def base_affinity(rows: np.ndarray) -> np.ndarray:
        """Affinity of users ``rows`` for every item, (len(rows), n_items).

        Computed per chunk of users: a users x items matrix of the ``large`` world would not
        fit in memory.
        """
        level_gap = items.difficulty[None, :] - users.level[rows][:, None]
        mismatch = np.where(level_gap > 0, 1.2 * level_gap, 0.3 * -level_gap)
        affinity = (
            users.vec[rows] @ items.vec.T
            + np.log(users.cat_taste[rows][:, items.category] * taste_scale + 1e-3)
            + items.quality[None, :]
            - mismatch
        )
        if trending_bonus is not None:
            affinity[:, trending] += trending_bonus[rows][:, None]
        return affinity

    popularity = np.exp(items.quality * 1.5)
    req_counter = 0
    sess_counter = 0
    for day_idx in range(p.days):
        day = np.datetime64(p.start_date.isoformat(), "s") + np.timedelta64(day_idx * 86400, "s")
        cat_fatigue *= 0.6
        churned |= streams.user_uniform(n_users) < 0.002
        exists = (users.signup < day + np.timedelta64(86400, "s")) & ~churned
        active = exists & (streams.user_uniform(n_users) < users.activity)
        pushed_open = _simulate_pushes(
            p, push, users, items, log, day, exists, last_open, base_affinity
        )
        active |= pushed_open.opened
        unsafe_started |= pushed_open.unsafe_started
        churned |= pushed_open.churned
        act = np.flatnonzero(active)
        if act.size == 0:
            continue
        n_sessions = 1 + rng.poisson(0.4, size=act.size)
        sess_users = np.repeat(act, n_sessions)
        local_hours = rng.choice(
            [6, 7, 8, 12, 13, 17, 18, 19, 20, 21], size=sess_users.size
        ).astype(int)
        sess_ts = (
            day
            + ((local_hours - users.utc_offset[sess_users]) % 24 * 3600).astype("timedelta64[s]")
            + rng.integers(0, 3600, size=sess_users.size).astype("timedelta64[s]")
        )
        # Users who sign up during the day only act after their sign-up time.
        after_signup = users.signup[sess_users] < sess_ts
        sess_users, sess_ts = sess_users[after_signup], sess_ts[after_signup]
        order = np.argsort(sess_ts)
        sess_users, sess_ts = sess_users[order], sess_ts[order]
        for chunk in range(0, sess_users.size, 1024):
            su = sess_users[chunk : chunk + 1024]
            st = sess_ts[chunk : chunk + 1024]
            available = items.published[None, :] < st[:, None]
            aff = base_affinity(su) - 0.08 * cat_fatigue[su][:, items.category]
            # Fresh items get a recency boost for their first days.
            age_days = (st[:, None] - items.published[None, :]).astype(float) / 86400.0
            aff = aff + 0.6 * np.exp(-np.clip(age_days, 0, None) / 3.0)
            # Legacy feed: mixture of taste-ish, popularity and uniform exploration.
            taste_p = np.where(available, np.exp(0.8 * aff), 0.0)
            taste_p /= taste_p.sum(axis=1, keepdims=True)
            pop_p = np.where(available, popularity[None, :], 0.0)
            pop_p /= pop_p.sum(axis=1, keepdims=True)
            uni_p = available / available.sum(axis=1, keepdims=True)
            mix = 0.4 * taste_p + 0.35 * pop_p + 0.25 * uni_p
            keys = np.log(mix + 1e-30) + streams.item_gumbel((su.size,), n_items)
            feed = _top_k(keys, FEED_SLOTS)
            # Organic discovery (browse and search) follows taste only.
            organic_keys = np.where(available, 1.5 * aff, -np.inf) + streams.item_gumbel(
                (su.size,), n_items
            )
            n_organic = rng.poisson(0.7, size=su.size)
            organic = _top_k(organic_keys, 3)
            for row, u in enumerate(su):
                sess_counter += 1
                session_id = f"s_{sess_counter:09d}"
                t0 = st[row]
                plat = users.platform[u]
                log.add(
                    event_type="app_open",
                    user_id=users.ids[u],
                    ts=t0,
                    session_id=session_id,
                    platform=plat,
                )
                last_open[u] = t0
                req_counter += 1
                request_id = f"r_{req_counter:09d}"
                t_imp = t0 + np.timedelta64(1, "s")
                shown = feed[row]
                for pos, it in enumerate(shown):
                    log.add(
                        event_type="impression",
                        user_id=users.ids[u],
                        item_id=items.ids[it],
                        ts=t_imp,
                        request_id=request_id,
                        position=int(pos),
                        session_id=session_id,
                        platform=plat,
                    )
                examine = 1.0 / np.sqrt(1.0 + np.arange(FEED_SLOTS))
                p_click = _sigmoid(-2.6 + 1.1 * aff[row, shown]) * examine
                clicks = shown[rng.random(FEED_SLOTS) < p_click]
                picks: list[tuple[int, str | None]] = [(int(it), request_id) for it in clicks]
                picks += [(int(it), None) for it in organic[row, : n_organic[row]]]
                t = t_imp
                for it, req in picks:
                    t = t + np.timedelta64(int(rng.integers(5, 90)), "s")
                    outcome = _engage(
                        p,
                        rng,
                        log,
                        users,
                        items,
                        u,
                        it,
                        req,
                        t,
                        session_id,
                        plat,
                        float(aff[row, it]),
                    )
                    cat_fatigue[u, items.category[it]] += 1.0
                    if outcome and users.level[u] == 0 and unsafe_for_beginner[it]:
                        unsafe_started[u] = True
                        if rng.random() < 0.35:
                            churned[u] = True
                for it in shown:
                    cat_fatigue[u, items.category[it]] += 0.2
    beginners = users.level == 0
    return {
        "unsafe_started": float(
            churned[beginners & unsafe_started].mean()
            if (beginners & unsafe_started).any()
            else 0.0
        ),
        "safe_only": float(
            churned[beginners & ~unsafe_started].mean()
            if (beginners & ~unsafe_started).any()
            else 0.0
        ),
    }


def _engage(
    p: WorldParams,
    rng: np.random.Generator,
    log: _EventLog,
    users: _Users,
    items: _Items,
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
        if rng.random() < float(_sigmoid(np.array(0.5 + 0.6 * affinity))):
            etype = "article_read" if kind == "article" else "video_watch"
            log.add(
                event_type=etype, ts=t2, payload={"seconds": int(items.duration[it]) * 60}, **common
            )
            return 1
        return 0
    if rng.random() >= float(_sigmoid(np.array(0.2 + 0.7 * affinity))):
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


@dataclass
class _PushState:
    """The legacy push scheduler's random streams, the users' push traits and their history."""

    streams: _Streams
    population: world_push.PushPopulation
    disabled_at: np.ndarray  # datetime64[s]; far future while notifications are on
    sent: list[list[np.datetime64]]
    counter: int = 0

    @classmethod
    def start(cls, streams: _Streams, n_users: int) -> _PushState:
        uniforms = np.stack([streams.user_uniform(n_users) for _ in range(4)])
        return cls(
            streams=streams,
            population=world_push.PushPopulation.draw(uniforms),
            disabled_at=np.full(n_users, np.datetime64("2100-01-01T00:00:00"), "datetime64[s]"),
            sent=[[] for _ in range(n_users)],
        )


@dataclass
class _PushOutcome:
    opened: np.ndarray
    unsafe_started: np.ndarray
    churned: np.ndarray


def _simulate_pushes(
    p: WorldParams,
    push: _PushState,
    users: _Users,
    items: _Items,
    log: _EventLog,
    day: np.datetime64,
    exists: np.ndarray,
    last_open: np.ndarray,
    base_affinity: Callable[[np.ndarray], np.ndarray],
) -> _PushOutcome:
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
        np.searchsorted(np.cumsum(world_push.LEGACY_HOUR_P), hour_draw, side="right"),
        len(world_push.LEGACY_HOURS) - 1,
    )
    hours = world_push.LEGACY_HOURS[slot]
    p_send = world_push.legacy_send_probability(push.population.heavy)
    out = _PushOutcome(np.zeros(n_users, bool), np.zeros(n_users, bool), np.zeros(n_users, bool))
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
                "policy": world_push.LEGACY_POLICY,
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
        quiet = bool(world_push.is_quiet_hour(local_hour))
        fit = float(world_push.hour_fit(push.population.peak_hour[u], local_hour))
        aff = float(affinity[it])
        p_open = world_push.open_probability(
            aff, fit, float(users.activity[u]), len(push.sent[u]), quiet
        )
        draw = rng.random()
        if draw < p_open:
            t_open = t_sent + np.timedelta64(int(rng.integers(60, world_push.OPEN_WINDOW_S)), "s")
            log.add(event_type="push_open", ts=t_open, platform=plat, **common)
            out.opened[u] = True
            last_open[u] = t_open
            started = _engage(
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
        p_disable = world_push.disable_probability(
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


def _record(row: dict[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "user_id": row["user_id"],
        "ts": _iso(row["ts"]),
    }
    for key in ("item_id", "request_id", "position", "session_id", "platform", "payload"):
        value = row.get(key)
        if value is not None:
            rec[key] = value
    return rec


def _corrupt(kind: str, rec: dict[str, Any], rng: np.random.Generator) -> str:
    """Return the landed line for a record corrupted as ``kind``."""
    rec = dict(rec)
    if kind == "malformed_json":
        text = json.dumps(rec)
        return text[: int(rng.integers(5, len(text) - 2))]
    if kind == "missing_field":
        choices = ["user_id", "event_type", "ts", "event_id"]
        if rec["event_type"] not in ("app_open", "push_disable"):
            choices.append("item_id")
        rec.pop(str(rng.choice(choices)))
    elif kind == "wrong_type":
        field_name = str(rng.choice(["user_id", "ts", "position"]))
        if field_name == "user_id":
            rec["user_id"] = int(rng.integers(1, 10**9))
        elif field_name == "ts":
            rec["ts"] = int(rng.integers(1_700_000_000, 1_800_000_000))
        else:
            rec["position"] = "third"
    elif kind == "unknown_event_type":
        rec["event_type"] = str(rng.choice(vocab.UNKNOWN_EVENT_TYPES))
    elif kind == "future_timestamp":
        ts = np.datetime64(rec["ts"].rstrip("Z"), "ms") + np.timedelta64(
            int(rng.integers(2, 30)) * 86400, "s"
        )
        rec["ts"] = _iso(ts)
    return json.dumps(rec)


def _write_events(
    p: WorldParams, rng: np.random.Generator, log: _EventLog, store: ObjectStore
) -> tuple[int, int, dict[str, int], list[dt.date]]:
    """Write hourly batches by arrival time; return (valid, written, bad counts, days)."""
    bad = dict.fromkeys(BAD_KINDS, 0)
    batches: dict[tuple[str, int], list[str]] = defaultdict(list)
    n = len(log.rows)
    delays = rng.exponential(120.0, size=n).astype(int)
    is_bad = rng.random(n) < p.bad_record_rate
    kinds = rng.choice(BAD_KINDS, size=n)
    valid = 0
    end = np.datetime64(p.end_date.isoformat(), "s") + np.timedelta64(86400 - 1, "s")
    for i, row in enumerate(log.rows):
        arrival = row["ts"] + np.timedelta64(int(delays[i]), "s")
        if arrival > end:
            # Not yet arrived when the simulation stops: never written, never counted.
            continue
        day = str(arrival.astype("datetime64[D]"))
        hour = int((arrival - arrival.astype("datetime64[D]")).astype(int) // 3600)
        rec = _record(row)
        kind = str(kinds[i]) if is_bad[i] else None
        if kind is None or kind == "duplicate_event_id":
            line = json.dumps(rec)
            batches[(day, hour)].append(line)
            valid += 1
            if kind is not None:
                # The collector re-sends the record, possibly in the next hour's batch.
                later = min(
                    arrival + np.timedelta64(int(rng.integers(0, 3600)), "s"),
                    arrival.astype("datetime64[D]") + np.timedelta64(86399, "s"),
                )
                dday = str(later.astype("datetime64[D]"))
                dhour = int((later - later.astype("datetime64[D]")).astype(int) // 3600)
                batches[(dday, dhour)].append(line)
                bad[kind] += 1
        else:
            batches[(day, hour)].append(_corrupt(kind, rec, rng))
            bad[kind] += 1
    written = 0
    days = set()
    for (day, hour), lines in sorted(batches.items()):
        date = dt.date.fromisoformat(day)
        days.add(date)
        key = layout.landing_events_key(date, hour, f"batch-{p.seed}-{hour:02d}")
        store.put_bytes(key, gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
        written += len(lines)
    return valid, written, bad, sorted(days)


def _users_frame(users: _Users, idx: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": users.ids[idx],
            "signup_at": pd.to_datetime(users.signup[idx]).tz_localize("UTC"),
            "region": users.region[idx],
            "timezone": [vocab.REGION_TIMEZONES[r][0] for r in users.region[idx]],
            "fitness_level": np.array(vocab.FITNESS_LEVELS)[users.level[idx]],
            "goals": [",".join(users.goals[i]) for i in idx],
            "push_opt_out": users.opted_out[idx],
        }
    )


def _items_frame(items: _Items, idx: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": items.ids[idx],
            "item_type": items.type_[idx],
            "title": items.title[idx],
            "category": np.array(vocab.ALL_CATEGORIES)[items.category[idx]],
            "difficulty": np.array(vocab.DIFFICULTIES)[items.difficulty[idx]],
            "intensity": np.array(vocab.INTENSITIES)[items.intensity[idx]],
            "duration_min": items.duration[idx].astype("int64"),
            "equipment": items.equipment[idx],
            "tags": [",".join(items.tags[i]) for i in idx],
            "published_at": pd.to_datetime(items.published[idx]).tz_localize("UTC"),
            "status": "published",
        }
    )


def _draw_status_changes(p: WorldParams, items: _Items) -> list[StatusChange]:
    """Draw the items that are unpublished or flagged during the window, in time order.

    Each day, among the live items published before it, about ``STATUS_CHANGE_RATES`` of them
    change (fractions carry over to the next day), at a uniform time of the day. Every draw
    comes from a generator of its own, so the world's other files and events do not depend on
    it; and a shift's items come after the base items and are published during the shift only,
    so before the shift a shifted world draws the same changes. The event simulation ignores
    status: members still reach an unpublished item through deep links and saved lists.
    """
    rng = np.random.default_rng([p.seed, 3])
    start = np.datetime64(p.start_date.isoformat(), "s")
    live = np.ones(len(items.ids), dtype=bool)
    owed = dict.fromkeys(STATUS_CHANGE_RATES, 0.0)
    idle_days = dict.fromkeys(STATUS_CHANGE_RATES, 0)
    changes = []
    for day_idx in range(p.days):
        lo = start + np.timedelta64(day_idx * 86400, "s")
        eligible = np.flatnonzero(live & (items.published < lo))
        statuses: list[str] = []
        for status, (rate, every) in STATUS_CHANGE_RATES.items():
            owed[status] += rate * eligible.size
            count = int(owed[status])
            if count == 0 and idle_days[status] + 1 >= every:
                count = int(eligible.size >= STATUS_CHANGE_MIN_ITEMS)
            owed[status] = max(0.0, owed[status] - count)
            idle_days[status] = 0 if count else idle_days[status] + 1
            statuses += [status] * count
        statuses = statuses[: eligible.size]
        picked = rng.choice(eligible, size=len(statuses), replace=False)
        offsets = rng.integers(0, 86400, size=picked.size).astype("timedelta64[s]")
        live[picked] = False
        for idx, status, offset in zip(picked, statuses, offsets, strict=True):
            at = (lo + offset).astype(dt.datetime).replace(tzinfo=dt.UTC)
            changes.append(StatusChange(str(items.ids[idx]), status, at))
    return sorted(changes, key=lambda change: (change.at, change.item_id))


def _write_reference(
    p: WorldParams,
    users: _Users,
    items: _Items,
    changes: list[StatusChange],
    store: ObjectStore,
) -> None:
    start = np.datetime64(p.start_date.isoformat(), "s")
    pre_users = np.flatnonzero(users.signup < start)
    write_parquet(
        store,
        layout.landing_reference_key(layout.LANDING_USERS, p.start_date, "snapshot"),
        _users_frame(users, pre_users),
    )
    pre_items = np.flatnonzero(items.published < start)
    write_parquet(
        store,
        layout.landing_reference_key(layout.LANDING_CATALOG, p.start_date, "snapshot"),
        _items_frame(items, pre_items),
    )
    for day_idx in range(p.days):
        lo = start + np.timedelta64(day_idx * 86400, "s")
        hi = lo + np.timedelta64(86400, "s")
        day = p.start_date + dt.timedelta(days=day_idx)
        new_users = np.flatnonzero((users.signup >= lo) & (users.signup < hi))
        if new_users.size:
            write_parquet(
                store,
                layout.landing_reference_key(layout.LANDING_USERS, day, "signups"),
                _users_frame(users, new_users),
            )
        new_items = np.flatnonzero((items.published >= lo) & (items.published < hi))
        hours = ((items.published[new_items] - lo).astype(int) // 3600).astype(int)
        for hour in np.unique(hours):
            write_parquet(
                store,
                layout.landing_reference_key(layout.LANDING_CATALOG, day, f"items-{hour:02d}"),
                _items_frame(items, new_items[hours == hour]),
            )
    # Full rows with the new status, so that the later file wins (see ``layout``).
    position = {item_id: i for i, item_id in enumerate(items.ids.tolist())}
    hourly: dict[tuple[dt.date, int], list[StatusChange]] = defaultdict(list)
    for change in changes:
        hourly[(change.at.date(), change.at.hour)].append(change)
    for (day, hour), group in sorted(hourly.items()):
        rows = _items_frame(items, np.array([position[c.item_id] for c in group], dtype=int))
        write_parquet(
            store,
            layout.landing_reference_key(layout.LANDING_CATALOG, day, f"updates-{hour:02d}"),
            rows.assign(status=[c.status for c in group]),
        )


def _write_latent(
    users: _Users, items: _Items, push: world_push.PushPopulation, store: ObjectStore
) -> None:
    """Write the hidden state a response model needs to ``LATENT_KEY`` as an ``.npz`` archive.

    Ground truth of the synthetic world, read only by ``world.respond`` (to simulate how users
    react to served feeds); the platform's ingestion, features and training never read it.
    Arrays are named ``user_*`` (rows follow ``user_ids``) and ``item_*`` (rows follow
    ``item_ids``); ``taste_scale`` is the scalar that multiplies category taste in affinities.
    """
    arrays = {
        "user_ids": users.ids.astype(str),
        "user_vec": users.vec,
        "user_cat_taste": users.cat_taste,
        "user_level": users.level,
        "user_activity": users.activity,
        "user_utc_offset": users.utc_offset,
        "user_platform": users.platform.astype(str),
        "user_opted_out": users.opted_out,
        "user_push_peak_hour": push.peak_hour,
        "user_push_sensitivity": push.sensitivity,
        "item_ids": items.ids.astype(str),
        "item_vec": items.vec,
        "item_category": items.category,
        "item_quality": items.quality,
        "item_difficulty": items.difficulty,
        "item_intensity": items.intensity,
        "item_type": items.type_.astype(str),
        "item_duration": items.duration,
        "taste_scale": np.array(len(vocab.CATEGORIES)),
    }
    # np.savez_compressed stamps each member with the current time; a fixed stamp keeps the
    # store byte-identical for the same params and seed.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
    store.put_bytes(LATENT_KEY, buffer.getvalue())


def _write_spec(p: WorldParams, store: ObjectStore) -> None:
    """Write ``p`` to ``SPEC_KEY`` as JSON: every field, ``shift`` nested (or null)."""
    spec = asdict(p)
    spec["end_date"] = p.end_date.isoformat()
    store.put_bytes(SPEC_KEY, json.dumps(spec, sort_keys=True).encode())


def read_world_params(store: ObjectStore) -> WorldParams:
    """The parameters of the world ``generate_world`` wrote into ``store`` (``SPEC_KEY``).

    Raises:
        FileNotFoundError: when ``store`` holds no spec (no world, or one generated before
            worlds wrote it).
    """
    spec = json.loads(store.get_bytes(SPEC_KEY))
    shift = spec.pop("shift")
    spec["end_date"] = dt.date.fromisoformat(spec["end_date"])
    return WorldParams(**spec, shift=None if shift is None else ShiftParams(**shift))


def _add_shift(
    p: WorldParams,
    shift: ShiftParams,
    rng: np.random.Generator,
    users: _Users,
    items: _Items,
    cat_vecs: np.ndarray,
) -> tuple[_Users, _Items, np.ndarray, _Streams]:
    """Append the shift's users and trending items to the base world's.

    Every draw comes from the shift's own generator, seeded from ``p.seed``; ``rng`` is the
    base world's, which keeps drawing for the base rows.

    Returns:
        Users and items with the shift's rows appended (``cat_taste`` gains a column for the
        trending category), the (n_users,) affinity bonus for trending items, and the streams
        the simulation draws from.
    """
    shift_rng = np.random.default_rng([p.seed, 1])
    cat_vecs = np.vstack([cat_vecs, _make_category_vectors(shift_rng, 1)])
    # A base user's taste for the new category follows the marginal of one component of a
    # Dirichlet taste over every category; the base columns stay untouched.
    trending_taste = shift_rng.beta(
        _BASE_TASTE_ALPHA, _BASE_TASTE_ALPHA * len(vocab.CATEGORIES), size=len(users.ids)
    )
    base = replace(users, cat_taste=np.column_stack([users.cat_taste, trending_taste]))
    newcomers = _make_shift_users(p, shift, shift_rng, cat_vecs)
    trending = _make_trending_items(p, shift, shift_rng, cat_vecs, len(items.ids))
    bonus = np.concatenate(
        [
            np.full(len(base.ids), shift.trending_taste),
            np.full(len(newcomers.ids), SHIFT_USER_TASTE_FACTOR * shift.trending_taste),
        ]
    )
    streams = _Streams(rng, shift_rng, len(users.ids), len(items.ids))
    return _concat(base, newcomers), _concat(items, trending), bonus, streams


def _summarize_shift(
    p: WorldParams,
    shift: ShiftParams,
    users: _Users,
    items: _Items,
    log: _EventLog,
    n_base_users: int,
) -> dict[str, Any]:
    """What the shift injected; ground truth for drift tests (see ``WorldSummary``)."""
    start_date = shift.start_date(p.end_date)
    start = np.datetime64(start_date.isoformat(), "s")
    newcomer_levels = users.level[n_base_users:]
    trending_ids = set(items.ids[items.category >= len(vocab.CATEGORIES)].tolist())
    on_trending = [
        row["item_id"] in trending_ids
        for row in log.rows
        if row["event_type"] in ENGAGEMENT_TYPES and row["ts"] >= start
    ]
    return {
        "start_date": start_date,
        "days": shift.days,
        "trending_category": vocab.TRENDING_CATEGORY,
        "shift_users": int(newcomer_levels.size),
        "shift_beginner_share": float((newcomer_levels == 0).mean())
        if newcomer_levels.size
        else 0.0,
        "trending_items": len(trending_ids),
        "trending_engagement_share": float(np.mean(on_trending)) if on_trending else 0.0,
    }


def generate_world(params: WorldParams, store: ObjectStore) -> WorldSummary:
    """Simulate ``params.days`` days of FitPulse and write the landing zone into ``store``.

    The world's hidden state goes to ``LATENT_KEY`` last, after every random draw.

    Returns:
        A summary with the exact number of valid events and injected bad records by kind.
    """
    rng = np.random.default_rng(params.seed)
    cat_vecs = _make_category_vectors(rng)
    users = _make_users(params, rng, cat_vecs)
    start = np.datetime64(params.start_date.isoformat(), "s")
    old_pub = start - rng.integers(3600, 180 * 86400, size=params.n_items).astype("timedelta64[s]")
    items = _make_items(params.n_items, old_pub, rng, cat_vecs, 0)
    n_new = params.new_items_per_day * params.days
    new_pub = start + rng.integers(0, params.days * 86400, size=n_new).astype("timedelta64[s]")
    items = _concat(items, _make_items(n_new, new_pub, rng, cat_vecs, params.n_items))
    streams = _Streams(rng, None, len(users.ids), len(items.ids))
    trending_bonus = None
    if params.shift is not None:
        users, items, trending_bonus, streams = _add_shift(
            params, params.shift, rng, users, items, cat_vecs
        )
    log = _EventLog()
    push_streams = _Streams(
        np.random.default_rng([params.seed, 1]),
        None if params.shift is None else np.random.default_rng([params.seed, 2]),
        streams.n_base_users,
        streams.n_base_items,
    )
    push = _PushState.start(push_streams, len(users.ids))
    churn = _simulate(params, streams, users, items, log, push, trending_bonus)
    counts = pd.Series([r["event_type"] for r in log.rows]).value_counts()
    meaningful = pd.Series(
        [r["user_id"] for r in log.rows if r["event_type"] in ENGAGEMENT_TYPES]
    ).value_counts()
    cold_share = float((meaningful.reindex(users.ids, fill_value=0) < 5).mean())
    valid, written, bad, days = _write_events(params, rng, log, store)
    changes = _draw_status_changes(params, items)
    _write_reference(params, users, items, changes, store)
    _write_latent(users, items, push.population, store)
    _write_spec(params, store)
    return WorldSummary(
        params=params,
        n_users=len(users.ids),
        n_items=len(items.ids),
        n_valid_events=valid,
        records_written=written,
        bad_records=bad,
        event_counts={str(k): int(v) for k, v in counts.items()},
        landed_days=days,
        cold_user_share=cold_share,
        beginner_churn=churn,
        shift_summary={}
        if params.shift is None
        else _summarize_shift(params, params.shift, users, items, log, streams.n_base_users),
        catalog_updates={
            status: sum(c.status == status for c in changes) for status in STATUS_CHANGE_RATES
        },
        status_changes=changes,
    )
