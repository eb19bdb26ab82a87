"""Append-only audit log of registry decisions (gates, reviews, promotions, rollbacks).

MLflow keeps no history of alias moves or tag changes, so every decision is also written here:
one JSON object per entry, under a key that embeds the time and a random suffix. Entries are
never overwritten or deleted by this module; the log lives in the project's object store (the
local filesystem by default, S3 in production).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from fitpulse_orchestration.storage import ObjectStore

AUDIT_PREFIX: Final = "audit/registry"


@dataclass(frozen=True)
class AuditEntry:
    """One decision: who did what to which model version, when, and what they saw."""

    action: str
    model: str
    version: str | None
    actor: str
    at: str
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuditLog:
    """Entries under ``audit/registry/<model>/`` of an object store."""

    def __init__(self, store: ObjectStore, prefix: str = AUDIT_PREFIX) -> None:
        self._store = store
        self._prefix = prefix.rstrip("/")

    def append(
        self,
        action: str,
        model: str,
        version: str | None,
        actor: str,
        note: str = "",
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Write a new entry and return it.

        Raises:
            ValueError: when ``actor`` is blank (every entry names who acted).
        """
        if not actor.strip():
            raise ValueError("an audit entry needs an actor")
        at = _now()
        entry = AuditEntry(
            action=action,
            model=model,
            version=version,
            actor=actor.strip(),
            at=at.isoformat(timespec="microseconds"),
            note=note,
            details=details or {},
        )
        key = (
            f"{self._prefix}/{model}/{at.strftime('%Y%m%dT%H%M%S%fZ')}-"
            f"{action}-{uuid.uuid4().hex[:8]}.json"
        )
        if self._store.exists(key):
            raise RuntimeError(f"audit entry {key} already exists; refusing to overwrite it")
        self._store.put_bytes(key, json.dumps(asdict(entry), sort_keys=True).encode())
        return entry

    def entries(self, model: str | None = None) -> list[AuditEntry]:
        """Every entry (of ``model`` when given), oldest first."""
        prefix = f"{self._prefix}/{model}/" if model else f"{self._prefix}/"
        keys = sorted(self._store.list_keys(prefix), key=lambda k: k.rsplit("/", 1)[-1])
        return [AuditEntry(**json.loads(self._store.get_bytes(k))) for k in keys]

    def location(self) -> str:
        """Where the log lives (a path or an ``s3://`` URI)."""
        return self._store.uri(self._prefix)
