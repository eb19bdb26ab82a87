"""Typed access to MLflow tracking and the model registry.

Everything else reaches MLflow through this module (ruff bans ``import mlflow`` elsewhere).
Tracking goes through the active run that dagster-mlflow's resource starts for each Dagster run;
stage prefixes (``als.factors``, ``ranker.valid_ndcg_at_10``) keep the stages of one run apart.
"""

from __future__ import annotations

import importlib.metadata
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import mlflow
from mlflow.tracking import MlflowClient

from model_registry.names import EXPERIMENT, HOME_RANKER_MODEL, PUSH_POLICY_MODEL

__all__ = [
    "EXPERIMENT",
    "HOME_RANKER_MODEL",
    "PUSH_POLICY_MODEL",
    "RegisteredVersion",
    "RegistryClient",
]

BUNDLE_DIR: Final = "feed_bundle"
"""Run artifact folder holding the whole feed model (retrieval artifacts, popularity, ranker)."""
BUNDLE_TAG: Final = "artifacts.bundle_uri"


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version."""

    name: str
    version: str
    run_id: str
    model_uri: str
    tags: dict[str, str]
    aliases: tuple[str, ...] = ()
    created_at_ms: int = 0


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
    text_artifacts: Mapping[str, str | bytes] | None = None,
) -> None:
    """Log a stage's params, metrics and small artifacts (text, or bytes such as PNG plots).

    Args:
        tracker: dagster-mlflow's resource (it proxies the ``mlflow`` module).
        stage: prefix of every key and the artifact folder (``als``, ``ranker``, ...).
        params: hyper-parameters.
        metrics: numbers; non-finite values are skipped (MLflow rejects NaN).
        text_artifacts: file name -> content (str or bytes), logged under ``<stage>/``.
    """
    tracker.log_params({f"{stage}.{k}": v for k, v in params.items()})
    tracker.log_metrics({f"{stage}.{k}": v for k, v in _finite(metrics).items()})
    if text_artifacts:
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in text_artifacts.items():
                path = Path(tmp) / name
                if isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    path.write_text(content)
                tracker.log_artifact(str(path), artifact_path=stage)


def log_trials(tracker: Any, stage: str, trials: Sequence[Mapping[str, Any]]) -> list[str]:
    """Log each trial of a search as a nested run of the active run.

    Args:
        tracker: dagster-mlflow's resource (it proxies the ``mlflow`` module).
        stage: tag ``fitpulse.stage`` of every nested run (``tuning``).
        trials: records with ``name``, ``params`` and ``metrics`` (``trial_records``).

    Returns:
        The nested runs' ids, in trial order.
    """
    ids = []
    for trial in trials:
        with tracker.start_run(run_name=str(trial["name"]), nested=True) as run:
            tracker.set_tag("fitpulse.stage", stage)
            tracker.log_params(dict(trial["params"]))
            tracker.log_metrics(_finite(dict(trial["metrics"])))
            ids.append(str(run.info.run_id))
    return ids


def active_run_id(tracker: Any) -> str:
    """Id of the MLflow run the tracker has made active."""
    run = tracker.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: is the 'mlflow' resource configured?")
    return str(run.info.run_id)


MODEL_PACKAGES = ("mlflow", "lightgbm", "numpy", "pandas", "scikit-learn", "scipy")
"""What a logged booster needs to load and score: the packages MLflow's own inference finds."""


def model_requirements() -> list[str]:
    """``MODEL_PACKAGES`` pinned at their installed versions, for the logged model's environment.

    Given explicitly: without them MLflow infers the requirements by loading the model in a
    subprocess, which took 5.4 s of every registration here for the same list.
    """
    return [f"{name}=={importlib.metadata.version(name)}" for name in MODEL_PACKAGES]


GOVERNANCE_NOTE = (
    "Governed by FitPulse: the `champion` and `challenger` aliases move only through the "
    "audited promotion workflow (gate, review and promotion from the Dagster UI's registry "
    "jobs or `fitpulse registry`). An alias set or moved on this page is never served: the "
    "services follow the signed audit log, not MLflow's aliases. For fitpulse-home-ranker the "
    "promotion sensor also puts such an alias back and raises an alert (`registry_audit_intact`)."
)
"""The registered model's MLflow description: MLflow's alias editor bypasses the gate."""


def register_lightgbm(
    booster: Any,
    model_name: str,
    tags: Mapping[str, Any],
    bundle_files: Mapping[str, bytes] | None = None,
    artifact_name: str = "home_ranker",
    description: str | None = None,
) -> RegisteredVersion:
    """Log a LightGBM booster to the active run and register it as a new version.

    The booster (not the sklearn ``LGBMRanker`` wrapper) is logged: MLflow 3.17's skops
    serialization refuses the wrapper's types. ``tags`` become version tags (stringified).
    ``bundle_files`` (file name -> bytes) are logged under ``feed_bundle/`` of the same run and
    the version's ``artifacts.bundle_uri`` tag points at them, so the version carries everything
    needed to rebuild its feed, not only the ranker. ``artifact_name`` names the logged
    booster in the run. ``description`` (Markdown, shown by MLflow's UI) goes on the version.
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run to log the model to")
    str_tags = {k: str(v) for k, v in tags.items()}
    if bundle_files:
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in bundle_files.items():
                (Path(tmp) / name).write_bytes(data)
            mlflow.log_artifacts(tmp, artifact_path=BUNDLE_DIR)
        str_tags[BUNDLE_TAG] = f"runs:/{run.info.run_id}/{BUNDLE_DIR}"
    info = mlflow.lightgbm.log_model(
        booster,
        name=artifact_name,
        registered_model_name=model_name,
        pip_requirements=model_requirements(),
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in str_tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    if description:
        client.update_model_version(model_name, version, description=description)
    client.update_registered_model(model_name, description=GOVERNANCE_NOTE)
    created = client.get_model_version(model_name, version).creation_timestamp
    return RegisteredVersion(
        model_name,
        version,
        str(info.run_id),
        info.model_uri,
        str_tags,
        created_at_ms=int(created or 0),
    )


class RegistryClient:
    """Typed access to registered versions, their tags and aliases."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def versions(self, model_name: str) -> list[RegisteredVersion]:
        """Every version of ``model_name``, newest first (empty if the model is unknown)."""
        found = self._client.search_model_versions(f"name='{model_name}'")
        # Search results carry no aliases in MLflow 3.17; read them from the model once.
        by_version: dict[str, list[str]] = {}
        for alias, version in self.aliases(model_name).items():
            by_version.setdefault(version, []).append(alias)
        out = [
            RegisteredVersion(
                v.name,
                str(v.version),
                str(v.run_id),
                str(v.source),
                dict(v.tags),
                tuple(sorted(by_version.get(str(v.version), []))),
                int(v.creation_timestamp or 0),
            )
            for v in found
        ]
        return sorted(out, key=lambda v: int(v.version), reverse=True)

    def latest(self, model_name: str) -> RegisteredVersion | None:
        """The newest version, or None when nothing is registered yet."""
        versions = self.versions(model_name)
        return versions[0] if versions else None

    def version(self, model_name: str, version: str) -> RegisteredVersion:
        """One version.

        Raises:
            LookupError: when the model or the version does not exist.
        """
        versions = self.versions(model_name)
        for v in versions:
            if v.version == str(version):
                return v
        known = [v.version for v in versions]
        raise LookupError(
            f"model {model_name!r} has no version {version!r}"
            + (f" (versions: {', '.join(known)})" if known else " (nothing registered)")
        )

    def aliases(self, model_name: str) -> dict[str, str]:
        """Alias -> version of ``model_name`` (empty when the model does not exist)."""
        found = self._client.search_registered_models(f"name='{model_name}'")
        if not found:
            return {}
        return {str(k): str(v) for k, v in (found[0].aliases or {}).items()}

    def alias_version(self, model_name: str, alias: str) -> str | None:
        """The version ``alias`` points at, or None."""
        return self.aliases(model_name).get(alias)

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (moving it if it pointed elsewhere)."""
        self._client.set_registered_model_alias(model_name, alias, str(version))

    def delete_alias(self, model_name: str, alias: str) -> None:
        """Remove ``alias`` if it exists."""
        if alias in self.aliases(model_name):
            self._client.delete_registered_model_alias(model_name, alias)

    def set_tags(self, model_name: str, version: str, tags: Mapping[str, Any]) -> None:
        """Set (overwrite) version tags; values are stringified."""
        for key, value in tags.items():
            self._client.set_model_version_tag(model_name, str(version), key, str(value))

    def download_bundle(self, model_name: str, version: str, dst: Path) -> Path:
        """Download the version's feed bundle into ``dst`` and return the bundle folder.

        Raises:
            LookupError: when the version has no bundle (registered before bundles existed).
        """
        registered = self.version(model_name, version)
        uri = registered.tags.get(BUNDLE_TAG)
        if not uri:
            raise LookupError(
                f"{model_name} version {version} has no {BUNDLE_TAG} tag: it cannot be rebuilt"
            )
        dst.mkdir(parents=True, exist_ok=True)
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(dst), tracking_uri=self.tracking_uri
        )
        return Path(path)

    def overwrite_bundle(self, run_id: str, folder: Path) -> None:
        """Log ``folder``'s files over the feed bundle of run ``run_id`` (an erasure's rewrite)."""
        self._client.log_artifacts(run_id, str(folder), artifact_path=BUNDLE_DIR)

    def download_artifacts(self, model_name: str, version: str, dst: Path) -> Path:
        """Download what the version serves from: its bundle, else its model source.

        This is what the audit log's ``artifact_digest`` covers.
        """
        registered = self.version(model_name, version)
        if registered.tags.get(BUNDLE_TAG):
            return self.download_bundle(model_name, version, dst)
        dst.mkdir(parents=True, exist_ok=True)
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=registered.model_uri, dst_path=str(dst), tracking_uri=self.tracking_uri
        )
        return Path(path)
