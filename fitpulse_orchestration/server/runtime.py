"""Wiring the feed service for a profile: stores, registry, experiment, logs.

``local`` (default): the project home's object store, SQLite online store, MLflow registry and
key file. ``production``: the same environment variables as the Dagster definitions
(``FITPULSE_S3_BUCKET``, ``FITPULSE_S3_PREFIX``, ``FITPULSE_S3_ENDPOINT_URL``,
``FITPULSE_REDIS_URL``, ``MLFLOW_TRACKING_URI``, ``FITPULSE_PSEUDONYM_SECRET``), plus the
callers' token digests (``FITPULSE_API_TOKENS_FILE`` or ``FITPULSE_API_TOKEN_HASHES``,
``serving.auth``), which the local profile keeps in the home.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.push.caps import PushCapStore, RedisPushCapStore, SQLitePushCapStore
from fitpulse_orchestration.push.service import PushDecisionService, load_push_policy
from fitpulse_orchestration.serving.auth import (
    TOKEN_HASHES_ENV,
    TOKENS_FILE_ENV,
    ApiTokens,
    local_tokens,
    tokens_from_env,
)
from fitpulse_orchestration.serving.experiments import Experiment, load_experiment
from fitpulse_orchestration.serving.feed_service import FeedService
from fitpulse_orchestration.serving.feed_types import ServingConfig
from fitpulse_orchestration.serving.loading import (
    ModelSource,
    ModelWatcher,
    ServingLoader,
    freeze_heap,
)
from fitpulse_orchestration.serving.logs import ServedLog
from fitpulse_orchestration.serving.rollout import RolloutController, served_split
from fitpulse_orchestration.serving.shadow import ShadowLog
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from fitpulse_orchestration.storage.audit import AUDIT_KEY_ENV, load_audit_key
from fitpulse_orchestration.storage.keys import load_or_create_key
from fitpulse_orchestration.storage.online_store import (
    OnlineFeatureStore,
    RedisOnlineStore,
    SQLiteOnlineStore,
)


@dataclass
class ServiceRuntime:
    """A feed service with its reload watcher and served log (start both with the app)."""

    service: FeedService
    watcher: ModelWatcher
    served_log: ServedLog
    loader: ServingLoader
    push: PushDecisionService | None = None
    shadow_log: ShadowLog | None = None


@dataclass(frozen=True)
class Backends:
    """The external systems the service reads and writes."""

    store: ObjectStore
    online: OnlineFeatureStore
    tracking_uri: str
    pseudonymizer: Pseudonymizer
    audit_key: str
    """Signing key of the audit logs (``fitpulse_orchestration.storage.audit``)."""
    caps: PushCapStore | None = None


PUSH_CAPS_DEADLINE_S: Final = 0.05
"""How long a push decision waits for the cap store (a lock, a slow Redis) before it fails safe
with no send (``caps_unavailable``)."""


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ValueError(f"the production profile needs the environment variable {name}")
    return value


def profile_backends(home: ProjectHome, profile: str, serving: bool = False) -> Backends:
    """The backends of ``profile`` (``local`` or ``production``).

    ``serving``: the services' view, which never creates the local online store (a missing one
    is a labelled fallback until training materializes it) and waits at most
    ``PUSH_CAPS_DEADLINE_S`` for the push cap store.
    """
    if profile == "local":
        home.create()
        return Backends(
            store=LocalObjectStore(home.store),
            online=SQLiteOnlineStore(home.online_store, create=not serving),
            tracking_uri=home.mlflow_tracking_uri,
            pseudonymizer=Pseudonymizer.from_secret(load_or_create_key(home.pseudonym_key_file)),
            caps=SQLitePushCapStore(
                home.online_store.with_name("push_caps.sqlite"),
                timeout_s=PUSH_CAPS_DEADLINE_S if serving else 2.0,
            ),
            audit_key=load_audit_key(home.audit_key_file),
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
            caps=RedisPushCapStore(_env("FITPULSE_REDIS_URL"), timeout_s=PUSH_CAPS_DEADLINE_S),
            audit_key=_env(AUDIT_KEY_ENV),
        )
    raise ValueError(f"unknown profile {profile!r}; use 'local' or 'production'")


def service_tokens(home: ProjectHome, profile: str) -> tuple[ApiTokens, bool]:
    """The callers' tokens of ``profile``, and whether the local token was created now.

    The environment's token source wins; without one the local profile uses (and on first use
    creates) the home's token files, and the production profile refuses.

    Raises:
        ValueError: production without a token source, or a malformed source.
    """
    configured = tokens_from_env()
    if configured is not None:
        return configured, False
    if profile == "production":
        raise ValueError(
            f"the production profile needs {TOKENS_FILE_ENV} or {TOKEN_HASHES_ENV} (the "
            "callers' token digests; see docs/serving.md, 'Service credentials')"
        )
    return local_tokens(home.api_tokens_file, home.local_token_file)


def build_runtime(
    backends: Backends,
    model_cache: Path,
    clock: str = "snapshot",
    experiment_file: Path | None = None,
    config: ServingConfig | None = None,
    poll_s: float = 10.0,
    source: ModelSource | None = None,
    push_source: ModelSource | None = None,
    shadow_share: float = 0.0,
    rollout: str | None = None,
) -> ServiceRuntime:
    """Load the served models and build the service around them.

    With ``rollout`` the traffic split follows that canary rollout's state
    (``serving.rollout``), polled by the watcher: the ``challenger`` alias takes the canary's
    share, and a rollback or the kill switch sends everyone to the champion.

    With ``shadow_share`` > 0 the ``challenger`` alias is loaded too and scores that share of
    the champion's requests in shadow (``serving.shadow``); only the champion is served.

    Raises:
        ValueError: for a bad experiment file or clock.
        ServiceUnavailableError: when there is no catalog to serve from.
    """
    # One request is one thread's work: OpenMP worker threads inside FAISS only add overhead
    # (about 17% more CPU per request measured in benchmarks/serve_bench.py).
    import faiss

    faiss.omp_set_num_threads(1)
    if rollout is not None and experiment_file is not None:
        raise ValueError("serve either an experiment file or a rollout, not both")
    experiment: Experiment | None = (
        load_experiment(experiment_file) if experiment_file is not None else None
    )
    aliases: tuple[str, ...] = ("champion",)
    if experiment is not None:
        aliases = tuple(dict.fromkeys(["champion", *(v.model_alias for v in experiment.variants)]))
    if shadow_share > 0 or rollout is not None:
        aliases = tuple(dict.fromkeys([*aliases, "challenger"]))
    if source is None or push_source is None:
        from model_registry.serving import registry_sources

        feed_default, push_default = registry_sources(
            backends.tracking_uri, model_cache, backends.store, backends.audit_key
        )
        source = source or feed_default
        push_source = push_source or push_default
    loader = ServingLoader(source, backends.store, backends.online, clock, aliases)
    config = config or ServingConfig()
    served_log = ServedLog(backends.store, feature_share=config.feature_log_share)
    shadow_log = ShadowLog(backends.store) if shadow_share > 0 else None
    service = FeedService(
        loader.load(),
        backends.online,
        backends.pseudonymizer,
        config,
        experiment,
        on_served=served_log.record,
        shadow_share=shadow_share,
        on_shadow=shadow_log.record if shadow_log is not None else None,
    )
    rollout_split = None
    if rollout is not None:
        controller = RolloutController(backends.store, backends.audit_key)

        def rollout_split() -> Experiment | None:
            challenger = service.state.models.get("challenger")
            version = None
            if challenger is not None and challenger.model is not None:
                version = challenger.version
            return served_split(controller.state(rollout), version)

        try:
            service.experiment = rollout_split()
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from exc
    watcher = ModelWatcher(service, loader, poll_s=poll_s, experiment_source=rollout_split)
    push = PushDecisionService(
        service, load_push_policy(push_source), backends.caps, is_erased=served_log.is_erased
    )
    freeze_heap()
    return ServiceRuntime(service, watcher, served_log, loader, push, shadow_log)
