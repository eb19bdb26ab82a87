"""The request clock: per-stage time against ``StageBudgets`` and the request deadline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from fitpulse_orchestration.serving.feed_types import StageBudgets


class StageClock:
    """Milliseconds spent per stage of one request, against its budgets and deadline."""

    def __init__(self, budgets: StageBudgets) -> None:
        self.budgets = budgets
        self.start = time.perf_counter()
        self.stage_ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as (part of) stage ``name``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_ms[name] = self.stage_ms.get(name, 0.0) + (time.perf_counter() - t0) * 1e3

    def overran(self, name: str) -> bool:
        """Whether ``name`` went past its budget or the request past its deadline."""
        elapsed = (time.perf_counter() - self.start) * 1e3
        return (
            self.stage_ms.get(name, 0.0) > self.budgets.budget(name)
            or elapsed > self.budgets.deadline_ms
        )
