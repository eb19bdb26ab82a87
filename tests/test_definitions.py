"""The code location loads: jobs, schedule, sensor, assets, checks and the profile switch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import repository_def_from_target_def
from dagster._grpc.utils import get_loadable_targets

from fitpulse_orchestration.definitions import build_definitions
from fitpulse_orchestration.settings import ProjectHome

DEFINITIONS_MODULE = "fitpulse_orchestration.definitions"
EXPECTED_JOBS = {
    "registry_integrity_job",
    "ingestion_job",
    "training_job",
    "monitoring_job",
    "experiment_analysis_job",
    "push_training_job",
    "catalog_refresh_job",
    "retention_job",
    "erasure_job",
    "review_model_job",
    "promote_champion_job",
    "rollback_champion_job",
    "launch_simulation_job",
    "shadow_comparison_job",
    "canary_review_job",
}
MONITORING_ASSETS = {
    "monitoring_inputs",
    "monitored_model",
    "served_feed_log",
    "feature_drift_report",
    "prediction_drift_report",
    "training_serving_skew",
    "ux_monitors",
}
TRAINING_ASSETS = {
    "raw_events",
    "catalog_items",
    "member_profiles",
    "training_snapshot",
    "user_features",
    "item_features",
    "ranker_training_frame",
    "online_features",
    "retrieval_tuning",
    "als_model",
    "ease_model",
    "validation_models",
    "item_index",
    "two_tower_model",
    "two_tower_index",
    "retrieval_evaluation",
    "popular_items",
    "fallback_popular_items",
    "home_ranker",
    "feed_selection",
    "home_feed_model",
    "served_home_feed_model",
    "home_feed_evaluation",
    "registered_home_ranker",
    "promotion_gate",
    "registry_status",
}
EXPERIMENT_ASSETS = {"experiment_analysis"}
PUSH_ASSETS = {
    "push_training_examples",
    "push_open_model",
    "push_fatigue_model",
    "push_policy_evaluation",
    "registered_push_policy",
    "push_online_state",
}
FRESHNESS_ASSETS = {"live_item_index"}
PRIVACY_ASSETS = {"raw_event_retention", "erased_member_expiry"}
LAUNCH_ASSETS = {"simulated_ab", "shadow_comparison", "canary_review"}
EXPECTED_ASSETS = (
    TRAINING_ASSETS
    | MONITORING_ASSETS
    | EXPERIMENT_ASSETS
    | PUSH_ASSETS
    | FRESHNESS_ASSETS
    | PRIVACY_ASSETS
    | LAUNCH_ASSETS
)
EXPECTED_CHECKS = {
    ("registered_home_ranker", "registry_audit_intact"),
    ("raw_events", "rows_balance"),
    ("raw_events", "quarantine_rate"),
    ("home_feed_evaluation", "candidate_beats_popularity"),
    ("home_feed_evaluation", "served_feed_beats_retrievers"),
    ("home_feed_evaluation", "beginner_safety"),
    ("promotion_gate", "ndcg_lift"),
    ("promotion_gate", "cold_slice"),
    ("promotion_gate", "coverage"),
    ("promotion_gate", "beginner_safety"),
    ("promotion_gate", "scoring_latency"),
    ("training_serving_skew", "skew_within_threshold"),
    ("push_policy_evaluation", "pushes_per_user_week"),
    ("push_policy_evaluation", "disables_per_user_week"),
    ("ux_monitors", "empty_feed_rate"),
    ("ux_monitors", "fallback_rate"),
    ("ux_monitors", "beginner_violations_served"),
    ("ux_monitors", "notification_load"),
    ("raw_event_retention", "no_expired_raw_events"),
    ("erased_member_expiry", "no_overdue_erased_member"),
    ("simulated_ab", "launch_targets"),
}
ENV_VARS = (
    "FITPULSE_HOME",
    "FITPULSE_PROFILE",
    "FITPULSE_PARTITION_START",
    "FITPULSE_S3_BUCKET",
    "FITPULSE_S3_PREFIX",
    "FITPULSE_S3_ENDPOINT_URL",
    "FITPULSE_PSEUDONYM_SECRET",
    "FITPULSE_AUDIT_KEY",
    "FITPULSE_REVIEWERS_FILE",
    "MLFLOW_TRACKING_URI",
    "FITPULSE_MLFLOW_ARTIFACTS",
    "FITPULSE_REDIS_URL",
)


def _user_jobs(names: list[str]) -> set[str]:
    return {n for n in names if not n.startswith("__ASSET_JOB")}


def _load_like_dagster_dev() -> dg.RepositoryDefinition:
    """Resolve the module's ``@dg.definitions`` the way the code server does."""
    targets = get_loadable_targets(
        python_file=None,
        module_name=DEFINITIONS_MODULE,
        package_name=None,
        autoload_defs_module_name=None,
        working_directory=os.getcwd(),
        attribute=None,
        resolve_lazy_defs=True,
    )
    assert [t.attribute for t in targets] == ["defs"]
    repo = repository_def_from_target_def(targets[0].target_definition)
    assert repo is not None
    return repo


@pytest.fixture(scope="module")
def defs(tmp_path_factory: pytest.TempPathFactory) -> dg.Definitions:
    return build_definitions(ProjectHome(tmp_path_factory.mktemp("home")))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_job_names(defs: dg.Definitions) -> None:
    names = [job.name for job in defs.resolve_all_job_defs()]

    assert _user_jobs(names) == EXPECTED_JOBS


def test_schedule_targets_ingestion_job(defs: dg.Definitions) -> None:
    schedule = defs.resolve_schedule_def("ingestion_job_schedule")

    assert schedule.job_name == "ingestion_job"


def test_landing_sensor_targets_ingestion_job(defs: dg.Definitions) -> None:
    sensor = defs.resolve_sensor_def("ingestion_job_on_landing")

    assert sensor.job_name == "ingestion_job"
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_every_asset_is_defined(defs: dg.Definitions) -> None:
    keys = defs.resolve_asset_graph().get_all_asset_keys()

    assert {key.to_user_string() for key in keys} == EXPECTED_ASSETS


def test_every_asset_check_is_defined(defs: dg.Definitions) -> None:
    checks = defs.resolve_asset_graph().asset_check_keys

    assert {(c.asset_key.to_user_string(), c.name) for c in checks} == EXPECTED_CHECKS


def test_ingestion_job_selects_only_raw_events(defs: dg.Definitions) -> None:
    job = defs.resolve_job_def("ingestion_job")

    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {"raw_events"}
    assert job.partitions_def is not None


def test_training_job_selects_everything_but_raw_events(defs: dg.Definitions) -> None:
    job = defs.resolve_job_def("training_job")

    selected = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert selected == TRAINING_ASSETS - {"raw_events"}


def test_monitoring_job_selects_monitoring_and_reference_data(defs: dg.Definitions) -> None:
    job = defs.resolve_job_def("monitoring_job")

    selected = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert selected == MONITORING_ASSETS | {"catalog_items", "member_profiles"}


def test_drift_and_promotion_sensors_target_their_jobs(defs: dg.Definitions) -> None:
    drift = defs.resolve_sensor_def("training_job_on_drift")
    promotion = defs.resolve_sensor_def("promote_champion_job_on_approval")

    assert drift.job_name == "training_job"
    assert {j.name for j in promotion.jobs} == {"promote_champion_job", "registry_integrity_job"}
    assert defs.resolve_schedule_def("monitoring_job_schedule").job_name == "monitoring_job"


def test_local_resources_live_under_the_home(tmp_path: Path) -> None:
    home = ProjectHome(tmp_path)

    resources = build_definitions(home).resources

    assert {"object_store", "pseudonymizer", "io_manager", "mlflow", "model_registry"} <= set(
        resources
    )
    assert Path(resources["object_store"].root) == home.store
    assert Path(resources["pseudonymizer"].key_file) == home.pseudonym_key_file
    assert resources["model_registry"].tracking_uri == home.mlflow_tracking_uri
    assert resources["online_store"].kind == "sqlite"
    assert Path(resources["online_store"].path) == home.online_store


def test_production_profile_loads_without_its_environment(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # dg.EnvVar is resolved when a run starts, so loading must not need the variables.
    defs = build_definitions(ProjectHome(tmp_path), profile="production")

    assert _user_jobs([j.name for j in defs.resolve_all_job_defs()]) == EXPECTED_JOBS
    assert defs.resources["object_store"].kind == "s3"
    assert defs.resources["online_store"].kind == "redis"


def test_module_defs_load_like_dagster_dev(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("FITPULSE_HOME", str(tmp_path))

    repo = _load_like_dagster_dev()

    assert _user_jobs([j.name for j in repo.get_all_jobs()]) == EXPECTED_JOBS
    assert repo.has_schedule_def("ingestion_job_schedule")
    assert repo.has_sensor_def("ingestion_job_on_landing")


def test_module_defs_use_fitpulse_home(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fitpulse_orchestration import definitions

    clean_env.setenv("FITPULSE_HOME", str(tmp_path))

    loaded = definitions.defs()

    assert Path(loaded.resources["object_store"].root) == tmp_path.resolve() / "store"


def test_module_defs_honour_partition_start(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fitpulse_orchestration import definitions

    clean_env.setenv("FITPULSE_HOME", str(tmp_path))
    clean_env.setenv("FITPULSE_PARTITION_START", "2026-10-19")

    job = definitions.defs().resolve_job_def("ingestion_job")

    assert job.partitions_def is not None
    assert job.partitions_def.get_first_partition_key() == "2026-10-19"


def test_bogus_profile_raises_a_clear_error(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("FITPULSE_HOME", str(tmp_path))
    clean_env.setenv("FITPULSE_PROFILE", "bogus")

    with pytest.raises(ValueError, match=r"FITPULSE_PROFILE='bogus'.*'local', 'production'"):
        _load_like_dagster_dev()


def test_importing_the_package_does_not_load_the_definitions() -> None:
    code = (
        "import sys, fitpulse_orchestration; "
        f"print({DEFINITIONS_MODULE!r} in sys.modules, 'dagster' in sys.modules)"
    )

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert out.stdout.split() == ["False", "False"]


def test_experiment_analysis_job_selects_only_the_analysis(defs: dg.Definitions) -> None:
    job = defs.resolve_job_def("experiment_analysis_job")
    selected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}

    assert selected == EXPERIMENT_ASSETS


def test_push_training_job_selects_the_push_group(defs: dg.Definitions) -> None:
    job = defs.resolve_job_def("push_training_job")
    selected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}

    assert selected == PUSH_ASSETS


def test_catalog_sensor_and_nightly_rebuild_target_catalog_refresh_job(
    defs: dg.Definitions,
) -> None:
    sensor = defs.resolve_sensor_def("catalog_sensor")
    schedule = defs.resolve_schedule_def("live_index_rebuild_schedule")

    assert sensor.job_name == "catalog_refresh_job"
    assert sensor.minimum_interval_seconds == 30
    assert schedule.job_name == "catalog_refresh_job"
    job = defs.resolve_job_def("catalog_refresh_job")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "catalog_items",
        "live_item_index",
    }


def test_retention_schedule_is_on_in_production_only(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    local = build_definitions(ProjectHome(tmp_path)).resolve_schedule_def("retention_job_schedule")
    production = build_definitions(ProjectHome(tmp_path), profile="production")
    schedule = production.resolve_schedule_def("retention_job_schedule")

    assert local.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "retention_job"
    job = production.resolve_job_def("retention_job")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == PRIVACY_ASSETS


def test_erasure_sensor_runs_by_default_and_targets_erasure_job(defs: dg.Definitions) -> None:
    sensor = defs.resolve_sensor_def("erasure_job_on_request")

    assert sensor.job_name == "erasure_job"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_launch_jobs_and_the_canary_sensor(defs: dg.Definitions) -> None:
    def selected(job: str) -> set[str]:
        keys = defs.resolve_job_def(job).asset_layer.selected_asset_keys
        return {k.to_user_string() for k in keys}

    assert selected("launch_simulation_job") == {"simulated_ab"}
    assert selected("shadow_comparison_job") == {"shadow_comparison"}
    assert selected("canary_review_job") == {"canary_review"}
    sensor = defs.resolve_sensor_def("canary_rollout_sensor")
    assert sensor.job_name == "canary_review_job"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
