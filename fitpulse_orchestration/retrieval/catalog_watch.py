"""Which landed catalog files the live index has not applied yet (the catalog sensor's cursor).

The cursor keeps the keys already requested for the newest ``window_days`` landing days; a key
of an older day counts as applied (late files for long-gone days wait for the nightly full
rebuild). A request is named by a hash of its keys, so a replayed tick asks for the same run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from fitpulse_orchestration import layout


@dataclass(frozen=True)
class CatalogCursor:
    """Keys requested so far for days on or after ``since``."""

    since: str | None = None
    keys: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, text: str | None) -> CatalogCursor:
        """Read a cursor written by ``dump`` (empty: nothing applied yet)."""
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(since=raw.get("since"), keys=frozenset(raw.get("keys", ())))

    def dump(self) -> str:
        """The cursor as compact JSON."""
        return json.dumps({"since": self.since, "keys": sorted(self.keys)})


@dataclass(frozen=True)
class CatalogBatch:
    """New files to apply and the cursor after requesting them."""

    files: list[str]
    cursor: CatalogCursor
    initial: bool

    @property
    def run_key(self) -> str:
        """Idempotency key of the request (same files, same key)."""
        digest = hashlib.sha1("\n".join(self.files).encode()).hexdigest()[:16]
        return f"catalog:{'initial' if self.initial else 'update'}:{digest}"


def new_catalog_files(
    keys: Iterable[str], cursor: CatalogCursor, window_days: int = 3
) -> CatalogBatch:
    """The landed ``.parquet`` catalog keys not requested yet, in key (time) order.

    ``initial`` is True on the first call (empty cursor): everything landed so far is one
    batch, applied by a full build. A key without a valid ``date=`` is no day's file and is
    left out.
    """
    keys = sorted(k for k in keys if k.endswith(".parquet") and layout.dated(k) is not None)
    if not keys:
        return CatalogBatch([], cursor, initial=False)
    newest = max(layout.date_of_key(k) for k in keys)
    since = (newest - dt.timedelta(days=window_days - 1)).isoformat()
    floor = cursor.since or ""
    initial = cursor.since is None
    fresh = [k for k in keys if k not in cursor.keys and layout.date_of_key(k).isoformat() >= floor]
    kept = frozenset(
        k for k in (cursor.keys | set(fresh)) if layout.date_of_key(k).isoformat() >= since
    )
    return CatalogBatch(fresh, CatalogCursor(since=since, keys=kept), initial)
