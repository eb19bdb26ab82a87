"""Registry: each evaluated ranker becomes a new version of the registered model."""

import dagster as dg
import pandas as pd

from assets.groups import REGISTRY
from fitpulse_orchestration.evaluation.home_feed import METRICS, metric
from fitpulse_orchestration.features.snapshot import TrainingSnapshot
from fitpulse_orchestration.ranking.ranker import RankerArtifacts
from model_registry.client import HOME_RANKER_MODEL, RegisteredVersion, register_lightgbm


@dg.asset(group_name=REGISTRY, kinds={"mlflow"}, required_resource_keys={"mlflow"})
def registered_home_ranker(
    context: dg.AssetExecutionContext,
    home_ranker: RankerArtifacts,
    home_feed_evaluation: pd.DataFrame,
    training_snapshot: TrainingSnapshot,
) -> dg.Output[RegisteredVersion]:
    """The home ranker's version in the MLflow registry, tagged with its evaluation metrics."""
    context.resources.mlflow.active_run()
    tags: dict[str, object] = {
        f"eval.{model}.{slice_}.{name}": round(metric(home_feed_evaluation, model, name, slice_), 6)
        for model in home_feed_evaluation["model"].unique()
        for slice_ in home_feed_evaluation["slice"].unique()
        for name in METRICS
        if (
            (home_feed_evaluation["model"] == model) & (home_feed_evaluation["slice"] == slice_)
        ).any()
    }
    tags.update({f"data.{k}": v for k, v in training_snapshot.split.as_dict().items()})
    tags["dagster_run_id"] = context.run.run_id
    tags["features"] = ",".join(home_ranker.feature_names)
    version = register_lightgbm(home_ranker.model.booster_, HOME_RANKER_MODEL, tags)
    return dg.Output(
        version,
        metadata={
            "model": version.name,
            "version": version.version,
            "model_uri": version.model_uri,
            "mlflow_run_id": version.run_id,
        },
    )
