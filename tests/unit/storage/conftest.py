"""Fixtures for the object-store tests: a local store on ``tmp_path`` and S3 on a moto server.

The moto endpoint itself (``s3_endpoint``) is shared with the production-profile tests and
lives in ``tests/conftest.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fitpulse_orchestration.storage import LocalObjectStore, ObjectStore, S3ObjectStore

if TYPE_CHECKING:
    from conftest import S3Endpoint


@pytest.fixture
def local_store(tmp_path: Path) -> LocalObjectStore:
    """An empty local store rooted in this test's temporary directory."""
    return LocalObjectStore(tmp_path / "store")


@pytest.fixture
def s3_client(s3_endpoint: S3Endpoint) -> Any:
    """A plain boto3 S3 client on the moto endpoint, for looking behind the store."""
    return s3_endpoint.client


@pytest.fixture
def make_s3_store(s3_endpoint: S3Endpoint, s3_credentials: None) -> Callable[[str], S3ObjectStore]:
    """Build an ``S3ObjectStore`` on the moto bucket under a given prefix.

    The store builds its own boto3 client, so credentials come from the environment.
    """

    def make(prefix: str) -> S3ObjectStore:
        return S3ObjectStore(
            s3_endpoint.bucket,
            prefix=prefix,
            endpoint_url=s3_endpoint.endpoint_url,
            region_name=s3_endpoint.region_name,
        )

    return make


@pytest.fixture
def s3_store(make_s3_store: Callable[[str], S3ObjectStore]) -> S3ObjectStore:
    """An S3 store under a prefix no other test uses, so tests share one bucket safely."""
    return make_s3_store(f"tests/{uuid.uuid4().hex}")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each behaviour test runs once per implementation."""
    return request.getfixturevalue(f"{request.param}_store")
