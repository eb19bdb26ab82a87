"""The promotion sensor: one promotion run per approved, gate-passed challenger.

One project home (one SQLite MLflow registry) serves the module; each test registers its own
model and builds the sensor for it. Gate verdicts and reviews go through the real workflow.
"""

from __future__ import annotations

import dagster as dg
import pytest
from gate_samples import FAILED, PASSED
from registry_setup import RegistryHome

from fitpulse_orchestration.settings import ProjectHome
from jobs import registry_integrity_job
from jobs.registry import promote_champion_job
from model_registry.promotion import (
    CHALLENGER,
    CHAMPION,
    GATE_STATUS,
    PROMOTION_PREVIOUS,
    REVIEW_REVIEWER,
    REVIEW_STATUS,
)
from sensors import build_promotion_sensor


class Registry(RegistryHome):
    """The module's registry: versions are registered without training."""

    def approved_version(self, model: str) -> str:
        version = self.add_version(model, PASSED)
        assert self.promotion.approve(model, version, "ana", "looked at the gate")
        return version


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """One home per module: creating the SQLite registry runs every MLflow migration."""
    return Registry(
        ProjectHome(tmp_path_factory.mktemp("promotion_sensor")).create(), "sensor-model"
    )


def _tick(registry: Registry, model: str, cursor: str | None) -> dg.SensorExecutionData:
    sensor = build_promotion_sensor(promote_champion_job, registry_integrity_job, model=model)
    with dg.build_sensor_context(
        resources={"model_registry": registry.resource}, cursor=cursor
    ) as context:
        return sensor.evaluate_tick(context)


def _promote(registry: Registry, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    return promote_champion_job.execute_in_process(
        run_config=request.run_config,
        resources={"model_registry": registry.resource},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_nothing_registered_skips(registry: Registry) -> None:
    model = registry.new_model()

    data = _tick(registry, model, None)

    assert data.run_requests == []
    assert data.skip_message == f"{model}: no approved challenger waiting"


def test_the_default_model_is_the_home_ranker(registry: Registry) -> None:
    sensor = build_promotion_sensor(promote_champion_job, registry_integrity_job)
    with dg.build_sensor_context(resources={"model_registry": registry.resource}) as context:
        data = sensor.evaluate_tick(context)

    assert sensor.name == "promote_champion_job_on_approval"
    assert {j.name for j in sensor.jobs} == {"promote_champion_job", "registry_integrity_job"}
    assert data.run_requests == []
    assert data.skip_message == "fitpulse-home-ranker: no approved challenger waiting"


def test_a_challenger_waiting_for_review_skips(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.add_version(model, PASSED)
    assert registry.promotion.client.alias_version(model, CHALLENGER) == version

    data = _tick(registry, model, None)

    assert data.run_requests == []
    assert "no approved challenger waiting" in (data.skip_message or "")


def test_a_rejected_challenger_skips(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.add_version(model, PASSED)
    assert registry.promotion.reject(model, version, "ana", "no")

    data = _tick(registry, model, None)

    assert data.run_requests == []


def test_an_approved_challenger_requests_one_promotion(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.approved_version(model)

    data = _tick(registry, model, None)

    assert len(data.run_requests) == 1
    request = data.run_requests[0]
    assert request.run_key == f"promote:{model}:{version}"
    assert request.run_config == {
        "ops": {"promote_champion": {"config": {"version": int(version), "model": model}}}
    }
    assert request.tags["fitpulse/model"] == model
    assert request.tags["fitpulse/version"] == version
    assert data.cursor == version


def test_a_second_tick_with_the_cursor_skips(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.approved_version(model)
    first = _tick(registry, model, None)

    second = _tick(registry, model, first.cursor)

    assert len(first.run_requests) == 1
    assert second.run_requests == []
    assert second.skip_message == f"{model} version {version}: promotion already requested"


def test_the_requested_run_makes_the_version_champion(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.approved_version(model)
    request = _tick(registry, model, None).run_requests[0]

    result = _promote(registry, request)

    assert result.success
    client = registry.promotion.client
    assert client.alias_version(model, CHAMPION) == version
    assert client.alias_version(model, CHALLENGER) is None
    promoted = registry.promotion.audit.entries(model)[-1]
    assert (promoted.action, promoted.version, promoted.actor) == (
        "promoted",
        version,
        "promote_champion_job",
    )
    # Even a sensor that lost its cursor does not promote the champion again.
    after = _tick(registry, model, None)
    assert after.run_requests == []
    assert "no approved challenger waiting" in (after.skip_message or "")


def test_a_newer_approved_challenger_is_requested_despite_the_cursor(
    registry: Registry,
) -> None:
    model = registry.new_model()
    first = registry.approved_version(model)
    first_tick = _tick(registry, model, None)
    assert _promote(registry, first_tick.run_requests[0]).success
    second = registry.approved_version(model)

    data = _tick(registry, model, first_tick.cursor)

    assert [r.run_key for r in data.run_requests] == [f"promote:{model}:{second}"]
    assert data.cursor == second
    assert _promote(registry, data.run_requests[0]).success
    assert registry.promotion.client.alias_version(model, CHAMPION) == second
    tags = registry.promotion.client.version(model, second).tags
    assert tags[PROMOTION_PREVIOUS] == first


def test_a_gate_failed_version_never_produces_a_request(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.add_version(model, FAILED)
    # Someone edits the tags by hand: approved, but the gate's verdict stays "failed".
    registry.mlflow.set_model_version_tag(model, version, REVIEW_STATUS, "approved")
    registry.mlflow.set_model_version_tag(model, version, REVIEW_REVIEWER, "mallory")
    tagged_only = _tick(registry, model, None)
    # ... and even points the challenger alias at it.
    registry.mlflow.set_registered_model_alias(model, CHALLENGER, version)
    tags = registry.promotion.client.version(model, version).tags
    assert (tags[GATE_STATUS], tags[REVIEW_STATUS]) == ("failed", "approved")

    aliased = _tick(registry, model, None)

    assert tagged_only.run_requests == []
    # The moved alias is put back (removed: the audit log has no challenger) and checked.
    assert [r.job_name for r in aliased.run_requests] == ["registry_integrity_job"]
    assert registry.promotion.client.alias_version(model, CHALLENGER) is None
    assert registry.promotion.audit.entries(model)[-1].action == "alias_restored"
    assert registry.promotion.pending_promotion(model) is None


def test_the_promotion_job_refuses_a_gate_failed_version(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.add_version(model, FAILED)
    registry.mlflow.set_model_version_tag(model, version, REVIEW_STATUS, "approved")
    request = dg.RunRequest(
        run_key=f"promote:{model}:{version}",
        run_config={
            "ops": {"promote_champion": {"config": {"version": int(version), "model": model}}}
        },
    )

    result = _promote(registry, request)

    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None
    assert failure.cause is not None
    assert "tag review.status='approved' but the audit log says" in failure.cause.message
    assert registry.promotion.client.alias_version(model, CHAMPION) is None


def test_a_moved_champion_is_restored_and_alerts_through_the_integrity_check(
    registry: Registry,
) -> None:
    model = registry.new_model()
    first = registry.approved_version(model)
    assert _promote(registry, _tick(registry, model, None).run_requests[0]).success
    failed = registry.add_version(model, FAILED)
    registry.mlflow.set_registered_model_alias(model, CHAMPION, failed)

    data = _tick(registry, model, first)

    assert registry.promotion.client.alias_version(model, CHAMPION) == first
    (request,) = data.run_requests
    assert request.job_name == "registry_integrity_job"
    findings = registry.promotion.integrity_findings(model)
    assert len(findings) == 1
    assert "alias_restored" in findings[0]
    assert f"pointed at version {failed}" in findings[0]
