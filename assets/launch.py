"""Launch safety: the closed-loop simulated A/B and the shadow-mode comparison."""

import datetime as dt
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.config import CanaryReviewConfig, SimulatedAbConfig
from assets.groups import LAUNCH
from assets.reports import plot_metadata
from fitpulse_orchestration.events.ingest import read_clean_events
from fitpulse_orchestration.serving.logs import read_served_features
from fitpulse_orchestration.serving.rollout import RolloutController, step_metrics
from fitpulse_orchestration.serving.shadow import (
    ShadowComparison,
    compare_shadow,
    format_shadow_markdown,
    read_shadow_rows,
)
from fitpulse_orchestration.simulation.ab import (
    prepare_simulation,
    save_report,
    simulate_ab,
)
from fitpulse_orchestration.simulation.report import INTERVAL_METRICS, format_table
from model_registry.client import log_stage
from model_registry.serving import registry_sources


@dg.asset(
    group_name=LAUNCH,
    deps=["registered_home_ranker", "registered_push_policy", "push_online_state"],
    kinds={"pandas", "mlflow"},
    required_resource_keys={
        "mlflow",
        "model_registry",
        "object_store",
        "online_store",
        "pseudonymizer",
    },
)
def simulated_ab(
    context: dg.AssetExecutionContext, config: SimulatedAbConfig
) -> dg.Output[pd.DataFrame]:
    """Closed-loop A/B of the registered feed and push models against baselines.

    Each arm's users live ``days`` simulated days with its feed and pushes; the table has
    7-day retention, workout starts, pushes and disables per user-week (95% intervals),
    beginner-safety violations, coverage and latency. Logged to MLflow with the plots.
    """
    settings = config.to_settings()
    store = context.resources.object_store.get_store()
    registry = context.resources.model_registry
    with tempfile.TemporaryDirectory(prefix="fitpulse-sim-models-") as cache:
        feed_source, push_source = registry_sources(
            registry.tracking_uri, Path(cache), store, registry.get_audit_key()
        )
        with prepare_simulation(
            store,
            context.resources.online_store.get_store(),
            context.resources.pseudonymizer.get_pseudonymizer(),
            feed_source,
            push_source,
            settings.aliases,
            settings.behaviour,
        ) as env:
            result = simulate_ab(env, settings)
    table = result.table
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    keys = save_report(store, result, stamp)
    metrics = {
        f"{row['arm']}.{name}{suffix}": float(row[f"{name}{suffix}"])
        for _, row in table.iterrows()
        for name in (*INTERVAL_METRICS, "coverage", "feed_p99_ms", "beginner_violations")
        for suffix in (("", "_low", "_high") if name in INTERVAL_METRICS else ("",))
    }
    metrics.update({f"target.{t.key}": float(t.passed) for t in result.targets})
    log_stage(
        context.resources.mlflow,
        "simulated_ab",
        {
            "arms": ",".join(settings.arms),
            "days": settings.days,
            "users_per_arm": settings.users_per_arm,
            "seed": settings.seed,
            "start": result.start.isoformat(),
            **{f"model.{alias}": v for alias, v in result.model_versions.items()},
        },
        metrics,
        {
            "ab_table.json": table.to_json(orient="records", indent=2),
            "ab_table.md": format_table(table),
            **{f"{name}.png": png for name, png in result.plots().items()},
        },
    )
    return dg.Output(
        table,
        metadata={
            "table": dg.MetadataValue.md(format_table(table)),
            "targets": dg.MetadataValue.md(
                "\n".join(
                    f"- {'PASS' if t.passed else 'FAIL'} {t.name}: {t.detail}"
                    for t in result.targets
                )
            ),
            "targets_met": all(t.passed for t in result.targets),
            "start": result.start.isoformat(),
            **plot_metadata(store, keys["retention_curve.png"], "retention_curve"),
            **plot_metadata(store, keys["starts_per_day.png"], "starts_per_day"),
        },
    )


@dg.asset_check(asset=simulated_ab)
def launch_targets(simulated_ab: pd.DataFrame) -> dg.AssetCheckResult:
    """The launch targets of ``check_targets`` (ERROR severity, not blocking).

    The platform arm beats popularity (disjoint intervals), pushes and disables no more than
    push-daily, and shows beginners nothing unsafe.
    """
    from fitpulse_orchestration.simulation.report import check_targets

    targets = check_targets(simulated_ab)
    return dg.AssetCheckResult(
        passed=bool(targets) and all(t.passed for t in targets),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={t.key: f"{'PASS' if t.passed else 'FAIL'}: {t.detail}" for t in targets},
        description="no platform arm in the table" if not targets else None,
    )


@dg.asset(group_name=LAUNCH, kinds={"pandas"}, required_resource_keys={"object_store"})
def shadow_comparison(context: dg.AssetExecutionContext) -> dg.Output[ShadowComparison]:
    """Champion vs challenger on the requests shadow mode scored twice.

    List overlap, top-item agreement, score and latency distributions of the rows that
    ``fitpulse serve --shadow-share`` logged.
    """
    rows = read_shadow_rows(context.resources.object_store.get_store())
    try:
        comparison = compare_shadow(rows)
    except ValueError as exc:
        raise dg.Failure(
            description=f"{exc}: serve with `fitpulse serve --shadow-share 0.05` while a "
            "challenger alias exists, then materialize again"
        ) from exc
    summary = comparison.summary
    return dg.Output(
        comparison,
        metadata={
            "comparison": dg.MetadataValue.md(format_shadow_markdown(comparison)),
            **{k: v for k, v in summary.items() if not isinstance(v, str)},
            "champion_version": str(summary["champion_version"]),
            "challenger_version": str(summary["challenger_version"]),
        },
    )


@dg.asset(
    group_name=LAUNCH,
    deps=["raw_events"],
    kinds={"pandas"},
    required_resource_keys={"object_store", "model_registry"},
)
def canary_review(
    context: dg.AssetExecutionContext, config: CanaryReviewConfig
) -> dg.Output[dict[str, object]]:
    """Review the current step of a running canary rollout from its logs and act on it.

    Canary and control metrics since the step began come from the served-feature log (empty
    feeds, fallbacks, latency p99, unsafe items served to beginners) and the clean events
    (notification disables); the controller advances, holds, completes or rolls back, audited.
    """
    store = context.resources.object_store.get_store()
    controller = RolloutController(store, context.resources.model_registry.get_audit_key())
    try:
        state = controller.state(config.rollout)
    except KeyError as exc:
        raise dg.Failure(description=str(exc)) from exc
    if state.status != "running":
        context.log.info(f"rollout {config.rollout} is {state.status}: nothing to review")
        value: dict[str, object] = {"action": "none", "status": state.status}
        return dg.Output(value, metadata={"status": state.status, "share": state.share})
    now = pd.Timestamp.now(tz="UTC")
    start = pd.Timestamp(state.step_started_at)
    days = pd.date_range(start.normalize(), now.normalize(), freq="D").date
    try:
        control, canary = step_metrics(
            state,
            read_served_features(store, start, now),
            read_clean_events(store, days=list(days)),
            controller.previous_control(config.rollout),
        )
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from exc
    review = controller.review(config.rollout, control, canary)
    after = controller.state(config.rollout)
    value = {
        "action": review.action,
        "status": after.status,
        "share": review.share,
        "next_share": after.share,
        "breaches": review.breaches,
    }
    return dg.Output(
        value,
        metadata={
            "action": review.action,
            "status": after.status,
            "share": review.share,
            "next_share": after.share,
            "breaches": dg.MetadataValue.json(review.breaches),
            "canary_requests": canary.requests,
            "control_requests": control.requests,
        },
    )
