"""Evaluation: the candidate home feed against popularity and ALS-only baselines."""

import dagster as dg
import pandas as pd

from assets.config import FeedConfig
from assets.groups import EVALUATION
from fitpulse_orchestration.evaluation.home_feed import (
    METRICS,
    evaluate_home_feed,
    format_markdown,
    metric,
)
from fitpulse_orchestration.features.snapshot import TrainingSnapshot
from fitpulse_orchestration.ranking.feed import HomeFeedModel
from fitpulse_orchestration.ranking.ranker import RankerArtifacts
from fitpulse_orchestration.retrieval.als import AlsArtifacts
from fitpulse_orchestration.retrieval.index import ItemIndex
from model_registry.client import log_stage


@dg.asset(group_name=EVALUATION, kinds={"pandas"}, required_resource_keys={"mlflow"})
def home_feed_evaluation(
    context: dg.AssetExecutionContext,
    config: FeedConfig,
    training_snapshot: TrainingSnapshot,
    als_model: AlsArtifacts,
    item_index: ItemIndex,
    popular_items: pd.DataFrame,
    home_ranker: RankerArtifacts,
) -> dg.Output[pd.DataFrame]:
    """Held-out metrics of the candidate feed and the baselines, overall and for cold users."""
    model = HomeFeedModel(
        als=als_model,
        index=item_index,
        popular=popular_items,
        ranker=home_ranker,
        candidate_params=config.candidate_params(),
        rerank_params=config.rerank_params(),
    )
    table, feeds = evaluate_home_feed(model, training_snapshot.inputs, training_snapshot.split)
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
    return dg.Output(
        table,
        metadata={
            "table": dg.MetadataValue.md(format_markdown(table)),
            "candidate_ndcg_at_10": metric(table, "candidate", "ndcg_at_10"),
            "popularity_ndcg_at_10": metric(table, "popularity", "ndcg_at_10"),
            "als_only_ndcg_at_10": metric(table, "als_only", "ndcg_at_10"),
            "guardrails": dg.MetadataValue.json(feeds.guardrails),
        },
    )


@dg.asset_check(asset=home_feed_evaluation, blocking=True)
def candidate_beats_popularity(home_feed_evaluation: pd.DataFrame) -> dg.AssetCheckResult:
    """The candidate feed's NDCG@10 must exceed the popularity baseline's."""
    candidate = metric(home_feed_evaluation, "candidate", "ndcg_at_10")
    baseline = metric(home_feed_evaluation, "popularity", "ndcg_at_10")
    return dg.AssetCheckResult(
        passed=candidate > baseline,
        metadata={
            "candidate_ndcg_at_10": candidate,
            "popularity_ndcg_at_10": baseline,
            "lift": candidate / baseline - 1.0 if baseline > 0 else float("inf"),
        },
    )


@dg.asset_check(asset=home_feed_evaluation, blocking=True)
def beginner_safety(home_feed_evaluation: pd.DataFrame) -> dg.AssetCheckResult:
    """No advanced, high-intensity or unknown item may reach a beginner's candidate feed."""
    violations = int(metric(home_feed_evaluation, "candidate", "beginner_safety_violations"))
    return dg.AssetCheckResult(passed=violations == 0, metadata={"violations": violations})
