"""Parquet tables in an object store."""

from __future__ import annotations

import io

import pandas as pd

from fitpulse_orchestration.storage.object_store import ObjectStore


def write_parquet(store: ObjectStore, key: str, frame: pd.DataFrame) -> None:
    """Write ``frame`` as one Parquet object under ``key`` (zstd, no pandas index)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    store.put_bytes(key, buffer.getvalue())


def read_parquet(store: ObjectStore, key: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read the Parquet object under ``key`` (only ``columns`` when given)."""
    return pd.read_parquet(io.BytesIO(store.get_bytes(key)), columns=columns)


def read_parquet_prefix(store: ObjectStore, prefix: str) -> list[pd.DataFrame]:
    """Read every ``.parquet`` object under ``prefix``, in key order."""
    return [read_parquet(store, key) for key in store.iter_keys(prefix, ".parquet")]
