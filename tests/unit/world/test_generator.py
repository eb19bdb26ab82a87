from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.ingest import read_clean_events
from fitpulse_orchestration.events.schema import EVENT_TYPES
from fitpulse_orchestration.features.reference import live_items, load_catalog, load_profiles
from fitpulse_orchestration.storage import LocalObjectStore, read_parquet
from fitpulse_orchestration.world.generator import generate_world
from fitpulse_orchestration.world.params import (
    BAD_KINDS,
    SCALES,
    STATUS_CHANGE_RATES,
    WorldParams,
    world_params,
)

SMALL = WorldParams(n_users=40, n_items=30, new_items_per_day=2, days=3, bad_record_rate=0.05)


def _store_contents(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _generate(root: Path, params: WorldParams) -> dict[str, bytes]:
    generate_world(params, LocalObjectStore(root))
    return _store_contents(root)


def test_same_params_and_seed_write_byte_identical_landing_zone(tmp_path: Path) -> None:
    first = _generate(tmp_path / "a", SMALL)
    second = _generate(tmp_path / "b", SMALL)

    assert any(key.startswith(f"{layout.LANDING_EVENTS}/") for key in first)
    assert first == second


def test_different_seed_writes_different_landing_zone(tmp_path: Path) -> None:
    first = _generate(tmp_path / "a", SMALL)
    other = _generate(tmp_path / "b", dataclasses.replace(SMALL, seed=8))

    assert first != other


def test_tiny_world_injects_every_bad_kind(tiny_world) -> None:
    bad = tiny_world.summary.bad_records

    assert set(bad) == set(BAD_KINDS)
    assert all(bad[kind] > 0 for kind in BAD_KINDS), bad


def test_tiny_world_accounts_for_every_landed_line(tiny_world) -> None:
    summary = tiny_world.summary
    lines = 0
    for key in tiny_world.store.list_keys(f"{layout.LANDING_EVENTS}/"):
        lines += len(gzip.decompress(tiny_world.store.get_bytes(key)).decode().splitlines())

    assert lines == summary.records_written
    assert summary.records_written == summary.n_valid_events + sum(summary.bad_records.values())


def test_tiny_world_cold_share_is_realistic(tiny_world) -> None:
    assert 0.25 <= tiny_world.summary.cold_user_share <= 0.6


def test_beginners_starting_unsafe_content_churn_more(tiny_world) -> None:
    churn = tiny_world.summary.beginner_churn

    assert churn["unsafe_started"] > churn["safe_only"]


def test_tiny_world_lands_one_partition_per_simulated_day(tiny_world) -> None:
    params = tiny_world.summary.params
    days = tiny_world.summary.landed_days
    keys = tiny_world.store.list_keys(f"{layout.LANDING_EVENTS}/")

    assert len(days) == params.days
    assert days[0] == params.start_date
    assert days[-1] == params.end_date
    assert layout.landed_dates(keys) == days


def test_tiny_world_writes_catalog_and_profile_snapshots(tiny_world) -> None:
    params = tiny_world.summary.params
    store = tiny_world.store

    assert store.exists(
        layout.landing_reference_key(layout.LANDING_CATALOG, params.start_date, "snapshot")
    )
    assert store.exists(
        layout.landing_reference_key(layout.LANDING_USERS, params.start_date, "snapshot")
    )
    assert len(load_catalog(store)) == tiny_world.summary.n_items
    assert len(load_profiles(store, tiny_world.pseudonymizer)) == tiny_world.summary.n_users


def test_tiny_world_event_counts_use_known_event_types(tiny_world) -> None:
    counts = tiny_world.summary.event_counts

    assert set(counts) <= set(EVENT_TYPES)
    assert counts["impression"] > counts["click"] > 0


def test_valid_landed_records_reference_items_published_before_them(tiny_world) -> None:
    catalog = load_catalog(tiny_world.store).set_index("item_id")["published_at"]
    events = read_clean_events(tiny_world.store).dropna(subset=["item_id"])

    published = events["item_id"].map(catalog)

    assert published.notna().all()
    assert (published < events["ts"]).all()


def test_no_user_acts_before_signing_up(tiny_world) -> None:
    profiles = load_profiles(tiny_world.store, tiny_world.pseudonymizer)
    events = read_clean_events(tiny_world.store)
    signup = events["user_id"].map(profiles.set_index("user_id")["signup_at"])

    assert not (events["ts"] < signup).any()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_users": 9}, "at least 10 users"),
        ({"n_items": 19}, "at least 10 users, 20 items"),
        ({"days": 0}, "1 day"),
        ({"bad_record_rate": 0.5}, "bad_record_rate"),
        ({"bad_record_rate": -0.01}, "bad_record_rate"),
    ],
)
def test_world_params_reject_degenerate_worlds(overrides: dict, message: str) -> None:
    fields = {"n_users": 10, "n_items": 20, "new_items_per_day": 1, "days": 1, **overrides}

    with pytest.raises(ValueError, match=message):
        WorldParams(**fields)


def test_world_params_start_date_counts_end_date_inclusive() -> None:
    params = WorldParams(
        n_users=10, n_items=20, new_items_per_day=0, days=3, end_date=dt.date(2026, 1, 2)
    )

    assert params.start_date == dt.date(2025, 12, 31)


def test_world_params_presets_take_seed_and_overrides() -> None:
    params = world_params("tiny", seed=3, days=5)

    assert params.seed == 3
    assert params.days == 5
    assert params.n_users == SCALES["tiny"].n_users
    assert world_params("tiny") == SCALES["tiny"]
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        world_params("huge")


def _landed_updates(tiny_world) -> pd.DataFrame:
    """Every row of the tiny world's ``updates-HH`` catalog files, with the file's key."""
    store = tiny_world.store
    keys = [k for k in store.list_keys(f"{layout.LANDING_CATALOG}/") if "/updates-" in k]
    return pd.concat([read_parquet(store, k).assign(key=k) for k in keys], ignore_index=True)


def test_tiny_world_lands_status_changes_in_hourly_update_files(tiny_world) -> None:
    summary = tiny_world.summary
    changes = summary.status_changes
    landed = _landed_updates(tiny_world)
    per_day = Counter((c.at.date(), c.status) for c in changes)
    days = [summary.params.start_date + dt.timedelta(days=d) for d in range(summary.params.days)]

    assert summary.catalog_updates == dict(Counter(c.status for c in changes))
    assert set(summary.catalog_updates) == set(STATUS_CHANGE_RATES) == {"unpublished", "flagged"}
    assert summary.catalog_updates["unpublished"] > summary.catalog_updates["flagged"] > 0
    assert all(per_day[(day, "unpublished")] >= 1 for day in days)
    assert all(per_day[(a, "flagged")] + per_day[(b, "flagged")] >= 1 for a, b in pairwise(days))
    assert len({c.item_id for c in changes}) == len(changes) == len(landed)
    assert [c.at for c in changes] == sorted(c.at for c in changes)
    expected_keys = {
        c.item_id: layout.landing_reference_key(
            layout.LANDING_CATALOG, c.at.date(), f"updates-{c.at.hour:02d}"
        )
        for c in changes
    }
    assert landed.set_index("item_id")["key"].to_dict() == expected_keys
    assert landed.set_index("item_id")["status"].to_dict() == {c.item_id: c.status for c in changes}


def test_update_rows_are_full_catalog_rows_with_the_new_status(tiny_world) -> None:
    store = tiny_world.store
    keys = store.list_keys(f"{layout.LANDING_CATALOG}/")
    published = pd.concat(
        [read_parquet(store, k) for k in keys if "/updates-" not in k], ignore_index=True
    ).set_index("item_id")
    landed = _landed_updates(tiny_world).drop(columns="key").set_index("item_id")

    assert list(landed.columns) == list(published.columns)
    assert (published["status"] == "published").all()
    pd.testing.assert_frame_equal(
        landed.drop(columns="status"), published.loc[landed.index].drop(columns="status")
    )


def test_loaded_catalog_shows_exactly_the_changed_items_with_their_new_status(tiny_world) -> None:
    catalog = load_catalog(tiny_world.store)
    changed = catalog[~live_items(catalog)].set_index("item_id")["status"]

    assert len(catalog) == tiny_world.summary.n_items
    assert changed.to_dict() == {c.item_id: c.status for c in tiny_world.summary.status_changes}


def test_status_changes_happen_after_the_item_was_published(tiny_world) -> None:
    published_at = load_catalog(tiny_world.store).set_index("item_id")["published_at"]
    params = tiny_world.summary.params
    window_start = pd.Timestamp(params.start_date, tz="UTC")
    window_end = pd.Timestamp(params.end_date, tz="UTC") + pd.Timedelta(days=1)

    for change in tiny_world.summary.status_changes:
        at = pd.Timestamp(change.at)
        assert published_at[change.item_id] < at.floor("D"), change
        assert window_start <= at < window_end, change
