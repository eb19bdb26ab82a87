"""Run the platform's Dagster jobs in process for a home, and say what they did.

What ``fitpulse`` commands and the orchestration tests share: ingest every landed day, train
(the home feed, then the push policy when the data has push logs), monitor, analyse an
experiment. Each function returns a typed record of the run; progress lines go to ``say``
(the CLI prints them, a library caller gets them as log records). A job whose steps fail for
a reason other than a blocking check raises ``JobFailedError`` with each step's root error.

Like ``definitions.py`` this module wires the Dagster layer; the domain packages never import
it.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import execute_run
from dagster._core.execution.execute_in_process import merge_run_tags
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from fitpulse_orchestration import layout
from fitpulse_orchestration.definitions import build_definitions, partition_start
from fitpulse_orchestration.events.landing_watch import landing_fingerprints
from fitpulse_orchestration.events.manifest import (
    ManifestWindow,
    ingestion_context,
    read_manifest,
    read_manifests,
)
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.privacy.suppression import erased_pseudonyms
from fitpulse_orchestration.settings import DEFINITIONS_MODULE, ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore, ObjectStore
from fitpulse_orchestration.storage.asset_values import load_asset_value
from fitpulse_orchestration.storage.keys import load_or_create_key
from model_registry.gate import GateDecision

Say = Callable[[str], None]

_log = logging.getLogger(__name__)

INGEST_COUNTS = ("read", "accepted", "quarantined", "duplicates")
"""The record totals of an ingestion run (each day's ``events_clean`` metadata)."""


class NoLandedEventsError(ValueError):
    """The home's landing zone holds no event day (up to the asked date)."""


class JobFailedError(RuntimeError):
    """A job's steps failed for a reason other than a blocking asset check.

    Attributes:
        job: the job's name.
        run_id: the Dagster run (its logs are in the home's instance).
        failures: ``step key: root error`` per failed step.
    """

    def __init__(self, job: str, run_id: str, failures: list[str]) -> None:
        super().__init__(f"{job} run {run_id} failed: " + "; ".join(failures))
        self.job = job
        self.run_id = run_id
        self.failures = failures


@dataclass(frozen=True)
class IngestRun:
    """The definitions and instance the days were ingested with, the days and the totals."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    days: list[dt.date]
    totals: dict[str, int]
    unchanged: int = 0
    """Days not ingested again: their inputs hash to their manifest's fingerprint."""


@dataclass(frozen=True)
class PushRun:
    """The push policy version ``push_training_job`` registered and its gate's verdict."""

    version: str
    gate_passed: bool


@dataclass(frozen=True)
class TrainingRun:
    """What ``training_job`` did.

    ``failed_checks``: blocking asset checks that failed (the run then stopped before
    registration: ``gate`` and ``version`` are None). ``stages``: seconds per step. ``push``:
    the push run, None when the data holds no push logs or training stopped.
    """

    days: list[dt.date]
    totals: dict[str, int]
    stages: dict[str, float]
    run_id: str
    failed_checks: list[str]
    gate: GateDecision | None = None
    version: str | None = None
    push: PushRun | None = None

    @property
    def gate_passed(self) -> bool:
        """The version reached the gate and passed it."""
        return self.gate is not None and self.gate.passed


@dataclass(frozen=True)
class DriftSummary:
    """One drift report's verdict and where its HTML lies."""

    dataset_drift: bool
    drift_share: float
    reference_version: str
    html_report: str


@dataclass(frozen=True)
class MonitoringRun:
    """What ``monitoring_job`` did: reports, skew, checks (name: passed) and step failures."""

    run_id: str
    success: bool
    reports: dict[str, DriftSummary] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    served_log_source: str | None = None
    worst_skew: float | None = None
    failures: list[str] = field(default_factory=list)


def object_store(home: ProjectHome) -> ObjectStore:
    """The home's local object store."""
    return LocalObjectStore(home.store)


def quiet_run_config() -> dict[str, Any]:
    """Run config that keeps Dagster's console logger at warnings."""
    return {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def dagster_instance(home: ProjectHome) -> dg.DagsterInstance:
    """The home's persistent Dagster instance (what ``dagster dev`` shows)."""
    return dg.DagsterInstance.from_config(str(home.dagster))


REPOSITORY_NAME = "__repository__"
"""The repository name Dagster gives a module's ``Definitions``."""


def code_location_origin(job_name: str) -> RemoteJobOrigin:
    """The origin the console's code location (``DEFINITIONS_MODULE``) gives ``job_name``."""
    target = LoadableTargetOrigin(executable_path=sys.executable, module_name=DEFINITIONS_MODULE)
    location = ManagedGrpcPythonEnvCodeLocationOrigin(target, DEFINITIONS_MODULE)
    return RemoteRepositoryOrigin(location, REPOSITORY_NAME).get_job_origin(job_name)


def launch(
    defs: dg.Definitions,
    job_name: str,
    instance: dg.DagsterInstance,
    run_config: dict[str, Any],
    partition_key: str | None = None,
) -> JobExecutionResult:
    """Run a job in this process as a run of the console's code location.

    ``execute_in_process`` records a run with no origin and an ephemeral copy of the job: the
    Dagster UI then lists it under no job and warns on re-execute. This run carries the code
    location's origin and the job's own snapshot (the console builds the same definitions for
    the same home), so the job's page lists it and re-executes it from the workspace. The
    jobs run on the in-process executor, so one process runs every step, as in the console.
    Dagster has no public call for this (its own launchers use the same internals), so it
    rests on the pinned dagster 1.13.27; ``tests/orchestration/test_run_origin.py`` and the
    console's browser test check it.
    """
    job = defs.resolve_job_def(job_name)
    tags = merge_run_tags(job, partition_key, None, None, instance, run_config)
    run = instance.create_run_for_job(
        job_def=job,
        run_config=run_config,
        tags=tags,
        remote_job_origin=code_location_origin(job_name),
    )
    return execute_run(InMemoryJob(job), run, instance)


def root_error(event: dg.DagsterEvent) -> str:
    """The innermost error message of a step-failure event (the user's, not Dagster's)."""
    error = event.step_failure_data.error
    while error is not None and error.cause is not None:
        error = error.cause
    return str(error.message.strip()) if error is not None else "unknown error"


def _step_failures(events: Iterable[dg.DagsterEvent], skip: set[str] | None = None) -> list[str]:
    return [
        f"{e.step_key}: {root_error(e)}"
        for e in events
        if e.is_step_failure and e.step_key not in (skip or set())
    ]


def stage_durations(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Seconds from each step's start to its success or failure."""
    starts: dict[str, float] = {}
    out: dict[str, float] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = record.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            out[event.step_key] = record.timestamp - starts.get(event.step_key, record.timestamp)
    return out


def ingest_landed(
    home: ProjectHome, until: dt.date | None = None, say: Say = _log.info
) -> IngestRun:
    """Ingest every landed day (up to ``until``) in date order, unless its inputs are unchanged.

    A day whose inputs (its batches, the days its de-duplication reads, the erasure list, the
    key and the rules: ``events.manifest``) hash to the fingerprint its last ingestion recorded,
    and whose clean partition is still there, is not ingested again; its counts come from the
    manifest. A run is ~0.5 s of Dagster bookkeeping per day whatever the day holds, so a log of
    3,840 days (ml-latest-small) spent half an hour re-ingesting on every ``train``.

    Raises:
        NoLandedEventsError: when no day is landed.
    """
    home.create()
    store = object_store(home)
    versions = store.list_versions(f"{layout.LANDING_EVENTS}/")
    days = layout.landed_dates(versions)
    stray = layout.undated_keys(versions)
    if stray:
        say(
            f"skipping {len(stray)} landing key(s) without a valid date=YYYY-MM-DD "
            f"(first: {stray[0]}): no day's ingestion reads them"
        )
    if until is not None:
        days = [d for d in days if d <= until]
    if not days:
        raise NoLandedEventsError(
            f"no landed events under {store.uri(layout.LANDING_EVENTS)}: run `fitpulse demo` "
            "or `fitpulse import-interactions` first"
        )
    defs = build_definitions(home, "local", partition_start(home))
    instance = dagster_instance(home)
    landing = landing_fingerprints(versions)
    pseudonymizer = Pseudonymizer.from_secret(load_or_create_key(home.pseudonym_key_file))
    window = ManifestWindow(
        read_manifests(store), ingestion_context(pseudonymizer, erased_pseudonyms(store))
    )
    clean = set(layout.landed_dates(store.list_keys(f"{layout.WAREHOUSE_EVENTS}/")))
    totals = dict.fromkeys(INGEST_COUNTS, 0)
    unchanged = 0
    say(f"ingesting {len(days)} landed days ({days[0]} .. {days[-1]})")
    for day in days:
        manifest = window.manifests.get(day)
        expected = window.fingerprint_of(day, landing[day.isoformat()])
        if manifest is not None and manifest.fingerprint == expected and day in clean:
            counts = {k: manifest.counts[k] for k in totals}
            unchanged += 1
        else:
            result = launch(defs, "ingestion_job", instance, quiet_run_config(), day.isoformat())
            meta = result.get_asset_materialization_events()[0].materialization.metadata
            counts = {k: int(meta[k].value) for k in totals}  # type: ignore[arg-type]
            recorded = read_manifest(store, day)
            if recorded is None:
                window.forget(day)
            else:
                window.record(recorded)
            say(
                f"  {day}: read {counts['read']:>7,}  accepted {counts['accepted']:>7,}  "
                f"quarantined {counts['quarantined']:>5,}  duplicates {counts['duplicates']:>5,}"
            )
        for key, value in counts.items():
            totals[key] += value
    if unchanged:
        say(
            f"{unchanged} of {len(days)} days unchanged since their last ingestion (same batches, "
            "erasure list and rules): not ingested again"
        )
    return IngestRun(defs, instance, days, totals, unchanged)


def run_training(
    home: ProjectHome,
    eval_days: int | None = None,
    ranker_days: int | None = None,
    until: dt.date | None = None,
    gate: dict[str, float] | None = None,
    holdout: str = "time",
    trials: int | None = None,
    say: Say = _log.info,
) -> TrainingRun:
    """Ingest landed days (up to ``until``) in date order, then train.

    ``holdout`` is the evaluation protocol (``SplitParams``); ``eval_days``/``ranker_days``
    fix the ``time`` protocol's windows (None: sized by events); ``trials`` is the
    hyper-parameter search's budget per retriever (None: the default). A blocking check that
    fails stops the run before registration and is reported in ``failed_checks``.

    Raises:
        NoLandedEventsError: when no day is landed.
        JobFailedError: when a step fails for another reason (training or push training).
    """
    ingested = ingest_landed(home, until, say)
    store = object_store(home)
    say(
        "training: snapshot -> tuning -> ALS + EASE + two-tower + FAISS + popularity -> ranker "
        "-> scorer choice -> evaluation -> refit -> registry -> promotion gate"
    )
    started = time.perf_counter()
    run_config = quiet_run_config()
    split = {"holdout": holdout, "eval_days": eval_days, "ranker_days": ranker_days}
    run_config["ops"] = {
        "training_snapshot": {"config": split},
        "promotion_gate": {"config": gate or {}},
    }
    if trials is not None:
        run_config["ops"]["retrieval_tuning"] = {"config": {"n_trials": trials}}
    result = launch(ingested.defs, "training_job", ingested.instance, run_config)
    stages = stage_durations(ingested.instance, result.run_id)
    for name, seconds in stages.items():
        say(f"  {name:<24} {seconds:6.1f} s")
    # A failed promotion gate keeps a version from review; it is not a training failure.
    failed_check_events = [
        e
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and not e.asset_check_evaluation_data.passed
        and e.asset_check_evaluation_data.asset_key.path[-1] != "promotion_gate"
    ]
    failed_checks = [e.asset_check_evaluation_data.check_name for e in failed_check_events]
    # A blocking check that fails also fails its own step; only other failures are errors.
    failures = _step_failures(result.all_events, {str(e.step_key) for e in failed_check_events})
    if not result.success and failures:
        raise JobFailedError("training_job", result.run_id, failures)
    outcome = "finished" if result.success else "stopped by failed blocking checks"
    say(f"training {outcome} in {time.perf_counter() - started:.1f} s (run {result.run_id})")
    run = TrainingRun(ingested.days, ingested.totals, stages, result.run_id, failed_checks)
    if not result.success:
        return run
    from fitpulse_orchestration.push.examples import has_push_logs

    snapshot = load_asset_value(store, "training_snapshot")
    push = None
    if has_push_logs(snapshot.inputs.events):
        push = run_push_training(ingested.defs, ingested.instance, store, say)
    else:
        say(
            "push: skipped, the data holds no push_decision or push_sent events (an "
            "imported log carries no push system logs to learn from)"
        )
    return replace(
        run,
        gate=load_asset_value(store, "promotion_gate"),
        version=load_asset_value(store, "registered_home_ranker").version,
        push=push,
    )


def run_push_training(
    defs: dg.Definitions, instance: dg.DagsterInstance, store: ObjectStore, say: Say = _log.info
) -> PushRun:
    """Train, evaluate and register the push policy from the snapshot just trained on.

    Raises:
        JobFailedError: when a step fails.
    """
    say("push: examples -> open + fatigue models -> off-policy evaluation -> registry")
    started = time.perf_counter()
    result = launch(defs, "push_training_job", instance, quiet_run_config())
    failures = _step_failures(result.all_events)
    if failures:
        raise JobFailedError("push_training_job", result.run_id, failures)
    evaluation = load_asset_value(store, "push_policy_evaluation")
    version = load_asset_value(store, "registered_push_policy").version
    say(f"push finished in {time.perf_counter() - started:.1f} s: version {version}")
    for line in evaluation.readable().splitlines():
        say(f"  {line}")
    return PushRun(version=str(version), gate_passed=bool(evaluation.gate_passed))


def run_monitoring(home: ProjectHome, say: Say = _log.info) -> MonitoringRun:
    """Run the monitoring job on the local profile; its failed steps are in ``failures``."""
    defs = build_definitions(home, "local", partition_start(home))
    say("monitoring: drift of features and predictions, skew and UX monitors")
    result = launch(defs, "monitoring_job", dagster_instance(home), quiet_run_config())
    reports: dict[str, DriftSummary] = {}
    served_log_source = worst_skew = None
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        name = mat.asset_key.path[-1]
        if name == "served_feed_log":
            served_log_source = str(mat.metadata["source"].value)
        if name == "training_serving_skew":
            worst_skew = float(mat.metadata["worst_mismatch_rate"].value)  # type: ignore[arg-type]
        if name in ("feature_drift_report", "prediction_drift_report"):
            reports[name] = DriftSummary(
                dataset_drift=bool(mat.metadata["dataset_drift"].value),
                drift_share=float(mat.metadata["drift_share"].value),  # type: ignore[arg-type]
                reference_version=str(mat.metadata["reference_version"].value),
                html_report=str(mat.metadata["html_report"].value),
            )
    run = MonitoringRun(
        run_id=result.run_id,
        success=result.success,
        reports=reports,
        checks={
            e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        },
        served_log_source=served_log_source,
        worst_skew=worst_skew,
        failures=_step_failures(result.all_events),
    )
    for name, report in reports.items():
        verdict = "DRIFT" if report.dataset_drift else "no drift"
        say(
            f"  {name}: {verdict} (share of drifted columns {report.drift_share:.2f}, "
            f"reference version {report.reference_version}) -> {report.html_report}"
        )
    failed = sorted(k for k, ok in run.checks.items() if not ok)
    say(f"  monitoring checks: {'FAILED: ' + ', '.join(failed) if failed else 'all passed'}")
    return run


def run_experiment_analysis(
    home: ProjectHome, experiment: str, control: str, say: Say = _log.info
) -> dict[str, Any]:
    """Ingest landed events, then materialize ``experiment_analysis``; return its metadata.

    Raises:
        NoLandedEventsError: when no day is landed.
        JobFailedError: when the analysis fails.
    """
    ingested = ingest_landed(home, say=say)
    run_config = quiet_run_config()
    run_config["ops"] = {
        "experiment_analysis": {"config": {"experiment": experiment, "control": control}}
    }
    result = launch(ingested.defs, "experiment_analysis_job", ingested.instance, run_config)
    if not result.success:
        raise JobFailedError(
            "experiment_analysis_job", result.run_id, _step_failures(result.all_events)
        )
    (materialization,) = result.asset_materializations_for_node("experiment_analysis")
    return {key: value.value for key, value in materialization.metadata.items()}
