"""Batch recommendations for a list of raw user ids (precomputed feeds, offline evaluation).

Callers pass and receive the ids their events carry; pseudonymization happens inside.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from fitpulse_orchestration.features.reference import UNKNOWN
from fitpulse_orchestration.features.snapshot import TrainingSnapshot
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.ranking.feed import HomeFeedModel, build_feeds, fallback_feeds
from fitpulse_orchestration.ranking.rerank import RerankParams
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import ObjectStore
from fitpulse_orchestration.storage.asset_values import load_asset_value
from fitpulse_orchestration.storage.keys import load_or_create_key

OUTPUT_COLUMNS = ["user_id", "item_id", "rank", "score"]


def read_user_ids(path: Path) -> list[str]:
    """Distinct ``user_id`` values of a CSV or Parquet file, in file order."""
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    if "user_id" not in frame.columns:
        raise ValueError(f"{path} has no user_id column (columns: {list(frame.columns)})")
    ids = frame["user_id"].dropna().astype(str)
    return list(dict.fromkeys(ids))


def load_trained_feed(store: ObjectStore) -> tuple[TrainingSnapshot, HomeFeedModel]:
    """The latest training snapshot and the feed model trained on it, from persisted assets."""
    snapshot: TrainingSnapshot = load_asset_value(store, "training_snapshot")
    model: HomeFeedModel = load_asset_value(store, "home_feed_model")
    return snapshot, model


def recommend_batch(
    store: ObjectStore,
    home: ProjectHome,
    model: HomeFeedModel | None,
    raw_user_ids: list[str],
    n: int,
) -> pd.DataFrame:
    """Top-``n`` feed items per user as of the end of the latest training snapshot.

    From ``model``, or with ``model`` None from the popularity fallback the service serves while
    no champion is promoted (``fallback_popular_items`` through the guardrails). Unknown users
    get the cold-start feed (segment popularity and fresh items).

    Returns:
        ``user_id`` (raw), ``item_id``, ``rank`` (1-based), ``score``.

    Raises:
        FileNotFoundError: nothing has been trained in this home.
    """
    snapshot: TrainingSnapshot = load_asset_value(store, "training_snapshot")
    pseudonymizer = Pseudonymizer.from_secret(load_or_create_key(home.pseudonym_key_file))
    pseudo = pseudonymizer.pseudonymize_many(raw_user_ids)
    back = dict(zip(pseudo, raw_user_ids, strict=True))
    profiles = snapshot.inputs.profiles.set_index("user_id")
    users = pd.DataFrame(
        {
            "user_id": pseudo,
            "fitness_level": [profiles["fitness_level"].get(u, UNKNOWN) for u in pseudo],
            "region": [profiles["region"].get(u, UNKNOWN) for u in pseudo],
        }
    )
    as_of = snapshot.split.end
    if model is None:
        popular = load_asset_value(store, "fallback_popular_items")
        feeds = fallback_feeds(popular, snapshot.inputs, users, as_of, RerankParams(n=n))
    else:
        model = replace(model)
        model.rerank_params = replace(model.rerank_params, n=n)
        feeds = build_feeds(model, snapshot.inputs, users, as_of).feeds
    out = pd.DataFrame(
        {
            "user_id": feeds["user_id"].map(back),
            "item_id": feeds["item_id"].astype(str),
            "rank": feeds["rank"].astype("int64") + 1,
            "score": feeds["score"].astype(float),
        }
    )
    return out[OUTPUT_COLUMNS].reset_index(drop=True)


def write_recommendations(recs: pd.DataFrame, path: Path) -> None:
    """Write CSV or Parquet, chosen by the file extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        recs.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        recs.to_csv(path, index=False)
    else:
        raise ValueError(f"output must end in .csv or .parquet, got {path.name}")
