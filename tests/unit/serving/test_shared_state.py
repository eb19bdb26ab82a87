"""A forked worker that serves reads the loaded per-item state without copying it.

``fitpulse serve`` loads the state once and forks its workers from it (``server.prefork``).
A page stays shared until a worker writes to it, and reading a Python object writes its
reference count: per-item ``str`` objects that every request reads (item ids, titles) would be
copied, page by page, into every worker. These tests fork after building the structures, read
through them in the child as requests do, and compare the child's new private memory with the
size of the per-item strings.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.retrieval.index import IndexParams, build_item_index
from fitpulse_orchestration.serving.feed_state import ItemCatalog

N_ITEMS = 300_000

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc"
)


def _private_bytes() -> int:
    total = 0
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        if name in ("Private_Dirty:", "Private_Clean:"):
            total += int(value) * 1024
    return total


def _private_growth_in_child(work: Callable[[], None]) -> int:
    """Bytes of private memory a forked child gains while it runs ``work``."""
    gc.collect()
    gc.freeze()  # as ``serve_forked`` does before forking
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 0
        try:
            os.close(read_end)
            before = _private_bytes()
            work()
            os.write(write_end, json.dumps(_private_bytes() - before).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    gc.unfreeze()
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed"
    growth: int = json.loads(data)
    return growth


def _strings_bytes(values: list[str]) -> int:
    return sum(sys.getsizeof(v) for v in values)


def test_searching_a_forked_index_copies_none_of_its_item_ids() -> None:
    ids = [f"workout-{k:07d}" for k in range(N_ITEMS)]
    vectors = np.random.default_rng(3).standard_normal((N_ITEMS, 4)).astype(np.float32)
    index = build_item_index(np.array(ids), vectors, IndexParams(exact_threshold=N_ITEMS))
    del vectors
    queries = np.random.default_rng(4).standard_normal((300, 4)).astype(np.float32)
    found: list[int] = []

    def search() -> None:
        # One query per call, as a request searches (no large BLAS buffers).
        for query in queries:
            items, _ = index.search(query[None, :], 200)
            found.append(len(set(items[0].tolist())))
        assert found == [200] * len(queries)

    growth = _private_growth_in_child(search)
    # 60,000 results over 300,000 ids: reading the ids as objects copies most of their pages.
    assert growth < _strings_bytes(ids) / 4, (growth, _strings_bytes(ids))


def test_reading_a_forked_catalog_copies_none_of_its_ids_or_titles() -> None:
    ids = [f"workout-{k:07d}" for k in range(N_ITEMS)]
    titles = [f"Session {k}: intervals for every level" for k in range(N_ITEMS)]
    catalog = ItemCatalog(
        pd.DataFrame(
            {
                "item_id": ids,
                "item_type": "workout",
                "title": titles,
                "category": "cardio",
                "difficulty": "beginner",
                "intensity": "low",
                "published_at": pd.Timestamp("2026-01-01", tz="UTC"),
                "status": "published",
            }
        )
    )
    wanted = np.random.default_rng(5).integers(0, N_ITEMS, (300, 200))

    def read() -> None:
        # As a request does: every candidate's attributes, then the served items' titles. The
        # ids asked for are new strings, as a search returns them.
        for picks in wanted.tolist():
            attrs = catalog.attributes(np.array([f"workout-{k:07d}" for k in picks], object))
            served = catalog.titles(attrs.row[:20])
            assert served[0].startswith("Session ")

    growth = _private_growth_in_child(read)
    assert growth < (_strings_bytes(ids) + _strings_bytes(titles)) / 4, growth
