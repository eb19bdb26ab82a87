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
    # dagster-mlflow finds "its" MLflow run by searching for the Dagster run id; steps that
    # start together in separate processes each miss the other's run and create their own
    # (an empty duplicate run per launch). One process keeps one MLflow run per Dagster run and
    # saves a ~5 s interpreter start per step; the stages are sequential anyway.
    executor_def=dg.in_process_executor,
)

ingestion_job_schedule = dg.build_schedule_from_partitioned_job(
    ingestion_job, hour_of_day=0, minute_of_hour=30
)

__all__ = ["INGESTION", "ingestion_job", "ingestion_job_schedule", "training_job"]
