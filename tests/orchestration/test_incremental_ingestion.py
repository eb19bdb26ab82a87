"""``fitpulse train`` ingests again only the days whose inputs changed (issue 18).

Each ingestion records a manifest of what it read (``events.manifest``); ``ingest_landed``
compares it with what the day's inputs hash to now. The log is five days of a small import.
"""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import pytest
from dagster._core.storage.dagster_run import RunsFilter

from fitpulse_orchestration import layout
from fitpulse_orchestration.definitions import PARTITION_START_ENV
from fitpulse_orchestration.importing.interactions import ImportOptions, import_interactions
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.privacy.suppression import add_erased
from fitpulse_orchestration.runner import IngestRun, dagster_instance, ingest_landed
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore, read_parquet
from fitpulse_orchestration.storage.keys import load_or_create_key

DAYS = [dt.date(2026, 10, d) for d in (1, 2, 3, 4, 5)]
USERS = ("u1", "u2", "u3")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProjectHome:
    """A home with three members' clicks landed on each of ``DAYS``."""
    monkeypatch.delenv(PARTITION_START_ENV, raising=False)
    home = ProjectHome(tmp_path / "home").create()
    rows = ["user_id,item_id,timestamp,event_type"]
    for day in DAYS:
        for hour, user in enumerate(USERS):
            rows.append(f"{user},item-{day.day}-{hour},{day.isoformat()}T{10 + hour}:00:00Z,click")
    log = tmp_path / "log.csv"
    log.write_text("\n".join(rows) + "\n")
    import_interactions(log, LocalObjectStore(home.store), ImportOptions())
    return home


def _ingested_partitions(home: ProjectHome) -> list[str]:
    """The partition of every ingestion run so far, in the order they ran."""
    runs = dagster_instance(home).get_runs(RunsFilter(job_name="ingestion_job"))
    return [r.tags["dagster/partition"] for r in reversed(runs)]


def _accepted(home: ProjectHome, day: dt.date) -> int:
    key = layout.warehouse_key(layout.WAREHOUSE_EVENTS, day, "events")
    return len(read_parquet(LocalObjectStore(home.store), key))


def _pass(home: ProjectHome) -> tuple[IngestRun, list[str]]:
    """One ``ingest_landed`` and the partitions it launched runs for."""
    before = len(_ingested_partitions(home))
    run = ingest_landed(home, say=lambda _line: None)
    return run, _ingested_partitions(home)[before:]


def test_a_second_pass_ingests_nothing_and_counts_the_same(home: ProjectHome) -> None:
    first, launched = _pass(home)
    assert launched == [d.isoformat() for d in DAYS]
    assert first.unchanged == 0
    said: list[str] = []

    second = ingest_landed(home, say=said.append)

    assert _ingested_partitions(home) == launched
    assert second.unchanged == 5
    assert (
        second.totals
        == first.totals
        == {
            "read": 15,
            "accepted": 15,
            "quarantined": 0,
            "duplicates": 0,
        }
    )
    assert said[-1] == (
        "5 of 5 days unchanged since their last ingestion (same batches, erasure list and "
        "rules): not ingested again"
    )


def test_a_batch_rewritten_in_place_ingests_its_day_and_every_day_after(
    home: ProjectHome,
) -> None:
    _pass(home)
    store = LocalObjectStore(home.store)
    (key,) = store.list_keys(layout.landing_events_prefix(DAYS[2]) + "hour=10/")
    lines = gzip.decompress(store.get_bytes(key)).decode().splitlines()
    assert len(lines) == 1
    store.put_bytes(key, gzip.compress(b""))  # the same key, its one event gone

    run, launched = _pass(home)

    # Day 3's own inputs changed; days 4 and 5 de-duplicate against day 3's partition.
    assert launched == [d.isoformat() for d in DAYS[2:]]
    assert run.unchanged == 2
    assert _accepted(home, DAYS[2]) == 2
    assert run.totals["accepted"] == 14


def test_a_lost_partition_is_ingested_again_alone(home: ProjectHome) -> None:
    _pass(home)
    LocalObjectStore(home.store).delete(
        layout.warehouse_key(layout.WAREHOUSE_EVENTS, DAYS[1], "events")
    )

    run, launched = _pass(home)

    # The same inputs give the same partition, so the days after it keep theirs.
    assert launched == [DAYS[1].isoformat()]
    assert run.unchanged == 4
    assert _accepted(home, DAYS[1]) == 3


def test_an_erasure_or_an_unreadable_manifest_is_a_change(home: ProjectHome) -> None:
    _pass(home)
    store = LocalObjectStore(home.store)
    store.put_bytes(layout.ingest_manifest_key(DAYS[3]), b"{not json")

    _run, launched = _pass(home)
    # Day 4 is ingested again from the same inputs: its new manifest has the old fingerprint.
    assert launched == [DAYS[3].isoformat()]

    pseudonymizer = Pseudonymizer.from_secret(load_or_create_key(home.pseudonym_key_file))
    add_erased(store, pseudonymizer.pseudonymize("u2"), "2026-10-06T00:00:00Z")

    run, launched = _pass(home)

    assert launched == [d.isoformat() for d in DAYS]
    assert run.totals["accepted"] == 10
    assert run.unchanged == 0
