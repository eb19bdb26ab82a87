"""Catalog freshness end to end: landed catalog file -> catalog_sensor -> live index -> serving.

The module's copy of the session's trained tiny home (``trained_world``); the test then drives
the real sensor and the real ``catalog_refresh_job`` against the trained home, and a real feed
service watching the object store, as production does minus the daemon's clock.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd
import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.definitions import build_definitions
from fitpulse_orchestration.features.reference import load_catalog
from fitpulse_orchestration.retrieval.live_index import read_current_meta
from fitpulse_orchestration.server.runtime import ServiceRuntime, build_runtime, profile_backends
from fitpulse_orchestration.serving.feed_types import ServingConfig, StageBudgets
from fitpulse_orchestration.storage.tables import read_parquet_prefix, write_parquet

if TYPE_CHECKING:
    from conftest import TrainedWorld, WorldHome

pytestmark = pytest.mark.slow

ROOMY = ServingConfig(
    budgets=StageBudgets(
        lookup_ms=5000, retrieval_ms=5000, features_ms=5000, ranking_ms=5000, deadline_ms=20000
    )
)


@pytest.fixture(scope="module")
def trained(trained_world: TrainedWorld) -> WorldHome:
    return trained_world.world


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> Any:
    sensor = defs.resolve_sensor_def("catalog_sensor")
    # definitions= alone does not hand the sensor its resources in 1.13: pass them too.
    resources = {k: defs.resources[k] for k in ("object_store", "model_registry")}
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=resources
    ) as context:
        return sensor.evaluate_tick(context)


def _run(defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest) -> None:
    result = defs.resolve_job_def("catalog_refresh_job").execute_in_process(
        instance=instance, run_config=request.run_config, tags=request.tags
    )
    assert result.success


def _runtime(trained: WorldHome, cache: Path) -> ServiceRuntime:
    backends = profile_backends(trained.home, "local")
    return build_runtime(backends, cache, clock="snapshot", config=ROOMY)


def _new_item(catalog: pd.DataFrame, like: str, item_id: str, at: pd.Timestamp) -> pd.DataFrame:
    """A new catalog row with the content of ``like`` (so a user who likes that likes this)."""
    row = catalog[catalog["item_id"] == like].copy()
    return row.assign(item_id=item_id, title="Brand New Plan", published_at=at, status="published")


def test_new_item_is_retrievable_after_one_sensor_tick_and_removal_is_immediate(
    trained: WorldHome, tmp_path: Path
) -> None:
    home, store = trained.home, trained.store
    defs = build_definitions(home)
    instance = dg.DagsterInstance.ephemeral()

    # First tick: everything landed so far is one batch, applied as a full build.
    first = _tick(defs, instance, None)
    assert len(first.run_requests) == 1
    config = first.run_requests[0].run_config["ops"]["live_item_index"]["config"]
    assert config["full_rebuild"] is True
    _run(defs, instance, first.run_requests[0])
    meta = read_current_meta(store)
    assert meta is not None
    assert (meta.kind, meta.model_version) == ("full", "1")
    assert _tick(defs, instance, first.cursor).run_requests == []

    rt = _runtime(trained, tmp_path / "models")
    service = rt.service
    assert service.state.live_index is not None
    assert service.state.live_index.meta.generation == meta.generation

    # A user's best two-tower match gets a content twin, published just before serving time.
    catalog = load_catalog(store)
    profiles = pd.concat(read_parquet_prefix(store, f"{layout.LANDING_USERS}/"))
    user = str(profiles["user_id"].iloc[0])
    before = service.candidates(user)
    like = before.loc[before["source"] == "two_tower", "item_id"].iloc[0]
    item_id = "pl_9999001"
    published = service.state.as_of - pd.Timedelta(minutes=5)
    day = dt.date.fromisoformat(str(service.state.as_of.date()))
    key = layout.landing_reference_key(layout.LANDING_CATALOG, day, "items-23-a-new")
    write_parquet(store, key, _new_item(catalog, like, item_id, published))
    assert item_id not in set(before["item_id"])

    # Requests keep running while the state swaps (the new generation and catalog).
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                service.home_feed(user, n=20)
            except BaseException as exc:  # pragma: no cover - the assertion reports it
                errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        second = _tick(defs, instance, first.cursor)
        assert len(second.run_requests) == 1
        config = second.run_requests[0].run_config["ops"]["live_item_index"]["config"]
        assert config == {"files": [key], "full_rebuild": False}
        _run(defs, instance, second.run_requests[0])
        assert rt.watcher.check_once() is True
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    meta = read_current_meta(store)
    assert meta is not None
    assert (meta.kind, meta.new_items, meta.removed) == ("incremental", 1, 0)
    assert service.state.live_index is not None
    assert service.state.live_index.meta.generation == meta.generation
    after = service.candidates(user).set_index("item_id")
    assert after.loc[item_id, "source"] == "two_tower"

    # Pulling it (and a popular item) takes both out of every source at once.
    popular = after.index[after["source"] == "popular"]
    pulled = [item_id, *popular[:1]]
    updates = pd.concat(
        [
            _new_item(catalog, like, item_id, published).assign(status="unpublished"),
            catalog[catalog["item_id"].isin(popular[:1])].assign(status="flagged"),
        ]
    )
    update_key = layout.landing_reference_key(layout.LANDING_CATALOG, day, "items-23-b-pulled")
    write_parquet(store, update_key, updates)
    third = _tick(defs, instance, second.cursor)
    _run(defs, instance, third.run_requests[0])
    assert rt.watcher.check_once() is True
    meta = read_current_meta(store)
    assert meta is not None
    assert meta.removed == 2
    assert item_id not in service.state.live_index.index  # type: ignore[union-attr]
    final = service.candidates(user)
    assert not set(pulled) & set(final["item_id"])
    feed = service.home_feed(user, n=20)
    assert not set(pulled) & {i.id for i in feed.items}
    # The same run key for the same files: a replayed tick requests nothing new.
    assert _tick(defs, instance, third.cursor).run_requests == []
