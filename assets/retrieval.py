"""Retrieval: ALS factors, the FAISS item index and segment popularity."""

import dagster as dg
import pandas as pd

from assets.config import AlsConfig
from assets.groups import RETRIEVAL
from fitpulse_orchestration.features.snapshot import TrainingSnapshot
from fitpulse_orchestration.retrieval.als import AlsArtifacts, build_interaction_matrix, train_als
from fitpulse_orchestration.retrieval.index import ItemIndex, build_item_index
from fitpulse_orchestration.retrieval.popularity import PopularityParams, compute_popular_items
from model_registry.client import log_stage


@dg.asset(group_name=RETRIEVAL, kinds={"implicit"}, required_resource_keys={"mlflow"})
def als_model(
    context: dg.AssetExecutionContext, config: AlsConfig, training_snapshot: TrainingSnapshot
) -> dg.Output[AlsArtifacts]:
    """Implicit-feedback ALS factors of every member and item active before the held-out window."""
    params = config.to_params()
    matrix = build_interaction_matrix(
        training_snapshot.inputs.events, params, before=training_snapshot.split.eval_start
    )
    artifacts = train_als(matrix, params)
    metrics = {
        **artifacts.metrics,
        "train_seconds": artifacts.train_seconds,
        "train_positive_mse": artifacts.train_positive_mse,
    }
    log_stage(context.resources.mlflow, "als", artifacts.param_dict(), metrics)
    return dg.Output(artifacts, metadata=metrics)


@dg.asset(group_name=RETRIEVAL, kinds={"faiss"})
def item_index(als_model: AlsArtifacts) -> dg.Output[ItemIndex]:
    """FAISS inner-product index over ALS item factors, keyed by stable item-id hashes."""
    index = build_item_index(als_model.item_ids, als_model.item_factors)
    return dg.Output(index, metadata={"items": len(index), "kind": index.kind, "dim": index.dim})


@dg.asset(group_name=RETRIEVAL, kinds={"pandas"})
def popular_items(training_snapshot: TrainingSnapshot) -> dg.Output[pd.DataFrame]:
    """Recency-decayed item popularity per segment (fitness level x region) and overall."""
    table = compute_popular_items(
        training_snapshot.inputs.events,
        training_snapshot.inputs.profiles,
        training_snapshot.split.eval_start,
        PopularityParams(),
    )
    return dg.Output(
        table, metadata={"segments": int(table["segment"].nunique()), "rows": len(table)}
    )
