"""Resources shared by the asset modules: object store, pseudonymizer and the IO manager.

Asset values (models, indexes, feature tables) are persisted in the same object store as the
data: DataFrames as Parquet, everything else pickled, under ``assets/<asset key>``. One store
serves both the local profile (files under the project home) and production (S3).
"""

from pathlib import Path
from typing import Any

import dagster as dg

from fitpulse_orchestration.events.pseudonymize import Pseudonymizer, load_or_create_key
from fitpulse_orchestration.push.caps import PushCapStore, RedisPushCapStore, SQLitePushCapStore
from fitpulse_orchestration.serving.online_store import (
    OnlineFeatureStore,
    RedisOnlineStore,
    SQLiteOnlineStore,
)
from fitpulse_orchestration.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from fitpulse_orchestration.storage.asset_values import (
    asset_value_base,
    read_asset_value,
    write_asset_value,
)


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
