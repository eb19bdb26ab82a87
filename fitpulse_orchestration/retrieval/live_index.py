"""The live two-tower index: new items added within minutes, taken-down items gone at once.

A feed model version carries the two-tower towers and the index built at training time. Between
trainings the catalog keeps changing (about 180K new items a day, some pulled), so the serving
fleet reads the *live* index instead, a sequence of generations in the object store:

- ``serving/live_index/<generation>.pkl``: one complete ``ItemIndex`` (FAISS inside);
- ``serving/live_index/current.json``: which generation is live, for which model version, and
  what went into it (``LiveIndexMeta``).

A generation is written completely before the pointer moves (object-store writes are atomic),
and serving loads a new generation completely before it swaps it in, so a search never sees a
half-built index. ``apply_catalog_changes`` makes an incremental generation from the previous
one (``ItemIndex.add`` / ``remove``, no rebuild); ``build_live_index`` makes a full one (the
nightly rebuild, and the first generation of a new champion). Old generations are pruned,
keeping the newest ``KEEP_GENERATIONS``.
"""

from __future__ import annotations

import datetime as dt
import json
import pickle
import uuid
from dataclasses import asdict, dataclass, field
from typing import Final

import pandas as pd

from fitpulse_orchestration.features.reference import live_items
from fitpulse_orchestration.retrieval.index import IndexParams, ItemIndex, build_item_index
from fitpulse_orchestration.retrieval.two_tower import TwoTowerArtifacts
from fitpulse_orchestration.storage import ObjectStore
from fitpulse_orchestration.storage.object_store import ObjectNotFoundError

LIVE_INDEX_PREFIX: Final = "serving/live_index/"
CURRENT_KEY: Final = f"{LIVE_INDEX_PREFIX}current.json"
KEEP_GENERATIONS: Final = 3


@dataclass(frozen=True)
class LiveIndexMeta:
    """What the pointer says about the live generation.

    Attributes:
        generation: id of the generation (sorts by creation time).
        model_version: registered feed-model version whose item tower embedded the items.
        kind: ``full`` (rebuilt from the catalog) or ``incremental`` (previous plus changes).
        built_at: UTC ISO time the generation was written.
        items: searchable items.
        added: items added or re-embedded by this generation.
        new_items: of those, items that were not searchable before.
        removed: items taken out by this generation.
        base: the generation an incremental one was made from.
        sources: landing files applied (incremental) or ``catalog_items`` (full).
    """

    generation: str
    model_version: str
    kind: str
    built_at: str
    items: int
    added: int = 0
    new_items: int = 0
    removed: int = 0
    base: str | None = None
    sources: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Object-store key of the generation's index."""
        return f"{LIVE_INDEX_PREFIX}{self.generation}.pkl"


@dataclass
class LiveIndex:
    """A loaded generation."""

    meta: LiveIndexMeta
    index: ItemIndex


def new_generation_id(now: dt.datetime | None = None) -> str:
    """A generation id that sorts by time: ``YYYYmmddTHHMMSSffffffZ-<random>``."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}"


def read_current_meta(store: ObjectStore) -> LiveIndexMeta | None:
    """The pointer's metadata, or None when no live index was ever published."""
    try:
        raw = store.get_bytes(CURRENT_KEY)
    except (ObjectNotFoundError, FileNotFoundError):
        return None
    return LiveIndexMeta(**json.loads(raw))


def load_live_index(store: ObjectStore, meta: LiveIndexMeta | None = None) -> LiveIndex | None:
    """The live generation (or ``meta``'s), fully loaded; None when there is none.

    Raises:
        TypeError: when the generation file holds something else.
    """
    meta = meta or read_current_meta(store)
    if meta is None:
        return None
    index = pickle.loads(store.get_bytes(meta.key))
    if not isinstance(index, ItemIndex):
        raise TypeError(f"{meta.key} holds a {type(index).__name__}, not an item index")
    return LiveIndex(meta, index)


def publish_generation(store: ObjectStore, live: LiveIndex) -> None:
    """Write the generation, then move the pointer to it, then prune old generations."""
    store.put_bytes(live.meta.key, pickle.dumps(live.index, protocol=pickle.HIGHEST_PROTOCOL))
    store.put_bytes(CURRENT_KEY, json.dumps(asdict(live.meta), sort_keys=True).encode())
    generations = sorted(k for k in store.list_keys(LIVE_INDEX_PREFIX) if k.endswith(".pkl"))
    for key in generations[:-KEEP_GENERATIONS]:
        if key != live.meta.key:
            store.delete(key)


def build_two_tower_index(
    two_tower: TwoTowerArtifacts, catalog: pd.DataFrame, params: IndexParams | None = None
) -> ItemIndex:
    """Index of the item-tower embeddings of every live catalog item (latest row per item)."""
    latest = catalog.drop_duplicates("item_id", keep="last")
    rows = latest[live_items(latest)]
    vectors = two_tower.embed_items(rows)
    return build_item_index(rows["item_id"].astype(str).to_numpy(), vectors, params)


def build_live_index(
    two_tower: TwoTowerArtifacts,
    catalog: pd.DataFrame,
    model_version: str,
    params: IndexParams | None = None,
    sources: list[str] | None = None,
) -> LiveIndex:
    """A full generation: every live catalog item embedded by the item tower.

    Items scheduled for later publication are indexed too; serving only retrieves items
    published before its clock.
    """
    index = build_two_tower_index(two_tower, catalog, params)
    meta = LiveIndexMeta(
        generation=new_generation_id(),
        model_version=model_version,
        kind="full",
        built_at=dt.datetime.now(dt.UTC).isoformat(),
        items=len(index),
        added=len(index),
        new_items=len(index),
        sources=sources or ["catalog_items"],
    )
    return LiveIndex(meta, index)


def apply_catalog_changes(
    base: LiveIndex, two_tower: TwoTowerArtifacts, changes: pd.DataFrame, sources: list[str]
) -> LiveIndex:
    """An incremental generation: ``base`` plus the changed catalog rows, without a rebuild.

    ``base`` is modified in place (load it fresh; serving holds its own copy). Rows are applied
    in order, the last row of an item winning: a live row adds or re-embeds the item, any other
    status removes it from every later search.

    Raises:
        ValueError: when ``changes`` lacks catalog columns the item tower reads.
    """
    needed = {"item_id", "item_type", "category", "difficulty", "intensity", "duration_min"}
    missing = needed | {"equipment", "tags", "published_at"}
    missing -= set(changes.columns)
    if missing:
        raise ValueError(f"catalog changes lack the columns {sorted(missing)}")
    latest = changes.drop_duplicates("item_id", keep="last")
    live = live_items(latest)
    add = latest[live]
    index = base.index
    added = index.add(add["item_id"].astype(str).to_numpy(), two_tower.embed_items(add))
    removed = index.remove(latest.loc[~live, "item_id"].astype(str).to_numpy())
    meta = LiveIndexMeta(
        generation=new_generation_id(),
        model_version=base.meta.model_version,
        kind="incremental",
        built_at=dt.datetime.now(dt.UTC).isoformat(),
        items=len(index),
        added=len(add),
        new_items=added,
        removed=removed,
        base=base.meta.generation,
        sources=sources,
    )
    return LiveIndex(meta, index)
