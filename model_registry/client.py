"""Typed access to MLflow tracking and the model registry.

Everything else reaches MLflow through this module (ruff bans ``import mlflow`` elsewhere).
Tracking goes through the active run that dagster-mlflow's resource starts for each Dagster run;
stage prefixes (``als.factors``, ``ranker.valid_ndcg_at_10``) keep the stages of one run apart.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import mlflow
from mlflow.tracking import MlflowClient

HOME_RANKER_MODEL: Final = "fitpulse-home-ranker"
EXPERIMENT: Final = "fitpulse-home-feed"


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version."""

    name: str
    version: str
    run_id: str
    model_uri: str
    tags: dict[str, str]


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> str:
    """Create the experiment with an explicit artifact location if it does not exist.

    Without an explicit location MLflow puts artifacts under ``./mlruns`` of whatever the
    working directory is; returns the experiment id.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    if artifact_location and "://" not in artifact_location:
        Path(artifact_location).mkdir(parents=True, exist_ok=True)
        artifact_location = Path(artifact_location).resolve().as_uri()
    return str(client.create_experiment(name, artifact_location=artifact_location))


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def log_stage(
    tracker: Any,
    stage: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    text_artifacts: Mapping[str, str] | None = None,
) -> None:
    """Log a training stage's params, metrics and small text artifacts to the active run.

    Args:
        tracker: dagster-mlflow's resource (it proxies the ``mlflow`` module).
        stage: prefix of every key and the artifact folder (``als``, ``ranker``, ...).
        params: hyper-parameters.
        metrics: numbers; non-finite values are skipped (MLflow rejects NaN).
        text_artifacts: file name -> content, logged under ``<stage>/``.
    """
    tracker.log_params({f"{stage}.{k}": v for k, v in params.items()})
    tracker.log_metrics({f"{stage}.{k}": v for k, v in _finite(metrics).items()})
    if text_artifacts:
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in text_artifacts.items():
                path = Path(tmp) / name
                path.write_text(content)
                tracker.log_artifact(str(path), artifact_path=stage)


def active_run_id(tracker: Any) -> str:
    """Id of the MLflow run the tracker has made active."""
    run = tracker.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: is the 'mlflow' resource configured?")
    return str(run.info.run_id)


def register_lightgbm(booster: Any, model_name: str, tags: Mapping[str, Any]) -> RegisteredVersion:
    """Log a LightGBM booster to the active run and register it as a new version.

    The booster (not the sklearn ``LGBMRanker`` wrapper) is logged: MLflow 3.17's skops
    serialization refuses the wrapper's types. ``tags`` become version tags (stringified).
    """
    info = mlflow.lightgbm.log_model(booster, name="home_ranker", registered_model_name=model_name)
    version = str(info.registered_model_version)
    client = MlflowClient()
    str_tags = {k: str(v) for k, v in tags.items()}
    for key, value in str_tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    return RegisteredVersion(model_name, version, str(info.run_id), info.model_uri, str_tags)


class RegistryClient:
    """Read access to registered versions."""

    def __init__(self, tracking_uri: str) -> None:
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def versions(self, model_name: str) -> list[RegisteredVersion]:
        """Every version of ``model_name``, newest first (empty if the model is unknown)."""
        found = self._client.search_model_versions(f"name='{model_name}'")
        out = [
            RegisteredVersion(v.name, str(v.version), str(v.run_id), str(v.source), dict(v.tags))
            for v in found
        ]
        return sorted(out, key=lambda v: int(v.version), reverse=True)

    def latest(self, model_name: str) -> RegisteredVersion | None:
        """The newest version, or None when nothing is registered yet."""
        versions = self.versions(model_name)
        return versions[0] if versions else None
