"""Retrieval: ALS factors, the two-tower model, their FAISS indexes and segment popularity."""

import dagster as dg
import pandas as pd

from assets.config import TuningConfig, TwoTowerConfig
from assets.groups import RETRIEVAL
from fitpulse_orchestration.evaluation.tuning import TuningResult, trial_records, tune_retrievers
from fitpulse_orchestration.features.snapshot import TrainingSnapshot
from fitpulse_orchestration.features.training import validation_relevance
from fitpulse_orchestration.ranking.feed import ValidationModels, fit_validation_models
from fitpulse_orchestration.retrieval.als import AlsArtifacts, build_interaction_matrix, train_als
from fitpulse_orchestration.retrieval.ease import EaseArtifacts, train_ease
from fitpulse_orchestration.retrieval.index import ItemIndex, build_item_index
from fitpulse_orchestration.retrieval.live_index import build_two_tower_index
from fitpulse_orchestration.retrieval.popularity import PopularityParams, compute_popular_items
from fitpulse_orchestration.retrieval.two_tower import (
    TwoTowerArtifacts,
    build_examples,
    train_two_tower,
)
from model_registry.client import log_stage, log_trials


@dg.asset(group_name=RETRIEVAL, kinds={"optuna", "implicit"}, required_resource_keys={"mlflow"})
def retrieval_tuning(
    context: dg.AssetExecutionContext,
    config: TuningConfig,
    training_snapshot: TrainingSnapshot,
) -> dg.Output[TuningResult]:
    """Retrieval hyper-parameters chosen on the validation split.

    ALS and EASE by an Optuna search, popularity's half-life on a grid.
    """
    split = training_snapshot.split
    fit = training_snapshot.fit_inputs()
    result = tune_retrievers(
        fit.events,
        fit.profiles,
        split.ranker_start,
        validation_relevance(training_snapshot.inputs.events, split),
        config.als.to_params(),
        config.ease.to_params(),
        PopularityParams(),
        config.to_params(),
    )
    tracker = context.resources.mlflow
    log_stage(tracker, "tuning", result.chosen(), result.summary())
    log_trials(tracker, "tuning", trial_records(result))
    return dg.Output(
        result,
        metadata={
            **result.summary(),
            "chosen": dg.MetadataValue.json(result.chosen()),
            "protocol": split.describe(),
        },
    )


@dg.asset(group_name=RETRIEVAL, kinds={"implicit"}, required_resource_keys={"mlflow"})
def als_model(
    context: dg.AssetExecutionContext,
    retrieval_tuning: TuningResult,
    training_snapshot: TrainingSnapshot,
) -> dg.Output[AlsArtifacts]:
    """Implicit-feedback ALS factors of every member and item, held-out part excluded."""
    params = retrieval_tuning.als
    matrix = build_interaction_matrix(
        training_snapshot.train_inputs().events, params, before=training_snapshot.split.eval_start
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


@dg.asset(group_name=RETRIEVAL, kinds={"numpy"}, required_resource_keys={"mlflow"})
def ease_model(
    context: dg.AssetExecutionContext,
    retrieval_tuning: TuningResult,
    training_snapshot: TrainingSnapshot,
) -> dg.Output[EaseArtifacts]:
    """EASE item-item weights over the head of the catalog, held-out part excluded."""
    split = training_snapshot.split
    events = training_snapshot.train_inputs().events
    artifacts = train_ease(events[events["ts"] < split.eval_start], retrieval_tuning.ease)
    log_stage(context.resources.mlflow, "ease", artifacts.param_dict(), artifacts.metrics)
    return dg.Output(artifacts, metadata=artifacts.metrics)


@dg.asset(group_name=RETRIEVAL, kinds={"implicit", "faiss"})
def validation_models(
    retrieval_tuning: TuningResult,
    training_snapshot: TrainingSnapshot,
    two_tower_model: TwoTowerArtifacts,
) -> dg.Output[ValidationModels]:
    """ALS, EASE, popularity and the two-tower fitted on the fit part, for validation.

    ALS is the search's own fit of the chosen parameters (``retrieval_tuning``) when it was
    fitted on this matrix, so the training run fits it once (metadata ``als_from_search``).
    """
    split = training_snapshot.split
    models = fit_validation_models(
        training_snapshot.fit_inputs(),
        split.ranker_start,
        retrieval_tuning.als,
        retrieval_tuning.ease,
        two_tower_model,
        retrieval_tuning.popularity,
        fitted_als=retrieval_tuning.als_model,
    )
    return dg.Output(
        models,
        metadata={
            "as_of": models.as_of.isoformat(),
            "als_users": len(models.als.user_ids),
            "als_from_search": models.als is retrieval_tuning.als_model,
            "ease_items": len(models.ease.item_ids) if models.ease else 0,
        },
    )


@dg.asset(group_name=RETRIEVAL, kinds={"pandas"})
def popular_items(
    retrieval_tuning: TuningResult, training_snapshot: TrainingSnapshot
) -> dg.Output[pd.DataFrame]:
    """Recency-decayed item popularity per segment (fitness level x region) and overall.

    Its half-life was chosen on the validation split (``retrieval_tuning``).
    """
    return _popularity(
        retrieval_tuning.popularity,
        training_snapshot.train_inputs().events,
        training_snapshot.inputs.profiles,
        training_snapshot.split.eval_start,
    )


@dg.asset(group_name=RETRIEVAL, kinds={"pandas"})
def fallback_popular_items(
    retrieval_tuning: TuningResult, training_snapshot: TrainingSnapshot
) -> dg.Output[pd.DataFrame]:
    """What serves when no champion can: popularity over every event up to the snapshot's end.

    The validated half-life, refit on the latest days like the served version
    (``popular_items`` stops where the held-out window starts, for the evaluation). Nothing gates
    it: the fallback must be fresh precisely when a candidate fails its checks. The service and
    ``fitpulse recommend`` serve it through the guardrails while no champion is promoted.
    """
    return _popularity(
        retrieval_tuning.popularity,
        training_snapshot.inputs.events,
        training_snapshot.inputs.profiles,
        training_snapshot.split.end,
    )


def _popularity(
    params: PopularityParams, events: pd.DataFrame, profiles: pd.DataFrame, as_of: pd.Timestamp
) -> dg.Output[pd.DataFrame]:
    table = compute_popular_items(events, profiles, as_of, params)
    return dg.Output(
        table,
        metadata={
            "segments": int(table["segment"].nunique()),
            "rows": len(table),
            "half_life": params.describe(),
            "as_of": as_of.isoformat(),
        },
    )


@dg.asset(group_name=RETRIEVAL, kinds={"pytorch"}, required_resource_keys={"mlflow"})
def two_tower_model(
    context: dg.AssetExecutionContext, config: TwoTowerConfig, training_snapshot: TrainingSnapshot
) -> dg.Output[TwoTowerArtifacts]:
    """Two-tower retrieval model (profile + history user tower, content-only item tower).

    Trained on the fit part (before the validation part), so the ranker's ``x_source`` feature
    of its training examples comes from a model that never saw them.
    """
    params = config.to_params()
    inputs = training_snapshot.fit_inputs()
    examples = build_examples(
        inputs.events,
        inputs.catalog,
        inputs.profiles,
        training_snapshot.split.ranker_start,
        params.max_examples,
    )
    artifacts = train_two_tower(examples, params)
    log_stage(context.resources.mlflow, "two_tower", artifacts.param_dict(), artifacts.metrics)
    return dg.Output(artifacts, metadata=artifacts.metrics)


@dg.asset(group_name=RETRIEVAL, kinds={"faiss"})
def two_tower_index(
    two_tower_model: TwoTowerArtifacts, training_snapshot: TrainingSnapshot
) -> dg.Output[ItemIndex]:
    """The item embeddings of every live catalog item, exported into a FAISS index.

    It ships in the feed bundle; between trainings serving reads the live index the catalog
    sensor keeps up to date (``live_item_index``).
    """
    index = build_two_tower_index(two_tower_model, training_snapshot.inputs.catalog)
    return dg.Output(index, metadata={"items": len(index), "kind": index.kind, "dim": index.dim})
