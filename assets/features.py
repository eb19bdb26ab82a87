"""Feature tables and the ranker's training frame (point-in-time, one code path)."""

import dagster as dg
import pandas as pd

from assets.config import SplitConfig
from assets.groups import FEATURES
from assets.resources import ObjectStoreResource, OnlineStoreResource
from fitpulse_orchestration.features.online import compute_user_histories
from fitpulse_orchestration.features.point_in_time import (
    ITEM_FEATURES,
    USER_FEATURES,
    snapshot_item_features,
    snapshot_user_features,
)
from fitpulse_orchestration.features.snapshot import TrainingSnapshot, build_training_snapshot
from fitpulse_orchestration.features.training import build_ranker_examples
from fitpulse_orchestration.ranking.feed import ValidationModels, build_ranker_training_frame
from fitpulse_orchestration.ranking.rerank import RerankParams


@dg.asset(group_name=FEATURES, deps=["raw_events"], kinds={"duckdb"})
def training_snapshot(
    config: SplitConfig,
    object_store: ObjectStoreResource,
    catalog_items: pd.DataFrame,
    member_profiles: pd.DataFrame,
) -> dg.Output[TrainingSnapshot]:
    """Every ingested clean event with the completed catalog and profiles, and the time split."""
    snapshot = build_training_snapshot(
        object_store.get_store(), catalog_items, member_profiles, config.to_params()
    )
    return dg.Output(snapshot, metadata=snapshot.summary())


@dg.asset(group_name=FEATURES, kinds={"duckdb"})
def user_features(training_snapshot: TrainingSnapshot) -> dg.Output[pd.DataFrame]:
    """Latest point-in-time features of every member (as of the end of the snapshot)."""
    table = snapshot_user_features(training_snapshot.inputs, training_snapshot.split.end)
    return dg.Output(
        table, metadata={"users": len(table), "cold_share": float(table["u_is_cold"].mean())}
    )


@dg.asset(group_name=FEATURES, kinds={"duckdb"})
def item_features(training_snapshot: TrainingSnapshot) -> dg.Output[pd.DataFrame]:
    """Latest point-in-time features of every published item (as of the end of the snapshot)."""
    table = snapshot_item_features(training_snapshot.inputs, training_snapshot.split.end)
    return dg.Output(table, metadata={"items": len(table)})


@dg.asset(group_name=FEATURES, kinds={"duckdb", "implicit"})
def ranker_training_frame(
    training_snapshot: TrainingSnapshot, validation_models: ValidationModels
) -> dg.Output[pd.DataFrame]:
    """Labelled examples of the validation part with features as of each example."""
    inputs, split = training_snapshot.inputs, training_snapshot.split
    examples = build_ranker_examples(inputs.events, inputs.catalog, split)
    frame, stats = build_ranker_training_frame(
        training_snapshot.example_inputs(), examples, validation_models
    )
    kinds = examples["kind"].value_counts().to_dict()
    return dg.Output(frame, metadata={**stats, "example_kinds": dg.MetadataValue.json(kinds)})


@dg.asset(group_name=FEATURES, kinds={"sqlite", "redis"})
def online_features(
    online_store: OnlineStoreResource,
    training_snapshot: TrainingSnapshot,
    user_features: pd.DataFrame,
    item_features: pd.DataFrame,
) -> dg.MaterializeResult:
    """The latest user and item features and user histories in the online store (for serving)."""
    store = online_store.get_store()
    as_of = training_snapshot.split.end
    users = store.materialize("user", user_features, USER_FEATURES, as_of)
    items = store.materialize("item", item_features, ITEM_FEATURES, as_of)
    histories = compute_user_histories(
        training_snapshot.inputs, user_features["user_id"], as_of, RerankParams().recent_days
    )
    history = store.materialize_records(
        "history", {u: h.to_record() for u, h in histories.items()}, as_of
    )
    return dg.MaterializeResult(
        metadata={
            "users": users.rows,
            "items": items.rows,
            "histories": history.rows,
            "as_of": as_of.isoformat(),
        }
    )
