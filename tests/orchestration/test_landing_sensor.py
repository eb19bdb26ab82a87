"""The landing sensor: one ingestion run per new or changed landing day."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.definitions import build_definitions
from fitpulse_orchestration.settings import ProjectHome

if TYPE_CHECKING:
    from conftest import WorldHome

SENSOR = "ingestion_job_on_landing"
RUN_KEY = re.compile(r"^(\d{4}-\d{2}-\d{2}):([0-9a-f]{16})$")
LATE_START = "2026-10-25"
"""A partition start inside the tiny world (2026-10-19 .. 2026-11-01): six days precede it."""


def _tick(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None
) -> dg.SensorExecutionData:
    # definitions= alone does not hand the sensor its resources in 1.13: pass them too.
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=defs,
        resources={"object_store": defs.resources["object_store"]},
    )
    return defs.resolve_sensor_def(SENSOR).evaluate_tick(context)


def _requested(data: dg.SensorExecutionData) -> dict[str, str]:
    """``{partition_key: run_key}`` of the tick's run requests."""
    return {str(r.partition_key): str(r.run_key) for r in data.run_requests}


@pytest.fixture(scope="module")
def defs(world_home: WorldHome) -> dg.Definitions:
    return build_definitions(world_home.home, "local", world_home.days[0])


@pytest.fixture(scope="module")
def first_tick(world_home: WorldHome, defs: dg.Definitions) -> dg.SensorExecutionData:
    return _tick(defs, dg.DagsterInstance.ephemeral(), None)


def test_first_tick_requests_every_landed_day(
    first_tick: dg.SensorExecutionData, world_home: WorldHome
) -> None:
    assert [r.partition_key for r in first_tick.run_requests] == world_home.days


def test_run_keys_are_day_and_fingerprint(first_tick: dg.SensorExecutionData) -> None:
    cursor = json.loads(first_tick.cursor or "")

    for partition_key, run_key in _requested(first_tick).items():
        match = RUN_KEY.match(run_key)
        assert match is not None, run_key
        assert match.group(1) == partition_key
        assert match.group(2) == cursor[partition_key]


def test_first_tick_cursor_fingerprints_every_day(
    first_tick: dg.SensorExecutionData, world_home: WorldHome
) -> None:
    cursor = json.loads(first_tick.cursor or "")

    assert sorted(cursor) == world_home.days
    assert len(set(cursor.values())) == len(cursor)


def test_second_tick_with_the_cursor_requests_nothing(
    first_tick: dg.SensorExecutionData, defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    second = _tick(defs, instance, first_tick.cursor)

    assert second.run_requests == []
    assert json.loads(second.cursor or "") == json.loads(first_tick.cursor or "")


def test_requests_target_valid_partitions(
    first_tick: dg.SensorExecutionData, defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    job = defs.resolve_job_def("ingestion_job")
    assert job.partitions_def is not None
    valid = set(job.partitions_def.get_partition_keys(dynamic_partitions_store=instance))

    assert set(_requested(first_tick)) <= valid


def test_new_batch_requests_only_its_day_again(
    fresh_world: WorldHome, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions(fresh_world.home, "local", fresh_world.days[0])
    first = _tick(defs, instance, None)
    day = fresh_world.summary.landed_days[3]
    key = layout.landing_events_key(day, 23, "extra")
    fresh_world.store.put_bytes(key, gzip.compress(b"{}\n"))

    second = _tick(defs, instance, first.cursor)

    (request,) = second.run_requests
    assert request.partition_key == day.isoformat()
    assert request.run_key != _requested(first)[day.isoformat()]
    before, after = json.loads(first.cursor or ""), json.loads(second.cursor or "")
    assert {d for d in after if after[d] != before.get(d)} == {day.isoformat()}
    assert _tick(defs, instance, second.cursor).run_requests == []


def test_a_stray_landing_key_leaves_every_day_requested(
    fresh_world: WorldHome, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions(fresh_world.home, "local", fresh_world.days[0])
    fresh_world.store.put_bytes(f"{layout.LANDING_EVENTS}/date=bogus/batch.jsonl.gz", b"")
    fresh_world.store.put_bytes(f"{layout.LANDING_EVENTS}/notes.txt", b"")

    data = _tick(defs, instance, None)

    assert [r.partition_key for r in data.run_requests] == fresh_world.days
    assert sorted(json.loads(data.cursor or "")) == fresh_world.days


def test_days_before_the_partition_start_are_skipped(
    world_home: WorldHome, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions(world_home.home, "local", LATE_START)

    data = _tick(defs, instance, None)

    assert [r.partition_key for r in data.run_requests] == [
        d for d in world_home.days if d >= LATE_START
    ]
    assert len(data.run_requests) == len(world_home.days) - 6
    # Skipped days are remembered, so a later tick does not report them again.
    assert sorted(json.loads(data.cursor or "")) == world_home.days


def test_empty_landing_zone_requests_nothing(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    defs = build_definitions(ProjectHome(tmp_path), "local", LATE_START)

    data = _tick(defs, instance, None)

    assert data.run_requests == []
    assert json.loads(data.cursor or "") == {}
