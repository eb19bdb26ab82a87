"""A forked worker that serves reads the loaded per-item state without copying it.

``fitpulse serve`` loads the state once and forks its workers from it (``server.prefork``).
A page stays shared until a worker writes to it, and reading a Python object writes its
reference count: per-item ``str`` objects that every request reads (item ids, titles) would be
copied, page by page, into every worker. Each test builds the structures in a fresh interpreter
(the heap of a test process that ran other tests would add its own noise), forks, reads through
them in the child as requests do, and compares the child's new private memory with the size of
the per-item strings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc"
)

COMMON = textwrap.dedent(
    """
    import gc, json, os, sys
    from pathlib import Path
    import numpy as np
    import pandas as pd

    N_ITEMS = 300_000
    ids = [f"workout-{k:07d}" for k in range(N_ITEMS)]

    def private_bytes():
        total = 0
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
            name, value, *_ = line.split()
            if name in ("Private_Dirty:", "Private_Clean:"):
                total += int(value) * 1024
        return total

    def growth_in_child(work):
        gc.collect()
        gc.freeze()  # as serve_forked does before forking
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read_end)
                before = private_bytes()
                work()
                os.write(write_end, json.dumps(private_bytes() - before).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child failed"
        return json.loads(data)

    def strings_bytes(values):
        return sum(sys.getsizeof(v) for v in values)
    """
)

INDEX = textwrap.dedent(
    """
    from fitpulse_orchestration.retrieval.index import IndexParams, build_item_index

    vectors = np.random.default_rng(3).standard_normal((N_ITEMS, 4)).astype(np.float32)
    index = build_item_index(np.array(ids), vectors, IndexParams(exact_threshold=N_ITEMS))
    del vectors
    queries = np.random.default_rng(4).standard_normal((300, 4)).astype(np.float32)

    def search():
        # One query per call, as a request searches (no large BLAS buffers).
        for query in queries:
            items, _ = index.search(query[None, :], 200)
            assert len(set(items[0].tolist())) == 200

    print(json.dumps([growth_in_child(search), strings_bytes(ids)]))
    """
)

CATALOG = textwrap.dedent(
    """
    from fitpulse_orchestration.serving.feed_state import ItemCatalog

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

    def read():
        # As a request does: every candidate's attributes, then the served items' titles. The
        # ids asked for are new strings, as a search returns them.
        for picks in wanted.tolist():
            attrs = catalog.attributes(np.array([f"workout-{k:07d}" for k in picks], object))
            served = catalog.titles(attrs.row[:20])
            assert served[0].startswith("Session ")

    print(json.dumps([growth_in_child(read), strings_bytes(ids) + strings_bytes(titles)]))
    """
)


def _growth_and_strings(body: str) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", COMMON + body], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    growth, strings = json.loads(done.stdout.strip().splitlines()[-1])
    return int(growth), int(strings)


def test_searching_a_forked_index_copies_none_of_its_item_ids() -> None:
    growth, strings = _growth_and_strings(INDEX)
    # 60,000 results over 300,000 ids: reading them as objects copied most of their pages.
    assert growth < strings / 4, (growth, strings)


def test_reading_a_forked_catalog_copies_none_of_its_ids_or_titles() -> None:
    growth, strings = _growth_and_strings(CATALOG)
    assert growth < strings / 4, (growth, strings)
