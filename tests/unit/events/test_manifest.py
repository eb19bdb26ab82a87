from __future__ import annotations

import datetime as dt

from fitpulse_orchestration.events.manifest import (
    IngestManifest,
    ManifestWindow,
    ingestion_context,
)
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer

DAY = dt.date(2026, 11, 30)
KEY = Pseudonymizer.from_secret("manifest-test-secret-0123456789")


def _manifest(day: dt.date, fingerprint: str) -> IngestManifest:
    return IngestManifest(day, fingerprint, dict.fromkeys(("read", "accepted"), 0))


def test_only_the_days_de_duplication_reads_enter_a_days_fingerprint() -> None:
    context = ingestion_context(KEY, [])
    base = ManifestWindow({}, context).fingerprint_of(DAY, "landing")
    too_old, oldest_read = DAY - dt.timedelta(days=31), DAY - dt.timedelta(days=30)

    def alone(day: dt.date) -> ManifestWindow:
        return ManifestWindow({day: _manifest(day, "a")}, context)

    assert alone(too_old).fingerprint_of(DAY, "landing") == base
    assert alone(DAY).fingerprint_of(DAY, "landing") == base
    assert alone(oldest_read).fingerprint_of(DAY, "landing") != base
    assert ManifestWindow({}, context).fingerprint_of(DAY, "other landing") != base


def test_a_recorded_day_changes_the_days_after_it() -> None:
    window = ManifestWindow({}, ingestion_context(KEY, []))
    before = window.fingerprint_of(DAY, "landing")
    window.record(_manifest(DAY - dt.timedelta(days=1), "a"))
    recorded = window.fingerprint_of(DAY, "landing")
    window.record(_manifest(DAY - dt.timedelta(days=1), "b"))
    rerecorded = window.fingerprint_of(DAY, "landing")
    window.forget(DAY - dt.timedelta(days=1))

    assert len({before, recorded, rerecorded}) == 3
    assert window.fingerprint_of(DAY, "landing") == before


def test_the_erasure_list_and_the_key_are_part_of_the_context() -> None:
    other_key = Pseudonymizer.from_secret("another-manifest-secret-987654321")

    assert ingestion_context(KEY, ["p1", "p2"]) == ingestion_context(KEY, ["p2", "p1"])
    assert ingestion_context(KEY, ["p1"]) != ingestion_context(KEY, ["p1", "p2"])
    assert ingestion_context(KEY, []) != ingestion_context(other_key, [])
