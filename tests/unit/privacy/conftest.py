"""A writable copy of the session's ingested ``tiny`` world, one per test (deletions mutate it)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fitpulse_orchestration.storage import LocalObjectStore

if TYPE_CHECKING:
    from conftest import TinyWorld


@pytest.fixture
def ingested_world(tiny_world: TinyWorld, tmp_path: Path) -> LocalObjectStore:
    """Every landed day ingested (with the ``pseudonymizer`` fixture's key), this test's alone."""
    shutil.copytree(tiny_world.root / "store", tmp_path / "store")
    return LocalObjectStore(tmp_path / "store")
