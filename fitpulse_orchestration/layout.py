"""Where each dataset lives in the object store.

Every path the platform reads or writes is built here, so the landing zone written by the
synthetic world, the import command and the collector agree with what ingestion reads.

- ``landing/events/date=YYYY-MM-DD/hour=HH/<batch>.ndjson.gz``: the collector's hourly batches.
- ``landing/catalog/date=YYYY-MM-DD/<name>.parquet``: catalog publications and updates, full
  rows, the later file winning: ``snapshot`` (the catalog as of the start of its day),
  ``items-HH`` (published in hour HH), ``updates-HH`` (status changes in hour HH). A plain key
  sort is chronological for every item: dates sort in order and, within a day, every
  ``updates-HH`` after that day's ``items-HH`` and ``snapshot``. (``items-HH-updates`` would
  not do: ``-`` sorts before ``.``.)
- ``landing/users/date=YYYY-MM-DD/<name>.parquet``: profile sign-ups and updates.
- ``warehouse/events/date=YYYY-MM-DD/events.parquet``: clean, pseudonymized events.
- ``warehouse/quarantine/date=YYYY-MM-DD/quarantine.parquet``: rejected records with reasons.
- ``assets/<asset_key>.<ext>``: asset values persisted by the object-store IO manager.
- ``reports/<kind>/<UTC time>.{html,json}``: monitoring reports (drift).
- ``audit/registry/<model>/<UTC time>-<action>-<id>.json``: the registry's audit log.
- ``serving/features/date=YYYY-MM-DD/<batch>.parquet``: features the feed service served
  (sampled); its exposures land in ``landing/events`` like any app event.
- ``serving/shadow/date=YYYY-MM-DD/<batch>.parquet``: shadow mode's champion and challenger
  lists of sampled requests.
- ``serving/rollouts/<name>.json``: the state of a canary rollout (``serving.rollout``).
- ``world/latent.npz``: the synthetic world's hidden tastes (ground truth of the simulation;
  only the world's response model and the evaluation's ``oracle`` row read it, never serving).
- ``world/spec.json``: the parameters the synthetic world was generated with.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

LANDING_EVENTS = "landing/events"
LANDING_CATALOG = "landing/catalog"
LANDING_USERS = "landing/users"
IMPORT_REJECTS = "landing/import_rejects"
"""The rows an import could not land (CSV, the source's own columns: raw ids)."""
WAREHOUSE_EVENTS = "warehouse/events"
WAREHOUSE_QUARANTINE = "warehouse/quarantine"
WAREHOUSE_INGESTED = "warehouse/ingested"
"""One manifest per ingested day: what its ingestion read (hashes and counts, no records)."""
ASSETS = "assets"
REPORTS = "reports"
SERVED_FEATURES = "serving/features"
SHADOW_LOGS = "serving/shadow"

_DATE_RE = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
_HOUR_RE = re.compile(r"hour=(\d{2})")


def landing_events_key(day: dt.date, hour: int, batch: str) -> str:
    """Key of one hourly collector batch."""
    return f"{LANDING_EVENTS}/date={day.isoformat()}/hour={hour:02d}/{batch}.ndjson.gz"


def landing_events_prefix(day: dt.date) -> str:
    """Prefix holding every batch that landed on ``day``."""
    return f"{LANDING_EVENTS}/date={day.isoformat()}/"


def landing_reference_key(kind_prefix: str, day: dt.date, name: str) -> str:
    """Key of a catalog or profile file that landed on ``day``."""
    return f"{kind_prefix}/date={day.isoformat()}/{name}.parquet"


def warehouse_key(prefix: str, day: dt.date, name: str) -> str:
    """Key of a clean or quarantine partition."""
    return f"{prefix}/date={day.isoformat()}/{name}.parquet"


def ingest_manifest_key(day: dt.date) -> str:
    """Key of the manifest of ``day``'s last ingestion."""
    return f"{WAREHOUSE_INGESTED}/date={day.isoformat()}/manifest.json"


def date_of_key(key: str) -> dt.date:
    """Parse the ``date=YYYY-MM-DD`` component of a key."""
    match = _DATE_RE.search(key)
    if match is None:
        raise ValueError(f"key {key!r} has no date=YYYY-MM-DD component")
    return dt.date.fromisoformat(match.group(1))


def hour_of_key(key: str) -> int | None:
    """Parse the ``hour=HH`` component of a key, or None when absent."""
    match = _HOUR_RE.search(key)
    return int(match.group(1)) if match else None


def dated(key: str) -> dt.date | None:
    """The key's ``date=YYYY-MM-DD`` as a date; None when it has none or it is no calendar day."""
    try:
        return date_of_key(key)
    except ValueError:
        return None


def landed_dates(keys: Iterable[str]) -> list[dt.date]:
    """Distinct dates of the given keys, sorted; keys without a valid date are left out.

    A stray file in a landing zone (``notes.txt``, ``date=bogus/...``) is never a day to
    ingest, and must not stop the days that are: callers report ``undated_keys``.
    """
    return sorted({day for key in keys if (day := dated(key)) is not None})


def undated_keys(keys: Iterable[str]) -> list[str]:
    """The keys without a valid ``date=YYYY-MM-DD`` component, sorted."""
    return sorted(key for key in keys if dated(key) is None)


def report_key(kind: str, stamp: dt.datetime, suffix: str) -> str:
    """Key of a monitoring report written at ``stamp`` (UTC), e.g. ``.html`` or ``.json``."""
    return f"{REPORTS}/{kind}/{stamp.strftime('%Y%m%dT%H%M%SZ')}{suffix}"
