"""Evaluation: the candidate home feed against the champion and the baselines."""

from typing import Any

import dagster as dg

from assets.groups import EVALUATION
from fitpulse_orchestration.evaluation.home_feed import (
    CHAMPION,
    METRICS,
    HomeFeedEvaluation,
    evaluate_home_feed,
    format_markdown,
    metric,
)
from fitpulse_orchestration.evaluation.retrieval import (
    RetrievalEvaluation,
    evaluate_retrieval,
    format_retrieval_markdown,
)
from fitpulse_orchestration.features.snapshot import TrainingSnapshot
from fitpulse_orchestration.ranking.feed import HomeFeedModel
from model_registry.client import log_stage
from model_registry.resource import ModelRegistryResource

WARM_RECALL_TOLERANCE = 0.005
"""How much warm-user recall@100 the blend may lose to ALS-only (sampling noise)."""


@dg.asset(
    group_name=EVALUATION, kinds={"pandas"}, required_resource_keys={"mlflow", "model_registry"}
)
def home_feed_evaluation(
    context: dg.AssetExecutionContext,
    training_snapshot: TrainingSnapshot,
    home_feed_model: HomeFeedModel,
) -> dg.Output[HomeFeedEvaluation]:
    """Held-out metrics of the candidate feed, the serving champion and the baselines."""
    model_registry: ModelRegistryResource = context.resources.model_registry
    champion_version = model_registry.champion_version()
    champion = None
    if champion_version is not None:
        champion = model_registry.load_bundle(champion_version).model
        context.log.info(f"evaluating champion version {champion_version} on the same window")
    evaluation = evaluate_home_feed(
        home_feed_model, training_snapshot.inputs, training_snapshot.split, champion
    )
    table = evaluation.table
    flat = {
        f"{row.model}.{row.slice}.{name}": float(getattr(row, name))
        for row in table.itertuples()
        for name in METRICS
    }
    log_stage(
        context.resources.mlflow,
        "evaluation",
        training_snapshot.split.as_dict(),
        flat,
        {"home_feed_evaluation.json": table.to_json(orient="records", indent=2)},
    )
    metadata: dict[str, Any] = {
        "table": dg.MetadataValue.md(format_markdown(table)),
        "candidate_ndcg_at_10": metric(table, "candidate", "ndcg_at_10"),
        "popularity_ndcg_at_10": metric(table, "popularity", "ndcg_at_10"),
        "als_only_ndcg_at_10": metric(table, "als_only", "ndcg_at_10"),
        "candidate_scoring_p99_ms": metric(table, "candidate", "scoring_p99_ms"),
        "champion_version": champion_version or "none",
        "guardrails": dg.MetadataValue.json(evaluation.feeds.guardrails),
    }
    if champion is not None:
        metadata["champion_ndcg_at_10"] = metric(table, CHAMPION, "ndcg_at_10")
    return dg.Output(evaluation, metadata=metadata)


@dg.asset_check(asset=home_feed_evaluation, blocking=True)
def candidate_beats_popularity(home_feed_evaluation: HomeFeedEvaluation) -> dg.AssetCheckResult:
    """The candidate feed's NDCG@10 must exceed the popularity baseline's."""
    table = home_feed_evaluation.table
    candidate = metric(table, "candidate", "ndcg_at_10")
    baseline = metric(table, "popularity", "ndcg_at_10")
    return dg.AssetCheckResult(
        passed=candidate > baseline,
        metadata={
            "candidate_ndcg_at_10": candidate,
            "popularity_ndcg_at_10": baseline,
            "lift": candidate / baseline - 1.0 if baseline > 0 else float("inf"),
        },
    )


@dg.asset_check(asset=home_feed_evaluation, blocking=True)
def beginner_safety(home_feed_evaluation: HomeFeedEvaluation) -> dg.AssetCheckResult:
    """No advanced, high-intensity or unknown item may reach a beginner's candidate feed."""
    table = home_feed_evaluation.table
    violations = int(metric(table, "candidate", "beginner_safety_violations"))
    return dg.AssetCheckResult(passed=violations == 0, metadata={"violations": violations})


@dg.asset(group_name=EVALUATION, kinds={"pandas"}, required_resource_keys={"mlflow"})
def retrieval_evaluation(
    context: dg.AssetExecutionContext,
    training_snapshot: TrainingSnapshot,
    home_feed_model: HomeFeedModel,
) -> dg.Output[RetrievalEvaluation]:
    """Recall@100 and NDCG@10 of ALS, two-tower, popularity and the blend, per user slice."""
    evaluation = evaluate_retrieval(
        home_feed_model, training_snapshot.inputs, training_snapshot.split
    )
    table = evaluation.table
    flat = {
        f"retrieval.{row.method}.{row.slice}.{name}": float(getattr(row, name))
        for row in table.itertuples()
        for name in ("recall_at_100", "ndcg_at_10")
    }
    log_stage(
        context.resources.mlflow,
        "retrieval_evaluation",
        {},
        flat,
        {"retrieval_evaluation.json": table.to_json(orient="records", indent=2)},
    )
    return dg.Output(
        evaluation,
        metadata={
            "table": dg.MetadataValue.md(format_retrieval_markdown(table)),
            **{k.removeprefix("retrieval."): v for k, v in flat.items() if "recall" in k},
        },
    )


@dg.asset_check(asset=retrieval_evaluation)
def blend_serves_cold_and_warm(
    retrieval_evaluation: RetrievalEvaluation,
) -> dg.AssetCheckResult:
    """The blend beats ALS on cold users and does not lose to it on warm users (recall@100)."""
    value = retrieval_evaluation.value
    cold = value("blend", "cold", "recall_at_100") - value("als", "cold", "recall_at_100")
    warm = value("blend", "warm", "recall_at_100") - value("als", "warm", "recall_at_100")
    passed = bool(cold > 0 and warm >= -WARM_RECALL_TOLERANCE)
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"cold_recall_lift": cold, "warm_recall_lift": warm},
        description=f"blend - ALS recall@100: cold {cold:+.4f} (must be > 0), warm {warm:+.4f} "
        f"(must be >= -{WARM_RECALL_TOLERANCE})",
    )
