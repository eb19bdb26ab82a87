"""Privacy: raw-event retention and the expiry of erased members' derived values, with checks.

Each sweep has a blocking check that re-reads what it swept and proves nothing is left.
"""

import datetime as dt
import json

import dagster as dg

from assets.groups import PRIVACY
from assets.resources import ObjectStoreResource, PseudonymizerResource
from fitpulse_orchestration.privacy.derived import (
    ExpiryReport,
    derived_values_holding,
    expire_derived_values,
    overdue_erasures,
)
from fitpulse_orchestration.privacy.erasure import DERIVED_VALUE_DAYS
from fitpulse_orchestration.privacy.retention import (
    RetentionPolicy,
    RetentionReport,
    expired_restricted_records,
    sweep_expired_events,
)


class RetentionConfig(dg.Config):
    """Mirrors ``RetentionPolicy``; ``as_of`` is the sweep's clock (empty: now)."""

    max_age_days: int = 30
    as_of: str = ""


def _as_of(text: str) -> dt.datetime:
    if not text:
        return dt.datetime.now(dt.UTC)
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@dg.asset(group_name=PRIVACY, kinds={"s3", "parquet"})
def raw_event_retention(
    config: RetentionConfig,
    object_store: ObjectStoreResource,
    pseudonymizer: PseudonymizerResource,
) -> dg.Output[RetentionReport]:
    """The latest retention sweep: restricted users' raw events removed from expired days.

    Landing batches, clean and quarantine partitions and served-feature logs of every landing
    day at or before ``last_expired_day`` lose the records of users in 30-day-retention regions
    (and of users whose region is unknown). Other regions' records stay.
    """
    report = sweep_expired_events(
        object_store.get_store(),
        pseudonymizer.get_pseudonymizer(),
        _as_of(config.as_of),
        RetentionPolicy(max_age_days=config.max_age_days),
    )
    summary = report.summary()
    return dg.Output(
        report,
        metadata={
            "as_of": report.as_of,
            "last_expired_day": report.last_expired_day,
            "records_deleted": report.records_deleted,
            "unreadable_objects_deleted": len(report.unreadable_objects),
            "undated_objects": json.dumps(report.undated_objects),
            "zones": dg.MetadataValue.json({z: summary[z] for z in report.zones}),
        },
    )


@dg.asset_check(
    asset=raw_event_retention,
    blocking=True,
    description="A second, read-only pass over every expired landing day finds no record of a "
    "restricted user in any event zone, and no object of an event zone lacks a day (its age, so "
    "its expiry, cannot be established).",
)
def no_expired_raw_events(
    raw_event_retention: RetentionReport,
    object_store: ObjectStoreResource,
    pseudonymizer: PseudonymizerResource,
) -> dg.AssetCheckResult:
    """Prove the sweep: count what an independent pass would still delete (must be 0)."""
    verify = expired_restricted_records(
        object_store.get_store(),
        pseudonymizer.get_pseudonymizer(),
        dt.datetime.fromisoformat(raw_event_retention.as_of),
        RetentionPolicy(max_age_days=raw_event_retention.max_age_days),
    )
    remaining = {zone: counts.records_deleted for zone, counts in verify.zones.items()}
    scanned = {zone: counts.objects_scanned for zone, counts in verify.zones.items()}
    return dg.AssetCheckResult(
        passed=verify.records_deleted == 0
        and not verify.unreadable_objects
        and not verify.undated_objects,
        metadata={
            "last_expired_day": verify.last_expired_day,
            "restricted_records_remaining": dg.MetadataValue.json(remaining),
            "objects_scanned": dg.MetadataValue.json(scanned),
            "unreadable_objects": json.dumps(verify.unreadable_objects),
            "undated_objects": json.dumps(verify.undated_objects),
        },
    )


class DerivedExpiryConfig(dg.Config):
    """When erased members' derived values expire.

    ``deadline_days``: days after an erasure by which no derived value may hold the member;
    ``as_of``: the pass's clock (empty: now).
    """

    deadline_days: int = DERIVED_VALUE_DAYS
    as_of: str = ""


@dg.asset(group_name=PRIVACY, kinds={"s3"})
def erased_member_expiry(
    config: DerivedExpiryConfig, object_store: ObjectStoreResource
) -> dg.Output[ExpiryReport]:
    """Derived asset values still holding a member erased ``deadline_days`` ago, deleted.

    Training rebuilds every derived value from the scrubbed warehouse, so on a platform that
    trains daily this finds nothing; it is the deadline's guarantee when training stalls. A
    deleted value is rebuilt by the next run of its job.
    """
    report = expire_derived_values(
        object_store.get_store(), _as_of(config.as_of), config.deadline_days
    )
    return dg.Output(
        report,
        metadata={
            "as_of": report.as_of,
            "deadline_days": report.deadline_days,
            "overdue_members": report.overdue,
            "values_scanned": report.values_scanned,
            "values_expired": dg.MetadataValue.json(sorted(report.expired)),
        },
    )


@dg.asset_check(
    asset=erased_member_expiry,
    blocking=True,
    description="A second, read-only pass over every derived asset value finds no member "
    "erased longer ago than the deadline.",
)
def no_overdue_erased_member(
    erased_member_expiry: ExpiryReport, object_store: ObjectStoreResource
) -> dg.AssetCheckResult:
    """Prove the deadline: asset values still holding an overdue erased member (must be 0)."""
    store = object_store.get_store()
    overdue = overdue_erasures(
        store,
        dt.datetime.fromisoformat(erased_member_expiry.as_of),
        erased_member_expiry.deadline_days,
    )
    holding, scanned = derived_values_holding(store, overdue)
    return dg.AssetCheckResult(
        passed=not holding,
        metadata={
            "overdue_members": len(overdue),
            "values_scanned": scanned,
            "values_holding_overdue_members": dg.MetadataValue.json(sorted(holding)),
        },
    )
