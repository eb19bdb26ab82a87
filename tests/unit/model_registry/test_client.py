from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from model_registry.client import (
    MODEL_PACKAGES,
    RegisteredVersion,
    RegistryClient,
    ensure_experiment,
    register_lightgbm,
)

MODEL = "test-home-ranker"


@dataclass(frozen=True)
class Tracking:
    uri: str
    root: Path
    experiment_id: str


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracking]:
    """One SQLite tracking DB per module (creating it runs every migration, which is slow).

    The global tracking URI (and the env var MLflow mirrors it to) is restored afterwards, so
    no other test, and nothing else in the session, writes into this DB or ``./mlruns``.
    """
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            experiment_id = ensure_experiment(uri, "registry-test", (root / "artifacts").as_uri())
            yield Tracking(uri=uri, root=root, experiment_id=experiment_id)
        finally:
            mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def registered(tracking: Tracking) -> list[RegisteredVersion]:
    """Two versions of one model, each logged from its own run."""
    rng = np.random.default_rng(7)
    features = rng.normal(size=(64, 3))
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 4, "verbose": -1, "num_threads": 1},
        lgb.Dataset(features, (features[:, 0] > 0).astype(int)),
        num_boost_round=3,
    )
    versions = []
    for k, ndcg in enumerate([0.41, 0.45]):
        mlflow.start_run(experiment_id=tracking.experiment_id)
        try:
            versions.append(
                register_lightgbm(booster, MODEL, {"ndcg_at_10": ndcg, "snapshot": f"s{k}"})
            )
        finally:
            mlflow.end_run()
    return versions


def test_ensure_experiment_uses_given_artifact_location(tracking: Tracking) -> None:
    experiment = MlflowClient(tracking_uri=tracking.uri).get_experiment(tracking.experiment_id)

    assert experiment.name == "registry-test"
    assert experiment.artifact_location == (tracking.root / "artifacts").as_uri()


def test_ensure_experiment_is_idempotent(tracking: Tracking) -> None:
    again = ensure_experiment(tracking.uri, "registry-test", (tracking.root / "other").as_uri())

    assert again == tracking.experiment_id
    experiment = MlflowClient(tracking_uri=tracking.uri).get_experiment(again)
    assert experiment.artifact_location == (tracking.root / "artifacts").as_uri()


def test_ensure_experiment_turns_plain_path_into_file_uri(tracking: Tracking) -> None:
    plain = tracking.root / "plain" / "artifacts"

    experiment_id = ensure_experiment(tracking.uri, "plain-path", str(plain))

    assert experiment_id != tracking.experiment_id
    assert plain.is_dir()
    experiment = MlflowClient(tracking_uri=tracking.uri).get_experiment(experiment_id)
    assert experiment.artifact_location == plain.resolve().as_uri()


def test_register_lightgbm_creates_numbered_versions_with_tags(
    registered: list[RegisteredVersion], tracking: Tracking
) -> None:
    first, second = registered

    assert (first.name, first.version) == (MODEL, "1")
    assert (second.name, second.version) == (MODEL, "2")
    assert first.tags == {"ndcg_at_10": "0.41", "snapshot": "s0"}
    assert second.tags == {"ndcg_at_10": "0.45", "snapshot": "s1"}
    assert first.run_id != second.run_id
    for version in registered:
        run = MlflowClient(tracking_uri=tracking.uri).get_run(version.run_id)
        assert run.info.experiment_id == tracking.experiment_id


def test_registered_model_loads_and_predicts(
    registered: list[RegisteredVersion], tracking: Tracking
) -> None:
    loaded = mlflow.lightgbm.load_model(registered[1].model_uri)

    assert loaded.predict(np.zeros((2, 3))).shape == (2,)
    artifacts = tracking.root / "artifacts"
    assert any(p.name == "MLmodel" for p in artifacts.rglob("MLmodel"))


def test_registered_model_pins_its_requirements(
    registered: list[RegisteredVersion], tracking: Tracking
) -> None:
    requirements = mlflow.pyfunc.get_model_dependencies(registered[0].model_uri)

    pinned = Path(requirements).read_text().split()

    assert pinned == [f"{p}=={importlib.metadata.version(p)}" for p in MODEL_PACKAGES]
    assert pinned[1].startswith("lightgbm==")


def test_registry_client_versions_newest_first(
    registered: list[RegisteredVersion], tracking: Tracking
) -> None:
    client = RegistryClient(tracking.uri)

    versions = client.versions(MODEL)

    assert [v.version for v in versions] == ["2", "1"]
    assert versions == [registered[1], registered[0]]
    assert client.latest(MODEL) == registered[1]


def test_registry_client_unknown_model(tracking: Tracking) -> None:
    client = RegistryClient(tracking.uri)

    assert client.versions("no-such-model") == []
    assert client.latest("no-such-model") is None
