"""CLI runs belong to their jobs (issue 24 §4).

``fitpulse train`` and the demo run their jobs in process, but each run carries the console's
code-location origin: the Dagster UI lists it on the job's page and re-executes it from the
workspace. The console's code location builds the same partitions as the CLI for the same
home, also for an imported log that starts before the default partition start.
"""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import pytest
from conftest import TINY_START, TrainedWorld, WorldHome
from dagster._core.storage.dagster_run import RunsFilter
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

from fitpulse_orchestration import definitions, layout
from fitpulse_orchestration.definitions import PARTITION_START_ENV, partition_start
from fitpulse_orchestration.runner import REPOSITORY_NAME, dagster_instance, ingest_landed
from fitpulse_orchestration.settings import DEFINITIONS_MODULE, ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore

LABEL = f"{REPOSITORY_NAME}@{DEFINITIONS_MODULE}"
"""How the UI's job pages select the runs of the console's code location."""


def test_the_training_run_is_listed_on_its_job_page(trained_world: TrainedWorld) -> None:
    instance = dagster_instance(trained_world.home)
    listed = instance.get_runs(
        RunsFilter(job_name="training_job", tags={REPOSITORY_LABEL_TAG: LABEL})
    )
    assert trained_world.run.run_id in [r.run_id for r in listed]
    run = instance.get_run_by_id(trained_world.run.run_id)
    assert run is not None
    assert run.remote_job_origin is not None
    assert run.remote_job_origin.location_name == DEFINITIONS_MODULE
    assert run.remote_job_origin.repository_origin.repository_name == REPOSITORY_NAME


def test_every_ingestion_run_has_the_code_locations_job_snapshot(
    fresh_world: WorldHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingested = ingest_landed(fresh_world.home)
    runs = ingested.instance.get_runs(
        RunsFilter(job_name="ingestion_job", tags={REPOSITORY_LABEL_TAG: LABEL})
    )
    assert sorted(r.tags["dagster/partition"] for r in runs) == fresh_world.days
    assert all(r.is_success for r in runs)
    # What the console's code server builds for this home: the same job, so re-execute from
    # the UI runs the definition the CLI ran.
    monkeypatch.setenv("FITPULSE_HOME", str(fresh_world.home.root))
    monkeypatch.delenv(PARTITION_START_ENV, raising=False)
    job = definitions.defs().resolve_job_def("ingestion_job")
    assert {r.job_snapshot_id for r in runs} == {job.get_job_snapshot_id()}


def _home_with_landed_day(root: Path, day: dt.date) -> ProjectHome:
    home = ProjectHome(root).create()
    store = LocalObjectStore(home.store)
    store.put_bytes(f"{layout.landing_events_prefix(day)}batch.jsonl.gz", gzip.compress(b""))
    return home


STRAY_KEYS = (
    f"{layout.LANDING_EVENTS}/date=bogus/batch.jsonl.gz",
    f"{layout.LANDING_EVENTS}/date=1997-13-40/batch.jsonl.gz",
    f"{layout.LANDING_EVENTS}/notes.txt",
)
"""Landing keys without a valid day: a stray file, a bad date, a key without a date at all."""


def _home_with_stray_keys(root: Path, day: dt.date) -> ProjectHome:
    home = _home_with_landed_day(root, day)
    for key in STRAY_KEYS:
        LocalObjectStore(home.store).put_bytes(key, b"")
    return home


def test_partitions_start_at_an_imported_logs_first_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PARTITION_START_ENV, raising=False)
    old = _home_with_landed_day(tmp_path / "old", dt.date(1997, 9, 20))
    assert partition_start(old) == "1997-09-20"
    # A configured start still gives way to an earlier landed day, never to a later one.
    monkeypatch.setenv(PARTITION_START_ENV, "2020-01-01")
    assert partition_start(old) == "1997-09-20"
    recent = _home_with_landed_day(tmp_path / "recent", TINY_START)
    assert partition_start(recent) == "2020-01-01"
    # The production profile's landing zone is not a local folder: the setting decides.
    assert partition_start(old, "production") == "2020-01-01"
    monkeypatch.delenv(PARTITION_START_ENV)
    assert partition_start(ProjectHome(tmp_path / "empty")) == definitions.DEFAULT_PARTITION_START


def test_a_stray_landing_key_does_not_stop_the_code_location_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PARTITION_START_ENV, raising=False)
    home = _home_with_stray_keys(tmp_path, dt.date(1998, 1, 5))

    assert partition_start(home) == "1998-01-05"
    monkeypatch.setenv("FITPULSE_HOME", str(home.root))
    assert definitions.defs().resolve_job_def("ingestion_job").name == "ingestion_job"


def test_ingestion_names_stray_landing_keys_and_ingests_the_days(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PARTITION_START_ENV, raising=False)
    home = _home_with_stray_keys(tmp_path, dt.date(1998, 1, 5))
    said: list[str] = []

    run = ingest_landed(home, say=said.append)

    assert run.days == [dt.date(1998, 1, 5)]
    assert said[0] == (
        "skipping 3 landing key(s) without a valid date=YYYY-MM-DD "
        f"(first: {layout.LANDING_EVENTS}/date=1997-13-40/batch.jsonl.gz): no day's ingestion "
        "reads them"
    )


def test_a_malformed_partition_start_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PARTITION_START_ENV, "2024-13-01")
    home = _home_with_landed_day(tmp_path, dt.date(1998, 1, 5))

    with pytest.raises(ValueError, match=r"FITPULSE_PARTITION_START='2024-13-01' is not a"):
        partition_start(home)
