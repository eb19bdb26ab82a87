"""Privacy: the raw-event retention sweep and the check that proves it left nothing behind."""

import datetime as dt
import json

import dagster as dg

from assets.groups import PRIVACY
from assets.resources import ObjectStoreResource, PseudonymizerResource
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
            "zones": dg.MetadataValue.json({z: summary[z] for z in report.zones}),
        },
    )


@dg.asset_check(
    asset=raw_event_retention,
    blocking=True,
    description="A second, read-only pass over every expired landing day finds no record of a "
    "restricted user in any event zone.",
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
        passed=verify.records_deleted == 0 and not verify.unreadable_objects,
        metadata={
            "last_expired_day": verify.last_expired_day,
            "restricted_records_remaining": dg.MetadataValue.json(remaining),
            "objects_scanned": dg.MetadataValue.json(scanned),
            "unreadable_objects": json.dumps(verify.unreadable_objects),
        },
    )
