"""Record-level deletion in the raw zone, shared by retention and erasure.

The raw zone is everything that holds one row per event or per user action:

- ``landing``: the collector's gzipped NDJSON batches (raw user ids, health fields);
- ``clean``: the pseudonymized warehouse partitions;
- ``quarantine``: rejected lines, kept verbatim (raw ids, health fields);
- ``served``: the feed service's sampled served-feature logs (pseudonyms);
- ``shadow``: shadow mode's champion and challenger lists of sampled requests (pseudonyms);
- ``import_rejects``: the rows an import could not land, as CSV with the source's own
  columns (raw ids, in whichever column held them).

Each function rewrites one object without the records a predicate selects and deletes the
object when nothing is left. A record whose user cannot be read (a malformed line) is passed to
the predicate with ``None``: the caller decides whether an unknown user is deleted.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import pandas as pd

from fitpulse_orchestration import layout
from fitpulse_orchestration.storage import ObjectStore, read_parquet, write_parquet

EVENT_ZONES: Final = ("landing", "clean", "quarantine", "served", "shadow")
"""Zones of event records (the 30-day retention applies to these)."""
ZONE_PREFIXES: Final = {
    "landing": f"{layout.LANDING_EVENTS}/",
    "clean": f"{layout.WAREHOUSE_EVENTS}/",
    "quarantine": f"{layout.WAREHOUSE_QUARANTINE}/",
    "served": f"{layout.SERVED_FEATURES}/",
    "shadow": f"{layout.SHADOW_LOGS}/",
    "profiles": f"{layout.LANDING_USERS}/",
    "import_rejects": f"{layout.IMPORT_REJECTS}/",
}
"""Where each zone lives. The user is a raw id in ``landing``, ``quarantine`` (inside the raw
line) and ``profiles`` (landed sign-ups, erased on request), a pseudonym in ``clean``,
``served`` and ``shadow``."""
RAW_ID_ZONES: Final = frozenset({"landing", "quarantine", "profiles", "import_rejects"})

Predicate = Callable[[str | None, str], bool]
"""Whether a record is deleted, from its user id (None: unreadable) and its raw text (the
NDJSON line of ``landing`` and ``quarantine`` records, empty elsewhere)."""


@dataclass
class ZoneCounts:
    """What one pass did to one zone."""

    objects_scanned: int = 0
    objects_rewritten: int = 0
    objects_deleted: int = 0
    records_deleted: int = 0
    records_kept: int = 0
    unreadable_objects: list[str] = field(default_factory=list)
    undated_objects: list[str] = field(default_factory=list)
    """Objects without a valid ``date=YYYY-MM-DD`` in their key: no day, so no age to expire."""

    def add(self, other: ZoneCounts) -> None:
        """Accumulate ``other`` into this one."""
        self.objects_scanned += other.objects_scanned
        self.objects_rewritten += other.objects_rewritten
        self.objects_deleted += other.objects_deleted
        self.records_deleted += other.records_deleted
        self.records_kept += other.records_kept
        self.unreadable_objects += other.unreadable_objects
        self.undated_objects += other.undated_objects


def zone_keys(store: ObjectStore, zone: str) -> list[str]:
    """The objects of ``zone`` its readers read, in key order.

    Landing: every key, as ingestion reads every batch under a day (gzipped or plain). The
    tables: the ``.parquet`` objects, as their readers do.
    """
    suffix = {"landing": "", "import_rejects": ".csv"}.get(zone, ".parquet")
    return list(store.iter_keys(ZONE_PREFIXES[zone], suffix))


def line_user(line: str) -> str | None:
    """The ``user_id`` of one raw NDJSON line, None when the line is not an object with one."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # malformed, or nested past the parser's limit
        return None
    if not isinstance(record, dict):
        return None
    user = record.get("user_id")
    return user if isinstance(user, str) and user else None


def _replace_or_delete(
    store: ObjectStore, key: str, counts: ZoneCounts, write: Callable[[], None], dry_run: bool
) -> None:
    if counts.records_deleted == 0 or dry_run:
        return
    if counts.records_kept == 0:
        store.delete(key)
        counts.objects_deleted = 1
    else:
        write()
        counts.objects_rewritten = 1


def filter_landing_batch(
    store: ObjectStore, key: str, delete: Predicate, dry_run: bool = False
) -> ZoneCounts:
    """Rewrite one gzipped (or plain) NDJSON batch without the selected lines.

    Lines are split on newline bytes only, as ingestion reads them, and the kept lines are
    written back byte for byte (other users' lines never change). A line that is not UTF-8 is
    judged on its escaped text (the raw id can still be found in it). A batch that cannot be
    decompressed is not touched and is listed in ``unreadable_objects``: its users cannot be
    known, so the caller decides.
    """
    counts = ZoneCounts(objects_scanned=1)
    data = store.get_bytes(key)
    gzipped = key.endswith(".gz")
    try:
        raw = gzip.decompress(data) if gzipped else data
    except (OSError, EOFError, zlib.error):
        counts.unreadable_objects.append(key)
        return counts
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    kept: list[bytes] = []
    for line in lines:
        try:
            text = line.decode("utf-8")
            user = line_user(text)
        except UnicodeDecodeError:
            text, user = line.decode("utf-8", "backslashreplace"), None
        if delete(user, text):
            counts.records_deleted += 1
        else:
            kept.append(line)
    counts.records_kept = len(kept)

    def write() -> None:
        body = b"\n".join(kept) + b"\n"
        store.put_bytes(key, gzip.compress(body) if gzipped else body)

    _replace_or_delete(store, key, counts, write, dry_run)
    return counts


def filter_table(
    store: ObjectStore, key: str, delete: Predicate, dry_run: bool = False
) -> ZoneCounts:
    """Rewrite one Parquet partition without the rows ``delete`` selects.

    Quarantine partitions are judged by their raw line (``raw``), the others by ``user_id``.
    """
    counts = ZoneCounts(objects_scanned=1)
    frame = read_parquet(store, key)
    if "raw" in frame.columns:
        raws = frame["raw"].astype(str).tolist()
        mask = [delete(line_user(raw), raw) for raw in raws]
    else:
        users = frame["user_id"].astype(object)
        verdict = {u: delete(None if pd.isna(u) else str(u), "") for u in pd.unique(users)}
        mask = [bool(verdict[u]) for u in users]
    counts.records_deleted = int(sum(mask))
    counts.records_kept = len(frame) - counts.records_deleted
    _replace_or_delete(
        store,
        key,
        counts,
        lambda: write_parquet(
            store, key, frame.loc[~pd.Series(mask, index=frame.index, dtype=bool)]
        ),
        dry_run,
    )
    return counts


def filter_object(
    store: ObjectStore, zone: str, key: str, delete: Predicate, dry_run: bool = False
) -> ZoneCounts:
    """Apply ``delete`` to one object of ``zone``.

    With ``dry_run`` nothing is written: ``records_deleted`` counts what would be deleted.
    """
    if zone == "landing":
        return filter_landing_batch(store, key, delete, dry_run)
    if zone == "import_rejects":
        return filter_csv(store, key, delete, dry_run)
    return filter_table(store, key, delete, dry_run)


def filter_csv(
    store: ObjectStore, key: str, delete: Predicate, dry_run: bool = False
) -> ZoneCounts:
    """Rewrite one rejects CSV without the rows ``delete`` selects.

    Which column holds the user is the source's business, so every cell is offered as the
    user (a row goes when any cell is the user); the row's text goes along for the rest.
    """
    counts = ZoneCounts(objects_scanned=1)
    try:
        frame = pd.read_csv(io.BytesIO(store.get_bytes(key)), dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError):
        counts.unreadable_objects.append(key)
        return counts
    mask = [
        any(delete(cell, ",".join(row)) for cell in row)
        for row in frame.itertuples(index=False, name=None)
    ]
    counts.records_deleted = int(sum(mask))
    counts.records_kept = len(frame) - counts.records_deleted

    def write() -> None:
        kept = frame.loc[[not m for m in mask]]
        store.put_bytes(key, kept.to_csv(index=False).encode("utf-8"))

    _replace_or_delete(store, key, counts, write, dry_run)
    return counts
