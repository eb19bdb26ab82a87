"""Persisted asset values: DataFrames as Parquet, everything else pickled.

Values live under ``assets/<asset path>[/<partition>]`` with a ``.parquet`` or ``.pkl``
suffix. The Dagster IO manager writes and reads them during runs; the CLI's batch
recommendations read them outside Dagster, through the same functions.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import pandas as pd

from fitpulse_orchestration import layout
from fitpulse_orchestration.storage.object_store import ObjectStore
from fitpulse_orchestration.storage.tables import read_parquet, write_parquet

_PARQUET = ".parquet"
_PICKLE = ".pkl"


def asset_value_base(asset_path: Sequence[str], partition: str | None = None) -> str:
    """Key of an asset value without its format suffix."""
    path = "/".join(asset_path)
    if partition is not None:
        path += f"/{partition}"
    return f"{layout.ASSETS}/{path}"


def write_asset_value(store: ObjectStore, base: str, value: Any) -> str:
    """Write ``value`` under ``base`` (removing a value of the other format); return its key."""
    if isinstance(value, pd.DataFrame):
        key = base + _PARQUET
        write_parquet(store, key, value)
        store.delete(base + _PICKLE)
    else:
        key = base + _PICKLE
        store.put_bytes(key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        store.delete(base + _PARQUET)
    return key


def read_asset_value(store: ObjectStore, base: str) -> Any:
    """Read the value under ``base``, whichever format it was written in.

    Raises:
        FileNotFoundError: when the asset was never materialized into this store.
    """
    if store.exists(base + _PARQUET):
        return read_parquet(store, base + _PARQUET)
    if store.exists(base + _PICKLE):
        return pickle.loads(store.get_bytes(base + _PICKLE))
    raise FileNotFoundError(
        f"no stored value for asset {base.removeprefix(layout.ASSETS + '/')!r} at "
        f"{store.uri(base)}: materialize it first (`fitpulse train`)"
    )


def load_asset_value(store: ObjectStore, asset_name: str) -> Any:
    """Read the latest value of an unpartitioned asset by name."""
    return read_asset_value(store, asset_value_base([asset_name]))
