"""Online-store reads on the request path: one member's history record and feature row.

Materializes ``--members`` synthetic members (11 user features, a history record of 30 engaged
items each) into a SQLite store in a temporary folder and, when a server answers at
``--redis-url``, into Redis under a random key prefix (deleted at the end). Then it times, per
member, the two reads the feed path made before ``lookup_member`` (``lookup_records`` for the
history, ``lookup_row`` for the features) against ``lookup_member`` (one round trip), over
``--requests`` random members after 200 untimed ones. Nothing is asserted; every number printed
is measured in this run.

    .venv/bin/python benchmarks/online_store_bench.py
    .venv/bin/python benchmarks/online_store_bench.py --members 100000 --requests 5000
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from fitpulse_orchestration.storage.online_store import (
    OnlineFeatureStore,
    RedisOnlineStore,
    SQLiteOnlineStore,
)

AS_OF = pd.Timestamp("2026-11-01", tz="UTC")
FEATURES = tuple(f"u_f{i}" for i in range(11))


def fill(store: OnlineFeatureStore, members: int, seed: int) -> list[str]:
    """Materialize the user table and the history records; return the member ids."""
    rng = np.random.default_rng(seed)
    ids = [f"p_{i:08d}" for i in range(members)]
    frame = pd.DataFrame({"user_id": ids, **{f: rng.random(members) for f in FEATURES}})
    store.materialize("user", frame, FEATURES, AS_OF)
    records = {i: {"level": "beginner", "engaged": [f"wk_{j}" for j in range(30)]} for i in ids}
    store.materialize_records("history", records, AS_OF)
    return ids


def per_member(fn: Callable[[str], object], ids: list[str]) -> tuple[float, float]:
    """Mean wall and CPU milliseconds of ``fn`` per member id (after 200 untimed calls)."""
    for member in ids[:200]:
        fn(member)
    wall, cpu = time.perf_counter(), time.process_time()
    for member in ids[200:]:
        fn(member)
    n = len(ids) - 200
    return (time.perf_counter() - wall) / n * 1e3, (time.process_time() - cpu) / n * 1e3


def bench(name: str, store: OnlineFeatureStore, args: argparse.Namespace) -> None:
    members = fill(store, args.members, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    ids = [members[i] for i in rng.integers(0, len(members), args.requests + 200)]
    store.cached_meta("user")
    store.cached_meta("history")
    runs = {
        "lookup_records + lookup_row": lambda m: (
            store.lookup_records("history", [m]).get(m),
            store.lookup_row("user", m),
        ),
        "lookup_member": lambda m: store.lookup_member(m, "history", "user"),
    }
    for label, fn in runs.items():
        wall, cpu = per_member(fn, ids)
        print(f"| {name} | {label} | {wall:.3f} | {cpu:.3f} |")


def redis_answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 0.5):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    print(f"{args.members:,} members, {args.requests:,} timed lookups each")
    print("| store | reads | wall ms per member | CPU ms per member |")
    print("|---|---|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        bench("SQLite", SQLiteOnlineStore(Path(folder) / "online.sqlite"), args)
    if not redis_answers(args.redis_url):
        print(f"no Redis server at {args.redis_url}: its rows are left out")
        return
    prefix = f"fitpulse-bench:{uuid.uuid4().hex}"
    store = RedisOnlineStore(args.redis_url, prefix=prefix)
    try:
        bench("Redis", store, args)
    finally:
        import redis

        client = redis.Redis.from_url(args.redis_url)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


if __name__ == "__main__":
    main()
