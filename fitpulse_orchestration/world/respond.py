"""How the synthetic world's users respond to feeds served by the online service.

``generate_world`` writes the world's hidden state (``LATENT_KEY``); this module loads it and
plays the world's users against logged exposures, so an experiment's arms get real outcomes.
The behaviour follows the generator's: position-biased clicks on the base affinity (taste
vectors, category taste, quality and level mismatch; no fatigue, recency or trending bonus),
then reads, watches, workout starts and completions with the generator's probabilities. A
return proxy adds one ``app_open`` when the user comes back within a horizon, more likely the
more served items they consumed.

The latent state is ground truth of the synthetic world. Only this simulation reads it; the
platform's ingestion, features and training see the landed events and nothing else.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from fitpulse_orchestration import layout
from fitpulse_orchestration.storage import ObjectStore
from fitpulse_orchestration.world.params import LATENT_KEY

EXPOSURE_COLUMNS: Final = ("request_id", "user_id", "item_id", "position", "ts", "platform")
"""Columns of an exposures frame: one row per served item (``position`` is the 0-based slot)."""

RETURN_BOOST: Final = 0.5
"""Relative increase of the daily return probability per consumed item (at most 3 count)."""
RETURN_CAP: Final = 0.95
"""Upper bound of the daily return probability."""
_RETURN_MAX_CONSUMED: Final = 3
SESSION_LOCAL_HOURS: Final = (6, 7, 8, 12, 13, 17, 18, 19, 20, 21)
"""Local hours at which sessions start, as in the generator's simulation."""


@dataclass(eq=False)
class WorldLatent:
    """The synthetic world's hidden user and item state, as written by ``generate_world``.

    ``user_*`` arrays have one row per user (order of ``user_ids``, the raw ``usr_`` ids that
    land in events); ``item_*`` arrays have one row per item (order of ``item_ids``).
    ``user_cat_taste`` is (n_users, n_categories) with columns following
    ``vocab.ALL_CATEGORIES`` (the trending column exists only in a shifted world), and
    ``item_category`` indexes those columns. Levels and difficulties are 0 beginner,
    1 intermediate, 2 advanced; ``item_duration`` is in minutes; ``user_utc_offset`` in hours.

    Attributes:
        user_ids: raw user ids, shape (n_users,).
        user_vec: taste vectors, shape (n_users, DIM).
        user_cat_taste: category taste (rows sum to 1), shape (n_users, n_categories).
        user_level: fitness level, shape (n_users,).
        user_activity: daily session probability, shape (n_users,).
        user_utc_offset: UTC offset in hours, shape (n_users,).
        user_platform: ios / android / web, shape (n_users,).
        item_ids: catalog ids, shape (n_items,).
        item_vec: item traits, shape (n_items, DIM).
        item_category: category column index, shape (n_items,).
        item_quality: quality (popularity), shape (n_items,).
        item_difficulty: difficulty, shape (n_items,).
        item_intensity: intensity (0 low to 2 high), shape (n_items,).
        user_opted_out: whether the user never receives pushes, shape (n_users,).
        user_push_peak_hour: local hour at which pushes suit the user best (``world.push``).
        user_push_sensitivity: the user's latent proneness to switching pushes off.
        item_type: workout / plan / article / video, shape (n_items,).
        item_duration: minutes (days for plans), shape (n_items,).
        taste_scale: multiplier of category taste in the affinity (the base category count).
    """

    user_ids: np.ndarray
    user_vec: np.ndarray
    user_cat_taste: np.ndarray
    user_level: np.ndarray
    user_activity: np.ndarray
    user_utc_offset: np.ndarray
    user_platform: np.ndarray
    user_opted_out: np.ndarray
    user_push_peak_hour: np.ndarray
    user_push_sensitivity: np.ndarray
    item_ids: np.ndarray
    item_vec: np.ndarray
    item_category: np.ndarray
    item_quality: np.ndarray
    item_difficulty: np.ndarray
    item_intensity: np.ndarray
    item_type: np.ndarray
    item_duration: np.ndarray
    taste_scale: int
    _user_row: dict[str, int] = field(init=False, repr=False)
    _item_row: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._user_row = {str(uid): row for row, uid in enumerate(self.user_ids)}
        self._item_row = {str(iid): row for row, iid in enumerate(self.item_ids)}

    def user_rows(self, user_ids: Iterable[Any]) -> np.ndarray:
        """Row of each raw user id, int64; -1 for ids the world does not know."""
        return np.array([self._user_row.get(str(uid), -1) for uid in user_ids], dtype=np.int64)

    def item_rows(self, item_ids: Iterable[Any]) -> np.ndarray:
        """Row of each item id, int64; -1 for ids the world does not know."""
        return np.array([self._item_row.get(str(iid), -1) for iid in item_ids], dtype=np.int64)

    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Base affinity of user rows for item rows, as in the generator's simulation.

        Args:
            users: user rows (non-negative), any shape that broadcasts with ``items``.
            items: item rows (non-negative).

        Returns:
            Float64 array of the broadcast shape: taste . traits + log(category taste x
            ``taste_scale`` + 1e-3) + quality - level mismatch (1.2 per level too hard, 0.3 per
            level too easy).
        """
        u, i = np.broadcast_arrays(np.asarray(users), np.asarray(items))
        level_gap = self.item_difficulty[i] - self.user_level[u]
        mismatch = np.where(level_gap > 0, 1.2 * level_gap, 0.3 * -level_gap)
        dot = np.einsum("...d,...d->...", self.user_vec[u], self.item_vec[i])
        taste = self.user_cat_taste[u, self.item_category[i]]
        result: np.ndarray = (
            dot + np.log(taste * self.taste_scale + 1e-3) + self.item_quality[i] - mismatch
        )
        return result


def load_latent(store: ObjectStore) -> WorldLatent:
    """Read the world's hidden state that ``generate_world`` wrote to ``LATENT_KEY``.

    Raises:
        FileNotFoundError: when ``store`` holds no generated world.
    """
    try:
        data = store.get_bytes(LATENT_KEY)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"no world latent state at {store.uri(LATENT_KEY)}: generate the world first "
            "(`fitpulse generate`, or generate_world)"
        ) from err
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        fields = {name: arrays[name] for name in arrays.files}
    fields["taste_scale"] = int(fields["taste_scale"])
    return WorldLatent(**fields)


@dataclass
class ResponseBatch:
    """Simulated responses to a set of exposures.

    Attributes:
        events: landing records (see ``events.schema``), clicks and their follow-ups in
            exposure order, then one ``app_open`` per returning user.
        unknown_users: distinct exposed user ids the world does not know (no response).
        unknown_items: distinct exposed item ids the world does not know (no response).
    """

    events: list[dict[str, Any]]
    unknown_users: int
    unknown_items: int


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def click_probability(affinity: np.ndarray, position: np.ndarray) -> np.ndarray:
    """P(click) of a served item at 0-based ``position``, as in the generator's feeds."""
    result: np.ndarray = _sigmoid(-2.6 + 1.1 * np.asarray(affinity)) / np.sqrt(
        1.0 + np.asarray(position)
    )
    return result


def consume_probability(kind: str, affinity: float) -> float:
    """P(read or watch) of a clicked article or video; P(start) of a clicked workout or plan."""
    if kind in ("article", "video"):
        return float(_sigmoid(0.5 + 0.6 * affinity))
    return float(_sigmoid(0.2 + 0.7 * affinity))


def completion_probability(too_hard: int) -> float:
    """P(complete) of a started workout ``too_hard`` levels above the user's (<= 0: not)."""
    return 0.8 if too_hard <= 0 else (0.35 if too_hard == 1 else 0.15)


def _record(
    event_id: str,
    event_type: str,
    user_id: str,
    ts: pd.Timestamp,
    platform: str,
    item_id: str | None = None,
    request_id: str | None = None,
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A landing record; optional fields that are None are left out, as the collector does."""
    rec: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "user_id": user_id,
        "ts": ts.isoformat(),
    }
    optional = {
        "item_id": item_id,
        "request_id": request_id,
        "platform": platform,
        "payload": payload,
    }
    rec.update({key: value for key, value in optional.items() if value is not None})
    return rec


def _platform(value: Any, fallback: Any) -> str:
    return str(fallback) if value is None or pd.isna(value) else str(value)


def simulate_feed_responses(
    latent: WorldLatent, exposures: pd.DataFrame, seed: int, horizon_days: int = 7
) -> ResponseBatch:
    """Simulate how the world's users respond to the feeds they were served.

    Each exposure is clicked with probability ``sigmoid(-2.6 + 1.1 x affinity) /
    sqrt(1 + position)`` (``WorldLatent.affinity``). A click is followed, as in the generator,
    by a read or watch (articles, videos) or a workout start and possibly a completion (whose
    payload holds only ``duration_s``). Clicks and follow-ups carry the exposure's
    ``request_id`` and get ids ``resp-<request_id>-<n>``. Then each known exposed user returns
    on day ``d`` (1..``horizon_days`` after the UTC date of their last exposure) with daily
    probability ``min(RETURN_CAP, activity x (1 + RETURN_BOOST x min(consumed, 3)))``, where
    ``consumed`` counts the served items they read, watched or started; the first return day
    gives one ``app_open`` (id ``resp-<last request_id>-return``) at a session hour local to
    the user.

    Args:
        latent: the world's hidden state (``load_latent``).
        exposures: one row per served item with ``EXPOSURE_COLUMNS``: ``user_id`` is the raw
            world id, ``position`` 0-based, ``ts`` the impression time (tz-aware; naive means
            UTC), and ``platform`` may be None (the user's own platform is used then).
        seed: seed of every draw; the same exposures and seed give the same events.
        horizon_days: days after the last exposure in which a return counts.

    Returns:
        The events, plus how many distinct unknown users and items got no response.

    Raises:
        ValueError: if a column is missing or ``horizon_days`` < 1.
    """
    missing = [col for col in EXPOSURE_COLUMNS if col not in exposures.columns]
    if missing:
        raise ValueError(f"exposures lack columns {missing}")
    if horizon_days < 1:
        raise ValueError("horizon_days must be at least 1")
    rng = np.random.default_rng(seed)
    frame = exposures.loc[:, list(EXPOSURE_COLUMNS)].copy()
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["position"] = frame["position"].astype("int64")
    frame["user_row"] = latent.user_rows(frame["user_id"])
    frame["item_row"] = latent.item_rows(frame["item_id"])
    unknown_users = int(frame.loc[frame["user_row"] < 0, "user_id"].nunique())
    unknown_items = int(frame.loc[frame["item_row"] < 0, "item_id"].nunique())
    # Input row order must not change the draws.
    frame = frame[frame["user_row"] >= 0].sort_values(
        ["ts", "request_id", "position"], kind="mergesort", ignore_index=True
    )
    known = frame[frame["item_row"] >= 0].reset_index(drop=True)

    users = known["user_row"].to_numpy()
    items = known["item_row"].to_numpy()
    aff = latent.affinity(users, items)
    p_click = click_probability(aff, known["position"].to_numpy())
    clicked = np.flatnonzero(rng.random(len(known)) < p_click)

    events: list[dict[str, Any]] = []
    consumed = np.zeros(len(latent.user_ids), dtype=np.int64)
    clock: dict[str, pd.Timestamp] = {}
    counter: dict[str, int] = defaultdict(int)

    def emit(
        event_type: str,
        ts: pd.Timestamp,
        common: dict[str, str],
        payload: dict[str, Any] | None = None,
    ) -> None:
        counter[common["request_id"]] += 1
        event_id = f"resp-{common['request_id']}-{counter[common['request_id']]}"
        events.append(_record(event_id, event_type, ts=ts, payload=payload, **common))

    for row in clicked:
        u, it = int(users[row]), int(items[row])
        request_id = str(known.at[row, "request_id"])
        t = clock.get(request_id, known.at[row, "ts"]) + pd.Timedelta(
            seconds=int(rng.integers(5, 90))
        )
        clock[request_id] = t
        common = {
            "user_id": str(known.at[row, "user_id"]),
            "item_id": str(latent.item_ids[it]),
            "request_id": request_id,
            "platform": _platform(known.at[row, "platform"], latent.user_platform[u]),
        }
        emit("click", t, common)
        kind = str(latent.item_type[it])
        t2 = t + pd.Timedelta(seconds=int(rng.integers(10, 120)))
        if kind in ("article", "video"):
            if rng.random() < consume_probability(kind, float(aff[row])):
                etype = "article_read" if kind == "article" else "video_watch"
                emit(etype, t2, common, {"seconds": int(latent.item_duration[it]) * 60})
                consumed[u] += 1
            continue
        if rng.random() >= consume_probability(kind, float(aff[row])):
            continue
        emit("workout_start", t2, common)
        consumed[u] += 1
        too_hard = int(latent.item_difficulty[it]) - int(latent.user_level[u])
        if rng.random() < completion_probability(too_hard):
            minutes = int(latent.item_duration[it]) if kind == "workout" else 30
            emit(
                "workout_complete",
                t2 + pd.Timedelta(minutes=minutes),
                common,
                {"duration_s": minutes * 60},
            )

    events.extend(_returns(latent, frame, consumed, rng, horizon_days))
    return ResponseBatch(events, unknown_users, unknown_items)


def _returns(
    latent: WorldLatent,
    frame: pd.DataFrame,
    consumed: np.ndarray,
    rng: np.random.Generator,
    horizon_days: int,
) -> list[dict[str, Any]]:
    """One ``app_open`` per user in ``frame`` (known users' exposures, in time order) who returns.

    ``consumed`` is indexed by user row; see ``simulate_feed_responses`` for the model.
    """
    if frame.empty:
        return []
    last = frame.groupby("user_row", sort=True).agg(
        user_id=("user_id", "last"),
        ts=("ts", "last"),
        request_id=("request_id", "last"),
        platform=("platform", "last"),
    )
    rows = last.index.to_numpy()
    boost = 1.0 + RETURN_BOOST * np.minimum(consumed[rows], _RETURN_MAX_CONSUMED)
    p_return = np.minimum(RETURN_CAP, latent.user_activity[rows] * boost)
    returns = rng.random((rows.size, horizon_days)) < p_return[:, None]
    local_hours = rng.choice(SESSION_LOCAL_HOURS, size=rows.size)
    seconds = rng.integers(0, 3600, size=rows.size)
    events = []
    for k, u in enumerate(rows):
        if not returns[k].any():
            continue
        day = int(np.argmax(returns[k])) + 1
        utc_hour = (int(local_hours[k]) - int(latent.user_utc_offset[u])) % 24
        ts = last["ts"].iloc[k].normalize() + pd.Timedelta(
            days=day, hours=utc_hour, seconds=int(seconds[k])
        )
        events.append(
            _record(
                f"resp-{last['request_id'].iloc[k]}-return",
                "app_open",
                user_id=str(last["user_id"].iloc[k]),
                ts=ts,
                platform=_platform(last["platform"].iloc[k], latent.user_platform[u]),
            )
        )
    return events


def write_landing_events(store: ObjectStore, events: list[dict[str, Any]], batch: str) -> list[str]:
    """Write landing records as hourly gzipped NDJSON batches, like the app's collector.

    Each record lands in the batch of the UTC date and hour of its ``ts``, at
    ``layout.landing_events_key(day, hour, batch)``; a batch already there under the same name
    is replaced, so ``batch`` should name one simulation run (e.g. ``resp-<experiment>-<seed>``).

    Args:
        store: the object store of the landing zone.
        events: records with an ISO-8601 ``ts`` that carries an offset.
        batch: batch file name (without suffix), shared by every hour written.

    Returns:
        The keys written, sorted.

    Raises:
        ValueError: if a ``ts`` has no offset.
    """
    lines: dict[tuple[dt.date, int], list[str]] = defaultdict(list)
    for event in events:
        ts = pd.Timestamp(event["ts"])
        if ts.tzinfo is None:
            raise ValueError(f"event {event.get('event_id')!r} has a ts without offset")
        ts = ts.tz_convert("UTC")
        lines[(ts.date(), ts.hour)].append(json.dumps(event))
    keys = []
    for (day, hour), batch_lines in sorted(lines.items()):
        key = layout.landing_events_key(day, hour, batch)
        store.put_bytes(key, gzip.compress(("\n".join(batch_lines) + "\n").encode(), mtime=0))
        keys.append(key)
    return keys
