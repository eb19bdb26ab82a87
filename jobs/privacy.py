"""Privacy jobs: the daily retention sweep and erasure of users on request."""

import dagster as dg

from assets.groups import PRIVACY
from assets.resources import (
    ModelRegistryResource,
    ObjectStoreResource,
    OnlineStoreResource,
    PseudonymizerResource,
)
from fitpulse_orchestration.privacy.erasure import process_requests
from jobs.tags import STAGE_TAG

retention_job = dg.define_asset_job(
    "retention_job",
    selection=dg.AssetSelection.groups(PRIVACY),
    description="Delete raw events of users in 30-day-retention regions once their landing day "
    "expires, and derived values still holding a member erased beyond the deadline; then prove "
    "nothing of either remains (checks no_expired_raw_events, no_overdue_erased_member).",
    tags={STAGE_TAG: "privacy"},
    executor_def=dg.in_process_executor,
)


def build_retention_schedule(running: bool) -> dg.ScheduleDefinition:
    """``retention_job_schedule``: daily at 00:15 UTC, swept as of the tick's time.

    On by default in the production profile (a legal requirement, not an optimisation); off
    in the local profile, where the synthetic world's dates lie in the past and a sweep on the
    wall clock would expire all of it.
    """

    @dg.schedule(
        name="retention_job_schedule",
        job=retention_job,
        cron_schedule="15 0 * * *",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED
        ),
        description="Daily at 00:15 UTC: the retention sweep (retention_job) as of the tick's "
        "time. Running by default in production, stopped in the local profile.",
    )
    def retention_job_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        as_of = context.scheduled_execution_time.isoformat()
        context.log.info(f"run requested for retention_job: sweep as of {as_of}")
        return dg.RunRequest(
            run_key=as_of,
            run_config={
                "ops": {
                    "raw_event_retention": {"config": {"as_of": as_of}},
                    "erased_member_expiry": {"config": {"as_of": as_of}},
                }
            },
        )

    return retention_job_schedule


@dg.op(tags={"kind": "privacy"})
def erased_users(
    context: dg.OpExecutionContext,
    object_store: ObjectStoreResource,
    pseudonymizer: PseudonymizerResource,
    online_store: OnlineStoreResource,
    model_registry: ModelRegistryResource,
) -> dg.Output[None]:
    """Process every pending erasure request (raw ids are read from the store, never logged).

    Registered feed bundles holding an erased member are rewritten without them.

    The output is only its metadata (counts and audit keys); nothing is persisted.
    """
    outcomes = process_requests(
        object_store.get_store(),
        pseudonymizer.get_pseudonymizer(),
        online_store.get_store(),
        online_store.get_cap_store(),
        bundles=model_registry.get_eraser().forget,
    )
    erased = [o.report for o in outcomes if o.report is not None]
    rejected = [o for o in outcomes if o.rejected]
    for outcome in rejected:
        context.log.warning(f"rejected erasure request {outcome.request_key}: {outcome.rejected}")
    return dg.Output(
        None,
        metadata={
            "erased": len(erased),
            "rejected": len(rejected),
            "records_deleted": sum(r.records_deleted for r in erased),
            "bundles_rewritten": sum(len(r.bundles_rewritten) for r in erased),
            "audit_records": dg.MetadataValue.json([r.audit_key for r in erased]),
        },
    )


@dg.job(tags={STAGE_TAG: "privacy"}, executor_def=dg.in_process_executor)
def erasure_job() -> None:
    """Erase the users of the pending requests (``fitpulse privacy request-erasure``)."""
    erased_users()
