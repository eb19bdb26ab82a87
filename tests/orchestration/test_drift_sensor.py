"""The drift sensor: one training run per drift episode, with a cooldown.

Drift reports are real materializations of ``feature_drift_report`` in an ephemeral instance,
reported as runless asset events (no Evidently run needed); the sensor reads them as it does in
production.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from fitpulse_orchestration.definitions import build_definitions
from fitpulse_orchestration.monitoring.retrain import RetrainState
from fitpulse_orchestration.settings import ProjectHome
from sensors import FEATURE_DRIFT_REPORT, build_drift_sensor

# dagster-mlflow's hook on the training job is beta; the warning is noise here.
pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")

NO_COOLDOWN = 0.0
LONG_COOLDOWN = 24 * 3600.0


@pytest.fixture(scope="module")
def training_job(tmp_path_factory: pytest.TempPathFactory) -> dg.JobDefinition:
    home = ProjectHome(tmp_path_factory.mktemp("drift_sensor")).create()
    return build_definitions(home).resolve_job_def("training_job")


def _report(
    instance: dg.DagsterInstance, drift: bool, reference: str = "1", share: float = 0.7
) -> int:
    """Materialize one drift report; return its storage id."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="feature_drift_report",
            metadata={
                "dataset_drift": drift,
                "drift_share": share,
                "reference_version": reference,
            },
        )
    )
    records = instance.fetch_materializations(FEATURE_DRIFT_REPORT, limit=1).records
    return int(records[0].storage_id)


def _tick(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    cursor: str | None,
    cooldown_s: float = NO_COOLDOWN,
) -> dg.SensorExecutionData:
    sensor = build_drift_sensor(job, cooldown_s=cooldown_s)
    with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
        return sensor.evaluate_tick(context)


def _run_keys(data: dg.SensorExecutionData) -> list[str | None]:
    return [r.run_key for r in data.run_requests]


def test_no_reports_request_nothing(training_job: dg.JobDefinition) -> None:
    data = _tick(training_job, dg.DagsterInstance.ephemeral(), None)

    assert data.run_requests == []
    assert RetrainState.from_cursor(data.cursor) == RetrainState()


def test_a_report_without_drift_requests_nothing(training_job: dg.JobDefinition) -> None:
    instance = dg.DagsterInstance.ephemeral()
    report = _report(instance, drift=False)

    data = _tick(training_job, instance, None)

    assert data.run_requests == []
    assert RetrainState.from_cursor(data.cursor) == RetrainState(last_record_id=report)


def test_a_drifted_report_requests_one_training_run(training_job: dg.JobDefinition) -> None:
    instance = dg.DagsterInstance.ephemeral()
    report = _report(instance, drift=True, reference="3", share=0.7)

    data = _tick(training_job, instance, None)

    assert len(data.run_requests) == 1
    request = data.run_requests[0]
    assert request.run_key == f"drift-report-{report}"
    assert {k: v for k, v in request.tags.items() if k.startswith("fitpulse/")} == {
        "fitpulse/trigger": "feature_drift",
        "fitpulse/drift_share": "0.700",
        "fitpulse/reference_version": "3",
    }
    assert request.job_name in (None, training_job.name)


def test_the_sensor_targets_the_job_it_was_built_for(training_job: dg.JobDefinition) -> None:
    sensor = build_drift_sensor(training_job, cooldown_s=NO_COOLDOWN)

    assert sensor.name == "training_job_on_drift"
    assert sensor.job_name == "training_job"


def test_ticking_again_with_the_cursor_requests_nothing(training_job: dg.JobDefinition) -> None:
    instance = dg.DagsterInstance.ephemeral()
    _report(instance, drift=True)
    first = _tick(training_job, instance, None)

    second = _tick(training_job, instance, first.cursor)

    assert len(first.run_requests) == 1
    assert second.run_requests == []
    assert second.cursor == first.cursor


def test_more_drift_of_the_same_reference_requests_nothing(
    training_job: dg.JobDefinition,
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    _report(instance, drift=True)
    first = _tick(training_job, instance, None)
    _report(instance, drift=True, share=0.8)
    last = _report(instance, drift=True, share=0.9)

    second = _tick(training_job, instance, first.cursor)

    assert second.run_requests == []
    assert RetrainState.from_cursor(second.cursor).last_record_id == last
    assert RetrainState.from_cursor(second.cursor).episode_reference == "1"


def test_reports_drifted_from_the_start_trigger_once_per_tick(
    training_job: dg.JobDefinition,
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    first = _report(instance, drift=True, reference="1")
    _report(instance, drift=True, reference="1")
    last = _report(instance, drift=True, reference="2")

    data = _tick(training_job, instance, None)

    assert _run_keys(data) == [f"drift-report-{first}"]
    assert RetrainState.from_cursor(data.cursor).last_record_id == last


def test_drift_after_a_clean_report_is_a_new_episode(training_job: dg.JobDefinition) -> None:
    instance = dg.DagsterInstance.ephemeral()
    _report(instance, drift=True)
    first = _tick(training_job, instance, None)
    _report(instance, drift=False)
    drifted = _report(instance, drift=True)

    second = _tick(training_job, instance, first.cursor, cooldown_s=NO_COOLDOWN)

    assert _run_keys(second) == [f"drift-report-{drifted}"]
    assert _run_keys(second) != _run_keys(first)


def test_a_new_episode_inside_the_cooldown_requests_nothing(
    training_job: dg.JobDefinition,
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    _report(instance, drift=True)
    first = _tick(training_job, instance, None, cooldown_s=LONG_COOLDOWN)
    _report(instance, drift=False)
    _report(instance, drift=True)

    second = _tick(training_job, instance, first.cursor, cooldown_s=LONG_COOLDOWN)

    assert len(first.run_requests) == 1
    assert second.run_requests == []


def test_drift_held_back_by_the_cooldown_retrains_once_it_allows(
    training_job: dg.JobDefinition,
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    _report(instance, drift=True)
    first = _tick(training_job, instance, None, cooldown_s=LONG_COOLDOWN)
    _report(instance, drift=False)
    _report(instance, drift=True)
    held = _tick(training_job, instance, first.cursor, cooldown_s=LONG_COOLDOWN)
    later = _report(instance, drift=True)

    # The same cursor under a cooldown that has run out (no need to wait a day).
    data = _tick(training_job, instance, held.cursor, cooldown_s=NO_COOLDOWN)

    assert held.run_requests == []
    assert _run_keys(data) == [f"drift-report-{later}"]


def test_a_new_reference_version_starts_a_new_episode(training_job: dg.JobDefinition) -> None:
    instance = dg.DagsterInstance.ephemeral()
    _report(instance, drift=True, reference="1")
    first = _tick(training_job, instance, None)
    drifted = _report(instance, drift=True, reference="2")

    second = _tick(training_job, instance, first.cursor, cooldown_s=NO_COOLDOWN)

    assert _run_keys(second) == [f"drift-report-{drifted}"]
    assert second.run_requests[0].tags["fitpulse/reference_version"] == "2"
    assert RetrainState.from_cursor(second.cursor).episode_reference == "2"


def test_a_new_reference_version_inside_the_cooldown_requests_nothing(
    training_job: dg.JobDefinition,
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    _report(instance, drift=True, reference="1")
    first = _tick(training_job, instance, None, cooldown_s=LONG_COOLDOWN)
    _report(instance, drift=True, reference="2")

    second = _tick(training_job, instance, first.cursor, cooldown_s=LONG_COOLDOWN)

    assert second.run_requests == []


def test_the_sensor_keeps_up_past_a_page_of_reports(training_job: dg.JobDefinition) -> None:
    """The sensor reads 100 reports per tick; later ticks continue after the cursor."""
    instance = dg.DagsterInstance.ephemeral()
    for _ in range(100):
        _report(instance, drift=False)
    first = _tick(training_job, instance, None)
    drifted = _report(instance, drift=True)

    second = _tick(training_job, instance, first.cursor)

    assert first.run_requests == []
    assert _run_keys(second) == [f"drift-report-{drifted}"]


def test_the_cursor_is_json_and_survives_a_round_trip(
    training_job: dg.JobDefinition, tmp_path: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    report = _report(instance, drift=True, reference="5")
    first = _tick(training_job, instance, None)
    assert first.cursor is not None

    cursor = json.loads(first.cursor)
    saved = tmp_path / "cursor.json"
    saved.write_text(json.dumps(cursor, indent=2))
    restored = saved.read_text()
    _report(instance, drift=True, reference="5")
    second = _tick(training_job, instance, restored)

    assert cursor["last_record_id"] == report
    assert cursor["last_trigger_record"] == report
    assert cursor["episode_reference"] == "5"
    assert isinstance(cursor["last_trigger_at"], float)
    assert RetrainState.from_cursor(restored) == RetrainState.from_cursor(first.cursor)
    assert RetrainState.from_cursor(first.cursor).to_cursor() == first.cursor
    assert second.run_requests == []
