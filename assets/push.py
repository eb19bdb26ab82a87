"""Push notifications: examples, models, off-policy evaluation, registry and online state.

The open and fatigue models, the policy's off-policy evaluation and gate, the registered push
policy, and the online push state (histories and cap counters).
"""

import datetime as dt
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from assets.config import PushModelConfig, PushPolicyConfig
from assets.groups import PUSH
from assets.registry import review_next_step
from assets.registry_status import record_registry_status, trained_by_description
from assets.reports import plot_metadata
from assets.resources import ModelRegistryResource, ObjectStoreResource, OnlineStoreResource
from fitpulse_orchestration import layout
from fitpulse_orchestration.features.snapshot import TrainingSnapshot
from fitpulse_orchestration.provenance import code_version
from fitpulse_orchestration.push.evaluation import (
    PUSH_GATE_CHECKS,
    PushPolicyEvaluation,
    describe_push_check,
    evaluate_push_policy,
)
from fitpulse_orchestration.push.examples import build_push_examples
from fitpulse_orchestration.push.models import (
    ClassifierReport,
    PushClassifier,
    train_push_classifier,
)
from fitpulse_orchestration.push.online import materialize_push_state
from fitpulse_orchestration.push.policy import PushModels, PushPolicyBundle
from model_registry.client import (
    PUSH_POLICY_MODEL,
    RegisteredVersion,
    active_run_id,
    log_stage,
    register_lightgbm,
)
from model_registry.gate import GateCheck, GateDecision
from model_registry.promotion import training_identity

GATE_ACTOR = "push_policy_gate"


@dg.asset(group_name=PUSH, kinds={"pandas"})
def push_training_examples(training_snapshot: TrainingSnapshot) -> dg.Output[pd.DataFrame]:
    """Every logged push decision with its context features, propensity and outcomes."""
    examples, stats = build_push_examples(training_snapshot.inputs)
    sent = examples[examples["sent"]]
    return dg.Output(
        examples,
        metadata={
            **stats.as_dict(),
            "open_rate": float(sent["opened"].mean()) if len(sent) else 0.0,
            "disable_rate_7d": float(sent.loc[sent["fatigue_observed"], "disabled_7d"].mean())
            if sent["fatigue_observed"].any()
            else 0.0,
        },
    )


def _train(
    context: dg.AssetExecutionContext, config: PushModelConfig, examples: pd.DataFrame, name: str
) -> dg.Output[PushClassifier]:
    model, report = train_push_classifier(examples, name, config.to_params())
    log_stage(
        context.resources.mlflow,
        f"push_{name}",
        {**config.to_params().__dict__, "target": report.target},
        {k.removeprefix(f"{name}."): v for k, v in report.flat_metrics().items()},
    )
    return dg.Output(model, metadata=_report_metadata(report))


def _report_metadata(report: ClassifierReport) -> dict[str, Any]:
    return {
        "target": report.target,
        **{f"test_{k}": v for k, v in report.calibrated.items()},
        **{f"test_raw_{k}": report.raw[k] for k in ("auc", "log_loss", "ece")},
        "rows": dg.MetadataValue.json(report.rows),
        "windows": dg.MetadataValue.json(report.windows),
    }


@dg.asset(group_name=PUSH, kinds={"lightgbm"}, required_resource_keys={"mlflow"})
def push_open_model(
    context: dg.AssetExecutionContext, config: PushModelConfig, push_training_examples: pd.DataFrame
) -> dg.Output[PushClassifier]:
    """Calibrated P(a push is opened within 4 hours); AUC, log loss and ECE on a later window."""
    return _train(context, config, push_training_examples, "open")


@dg.asset(group_name=PUSH, kinds={"lightgbm"}, required_resource_keys={"mlflow"})
def push_fatigue_model(
    context: dg.AssetExecutionContext, config: PushModelConfig, push_training_examples: pd.DataFrame
) -> dg.Output[PushClassifier]:
    """Calibrated P(notifications switched off or the app silenced within 7 days of a push)."""
    return _train(context, config, push_training_examples, "fatigue")


@dg.asset(
    group_name=PUSH,
    kinds={"python"},
    required_resource_keys={"mlflow", "object_store"},
    check_specs=[
        dg.AssetCheckSpec(
            name,
            asset="push_policy_evaluation",
            description=describe_push_check(name, PushPolicyConfig().to_gate()),
        )
        for name in PUSH_GATE_CHECKS
    ],
)
def push_policy_evaluation(
    context: dg.AssetExecutionContext,
    config: PushPolicyConfig,
    push_training_examples: pd.DataFrame,
    push_open_model: PushClassifier,
    push_fatigue_model: PushClassifier,
) -> Iterator[dg.Output[PushPolicyEvaluation] | dg.AssetCheckResult]:
    """Off-policy (IPS, SNIPS) estimates of the new policy vs the logged one, the λ sweep."""
    models = PushModels(push_open_model, push_fatigue_model)
    evaluation = evaluate_push_policy(
        push_training_examples,
        models,
        config.to_params(),
        config.to_gate(),
        start=pd.Timestamp(push_fatigue_model.test_start),
    )
    object_store: ObjectStoreResource = context.resources.object_store
    store = object_store.get_store()
    key = layout.report_key("push_policy", dt.datetime.now(dt.UTC), ".png")
    store.put_bytes(key, evaluation.plot_png)
    sweep_csv = evaluation.sweep.to_csv(index=False)
    log_stage(
        context.resources.mlflow,
        "push_policy",
        {k: v for k, v in config.to_params().__dict__.items() if k != "content_value"},
        evaluation.metrics(),
        {"estimates.txt": evaluation.readable(), "lambda_sweep.csv": sweep_csv},
    )
    with tempfile.TemporaryDirectory() as tmp:
        plot = Path(tmp) / "lambda_sweep.png"
        plot.write_bytes(evaluation.plot_png)
        context.resources.mlflow.log_artifact(str(plot), artifact_path="push_policy")
    yield dg.Output(
        evaluation,
        metadata={
            "gate_passed": evaluation.gate_passed,
            "estimates": dg.MetadataValue.md(f"```\n{evaluation.readable()}\n```"),
            "lambda_sweep": dg.MetadataValue.md(evaluation.sweep.round(4).to_markdown(index=False)),
            "blocked_by": dg.MetadataValue.json(evaluation.blocked_by),
            "window": dg.MetadataValue.json(evaluation.window),
            **plot_metadata(store, key, "plot"),
        },
    )
    for check in evaluation.checks:
        yield dg.AssetCheckResult(
            check_name=check["name"],
            passed=bool(check["passed"]),
            metadata={
                "value": check["value"],
                "threshold": check["threshold"],
                "detail": check["detail"],
            },
        )


@dg.asset(group_name=PUSH, kinds={"mlflow"}, required_resource_keys={"mlflow", "model_registry"})
def registered_push_policy(
    context: dg.AssetExecutionContext,
    config: PushPolicyConfig,
    training_snapshot: TrainingSnapshot,
    push_open_model: PushClassifier,
    push_fatigue_model: PushClassifier,
    push_policy_evaluation: PushPolicyEvaluation,
) -> dg.Output[RegisteredVersion]:
    """The push policy as its own registered model; a passed gate makes it the challenger."""
    model_registry: ModelRegistryResource = context.resources.model_registry
    bundle = PushPolicyBundle(
        models=PushModels(push_open_model, push_fatigue_model),
        params=config.to_params(),
        trained_until=training_snapshot.split.end.isoformat(),
    )
    tags: dict[str, object] = {
        f"eval.{k}": round(v, 6) for k, v in push_policy_evaluation.metrics().items()
    }
    tags.update({f"data.{k}": v for k, v in training_snapshot.split.as_dict().items()})
    tags["code_version"] = code_version()
    tags["evaluation_run_id"] = active_run_id(context.resources.mlflow)
    tags["dagster_run_id"] = context.run.run_id
    version = register_lightgbm(
        push_open_model.booster,
        PUSH_POLICY_MODEL,
        tags,
        bundle.files(),
        artifact_name="push_open",
        description=trained_by_description(context.run.job_name, context.run.run_id),
    )
    promotion = model_registry.get_promotion()
    promotion.mark_candidate(
        version.name, version.version, GATE_ACTOR, trained_by=training_identity()
    )
    decision = GateDecision(
        candidate=f"version {version.version}",
        baseline="logged push policy (off-policy estimates)",
        checks=tuple(GateCheck(**check) for check in push_policy_evaluation.checks),
        policy={
            "max_pushes_per_user_week": config.max_pushes_per_user_week,
            "max_disable_ratio": config.max_disable_ratio,
        },
    )
    promotion.record_gate(version.name, version.version, decision, GATE_ACTOR)
    # The new push version and its gate in the registry's view (training_job refreshes it for
    # the feed model).
    record_registry_status(context, promotion)
    return dg.Output(
        version,
        metadata={
            "model": version.name,
            "version": version.version,
            "gate": decision.summary(),
            "next_step": review_next_step(version.name, version.version, decision.passed),
        },
    )


@dg.asset(group_name=PUSH, kinds={"sqlite", "redis"})
def push_online_state(
    online_store: OnlineStoreResource, training_snapshot: TrainingSnapshot
) -> dg.MaterializeResult:
    """Each user's push history in the online store, and the cap counters seeded with sends."""
    result = materialize_push_state(
        training_snapshot.inputs,
        training_snapshot.split.end,
        online_store.get_store(),
        online_store.get_cap_store(),
    )
    return dg.MaterializeResult(metadata=result)
