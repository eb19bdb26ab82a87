"""Sensors: run ingestion for landing days whose batches changed."""

import json
from typing import Any

import dagster as dg

from assets.resources import ObjectStoreResource
from fitpulse_orchestration import layout
from fitpulse_orchestration.events.landing_watch import changed_days, landing_fingerprints


def build_landing_sensor(
    job: dg.JobDefinition | Any, partitions: dg.DailyPartitionsDefinition
) -> dg.SensorDefinition:
    """``ingestion_job_on_landing``: one ingestion run per new or changed landing day."""

    @dg.sensor(
        name="ingestion_job_on_landing",
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
    )
    def ingestion_job_on_landing(
        context: dg.SensorEvaluationContext, object_store: ObjectStoreResource
    ) -> dg.SensorResult:
        """Request ingestion of each landing day whose set of batches changed."""
        store = object_store.get_store()
        previous = json.loads(context.cursor) if context.cursor else {}
        current = landing_fingerprints(store.iter_keys(f"{layout.LANDING_EVENTS}/"))
        first = partitions.start.date().isoformat()
        requests = [
            dg.RunRequest(run_key=f"{day}:{fp}", partition_key=day)
            for day, fp in changed_days(current, previous)
            if day >= first
        ]
        skipped = sorted(d for d in current if d < first)
        if skipped:
            context.log.warning(
                f"{len(skipped)} landing days precede the partitions' start {first} "
                f"(first: {skipped[0]}); set FITPULSE_PARTITION_START to ingest them"
            )
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(current, sort_keys=True))

    return ingestion_job_on_landing
