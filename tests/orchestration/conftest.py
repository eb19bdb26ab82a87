"""Fixtures of the orchestration tests: a writable tiny world inside a project home.

The session ``tiny_world`` of ``tests/conftest.py`` is read-only; these tests materialize
assets, which write to the store, so each module (or test) generates its own world.

Modules that need the world trained once (version 1 of the feed model and of the push policy,
both champions) take ``trained_world``: a copy of one home trained for the whole session, with
every absolute path of the original (MLflow's artifact locations, Dagster's event logs)
rewritten to the copy's, so a module may change its copy freely.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from mlflow.tracking._tracking_service import utils as mlflow_tracking_utils
from serving_setup import make_first_champions

from fitpulse_orchestration import layout
from fitpulse_orchestration.runner import TrainingRun, run_training
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.world.generator import generate_world
from fitpulse_orchestration.world.params import WorldSummary, world_params

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


def fix_pseudonym_key(home: ProjectHome, key: str = "5eed" * 16) -> None:
    """Give ``home`` a fixed pseudonymization key before anything lands or trains there.

    Pseudonyms order the users that per-user draws (holdouts, the scorer choice's halves,
    sampled users) run over, so a random key per home would make training, and every number,
    differ run to run.
    """
    home.pseudonym_key_file.parent.mkdir(parents=True, exist_ok=True)
    home.pseudonym_key_file.write_text(key + "\n")
    home.pseudonym_key_file.chmod(0o600)


def make_world_home(root: Path) -> WorldHome:
    """Generate the ``tiny`` world into ``<root>/store`` (a project home at ``root``)."""
    home = ProjectHome(root).create()
    fix_pseudonym_key(home)
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


@dataclass(frozen=True)
class TrainedWorld:
    """A tiny world trained once (``run_training(eval_days=5, ranker_days=5)``), v1 champions."""

    world: WorldHome
    run: TrainingRun

    @property
    def home(self) -> ProjectHome:
        """The copy's project home."""
        return self.world.home

    @property
    def store(self) -> LocalObjectStore:
        """The copy's object store."""
        return self.world.store


_SQLITE_MAGIC = b"SQLite format 3"


def _relocate_sqlite(path: Path, old: str, new: str) -> None:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [
                row[1]
                for row in conn.execute(f'PRAGMA table_info("{table}")')
                if not row[2] or "CHAR" in row[2].upper() or "TEXT" in row[2].upper()
            ]
            for column in columns:
                conn.execute(
                    f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                    f'WHERE instr("{column}", ?) > 0',
                    (old, new, old),
                )
        conn.commit()
    finally:
        conn.close()


def copy_home(source: WorldHome, root: Path) -> WorldHome:
    """Copy ``source``'s home to ``root``, rewriting its absolute paths to the copy's.

    Raises:
        AssertionError: when a file of the copy still names the original home.
    """
    old, new = str(source.home.root), str(root)
    shutil.copytree(source.home.root, root)
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        with path.open("rb") as fh:
            magic = fh.read(len(_SQLITE_MAGIC))
        if magic == _SQLITE_MAGIC:
            _relocate_sqlite(path, old, new)
        elif path.name == "MLmodel" or path.suffix in (".yaml", ".yml", ".json"):
            text = path.read_text()
            if old in text:
                path.write_text(text.replace(old, new))
    left = [p for p in root.rglob("*") if p.is_file() and old.encode() in p.read_bytes()]
    assert not left, f"the copy still names {old}: {left}"
    # MLflow caches each run's artifact repository by run id, for the whole process; the copy's
    # runs keep the original's ids, so a cached repository would send the copy's artifact
    # writes (an erasure's rewrite) to the original's folder.
    mlflow_tracking_utils._artifact_repos_cache.clear()
    home = ProjectHome(root)
    return WorldHome(home=home, store=LocalObjectStore(home.store), summary=source.summary)


@pytest.fixture(scope="session")
def trained_master(tmp_path_factory: pytest.TempPathFactory) -> TrainedWorld:
    """The session's one trained tiny home; never handed to a test (copies are)."""
    world = make_world_home(tmp_path_factory.mktemp("trained_master") / "home")
    # MLflow writes ./mlruns relative to the working directory.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("trained_master_cwd"))
        run = run_training(world.home, eval_days=5, ranker_days=5)
    assert run.version == "1"
    assert run.failed_checks == []
    make_first_champions(world.home)
    return TrainedWorld(world, run)


@pytest.fixture(scope="module")
def trained_world(
    trained_master: TrainedWorld, tmp_path_factory: pytest.TempPathFactory
) -> TrainedWorld:
    """This module's own copy of the session's trained home."""
    root = tmp_path_factory.mktemp("trained_world") / "home"
    return TrainedWorld(copy_home(trained_master.world, root), trained_master.run)
