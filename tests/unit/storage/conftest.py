"""Fixtures for the object-store tests: a local store on ``tmp_path`` and S3 on a moto server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fitpulse_orchestration.storage import LocalObjectStore, ObjectStore, S3ObjectStore

REGION = "us-east-1"
SERVER_START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class S3Endpoint:
    """A running S3-compatible endpoint with one empty bucket."""

    endpoint_url: str
    bucket: str
    client: Any
    region_name: str = REGION


def _use_test_credentials(mp: pytest.MonkeyPatch) -> None:
    """Point boto3's default credential chain at moto's dummy keys, and keep proxies off."""
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        mp.delenv(name, raising=False)
    for name in ("NO_PROXY", "no_proxy"):
        mp.setenv(name, "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """Moto in server mode on a free loopback port, reached over real HTTP by boto3."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        pytest.skip(f"moto server mode is not installed: {exc}")

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    # ThreadedMotoServer.start() waits without a timeout and never returns if the bind fails
    # inside its thread, so start it from a daemon thread and give up after a bound.
    starter = threading.Thread(target=server.start, daemon=True)
    starter.start()
    starter.join(SERVER_START_TIMEOUT_S)
    if starter.is_alive():
        pytest.skip(f"moto server did not start within {SERVER_START_TIMEOUT_S:.0f} s")
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    try:
        # Environment changes stay scoped to this block and to each test (see make_s3_store),
        # so the rest of the session never sees the dummy credentials.
        with pytest.MonkeyPatch.context() as mp:
            _use_test_credentials(mp)
            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                region_name=REGION,
            )
            client.create_bucket(Bucket="fitpulse-test")
        yield S3Endpoint(endpoint_url=endpoint_url, bucket="fitpulse-test", client=client)
    finally:
        server.stop()


@pytest.fixture
def local_store(tmp_path: Path) -> LocalObjectStore:
    """An empty local store rooted in this test's temporary directory."""
    return LocalObjectStore(tmp_path / "store")


@pytest.fixture
def s3_client(s3_endpoint: S3Endpoint) -> Any:
    """A plain boto3 S3 client on the moto endpoint, for looking behind the store."""
    return s3_endpoint.client


@pytest.fixture
def make_s3_store(
    s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], S3ObjectStore]:
    """Build an ``S3ObjectStore`` on the moto bucket under a given prefix.

    The store builds its own boto3 client, so credentials come from the environment.
    """
    _use_test_credentials(monkeypatch)

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
