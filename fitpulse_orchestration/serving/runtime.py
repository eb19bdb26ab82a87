"""Wiring the feed service for a profile: stores, registry, experiment, logs.

``local`` (default): the project home's object store, SQLite online store, MLflow registry and
key file. ``production``: the same environment variables as the Dagster definitions
(``FITPULSE_S3_BUCKET``, ``FITPULSE_S3_PREFIX``, ``FITPULSE_S3_ENDPOINT_URL``,
``FITPULSE_REDIS_URL``, ``MLFLOW_TRACKING_URI``, ``FITPULSE_PSEUDONYM_SECRET``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fitpulse_orchestration.events.pseudonymize import Pseudonymizer, load_or_create_key
from fitpulse_orchestration.serving.experiments import Experiment, load_experiment
from fitpulse_orchestration.serving.feed_service import FeedService, ServingConfig
from fitpulse_orchestration.serving.loading import ModelSource, ModelWatcher, ServingLoader
from fitpulse_orchestration.serving.logs import ServedLog
from fitpulse_orchestration.serving.online_store import (
    OnlineFeatureStore,
    RedisOnlineStore,
    SQLiteOnlineStore,
)
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore, ObjectStore, S3ObjectStore


@dataclass
class ServiceRuntime:
    """A feed service with its reload watcher and served log (start both with the app)."""

    service: FeedService
    watcher: ModelWatcher
    served_log: ServedLog
    loader: ServingLoader


@dataclass(frozen=True)
class Backends:
    """The external systems the service reads and writes."""

    store: ObjectStore
    online: OnlineFeatureStore
    tracking_uri: str
    pseudonymizer: Pseudonymizer


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ValueError(f"the production profile needs the environment variable {name}")
    return value


def profile_backends(home: ProjectHome, profile: str) -> Backends:
    """The backends of ``profile`` (``local`` or ``production``)."""
    if profile == "local":
        home.create()
        return Backends(
            store=LocalObjectStore(home.store),
            online=SQLiteOnlineStore(home.online_store),
            tracking_uri=home.mlflow_tracking_uri,
            pseudonymizer=Pseudonymizer.from_secret(load_or_create_key(home.pseudonym_key_file)),
        )
    if profile == "production":
        return Backends(
            store=S3ObjectStore(
                _env("FITPULSE_S3_BUCKET"),
                os.environ.get("FITPULSE_S3_PREFIX", ""),
                endpoint_url=os.environ.get("FITPULSE_S3_ENDPOINT_URL") or None,
            ),
            online=RedisOnlineStore(_env("FITPULSE_REDIS_URL"), timeout_s=0.05),
            tracking_uri=_env("MLFLOW_TRACKING_URI"),
            pseudonymizer=Pseudonymizer.from_secret(_env("FITPULSE_PSEUDONYM_SECRET")),
        )
    raise ValueError(f"unknown profile {profile!r}; use 'local' or 'production'")


def build_runtime(
    backends: Backends,
    model_cache: Path,
    clock: str = "snapshot",
    experiment_file: Path | None = None,
    config: ServingConfig | None = None,
    poll_s: float = 10.0,
    source: ModelSource | None = None,
) -> ServiceRuntime:
    """Load the served models and build the service around them.

    Raises:
        ValueError: for a bad experiment file or clock.
        ServiceUnavailableError: when there is no catalog to serve from.
    """
    experiment: Experiment | None = (
        load_experiment(experiment_file) if experiment_file is not None else None
    )
    aliases: tuple[str, ...] = ("champion",)
    if experiment is not None:
        aliases = tuple(dict.fromkeys(["champion", *(v.model_alias for v in experiment.variants)]))
    if source is None:
        from model_registry.serving import RegistryModelSource

        source = RegistryModelSource(backends.tracking_uri, model_cache)
    loader = ServingLoader(source, backends.store, backends.online, clock, aliases)
    config = config or ServingConfig()
    served_log = ServedLog(backends.store, feature_share=config.feature_log_share)
    service = FeedService(
        loader.load(),
        backends.online,
        backends.pseudonymizer,
        config,
        experiment,
        on_served=served_log.record,
    )
    watcher = ModelWatcher(service, loader, poll_s=poll_s)
    return ServiceRuntime(service, watcher, served_log, loader)
