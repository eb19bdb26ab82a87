"""Append-only, hash-chained and signed audit log: registry decisions and canary rollouts.

MLflow keeps no history of alias moves or tag changes, and anyone who can reach the tracking
server can set a tag or move an alias. So every decision (registration, gate verdict, review,
promotion, rollback, and every tamper the platform detects) is written here, and this log, not
MLflow's tags, is what promotion and serving trust:

- entries of one model form a chain: entry ``seq`` (1, 2, ...) carries the SHA-256 of entry
  ``seq - 1`` (``prev``), so an edited, removed or reordered entry breaks every later link;
- each entry is signed with HMAC-SHA256 under a key from the secret store (``load_audit_key``),
  which the object store never holds, so whoever can write the store cannot forge an entry;
- an entry is written with a create-only put under ``<prefix>/<model>/<seq>-<action>.json``, so
  two writers never overwrite each other (the loser re-reads the head and retries).

``verify`` checks a model's whole chain and raises ``AuditIntegrityError`` naming the first
broken entry. Deleting the newest entries (truncation) leaves a valid shorter chain: the chain
alone cannot show it, which is why the store holding the log should be write-once (S3 Object
Lock) in production.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from fitpulse_orchestration.storage import ObjectStore

AUDIT_PREFIX: Final = "audit/registry"
AUDIT_KEY_ENV: Final = "FITPULSE_AUDIT_KEY"
"""Production: the audit signing key itself (from the secret store, via the environment)."""
GENESIS: Final = "0" * 64
"""``prev`` of a chain's first entry."""
_APPEND_TRIES: Final = 20
_SEQ_DIGITS: Final = 8


class AuditIntegrityError(RuntimeError):
    """The audit log was edited, reordered, truncated in the middle or forged."""


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
    seq: int = 0
    prev: str = GENESIS
    mac: str = ""

    def signed_bytes(self) -> bytes:
        """The canonical bytes the MAC covers (every field but ``mac``)."""
        body = asdict(self)
        body.pop("mac")
        return _canonical(body)

    def digest(self) -> str:
        """SHA-256 of the whole entry, MAC included: the next entry's ``prev``."""
        return hashlib.sha256(_canonical(asdict(self))).hexdigest()


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def load_audit_key(key_file: Path, env: dict[str, str] | None = None) -> str:
    """The signing key: ``$FITPULSE_AUDIT_KEY`` when set, else the local key file.

    The local file is created (random, mode 0600) on first use, like the pseudonymization key.
    """
    from fitpulse_orchestration.storage.keys import load_or_create_key

    value = (os.environ if env is None else env).get(AUDIT_KEY_ENV, "").strip()
    if value:
        if len(value) < 32:
            raise ValueError(f"{AUDIT_KEY_ENV} must hold at least 32 characters of secret")
        return value
    return load_or_create_key(key_file)


class AuditLog:
    """Signed entries under ``<prefix>/<model>/`` of an object store."""

    def __init__(self, store: ObjectStore, key: str, prefix: str = AUDIT_PREFIX) -> None:
        if len(key) < 32:
            raise ValueError("the audit signing key must hold at least 32 characters")
        self._store = store
        self._key = key.encode()
        self._prefix = prefix.rstrip("/")

    def _mac(self, entry: AuditEntry) -> str:
        return hmac.new(self._key, entry.signed_bytes(), hashlib.sha256).hexdigest()

    def _keys(self, model: str) -> list[str]:
        return sorted(self._store.list_keys(f"{self._prefix}/{model}/"))

    def _read(self, key: str) -> AuditEntry:
        try:
            return AuditEntry(**json.loads(self._store.get_bytes(key)))
        except (TypeError, ValueError) as exc:
            raise AuditIntegrityError(f"audit entry {key} is unreadable: {exc}") from exc

    def append(
        self,
        action: str,
        model: str,
        version: str | None,
        actor: str,
        note: str = "",
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Sign and write a new entry at the head of ``model``'s chain and return it.

        Raises:
            ValueError: when ``actor`` is blank (every entry names who acted).
            RuntimeError: when the head kept moving under concurrent writers.
        """
        if not actor.strip():
            raise ValueError("an audit entry needs an actor")
        for _ in range(_APPEND_TRIES):
            keys = self._keys(model)
            head = self._read(keys[-1]) if keys else None
            entry = AuditEntry(
                action=action,
                model=model,
                version=version,
                actor=actor.strip(),
                at=_now().isoformat(timespec="microseconds"),
                note=note,
                details=details or {},
                seq=(head.seq if head else 0) + 1,
                prev=head.digest() if head else GENESIS,
            )
            entry = replace(entry, mac=self._mac(entry))
            key = f"{self._prefix}/{model}/{entry.seq:0{_SEQ_DIGITS}d}-{action}.json"
            if self._store.put_new(key, json.dumps(asdict(entry), sort_keys=True).encode()):
                return entry
        raise RuntimeError(f"could not append to the audit log of {model}: its head kept moving")

    def verify(self, model: str) -> list[AuditEntry]:
        """``model``'s entries, oldest first, after checking every link and signature.

        Raises:
            AuditIntegrityError: at the first entry whose position, link or signature is wrong.
        """
        entries: list[AuditEntry] = []
        prev = GENESIS
        for n, key in enumerate(self._keys(model), start=1):
            entry = self._read(key)
            where = f"audit entry {key}"
            if entry.seq != n or not key.rsplit("/", 1)[-1].startswith(f"{n:0{_SEQ_DIGITS}d}-"):
                raise AuditIntegrityError(f"{where}: expected entry {n} of the chain")
            if entry.model != model:
                raise AuditIntegrityError(f"{where}: names model {entry.model!r}")
            if entry.prev != prev:
                raise AuditIntegrityError(f"{where}: does not follow entry {n - 1}")
            if not hmac.compare_digest(entry.mac, self._mac(entry)):
                raise AuditIntegrityError(f"{where}: signature does not match")
            entries.append(entry)
            prev = entry.digest()
        return entries

    def head(self, model: str) -> AuditEntry | None:
        """The newest entry of ``model`` as stored (None: none, or it cannot be read)."""
        keys = self._keys(model)
        if not keys:
            return None
        try:
            return self._read(keys[-1])
        except AuditIntegrityError:
            return None

    def entries(self, model: str | None = None) -> list[AuditEntry]:
        """Every entry (of ``model`` when given) as stored, oldest first, unverified.

        For display; decisions read ``verify``.
        """
        if model is not None:
            return [self._read(k) for k in self._keys(model)]
        found = [self._read(k) for k in self._store.list_keys(f"{self._prefix}/")]
        return sorted(found, key=lambda e: (e.at, e.model, e.seq))

    def location(self) -> str:
        """Where the log lives (a path or an ``s3://`` URI)."""
        return self._store.uri(self._prefix)
