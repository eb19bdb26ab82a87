"""Fixtures of the orchestration tests: a writable tiny world inside a project home.

The session ``tiny_world`` of ``tests/conftest.py`` is read-only; these tests materialize
assets, which write to the store, so each module (or test) generates its own world.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.world.generator import WorldSummary, generate_world, world_params

TINY_START = dt.date(2026, 10, 19)
"""First landed day of the ``tiny`` world (14 days ending 2026-11-01)."""


@dataclass
class WorldHome:
    """A project home whose landing zone holds a freshly generated ``tiny`` world."""

    home: ProjectHome
    store: LocalObjectStore
    summary: WorldSummary

    @property
    def days(self) -> list[str]:
        """Landed days as partition keys, oldest first."""
        return [d.isoformat() for d in self.summary.landed_days]

    def landed_lines(self, day: dt.date) -> list[str]:
        """Every non-empty line of the batches that landed on ``day`` (bad records included)."""
        lines: list[str] = []
        for key in self.store.iter_keys(layout.landing_events_prefix(day)):
            text = gzip.decompress(self.store.get_bytes(key)).decode("utf-8")
            lines.extend(line for line in text.splitlines() if line.strip())
        return lines

    def landed_records(self) -> list[dict[str, Any]]:
        """Every landed line of every day that parses as a JSON object."""
        records = []
        for day in layout.landed_dates(self.store.list_keys(f"{layout.LANDING_EVENTS}/")):
            for line in self.landed_lines(day):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
        return records


def make_world_home(root: Path) -> WorldHome:
    """Generate the ``tiny`` world into ``<root>/store`` (a project home at ``root``)."""
    home = ProjectHome(root).create()
    # A fixed pseudonymization key: pseudonyms order the users that per-user draws (the scorer
    # choice's halves, sampled users) run over, so a random key per home would make training
    # differ run to run.
    home.pseudonym_key_file.parent.mkdir(parents=True, exist_ok=True)
    home.pseudonym_key_file.write_text("5eed" * 16 + "\n")
    home.pseudonym_key_file.chmod(0o600)
    store = LocalObjectStore(home.store)
    summary = generate_world(world_params("tiny"), store)
    assert summary.landed_days[0] == TINY_START
    return WorldHome(home=home, store=store, summary=summary)


@pytest.fixture(scope="module")
def world_home(tmp_path_factory: pytest.TempPathFactory) -> WorldHome:
    """One writable tiny world per test module."""
    return make_world_home(tmp_path_factory.mktemp("world_home"))


@pytest.fixture
def instance() -> dg.DagsterInstance:
    """A throwaway in-memory Dagster instance."""
    return dg.DagsterInstance.ephemeral()


@pytest.fixture
def fresh_world(tmp_path: Path) -> WorldHome:
    """A writable tiny world of this test alone (for tests that change the landing zone)."""
    return make_world_home(tmp_path)
