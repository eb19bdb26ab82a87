"""The Dagster code location: assets, checks, jobs, schedule, sensor and resources.

Resources are chosen per profile here and nowhere else. ``FITPULSE_PROFILE=local`` (default)
keeps everything under the project home (``FITPULSE_HOME``, default ``./.fitpulse``);
``production`` reads the object store, MLflow and pseudonymization settings from environment
variables through ``dg.EnvVar`` (resolved when a run starts, never at import).
"""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg

from assets import (
    evaluation,
    experiments,
    features,
    freshness,
    launch,
    monitoring,
    privacy,
    push,
    ranking,
    registry,
    registry_status,
    retrieval,
)
from assets.ingestion import (
    build_ingestion_assets,
    catalog_items,
    daily_partitions,
    member_profiles,
)
from assets.resources import (
    ModelRegistryResource,
    ObjectStoreIOManager,
    ObjectStoreResource,
    OnlineStoreResource,
    PseudonymizerResource,
    mlflow_tracking_resource,
)
from fitpulse_orchestration import layout
from fitpulse_orchestration.settings import ProjectHome, current_profile
from fitpulse_orchestration.storage import LocalObjectStore
from jobs import (
    build_retention_schedule,
    canary_review_job,
    catalog_refresh_job,
    erasure_job,
    experiment_analysis_job,
    ingestion_job,
    ingestion_job_schedule,
    launch_simulation_job,
    live_index_rebuild_schedule,
    monitoring_job,
    monitoring_job_schedule,
    promote_champion_job,
    push_training_job,
    registry_integrity_job,
    retention_job,
    review_model_job,
    rollback_champion_job,
    shadow_comparison_job,
    training_job,
)
from model_registry.client import EXPERIMENT
from sensors import (
    build_canary_sensor,
    build_catalog_sensor,
    build_drift_sensor,
    build_erasure_sensor,
    build_landing_sensor,
    build_promotion_sensor,
)

DEFAULT_PARTITION_START = "2024-01-01"

PARTITION_START_ENV = "FITPULSE_PARTITION_START"


def partition_start(home: ProjectHome, profile: str = "local") -> str:
    """The daily partitions' first day: ``$FITPULSE_PARTITION_START`` or the default.

    A local home starts earlier when its landing zone does (an imported log from 1997): the
    CLI's runs and the console's code location then see the same partitions, so the same job
    snapshots. A landing key without a valid ``date=`` (a stray file) is ignored here: the
    code location must load whatever lies in the landing zone; ``fitpulse train`` and the landing
    sensor name such keys.

    Raises:
        ValueError: when ``$FITPULSE_PARTITION_START`` is not a ``YYYY-MM-DD`` date.
    """
    start = os.environ.get(PARTITION_START_ENV) or DEFAULT_PARTITION_START
    try:
        dt.date.fromisoformat(start)
    except ValueError:
        raise ValueError(f"{PARTITION_START_ENV}={start!r} is not a YYYY-MM-DD date") from None
    if profile != "local":
        return start
    days = layout.landed_dates(LocalObjectStore(home.store).list_keys(f"{layout.LANDING_EVENTS}/"))
    return min(days[0].isoformat(), start) if days else start


def _resources(profile: str, home: ProjectHome) -> dict[str, object]:
    if profile == "local":
        store = ObjectStoreResource(kind="local", root=str(home.store))
        pseudonymizer = PseudonymizerResource(key_file=str(home.pseudonym_key_file))
        online: OnlineStoreResource = OnlineStoreResource(
            kind="sqlite", path=str(home.online_store)
        )
        tracking_uri: object = home.mlflow_tracking_uri
        artifacts: object = str(home.mlflow_artifacts)
    else:
        store = ObjectStoreResource(
            kind="s3",
            bucket=dg.EnvVar("FITPULSE_S3_BUCKET"),
            prefix=dg.EnvVar("FITPULSE_S3_PREFIX"),
            endpoint_url=dg.EnvVar("FITPULSE_S3_ENDPOINT_URL"),
        )
        pseudonymizer = PseudonymizerResource(secret=dg.EnvVar("FITPULSE_PSEUDONYM_SECRET"))
        online = OnlineStoreResource(kind="redis", url=dg.EnvVar("FITPULSE_REDIS_URL"))
        tracking_uri = {"env": "MLFLOW_TRACKING_URI"}
        artifacts = {"env": "FITPULSE_MLFLOW_ARTIFACTS"}
    mlflow = mlflow_tracking_resource.configured(
        {
            "experiment_name": EXPERIMENT,
            "mlflow_tracking_uri": tracking_uri,
            "artifact_location": artifacts,
        }
    )
    registry_uri = (
        home.mlflow_tracking_uri if profile == "local" else dg.EnvVar("MLFLOW_TRACKING_URI")
    )
    registry = (
        ModelRegistryResource(
            tracking_uri=registry_uri,
            object_store=store,
            audit_key_file=str(home.audit_key_file),
            reviewers_file=str(home.reviewers_file),
            model_cache_dir=str(home.model_cache),
        )
        if profile == "local"
        else ModelRegistryResource(
            tracking_uri=registry_uri,
            object_store=store,
            audit_key=dg.EnvVar("FITPULSE_AUDIT_KEY"),
            reviewers_file=dg.EnvVar("FITPULSE_REVIEWERS_FILE"),
        )
    )
    return {
        "object_store": store,
        "pseudonymizer": pseudonymizer,
        "online_store": online,
        "io_manager": ObjectStoreIOManager(object_store=store),
        "mlflow": mlflow,
        "model_registry": registry,
    }


def build_definitions(
    home: ProjectHome | None = None,
    profile: str = "local",
    partition_start: str = DEFAULT_PARTITION_START,
) -> dg.Definitions:
    """Wire every asset, check, job, schedule and sensor with the profile's resources."""
    home = home or ProjectHome.resolve()
    partitions = daily_partitions(partition_start)
    all_assets = [
        *build_ingestion_assets(partitions),
        catalog_items,
        member_profiles,
        *dg.load_assets_from_modules(
            [
                features,
                retrieval,
                ranking,
                evaluation,
                registry,
                registry_status,
                monitoring,
                experiments,
                push,
                freshness,
                privacy,
                launch,
            ]
        ),
    ]
    return dg.Definitions(
        assets=all_assets,
        asset_checks=dg.load_asset_checks_from_modules(
            [evaluation, registry, push, privacy, launch]
        ),
        jobs=[
            ingestion_job,
            training_job,
            monitoring_job,
            experiment_analysis_job,
            push_training_job,
            catalog_refresh_job,
            retention_job,
            erasure_job,
            review_model_job,
            promote_champion_job,
            registry_integrity_job,
            rollback_champion_job,
            launch_simulation_job,
            shadow_comparison_job,
            canary_review_job,
        ],
        schedules=[
            ingestion_job_schedule,
            monitoring_job_schedule,
            live_index_rebuild_schedule,
            build_retention_schedule(running=profile == "production"),
        ],
        sensors=[
            build_landing_sensor(ingestion_job, partitions),
            build_drift_sensor(training_job),
            build_promotion_sensor(promote_champion_job, registry_integrity_job),
            build_catalog_sensor(catalog_refresh_job),
            build_erasure_sensor(erasure_job),
            build_canary_sensor(canary_review_job),
        ],
        resources=_resources(profile, home),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Definitions for ``dagster dev`` and ``workspace.yaml`` (profile and home from the env)."""
    home = ProjectHome.resolve()
    profile = current_profile()
    return build_definitions(home, profile, partition_start(home, profile))
