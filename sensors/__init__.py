"""Sensors: landing days, drift retrains, promotions and the live index's catalog updates.

Each decision is a domain function; these wrappers only read Dagster's state and cursors.
Every tick logs one line saying what the sensor saw and what it decided (``log_decision``):
the UI shows a skip reason only as a tooltip, the tick's log in full.
"""

import datetime as dt
import hashlib
import json
from typing import Any, TypeVar

import dagster as dg

from assets.resources import ModelRegistryResource, ObjectStoreResource
from fitpulse_orchestration import layout
from fitpulse_orchestration.events.landing_watch import changed_days, landing_fingerprints
from fitpulse_orchestration.monitoring.retrain import (
    DriftObservation,
    RetrainState,
    decide_retrain,
)
from fitpulse_orchestration.privacy.erasure import pending_requests
from fitpulse_orchestration.retrieval.catalog_watch import CatalogCursor, new_catalog_files
from fitpulse_orchestration.serving.rollout import RolloutController
from jobs.tags import MODEL_TAG, VERSION_TAG
from model_registry.client import HOME_RANKER_MODEL
from model_registry.promotion import PromotionError

FEATURE_DRIFT_REPORT = dg.AssetKey("feature_drift_report")
DEFAULT_DRIFT_COOLDOWN_S = 6 * 3600.0
LISTED_REQUESTS = 5
"""A decision line names at most this many run requests (a first landing tick has dozens)."""

_Outcome = TypeVar("_Outcome", dg.SensorResult, dg.SkipReason)


def _describe_request(request: dg.RunRequest, job_name: str) -> str:
    where = f" partition {request.partition_key}" if request.partition_key else ""
    return f"{request.job_name or job_name}{where} (run key {request.run_key})"


def describe_decision(saw: str, outcome: dg.SensorResult | dg.SkipReason, job_name: str) -> str:
    """One line for a tick's log: what the sensor ``saw`` and what it decided.

    ``job_name`` names the run requests that name no job (those of a single-job sensor).
    """
    requests = [] if isinstance(outcome, dg.SkipReason) else list(outcome.run_requests or [])
    if not requests:
        reason = outcome if isinstance(outcome, dg.SkipReason) else outcome.skip_reason
        why = reason.skip_message if reason is not None and reason.skip_message else "no reason"
        return f"saw {saw}; skipped because {why}"
    listed = [_describe_request(r, job_name) for r in requests[:LISTED_REQUESTS]]
    more = len(requests) - len(listed)
    suffix = f" and {more} more" if more else ""
    plural = "s" if len(requests) > 1 else ""
    return f"saw {saw}; run{plural} requested for " + "; ".join(listed) + suffix


def log_decision(
    context: dg.SensorEvaluationContext, saw: str, outcome: _Outcome, job_name: str
) -> _Outcome:
    """Log ``describe_decision`` on the tick's log and return ``outcome`` unchanged."""
    context.log.info(describe_decision(saw, outcome, job_name))
    return outcome


def build_landing_sensor(
    job: dg.JobDefinition | Any, partitions: dg.DailyPartitionsDefinition
) -> dg.SensorDefinition:
    """``ingestion_job_on_landing``: one ingestion run per new or changed landing day."""

    @dg.sensor(
        name="ingestion_job_on_landing",
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="One ingestion_job run per landing day whose event batches are new or changed "
        "(added, removed or rewritten) since the last tick (days before the partitions' start "
        "are only reported).",
    )
    def ingestion_job_on_landing(
        context: dg.SensorEvaluationContext, object_store: ObjectStoreResource
    ) -> dg.SensorResult:
        """Request ingestion of each landing day whose batches were added, removed or rewritten."""
        store = object_store.get_store()
        previous = json.loads(context.cursor) if context.cursor else {}
        versions = store.list_versions(f"{layout.LANDING_EVENTS}/")
        current = landing_fingerprints(versions)
        stray = layout.undated_keys(list(versions))
        if stray:
            context.log.warning(
                f"{len(stray)} landing key(s) without a valid date=YYYY-MM-DD are not ingested "
                f"(first: {stray[0]}); move them under landing/events/date=YYYY-MM-DD/"
            )
        first = partitions.start.date().isoformat()
        changed = changed_days(current, previous)
        requests = [
            dg.RunRequest(run_key=f"{day}:{fp}", partition_key=day)
            for day, fp in changed
            if day >= first
        ]
        skipped = sorted(d for d in current if d < first)
        if skipped:
            context.log.warning(
                f"{len(skipped)} landing days precede the partitions' start {first} "
                f"(first: {skipped[0]}); reload the code location (a local home starts at its "
                "first landed day) or set FITPULSE_PARTITION_START to ingest them"
            )
        cursor = json.dumps(current, sort_keys=True)
        saw = f"{len(current)} landing days, {len(changed)} of them new or changed"
        if requests:
            result = dg.SensorResult(run_requests=requests, cursor=cursor)
        else:
            why = (
                "no landing day is new or changed"
                if not changed
                else f"every changed landing day precedes the partitions' start {first}"
            )
            result = dg.SensorResult(skip_reason=why, cursor=cursor)
        return log_decision(context, saw, result, job.name)

    return ingestion_job_on_landing


def _observation(record: Any) -> DriftObservation:
    meta = record.asset_materialization.metadata
    return DriftObservation(
        record_id=int(record.storage_id),
        dataset_drift=bool(meta["dataset_drift"].value),
        drift_share=float(meta["drift_share"].value),
        reference_version=str(meta["reference_version"].value),
        at=float(record.timestamp),
    )


def build_drift_sensor(
    job: dg.JobDefinition | Any, cooldown_s: float = DEFAULT_DRIFT_COOLDOWN_S
) -> dg.SensorDefinition:
    """``training_job_on_drift``: one training run per drift episode, with a cooldown."""

    @dg.sensor(
        name="training_job_on_drift",
        job=job,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Retrain when feature_drift_report shows dataset drift (one run per "
        f"episode, at most one per {cooldown_s / 3600:.0f} h).",
    )
    def training_job_on_drift(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        """Read new drift reports and request a retrain when a new drift episode starts."""
        state = RetrainState.from_cursor(context.cursor)
        result = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=FEATURE_DRIFT_REPORT, after_storage_id=state.last_record_id or None
            ),
            limit=100,
            ascending=True,
        )
        decision = decide_retrain([_observation(r) for r in result.records], state, cooldown_s)
        for line in decision.log:
            context.log.info(line)
        saw = f"{len(result.records)} new {FEATURE_DRIFT_REPORT.to_user_string()} reports"
        cursor = decision.state.to_cursor()
        if decision.trigger is None:
            why = (
                f"no new drift episode ({decision.log[-1]})"
                if decision.log
                else "no new drift report"
            )
            return log_decision(
                context, saw, dg.SensorResult(skip_reason=why, cursor=cursor), job.name
            )
        trigger = decision.trigger
        request = dg.RunRequest(
            run_key=f"drift-report-{trigger.record_id}",
            tags={
                "fitpulse/trigger": "feature_drift",
                "fitpulse/drift_share": f"{trigger.drift_share:.3f}",
                "fitpulse/reference_version": trigger.reference_version,
            },
        )
        return log_decision(
            context, saw, dg.SensorResult(run_requests=[request], cursor=cursor), job.name
        )

    return training_job_on_drift


def build_promotion_sensor(
    job: dg.JobDefinition | Any,
    integrity_job: dg.JobDefinition | Any,
    model: str = HOME_RANKER_MODEL,
) -> dg.SensorDefinition:
    """``promote_champion_job_on_approval``: guard the aliases, promote an approved challenger.

    Every tick first puts ``champion`` and ``challenger`` back where the verified audit log says
    they belong (an alias moved from MLflow's UI or a script is restored, never served), logs
    each restore as an error and launches ``integrity_job``, whose failing asset check is the
    alert. A broken audit chain stops promotions and launches the same check.
    """

    @dg.sensor(
        name="promote_champion_job_on_approval",
        jobs=[job, integrity_job],
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Restore aliases moved outside the platform (and alert), then make an "
        "approved, gate-passed challenger the champion.",
    )
    def promote_champion_job_on_approval(
        context: dg.SensorEvaluationContext, model_registry: ModelRegistryResource
    ) -> dg.SensorResult | dg.SkipReason:
        """Request one promotion run per approved challenger version."""
        promotion = model_registry.get_promotion()
        hour = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H")
        alert = dg.RunRequest(job_name=integrity_job.name, run_key=f"integrity:{model}:{hour}")
        try:
            restored = promotion.check_aliases(model, "promote_champion_job_on_approval")
            version = promotion.pending_promotion(model)
        except PromotionError as exc:
            context.log.error(str(exc))
            return log_decision(
                context,
                f"{model}: the registry's audit check failed, promotions stop ({exc})",
                dg.SensorResult(run_requests=[alert], cursor=context.cursor),
                job.name,
            )
        for line in restored:
            context.log.error(line)
        requests = [alert] if restored else []
        aliases = f"{len(restored)} aliases restored" if restored else "aliases as audited"
        saw = (
            f"{model}: {aliases}, approved challenger {version or 'none'}, "
            f"last requested promotion {context.cursor or 'none'}"
        )
        if version is None or context.cursor == version:
            why = (
                f"{model}: no approved challenger waiting"
                if version is None
                else f"{model} version {version}: promotion already requested"
            )
            if not requests:
                return log_decision(context, saw, dg.SkipReason(why), job.name)
            return log_decision(
                context,
                saw,
                dg.SensorResult(run_requests=requests, cursor=context.cursor),
                job.name,
            )
        # PromoteConfig's version is a positive int; MLflow's version strings are digits.
        config = {"version": int(version), "model": model}
        requests.append(
            dg.RunRequest(
                job_name=job.name,
                # The run key makes the request idempotent across restarts and replays.
                run_key=f"promote:{model}:{version}",
                run_config={"ops": {"promote_champion": {"config": config}}},
                tags={MODEL_TAG: model, VERSION_TAG: version},
            )
        )
        return log_decision(
            context, saw, dg.SensorResult(run_requests=requests, cursor=version), job.name
        )

    return promote_champion_job_on_approval


def build_catalog_sensor(job: dg.JobDefinition | Any) -> dg.SensorDefinition:
    """``catalog_sensor``: apply newly landed catalog files to the live two-tower index."""

    @dg.sensor(
        name="catalog_sensor",
        job=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="New or changed catalog files -> live_item_index (incremental add of new "
        "items, removal of unpublished and flagged ones).",
    )
    def catalog_sensor(
        context: dg.SensorEvaluationContext,
        object_store: ObjectStoreResource,
        model_registry: ModelRegistryResource,
    ) -> dg.SensorResult | dg.SkipReason:
        """Request one run per batch of new catalog files (a full build the first time)."""
        store = object_store.get_store()
        cursor = CatalogCursor.parse(context.cursor)
        batch = new_catalog_files(store.iter_keys(f"{layout.LANDING_CATALOG}/"), cursor)
        saw = f"{len(batch.files)} new catalog files under {layout.LANDING_CATALOG}/"
        if not batch.files:
            return log_decision(context, saw, dg.SkipReason("no new catalog files"), job.name)
        client = model_registry.get_client()
        if client.latest(HOME_RANKER_MODEL) is None:
            # The cursor stays put: these files are applied once a model exists.
            why = f"{len(batch.files)} new catalog files wait: no feed model is registered yet"
            return log_decision(context, saw, dg.SkipReason(why), job.name)
        config = {"files": [] if batch.initial else batch.files, "full_rebuild": batch.initial}
        result = dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=batch.run_key,
                    run_config={"ops": {"live_item_index": {"config": config}}},
                    tags={"fitpulse/trigger": "catalog", "fitpulse/files": str(len(batch.files))},
                )
            ],
            cursor=batch.cursor.dump(),
        )
        mode = "a full rebuild" if batch.initial else "an incremental update"
        return log_decision(context, f"{saw} ({mode})", result, job.name)

    return catalog_sensor


def build_erasure_sensor(job: dg.JobDefinition | Any) -> dg.SensorDefinition:
    """``erasure_job_on_request``: a run as soon as erasure requests are pending (on by default).

    The run key is the set of pending request keys (no raw id) and the UTC hour: a tick that
    sees the same requests while a run is processing them requests nothing new, and requests
    a run left pending by a failure (an unreachable online store) are retried the next hour.
    """

    @dg.sensor(
        name="erasure_job_on_request",
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One erasure_job run as soon as erasure requests are pending (`fitpulse "
        "privacy request-erasure`); retried hourly while they stay pending.",
    )
    def erasure_job_on_request(
        context: dg.SensorEvaluationContext, object_store: ObjectStoreResource
    ) -> dg.SensorResult | dg.SkipReason:
        """Request one erasure run for the pending requests."""
        pending = pending_requests(object_store.get_store())
        # The count only: request keys stay out of the log like the raw ids they stand for.
        saw = f"{len(pending)} pending erasure requests"
        if not pending:
            return log_decision(
                context, saw, dg.SkipReason("no pending erasure requests"), job.name
            )
        digest = hashlib.sha256("\n".join(pending).encode()).hexdigest()[:16]
        hour = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H")
        result = dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"erasure:{digest}:{hour}")])
        return log_decision(context, saw, result, job.name)

    return erasure_job_on_request


def build_canary_sensor(job: dg.JobDefinition | Any) -> dg.SensorDefinition:
    """``canary_rollout_sensor``: reviews every running canary rollout hourly (on by default).

    It does nothing while no rollout runs. Run keys name the rollout, its step and the UTC
    hour, so each step is reviewed once an hour until it advances, completes or rolls back.
    """

    @dg.sensor(
        name="canary_rollout_sensor",
        job=job,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One canary_review_job run per running canary rollout, step and hour "
        "(advance, hold, complete or roll back); nothing while no rollout runs.",
    )
    def canary_rollout_sensor(
        context: dg.SensorEvaluationContext,
        object_store: ObjectStoreResource,
        model_registry: ModelRegistryResource,
    ) -> dg.SensorResult | dg.SkipReason:
        """One review run per running rollout and hour."""
        controller = RolloutController(object_store.get_store(), model_registry.get_audit_key())
        running = controller.running()
        saw = f"running canary rollouts: {', '.join(running) if running else 'none'}"
        if not running:
            return log_decision(
                context, saw, dg.SkipReason("no canary rollout is running"), job.name
            )
        hour = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H")
        requests = []
        for name in running:
            step = controller.state(name).step
            requests.append(
                dg.RunRequest(
                    run_key=f"canary:{name}:{step}:{hour}",
                    run_config={"ops": {"canary_review": {"config": {"rollout": name}}}},
                    tags={"fitpulse/rollout": name},
                )
            )
        return log_decision(context, saw, dg.SensorResult(run_requests=requests), job.name)

    return canary_rollout_sensor
