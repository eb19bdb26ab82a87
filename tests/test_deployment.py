"""The deployment configuration in ``deploy/`` loads and agrees with the code location.

No Kubernetes cluster runs here, so the Helm values are checked as far as this machine allows:
they parse, the run launcher's settings validate against dagster-k8s's own ``K8sRunLauncher``
schema (translated the way the chart's template does), the code location they load is the
one ``workspace.yaml`` loads, and every variable the production profile reads reaches both the
code location and each run pod. ``test_production_profile.py`` runs jobs on ``dagster.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s import K8sRunLauncher

from fitpulse_orchestration.definitions import build_definitions
from fitpulse_orchestration.settings import PRODUCTION_ENV, ProjectHome
from jobs import STAGE_TAG

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def instance_yaml() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    return loaded


def test_instance_yaml_validates_against_dagsters_schema(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())

    config, _ = dagster_instance_config(str(tmp_path))

    assert config["storage"]["postgres"]["postgres_url"] == {"env": "FITPULSE_DAGSTER_PG_URL"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_helm_code_location_is_the_workspace_module(values: dict[str, Any]) -> None:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())

    args = deployment["dagsterApiGrpcArgs"]
    module = args[args.index("--module-name") + 1]
    (location,) = workspace["load_from"]

    assert module == location["python_module"]["module_name"]
    assert {"name": "FITPULSE_PROFILE", "value": "production"} in deployment["env"]


def test_every_production_variable_reaches_code_location_and_runs(
    values: dict[str, Any],
) -> None:
    # The secret named in both places is documented to hold exactly PRODUCTION_ENV; what can be
    # checked here is that the code location and the run pods read the same secret, and that the
    # profile switch itself is not left to the secret.
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]

    assert [s["name"] for s in deployment["envSecrets"]] == [
        s["name"] for s in launcher["envSecrets"]
    ]
    assert "FITPULSE_PROFILE=production" in launcher["envVars"]
    assert "FITPULSE_PSEUDONYM_SECRET" in PRODUCTION_ENV
    documented = (DEPLOY / "production.env.example").read_text()
    names = {line.split("=", 1)[0] for line in documented.splitlines() if "=" in line}
    assert set(PRODUCTION_ENV) <= names


def test_run_launcher_values_validate_as_k8s_run_launcher_config(values: dict[str, Any]) -> None:
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    # What the chart renders into the instance's run_launcher config (plus what it fills in).
    rendered = {
        "env_secrets": [s["name"] for s in launcher["envSecrets"]],
        "env_vars": launcher["envVars"],
        "run_k8s_config": {
            "container_config": launcher["runK8sConfig"]["containerConfig"],
        },
        "instance_config_map": "fitpulse-dagster-instance",
        "service_account_name": "fitpulse-dagster",
        "dagster_home": "/opt/dagster/dagster_home",
    }

    result = validate_config(K8sRunLauncher.config_type(), rendered)

    assert result.success, result.errors
    assert values["runLauncher"]["type"] == "K8sRunLauncher"


def test_queue_limits_agree_and_name_tags_the_jobs_carry(
    values: dict[str, Any], instance_yaml: dict[str, Any], tmp_path: Path
) -> None:
    helm_queue = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    instance_queue = instance_yaml["run_coordinator"]["config"]
    defs = build_definitions(ProjectHome(tmp_path))
    job_stages = {
        job.tags.get(STAGE_TAG) for job in defs.resolve_all_job_defs() if STAGE_TAG in job.tags
    }

    assert helm_queue["maxConcurrentRuns"] == instance_queue["max_concurrent_runs"]
    assert helm_queue["tagConcurrencyLimits"] == instance_queue["tag_concurrency_limits"]
    limited = {limit["value"] for limit in instance_queue["tag_concurrency_limits"]}
    assert {limit["key"] for limit in instance_queue["tag_concurrency_limits"]} == {STAGE_TAG}
    assert limited == job_stages
