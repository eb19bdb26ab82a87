"""Ingestion assets: one partition of raw_events, and the catalog and profile references."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd
import pytest

from assets.ingestion import (
    MAX_QUARANTINE_RATE,
    build_ingestion_assets,
    catalog_items,
    daily_partitions,
    member_profiles,
)
from assets.resources import ObjectStoreResource, PseudonymizerResource
from fitpulse_orchestration import layout
from fitpulse_orchestration.definitions import build_definitions
from fitpulse_orchestration.privacy.pseudonymize import PSEUDONYM_PREFIX, Pseudonymizer
from fitpulse_orchestration.storage import read_parquet
from fitpulse_orchestration.storage.tables import read_parquet_prefix

PARTITION_START = "2026-10-01"
EMPTY_DAY = "2026-10-05"
"""A partition before the world's first landed day: nothing landed on it."""
if TYPE_CHECKING:
    from conftest import WorldHome

SECRET = "orchestration-test-secret"
RAW_EVENTS_RESOURCES = ("object_store", "pseudonymizer", "io_manager")


@pytest.fixture(scope="module")
def defs(world_home: WorldHome) -> dg.Definitions:
    return build_definitions(world_home.home, "local", PARTITION_START)


def _materialize_raw_events(
    defs: dg.Definitions, day: str, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    (raw_events,) = build_ingestion_assets(daily_partitions(PARTITION_START))
    return dg.materialize(
        [raw_events],
        resources={k: defs.resources[k] for k in RAW_EVENTS_RESOURCES},
        partition_key=day,
        instance=instance,
    )


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def landed_day(
    world_home: WorldHome, defs: dg.Definitions
) -> tuple[str, dg.ExecuteInProcessResult]:
    day = world_home.days[0]
    return day, _materialize_raw_events(defs, day, dg.DagsterInstance.ephemeral())


def test_raw_events_partition_succeeds(
    landed_day: tuple[str, dg.ExecuteInProcessResult],
) -> None:
    day, result = landed_day

    assert result.success
    (materialization,) = result.asset_materializations_for_node("raw_events")
    assert materialization.partition == day


def test_raw_events_rows_balance(
    landed_day: tuple[str, dg.ExecuteInProcessResult], world_home: WorldHome
) -> None:
    day, result = landed_day

    meta = _metadata(result, "raw_events")

    assert meta["read"] == len(world_home.landed_lines(dt.date.fromisoformat(day)))
    assert meta["read"] > 0
    assert meta["read"] == meta["accepted"] + meta["quarantined"] + meta["duplicates"]
    assert meta["accepted"] > 0


def test_raw_events_checks_are_evaluated(
    landed_day: tuple[str, dg.ExecuteInProcessResult],
) -> None:
    _, result = landed_day
    meta = _metadata(result, "raw_events")

    checks = _checks(result)

    assert set(checks) == {"rows_balance", "quarantine_rate"}
    assert checks["rows_balance"].passed
    assert checks["quarantine_rate"].severity == dg.AssetCheckSeverity.WARN
    assert checks["quarantine_rate"].passed == (meta["quarantine_rate"] <= MAX_QUARANTINE_RATE)


def test_raw_events_writes_clean_and_quarantine_partitions(
    landed_day: tuple[str, dg.ExecuteInProcessResult], world_home: WorldHome
) -> None:
    day, result = landed_day
    meta = _metadata(result, "raw_events")
    date = dt.date.fromisoformat(day)
    store = world_home.store

    clean = read_parquet(store, layout.warehouse_key(layout.WAREHOUSE_EVENTS, date, "events"))
    quarantine = read_parquet(
        store, layout.warehouse_key(layout.WAREHOUSE_QUARANTINE, date, "quarantine")
    )

    assert len(clean) == meta["accepted"]
    assert len(quarantine) == meta["quarantined"]
    assert clean["user_id"].str.startswith(PSEUDONYM_PREFIX).all()
    assert (clean["ts"].dt.date == date).all()


def test_raw_events_day_without_landed_files(
    defs: dg.Definitions, world_home: WorldHome, instance: dg.DagsterInstance
) -> None:
    result = _materialize_raw_events(defs, EMPTY_DAY, instance)

    meta = _metadata(result, "raw_events")
    assert result.success
    assert meta["read"] == 0
    assert meta["accepted"] == meta["quarantined"] == meta["duplicates"] == 0
    assert _checks(result)["rows_balance"].passed
    key = layout.warehouse_key(layout.WAREHOUSE_EVENTS, dt.date.fromisoformat(EMPTY_DAY), "events")
    assert world_home.store.exists(key)


@pytest.fixture(scope="module")
def references(world_home: WorldHome) -> dg.ExecuteInProcessResult:
    return dg.materialize_to_memory(
        [catalog_items, member_profiles],
        resources={
            "object_store": ObjectStoreResource(kind="local", root=str(world_home.home.store)),
            "pseudonymizer": PseudonymizerResource(secret=SECRET),
        },
    )


def _landed(world_home: WorldHome, prefix: str) -> pd.DataFrame:
    return pd.concat(read_parquet_prefix(world_home.store, f"{prefix}/"), ignore_index=True)


def test_catalog_items_has_every_landed_item(
    references: dg.ExecuteInProcessResult, world_home: WorldHome
) -> None:
    landed = _landed(world_home, layout.LANDING_CATALOG)

    catalog = references.output_for_node("catalog_items")

    assert references.success
    assert len(catalog) == landed["item_id"].nunique() == world_home.summary.n_items
    assert set(catalog["item_id"]) == set(landed["item_id"])
    assert _metadata(references, "catalog_items")["items"] == len(catalog)


def test_member_profiles_are_pseudonymized(
    references: dg.ExecuteInProcessResult, world_home: WorldHome
) -> None:
    landed = _landed(world_home, layout.LANDING_USERS)
    expected = Pseudonymizer.from_secret(SECRET).pseudonymize_many(
        landed["user_id"].astype(str).unique()
    )

    profiles = references.output_for_node("member_profiles")

    assert len(profiles) == landed["user_id"].nunique() == world_home.summary.n_users
    assert set(profiles["user_id"]) == set(expected)
    assert _metadata(references, "member_profiles")["members"] == len(profiles)
