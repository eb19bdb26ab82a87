"""Freshness: the live two-tower index that new catalog items join within minutes.

``live_item_index`` runs from the ``catalog_sensor`` (new catalog files: incremental) and from
the nightly schedule (full rebuild); the serving fleet swaps each generation in on its next poll.
"""

import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.groups import FRESHNESS
from assets.resources import ModelRegistryResource, ObjectStoreResource
from fitpulse_orchestration.ranking.bundle import read_feed_model
from fitpulse_orchestration.retrieval.live_index import (
    apply_catalog_changes,
    build_live_index,
    load_live_index,
    publish_generation,
)
from fitpulse_orchestration.storage.tables import read_parquet
from model_registry.serving import RegistryModelSource


class LiveIndexConfig(dg.Config):
    """Which landing files to apply, or a full rebuild from the whole catalog."""

    files: list[str] = Field(default_factory=list)
    full_rebuild: bool = False


@dg.asset(group_name=FRESHNESS, kinds={"faiss"})
def live_item_index(
    context: dg.AssetExecutionContext,
    config: LiveIndexConfig,
    catalog_items: pd.DataFrame,
    object_store: ObjectStoreResource,
    model_registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    """The live two-tower index generation serving searches (new items in, pulled items out).

    Incremental: embeds the items of the landed catalog files with the serving model's item
    tower and adds them to the current generation (``add_with_ids``, no rebuild); unpublished
    and flagged items leave every later search. Full (nightly, a new champion, or no
    generation yet): rebuilt from ``catalog_items``.
    """
    store = object_store.get_store()
    with tempfile.TemporaryDirectory() as tmp:
        source = RegistryModelSource(
            model_registry.tracking_uri, Path(tmp), model_registry.get_audit()
        )
        version = source.version_for("champion")
        if version is None:
            raise dg.Failure(
                "no feed model is registered: run training (fitpulse train) before the live "
                "index can be built"
            )
        model = read_feed_model(source.fetch(version), with_index=False)
    if model.two_tower is None:
        raise dg.Failure(f"feed model version {version} has no two-tower model: retrain it")
    base = None if config.full_rebuild else load_live_index(store)
    if base is not None and base.meta.model_version != version:
        context.log.info(
            f"live index was embedded by version {base.meta.model_version}; serving version "
            f"{version}: full rebuild"
        )
        base = None
    if base is None:
        live = build_live_index(model.two_tower, catalog_items, version)
    else:
        frames = [read_parquet(store, key) for key in config.files]
        changes = pd.concat(frames, ignore_index=True) if frames else catalog_items.iloc[:0]
        live = apply_catalog_changes(base, model.two_tower, changes, list(config.files))
    publish_generation(store, live)
    meta = live.meta
    return dg.MaterializeResult(
        metadata={
            "generation": meta.generation,
            "model_version": meta.model_version,
            "kind": meta.kind,
            "items": meta.items,
            "added": meta.added,
            "new_items": meta.new_items,
            "removed": meta.removed,
            "files": len(meta.sources),
        }
    )
