from __future__ import annotations

import datetime as dt
import itertools
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.retrieval.live_index import (
    CURRENT_KEY,
    KEEP_GENERATIONS,
    LIVE_INDEX_PREFIX,
    LiveIndex,
    apply_catalog_changes,
    build_live_index,
    load_live_index,
    new_generation_id,
    publish_generation,
    read_current_meta,
)
from fitpulse_orchestration.retrieval.two_tower import (
    CONTENT_DIM,
    PROFILE_DIM,
    Tower,
    TwoTowerArtifacts,
    TwoTowerParams,
)
from fitpulse_orchestration.storage import LocalObjectStore

CUTOFF = pd.Timestamp("2026-10-28", tz="UTC")
CATEGORIES = ("strength", "yoga", "running", "hiit", "pilates", "cycling")
DIFFICULTIES = ("beginner", "intermediate", "advanced")
TAKEN_DOWN = {"w-03": "unpublished", "w-09": "flagged", "w-15": "unpublished"}


def _tower(rng: np.random.Generator, n_in: int, hidden: int = 32, dim: int = 8) -> Tower:
    return Tower(
        w1=rng.normal(size=(n_in, hidden)).astype(np.float32),
        b1=np.zeros(hidden, dtype=np.float32),
        w2=rng.normal(size=(hidden, dim)).astype(np.float32),
        b2=np.zeros(dim, dtype=np.float32),
    )


@pytest.fixture(scope="module")
def two_tower() -> TwoTowerArtifacts:
    """Random towers: embeddings depend on content only, which is all these tests need."""
    rng = np.random.default_rng(7)
    counts = pd.Series({"w-00": 6.0, "w-01": 3.0, "w-02": 1.0})
    return TwoTowerArtifacts(
        user_tower=_tower(rng, PROFILE_DIM + CONTENT_DIM + 2),
        item_tower=_tower(rng, CONTENT_DIM),
        params=TwoTowerParams(dim=8, hidden=32),
        item_counts=counts,
        total_positives=int(counts.sum()),
        cutoff=CUTOFF,
    )


def _row(
    item_id: str, category: str, difficulty: str = "beginner", **extra: object
) -> dict[str, object]:
    return {
        "item_id": item_id,
        "item_type": "workout",
        "title": item_id,
        "category": category,
        "difficulty": difficulty,
        "intensity": "medium",
        "duration_min": 30.0,
        "equipment": "mat",
        "tags": f"{category},core",
        "published_at": CUTOFF - pd.Timedelta(days=2),
        "status": "published",
        **extra,
    }


@pytest.fixture
def catalog() -> pd.DataFrame:
    """18 items of distinct content, three of them taken down and one without a status."""
    rows = [
        _row(f"w-{j:02d}", category, difficulty, status=TAKEN_DOWN.get(f"w-{j:02d}", "published"))
        for j, (category, difficulty) in enumerate(itertools.product(CATEGORIES, DIFFICULTIES))
    ]
    frame = pd.DataFrame(rows)
    frame.loc[frame["item_id"] == "w-04", "status"] = None
    return frame


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


def _queries(two_tower: TwoTowerArtifacts, rows: pd.DataFrame) -> np.ndarray:
    """Each row's own item vector as a query, with no popularity prior (weight 0).

    With the prior's coordinate kept, an item's score against a query also carries the product
    of two log-priors, which can favour a never-engaged item over the query's own.
    """
    queries = two_tower.embed_items(rows)
    queries[:, -1] = 0.0
    return queries


def _all_hits(live: LiveIndex, queries: np.ndarray) -> set[str]:
    found, _ = live.index.search(queries, len(live.index))
    return set(found.ravel().tolist())


def test_no_live_index_before_the_first_publication(store: LocalObjectStore) -> None:
    assert read_current_meta(store) is None
    assert load_live_index(store) is None


def test_full_generation_round_trips_through_the_store(
    store: LocalObjectStore, two_tower: TwoTowerArtifacts, catalog: pd.DataFrame
) -> None:
    live = build_live_index(two_tower, catalog, "7")

    publish_generation(store, live)

    meta = read_current_meta(store)
    loaded = load_live_index(store)
    assert meta == live.meta
    assert (meta.kind, meta.model_version, meta.items) == ("full", "7", 15)
    assert meta.sources == ["catalog_items"]
    assert meta.base is None
    assert store.exists(meta.key)
    assert loaded is not None
    assert loaded.meta == meta
    assert len(loaded.index) == 15
    assert "w-04" in loaded.index
    assert not any(item in loaded.index for item in TAKEN_DOWN)
    queries = _queries(two_tower, catalog)
    expected_ids, expected_scores = live.index.search(queries, 5)
    found, scores = loaded.index.search(queries, 5)
    assert (found == expected_ids).all()
    np.testing.assert_array_equal(scores, expected_scores)
    live_rows = catalog[~catalog["item_id"].isin(list(TAKEN_DOWN))]
    assert found[catalog["item_id"].isin(live_rows["item_id"]).to_numpy(), 0].tolist() == (
        live_rows["item_id"].tolist()
    )


def test_incremental_generation_adds_and_removes(
    store: LocalObjectStore, two_tower: TwoTowerArtifacts, catalog: pd.DataFrame
) -> None:
    publish_generation(store, build_live_index(two_tower, catalog, "7"))
    first = read_current_meta(store)
    base = load_live_index(store)
    assert base is not None
    changes = pd.DataFrame(
        [
            _row("new-1", "trend_dance", published_at=CUTOFF + pd.Timedelta(days=1)),
            _row("w-00", "yoga", "advanced", tags="yoga,edited"),
            _row("w-01", "strength", status="unpublished"),
            _row("w-02", "strength", status="flagged"),
            _row("ghost", "yoga", status="unpublished"),
            _row("w-05", "yoga", status="flagged"),
            _row("w-05", "yoga", status="published"),
            _row("w-06", "running"),
            _row("w-06", "running", status="unpublished"),
            _row("w-03", "trend_stretch"),
        ]
    )
    files = ["landing/catalog/date=2026-10-29/updates-10.parquet"]

    live = apply_catalog_changes(base, two_tower, changes, files)
    publish_generation(store, live)

    meta = read_current_meta(store)
    loaded = load_live_index(store)
    assert meta == live.meta
    assert first is not None
    assert meta.kind == "incremental"
    assert meta.base == first.generation
    assert meta.model_version == "7"
    assert meta.sources == files
    assert (meta.added, meta.new_items, meta.removed) == (4, 2, 3)
    assert meta.items == 15 + 2 - 3
    assert loaded is not None
    assert len(loaded.index) == meta.items
    gone = ["w-01", "w-02", "w-06", "ghost", "w-09", "w-15"]
    assert not any(item in loaded.index for item in gone)
    assert all(item in loaded.index for item in ["new-1", "w-00", "w-03", "w-05"])
    assert not set(gone) & _all_hits(loaded, _queries(two_tower, pd.concat([catalog, changes])))
    came_in = changes[changes["item_id"].isin(["new-1", "w-03", "w-00"])]
    found, _ = loaded.index.search(_queries(two_tower, came_in), 1)
    assert found[:, 0].tolist() == came_in["item_id"].tolist()


def test_changes_without_status_are_publications(
    two_tower: TwoTowerArtifacts, catalog: pd.DataFrame
) -> None:
    base = build_live_index(two_tower, catalog, "7")
    changes = pd.DataFrame([_row("new-1", "trend_dance")]).drop(columns="status")

    live = apply_catalog_changes(base, two_tower, changes, ["f.parquet"])

    assert "new-1" in live.index
    assert (live.meta.added, live.meta.new_items, live.meta.removed) == (1, 1, 0)


def test_empty_changes_make_an_identical_generation(
    two_tower: TwoTowerArtifacts, catalog: pd.DataFrame
) -> None:
    base = build_live_index(two_tower, catalog, "7")
    before = sorted(base.index.item_ids())

    live = apply_catalog_changes(base, two_tower, catalog.iloc[:0], [])

    assert sorted(live.index.item_ids()) == before
    assert (live.meta.items, live.meta.added, live.meta.removed) == (15, 0, 0)
    assert live.meta.generation != base.meta.generation


@pytest.mark.parametrize(
    "column",
    [
        "item_id",
        "item_type",
        "category",
        "difficulty",
        "intensity",
        "duration_min",
        "equipment",
        "tags",
        "published_at",
    ],
)
def test_changes_missing_a_column_are_rejected(
    column: str, two_tower: TwoTowerArtifacts, catalog: pd.DataFrame
) -> None:
    base = build_live_index(two_tower, catalog, "7")
    changes = pd.DataFrame([_row("new-1", "yoga")]).drop(columns=column)

    with pytest.raises(ValueError, match=column):
        apply_catalog_changes(base, two_tower, changes, ["f.parquet"])

    assert "new-1" not in base.index
    assert len(base.index) == 15


def _generations(store: LocalObjectStore) -> list[str]:
    return sorted(k for k in store.list_keys(LIVE_INDEX_PREFIX) if k.endswith(".pkl"))


def test_publication_prunes_old_generations(
    store: LocalObjectStore, two_tower: TwoTowerArtifacts, catalog: pd.DataFrame
) -> None:
    published: list[str] = []
    for n in range(KEEP_GENERATIONS + 2):
        live = build_live_index(two_tower, catalog, "7")
        publish_generation(store, live)
        published.append(live.meta.key)
        assert len(_generations(store)) == min(n + 1, KEEP_GENERATIONS)
        assert read_current_meta(store) == live.meta

    assert _generations(store) == published[-KEEP_GENERATIONS:]
    assert store.exists(CURRENT_KEY)


def test_pruning_never_deletes_the_live_generation(
    store: LocalObjectStore, two_tower: TwoTowerArtifacts, catalog: pd.DataFrame
) -> None:
    for _ in range(KEEP_GENERATIONS):
        publish_generation(store, build_live_index(two_tower, catalog, "7"))
    built = build_live_index(two_tower, catalog, "8")
    # A generation id that sorts before every other one (e.g. a clock set back).
    early = replace(
        built.meta, generation=new_generation_id(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    )

    publish_generation(store, LiveIndex(early, built.index))

    loaded = load_live_index(store)
    assert loaded is not None
    assert loaded.meta == early
    assert store.exists(early.key)
    assert early.key in _generations(store)
    assert len(loaded.index) == 15


def test_load_rejects_a_generation_that_is_no_index(
    store: LocalObjectStore, two_tower: TwoTowerArtifacts, catalog: pd.DataFrame
) -> None:
    live = build_live_index(two_tower, catalog, "7")
    publish_generation(store, live)
    store.put_bytes(live.meta.key, pickle.dumps({"not": "an index"}))

    with pytest.raises(TypeError, match="not an item index"):
        load_live_index(store)
