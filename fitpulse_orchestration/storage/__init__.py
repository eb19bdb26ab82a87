"""Object storage: one interface, a local-filesystem default and S3 through boto3."""

from fitpulse_orchestration.storage.object_store import (
    LocalObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    S3ObjectStore,
)
from fitpulse_orchestration.storage.tables import read_parquet, write_parquet

__all__ = [
    "LocalObjectStore",
    "ObjectNotFoundError",
    "ObjectStore",
    "S3ObjectStore",
    "read_parquet",
    "write_parquet",
]
