"""Ranking: the LightGBM LambdaRank home-feed ranker."""

import json

import dagster as dg
import pandas as pd

from assets.config import RankerConfig
from assets.groups import RANKING
from fitpulse_orchestration.features.point_in_time import feature_columns
from fitpulse_orchestration.ranking.ranker import RankerArtifacts, train_ranker
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
