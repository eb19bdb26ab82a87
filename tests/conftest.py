"""Shared, seeded, tiny fixtures (see ../shared/STYLE.md section 5)."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.sparse import csr_matrix

from fitpulse_orchestration.events.ingest import ingest_day, write_ingested
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.world.generator import generate_world
from fitpulse_orchestration.world.params import WorldSummary, world_params

TEST_KEY = b"fitpulse-test-pseudonym-key-0001"

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
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3's default credential chain sees moto's dummy keys for this test only."""
    _use_test_credentials(monkeypatch)


@pytest.fixture
def require_redis() -> None:
    """Skip the test, with the reason, unless a Redis server answers on 127.0.0.1:6379.

    Redis is the production profile's online store and push-cap store; the development and CI
    machines run one, a laptop may not.
    """
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return
    except OSError:
        pytest.skip("no Redis server on 127.0.0.1:6379 (the production-profile store)")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(TEST_KEY)


@pytest.fixture
def checkerboard() -> csr_matrix:
    """8 users x 8 items in two taste blocks; user 0's item 0 is held out (the known answer).

    Users 0-3 like items 0-3, users 4-7 like items 4-7. User 0 has items 1-3 but not item 0,
    which is the only unseen item of its block, so a good model recommends it first.
    """
    dense = np.zeros((8, 8), dtype=np.float32)
    dense[:4, :4] = 1.0
    dense[4:, 4:] = 1.0
    dense[0, 0] = 0.0
    return csr_matrix(dense * 4.0)


def _ranking_groups(rng: np.random.Generator, start: int, n: int) -> pd.DataFrame:
    """Queries ``start .. start+n-1`` x 8 candidates; the label (0-3) is a noisy function of f0."""
    rows = []
    for q in range(start, start + n):
        f0 = rng.normal(size=8)
        f1 = rng.normal(size=8)
        label = np.clip(np.round(1.5 + f0 + 0.1 * rng.normal(size=8)), 0, 3).astype(int)
        for c in range(8):
            rows.append({"group_id": f"q{q:02d}", "f0": f0[c], "f1": f1[c], "label": label[c]})
    return pd.DataFrame(rows)


@pytest.fixture
def ranking_groups() -> Callable[[np.random.Generator, int, int], pd.DataFrame]:
    """Factory of more groups drawn like ``ranking_frame``'s: ``(rng, start, n) -> frame``."""
    return _ranking_groups


@pytest.fixture
def ranking_frame(rng: np.random.Generator) -> pd.DataFrame:
    """10 queries x 8 candidates; the label (0-3) is a noisy function of feature ``f0``."""
    return _ranking_groups(rng, 0, 10)


@pytest.fixture
def drift_pairs(rng: np.random.Generator) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """One same-distribution pair and one shifted pair of feature frames."""
    ref = pd.DataFrame({"a": rng.normal(0, 1, 500), "b": rng.exponential(1.0, 500)})
    same = pd.DataFrame({"a": rng.normal(0, 1, 500), "b": rng.exponential(1.0, 500)})
    shifted = pd.DataFrame({"a": rng.normal(1.5, 1, 500), "b": rng.exponential(3.0, 500)})
    return {"same": (ref, same), "shifted": (ref, shifted)}


@dataclass
class TinyWorld:
    """The ``tiny`` world written to a local store, with every landed day ingested."""

    root: Path
    store: LocalObjectStore
    summary: WorldSummary
    pseudonymizer: Pseudonymizer


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    """Generated once per session; tests must treat it as read-only."""
    root = tmp_path_factory.mktemp("tiny_world")
    store = LocalObjectStore(root / "store")
    summary = generate_world(world_params("tiny"), store)
    pseudo = Pseudonymizer(TEST_KEY)
    for day in summary.landed_days:
        write_ingested(store, day, ingest_day(store, day, pseudo))
    return TinyWorld(root=root, store=store, summary=summary, pseudonymizer=pseudo)


def utc(text: str) -> pd.Timestamp:
    """A UTC timestamp from ISO text (helper for hand-written events)."""
    return pd.Timestamp(text, tz="UTC")


def day(text: str) -> dt.date:
    """A date from ISO text."""
    return dt.date.fromisoformat(text)
