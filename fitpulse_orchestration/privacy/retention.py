"""30-day retention of raw events for users in regions whose health-data rules require it.

Age is counted from landing: a record of landing day ``d`` is as old as the time since ``d``
began. A daily sweep therefore removes day ``d`` at the last sweep before its oldest record
turns ``max_age_days`` old, i.e. every day ``d <= today - (max_age_days - 1)``; no record of a
restricted user reaches 30 days while the sweep runs daily (the records of a swept day are
between 28 and 30 days old).

A record is restricted when its user's region (the latest landed profile) is in
``RETENTION_30D_REGIONS``, and also when the user has no profile or the record is unreadable:
a region that cannot be established is treated by the strictest rule. Records of other regions
stay. Aggregated features and models are not raw events and persist.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Final

import pandas as pd

from fitpulse_orchestration import layout
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.privacy.raw_zone import (
    EVENT_ZONES,
    RAW_ID_ZONES,
    Predicate,
    ZoneCounts,
    filter_object,
    zone_keys,
)
from fitpulse_orchestration.storage import ObjectStore
from fitpulse_orchestration.storage.tables import read_parquet_prefix

RETENTION_30D_REGIONS: Final = frozenset({"eu-west", "eu-central", "uk"})
"""Regions whose health-data rules keep raw events at most 30 days."""


@dataclass(frozen=True)
class RetentionPolicy:
    """How long restricted raw events may stay, and for which regions."""

    max_age_days: int = 30
    regions: frozenset[str] = RETENTION_30D_REGIONS

    def __post_init__(self) -> None:
        if self.max_age_days < 1:
            raise ValueError(f"max_age_days must be at least 1, got {self.max_age_days}")

    def last_expired_day(self, now: dt.datetime) -> dt.date:
        """Newest landing day a daily sweep at ``now`` removes (restricted records only)."""
        return now.date() - dt.timedelta(days=self.max_age_days - 1)


@dataclass(frozen=True)
class UserRegions:
    """The latest landed region of every profiled user, by raw id and by pseudonym."""

    by_raw_id: dict[str, str]
    by_pseudonym: dict[str, str]

    def restricted(self, policy: RetentionPolicy) -> tuple[Predicate, Predicate]:
        """Deletion predicates for raw-id zones and for pseudonym zones."""

        def raw(user: str | None, _text: str) -> bool:
            region = self.by_raw_id.get(user) if user is not None else None
            return region is None or region in policy.regions

        def pseudo(user: str | None, _text: str) -> bool:
            region = self.by_pseudonym.get(user) if user is not None else None
            return region is None or region in policy.regions

        return raw, pseudo


def load_user_regions(store: ObjectStore, pseudonymizer: Pseudonymizer) -> UserRegions:
    """Regions from the landed profiles (the later file wins for each user)."""
    frames = read_parquet_prefix(store, f"{layout.LANDING_USERS}/")
    if not frames:
        return UserRegions({}, {})
    profiles = pd.concat([f[["user_id", "region"]] for f in frames], ignore_index=True)
    # A profile without a region is an unknown region: left out, so the strictest rule applies.
    latest = profiles.drop_duplicates("user_id", keep="last").dropna(subset=["region"])
    raw_ids = latest["user_id"].astype(str).tolist()
    regions = latest["region"].astype(str).tolist()
    pseudonyms = pseudonymizer.pseudonymize_many(raw_ids)
    return UserRegions(
        dict(zip(raw_ids, regions, strict=True)), dict(zip(pseudonyms, regions, strict=True))
    )


@dataclass
class RetentionReport:
    """What a sweep (or a verification pass) found in each event zone."""

    as_of: str
    last_expired_day: str
    max_age_days: int
    zones: dict[str, ZoneCounts] = field(default_factory=dict)

    @property
    def records_deleted(self) -> int:
        """Restricted records deleted (or, for a verification, still present) in all zones."""
        return sum(z.records_deleted for z in self.zones.values())

    @property
    def unreadable_objects(self) -> list[str]:
        """Expired objects whose users could not be read."""
        return [key for z in self.zones.values() for key in z.unreadable_objects]

    @property
    def undated_objects(self) -> list[str]:
        """Objects of every zone whose key names no day: neither swept nor proven expired."""
        return [key for z in self.zones.values() for key in z.undated_objects]

    def summary(self) -> dict[str, Any]:
        """Per-zone counts for metadata and audit."""
        return {
            "as_of": self.as_of,
            "last_expired_day": self.last_expired_day,
            "max_age_days": self.max_age_days,
            **{
                zone: {
                    "objects_scanned": c.objects_scanned,
                    "objects_rewritten": c.objects_rewritten,
                    "objects_deleted": c.objects_deleted,
                    "records_deleted": c.records_deleted,
                    "records_kept": c.records_kept,
                    "undated_objects": len(c.undated_objects),
                }
                for zone, c in self.zones.items()
            },
        }


def _expired_keys(
    store: ObjectStore, zone: str, last_expired: dt.date
) -> tuple[list[str], list[str]]:
    """The zone's keys of days at or before ``last_expired``, and its keys without a day."""
    expired, undated = [], []
    for key in zone_keys(store, zone):
        day = layout.dated(key)
        if day is None:
            undated.append(key)
        elif day <= last_expired:
            expired.append(key)
    return expired, undated


def _pass(
    store: ObjectStore,
    pseudonymizer: Pseudonymizer,
    now: dt.datetime,
    policy: RetentionPolicy | None,
    dry_run: bool,
) -> RetentionReport:
    policy = policy or RetentionPolicy()
    last_expired = policy.last_expired_day(now)
    raw, pseudo = load_user_regions(store, pseudonymizer).restricted(policy)
    report = RetentionReport(now.isoformat(), last_expired.isoformat(), policy.max_age_days)
    for zone in EVENT_ZONES:
        predicate = raw if zone in RAW_ID_ZONES else pseudo
        expired, undated = _expired_keys(store, zone, last_expired)
        counts = ZoneCounts(undated_objects=undated)
        for key in expired:
            result = filter_object(store, zone, key, predicate, dry_run)
            if result.unreadable_objects and not dry_run:
                store.delete(key)
                result.objects_deleted = 1
            counts.add(result)
        report.zones[zone] = counts
    return report


def sweep_expired_events(
    store: ObjectStore,
    pseudonymizer: Pseudonymizer,
    now: dt.datetime,
    policy: RetentionPolicy | None = None,
) -> RetentionReport:
    """Delete the restricted records of every expired landing day, in every event zone.

    An expired landing batch that cannot be decompressed is deleted whole (its users cannot be
    established) and listed in ``unreadable_objects`` of its zone. An object whose key names no
    day (a stray file) has no age: it is left alone and listed in ``undated_objects``, and the
    sweep goes on with every dated object.
    """
    return _pass(store, pseudonymizer, now, policy, dry_run=False)


def expired_restricted_records(
    store: ObjectStore,
    pseudonymizer: Pseudonymizer,
    now: dt.datetime,
    policy: RetentionPolicy | None = None,
) -> RetentionReport:
    """Count, without deleting, the restricted records still present in expired landing days.

    ``records_deleted`` of each zone here means *would be deleted*: the proof that a sweep left
    nothing behind is that it is zero everywhere and no expired object is unreadable.
    """
    return _pass(store, pseudonymizer, now, policy, dry_run=True)
