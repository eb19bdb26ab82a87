"""Evaluation: the candidate home feed against the champion and the baselines."""

import datetime as dt
from typing import Any

import dagster as dg

from assets.groups import EVALUATION
from assets.reports import plot_metadata
from assets.resources import ModelRegistryResource
from fitpulse_orchestration import layout
from fitpulse_orchestration.evaluation.home_feed import (
    METRICS,
    SINGLE_RETRIEVERS,
    HomeFeedEvaluation,
    evaluate_home_feed,
    format_markdown,
    metric,
)
from fitpulse_orchestration.evaluation.plots import (
    evaluation_plot,
    lift_intervals,
    slice_intervals,
)
from fitpulse_orchestration.evaluation.retrieval import (
    RetrievalEvaluation,
    evaluate_retrieval,
    format_retrieval_markdown,
)
from fitpulse_orchestration.features.snapshot import TrainingSnapshot
from fitpulse_orchestration.features.training import heldout_relevance
from fitpulse_orchestration.ranking.feed import HomeFeedModel
from fitpulse_orchestration.world.oracle import world_oracle
from model_registry.client import log_stage
from model_registry.gate import decide_stage_value


@dg.asset(
    group_name=EVALUATION,
    kinds={"pandas"},
    required_resource_keys={"mlflow", "model_registry", "object_store", "pseudonymizer"},
)
def home_feed_evaluation(
    context: dg.AssetExecutionContext,
    training_snapshot: TrainingSnapshot,
    home_feed_model: HomeFeedModel,
) -> dg.Output[HomeFeedEvaluation]:
    """Held-out metrics of the candidate feed, its stages, the champion and the baselines.

    On a generated world the ``oracle`` row (the world's true preference order through the same
    guardrails) gives every number its ceiling.
    """
    model_registry: ModelRegistryResource = context.resources.model_registry
    split = training_snapshot.split
    store = context.resources.object_store.get_store()
    oracle = world_oracle(
        store,
        context.resources.pseudonymizer.get_pseudonymizer().pseudonymize,
        sorted(heldout_relevance(training_snapshot.inputs.events, split)),
        split.eval_start,
    )
    champion_version = model_registry.champion_version()
    champion = None
    if champion_version is not None:
        champion = model_registry.load_bundle(champion_version).model
        context.log.info(f"evaluating champion version {champion_version} on the same window")
    evaluation = evaluate_home_feed(
        home_feed_model, training_snapshot.inputs, split, champion, oracle
    )
    table = evaluation.table
    flat = {
        f"{row.model}.{row.slice}.{name}": float(getattr(row, name))
        for row in table.itertuples()
        for name in METRICS
    }
    intervals = slice_intervals(evaluation.per_user)
    lifts = lift_intervals(evaluation.per_user)
    plot = evaluation_plot(intervals, lifts, evaluation.protocol)
    plot_key = layout.report_key("evaluation", dt.datetime.now(dt.UTC), ".png")
    store.put_bytes(plot_key, plot)
    log_stage(
        context.resources.mlflow,
        "evaluation",
        {**training_snapshot.split.as_dict(), "scorer": evaluation.scorer},
        flat,
        {
            "home_feed_evaluation.json": table.to_json(orient="records", indent=2),
            "ndcg_intervals.csv": intervals.to_csv(index=False),
            "lift_intervals.csv": lifts.to_csv(index=False),
            "evaluation.png": plot,
        },
    )
    metadata: dict[str, Any] = {
        "table": dg.MetadataValue.md(format_markdown(table)),
        "lift_over_rows": dg.MetadataValue.md(lifts.round(4).to_markdown(index=False)),
        **plot_metadata(store, plot_key, "plot"),
        "protocol": evaluation.protocol,
        "scorer": evaluation.scorer,
        "heldout_users": evaluation.heldout_users,
        "evaluated_users": int(metric(table, "candidate", "users")),
        **{
            f"{model}_ndcg_at_10": metric(table, model, "ndcg_at_10")
            for model in table["model"].unique()
        },
        "candidate_scoring_p99_ms": metric(table, "candidate", "scoring_p99_ms"),
        "guardrail_ndcg_cost": metric(table, "candidate_unguarded", "ndcg_at_10")
        - metric(table, "candidate", "ndcg_at_10"),
        "champion_version": champion_version or "none",
        "guardrails": dg.MetadataValue.json(evaluation.feeds.guardrails),
    }
    return dg.Output(evaluation, metadata=metadata)


@dg.asset_check(asset=home_feed_evaluation, blocking=True)
def candidate_beats_popularity(home_feed_evaluation: HomeFeedEvaluation) -> dg.AssetCheckResult:
    """The candidate feed's NDCG@10 must exceed popularity's through the same guardrails.

    Like with like: both feeds are cut by the guardrails that serve (``popularity_guarded``);
    the raw popularity list is a single retriever (``served_feed_beats_retrievers``).
    """
    table = home_feed_evaluation.table
    candidate = metric(table, "candidate", "ndcg_at_10")
    baseline = metric(table, "popularity_guarded", "ndcg_at_10")
    return dg.AssetCheckResult(
        passed=candidate > baseline,
        metadata={
            "candidate_ndcg_at_10": candidate,
            "popularity_ndcg_at_10": baseline,
            "lift": candidate / baseline - 1.0 if baseline > 0 else float("inf"),
        },
    )


@dg.asset_check(asset=home_feed_evaluation, blocking=True)
def served_feed_beats_retrievers(
    home_feed_evaluation: HomeFeedEvaluation,
) -> dg.AssetCheckResult:
    """The served order (guardrails aside) must not lose to the best single retriever.

    Like with like: the candidate's order before the guardrails against each retriever's raw
    list, per-user NDCG@10, paired bootstrap; fails when the 95% interval of the lift lies below
    0. What the guardrails cost is the candidate row minus ``candidate_unguarded``.
    """
    per_user = home_feed_evaluation.per_user

    def scores(model: str) -> dict[str, float]:
        mine = per_user[per_user["model"] == model]
        return dict(zip(mine["user_id"], mine["ndcg_at_10"], strict=True))

    retrievers = {m: scores(m) for m in SINGLE_RETRIEVERS if (per_user["model"] == m).any()}
    check = decide_stage_value(scores("candidate_unguarded"), retrievers)
    return dg.AssetCheckResult(
        passed=check.passed,
        metadata={"ci_upper_bound": check.value, "detail": check.detail},
        description=check.detail,
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
