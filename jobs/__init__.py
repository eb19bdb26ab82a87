"""Jobs and schedules."""

import dagster as dg
from dagster_mlflow import end_mlflow_on_run_finished

from assets.groups import (
    EVALUATION,
    EXPERIMENTS,
    FEATURES,
    FRESHNESS,
    INGESTION,
    MONITORING,
    PUSH,
    RANKING,
    REGISTRY,
    RETRIEVAL,
)
from jobs.privacy import build_retention_schedule, erasure_job, retention_job
from jobs.registry import promote_champion_job, review_model_job, rollback_champion_job
from jobs.tags import STAGE_TAG

registry_integrity_job = dg.define_asset_job(
    "registry_integrity_job",
    selection=dg.AssetSelection.checks(
        dg.AssetCheckKey(dg.AssetKey("registered_home_ranker"), "registry_audit_intact")
    ),
    description="Check the registry's audit chain and aliases (the promotion sensor launches it "
    "when it restores an alias or finds a broken chain).",
    executor_def=dg.in_process_executor,
)

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.assets("raw_events"),
    description="Validate one day of landed events into clean and quarantine partitions.",
    tags={STAGE_TAG: "ingestion"},
    # One asset and its checks: a process per step would only add an interpreter start each.
    executor_def=dg.in_process_executor,
)

training_job = dg.define_asset_job(
    "training_job",
    selection=(
        dg.AssetSelection.groups(FEATURES, RETRIEVAL, RANKING, EVALUATION, REGISTRY)
        | dg.AssetSelection.assets("catalog_items", "member_profiles")
    ),
    description="Reference data, features, retrieval, ranker, evaluation, registration and "
    "the promotion gate.",
    hooks={end_mlflow_on_run_finished},
    tags={STAGE_TAG: "training"},
    # dagster-mlflow finds "its" MLflow run by searching for the Dagster run id; steps that
    # start together in separate processes each miss the other's run and create their own
    # (an empty duplicate run per launch). One process keeps one MLflow run per Dagster run and
    # saves a ~5 s interpreter start per step; the stages are sequential anyway.
    executor_def=dg.in_process_executor,
)

push_training_job = dg.define_asset_job(
    "push_training_job",
    selection=dg.AssetSelection.groups(PUSH),
    description="Push examples, the open and fatigue models, off-policy evaluation of the "
    "push policy, its registration and gate, and the online push state (from the training "
    "snapshot of the latest training run).",
    hooks={end_mlflow_on_run_finished},
    tags={STAGE_TAG: "training"},
    executor_def=dg.in_process_executor,
)

monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=(
        dg.AssetSelection.groups(MONITORING)
        | dg.AssetSelection.assets("catalog_items", "member_profiles")
    ),
    description="Drift of features and predictions, training-serving skew and UX monitors "
    "against the champion.",
    executor_def=dg.in_process_executor,
)

experiment_analysis_job = dg.define_asset_job(
    "experiment_analysis_job",
    selection=dg.AssetSelection.groups(EXPERIMENTS),
    description="Per-variant outcomes (CTR, workout starts, 7-day return) of an online "
    "experiment from the ingested exposure log.",
    executor_def=dg.in_process_executor,
)

launch_simulation_job = dg.define_asset_job(
    "launch_simulation_job",
    selection=dg.AssetSelection.assets("simulated_ab"),
    description="Closed-loop simulated A/B of the registered feed and push models against the "
    "popularity feed and daily pushes (retention, workout starts, pushes, disables, safety).",
    hooks={end_mlflow_on_run_finished},
    executor_def=dg.in_process_executor,
)

shadow_comparison_job = dg.define_asset_job(
    "shadow_comparison_job",
    selection=dg.AssetSelection.assets("shadow_comparison"),
    description="Compare the challenger's shadow lists with the champion's served lists.",
    executor_def=dg.in_process_executor,
)

canary_review_job = dg.define_asset_job(
    "canary_review_job",
    selection=dg.AssetSelection.assets("canary_review"),
    description="Review the current step of a canary rollout from its logs: advance, hold, "
    "complete or roll back (from canary_rollout_sensor, or by hand).",
    executor_def=dg.in_process_executor,
)

catalog_refresh_job = dg.define_asset_job(
    "catalog_refresh_job",
    selection=dg.AssetSelection.groups(FRESHNESS) | dg.AssetSelection.assets("catalog_items"),
    description="Reload the catalog and update the live two-tower index: new catalog files "
    "incrementally (from catalog_sensor), or a full rebuild (nightly).",
    executor_def=dg.in_process_executor,
)

live_index_rebuild_schedule = dg.ScheduleDefinition(
    name="live_index_rebuild_schedule",
    job=catalog_refresh_job,
    cron_schedule="0 3 * * *",
    run_config={"ops": {"live_item_index": {"config": {"full_rebuild": True}}}},
    description="Nightly full rebuild of the live index (drops re-embedded and removed vectors "
    "the incremental updates leave in the graph).",
)

ingestion_job_schedule = dg.build_schedule_from_partitioned_job(
    ingestion_job,
    hour_of_day=0,
    minute_of_hour=30,
    # The partitions run through today (end_offset=1), so this requests the day just begun.
    description="Daily at 00:30 UTC: one ingestion_job run for the newest daily partition of "
    "raw_events (the partitions run through today).",
)

monitoring_job_schedule = dg.ScheduleDefinition(
    name="monitoring_job_schedule",
    job=monitoring_job,
    cron_schedule="30 2 * * *",
    description="Daily, after the night's ingestion.",
)

__all__ = [
    "INGESTION",
    "STAGE_TAG",
    "build_retention_schedule",
    "canary_review_job",
    "catalog_refresh_job",
    "erasure_job",
    "experiment_analysis_job",
    "ingestion_job",
    "ingestion_job_schedule",
    "launch_simulation_job",
    "live_index_rebuild_schedule",
    "monitoring_job",
    "monitoring_job_schedule",
    "promote_champion_job",
    "registry_integrity_job",
    "retention_job",
    "review_model_job",
    "rollback_champion_job",
    "shadow_comparison_job",
    "training_job",
]
