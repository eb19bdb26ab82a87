"""Monitoring: drift of features and predictions, training-serving skew and UX guardrails.

Everything is measured against the *monitored model*: the champion, or while none exists the
newest registered version.
"""

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from assets.config import MonitoringConfig
from assets.groups import MONITORING
from assets.reports import plot_metadata, report_metadata
from assets.resources import ModelRegistryResource, ObjectStoreResource
from fitpulse_orchestration import layout
from fitpulse_orchestration.evaluation.home_feed import format_markdown
from fitpulse_orchestration.features.point_in_time import FeatureInputs, feature_columns
from fitpulse_orchestration.features.snapshot import load_feature_inputs
from fitpulse_orchestration.monitoring.drift import (
    HISTORY_COLUMNS,
    DriftReport,
    DriftResult,
    compute_drift,
    drift_history_plot,
)
from fitpulse_orchestration.monitoring.features import drift_columns, impression_features
from fitpulse_orchestration.monitoring.serving import (
    compute_skew,
    logged_served_feeds,
    notifications_per_user_week,
    prediction_columns,
    recent_feed_requests,
    replay_served_feeds,
    served_predictions,
    ux_metrics,
)
from fitpulse_orchestration.ranking.bundle import FeedBundle
from fitpulse_orchestration.serving.logs import read_served_features
from fitpulse_orchestration.storage import ObjectStore
from model_registry.client import HOME_RANKER_MODEL


@dataclass
class MonitoredModel:
    """The registered version that monitoring compares traffic against."""

    version: str
    role: str
    bundle: FeedBundle


@dg.asset(group_name=MONITORING, deps=["raw_events"], kinds={"duckdb"})
def monitoring_inputs(
    object_store: ObjectStoreResource,
    catalog_items: pd.DataFrame,
    member_profiles: pd.DataFrame,
) -> dg.Output[FeatureInputs]:
    """Every ingested clean event with the completed catalog and profiles, for monitoring."""
    inputs = load_feature_inputs(object_store.get_store(), catalog_items, member_profiles)
    if inputs.events.empty:
        raise ValueError("no clean events: ingest at least one day before monitoring")
    return dg.Output(
        inputs,
        metadata={
            "events": len(inputs.events),
            "last_event": inputs.events["ts"].max().isoformat(),
        },
    )


@dg.asset(group_name=MONITORING, kinds={"mlflow"})
def monitored_model(model_registry: ModelRegistryResource) -> dg.Output[MonitoredModel]:
    """The champion's feed bundle (or the newest version's while there is no champion)."""
    version = model_registry.champion_version()
    role = "champion"
    if version is None:
        latest = model_registry.get_client().latest(HOME_RANKER_MODEL)
        if latest is None:
            raise ValueError(
                f"nothing is registered under {HOME_RANKER_MODEL!r}: run training_job first"
            )
        version, role = latest.version, "newest version (no champion yet)"
    bundle = model_registry.load_bundle(version)
    return dg.Output(
        MonitoredModel(version, role, bundle),
        metadata={"version": version, "role": role},
    )


def _window_end(inputs: FeatureInputs) -> pd.Timestamp:
    return inputs.events["ts"].max().floor("D") + pd.Timedelta(days=1)


@dg.asset(group_name=MONITORING, kinds={"pandas"})
def served_feed_log(
    config: MonitoringConfig,
    object_store: ObjectStoreResource,
    monitoring_inputs: FeatureInputs,
    monitored_model: MonitoredModel,
) -> dg.Output[pd.DataFrame]:
    """Feeds the monitored model served to recent requesters, with the features as served.

    The service's own sampled log when it served this version in the window, else a replay.
    """
    end = _window_end(monitoring_inputs)
    logged = read_served_features(
        object_store.get_store(), end - pd.Timedelta(days=config.days), end
    )
    log = logged_served_feeds(logged, monitored_model.version, config.max_requests)
    source = "service_log"
    if log.empty:
        requests = recent_feed_requests(
            monitoring_inputs.events, end, config.days, config.max_requests
        )
        log = replay_served_feeds(monitored_model.bundle.model, monitoring_inputs, requests)
        source = "replay"
    return dg.Output(
        log,
        metadata={
            "requests": int(log["request_id"].nunique()),
            "rows": len(log),
            "model_version": monitored_model.version,
            "source": source,
        },
    )


HISTORY_REPORTS = 30
"""Reports in the drift-over-time plot: this one and the asset's previous materializations."""


def _drift_history(context: dg.AssetExecutionContext, result: DriftResult) -> pd.DataFrame:
    """``HISTORY_COLUMNS`` of the asset's earlier reports (its materializations) and this one."""
    records = context.instance.fetch_materializations(
        context.asset_key, limit=HISTORY_REPORTS - 1
    ).records
    rows = []
    for record in records:
        materialization = record.asset_materialization
        meta = materialization.metadata if materialization is not None else {}
        if "drift_share" in meta and "dataset_drift" in meta:
            at = pd.Timestamp(record.timestamp, unit="s", tz="UTC")
            rows.append((at, float(meta["drift_share"].value), bool(meta["dataset_drift"].value)))  # type: ignore[arg-type]
    rows.append((pd.Timestamp.now(tz="UTC"), result.drift_share, result.dataset_drift))
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)).sort_values("at", ignore_index=True)


def _save_report(
    context: dg.AssetExecutionContext,
    store: ObjectStore,
    kind: str,
    report: DriftReport,
    config: MonitoringConfig,
) -> dict[str, dg.MetadataValue]:
    """Write the HTML and JSON report and the drift-over-time plot; paths and links as metadata."""
    stamp = dt.datetime.now(dt.UTC)
    html_key = layout.report_key(kind, stamp, ".html")
    json_key = layout.report_key(kind, stamp, ".json")
    plot_key = layout.report_key(kind, stamp, ".png")
    store.put_bytes(html_key, report.html)
    store.put_bytes(json_key, report.json.encode())
    history = _drift_history(context, report.result)
    title = f"{kind.replace('_', ' ')}: the last {len(history)} reports"
    store.put_bytes(plot_key, drift_history_plot(history, config.drift_params().drift_share, title))
    return {
        **report_metadata(store, html_key, "html_report"),
        **report_metadata(store, json_key, "json_report"),
        **plot_metadata(store, plot_key, "drift_over_time"),
        "drift_history": dg.MetadataValue.json(
            [
                {
                    "at": row.at.isoformat(),
                    "drift_share": row.drift_share,
                    "drift": row.dataset_drift,
                }
                for row in history.itertuples()
            ]
        ),
    }


def _drift_output(
    result: DriftResult, reports: dict[str, dg.MetadataValue], reference: MonitoredModel
) -> dg.Output[DriftResult]:
    return dg.Output(
        result,
        metadata={
            "dataset_drift": result.dataset_drift,
            "drift_share": result.drift_share,
            "drifted_columns": dg.MetadataValue.json(result.drifted_columns()),
            "columns": dg.MetadataValue.json(result.summary()["columns"]),
            "reference_version": reference.version,
            "reference_role": reference.role,
            "reference_rows": result.reference_rows,
            "current_rows": result.current_rows,
            **reports,
        },
    )


@dg.asset(group_name=MONITORING, kinds={"evidently"})
def feature_drift_report(
    context: dg.AssetExecutionContext,
    config: MonitoringConfig,
    object_store: ObjectStoreResource,
    monitoring_inputs: FeatureInputs,
    monitored_model: MonitoredModel,
) -> dg.Output[DriftResult]:
    """Evidently data drift of recent ranker features against the model's training sample."""
    end = _window_end(monitoring_inputs)
    current = impression_features(
        monitoring_inputs, end - pd.Timedelta(days=config.days), end, config.max_rows
    )
    numerical, categorical = drift_columns()
    report = compute_drift(
        monitored_model.bundle.reference_features,
        current,
        numerical,
        categorical,
        config.drift_params(),
    )
    reports = _save_report(context, object_store.get_store(), "feature_drift", report, config)
    return _drift_output(report.result, reports, monitored_model)


@dg.asset(group_name=MONITORING, kinds={"evidently"})
def prediction_drift_report(
    context: dg.AssetExecutionContext,
    config: MonitoringConfig,
    object_store: ObjectStoreResource,
    served_feed_log: pd.DataFrame,
    monitored_model: MonitoredModel,
) -> dg.Output[DriftResult]:
    """Evidently drift of served feed scores and sources against the model's held-out feeds."""
    reference = monitored_model.bundle.reference_scores
    numerical, categorical = prediction_columns(reference)
    current = served_predictions(served_feed_log, [*numerical, *categorical])
    report = compute_drift(reference, current, numerical, categorical, config.drift_params())
    reports = _save_report(context, object_store.get_store(), "prediction_drift", report, config)
    return _drift_output(report.result, reports, monitored_model)


@dg.asset(
    group_name=MONITORING,
    kinds={"pandas"},
    check_specs=[
        dg.AssetCheckSpec(
            "skew_within_threshold",
            asset="training_serving_skew",
            description="no feature's served value disagrees with its offline recomputation "
            "more often than max_skew_rate (MonitoringConfig's default; the result's metadata "
            "holds the threshold applied). Threshold: worst_mismatch_rate <= "
            f"{MonitoringConfig().max_skew_rate:g}.",
        )
    ],
)
def training_serving_skew(
    config: MonitoringConfig, served_feed_log: pd.DataFrame, monitoring_inputs: FeatureInputs
) -> Iterator[dg.Output[pd.DataFrame] | dg.AssetCheckResult]:
    """Per-feature share of served values that differ from their offline recomputation."""
    table = compute_skew(served_feed_log, monitoring_inputs, feature_columns(include_als=False))
    worst = table.iloc[0]
    yield dg.Output(
        table,
        metadata={
            "rows": int(worst["rows"]),
            "worst_feature": str(worst["feature"]),
            "worst_mismatch_rate": float(worst["mismatch_rate"]),
            "table": dg.MetadataValue.md(format_markdown(table.head(10))),
        },
    )
    yield dg.AssetCheckResult(
        check_name="skew_within_threshold",
        passed=bool(worst["mismatch_rate"] <= config.max_skew_rate),
        metadata={
            "worst_feature": str(worst["feature"]),
            "worst_mismatch_rate": float(worst["mismatch_rate"]),
            "threshold": config.max_skew_rate,
            "over_threshold": dg.MetadataValue.json(
                table.loc[table["mismatch_rate"] > config.max_skew_rate, "feature"].tolist()
            ),
        },
    )


UX_CHECKS = ("empty_feed_rate", "fallback_rate", "beginner_violations_served", "notification_load")


def ux_check_description(name: str) -> str:
    """The UI description of UX check ``name``: its measure and ``MonitoringConfig``'s default.

    Raises:
        KeyError: for a name that is not one of ``UX_CHECKS``.
    """
    limits = MonitoringConfig().ux_thresholds()
    measures = {
        "empty_feed_rate": (
            "Share of served feed requests in the window whose feed has no item",
            "max_empty_feed_rate",
            limits.max_empty_feed_rate,
        ),
        "fallback_rate": (
            "Share of served feed requests without any personalized (ALS) item",
            "max_fallback_rate",
            limits.max_fallback_rate,
        ),
        "beginner_violations_served": (
            "Unsafe items served to beginners in the window",
            "max_beginner_violations",
            float(limits.max_beginner_violations),
        ),
        "notification_load": (
            "95th percentile of notifications per user and week",
            "max_notifications_per_user_week_p95",
            limits.max_notifications_per_user_week_p95,
        ),
    }
    what, field, default = measures[name]
    return (
        f"{what}, at most {field} (MonitoringConfig's default; the result's metadata holds the "
        f"value and threshold applied). Threshold: value <= {default:g}."
    )


@dg.asset(
    group_name=MONITORING,
    kinds={"pandas"},
    check_specs=[
        dg.AssetCheckSpec(name, asset="ux_monitors", description=ux_check_description(name))
        for name in UX_CHECKS
    ],
)
def ux_monitors(
    config: MonitoringConfig, served_feed_log: pd.DataFrame, monitoring_inputs: FeatureInputs
) -> Iterator[dg.Output[dict[str, float]] | dg.AssetCheckResult]:
    """UX degradation signals of served feeds and sent notifications in the recent window."""
    feed = ux_metrics(served_feed_log)
    pushes = notifications_per_user_week(
        monitoring_inputs.events, _window_end(monitoring_inputs), days=7
    )
    limits = config.ux_thresholds()
    observed = {
        "empty_feed_rate": (feed["empty_feed_rate"], limits.max_empty_feed_rate),
        "fallback_rate": (feed["fallback_rate"], limits.max_fallback_rate),
        "beginner_violations_served": (
            feed["beginner_violations"],
            float(limits.max_beginner_violations),
        ),
        "notification_load": (pushes["p95"], limits.max_notifications_per_user_week_p95),
    }
    values = {**feed, **{f"notifications_per_user_week_{k}": v for k, v in pushes.items()}}
    yield dg.Output(values, metadata=values)
    for name, (value, limit) in observed.items():
        yield dg.AssetCheckResult(
            check_name=name,
            passed=bool(value <= limit),
            metadata={"value": float(value), "threshold": float(limit)},
        )
