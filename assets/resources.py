"""Every Dagster resource of the platform, in one place.

Object store, pseudonymizer, IO manager, online store, MLflow tracking and the model registry;
the domain packages and ``model_registry/`` hold no Dagster code.

Asset values (models, indexes, feature tables) are persisted in the same object store as the
data: DataFrames as Parquet, everything else pickled, under ``assets/<asset key>``. One store
serves both the local profile (files under the project home) and production (S3).
"""

import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import Field, Noneable, StringSource
from dagster_mlflow.resources import CONFIG_SCHEMA, MlFlow

from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.push.caps import PushCapStore, RedisPushCapStore, SQLitePushCapStore
from fitpulse_orchestration.ranking.bundle import FeedBundle, read_bundle
from fitpulse_orchestration.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from fitpulse_orchestration.storage.asset_values import (
    asset_value_base,
    read_asset_value,
    write_asset_value,
)
from fitpulse_orchestration.storage.audit import AuditLog, load_audit_key
from fitpulse_orchestration.storage.keys import load_or_create_key
from fitpulse_orchestration.storage.online_store import (
    OnlineFeatureStore,
    RedisOnlineStore,
    SQLiteOnlineStore,
)
from model_registry.client import HOME_RANKER_MODEL, RegistryClient, ensure_experiment
from model_registry.erasure import RegistryEraser
from model_registry.promotion import ModelPromotion
from model_registry.reviewers import ReviewerRoster


class ObjectStoreResource(dg.ConfigurableResource):
    """The platform's object store: a local directory, or an S3 bucket and prefix."""

    kind: str = "local"
    root: str = ".fitpulse/store"
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str = ""
    region_name: str = "us-east-1"

    def get_store(self) -> ObjectStore:
        """Build the configured store."""
        if self.kind == "local":
            return LocalObjectStore(self.root)
        if self.kind == "s3":
            if not self.bucket:
                raise ValueError("object store kind 's3' needs a bucket")
            return S3ObjectStore(
                self.bucket,
                self.prefix,
                endpoint_url=self.endpoint_url or None,
                region_name=self.region_name,
            )
        raise ValueError(f"unknown object store kind {self.kind!r}; use 'local' or 's3'")


class PseudonymizerResource(dg.ConfigurableResource):
    """Keyed hash for user ids: a secret (production, via ``dg.EnvVar``) or a key file."""

    secret: str = ""
    key_file: str = ""

    def get_pseudonymizer(self) -> Pseudonymizer:
        """Build the pseudonymizer; a missing key file is created with a random key."""
        if self.secret:
            return Pseudonymizer.from_secret(self.secret)
        if self.key_file:
            return Pseudonymizer.from_secret(load_or_create_key(Path(self.key_file)))
        raise ValueError("pseudonymizer needs a secret or a key_file")


class ObjectStoreIOManager(dg.ConfigurableIOManager):
    """Persists asset values in the object store (Parquet for DataFrames, pickle otherwise)."""

    object_store: dg.ResourceDependency[ObjectStoreResource]

    def _base(self, context: dg.OutputContext | dg.InputContext) -> str:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return asset_value_base(context.asset_key.path, partition)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Write ``obj`` under the asset's key."""
        if obj is None:
            return
        store = self.object_store.get_store()
        key = write_asset_value(store, self._base(context), obj)
        context.add_output_metadata({"stored_at": dg.MetadataValue.path(store.uri(key))})

    def load_input(self, context: dg.InputContext) -> Any:
        """Read the upstream asset's value (whichever format it was written in)."""
        return read_asset_value(self.object_store.get_store(), self._base(context))


class OnlineStoreResource(dg.ConfigurableResource):
    """The online feature store: a SQLite file (default) or a Redis URL (production)."""

    kind: str = "sqlite"
    path: str = ".fitpulse/online/features.sqlite"
    url: str = ""

    def get_store(self) -> OnlineFeatureStore:
        """Build the configured store."""
        if self.kind == "sqlite":
            return SQLiteOnlineStore(self.path)
        if self.kind == "redis":
            if not self.url:
                raise ValueError("online store kind 'redis' needs a url (FITPULSE_REDIS_URL)")
            return RedisOnlineStore(self.url)
        raise ValueError(f"unknown online store kind {self.kind!r}; use 'sqlite' or 'redis'")

    def get_cap_store(self) -> PushCapStore:
        """The push frequency-cap counters, in the same system as the features."""
        if self.kind == "sqlite":
            return SQLitePushCapStore(Path(self.path).with_name("push_caps.sqlite"))
        if self.kind == "redis":
            if not self.url:
                raise ValueError("online store kind 'redis' needs a url (FITPULSE_REDIS_URL)")
            return RedisPushCapStore(self.url)
        raise ValueError(f"unknown online store kind {self.kind!r}; use 'sqlite' or 'redis'")


@dg.resource(
    config_schema={
        **CONFIG_SCHEMA,
        "artifact_location": Field(
            Noneable(StringSource),
            default_value=None,
            is_required=False,
            description="Artifact root of the experiment (created if the experiment is new).",
        ),
    },
    description="dagster-mlflow's mlflow_tracking, creating the experiment with an explicit "
    "artifact location first.",
)
def mlflow_tracking_resource(init_context: dg.InitResourceContext) -> MlFlow:
    """dagster-mlflow's ``MlFlow`` resource (one MLflow run per Dagster run).

    MLflow 3.17 puts a new experiment's artifacts under ``./mlruns`` of the working directory
    unless the experiment is created with a location, which ``mlflow_tracking`` cannot do.
    """
    config = init_context.resource_config
    ensure_experiment(
        config["mlflow_tracking_uri"], config["experiment_name"], config.get("artifact_location")
    )
    return MlFlow(init_context)


class ModelRegistryResource(dg.ConfigurableResource):
    """The MLflow model registry (same backend as tracking) and its audit log."""

    tracking_uri: str
    object_store: ObjectStoreResource
    audit_key: str = ""
    """Production: the audit signing key (``dg.EnvVar("FITPULSE_AUDIT_KEY")``)."""
    audit_key_file: str = ""
    """Local: the key file, created on first use."""
    reviewers_file: str = ""
    """The reviewer roster (``model_registry.reviewers``); production: the mounted file."""
    model_cache_dir: str = ""
    """Local: the serving cache of downloaded bundles (an erasure's rewrite evicts from it)."""

    def get_client(self) -> RegistryClient:
        """A client bound to this registry."""
        return RegistryClient(self.tracking_uri)

    def get_audit_key(self) -> str:
        """The audit log's signing key, from the secret or the key file."""
        if self.audit_key:
            return self.audit_key
        if self.audit_key_file:
            return load_audit_key(Path(self.audit_key_file))
        raise ValueError("the model registry needs an audit_key or an audit_key_file")

    def get_audit(self) -> AuditLog:
        """The registry's signed audit log in the object store."""
        return AuditLog(self.object_store.get_store(), self.get_audit_key())

    def get_roster(self) -> ReviewerRoster:
        """The reviewer roster (an empty one refuses every review)."""
        if not self.reviewers_file:
            return ReviewerRoster({}, "(no reviewers_file configured)")
        return ReviewerRoster.from_file(Path(self.reviewers_file))

    def get_promotion(self) -> ModelPromotion:
        """The promotion workflow, auditing into the object store."""
        return ModelPromotion(self.get_client(), self.get_audit())

    def get_eraser(self) -> RegistryEraser:
        """The erasure's registry step: rewrites registered bundles without an erased member."""
        cache = Path(self.model_cache_dir) if self.model_cache_dir else None
        return RegistryEraser(self.get_promotion(), cache)

    def load_bundle(self, version: str, model: str = HOME_RANKER_MODEL) -> FeedBundle:
        """Download and load one version's feed bundle."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.get_client().download_bundle(model, version, Path(tmp))
            return read_bundle(folder)

    def champion_version(self, model: str = HOME_RANKER_MODEL) -> str | None:
        """The champion as the verified audit log says (not the MLflow alias), if any."""
        return self.get_promotion().audited(model).champion
