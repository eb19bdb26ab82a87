"""What the world writes: collector batches with bad records, reference files, latent state."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import zipfile
from collections import defaultdict
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from fitpulse_orchestration import layout
from fitpulse_orchestration.storage import ObjectStore, write_parquet
from fitpulse_orchestration.world import push as world_push
from fitpulse_orchestration.world import vocab
from fitpulse_orchestration.world.engagement import EventLog, iso
from fitpulse_orchestration.world.params import (
    BAD_KINDS,
    LATENT_KEY,
    SPEC_KEY,
    STATUS_CHANGE_MIN_ITEMS,
    STATUS_CHANGE_RATES,
    ShiftParams,
    StatusChange,
    WorldParams,
)
from fitpulse_orchestration.world.population import Items, Users


def record(row: dict[str, Any]) -> dict[str, Any]:
    """An event row as the collector writes it (absent optional fields left out)."""
    rec: dict[str, Any] = {
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "user_id": row["user_id"],
        "ts": iso(row["ts"]),
    }
    for key in ("item_id", "request_id", "position", "session_id", "platform", "payload"):
        value = row.get(key)
        if value is not None:
            rec[key] = value
    return rec


def corrupt(kind: str, rec: dict[str, Any], rng: np.random.Generator) -> str:
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
        rec["ts"] = iso(ts)
    return json.dumps(rec)


def write_events(
    p: WorldParams, rng: np.random.Generator, log: EventLog, store: ObjectStore
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
        rec = record(row)
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
            batches[(day, hour)].append(corrupt(kind, rec, rng))
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


def users_frame(users: Users, idx: np.ndarray) -> pd.DataFrame:
    """The profile rows of users ``idx``, in the landing zone's columns."""
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


def items_frame(items: Items, idx: np.ndarray) -> pd.DataFrame:
    """The catalog rows of items ``idx``, in the landing zone's columns."""
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


def draw_status_changes(p: WorldParams, items: Items) -> list[StatusChange]:
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


def write_reference(
    p: WorldParams,
    users: Users,
    items: Items,
    changes: list[StatusChange],
    store: ObjectStore,
) -> None:
    """Land the catalog and profile files: the start's, each day's new ones, status updates."""
    start = np.datetime64(p.start_date.isoformat(), "s")
    pre_users = np.flatnonzero(users.signup < start)
    write_parquet(
        store,
        layout.landing_reference_key(layout.LANDING_USERS, p.start_date, "snapshot"),
        users_frame(users, pre_users),
    )
    pre_items = np.flatnonzero(items.published < start)
    write_parquet(
        store,
        layout.landing_reference_key(layout.LANDING_CATALOG, p.start_date, "snapshot"),
        items_frame(items, pre_items),
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
                users_frame(users, new_users),
            )
        new_items = np.flatnonzero((items.published >= lo) & (items.published < hi))
        hours = ((items.published[new_items] - lo).astype(int) // 3600).astype(int)
        for hour in np.unique(hours):
            write_parquet(
                store,
                layout.landing_reference_key(layout.LANDING_CATALOG, day, f"items-{hour:02d}"),
                items_frame(items, new_items[hours == hour]),
            )
    # Full rows with the new status, so that the later file wins (see ``layout``).
    position = {item_id: i for i, item_id in enumerate(items.ids.tolist())}
    hourly: dict[tuple[dt.date, int], list[StatusChange]] = defaultdict(list)
    for change in changes:
        hourly[(change.at.date(), change.at.hour)].append(change)
    for (day, hour), group in sorted(hourly.items()):
        rows = items_frame(items, np.array([position[c.item_id] for c in group], dtype=int))
        write_parquet(
            store,
            layout.landing_reference_key(layout.LANDING_CATALOG, day, f"updates-{hour:02d}"),
            rows.assign(status=[c.status for c in group]),
        )


def write_latent(
    users: Users, items: Items, push: world_push.PushPopulation, store: ObjectStore
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


def write_spec(p: WorldParams, store: ObjectStore) -> None:
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
