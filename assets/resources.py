"""Resources shared by the asset modules: object store, pseudonymizer and the IO manager.

Asset values (models, indexes, feature tables) are persisted in the same object store as the
data: DataFrames as Parquet, everything else pickled, under ``assets/<asset key>``. One store
serves both the local profile (files under the project home) and production (S3).
"""

import pickle
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.pseudonymize import Pseudonymizer, load_or_create_key
from fitpulse_orchestration.storage import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    read_parquet,
    write_parquet,
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

    def _key(self, context: dg.OutputContext | dg.InputContext, suffix: str) -> str:
        path = "/".join(context.asset_key.path)
        if context.has_asset_partitions:
            path += f"/{context.asset_partition_key}"
        return f"{layout.ASSETS}/{path}{suffix}"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Write ``obj`` under the asset's key."""
        if obj is None:
            return
        store = self.object_store.get_store()
        if isinstance(obj, pd.DataFrame):
            key = self._key(context, ".parquet")
            write_parquet(store, key, obj)
            store.delete(self._key(context, ".pkl"))
        else:
            key = self._key(context, ".pkl")
            store.put_bytes(key, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
            store.delete(self._key(context, ".parquet"))
        context.add_output_metadata({"stored_at": dg.MetadataValue.path(store.uri(key))})

    def load_input(self, context: dg.InputContext) -> Any:
        """Read the upstream asset's value (whichever format it was written in)."""
        store = self.object_store.get_store()
        parquet_key = self._key(context, ".parquet")
        if store.exists(parquet_key):
            return read_parquet(store, parquet_key)
        pickle_key = self._key(context, ".pkl")
        if not store.exists(pickle_key):
            raise FileNotFoundError(
                f"asset {context.asset_key.to_user_string()} has no stored value at "
                f"{store.uri(pickle_key)}: materialize it first"
            )
        return pickle.loads(store.get_bytes(pickle_key))


def load_asset_value(store: ObjectStore, asset_name: str) -> Any:
    """Read a persisted asset value outside Dagster (the CLI's batch recommendations)."""
    base = f"{layout.ASSETS}/{asset_name}"
    if store.exists(base + ".parquet"):
        return read_parquet(store, base + ".parquet")
    if store.exists(base + ".pkl"):
        return pickle.loads(store.get_bytes(base + ".pkl"))
    raise FileNotFoundError(
        f"no stored value for asset {asset_name!r} in {store.uri(base)}: run `fitpulse train` first"
    )
