"""A simulated A/B: arms on disjoint samples of the world's weekly-active users, same seed.

``prepare_simulation`` loads what every arm shares: the world's latent state, the registered
feed and push models through the serving loader (as ``fitpulse serve`` loads them), a private
in-memory copy of the online store, and a throwaway push cap store. ``simulate_ab`` then runs
each arm through ``ClosedLoop`` and summarises the runs (``report``).

The population is the world's *weekly-active users* at the serving snapshot (an app open in the
7 days before it, read from the online push records), shuffled with the seed and cut into one
disjoint sample per arm. Every arm's users draw from a generator seeded with the same seed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.push.caps import SQLitePushCapStore
from fitpulse_orchestration.push.features import PushHistory
from fitpulse_orchestration.push.service import PushDecisionService, load_push_policy
from fitpulse_orchestration.serving.feed_service import FeedService
from fitpulse_orchestration.serving.feed_types import ServingConfig, StageBudgets
from fitpulse_orchestration.serving.loading import ModelSource, ServingLoader, resolve_as_of
from fitpulse_orchestration.simulation import report
from fitpulse_orchestration.simulation.arms import build_arms
from fitpulse_orchestration.simulation.closed_loop import ArmRun, Behaviour, ClosedLoop, Population
from fitpulse_orchestration.storage import ObjectStore
from fitpulse_orchestration.storage.asset_values import load_asset_value
from fitpulse_orchestration.storage.online_store import InMemoryOnlineStore, OnlineFeatureStore
from fitpulse_orchestration.world.respond import WorldLatent, load_latent

DEFAULT_ARMS: Final = ("champion", "popularity", "push-daily")
_NO_DEADLINE_MS: Final = 60_000.0
SIMULATION_CONFIG: Final = ServingConfig(
    budgets=StageBudgets(*(_NO_DEADLINE_MS,) * 6), feature_log_share=0.0
)
"""Serving settings of simulated requests: deadlines lifted (latency is measured, not enforced,
so outcomes do not depend on the machine's load) and no served-feature log."""


@dataclass(frozen=True)
class SimulationSettings:
    """What to simulate."""

    arms: tuple[str, ...] = DEFAULT_ARMS
    days: int = 14
    users_per_arm: int = 400
    seed: int = 7
    n_boot: int = 1000
    behaviour: Behaviour = field(default_factory=Behaviour)

    def __post_init__(self) -> None:
        if self.days < report.MIN_DAYS:
            raise ValueError(
                f"days must be at least {report.MIN_DAYS} (7-day retention), got {self.days}"
            )
        if self.users_per_arm < 10:
            raise ValueError(f"users_per_arm must be at least 10, got {self.users_per_arm}")
        if not self.arms:
            raise ValueError("name at least one arm")

    @property
    def aliases(self) -> tuple[str, ...]:
        """The registry aliases the arms serve (``prepare_simulation`` loads them)."""
        return ("champion", "challenger") if "challenger" in self.arms else ("champion",)


@dataclass
class SimulationResult:
    """The runs and their summary."""

    settings: SimulationSettings
    start: pd.Timestamp
    runs: list[ArmRun]
    table: pd.DataFrame
    daily: pd.DataFrame
    targets: list[report.Target]
    model_versions: dict[str, str]

    def plots(self) -> dict[str, bytes]:
        """The retention and starts plots (PNG)."""
        return report.plots(self.daily)


@dataclass
class Environment:
    """Everything the arms share: the loop, the services and the candidate population."""

    loop: ClosedLoop
    service: FeedService
    push: PushDecisionService
    weekly_active: list[str]
    latent: WorldLatent
    pseudonymizer: Pseudonymizer
    catalog_size: int


def weekly_active_users(
    latent: WorldLatent,
    online: OnlineFeatureStore,
    pseudonymizer: Pseudonymizer,
    as_of: pd.Timestamp,
) -> list[str]:
    """Raw ids of the world's users with an app open in the 7 days before ``as_of``, sorted."""
    raw = sorted(str(u) for u in latent.user_ids)
    pids = {pseudonymizer.pseudonymize(u): u for u in raw}
    records = online.lookup_records("push", list(pids))
    since = (as_of - pd.Timedelta(days=7)).timestamp()
    return sorted(
        pids[pid]
        for pid, record in records.items()
        if (PushHistory.from_record(record).app_opens >= since).any()
    )


@contextmanager
def prepare_simulation(
    store: ObjectStore,
    online: OnlineFeatureStore,
    pseudonymizer: Pseudonymizer,
    feed_source: ModelSource,
    push_source: ModelSource,
    aliases: Sequence[str] = ("champion",),
    behaviour: Behaviour | None = None,
) -> Iterator[Environment]:
    """Load the shared environment; the cap store lives in a temporary folder until exit.

    Raises:
        FileNotFoundError: no generated world (latent state) in ``store``.
        ValueError: the online store was never materialized (no snapshot to start from).
        ServiceUnavailableError: no catalog.
    """
    latent = load_latent(store)
    as_of = resolve_as_of("snapshot", online)
    users = weekly_active_users(latent, online, pseudonymizer, as_of)
    catalog = load_asset_value(store, "catalog_items")
    pids = [pseudonymizer.pseudonymize(u) for u in users]
    private = InMemoryOnlineStore.copy_of(
        online,
        {
            "user": pids,
            "history": pids,
            "push": pids,
            "item": catalog["item_id"].astype(str).tolist(),
        },
    )
    state = ServingLoader(feed_source, store, private, "snapshot", tuple(aliases)).load()
    service = FeedService(state, private, pseudonymizer, SIMULATION_CONFIG)
    with tempfile.TemporaryDirectory(prefix="fitpulse-sim-") as tmp:
        caps = SQLitePushCapStore(Path(tmp) / "caps.sqlite")
        push = PushDecisionService(service, load_push_policy(push_source), caps)
        start = as_of.normalize() + pd.Timedelta(days=1)
        loop = ClosedLoop(latent, state.catalog.source, private, start, behaviour, caps)
        yield Environment(loop, service, push, users, latent, pseudonymizer, len(state.catalog))


def split_users(users: Sequence[str], arms: int, per_arm: int, seed: int) -> list[list[str]]:
    """Disjoint samples of ``per_arm`` users, one per arm, shuffled with ``seed``.

    Raises:
        ValueError: when there are fewer than ``arms x per_arm`` users.
    """
    if arms * per_arm > len(users):
        raise ValueError(
            f"{arms} arms x {per_arm} users need {arms * per_arm} weekly-active users; the "
            f"world has {len(users)} (lower --users-per-arm)"
        )
    order = np.random.default_rng(seed).permutation(len(users))
    return [[users[j] for j in order[k * per_arm : (k + 1) * per_arm]] for k in range(arms)]


def simulate_ab(env: Environment, settings: SimulationSettings) -> SimulationResult:
    """Run every arm of ``settings`` in ``env`` and summarise.

    Raises:
        ValueError: unknown arms, too few users, or a challenger arm without a challenger.
    """
    arms = build_arms(list(settings.arms), env.service, env.push)
    samples = split_users(env.weekly_active, len(arms), settings.users_per_arm, settings.seed)
    runs = []
    for arm, users in zip(arms, samples, strict=True):
        population = Population.of(env.latent, users, env.pseudonymizer)
        runs.append(env.loop.run(arm, population, settings.days, settings.seed))
    table = report.arm_table(runs, env.catalog_size, settings.n_boot, settings.seed)
    models = env.service.state.models
    return SimulationResult(
        settings=settings,
        start=env.loop.start,
        runs=runs,
        table=table,
        daily=report.daily_table(runs),
        targets=report.check_targets(table),
        model_versions={alias: loaded.version for alias, loaded in models.items()},
    )


REPORT_PREFIX: Final = "reports/simulated_ab"


def save_report(store: ObjectStore, result: SimulationResult, stamp: str) -> dict[str, str]:
    """Write the table (JSON, Markdown), the daily series (CSV) and the plots (PNG).

    Returns:
        File name -> object-store key, under ``reports/simulated_ab/<stamp>/``.
    """
    files: dict[str, bytes] = {
        "ab_table.json": result.table.to_json(orient="records", indent=2).encode(),
        "ab_table.md": report.format_table(result.table).encode(),
        "daily.csv": result.daily.to_csv(index=False).encode(),
        **{f"{name}.png": png for name, png in result.plots().items()},
    }
    keys = {}
    for name, data in files.items():
        key = f"{REPORT_PREFIX}/{stamp}/{name}"
        store.put_bytes(key, data)
        keys[name] = key
    return keys
