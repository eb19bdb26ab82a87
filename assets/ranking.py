"""Ranking: the LightGBM LambdaRank home-feed ranker and the assembled feed model."""

import json

import dagster as dg
import pandas as pd

from assets.config import FeedConfig, RankerConfig
from assets.groups import RANKING
from fitpulse_orchestration.features.point_in_time import feature_columns
from fitpulse_orchestration.ranking.feed import HomeFeedModel
from fitpulse_orchestration.ranking.ranker import RankerArtifacts, train_ranker
from fitpulse_orchestration.retrieval.als import AlsArtifacts
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


@dg.asset(group_name=RANKING, kinds={"python"})
def home_feed_model(
    config: FeedConfig,
    als_model: AlsArtifacts,
    item_index: ItemIndex,
    popular_items: pd.DataFrame,
    home_ranker: RankerArtifacts,
    two_tower_model: TwoTowerArtifacts,
    two_tower_index: ItemIndex,
) -> dg.Output[HomeFeedModel]:
    """The whole home-feed model as it serves: retrieval, popularity, ranker and guardrails."""
    model = HomeFeedModel(
        als=als_model,
        index=item_index,
        popular=popular_items,
        ranker=home_ranker,
        candidate_params=config.candidate_params(),
        rerank_params=config.rerank_params(),
        two_tower=two_tower_model,
        tt_index=two_tower_index,
    )
    return dg.Output(
        model,
        metadata={
            "items_indexed": len(item_index),
            "two_tower_items_indexed": len(two_tower_index),
            "ranker_features": len(home_ranker.feature_names),
            "feed_size": model.rerank_params.n,
        },
    )
