"""Erasure of one user on request (right to be forgotten).

``erase_user`` removes, for one raw user id:

- the user's lines from every landed event batch and every quarantine partition (a quarantined
  line that merely mentions the id, e.g. malformed JSON, is removed too);
- the user's rows from every clean partition and every served-feature log (by pseudonym);
- the user's landed profile rows;
- the user's online features, history and push state, and the push frequency-cap records;
- the user's rows in every registered feed bundle (``model_registry.erasure``: each version that
  holds the pseudonym is rewritten without it and re-bound in the registry's audit log).

It first adds the pseudonym to the erasure list (``privacy.suppression``), so an ingestion or a
training snapshot running at the same time, or a late batch from the device, cannot bring the
user back: ingestion drops listed users' events and counts them, and the training snapshot
excludes them.

Derived asset values (the training snapshot, feature tables, models, evaluation and monitoring
values) are rebuilt from the scrubbed warehouse by every training run; any that still holds the
pseudonym ``DERIVED_VALUE_DAYS`` after the erasure is deleted by ``privacy.derived`` (the daily
``retention_job``), and its check proves none is left. The erasure list and the privacy audit
keep the pseudonym: they are what keeps the user out.

The audit record (``audit/privacy/``) keeps the pseudonym, a keyed hash, and the counts; never
the raw id.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.privacy.raw_zone import (
    RAW_ID_ZONES,
    ZONE_PREFIXES,
    ZoneCounts,
    filter_object,
    zone_keys,
)
from fitpulse_orchestration.privacy.suppression import add_erased, erased_raw_id
from fitpulse_orchestration.storage import ObjectStore
from fitpulse_orchestration.storage.online_store import OnlineFeatureStore


class MemberRecords(Protocol):
    """A store holding per-member records erasure must remove (the push cap store)."""

    def forget_user(self, user_id: str) -> int:
        """Erase the member's records; return how many were removed."""
        ...


BundleEraser = Callable[[str], list[str]]
"""Rewrites the registered bundles holding a pseudonym; returns the versions rewritten."""

PRIVACY_AUDIT_PREFIX: Final = "audit/privacy"
DERIVED_VALUE_DAYS: Final = 7
"""Days after an erasure by which no derived asset value may hold the pseudonym."""
ERASURE_STEPS: Final = (
    "erasure_list",
    *(f"zone:{zone}" for zone in ZONE_PREFIXES),
    "online_store",
    "push_caps",
    "registry_bundles",
)
"""The steps of one erasure, in order (the audit record says which are done)."""


@dataclass
class ErasureReport:
    """What one erasure removed, zone by zone."""

    pseudonym: str
    erased_at: str
    requested_by: str
    zones: dict[str, ZoneCounts] = field(default_factory=dict)
    online_rows: int = 0
    push_records: int = 0
    bundles_rewritten: list[str] = field(default_factory=list)
    """Registered feed-bundle versions rewritten without the user."""
    audit_key: str = ""
    status: str = "in_progress"
    """``in_progress`` until every step is done, then ``complete``; ``failed`` with ``error``."""
    steps_done: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def records_deleted(self) -> int:
        """Records removed from the object store (all zones)."""
        return sum(z.records_deleted for z in self.zones.values())

    def summary(self) -> dict[str, Any]:
        """The audit record: counts and the keyed hash, no raw id."""
        return {
            "action": "erasure",
            "pseudonym": self.pseudonym,
            "erased_at": self.erased_at,
            "requested_by": self.requested_by,
            "records_deleted": {z: c.records_deleted for z, c in self.zones.items()},
            "objects_rewritten": {z: c.objects_rewritten for z, c in self.zones.items()},
            "objects_deleted": {z: c.objects_deleted for z, c in self.zones.items()},
            "unreadable_objects": sorted(
                key for c in self.zones.values() for key in c.unreadable_objects
            ),
            "online_rows": self.online_rows,
            "push_records": self.push_records,
            "bundles_rewritten": list(self.bundles_rewritten),
            "derived_values_gone_by": (
                dt.datetime.fromisoformat(self.erased_at) + dt.timedelta(days=DERIVED_VALUE_DAYS)
            ).isoformat(),
            "status": self.status,
            "steps_done": list(self.steps_done),
            "steps": list(ERASURE_STEPS),
            "error": self.error,
        }


def _validate_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError("erasure needs a non-empty user id")
    if user_id != user_id.strip():
        raise ValueError(f"user id {user_id!r} has leading or trailing whitespace")
    return user_id


def erase_user(
    store: ObjectStore,
    pseudonymizer: Pseudonymizer,
    user_id: str,
    online: OnlineFeatureStore | None = None,
    caps: MemberRecords | None = None,
    requested_by: str = "unknown",
    now: dt.datetime | None = None,
    bundles: BundleEraser | None = None,
) -> ErasureReport:
    """Erase every record of raw user id ``user_id`` and write the audit record.

    Idempotent and resumable: erasing an erased user finds nothing and audits that, so a retry
    after a crash finishes the job. The audit record is written before the first step and
    rewritten after each (``status``, ``steps_done``): a crash leaves an ``in_progress`` record of
    what was done, and a failure a ``failed`` one with the error, before it propagates.

    Raises:
        ValueError: for an empty user id.
        OnlineStoreUnavailableError: when the online store cannot be reached (the object store
            is already clean by then; rerun the erasure once it is back).
    """
    _validate_user_id(user_id)
    now = now or dt.datetime.now(dt.UTC)
    pseudonym = pseudonymizer.pseudonymize(user_id)
    report = ErasureReport(pseudonym, now.isoformat(), requested_by)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    report.audit_key = f"{PRIVACY_AUDIT_PREFIX}/{stamp}-erasure-{uuid.uuid4().hex[:8]}.json"
    needle = json.dumps(user_id)  # how the id appears inside a raw JSON line

    def save() -> None:
        store.put_bytes(report.audit_key, json.dumps(report.summary(), indent=2).encode())

    def raw_match(user: str | None, text: str) -> bool:
        return user == user_id or (user is None and needle in text)

    def pseudo_match(user: str | None, _text: str) -> bool:
        return user == pseudonym

    def zone_step(zone: str) -> None:
        counts = ZoneCounts()
        predicate = raw_match if zone in RAW_ID_ZONES else pseudo_match
        for key in zone_keys(store, zone):
            counts.add(filter_object(store, zone, key, predicate))
        report.zones[zone] = counts

    def online_step() -> None:
        if online is not None:
            report.online_rows = online.forget(pseudonym)

    def caps_step() -> None:
        if caps is not None:
            report.push_records = caps.forget_user(pseudonym)

    def bundles_step() -> None:
        if bundles is not None:
            report.bundles_rewritten = bundles(pseudonym)

    steps: dict[str, Callable[[], None]] = {
        "erasure_list": functools.partial(add_erased, store, pseudonym, report.erased_at),
        **{f"zone:{zone}": functools.partial(zone_step, zone) for zone in ZONE_PREFIXES},
        "online_store": online_step,
        "push_caps": caps_step,
        "registry_bundles": bundles_step,
    }
    save()
    for name, step in steps.items():
        try:
            step()
        except Exception as exc:
            report.status, report.error = "failed", f"{name}: {type(exc).__name__}: {exc}"
            save()
            raise
        report.steps_done.append(name)
        save()
    report.status = "complete"
    save()
    return report


REQUESTS_PREFIX: Final = "privacy/requests"
"""Pending erasure requests (raw ids: part of the raw zone, deleted once processed)."""
REJECTED_PREFIX: Final = "privacy/rejected"


def request_erasure(
    store: ObjectStore, user_id: str, requested_by: str, now: dt.datetime | None = None
) -> str:
    """File an erasure request for ``erasure_job``; return its key.

    The raw id travels in the object store, never in a Dagster run config or log.
    """
    _validate_user_id(user_id)
    now = now or dt.datetime.now(dt.UTC)
    key = f"{REQUESTS_PREFIX}/{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}.json"
    body = {"user_id": user_id, "requested_by": requested_by, "requested_at": now.isoformat()}
    store.put_bytes(key, json.dumps(body).encode())
    return key


def pending_requests(store: ObjectStore) -> list[str]:
    """Keys of the filed, unprocessed requests, oldest first."""
    return store.list_keys(f"{REQUESTS_PREFIX}/")


@dataclass
class RequestOutcome:
    """One processed request: its report, or why it was rejected (moved to ``privacy/rejected``)."""

    request_key: str
    report: ErasureReport | None = None
    rejected: str = ""


def process_requests(
    store: ObjectStore,
    pseudonymizer: Pseudonymizer,
    online: OnlineFeatureStore | None = None,
    caps: MemberRecords | None = None,
    now: dt.datetime | None = None,
    bundles: BundleEraser | None = None,
) -> list[RequestOutcome]:
    """Erase the user of every pending request, then delete the request.

    A request that is not a JSON object with a usable ``user_id`` is moved to
    ``privacy/rejected/`` with the reason (never silently dropped). A failure of the online
    store propagates and leaves the request pending, so the next run retries it.
    """
    outcomes = []
    for key in pending_requests(store):
        try:
            body = json.loads(store.get_bytes(key))
            if not isinstance(body, dict):
                raise ValueError("request is not a JSON object")
            user_id = body.get("user_id")
            if not isinstance(user_id, str):
                raise ValueError("request has no string user_id")
            _validate_user_id(user_id)
        except ValueError as exc:
            reason = str(exc)
            name = key.rsplit("/", 1)[-1]
            store.put_bytes(
                f"{REJECTED_PREFIX}/{name}",
                json.dumps({"reason": reason, "request_key": key}).encode(),
            )
            store.delete(key)
            outcomes.append(RequestOutcome(key, rejected=reason))
            continue
        requested_by = str(body.get("requested_by", "unknown"))
        report = erase_user(store, pseudonymizer, user_id, online, caps, requested_by, now, bundles)
        store.delete(key)
        outcomes.append(RequestOutcome(key, report=report))
    return outcomes


def purge_erased_lines(
    store: ObjectStore, keys: list[str], pseudonymizer: Pseudonymizer, erased: frozenset[str]
) -> ZoneCounts:
    """Remove the lines of erased users from landed batches that arrived after their erasure.

    Ingestion lists such batches (``IngestResult.erased_sources``); the raw ids are unknown to
    the erasure list, so each line's user is pseudonymized and compared.
    """
    is_erased = erased_raw_id(pseudonymizer, erased)
    counts = ZoneCounts()
    for key in keys:
        counts.add(filter_object(store, "landing", key, lambda user, _text: is_erased(user)))
    return counts
