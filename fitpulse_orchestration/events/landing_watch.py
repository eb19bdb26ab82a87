"""Which landing days changed since the last look (the ingestion sensor's decision)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Mapping

from fitpulse_orchestration import layout


def landing_fingerprints(versions: Mapping[str, str]) -> dict[str, str]:
    """Fingerprint of each landing day's batches: ``{YYYY-MM-DD: sha1}``.

    ``versions`` is ``ObjectStore.list_versions`` of the landing zone: a day's fingerprint
    changes when a batch lands, goes, or is rewritten under the same key (an import run again
    with other options rewrites its batches in place). Keys without a valid ``date=`` belong to
    no day and are left out (``layout.undated_keys``).
    """
    by_day: dict[dt.date, list[str]] = defaultdict(list)
    for key, version in versions.items():
        day = layout.dated(key)
        if day is not None:
            by_day[day].append(f"{key}\t{version}")
    return {
        day.isoformat(): hashlib.sha1("\n".join(sorted(ks)).encode()).hexdigest()[:16]
        for day, ks in sorted(by_day.items())
    }


def changed_days(current: dict[str, str], previous: dict[str, str]) -> list[tuple[str, str]]:
    """``(day, fingerprint)`` of days that are new or whose batches changed, oldest first."""
    return [(day, fp) for day, fp in sorted(current.items()) if previous.get(day) != fp]
