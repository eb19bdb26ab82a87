"""Ranking: the LightGBM LambdaRank home-feed ranker and the assembled feed model."""

import json

import dagster as dg
import pandas as pd

from assets.config import FeedConfig, RankerConfig
from assets.groups import RANKING
from fitpulse_orchestration.evaluation.home_feed import HomeFeedEvaluation
from fitpulse_orchestration.evaluation.selection import (
    FeedSelection,
    format_selection_markdown,
    select_scorer,
    split_users,
)
from fitpulse_orchestration.evaluation.tuning import TuningResult
from fitpulse_orchestration.features.point_in_time import feature_columns
from fitpulse_orchestration.features.snapshot import TrainingSnapshot
from fitpulse_orchestration.features.training import validation_relevance
from fitpulse_orchestration.ranking.blend import describe_weights
from fitpulse_orchestration.ranking.feed import HomeFeedModel, ValidationModels, refit_feed_model
from fitpulse_orchestration.ranking.ranker import RankerArtifacts, train_ranker
from fitpulse_orchestration.retrieval.als import AlsArtifacts
from fitpulse_orchestration.retrieval.ease import EaseArtifacts
from fitpulse_orchestration.retrieval.index import ItemIndex
from fitpulse_orchestration.retrieval.two_tower import TwoTowerArtifacts
from model_registry.client import log_stage


@dg.asset(group_name=RANKING, kinds={"lightgbm"}, required_resource_keys={"mlflow"})
def home_ranker(
    context: dg.AssetExecutionContext, config: RankerConfig, ranker_training_frame: pd.DataFrame
) -> dg.Output[RankerArtifacts]:
    """LambdaRank model that orders home-feed candidates by expected engagement depth."""
    ranker = train_ranker(ranker_training_frame, feature_columns(), config.to_params())
    importance = json.dumps(ranker.feature_importance, indent=2, sort_keys=True)
    log_stage(
        context.resources.mlflow,
        "ranker",
        ranker.param_dict(),
        ranker.metrics,
        {"feature_importance.json": importance},
    )
    top = dict(sorted(ranker.feature_importance.items(), key=lambda kv: -kv[1])[:8])
    return dg.Output(
        ranker, metadata={**ranker.metrics, "top_features": dg.MetadataValue.json(top)}
    )


@dg.asset(group_name=RANKING, kinds={"lightgbm", "pandas"}, required_resource_keys={"mlflow"})
def feed_selection(
    context: dg.AssetExecutionContext,
    config: FeedConfig,
    ranker_training_frame: pd.DataFrame,
    validation_models: ValidationModels,
    training_snapshot: TrainingSnapshot,
    home_ranker: RankerArtifacts,
) -> dg.Output[FeedSelection]:
    """Which scorer serves (the ranker or a ranker-free blend), chosen on the validation split.

    The validation users are halved: a ranker with ``home_ranker``'s settings learns from the
    first half's examples, and it and every blend weighting order the second half's pools.
    """
    split = training_snapshot.split
    relevance = validation_relevance(training_snapshot.inputs.events, split)
    learn, judge = split_users(list(relevance))
    frame = ranker_training_frame[ranker_training_frame["user_id"].isin(set(learn))]
    ranker = train_ranker(frame, home_ranker.feature_names, home_ranker.params)
    selection = select_scorer(
        validation_models,
        ranker,
        training_snapshot.example_inputs(),
        {u: relevance[u] for u in judge},
        config.candidate_params(),
        config.rerank_params(),
    )
    selection.ranker_users = len(learn)
    log_stage(
        context.resources.mlflow,
        "selection",
        {
            "scorer": selection.scorer,
            "blend_weights": describe_weights(selection.blend_weights),
            "cold_blend_weights": describe_weights(selection.cold_blend_weights),
        },
        selection.metrics,
        {"feed_selection.json": selection.table.to_json(orient="records", indent=2)},
    )
    return dg.Output(
        selection,
        metadata={
            "scorer": selection.scorer,
            "blend_weights": describe_weights(selection.blend_weights),
            "cold_blend_weights": describe_weights(selection.cold_blend_weights),
            "reason": selection.reason,
            "judged_users": selection.users,
            "ranker_users": selection.ranker_users,
            "table": dg.MetadataValue.md(format_selection_markdown(selection)),
            **selection.metrics,
        },
    )


@dg.asset(group_name=RANKING, kinds={"python"})
def home_feed_model(
    config: FeedConfig,
    als_model: AlsArtifacts,
    item_index: ItemIndex,
    ease_model: EaseArtifacts,
    popular_items: pd.DataFrame,
    home_ranker: RankerArtifacts,
    feed_selection: FeedSelection,
    two_tower_model: TwoTowerArtifacts,
    two_tower_index: ItemIndex,
) -> dg.Output[HomeFeedModel]:
    """The whole home-feed model as it serves: retrieval, the chosen scorer and guardrails."""
    model = HomeFeedModel(
        als=als_model,
        index=item_index,
        popular=popular_items,
        ranker=home_ranker,
        candidate_params=config.candidate_params(),
        rerank_params=config.rerank_params(),
        two_tower=two_tower_model,
        tt_index=two_tower_index,
        ease=ease_model,
        scorer=feed_selection.scorer,
        blend_weights=feed_selection.blend_weights,
        cold_blend_weights=feed_selection.cold_blend_weights,
    )
    return dg.Output(
        model,
        metadata={
            "items_indexed": len(item_index),
            "two_tower_items_indexed": len(two_tower_index),
            "ease_items": len(ease_model.item_ids),
            "ranker_features": len(home_ranker.feature_names),
            "scorer": model.scorer,
            "blend_weights": describe_weights(model.blend_weights),
            "cold_blend_weights": describe_weights(model.cold_blend_weights),
            "feed_size": model.rerank_params.n,
        },
    )


@dg.asset(group_name=RANKING, kinds={"implicit", "faiss"})
def served_home_feed_model(
    home_feed_model: HomeFeedModel,
    home_feed_evaluation: HomeFeedEvaluation,
    retrieval_tuning: TuningResult,
    training_snapshot: TrainingSnapshot,
) -> dg.Output[HomeFeedModel]:
    """The evaluated feed model refit on every event up to the end: the version that serves.

    It runs only once the evaluation's blocking checks passed; the evaluation's verdict (and
    the promotion gate's) carries over to it, since only the data grew.
    """
    split = training_snapshot.split
    model = refit_feed_model(
        home_feed_model,
        training_snapshot.inputs,
        split.end,
        retrieval_tuning.als,
        retrieval_tuning.ease,
        retrieval_tuning.popularity,
    )
    return dg.Output(
        model,
        metadata={
            "refit_until": split.end.isoformat(),
            "evaluated_until": split.eval_start.isoformat(),
            "evaluated_protocol": home_feed_evaluation.protocol,
            "als_users_evaluated": len(home_feed_model.als.user_ids),
            "als_users_served": len(model.als.user_ids),
            "ease_items_served": len(model.ease.item_ids) if model.ease else 0,
        },
    )
