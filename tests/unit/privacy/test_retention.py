from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.ingest import ingest_day, write_ingested
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.privacy.raw_zone import EVENT_ZONES
from fitpulse_orchestration.privacy.retention import (
    RETENTION_30D_REGIONS,
    RetentionPolicy,
    expired_restricted_records,
    load_user_regions,
    sweep_expired_events,
)
from fitpulse_orchestration.serving.logs import SERVED_FEATURES, served_features_key
from fitpulse_orchestration.serving.shadow import shadow_key
from fitpulse_orchestration.storage import LocalObjectStore, read_parquet, write_parquet

NOW = dt.datetime(2026, 11, 21, 9, 30, tzinfo=dt.UTC)
LAST_EXPIRED = dt.date(2026, 10, 23)
"""``NOW`` expires the first 5 of the tiny world's 14 landed days (2026-10-19 .. 2026-11-01)."""

TABLE_ZONES = ("clean", "quarantine", "served", "shadow")
PREFIXES = {
    "landing": f"{layout.LANDING_EVENTS}/",
    "clean": f"{layout.WAREHOUSE_EVENTS}/",
    "quarantine": f"{layout.WAREHOUSE_QUARANTINE}/",
    "served": f"{SERVED_FEATURES}/",
    "shadow": f"{layout.SHADOW_LOGS}/",
}

Records = dict[str, dict[str, Any]]
"""zone -> key -> records (landing: the batch's lines; the other zones: the Parquet frame)."""


# ---------------------------------------------------------------- a writable tiny world


@pytest.fixture
def world(ingested_world: LocalObjectStore, pseudonymizer: Pseudonymizer) -> LocalObjectStore:
    """A tiny world of this test alone: every landed day ingested, plus served-feature logs."""
    _write_served_logs(ingested_world, pseudonymizer)
    return ingested_world


def _write_served_logs(store: LocalObjectStore, pseudonymizer: Pseudonymizer) -> None:
    """Served features of 2 restricted, 2 other and 1 unprofiled user, on two days each."""
    regions = _profile_regions(store)
    restricted = sorted(u for u, r in regions.items() if r in RETENTION_30D_REGIONS)[:2]
    other = sorted(u for u, r in regions.items() if r not in RETENTION_30D_REGIONS)[:2]
    users = [pseudonymizer.pseudonymize(u) for u in [*restricted, *other]] + ["p_nobody"]
    for day in ("2026-10-20", "2026-10-22", "2026-10-29"):
        rows = [(u, f"wk_{i}", 0.1 * i) for i, u in enumerate(users * 2)]
        frame = pd.DataFrame(rows, columns=["user_id", "item_id", "score"])
        write_parquet(store, served_features_key(day, "batch-a"), frame)
        write_parquet(store, shadow_key(day, "batch-a"), frame)


# ---------------------------------------------------------------- independent accounting


def _lines(store: LocalObjectStore, key: str) -> list[str]:
    return gzip.decompress(store.get_bytes(key)).decode("utf-8").splitlines()


def _raw_user(line: str) -> str | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    user = record.get("user_id") if isinstance(record, dict) else None
    return user if isinstance(user, str) and user else None


def _profile_regions(store: LocalObjectStore) -> dict[str, str]:
    """Raw id -> region of the latest landed profile (files in landing order)."""
    regions: dict[str, str] = {}
    for key in sorted(store.list_keys(f"{layout.LANDING_USERS}/")):
        frame = read_parquet(store, key)
        regions.update(zip(frame["user_id"], frame["region"], strict=True))
    return regions


def _snapshot(store: LocalObjectStore) -> Records:
    records: Records = {"landing": {}}
    for key in store.list_keys(PREFIXES["landing"]):
        records["landing"][key] = _lines(store, key)
    for zone in TABLE_ZONES:
        records[zone] = {key: read_parquet(store, key) for key in store.list_keys(PREFIXES[zone])}
    return records


def _object_bytes(store: LocalObjectStore, prefix: str = "") -> dict[str, bytes]:
    return {key: store.get_bytes(key) for key in store.list_keys(prefix)}


def _restricted_masks(
    records: Records,
    regions: dict[str, str],
    pseudonymizer: Pseudonymizer,
    landed: dict[str, list[str]] | None = None,
) -> dict[str, dict[str, list[bool]]]:
    """Per zone and object, which records are restricted (region restricted or unknown).

    Clean rows are judged by the landed line they came from (``source_file``, ``line_no`` in
    ``landed``, the batches as ingested; by default those of ``records``), not by their
    pseudonym; served rows by their pseudonym.
    """
    landed = records["landing"] if landed is None else landed

    def restricted(raw_user: str | None) -> bool:
        region = regions.get(raw_user) if raw_user is not None else None
        return region is None or region in RETENTION_30D_REGIONS

    by_pseudonym = {pseudonymizer.pseudonymize(u): r for u, r in regions.items()}
    masks: dict[str, dict[str, list[bool]]] = {zone: {} for zone in records}
    for key, lines in records["landing"].items():
        masks["landing"][key] = [restricted(_raw_user(line)) for line in lines]
    for key, frame in records["clean"].items():
        masks["clean"][key] = [
            restricted(_raw_user(landed[source][line_no - 1]))
            for source, line_no in zip(frame["source_file"], frame["line_no"], strict=True)
        ]
    for key, frame in records["quarantine"].items():
        masks["quarantine"][key] = [restricted(_raw_user(raw)) for raw in frame["raw"]]
    for zone in ("served", "shadow"):
        for key, frame in records[zone].items():
            masks[zone][key] = [
                by_pseudonym.get(u) is None or by_pseudonym[u] in RETENTION_30D_REGIONS
                for u in frame["user_id"]
            ]
    return masks


def _expired(key: str) -> bool:
    return layout.date_of_key(key) <= LAST_EXPIRED


def _count(masks: dict[str, list[bool]], keep: Callable[[str], bool], value: bool) -> int:
    return sum(m.count(value) for key, m in masks.items() if keep(key))


# ---------------------------------------------------------------- the policy


def test_last_expired_day_is_29_days_before_the_sweep() -> None:
    policy = RetentionPolicy()

    assert policy.max_age_days == 30
    assert policy.regions == RETENTION_30D_REGIONS == {"eu-west", "eu-central", "uk"}
    assert policy.last_expired_day(NOW) == LAST_EXPIRED
    assert policy.last_expired_day(NOW.replace(hour=23, minute=59)) == LAST_EXPIRED
    assert RetentionPolicy(max_age_days=1).last_expired_day(NOW) == NOW.date()
    with pytest.raises(ValueError, match="max_age_days must be at least 1"):
        RetentionPolicy(max_age_days=0)


# ---------------------------------------------------------------- sweeps of the tiny world


def test_dry_run_counts_the_restricted_records_of_expired_days_and_deletes_nothing(
    world: LocalObjectStore, pseudonymizer: Pseudonymizer
) -> None:
    records = _snapshot(world)
    masks = _restricted_masks(records, _profile_regions(world), pseudonymizer)
    before = _object_bytes(world)

    report = expired_restricted_records(world, pseudonymizer, NOW)

    assert report.last_expired_day == LAST_EXPIRED.isoformat()
    assert set(report.zones) == set(EVENT_ZONES)
    for zone in EVENT_ZONES:
        counts = report.zones[zone]
        expected = _count(masks[zone], _expired, True)
        assert expected > 0, zone
        assert counts.records_deleted == expected, zone
        assert counts.records_kept == _count(masks[zone], _expired, False), zone
        assert counts.objects_scanned == sum(1 for key in masks[zone] if _expired(key)), zone
        assert (counts.objects_rewritten, counts.objects_deleted) == (0, 0), zone
    assert report.records_deleted == sum(
        _count(masks[zone], _expired, True) for zone in EVENT_ZONES
    )
    assert report.unreadable_objects == []
    assert _object_bytes(world) == before


def test_sweep_deletes_exactly_the_restricted_records_of_expired_days(
    world: LocalObjectStore, pseudonymizer: Pseudonymizer
) -> None:
    regions = _profile_regions(world)
    records = _snapshot(world)
    masks = _restricted_masks(records, regions, pseudonymizer)
    fresh_before = {z: _object_bytes(world, p) for z, p in PREFIXES.items()}
    profiles_before = _object_bytes(world, f"{layout.LANDING_USERS}/")

    report = sweep_expired_events(world, pseudonymizer, NOW)

    for zone in EVENT_ZONES:
        counts = report.zones[zone]
        assert counts.records_deleted == _count(masks[zone], _expired, True), zone
        assert counts.records_kept == _count(masks[zone], _expired, False), zone
        assert counts.unreadable_objects == [], zone
    # Expired objects hold exactly their non-restricted records, in their order; an object
    # left empty is gone.
    for key, lines in records["landing"].items():
        if not _expired(key):
            continue
        kept = [line for line, r in zip(lines, masks["landing"][key], strict=True) if not r]
        if kept:
            assert _lines(world, key) == kept, key
        else:
            assert not world.exists(key), key
    for zone in TABLE_ZONES:
        for key, frame in records[zone].items():
            if not _expired(key):
                continue
            keep = [not r for r in masks[zone][key]]
            expected = frame.loc[keep].reset_index(drop=True)
            if expected.empty:
                assert not world.exists(key), key
            else:
                pd.testing.assert_frame_equal(read_parquet(world, key), expected)
    # Checked again from the files alone: no restricted record is left in an expired day,
    # the non-restricted ones all are.
    after = _snapshot(world)
    after_masks = _restricted_masks(after, regions, pseudonymizer, records["landing"])
    for zone in EVENT_ZONES:
        assert _count(after_masks[zone], _expired, True) == 0, zone
        assert _count(after_masks[zone], _expired, False) == _count(masks[zone], _expired, False), (
            zone
        )
        assert _count(after_masks[zone], _expired, False) > 0, zone
    # Days that have not expired, and the profiles, are untouched, byte for byte.
    for zone, prefix in PREFIXES.items():
        fresh_after = _object_bytes(world, prefix)
        assert {k: v for k, v in fresh_after.items() if not _expired(k)} == {
            k: v for k, v in fresh_before[zone].items() if not _expired(k)
        }, zone
        assert any(not _expired(k) for k in fresh_after), zone
    assert _object_bytes(world, f"{layout.LANDING_USERS}/") == profiles_before


def test_a_swept_store_verifies_clean_and_a_second_sweep_deletes_nothing(
    world: LocalObjectStore, pseudonymizer: Pseudonymizer
) -> None:
    pending = expired_restricted_records(world, pseudonymizer, NOW)
    sweep_expired_events(world, pseudonymizer, NOW)
    swept = _object_bytes(world)

    verified = expired_restricted_records(world, pseudonymizer, NOW)
    again = sweep_expired_events(world, pseudonymizer, NOW)

    assert pending.records_deleted > 0
    for report in (verified, again):
        assert report.records_deleted == 0
        assert report.unreadable_objects == []
        for zone in EVENT_ZONES:
            counts = report.zones[zone]
            assert counts.records_deleted == 0, zone
            assert counts.records_kept == pending.zones[zone].records_kept, zone
            assert (counts.objects_rewritten, counts.objects_deleted) == (0, 0), zone
    assert _object_bytes(world) == swept


def test_an_unreadable_expired_batch_is_deleted_whole_and_listed(
    world: LocalObjectStore, pseudonymizer: Pseudonymizer
) -> None:
    expired_key = layout.landing_events_key(dt.date(2026, 10, 20), 5, "torn")
    fresh_key = layout.landing_events_key(dt.date(2026, 10, 30), 5, "torn")
    for key in (expired_key, fresh_key):
        world.put_bytes(key, b'this is not gzip {"user_id": "usr_0000001"}')

    pending = expired_restricted_records(world, pseudonymizer, NOW)
    assert pending.zones["landing"].unreadable_objects == [expired_key]
    assert world.exists(expired_key)

    report = sweep_expired_events(world, pseudonymizer, NOW)

    assert report.zones["landing"].unreadable_objects == [expired_key]
    assert report.unreadable_objects == [expired_key]
    assert report.zones["landing"].objects_deleted >= 1
    assert not world.exists(expired_key)
    assert world.get_bytes(fresh_key).startswith(b"this is not gzip")
    assert expired_restricted_records(world, pseudonymizer, NOW).unreadable_objects == []


def test_objects_without_a_day_are_listed_and_the_sweep_goes_on(
    world: LocalObjectStore, pseudonymizer: Pseudonymizer
) -> None:
    clean = expired_restricted_records(world, pseudonymizer, NOW)
    stray_landing = f"{layout.LANDING_EVENTS}/notes.txt"
    stray_clean = f"{layout.WAREHOUSE_EVENTS}/date=bogus/events.parquet"
    world.put_bytes(stray_landing, gzip.compress(b'{"user_id": "usr_0000001"}\n'))
    world.put_bytes(stray_clean, b"not parquet")

    pending = expired_restricted_records(world, pseudonymizer, NOW)
    report = sweep_expired_events(world, pseudonymizer, NOW)
    verified = expired_restricted_records(world, pseudonymizer, NOW)

    assert pending.records_deleted == clean.records_deleted > 0
    assert report.records_deleted == clean.records_deleted
    assert report.zones["landing"].undated_objects == [stray_landing]
    assert report.zones["clean"].undated_objects == [stray_clean]
    assert report.undated_objects == [stray_landing, stray_clean]
    assert report.summary()["landing"]["undated_objects"] == 1
    # Left alone, and still reported by the proof pass: no age, so no proof of expiry.
    assert world.exists(stray_landing)
    assert world.exists(stray_clean)
    assert verified.records_deleted == 0
    assert verified.undated_objects == [stray_landing, stray_clean]


# ---------------------------------------------------------------- hand-written stores


def _line(event_id: str, user: str, day: str = "2026-10-20") -> str:
    return json.dumps(
        {"event_id": event_id, "event_type": "app_open", "user_id": user, "ts": f"{day}T08:10:00Z"}
    )


def _profiles(store: LocalObjectStore, day: str, name: str, rows: dict[str, Any]) -> None:
    frame = pd.DataFrame({"user_id": list(rows), "region": list(rows.values())})
    write_parquet(store, f"{layout.LANDING_USERS}/date={day}/{name}.parquet", frame)


def test_users_without_a_profile_and_unreadable_records_count_as_restricted(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    day = dt.date(2026, 10, 20)
    _profiles(store, "2026-10-19", "snapshot", {"usr_eu": "eu-west", "usr_us": "us-east"})
    key = layout.landing_events_key(day, 8, "b")
    lines = [
        _line("e1", "usr_eu"),
        _line("e2", "usr_us"),
        _line("e3", "usr_ghost"),  # no profile
        _line("e4", "usr_us")[:40],  # malformed: its user cannot be read
        json.dumps({"event_id": "e5", "event_type": "app_open", "user_id": 7, "ts": "x"}),
    ]
    store.put_bytes(key, gzip.compress(("\n".join(lines) + "\n").encode()))
    write_ingested(store, day, ingest_day(store, day, pseudonymizer))
    served = pd.DataFrame(
        {"user_id": [pseudonymizer.pseudonymize(u) for u in ("usr_eu", "usr_us", "usr_ghost")]}
    )
    write_parquet(store, served_features_key(day.isoformat(), "s"), served)
    write_parquet(store, shadow_key(day.isoformat(), "s"), served)

    report = sweep_expired_events(store, pseudonymizer, NOW)

    assert {z: report.zones[z].records_deleted for z in EVENT_ZONES} == {
        "landing": 4,
        "clean": 2,
        "quarantine": 2,
        "served": 2,
        "shadow": 2,
    }
    assert _lines(store, key) == [lines[1]]
    clean = read_parquet(store, layout.warehouse_key(layout.WAREHOUSE_EVENTS, day, "events"))
    assert clean["user_id"].tolist() == [pseudonymizer.pseudonymize("usr_us")]
    assert not store.exists(layout.warehouse_key(layout.WAREHOUSE_QUARANTINE, day, "quarantine"))
    assert read_parquet(store, served_features_key(day.isoformat(), "s"))["user_id"].tolist() == [
        pseudonymizer.pseudonymize("usr_us")
    ]


def test_the_latest_landed_profile_decides_the_region(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    _profiles(store, "2026-10-19", "snapshot", {"usr_a": "us-east", "usr_b": "uk", "usr_c": "jp"})
    _profiles(store, "2026-10-21", "signups", {"usr_a": "eu-central", "usr_b": "br"})

    regions = load_user_regions(store, pseudonymizer)
    raw, pseudo = regions.restricted(RetentionPolicy())

    assert regions.by_raw_id == {"usr_a": "eu-central", "usr_b": "br", "usr_c": "jp"}
    assert regions.by_pseudonym == {
        pseudonymizer.pseudonymize(u): r for u, r in regions.by_raw_id.items()
    }
    assert [raw(u, "") for u in ("usr_a", "usr_b", "usr_c", "usr_x")] == [
        True,
        False,
        False,
        True,
    ]
    assert raw(None, "{broken") is True
    assert pseudo(pseudonymizer.pseudonymize("usr_a"), "") is True
    assert pseudo(pseudonymizer.pseudonymize("usr_c"), "") is False
    assert pseudo("p_unknown", "") is True
    # Another policy, other regions.
    raw_jp, _ = regions.restricted(RetentionPolicy(regions=frozenset({"jp"})))
    assert [raw_jp(u, "") for u in ("usr_a", "usr_b", "usr_c")] == [False, False, True]


def test_without_any_profile_every_user_is_restricted(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    day = dt.date(2026, 10, 20)
    key = layout.landing_events_key(day, 8, "b")
    store.put_bytes(key, gzip.compress((_line("e1", "usr_us") + "\n").encode()))

    report = sweep_expired_events(store, pseudonymizer, NOW)

    assert load_user_regions(store, pseudonymizer).by_raw_id == {}
    assert report.zones["landing"].records_deleted == 1
    assert report.zones["landing"].objects_deleted == 1
    assert not store.exists(key)


def test_a_profile_without_a_region_counts_as_restricted(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    _profiles(store, "2026-10-19", "snapshot", {"usr_a": None, "usr_b": "us-east"})

    raw, _ = load_user_regions(store, pseudonymizer).restricted(RetentionPolicy())

    assert raw("usr_a", "") is True
    assert raw("usr_b", "") is False
