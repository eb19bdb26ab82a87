"""The online feed service end to end: a trained tiny world served through the real app.

The module's copy of the session's trained tiny home (``trained_world``: every landed day
ingested, version 1 registered, the SQLite online store materialized). Each test then builds
its own runtime (model cache under its ``tmp_path``) and app, so faults injected into one
(a deleted model file, an unreachable store, a zero budget) stay in that test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import itertools
import json
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest
from api_client import API_TOKEN, TOKENS, authed
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from serving_setup import make_champion, register_copy, registry_workflow

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.ingest import ingest_day, read_clean_events
from fitpulse_orchestration.events.schema import ENGAGEMENT_TYPES
from fitpulse_orchestration.features.point_in_time import (
    CROSS_FEATURES,
    ITEM_FEATURES,
    USER_FEATURES,
    FeatureInputs,
    feature_columns,
)
from fitpulse_orchestration.features.reference import (
    UNKNOWN,
    load_catalog,
    load_profiles,
    unsafe_for_beginners,
)
from fitpulse_orchestration.features.snapshot import load_feature_inputs
from fitpulse_orchestration.monitoring.serving import compute_skew
from fitpulse_orchestration.privacy.pseudonymize import (
    PSEUDONYM_PREFIX,
    Pseudonymizer,
)
from fitpulse_orchestration.privacy.traces import find_traces
from fitpulse_orchestration.ranking.compiled import PARITY_TOLERANCE
from fitpulse_orchestration.ranking.feed import build_feeds
from fitpulse_orchestration.ranking.ranker import score_candidates
from fitpulse_orchestration.server.app import create_app
from fitpulse_orchestration.server.runtime import (
    ServiceRuntime,
    build_runtime,
    profile_backends,
)
from fitpulse_orchestration.serving.auth import ApiTokens
from fitpulse_orchestration.serving.feed_types import (
    STAGES,
    FeedResponse,
    ServingConfig,
    StageBudgets,
)
from fitpulse_orchestration.serving.loading import compile_ranker
from fitpulse_orchestration.serving.logs import read_served_features
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.storage.asset_values import load_asset_value
from fitpulse_orchestration.storage.audit import AuditLog, load_audit_key
from fitpulse_orchestration.storage.keys import load_or_create_key
from fitpulse_orchestration.storage.online_store import RedisOnlineStore, SQLiteOnlineStore
from fitpulse_orchestration.storage.tables import read_parquet_prefix
from model_registry.client import RegistryClient
from model_registry.erasure import RegistryEraser
from model_registry.names import HOME_RANKER_MODEL
from model_registry.promotion import ModelPromotion
from model_registry.serving import RegistryModelSource

if TYPE_CHECKING:
    from conftest import TrainedWorld

# dagster-mlflow's resource is beta; the CLI silences that warning itself, pytest re-enables it.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::dagster.BetaWarning"),
]

REDIS_URL = "redis://127.0.0.1:6379/0"
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"
"""Port 1 (tcpmux): nothing listens there, so every connection is refused at once."""
COLD_USER = "new-user-0001"
MODEL_FILE = "home_feed_model.pkl"
INDEX_FILE = "item_index.pkl"
TWO_TOWER_INDEX_FILE = "two_tower_index.pkl"
PAYLOAD_LIMIT = 4096
ITEM_KEYS = {"id", "type", "title", "reason"}
ROOMY = ServingConfig(
    budgets=StageBudgets(
        lookup_ms=10_000.0,
        retrieval_ms=10_000.0,
        features_ms=10_000.0,
        ranking_ms=10_000.0,
        rerank_ms=10_000.0,
        deadline_ms=60_000.0,
    )
)
"""Budgets no test machine overruns: a loaded CI runner must not turn a feed into a
``deadline_exceeded`` fallback in tests about something else. The deadline tests set one
stage's budget to zero instead."""


@dataclass
class TrainedHome:
    """The trained home and what the tests know about its world.

    Attributes:
        profiles: raw (app) user ids with their ``fitness_level``, from the landing zone.
        engaged: pseudonymized user id -> items the user engaged with before ``as_of``.
        engagements: pseudonymized user id -> number of engagements before ``as_of``.
        as_of: the online features' snapshot time (the ``snapshot`` serving clock).
    """

    home: ProjectHome
    store: LocalObjectStore
    pseudonymizer: Pseudonymizer
    profiles: pd.DataFrame
    catalog: pd.DataFrame
    engaged: dict[str, set[str]]
    engagements: Counter[str]
    as_of: pd.Timestamp

    @property
    def unsafe_items(self) -> set[str]:
        """Catalog items a beginner must never see."""
        return set(self.catalog.loc[unsafe_for_beginners(self.catalog), "item_id"])

    @property
    def categories(self) -> dict[str, str]:
        """Catalog category by item id."""
        return dict(zip(self.catalog["item_id"], self.catalog["category"], strict=True))

    def pseudo(self, raw_id: str) -> str:
        """The pseudonym ingestion gave ``raw_id``."""
        return self.pseudonymizer.pseudonymize(raw_id)

    def users(self, level: str | None = None) -> list[str]:
        """Raw ids of ``level`` (every level when None), most engaged first."""
        frame = (
            self.profiles if level is None else self.profiles[self.profiles.fitness_level == level]
        )
        ids = list(frame["user_id"])
        return sorted(ids, key=lambda u: (-self.engagements.get(self.pseudo(u), 0), u))

    def warm_user(self, level: str | None = None) -> str:
        """The most engaged raw user id of ``level``."""
        user = self.users(level)[0]
        assert self.engagements[self.pseudo(user)] >= 10, "the tiny world has no warm user"
        return user

    def assert_beginner_safe(self, items: list[dict[str, Any]]) -> None:
        """Every item is a known catalog item that is safe for a beginner."""
        ids = [i["id"] for i in items]
        assert set(ids) <= set(self.catalog["item_id"]), "an item is not in the catalog"
        unsafe = sorted(set(ids) & self.unsafe_items)
        assert not unsafe, f"items unsafe for a beginner were served: {unsafe}"


@pytest.fixture(scope="module")
def trained(trained_world: TrainedWorld) -> TrainedHome:
    home, store = trained_world.home, trained_world.store
    pseudonymizer = Pseudonymizer.from_secret(load_or_create_key(home.pseudonym_key_file))
    frames = read_parquet_prefix(store, f"{layout.LANDING_USERS}/")
    profiles = (
        pd.concat(frames, ignore_index=True)
        .drop_duplicates("user_id", keep="last")[["user_id", "fitness_level"]]
        .reset_index(drop=True)
    )
    meta = SQLiteOnlineStore(home.online_store).meta("user")
    assert meta is not None
    as_of = pd.Timestamp(meta.as_of)
    events = read_clean_events(store)
    engagements = events[events["event_type"].isin(ENGAGEMENT_TYPES) & (events["ts"] < as_of)]
    engaged: dict[str, set[str]] = {
        str(u): set(g["item_id"].dropna()) for u, g in engagements.groupby("user_id")
    }
    return TrainedHome(
        home=home,
        store=store,
        pseudonymizer=pseudonymizer,
        profiles=profiles,
        catalog=load_catalog(store),
        engaged=engaged,
        engagements=Counter(engagements["user_id"].astype(str)),
        as_of=as_of,
    )


def _runtime(
    trained: TrainedHome, cache: Path, config: ServingConfig = ROOMY, **kwargs: Any
) -> ServiceRuntime:
    backends = profile_backends(trained.home, "local")
    return build_runtime(backends, cache, clock="snapshot", config=config, **kwargs)


def _serve_the_ranker(rt: ServiceRuntime) -> ServiceRuntime:
    """``rt`` with its champion scored by the version's ranker, compiled as a load compiles it.

    The tiny world's validation chooses a blend (the ranker does not beat it beyond noise), so
    tests of the ranker's request path switch the loaded champion to its own trained ranker.
    """
    champion = rt.service.state.models["champion"]
    assert champion.model is not None
    assert champion.model.scorer == "blend"
    champion.model = dataclasses.replace(champion.model, scorer="ranker")
    champion.compiled = compile_ranker(champion.model, champion.version)
    return rt


def _client(rt: ServiceRuntime, threads: int = 1) -> TestClient:
    """The app as ``fitpulse serve`` builds it (one request thread: the feed on the loop)."""
    return authed(create_app(rt.service, rt.watcher, rt.served_log, threads, tokens=TOKENS))


def _feed(client: TestClient, user: str, **headers: str) -> dict[str, Any]:
    response = client.get(f"/v1/home-feed/{user}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _served_records(trained: TrainedHome, request_ids: set[str]) -> list[dict[str, Any]]:
    """Exposure records of the clients' ``request_ids`` in the landing zone's ``serve-*``
    batches."""
    records = []
    for key in trained.store.iter_keys(f"{layout.LANDING_EVENTS}/"):
        if not Path(key).name.startswith("serve-"):
            continue
        assert key.endswith(".ndjson.gz"), key
        for line in gzip.decompress(trained.store.get_bytes(key)).decode().splitlines():
            record = json.loads(line)
            if record.get("client_request_id") in request_ids:
                records.append(record | {"_key": key})
    return records


def _decreasing_but_one(scores: list[float]) -> bool:
    """Strictly decreasing once at most one entry (a promoted fresh item) is left out."""

    def decreasing(values: list[float]) -> bool:
        return all(a > b for a, b in itertools.pairwise(values))

    return decreasing(scores) or any(
        decreasing(scores[:i] + scores[i + 1 :]) for i in range(len(scores))
    )


def test_warm_user_gets_a_compact_personal_feed(trained: TrainedHome, tmp_path: Path) -> None:
    user = trained.warm_user()
    rt = _runtime(trained, tmp_path / "models")
    with _client(rt) as client:
        plain = client.get(
            f"/v1/home-feed/{user}",
            headers={"X-Request-ID": "req-warm-plain-0001", "Accept-Encoding": "identity"},
        )
        with client.stream(
            "GET",
            f"/v1/home-feed/{user}",
            headers={"X-Request-ID": "req-warm-gzip-0001", "Accept-Encoding": "gzip"},
        ) as zipped:
            raw = b"".join(zipped.iter_raw())

    assert plain.status_code == 200
    assert plain.headers["x-request-id"] == "req-warm-plain-0001"
    assert plain.headers["x-model-version"] == "1"
    assert "content-encoding" not in plain.headers
    assert len(plain.content) < PAYLOAD_LIMIT
    body = plain.json()
    # The client's id is echoed; the service's own id keys the exposures.
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
    assert body["model_version"] == "1"
    assert body["fallback"] is None
    assert body["fallbacks"] == []
    items = body["items"]
    assert len(items) == 20
    assert all(set(item) == ITEM_KEYS for item in items)
    ids = [item["id"] for item in items]
    assert len(set(ids)) == len(ids)
    engaged = trained.engaged[trained.pseudo(user)]
    assert len(engaged) >= 10
    assert not set(ids) & engaged, "the feed repeats items the user engaged with"

    assert zipped.status_code == 200
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["x-request-id"] == "req-warm-gzip-0001"
    assert len(raw) < len(plain.content)
    unzipped = json.loads(gzip.decompress(raw))
    assert unzipped["request_id"] != body["request_id"]
    assert unzipped == body | {"request_id": unzipped["request_id"]}


def test_the_thread_pool_serves_the_feed_the_event_loop_serves(
    trained: TrainedHome, tmp_path: Path
) -> None:
    """With several request threads the feed runs in the pool; with one, on the loop."""
    users = [trained.warm_user(), COLD_USER]
    rt = _runtime(trained, tmp_path / "models")
    bodies = {}
    for threads in (1, 2):
        with _client(rt, threads) as client:
            bodies[threads] = [_feed(client, user) for user in users]
            refused = client.get("/v1/home-feed/bad%20id")
        assert refused.status_code == 400
        assert "malformed user id" in refused.json()["error"]
    for loop, pooled in zip(bodies[1], bodies[2], strict=True):
        assert len(loop["items"]) == 20
        assert pooled == loop | {"request_id": pooled["request_id"]}


def test_unknown_user_gets_a_beginner_safe_feed(trained: TrainedHome, tmp_path: Path) -> None:
    assert COLD_USER not in set(trained.profiles["user_id"])
    assert trained.pseudo(COLD_USER) not in trained.engagements
    rt = _runtime(trained, tmp_path / "models")
    with _client(rt) as client:
        body = _feed(client, COLD_USER)

    assert body["fallback"] is None
    assert body["model_version"] == "1"
    assert len(body["items"]) >= 10
    trained.assert_beginner_safe(body["items"])
    response = rt.service.home_feed(COLD_USER)
    assert response.cold
    assert response.fitness_level == "unknown"


def test_the_compiled_ranker_serves_lightgbms_scores(trained: TrainedHome, tmp_path: Path) -> None:
    rt = _serve_the_ranker(_runtime(trained, tmp_path / "models"))
    loaded = rt.service.state.models["champion"]
    assert loaded.model is not None
    assert loaded.model.scorer == "ranker"
    assert loaded.compiled is not None
    ranked = 0
    for user in trained.profiles["user_id"].head(40):
        response = rt.service.home_feed(str(user), n=20)
        assert response.ranked
        served = response.served
        reference = score_candidates(loaded.model.ranker, served)
        assert np.max(np.abs(served["score"].to_numpy() - reference)) <= PARITY_TOLERANCE
        ranked += len(served)
    rt.served_log.close()
    assert ranked == 40 * 20


def test_beginners_never_get_unsafe_items(trained: TrainedHome, tmp_path: Path) -> None:
    beginners = trained.users("beginner")
    assert len(beginners) >= 30
    rt = _runtime(trained, tmp_path / "models")
    with _client(rt) as client:
        bodies = [_feed(client, user) for user in beginners[:40]]

    assert all(b["fallback"] is None and b["model_version"] == "1" for b in bodies)
    for body in bodies:
        assert body["items"]
        trained.assert_beginner_safe(body["items"])


def _audit(home: ProjectHome) -> AuditLog:
    return AuditLog(LocalObjectStore(home.store), load_audit_key(home.audit_key_file))


class _DamagedCopySource(RegistryModelSource):
    """The real registry, except that each fetched bundle is a copy ``damage`` edits.

    Stands for an artifact this code cannot load that still got past the registry (a bundle
    written by other code, a file damaged after download).
    """

    def __init__(self, home: ProjectHome, cache: Path, damage: Callable[[Path], None]) -> None:
        super().__init__(home.mlflow_tracking_uri, cache, _audit(home))
        self.damage = damage

    def fetch(self, version: str) -> Path:
        folder = super().fetch(version)
        copy = self.cache_dir / "damaged" / version
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(folder, copy)
        self.damage(copy)
        return copy


def _damaged_runtime(
    trained: TrainedHome, tmp_path: Path, damage: Callable[[Path], None]
) -> ServiceRuntime:
    """A runtime whose every fetched bundle is a copy ``damage`` edited."""
    cache = tmp_path / "models"
    return _runtime(trained, cache, source=_DamagedCopySource(trained.home, cache, damage))


def _corrupt_two_tower_index(folder: Path) -> None:
    (folder / TWO_TOWER_INDEX_FILE).write_bytes(b"\x80\x05not a faiss index")


def _served_damaged(
    trained: TrainedHome, tmp_path: Path, damage: Callable[[Path], None]
) -> tuple[ServiceRuntime, Any, dict[str, Any], str]:
    """A runtime over bundles ``damage`` edited, its /readyz and a warm user's feed."""
    rt = _damaged_runtime(trained, tmp_path, damage)
    user = trained.warm_user()
    with _client(rt) as client:
        ready = client.get("/readyz")
        body = _feed(client, user)
    return rt, ready, body, user


def _registry_file(home: ProjectHome, version: str, name: str) -> Path:
    """A file of ``version``'s bundle in the registry's own artifact store."""
    run_id = RegistryClient(home.mlflow_tracking_uri).version(HOME_RANKER_MODEL, version).run_id
    (path,) = [p for p in home.mlflow_artifacts.rglob(f"feed_bundle/{name}") if run_id in p.parts]
    return path


def test_a_swapped_registry_artifact_is_refused_and_popularity_serves(
    trained: TrainedHome, tmp_path: Path
) -> None:
    path = _registry_file(trained.home, "1", MODEL_FILE)
    original = path.read_bytes()
    path.write_bytes(original + b"swapped")
    try:
        rt = _runtime(trained, tmp_path / "models")
        beginner = trained.warm_user("beginner")
        with _client(rt) as client:
            ready = client.get("/readyz")
            response = client.get(f"/v1/home-feed/{beginner}")
            metrics = _samples(client.get("/metrics").text)
    finally:
        path.write_bytes(original)

    assert ready.status_code == 503
    champion = ready.json()["models"]["champion"]
    assert champion["version"] == "1"
    assert champion["loaded"] is False
    assert "differs from the registered" in champion["problem"]
    assert ready.json()["components"]["champion_model"] == champion["problem"]
    assert ("fitpulse_component_up", {"component": "champion_model"}, 0.0) in metrics
    assert ("fitpulse_component_up", {"component": "online_store"}, 1.0) in metrics
    assert response.status_code == 200
    body = response.json()
    assert body["fallback"] == "model_unavailable"
    assert body["model_version"] == "popularity"
    assert response.headers["x-model-version"] == "popularity"
    assert body["items"]
    trained.assert_beginner_safe(body["items"])


def test_a_damaged_cached_bundle_is_downloaded_again(trained: TrainedHome, tmp_path: Path) -> None:
    cache = tmp_path / "models"
    _runtime(trained, cache)
    (cache / HOME_RANKER_MODEL / "1" / MODEL_FILE).unlink()

    rt = _runtime(trained, cache)

    champion = rt.service.state.models["champion"]
    assert champion.model is not None
    assert champion.problem is None
    assert (cache / HOME_RANKER_MODEL / "1" / MODEL_FILE).is_file()
    assert rt.service.state.ready
    assert not rt.service.home_feed(trained.warm_user()).fallbacks


def test_a_pickle_naming_a_missing_module_starts_on_the_fallback_and_heals(
    trained: TrainedHome, tmp_path: Path
) -> None:
    def foreign(folder: Path) -> None:
        (folder / MODEL_FILE).write_bytes(b"cno_such_fitpulse_module\nFeedModel\n.")

    cache = tmp_path / "models"
    rt = _damaged_runtime(trained, tmp_path, foreign)

    champion = rt.service.state.models["champion"]
    assert champion.model is None
    assert "ModuleNotFoundError" in (champion.problem or "")
    assert rt.service.home_feed(trained.warm_user()).fallbacks == ["model_unavailable"]
    # The artifact is fixed (here: the source stops damaging it); the next poll loads it.
    rt.watcher.loader.source = RegistryModelSource(
        trained.home.mlflow_tracking_uri, cache, _audit(trained.home)
    )
    assert rt.watcher.check_once()
    assert rt.service.state.ready
    assert rt.service.home_feed(trained.warm_user()).fallbacks == []


def test_a_corrupt_two_tower_index_is_labelled_and_not_ready(
    trained: TrainedHome, tmp_path: Path
) -> None:
    rt, ready, body, user = _served_damaged(trained, tmp_path, _corrupt_two_tower_index)

    assert ready.status_code == 503
    champion = ready.json()["models"]["champion"]
    assert champion["loaded"] is True
    assert "no two-tower index for version 1" in champion["problem"]
    assert body["fallback"] == "index_unavailable"
    assert body["model_version"] == "1"
    assert len(body["items"]) == 20
    assert "two_tower" not in set(rt.service.home_feed(user).served["source"])


class _BrokenVersionSource(RegistryModelSource):
    """The real registry, except that champion points at a version whose download fails."""

    def version_for(self, alias: str) -> str | None:
        return "99" if alias == "champion" else super().version_for(alias)

    def fetch(self, version: str) -> Path:
        if version == "99":
            raise OSError("artifact store returned 500 for version 99")
        return super().fetch(version)


def test_a_broken_new_version_never_replaces_a_working_one(
    trained: TrainedHome, tmp_path: Path
) -> None:
    rt = _runtime(trained, tmp_path / "models")
    assert rt.service.state.models["champion"].version == "1"
    rt.watcher.loader.source = _BrokenVersionSource(
        trained.home.mlflow_tracking_uri, tmp_path / "models", _audit(trained.home)
    )

    assert not rt.watcher.check_once()

    assert rt.service.state.models["champion"].version == "1"
    assert rt.service.state.ready
    assert rt.watcher.last_error is not None
    assert "version 99 failed" in rt.watcher.last_error
    assert rt.service.home_feed(trained.warm_user()).model_version == "1"


def test_missing_index_serves_popular_and_fresh_candidates_ranked(
    trained: TrainedHome, tmp_path: Path
) -> None:
    def unindexed(folder: Path) -> None:
        (folder / INDEX_FILE).unlink()

    rt, ready, body, user = _served_damaged(trained, tmp_path, unindexed)

    assert ready.status_code == 503
    champion = ready.json()["models"]["champion"]
    assert champion["loaded"] is True
    assert champion["index"] is False
    assert INDEX_FILE in champion["problem"]
    assert body["fallback"] == "index_unavailable"
    assert body["model_version"] == "1"
    assert len(body["items"]) == 20
    response = rt.service.home_feed(user)
    assert response.ranked
    # EASE needs no index and the two-tower has its own: they, popularity and freshness still
    # retrieve; ALS does not.
    assert "als" not in set(response.served["source"])
    assert set(response.served["source"]) <= {"ease", "two_tower", "popular", "fresh"}


def test_unreachable_online_store_serves_beginner_safe_defaults(
    trained: TrainedHome, tmp_path: Path
) -> None:
    backends = dataclasses.replace(
        profile_backends(trained.home, "local"),
        online=RedisOnlineStore(DEAD_REDIS_URL, timeout_s=0.2),
    )
    with pytest.raises(ValueError, match="clock 'snapshot' needs the online store"):
        build_runtime(backends, tmp_path / "models", clock="snapshot", config=ROOMY)
    rt = _serve_the_ranker(
        build_runtime(backends, tmp_path / "models", clock=trained.as_of.isoformat(), config=ROOMY)
    )
    advanced = trained.warm_user("advanced")
    with _client(rt) as client:
        ready = client.get("/readyz")
        body = _feed(client, advanced)

    assert ready.status_code == 503
    components = ready.json()["components"]
    assert components["champion_model"] is None
    assert "OnlineStoreUnavailableError" in components["online_store"]
    assert body["fallback"] == "features_unavailable"
    assert body["model_version"] == "1"
    assert body["items"]
    # The store holds the level: without it even an advanced member gets the beginner rule.
    trained.assert_beginner_safe(body["items"])
    response = rt.service.home_feed(advanced)
    assert response.fitness_level == "unknown"
    assert response.served[list(USER_FEATURES)].isna().all().all()
    healthy = _serve_the_ranker(_runtime(trained, tmp_path / "models")).service.home_feed(advanced)
    assert healthy.fallbacks == []
    assert {i.id for i in healthy.items} & trained.unsafe_items, "no contrast: pick another user"


def test_a_damaged_online_row_degrades_that_member_alone(
    trained: TrainedHome, tmp_path: Path
) -> None:
    copy = tmp_path / "online.sqlite"
    with closing(sqlite3.connect(trained.home.online_store)) as source:
        with closing(sqlite3.connect(copy)) as target:
            source.backup(target)
    damaged, healthy = trained.warm_user("advanced"), trained.warm_user("beginner")
    misshapen = trained.warm_user("intermediate")
    with closing(sqlite3.connect(copy)) as conn, conn:
        changed = conn.execute(
            'UPDATE features SET payload = \'{"u_engaged_7d": 3.0, "u_lev\' '
            "WHERE kind = 'user' AND id = ?",
            (trained.pseudo(damaged),),
        ).rowcount
        # Valid JSON of the wrong shape: category counts that are not an object.
        changed += conn.execute(
            "UPDATE features SET payload = '{\"cat\": 5}' WHERE kind = 'history' AND id = ?",
            (trained.pseudo(misshapen),),
        ).rowcount
    assert changed == 2
    backends = dataclasses.replace(
        profile_backends(trained.home, "local"), online=SQLiteOnlineStore(copy, create=False)
    )
    rt = build_runtime(backends, tmp_path / "models", clock="snapshot", config=ROOMY)
    with _client(rt) as client:
        broken = _feed(client, damaged)
        odd = _feed(client, misshapen)
        fine = _feed(client, healthy)
        ready = client.get("/readyz")

    assert broken["fallback"] == "features_unavailable"
    assert odd["fallback"] == "features_unavailable"
    assert broken["items"]
    assert odd["items"]
    trained.assert_beginner_safe(broken["items"])  # without its row, the level is unknown
    assert fine["fallback"] is None
    assert ready.status_code == 200, ready.text


@pytest.fixture
def redis_store(trained: TrainedHome, require_redis: None) -> Iterator[RedisOnlineStore]:
    """A Redis online store holding exactly the SQLite store's tables (keys removed after)."""
    import redis

    prefix = f"fitpulse-test:{uuid.uuid4().hex}"
    store = RedisOnlineStore(REDIS_URL, prefix=prefix)
    sqlite = SQLiteOnlineStore(trained.home.online_store)
    user_ids = list(load_asset_value(trained.store, "user_features")["user_id"])
    item_ids = list(load_asset_value(trained.store, "item_features")["item_id"])
    for kind, ids in (("user", user_ids), ("item", item_ids)):
        meta = sqlite.meta(kind)
        assert meta is not None
        table = sqlite.lookup(kind, ids)
        assert len(table) == meta.rows == len(ids)
        store.materialize(kind, table, meta.features, pd.Timestamp(meta.as_of))
    history_meta = sqlite.meta("history")
    assert history_meta is not None
    records = sqlite.lookup_records("history", user_ids)
    assert len(records) == history_meta.rows
    store.materialize_records("history", records, pd.Timestamp(history_meta.as_of))
    try:
        yield store
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)


def test_redis_online_store_serves_like_sqlite(
    trained: TrainedHome, redis_store: RedisOnlineStore, tmp_path: Path
) -> None:
    backends = dataclasses.replace(profile_backends(trained.home, "local"), online=redis_store)
    from_redis = build_runtime(backends, tmp_path / "models", clock="snapshot", config=ROOMY)
    from_sqlite = _runtime(trained, tmp_path / "models")
    assert from_redis.service.state.as_of == trained.as_of
    users = [trained.warm_user(), trained.warm_user("beginner"), COLD_USER]
    with _client(from_redis) as client:
        bodies = [_feed(client, user) for user in users]

    for user, body in zip(users, bodies, strict=True):
        assert body["fallback"] is None
        assert body["model_version"] == "1"
        expected = from_sqlite.service.home_feed(user).payload()["items"]
        assert body["items"] == expected


def test_zero_ranking_budget_exceeds_the_deadline(trained: TrainedHome, tmp_path: Path) -> None:
    config = dataclasses.replace(ROOMY, budgets=dataclasses.replace(ROOMY.budgets, ranking_ms=0.0))
    rt = _runtime(trained, tmp_path / "models", config=config)
    with _client(rt) as client:
        body = _feed(client, trained.warm_user())
        metrics = client.get("/metrics").text

    assert body["fallback"] == "deadline_exceeded"
    assert body["model_version"] == "1"
    assert len(body["items"]) == 20
    assert ("fitpulse_feed_fallbacks_total", {"fallback": "deadline_exceeded"}, 1.0) in _samples(
        metrics
    )


def test_zero_retrieval_budget_serves_retrieval_order(trained: TrainedHome, tmp_path: Path) -> None:
    config = dataclasses.replace(
        ROOMY, budgets=dataclasses.replace(ROOMY.budgets, retrieval_ms=0.0)
    )
    rt = _runtime(trained, tmp_path / "models", config=config)
    user = trained.warm_user()
    with _client(rt) as client:
        body = _feed(client, user)

    assert body["fallback"] == "deadline_exceeded"
    assert body["model_version"] == "1"
    assert len(body["items"]) == 20
    response = rt.service.home_feed(user)
    assert response.fallbacks == ["deadline_exceeded"]
    assert not response.ranked
    assert "features" not in response.stage_ms
    assert "ranking" not in response.stage_ms
    served = response.served
    assert set(served["source"]) <= {"als", "two_tower", "popular", "fresh"}
    # Unranked candidates keep their retrieval position as score (0, -1, -2, ...).
    scores = served["score"].tolist()
    assert all(s <= 0 and float(s).is_integer() for s in scores)
    assert _decreasing_but_one(scores)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/home-feed/bad%20id", "malformed user id 'bad id'"),
        (f"/v1/home-feed/{'a' * 65}", "malformed user id"),
        ("/v1/home-feed/-leading-dash", "malformed user id '-leading-dash'"),
        ("/v1/home-feed/usr_0000001?n=0", "n must be between 1 and 50, got 0"),
        ("/v1/home-feed/usr_0000001?n=51", "n must be between 1 and 50, got 51"),
        ("/v1/home-feed/usr_0000001?n=99999", "n must be between 1 and 50, got 99999"),
        (
            f"/v1/home-feed/usr_0000001?n={'9' * 5000}",
            f"n must be between 1 and 50, got {'9' * 20}",
        ),
        ("/v1/home-feed/usr_0000001?n=abc", "n must be a whole number, got 'abc'"),
        ("/v1/home-feed/usr_0000001?n=-1", "n must be a whole number, got '-1'"),
        ("/v1/home-feed/abc%0A", "malformed user id 'abc\\n'"),
    ],
)
def test_bad_requests_get_400_with_the_problem(
    trained: TrainedHome, tmp_path: Path, path: str, message: str
) -> None:
    rt = _runtime(trained, tmp_path / "models")
    with _client(rt) as client:
        response = client.get(path, headers={"X-Request-ID": "req-bad-000001"})

        metrics = _samples(client.get("/metrics").text)

    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert response.json()["request_id"] == "req-bad-000001"
    assert response.headers["x-request-id"] == "req-bad-000001"
    assert ("fitpulse_feed_requests_total", {"variant": "none", "status": "400"}, 1.0) in metrics


def test_edge_ids_sizes_and_request_ids(trained: TrainedHome, tmp_path: Path) -> None:
    rt = _runtime(trained, tmp_path / "models")
    user = trained.warm_user()
    with _client(rt) as client:
        longest = _feed(client, "a" * 64)
        punctuated = _feed(client, "u1@example.com:2_3-4")
        one = client.get(f"/v1/home-feed/{user}?n=1")
        most = client.get(f"/v1/home-feed/{user}?n=50")
        bad_request_id = client.get(f"/v1/home-feed/{user}", headers={"X-Request-ID": "a b"})

    assert longest["items"]
    assert punctuated["items"]
    assert len(one.json()["items"]) == 1
    assert len(most.json()["items"]) == 50
    assert most.json()["fallback"] is None
    # An unusable request id is replaced by a fresh one, echoed in the header and the body.
    generated = bad_request_id.headers["x-request-id"]
    assert generated != "a b"
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert bad_request_id.json()["request_id"] == generated


def test_every_api_call_needs_a_token_it_knows(trained: TrainedHome, tmp_path: Path) -> None:
    rt = _runtime(trained, tmp_path / "models")
    user = trained.warm_user()
    with TestClient(create_app(rt.service, tokens=TOKENS)) as anonymous:
        refused = [
            anonymous.get(f"/v1/home-feed/{user}"),
            anonymous.get(
                f"/v1/home-feed/{user}", headers={"Authorization": "Bearer wrong-0123456789abcdef"}
            ),
            anonymous.get(f"/v1/home-feed/{user}", headers={"Authorization": "Basic dXNlcjpwdw=="}),
            anonymous.post("/v1/push/decision", json={"user_id": user}),
        ]
        probes = [anonymous.get(path).status_code for path in ("/healthz", "/readyz", "/metrics")]
        docs = [anonymous.get(path).status_code for path in ("/docs", "/openapi.json", "/redoc")]
        metrics = _samples(anonymous.get("/metrics").text)

    for response in refused:
        assert response.status_code == 401
        assert "Authorization: Bearer" in response.json()["error"]
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert probes == [200, 200, 200]
    assert docs == [401, 401, 401]  # off, and nothing answers a caller without a token
    assert ("fitpulse_http_unauthorized_total", {}, 7.0) in metrics


def test_tokens_rotate_and_docs_open_only_when_asked(trained: TrainedHome, tmp_path: Path) -> None:
    rt = _runtime(trained, tmp_path / "models")
    user = trained.warm_user()
    both = ApiTokens({**TOKENS.digests, **ApiTokens.of({"next": "next-token-0123456789"}).digests})
    with TestClient(create_app(rt.service, tokens=both, docs=True)) as client:
        statuses = [
            client.get(f"/v1/home-feed/{user}", headers={"Authorization": f"Bearer {token}"})
            for token in (API_TOKEN, "next-token-0123456789")
        ]
        spec = client.get("/openapi.json")
    with TestClient(
        create_app(rt.service, tokens=ApiTokens.of({"next": "next-token-0123456789"}))
    ) as client:
        retired = client.get(
            f"/v1/home-feed/{user}", headers={"Authorization": f"Bearer {API_TOKEN}"}
        )

    assert [s.status_code for s in statuses] == [200, 200]
    assert spec.status_code == 200
    assert "/v1/home-feed/{user_id}" in spec.json()["paths"]
    assert retired.status_code == 401


def test_hostile_bodies_get_4xx_with_a_reason(trained: TrainedHome, tmp_path: Path) -> None:
    rt = _runtime(trained, tmp_path / "models")
    json_type = {"Content-Type": "application/json"}
    with authed(create_app(rt.service, push=None, tokens=TOKENS)) as client:
        cases = {
            "too big": client.post(
                "/v1/push/decision", content=b" " * (64 * 1024 + 1), headers=json_type
            ),
            "NaN": client.post("/v1/push/decision", content=b'{"user_id": NaN}', headers=json_type),
            "Infinity": client.post(
                "/v1/push/decision", content=b'{"user_id": "u", "at": Infinity}', headers=json_type
            ),
            "unknown field": client.post("/v1/push/decision", json={"user_id": "u", "send": True}),
            "not JSON": client.post("/v1/push/decision", content=b"{user_id", headers=json_type),
            "empty": client.post("/v1/push/decision", content=b"", headers=json_type),
        }

    expected = {"too big": 413}
    for name, response in cases.items():
        assert response.status_code == expected.get(name, 422), (name, response.text)
        assert response.json()["error"], name


@pytest.mark.parametrize("threads", [1, 2])
def test_a_fault_is_a_counted_500_without_details(
    trained: TrainedHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    """On the event loop (one request thread) and in the thread pool alike."""
    rt = _runtime(trained, tmp_path / "models")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(rt.service, "home_feed", broken)
    app = create_app(rt.service, threads=threads, tokens=TOKENS)
    with TestClient(app, raise_server_exceptions=False, headers=authed(app).headers) as client:
        response = client.get(f"/v1/home-feed/{trained.warm_user()}")
        metrics = _samples(client.get("/metrics").text)

    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}
    assert "secret" not in response.text
    assert (
        "fitpulse_http_server_errors_total",
        {"path": "/v1/home-feed/{user_id}"},
        1.0,
    ) in metrics


def test_unknown_routes_are_404(trained: TrainedHome, tmp_path: Path) -> None:
    rt = _runtime(trained, tmp_path / "models")
    with _client(rt) as client:
        statuses = [
            client.get(path).status_code
            for path in (
                "/v1/home-feeds/usr_0000001",
                "/v2/home-feed/usr_0000001",
                "/v1/home-feed/",
            )
        ]

    assert statuses == [404, 404, 404]


def test_health_readiness_and_metrics(trained: TrainedHome, tmp_path: Path) -> None:
    rt = _runtime(trained, tmp_path / "models")
    with _client(rt) as client:
        health = client.get("/healthz")
        ready = client.get("/readyz")
        _feed(client, trained.warm_user())
        _feed(client, COLD_USER)
        metrics = _samples(client.get("/metrics").text)

    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert body["models"]["champion"] == {
        "version": "1",
        "loaded": True,
        "index": True,
        "problem": None,
    }
    assert body["as_of"] == trained.as_of.isoformat()
    assert body["catalog_items"] == len(trained.catalog)
    for stage in STAGES:
        assert ("fitpulse_feed_stage_seconds_count", {"stage": stage}, 2.0) in metrics
        buckets = [
            s
            for s in metrics
            if s[0] == "fitpulse_feed_stage_seconds_bucket" and s[1]["stage"] == stage
        ]
        assert len(buckets) >= 10
        assert (
            "fitpulse_feed_stage_seconds_bucket",
            {"stage": stage, "le": "+Inf"},
            2.0,
        ) in metrics
    assert ("fitpulse_model_info", {"alias": "champion", "version": "1"}, 1.0) in metrics
    assert ("fitpulse_feed_requests_total", {"variant": "default", "status": "200"}, 2.0) in metrics
    assert ("fitpulse_feed_cold_users_total", {}, 1.0) in metrics
    assert not [s for s in metrics if s[0] == "fitpulse_feed_fallbacks_total"]


def _rollback(home: ProjectHome) -> None:
    registry_workflow(home).rollback(HOME_RANKER_MODEL, "oncall", "serving test")


def test_champion_moves_are_picked_up_live(trained: TrainedHome, tmp_path: Path) -> None:
    registry = RegistryClient(trained.home.mlflow_tracking_uri)
    rt = _runtime(trained, tmp_path / "models", poll_s=3600.0)
    assert rt.watcher.served_versions() == {"champion": "1"}
    # Version 2: version 1's model registered again (what a retraining on the same days
    # registers, without the training).
    assert register_copy(trained.home, "1") == "2"
    user = trained.warm_user()
    try:
        with _client(rt) as client:
            assert _feed(client, user)["model_version"] == "1"
            # An alias moved in MLflow is not followed: version 1 is the audited champion.
            registry.set_alias(HOME_RANKER_MODEL, "champion", "2")
            assert rt.watcher.check_once() is False
            assert _feed(client, user)["model_version"] == "1"
            registry.set_alias(HOME_RANKER_MODEL, "champion", "1")
            make_champion(trained.home, "2")
            assert rt.watcher.check_once() is True
            body = _feed(client, user)
            ready = client.get("/readyz").json()
        assert body["model_version"] == "2"
        assert body["fallback"] is None
        assert ready["models"]["champion"]["version"] == "2"

        background = _runtime(trained, tmp_path / "models", poll_s=0.2)
        assert background.watcher.served_versions() == {"champion": "2"}
        seen: list[tuple[int, str | None]] = []
        errors: list[BaseException] = []
        stop = threading.Event()
        with _client(background) as client:

            def fire() -> None:
                try:
                    while not stop.is_set():
                        r = client.get(f"/v1/home-feed/{user}")
                        seen.append((r.status_code, r.headers.get("x-model-version")))
                except BaseException as exc:  # a dropped request must fail the test
                    errors.append(exc)

            thread = threading.Thread(target=fire)
            thread.start()
            warmup = time.monotonic() + 10.0
            while len(seen) < 3 and not errors and time.monotonic() < warmup:
                time.sleep(0.02)
            _rollback(trained.home)
            deadline = time.monotonic() + 10.0
            version = "2"
            while version != "1" and time.monotonic() < deadline:
                time.sleep(0.1)
                version = client.get("/readyz").json()["models"]["champion"]["version"]
            time.sleep(0.3)
            stop.set()
            thread.join(timeout=10.0)
    finally:
        if registry.alias_version(HOME_RANKER_MODEL, "champion") != "1":
            _rollback(trained.home)

    assert version == "1", "the watcher did not pick up the rollback within 10 s"
    assert not errors
    assert seen
    assert all(status == 200 for status, _ in seen)
    versions = [v for _, v in seen]
    assert versions[-1] == "1"
    # One thread's requests are sequential: once version 1 answered, version 2 never does again.
    first_new = versions.index("1")
    assert first_new >= 3, "no request was served by version 2 before the move"
    assert set(versions[:first_new]) <= {"2"}
    assert set(versions[first_new:]) == {"1"}


def test_a_blend_champion_computes_features_only_for_the_logged_sample(
    trained: TrainedHome, tmp_path: Path
) -> None:
    served: dict[float, FeedResponse] = {}
    for share in (0.0, 1.0):
        rt = _runtime(
            trained,
            tmp_path / f"models-{share}",
            config=dataclasses.replace(ROOMY, feature_log_share=share),
        )
        champion = rt.service.state.models["champion"]
        assert champion.model is not None
        assert champion.model.scorer == "blend"
        assert champion.compiled is None
        served[share] = rt.service.home_feed(trained.warm_user(), request_id="req-blend-0001")

    unlogged, logged = served[0.0], served[1.0]
    assert unlogged.items == logged.items
    assert unlogged.ranked
    assert logged.ranked
    assert "als_score" not in unlogged.served.columns
    assert "als_score" in logged.served.columns
    pd.testing.assert_frame_equal(unlogged.served, logged.served[list(unlogged.served.columns)])


def test_served_feeds_are_the_offline_feeds(trained: TrainedHome, tmp_path: Path) -> None:
    """The request path and ``build_feeds`` are one pipeline: same inputs, same feed.

    The service serves at the online snapshot's time (the ``snapshot`` clock), from what the
    online store materialized; offline builds the same members' feeds as of that time from the
    clean events before it. The most and the least engaged members, of every level.
    """
    rt = _runtime(trained, tmp_path / "models")
    champion = rt.service.state.models["champion"]
    assert champion.model is not None
    pseudonymizer = trained.pseudonymizer
    inputs = load_feature_inputs(
        trained.store, load_catalog(trained.store), load_profiles(trained.store, pseudonymizer)
    )
    inputs = FeatureInputs(
        events=inputs.events[inputs.events["ts"] < trained.as_of].reset_index(drop=True),
        catalog=inputs.catalog,
        profiles=inputs.profiles,
    )
    ranked = trained.users()
    raw = [*ranked[:6], *ranked[-4:]]
    pids = [trained.pseudo(u) for u in raw]
    profiles = inputs.profiles.set_index("user_id")
    users = pd.DataFrame(
        {
            "user_id": pids,
            "fitness_level": [profiles["fitness_level"].get(p, UNKNOWN) for p in pids],
            "region": [profiles["region"].get(p, UNKNOWN) for p in pids],
        }
    )
    offline = build_feeds(champion.model, inputs, users, trained.as_of).feeds
    expected = offline.groupby("user_id")["item_id"].agg(list).to_dict()

    for user, pid in zip(raw, pids, strict=True):
        response = rt.service.home_feed(user, request_id=f"req-parity-{pid[:8]}")
        assert response.fallbacks == []
        assert [item.id for item in response.items] == expected[pid], user


def test_exposures_and_served_features_are_logged(trained: TrainedHome, tmp_path: Path) -> None:
    rt = _runtime(
        trained, tmp_path / "models", config=dataclasses.replace(ROOMY, feature_log_share=1.0)
    )
    users = [
        trained.warm_user(),
        trained.warm_user("beginner"),
        trained.warm_user("advanced"),
        *trained.users("intermediate")[-3:],
        COLD_USER,
    ]
    request_ids = {f"req-log-{i:04d}-{uuid.uuid4().hex[:8]}": u for i, u in enumerate(users)}
    with _client(rt) as client:
        bodies = {
            rid: _feed(client, user, **{"X-Request-ID": rid}) for rid, user in request_ids.items()
        }
    assert all(b["fallback"] is None for b in bodies.values())

    records = _served_records(trained, set(request_ids))
    assert len(records) == sum(len(b["items"]) for b in bodies.values())
    day = trained.as_of.date()
    for rec in records:
        client_id = rec["client_request_id"]
        assert rec["_key"].startswith(f"{layout.landing_events_prefix(day)}")
        assert rec["event_type"] == "impression"
        assert rec["user_id"] == request_ids[client_id]
        assert rec["request_id"] == bodies[client_id]["request_id"]  # the service's own id
        assert rec["event_id"] == f"{rec['request_id']}-{rec['position']}"
        assert rec["item_id"] == bodies[client_id]["items"][rec["position"]]["id"]
        assert rec["payload"]["variant"] == "default"
        assert rec["payload"]["experiment"] is None
        assert rec["payload"]["model_version"] == "1"
        assert rec["payload"]["known_user"] is (rec["user_id"] != COLD_USER)
        assert pd.Timestamp(rec["ts"]) == trained.as_of
    for rid, body in bodies.items():
        positions = sorted(r["position"] for r in records if r["client_request_id"] == rid)
        assert positions == list(range(len(body["items"])))

    ingested = ingest_day(trained.store, day, trained.pseudonymizer)
    served_ids = {body["request_id"]: rid for rid, body in bodies.items()}
    unknown = [r for r in records if r["user_id"] == COLD_USER]
    assert unknown
    assert ingested.read >= len(records)
    # A made-up id is served (cold start), but its exposures never become training data (other
    # tests of this module served it on the same day too).
    assert set(ingested.reasons) == {"unknown_user:user_id"}
    cold_id = bodies[next(rid for rid, u in request_ids.items() if u == COLD_USER)]["request_id"]
    quarantined = ingested.quarantine["raw"].str.contains(cold_id, regex=False)
    assert int(quarantined.sum()) == len(unknown)
    assert ingested.duplicates == 0
    assert ingested.accepted == ingested.read - ingested.quarantined
    mine = ingested.events[ingested.events["request_id"].isin(list(served_ids))]
    assert len(mine) == len(records) - len(unknown)
    assert set(mine["event_type"]) == {"impression"}
    expected_pseudo = {trained.pseudo(u) for u in users}
    assert set(mine["user_id"]) == expected_pseudo - {trained.pseudo(COLD_USER)}

    rows = read_served_features(trained.store, trained.as_of, trained.as_of + pd.Timedelta(days=1))
    rows = rows[rows["request_id"].isin(list(served_ids))].reset_index(drop=True)
    assert len(rows) == len(records)
    for col in ("request_id", "user_id", "fitness_level", "as_of", "item_id", "rank", "score"):
        assert col in rows.columns
    assert "source" in rows.columns
    assert set(feature_columns(include_als=True)) <= set(rows.columns)
    assert set(rows["user_id"]) == expected_pseudo
    assert rows["user_id"].str.startswith(PSEUDONYM_PREFIX).all()
    assert not set(rows["user_id"]) & set(users), "a raw user id reached the served-feature log"
    levels = dict(zip(trained.profiles["user_id"], trained.profiles["fitness_level"], strict=True))
    by_request = rows.groupby("request_id")["fitness_level"].first()
    for rid, level in by_request.items():
        assert level == levels.get(request_ids[served_ids[str(rid)]], "unknown")
    assert (pd.to_datetime(rows["as_of"], utc=True) == trained.as_of).all()

    snapshot = load_asset_value(trained.store, "training_snapshot")
    skew = compute_skew(rows, snapshot.inputs, feature_columns(include_als=False)).set_index(
        "feature"
    )
    for col in (*USER_FEATURES, *ITEM_FEATURES):
        assert skew.at[col, "mismatch_rate"] == 0.0, (col, skew.loc[col].to_dict())
    for col in CROSS_FEATURES:
        assert skew.at[col, "mismatch_rate"] == 0.0, (col, skew.loc[col].to_dict())


EXPERIMENT = """
[experiment]
name = "rerank-diversity"
salt = "2026-11-diversity"

[[experiment.variants]]
name = "control"
share = 0.5
model_alias = "champion"

[[experiment.variants]]
name = "treatment"
share = 0.5
model_alias = "champion"
rerank = { max_per_category = 2 }
"""


def test_experiment_variants_are_sticky_and_apply_their_rerank(
    trained: TrainedHome, tmp_path: Path
) -> None:
    path = tmp_path / "experiment.toml"
    path.write_text(EXPERIMENT)
    rt = _runtime(trained, tmp_path / "models", experiment_file=path)
    users = trained.users()[:200]
    request_ids = {f"req-exp-{i:04d}-{uuid.uuid4().hex[:8]}": u for i, u in enumerate(users)}
    with _client(rt) as client:
        bodies = {
            rid: _feed(client, user, **{"X-Request-ID": rid}) for rid, user in request_ids.items()
        }
        again = {user: _feed(client, user)["variant"] for user in users[:20]}

    variant = {request_ids[rid]: body["variant"] for rid, body in bodies.items()}
    assert all(again[u] == variant[u] for u in again)
    assert all(variant[u] == rt.service.assign(u).variant for u in users)
    counts = Counter(variant.values())
    assert set(counts) == {"control", "treatment"}
    # Binomial(200, 0.5): mean 100, sd 7.1; 4 sd either side.
    assert 72 <= counts["treatment"] <= 128, counts
    categories = trained.categories
    most_alike = {
        rid: max(Counter(categories[i["id"]] for i in body["items"]).values())
        for rid, body in bodies.items()
    }
    treatment = [rid for rid, body in bodies.items() if body["variant"] == "treatment"]
    control = [rid for rid, body in bodies.items() if body["variant"] == "control"]
    assert all(most_alike[rid] <= 2 for rid in treatment)
    assert any(most_alike[rid] > 2 for rid in control), "the override made no difference"
    assert all(bodies[rid]["fallback"] is None for rid in request_ids)

    records = _served_records(trained, set(request_ids))
    assert len(records) == sum(len(b["items"]) for b in bodies.values())
    for rec in records:
        assert rec["payload"]["experiment"] == "rerank-diversity"
        assert rec["payload"]["variant"] == bodies[rec["client_request_id"]]["variant"]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("share = 0.5\nmodel_alias", "share = 0.4\nmodel_alias", "variant shares sum to 0.9"),
        ("max_per_category = 2", "max_per_category = 2, per_page = 3", "unknown rerank settings"),
        ('model_alias = "champion"\nrerank', 'model_alias = "staging"\nrerank', "model_alias"),
    ],
)
def test_bad_experiment_files_are_refused(
    trained: TrainedHome, tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in EXPERIMENT
    path = tmp_path / "experiment.toml"
    path.write_text(EXPERIMENT.replace(old, new, 1))
    with pytest.raises(ValueError, match=message) as raised:
        _runtime(trained, tmp_path / "models", experiment_file=path)
    assert str(path) in str(raised.value)


def test_an_erasure_rewrite_reaches_a_running_server(trained: TrainedHome, tmp_path: Path) -> None:
    # Runs last in this module: it rewrites version 1 without one member.
    cache = tmp_path / "models"
    rt = _runtime(trained, cache)
    before = rt.service.state.models["champion"]
    assert before.model is not None
    member = str(before.model.als.user_ids[0])
    eraser = RegistryEraser(
        ModelPromotion(RegistryClient(trained.home.mlflow_tracking_uri), _audit(trained.home)),
        cache,
    )

    rewritten = eraser.forget(member)
    reloaded = rt.watcher.check_once()

    after = rt.service.state.models["champion"]
    assert sorted(rewritten) == ["1", "2"]  # every version that knew the member
    assert reloaded, rt.watcher.last_error
    assert after.version == "1"
    assert after.model is not None
    assert after.model.als.user_row(member) is None
    assert len(after.model.als.user_ids) == len(before.model.als.user_ids) - 1
    assert find_traces(cache, [member]) == {}
    assert not rt.watcher.check_once()


def _shared_dirty_mib(pid: int) -> float:
    """Anonymous memory ``pid`` shares with another process (``smaps_rollup``), in MiB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Shared_Dirty:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no Shared_Dirty in /proc/{pid}/smaps_rollup")


def test_fitpulse_serve_answers_from_its_worker_processes(trained: TrainedHome) -> None:
    import httpx

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    fitpulse = str(Path(sys.executable).with_name("fitpulse"))
    command = [fitpulse, "serve", "--home", str(trained.home.root), "--processes", "2"]
    server = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.communicate()[0][-3000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "fitpulse serve never became ready"
            time.sleep(1)
        token = trained.home.local_token_file.read_text().strip()
        feed = httpx.get(
            f"{base}/v1/home-feed/{trained.warm_user()}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        workers = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        shared = [_shared_dirty_mib(int(pid)) for pid in workers]
    finally:
        server.terminate()
        output = server.communicate(timeout=60)[0]

    assert feed.status_code == 200, feed.text
    assert feed.json()["model_version"] == "1"
    assert len(feed.json()["items"]) >= 10
    # gunicorn's master forks the two workers after the models load: each shares the
    # master's heap (a spawned worker, which loads its own copy, shares none of it).
    assert len(workers) == 2
    assert min(shared) >= 64, shared
    assert "champion: version 1" in output
    assert "with 2 process(es) x 1 thread(s)" in output
    assert server.returncode == 0


def test_a_version_that_stays_broken_is_retried_with_a_backoff_in_polls(
    trained: TrainedHome, tmp_path: Path
) -> None:
    cache = tmp_path / "models"
    rt = _damaged_runtime(trained, tmp_path, _corrupt_two_tower_index)
    assert rt.service.state.models["champion"].problem is not None

    attempts = []
    for _ in range(11):
        rt.watcher.check_once()
        attempts.append(rt.watcher.attempts)
    # Tried at polls 1, 3, 6 and 11: 1, 2 then 4 polls skipped in between.
    assert attempts == [1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 4]
    assert rt.service.state.models["champion"].problem is not None

    # A moved alias is acted on at once, whatever the backoff: here a broken new version.
    rt.watcher.loader.source = _BrokenVersionSource(
        trained.home.mlflow_tracking_uri, cache, _audit(trained.home)
    )
    rt.watcher.check_once()
    assert rt.watcher.attempts == 5
    assert "version 99 failed" in (rt.watcher.last_error or "")
    # The artifacts are fixed: the next attempt (the alias is back, so at once) heals.
    rt.watcher.loader.source = RegistryModelSource(
        trained.home.mlflow_tracking_uri, cache, _audit(trained.home)
    )
    assert rt.watcher.check_once() is True
    assert rt.service.state.ready
    assert rt.service.state.models["champion"].problem is None
    assert rt.watcher.check_once() is False
    assert rt.watcher.attempts == 6
