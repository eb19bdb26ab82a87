"""What a day's ingestion read, so a day whose inputs did not change is not ingested again.

A day's clean and quarantine partitions are a function of:

- the day's landed batches (``landing_watch.landing_fingerprints``: keys and object versions);
- the event ids accepted in the clean partitions of the ``STALE_AFTER`` days before it (a
  re-send is a duplicate), themselves functions of their own inputs;
- the erasure list (erased users are skipped) and the pseudonymization key;
- the ingestion rules (``INGEST_RULES``).

Each ingestion writes a manifest at ``layout.ingest_manifest_key(day)`` with the fingerprint
of those inputs and its counts. The fingerprint of the days before is taken from their own
manifests, so a change anywhere reaches every later day whose window it falls in, and from
there every day after. ``fitpulse train`` re-ingests a day only when the fingerprint its inputs
have now differs from the manifest's, or when the day's clean partition is gone.

A manifest holds hashes and counts, never a record or an id.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.ingest import STALE_AFTER, IngestResult
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.storage import ObjectNotFoundError, ObjectStore

INGEST_RULES: Final = "1"
"""Version of the ingestion rules: raise it with any change that alters what a day's ingestion
writes for the same landed bytes (validation, de-duplication, pseudonymization, columns), so
every day is ingested again by the new rules."""

_KEY_PROBE: Final = "fitpulse-ingest-manifest"
"""Pseudonymized to tell keys apart without writing anything derived from the key alone."""

MANIFEST_COUNTS: Final = ("read", "accepted", "quarantined", "duplicates", "erased")


@dataclass(frozen=True)
class IngestManifest:
    """One day's last ingestion: the fingerprint of what it read and what it counted."""

    day: dt.date
    fingerprint: str
    counts: dict[str, int]


def ingestion_context(pseudonymizer: Pseudonymizer, erased: Iterable[str]) -> str:
    """Digest of what every day's ingestion shares: the rules, the key and the erasure list."""
    digest = hashlib.sha256()
    digest.update(f"rules={INGEST_RULES}\nkey={pseudonymizer.pseudonymize(_KEY_PROBE)}\n".encode())
    for pseudonym in sorted(erased):
        digest.update(f"erased={pseudonym}\n".encode())
    return digest.hexdigest()


def window_of(day: dt.date) -> tuple[dt.date, dt.date]:
    """``[start, end)`` of the days whose clean partitions ``day``'s de-duplication reads."""
    return day - STALE_AFTER.to_pytimedelta(), day


def day_fingerprint(context: str, day: dt.date, landing: str, window: Mapping[dt.date, str]) -> str:
    """Fingerprint of ``day``'s ingestion inputs.

    ``landing`` is the day's landing fingerprint ("" when nothing landed); ``window`` the
    manifest fingerprints of the days in ``window_of(day)`` that have one.
    """
    digest = hashlib.sha256(f"{context}\n{day.isoformat()}\n{landing}\n".encode())
    for before, fingerprint in sorted(window.items()):
        digest.update(f"{before.isoformat()}={fingerprint}\n".encode())
    return digest.hexdigest()[:32]


def read_manifest(store: ObjectStore, day: dt.date) -> IngestManifest | None:
    """``day``'s manifest, or None when it has none (or an unreadable one)."""
    try:
        body = json.loads(store.get_bytes(layout.ingest_manifest_key(day)))
        return IngestManifest(
            day, str(body["fingerprint"]), {k: int(body["counts"][k]) for k in MANIFEST_COUNTS}
        )
    except (ObjectNotFoundError, ValueError, KeyError, TypeError):
        return None


def read_manifests(store: ObjectStore) -> dict[dt.date, IngestManifest]:
    """Every day's manifest (unreadable ones left out: their days count as never ingested)."""
    out = {}
    for day in layout.landed_dates(store.list_keys(f"{layout.WAREHOUSE_INGESTED}/")):
        manifest = read_manifest(store, day)
        if manifest is not None:
            out[day] = manifest
    return out


def window_fingerprints(store: ObjectStore, day: dt.date) -> dict[dt.date, str]:
    """The manifest fingerprints of the days in ``window_of(day)`` (one read per day)."""
    start, end = window_of(day)
    found = {}
    for offset in range((end - start).days):
        manifest = read_manifest(store, start + dt.timedelta(days=offset))
        if manifest is not None:
            found[manifest.day] = manifest.fingerprint
    return found


def write_manifest(
    store: ObjectStore, day: dt.date, fingerprint: str, result: IngestResult
) -> None:
    """Record that ``day`` was ingested from inputs with ``fingerprint``, and its counts."""
    counts = {name: int(getattr(result, name)) for name in MANIFEST_COUNTS}
    body = {"day": day.isoformat(), "fingerprint": fingerprint, "counts": counts}
    store.put_bytes(layout.ingest_manifest_key(day), json.dumps(body, sort_keys=True).encode())


class ManifestWindow:
    """The manifests as one pass over the days in date order finds them.

    ``fingerprint_of`` gives what a day's inputs hash to given the manifests of the days before
    it as they stand in this pass; ``record`` updates a day after it was ingested again.
    """

    def __init__(self, manifests: Mapping[dt.date, IngestManifest], context: str) -> None:
        self.manifests = dict(manifests)
        self.context = context
        self._days = sorted(self.manifests)

    def record(self, manifest: IngestManifest) -> None:
        """``manifest`` replaces the day's earlier one."""
        if manifest.day not in self.manifests:
            bisect.insort(self._days, manifest.day)
        self.manifests[manifest.day] = manifest

    def forget(self, day: dt.date) -> None:
        """``day`` has no manifest any more (its ingestion wrote none)."""
        if self.manifests.pop(day, None) is not None:
            self._days.remove(day)

    def fingerprint_of(self, day: dt.date, landing: str) -> str:
        """``day_fingerprint`` of ``day`` with ``landing`` and the window's manifests."""
        start, end = window_of(day)
        lo = bisect.bisect_left(self._days, start)
        hi = bisect.bisect_left(self._days, end)
        window = {d: self.manifests[d].fingerprint for d in self._days[lo:hi]}
        return day_fingerprint(self.context, day, landing, window)
