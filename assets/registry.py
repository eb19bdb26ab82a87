"""Registry: each evaluated feed model becomes a version, and the promotion gate judges it."""

from collections.abc import Iterator
from dataclasses import replace

import dagster as dg
import pandas as pd
import yaml  # type: ignore[import-untyped]

from assets.config import GateConfig
from assets.groups import REGISTRY
from assets.registry_status import trained_by_description
from assets.resources import ModelRegistryResource
from fitpulse_orchestration.evaluation.home_feed import (
    CHAMPION,
    METRICS,
    HomeFeedEvaluation,
    metric,
)
from fitpulse_orchestration.evaluation.selection import FeedSelection
from fitpulse_orchestration.evaluation.tuning import TuningResult
from fitpulse_orchestration.features.snapshot import TrainingSnapshot
from fitpulse_orchestration.monitoring.features import reference_feature_sample
from fitpulse_orchestration.monitoring.serving import reference_served_scores
from fitpulse_orchestration.provenance import code_version, feature_schema_hash
from fitpulse_orchestration.ranking.blend import describe_weights
from fitpulse_orchestration.ranking.bundle import FeedBundle, bundle_files
from fitpulse_orchestration.ranking.feed import HomeFeedModel
from model_registry.client import (
    HOME_RANKER_MODEL,
    RegisteredVersion,
    active_run_id,
    register_lightgbm,
)
from model_registry.gate import (
    CHECK_NAMES,
    GateDecision,
    ModelScores,
    decide_promotion,
    describe_rule,
)
from model_registry.promotion import training_identity

GATE_ACTOR = "promotion_gate"


def gate_check_description(name: str) -> str:
    """The UI description of gate check ``name``: its rule under ``GateConfig``'s defaults."""
    return (
        f"{describe_rule(name, GateConfig().to_policy())} (GateConfig's default; a run's config "
        "may change it, and each result's metadata holds the value and threshold applied.)"
    )


def review_next_step(model: str, version: str, passed: bool) -> dg.MetadataValue:
    """What a reviewer does next: the ``review_model_job`` config to paste, or nothing.

    A failed candidate can never become champion, so it has no next step.
    """
    if not passed:
        return dg.MetadataValue.text("none: a failed candidate can never become champion")
    config = {
        "ops": {
            "review_model_version": {
                "config": {
                    "model": model,
                    "version": int(version),
                    "decision": "approve",
                    "reviewer": "NAME",
                    "approval_code": "CODE",
                    "note": "WHY",
                }
            }
        }
    }
    code = f"fitpulse registry approval-code {model} {version} --reviewer NAME --decision approve"
    return dg.MetadataValue.md(
        "Review it: launch **review_model_job** from the Launchpad with this config (for a "
        "rejection, `decision: reject` and a code made for it). CODE is the reviewer's approval "
        f"code, from `{code}`.\n\n```yaml\n{yaml.safe_dump(config, sort_keys=False)}```\n\n"
        f"Or from a terminal: `fitpulse registry approve {model} {version} --reviewer NAME "
        "--note WHY`."
    )


@dg.asset(
    group_name=REGISTRY, kinds={"mlflow"}, required_resource_keys={"mlflow", "model_registry"}
)
def registered_home_ranker(
    context: dg.AssetExecutionContext,
    served_home_feed_model: HomeFeedModel,
    home_feed_evaluation: HomeFeedEvaluation,
    training_snapshot: TrainingSnapshot,
    ranker_training_frame: pd.DataFrame,
    retrieval_tuning: TuningResult,
    feed_selection: FeedSelection,
) -> dg.Output[RegisteredVersion]:
    """The served (refit) feed model's version in the MLflow registry (alias ``candidate``).

    Tagged with its evaluation (measured on the model before the refit, under the recorded
    protocol), the tuned hyper-parameters, the chosen scorer and the refit's data range.
    """
    home_feed_model = served_home_feed_model
    model_registry: ModelRegistryResource = context.resources.model_registry
    table = home_feed_evaluation.table
    tags: dict[str, object] = {
        f"eval.{model}.{slice_}.{name}": round(metric(table, model, name, slice_), 6)
        for model in table["model"].unique()
        for slice_ in table["slice"].unique()
        for name in METRICS
        if ((table["model"] == model) & (table["slice"] == slice_)).any()
    }
    split = training_snapshot.split
    tags.update({f"data.{k}": v for k, v in split.as_dict().items()})
    tags["eval.protocol"] = split.describe()
    tags["refit"] = "true"
    tags["refit.until"] = split.end.isoformat()
    tags["refit.evaluated_until"] = split.eval_start.isoformat()
    tags.update({f"tuning.{k}": v for k, v in retrieval_tuning.chosen().items()})
    tags["scorer"] = feed_selection.scorer
    tags["scorer.blend_weights"] = describe_weights(feed_selection.blend_weights)
    tags["scorer.cold_blend_weights"] = describe_weights(feed_selection.cold_blend_weights)
    tags["scorer.reason"] = feed_selection.reason
    features = home_feed_model.ranker.feature_names
    tags["code_version"] = code_version()
    tags["feature_schema_hash"] = feature_schema_hash(ranker_training_frame, features)
    tags["evaluation_run_id"] = active_run_id(context.resources.mlflow)
    tags["dagster_run_id"] = context.run.run_id
    tags["features"] = ",".join(features)
    bundle = FeedBundle(
        model=home_feed_model,
        reference_features=reference_feature_sample(ranker_training_frame),
        reference_scores=reference_served_scores(
            home_feed_model, training_snapshot.inputs, training_snapshot.split.end
        ),
    )
    version = register_lightgbm(
        home_feed_model.ranker.model.booster_,
        HOME_RANKER_MODEL,
        tags,
        bundle_files(bundle),
        description=trained_by_description(context.run.job_name, context.run.run_id),
    )
    model_registry.get_promotion().mark_candidate(
        version.name, version.version, GATE_ACTOR, trained_by=training_identity()
    )
    return dg.Output(
        version,
        metadata={
            "model": version.name,
            "version": version.version,
            "model_uri": version.model_uri,
            "mlflow_run_id": version.run_id,
            "code_version": str(tags["code_version"]),
            "feature_schema_hash": str(tags["feature_schema_hash"]),
        },
    )


@dg.asset_check(
    asset=registered_home_ranker,
    description="The registry's audit chain verifies, no tamper was caught in the last 7 days, "
    "and the champion and challenger aliases stand where the audit log puts them.",
)
def registry_audit_intact(model_registry: ModelRegistryResource) -> dg.AssetCheckResult:
    """Fails with the findings when the registry was tampered with (run by the sensor too)."""
    promotion = model_registry.get_promotion()
    findings = promotion.integrity_findings(HOME_RANKER_MODEL)
    return dg.AssetCheckResult(
        passed=not findings,
        metadata={
            "findings": dg.MetadataValue.json(findings),
            "audit_log": promotion.audit.location(),
        },
    )


def _scores(evaluation: HomeFeedEvaluation, model: str, label: str) -> ModelScores:
    table, per_user = evaluation.table, evaluation.per_user
    mine = per_user[per_user["model"] == model]
    cold = mine[mine["cold"]]
    p99 = metric(table, model, "scoring_p99_ms") if "scoring_p99_ms" in table else float("nan")
    return ModelScores(
        label=label,
        ndcg_by_user=dict(zip(mine["user_id"], mine["ndcg_at_10"], strict=True)),
        cold_ndcg_by_user=dict(zip(cold["user_id"], cold["ndcg_at_10"], strict=True)),
        coverage=metric(table, model, "coverage"),
        beginner_violations=int(metric(table, model, "beginner_safety_violations")),
        scoring_p99_ms=None if pd.isna(p99) else float(p99),
    )


@dg.asset(
    group_name=REGISTRY,
    kinds={"mlflow"},
    check_specs=[
        dg.AssetCheckSpec(name, asset="promotion_gate", description=gate_check_description(name))
        for name in CHECK_NAMES
    ],
)
def promotion_gate(
    config: GateConfig,
    registered_home_ranker: RegisteredVersion,
    home_feed_evaluation: HomeFeedEvaluation,
    model_registry: ModelRegistryResource,
) -> Iterator[dg.Output[GateDecision] | dg.AssetCheckResult]:
    """The gate's verdict on the new version: versus the champion, or popularity if none."""
    evaluation = home_feed_evaluation
    version = registered_home_ranker.version
    candidate = _scores(evaluation, "candidate", f"version {version}")
    if CHAMPION in set(evaluation.table["model"]):
        champion = model_registry.champion_version()
        baseline = _scores(evaluation, CHAMPION, f"champion (version {champion})")
    else:
        baseline = _scores(
            evaluation, "popularity_guarded", "popularity baseline (no champion yet)"
        )
    policy = config.to_policy()
    decision = replace(
        decide_promotion(candidate, baseline, policy),
        protocol=evaluation.protocol,
    )
    model_registry.get_promotion().record_gate(
        registered_home_ranker.name, version, decision, GATE_ACTOR
    )
    yield dg.Output(
        decision,
        metadata={
            "passed": decision.passed,
            "version": version,
            "baseline": decision.baseline,
            "summary": decision.summary(),
            "next_step": review_next_step(registered_home_ranker.name, version, decision.passed),
        },
    )
    for check in decision.checks:
        yield dg.AssetCheckResult(
            check_name=check.name,
            passed=check.passed,
            metadata={
                "value": check.value,
                "threshold": check.threshold,
                "rule": describe_rule(check.name, policy),
                "baseline": decision.baseline,
                "detail": check.detail,
            },
        )
