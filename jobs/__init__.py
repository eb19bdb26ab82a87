"""Jobs and schedules."""

import dagster as dg
from dagster_mlflow import end_mlflow_on_run_finished

from assets.groups import EVALUATION, FEATURES, INGESTION, RANKING, REGISTRY, RETRIEVAL

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.assets("raw_events"),
    description="Validate one day of landed events into clean and quarantine partitions.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=(
        dg.AssetSelection.groups(FEATURES, RETRIEVAL, RANKING, EVALUATION, REGISTRY)
        | dg.AssetSelection.assets("catalog_items", "member_profiles")
    ),
    description="Reference data, features, retrieval, ranker, evaluation and registration.",
    hooks={end_mlflow_on_run_finished},
)

ingestion_job_schedule = dg.build_schedule_from_partitioned_job(
    ingestion_job, hour_of_day=0, minute_of_hour=30
)

__all__ = ["INGESTION", "ingestion_job", "ingestion_job_schedule", "training_job"]
