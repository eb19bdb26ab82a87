"""Push features: one function computes them offline (training, evaluation) and online (serving).

A ``PushHistory`` holds one user's push-relevant event times (pushes sent, opened, dismissed,
app opens, engagements with their categories) and profile facts (level, timezone, opt-out,
when they switched notifications off). ``push_features(history, at, item)`` turns it into the
feature vector of a push of ``item`` at ``at``, counting only events strictly before ``at``.
Training examples call it with each user's full history at each logged decision; the online
store keeps each user's last ``HISTORY_DAYS`` of events and serving calls the very same
function at request time, so there is no second implementation to drift.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from fitpulse_orchestration.events.schema import ENGAGEMENT_TYPES
from fitpulse_orchestration.features.point_in_time import ITEM_TYPES
from fitpulse_orchestration.features.reference import (
    DIFFICULTY_ORDINAL,
    INTENSITY_ORDINAL,
    LEVEL_ORDINAL,
    UNKNOWN,
    publication_times,
    treated_as_beginner,
    unsafe_for_beginners,
)
from fitpulse_orchestration.storage.online_store import CorruptRecordError

HISTORY_DAYS: Final = 28
HOUR_S: Final = 3600.0
DAY_S: Final = 86400.0
CAP_HOURS: Final = 24.0 * HISTORY_DAYS
"""``hours_since_*`` of a user with no such event in the history window."""

PUSH_FEATURES: Final = (
    "local_hour",
    "weekend",
    "fitness_level",
    "hours_since_push",
    "pushes_1d",
    "pushes_7d",
    "pushes_28d",
    "opens_28d",
    "dismisses_28d",
    "open_rate_28d",
    "hours_since_app_open",
    "app_opens_7d",
    "engagements_7d",
    "engagements_28d",
    "item_type",
    "item_difficulty",
    "item_intensity",
    "item_duration_min",
    "item_age_days",
    "category_share_28d",
    "level_gap",
)
CATEGORICAL_FEATURES: Final = ("item_type",)


@lru_cache(maxsize=512)
def _zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def local_time(at: float, timezone: str) -> dt.datetime:
    """``at`` (epoch seconds) in the user's IANA timezone (UTC when unknown)."""
    return dt.datetime.fromtimestamp(at, _zone(timezone))


@dataclass(frozen=True)
class PushItem:
    """What a push needs to know about a catalog item."""

    item_id: str
    item_type: str
    category: str
    difficulty: float
    intensity: float
    duration_min: float
    published: float
    """Epoch seconds; NaN when the catalog does not know it."""
    unsafe_for_beginners: bool


def push_items(catalog: pd.DataFrame) -> dict[str, PushItem]:
    """Item id -> ``PushItem`` for every catalog row."""
    published = publication_times(catalog)
    unsafe = unsafe_for_beginners(catalog).to_numpy()
    epoch = (published.dt.tz_convert("UTC").astype("int64") / 1e9).where(published.notna())
    out = {}
    for row, rec in enumerate(catalog.itertuples(index=False)):
        out[str(rec.item_id)] = PushItem(
            item_id=str(rec.item_id),
            item_type=str(rec.item_type),
            category=str(rec.category),
            difficulty=float(DIFFICULTY_ORDINAL.get(str(rec.difficulty), np.nan)),
            intensity=float(INTENSITY_ORDINAL.get(str(rec.intensity), np.nan)),
            duration_min=float(rec.duration_min) if pd.notna(rec.duration_min) else np.nan,
            published=float(epoch.iloc[row]),
            unsafe_for_beginners=bool(unsafe[row]),
        )
    return out


def _vector(values: Any, dtype: type) -> np.ndarray:
    """``values`` as a 1-D array; ``ValueError`` for anything else (a scalar, a table)."""
    array: np.ndarray = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"expected a list, got {values!r}")
    return array


def _times(values: Any) -> np.ndarray:
    return np.sort(_vector(values, float))


@dataclass
class PushHistory:
    """One user's push-relevant past (epoch seconds, sorted) and profile facts."""

    fitness_level: str = UNKNOWN
    timezone: str = "UTC"
    opted_out: bool = False
    disabled_at: float | None = None
    """When the user first switched notifications off (``push_disable``), or None."""
    sent: np.ndarray = field(default_factory=lambda: np.empty(0))
    opened: np.ndarray = field(default_factory=lambda: np.empty(0))
    dismissed: np.ndarray = field(default_factory=lambda: np.empty(0))
    app_opens: np.ndarray = field(default_factory=lambda: np.empty(0))
    engaged: np.ndarray = field(default_factory=lambda: np.empty(0))
    engaged_category: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))

    @property
    def level(self) -> float:
        """Fitness level as an ordinal (NaN when unknown)."""
        return float(LEVEL_ORDINAL.get(self.fitness_level, np.nan))

    @property
    def is_beginner(self) -> bool:
        """Beginner-safe content only: beginners and users of unknown level."""
        return treated_as_beginner(self.fitness_level)

    def notifications_off(self, at: float) -> bool:
        """Opted out in the profile, or switched notifications off before ``at``."""
        return self.opted_out or (self.disabled_at is not None and self.disabled_at <= at)

    def last_app_open(self, at: float) -> float | None:
        """The latest app open strictly before ``at``."""
        i = int(np.searchsorted(self.app_opens, at, side="left"))
        return float(self.app_opens[i - 1]) if i else None

    def sends_between(self, start: float, end: float) -> np.ndarray:
        """Send times in ``(start, end)``."""
        lo = int(np.searchsorted(self.sent, start, side="right"))
        hi = int(np.searchsorted(self.sent, end, side="left"))
        return self.sent[lo:hi]

    def with_send(self, at: float) -> PushHistory:
        """A copy with one more push sent at ``at``."""
        sent = np.sort(np.append(self.sent, at))
        return PushHistory(**{**vars(self), "sent": sent})

    def since(self, start: float) -> PushHistory:
        """A copy keeping only events at or after ``start`` (what the online store keeps)."""

        def keep(a: np.ndarray) -> np.ndarray:
            return a[a >= start]

        mask = self.engaged >= start
        return PushHistory(
            fitness_level=self.fitness_level,
            timezone=self.timezone,
            opted_out=self.opted_out,
            disabled_at=self.disabled_at,
            sent=keep(self.sent),
            opened=keep(self.opened),
            dismissed=keep(self.dismissed),
            app_opens=keep(self.app_opens),
            engaged=self.engaged[mask],
            engaged_category=self.engaged_category[mask],
        )

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict (what the online store keeps); times in whole seconds."""

        def ints(a: np.ndarray) -> list[int]:
            return [round(float(x)) for x in a]

        return {
            "level": self.fitness_level,
            "tz": self.timezone,
            "opt_out": self.opted_out,
            "off": None if self.disabled_at is None else round(self.disabled_at),
            "sent": ints(self.sent),
            "open": ints(self.opened),
            "dism": ints(self.dismissed),
            "app": ints(self.app_opens),
            "eng": ints(self.engaged),
            "cat": [str(c) for c in self.engaged_category],
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PushHistory:
        """Inverse of ``to_record``.

        Raises:
            CorruptRecordError: when a field does not have the shape ``to_record`` writes.
        """
        off = record.get("off")
        try:
            return cls(
                fitness_level=str(record.get("level", UNKNOWN)),
                timezone=str(record.get("tz", "UTC")),
                opted_out=bool(record.get("opt_out", False)),
                disabled_at=None if off is None else float(off),
                sent=_times(record.get("sent", [])),
                opened=_times(record.get("open", [])),
                dismissed=_times(record.get("dism", [])),
                app_opens=_times(record.get("app", [])),
                engaged=_vector(record.get("eng", []), float),
                engaged_category=_vector(record.get("cat", []), object),
            )
        except (TypeError, ValueError) as exc:
            raise CorruptRecordError(f"a push record of the wrong shape: {exc}") from None


def _count(times: np.ndarray, at: float, window_s: float) -> int:
    """Events in ``(at - window_s, at)``."""
    return int(
        np.searchsorted(times, at, side="left")
        - np.searchsorted(times, at - window_s, side="right")
    )


def _hours_since(times: np.ndarray, at: float) -> float:
    i = int(np.searchsorted(times, at, side="left"))
    if i == 0:
        return CAP_HOURS
    return min((at - float(times[i - 1])) / HOUR_S, CAP_HOURS)


def push_features(history: PushHistory, at: float, item: PushItem | None) -> np.ndarray:
    """The ``PUSH_FEATURES`` vector of a push of ``item`` to this user at ``at`` (epoch s).

    Only events strictly before ``at`` count; item features are NaN without an item.
    """
    user, window = _user_values(history, at)
    return np.array([*user, *_item_values(history, at, item, window)])


def push_feature_matrix(history: PushHistory, at: float, items: Sequence[PushItem]) -> np.ndarray:
    """``push_features`` of each of ``items`` as rows, the user's part computed once.

    Equal, value for value, to stacking ``push_features(history, at, item)`` per item: both
    call the same two helpers.
    """
    user, window = _user_values(history, at)
    rows = [[*user, *_item_values(history, at, item, window)] for item in items]
    return np.array(rows, dtype=float).reshape(len(items), len(PUSH_FEATURES))


def _user_values(history: PushHistory, at: float) -> tuple[list[float], tuple[int, int]]:
    """The user's ``PUSH_FEATURES`` (all but the item's) and the 28-day engagement slice."""
    local = local_time(at, history.timezone)
    window = HISTORY_DAYS * DAY_S
    pushes_28d = _count(history.sent, at, window)
    opens_28d = _count(history.opened, at, window)
    lo = int(np.searchsorted(history.engaged, at - window, side="right"))
    hi = int(np.searchsorted(history.engaged, at, side="left"))
    values = [
        float(local.hour),
        float(local.weekday() >= 5),
        history.level,
        _hours_since(history.sent, at),
        float(_count(history.sent, at, DAY_S)),
        float(_count(history.sent, at, 7 * DAY_S)),
        float(pushes_28d),
        float(opens_28d),
        float(_count(history.dismissed, at, window)),
        (opens_28d + 0.5) / (pushes_28d + 2.0),
        _hours_since(history.app_opens, at),
        float(_count(history.app_opens, at, 7 * DAY_S)),
        float(_count(history.engaged, at, 7 * DAY_S)),
        float(hi - lo),
    ]
    return values, (lo, hi)


def _item_values(
    history: PushHistory, at: float, item: PushItem | None, window: tuple[int, int]
) -> list[float]:
    """The item's ``PUSH_FEATURES`` for this user (``window``: ``_user_values``'s slice)."""
    if item is None:
        return [np.nan] * 7
    lo, hi = window
    in_category = int(np.count_nonzero(history.engaged_category[lo:hi] == item.category))
    age = (at - item.published) / DAY_S if np.isfinite(item.published) else np.nan
    return [
        float(ITEM_TYPES.index(item.item_type)) if item.item_type in ITEM_TYPES else np.nan,
        item.difficulty,
        item.intensity,
        item.duration_min,
        age,
        (in_category + 0.5) / ((hi - lo) + 5.0),
        item.difficulty - history.level,
    ]


def epoch_seconds(ts: pd.Series) -> np.ndarray:
    """UTC epoch seconds (float) of a tz-aware timestamp column."""
    return np.asarray(ts.dt.tz_convert("UTC").astype("int64").to_numpy() / 1e9, dtype=float)


def compute_push_histories(
    events: pd.DataFrame,
    catalog: pd.DataFrame,
    profiles: pd.DataFrame,
    as_of: pd.Timestamp | None = None,
    user_ids: Any = None,
) -> dict[str, PushHistory]:
    """Each user's push history from clean events strictly before ``as_of`` (all without).

    With ``as_of`` the history keeps only the last ``HISTORY_DAYS`` (the online store's
    record); every id in ``user_ids`` (default: every profiled or active user) is present.
    """
    frame = events
    if as_of is not None:
        frame = frame[frame["ts"] < as_of]
    wanted = pd.Index(profiles["user_id"] if user_ids is None else user_ids, dtype=object).astype(
        str
    )
    if user_ids is None:
        wanted = wanted.union(pd.Index(frame["user_id"].unique()).astype(str))
    categories = catalog.set_index("item_id")["category"]
    kinds = {
        "sent": frame["event_type"] == "push_sent",
        "opened": frame["event_type"] == "push_open",
        "dismissed": frame["event_type"] == "push_dismiss",
        "app_opens": frame["event_type"] == "app_open",
        "engaged": frame["event_type"].isin(list(ENGAGEMENT_TYPES)),
        "off": frame["event_type"] == "push_disable",
    }
    grouped = {
        kind: {
            str(user): group
            for user, group in frame.loc[mask, ["user_id", "ts", "item_id"]].groupby("user_id")
        }
        for kind, mask in kinds.items()
    }
    profile = profiles.set_index("user_id")
    start = None if as_of is None else float(as_of.timestamp()) - HISTORY_DAYS * DAY_S
    out: dict[str, PushHistory] = {}
    empty = pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]"), "item_id": []})
    for user in wanted:
        rows = {kind: grouped[kind].get(user, empty) for kind in kinds}
        engaged = rows["engaged"].sort_values("ts")
        off = rows["off"]
        known = user in profile.index
        history = PushHistory(
            fitness_level=str(profile.at[user, "fitness_level"]) if known else UNKNOWN,
            timezone=str(profile.at[user, "timezone"]) if known else "UTC",
            opted_out=bool(profile.at[user, "push_opt_out"]) if known else False,
            disabled_at=float(epoch_seconds(off["ts"]).min()) if len(off) else None,
            sent=_times(epoch_seconds(rows["sent"]["ts"])),
            opened=_times(epoch_seconds(rows["opened"]["ts"])),
            dismissed=_times(epoch_seconds(rows["dismissed"]["ts"])),
            app_opens=_times(epoch_seconds(rows["app_opens"]["ts"])),
            engaged=epoch_seconds(engaged["ts"]),
            engaged_category=engaged["item_id"].map(categories).fillna(UNKNOWN).to_numpy(object),
        )
        out[user] = history if start is None else history.since(start)
    return out


def parse_payload(payload: Any) -> dict[str, Any]:
    """A clean event's JSON payload as a dict (empty when absent or not an object)."""
    if not isinstance(payload, str) or not payload:
        return {}
    try:
        value = json.loads(payload)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
