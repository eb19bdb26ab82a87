"""Request stalls caused by the served log's writer thread, in process (issue 22).

The served log (``serving.logs.ServedLog``) serializes queued feeds in a writer thread that
shares the GIL with the request thread. This benchmark serves ``--requests`` sequential feeds
on a trained home (``FeedService.home_feed``, 20% unknown ids) three ways, one after the other:

- ``no-log``: no served log at all (the floor);
- ``queued``: feeds queued, the writer thread not started (what the queue alone costs: the
  garbage collector scans what is queued);
- ``writer``: the writer thread running as in ``fitpulse serve`` (every ``flush_s``).

Each mode runs in its own process (a fresh service, nothing frozen from another mode). For
each it prints the latency percentiles, the requests over 20 ms and every garbage
collection over 5 ms (``gc.callbacks``), plus what the last collection's generation 2 held.
Every number is measured in the run; nothing is asserted. The served log writes into a
temporary store, never into the home.

    .venv/bin/python benchmarks/served_log_stall_bench.py --home /tmp/demo/home --requests 20000
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import gc
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from serve_bench import known_user_ids, load_service, request_users

MODES = ("no-log", "queued", "writer")


def run_mode(home: Path, mode: str, requests: int, seed: int) -> dict[str, Any]:
    """Serve ``requests`` feeds after a 200-request warm-up; latencies and collections."""
    service, served_log = load_service(home, Path(tempfile.mkdtemp(prefix="stall-log-")))
    if mode == "no-log":
        service.on_served = None
    elif mode == "writer":
        served_log.start()
    users = request_users(known_user_ids(home), requests + 200, 0.2, seed)
    for user in users[:200]:
        service.home_feed(user)
    pauses: list[tuple[int, float]] = []
    started: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started["t"] = time.perf_counter()
        else:
            pauses.append((int(info["generation"]), (time.perf_counter() - started["t"]) * 1e3))

    gc.callbacks.append(on_gc)
    latencies = np.empty(requests)
    try:
        for k, user in enumerate(users[200:]):
            t0 = time.perf_counter()
            service.home_feed(user)
            latencies[k] = (time.perf_counter() - t0) * 1e3
    finally:
        gc.callbacks.remove(on_gc)
        if mode == "writer":
            served_log.close()
    gen2 = Counter(type(o).__name__ for o in gc.get_objects(2))
    return {
        "mode": mode,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "p999_ms": float(np.percentile(latencies, 99.9)),
        "max_ms": float(latencies.max()),
        "over_20_ms": int((latencies > 20).sum()),
        "collections": len(pauses),
        "collections_over_5_ms": [(g, round(ms, 1)) for g, ms in pauses if ms > 5],
        "gen2_objects": sum(gen2.values()),
        "gen2_top": gen2.most_common(5),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a trained home (fitpulse demo)")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma list of {MODES}")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}")
    if len(modes) > 1:
        print(f"{args.requests:,} sequential requests per mode on {args.home}", flush=True)
        header = f"{'mode':8} {'p50':>6} {'p99':>6} {'p99.9':>7} {'max':>7} {'>20ms':>6} {'gc':>5}"
        print(header + "  collections over 5 ms (generation, ms); generation 2 after the run")
        for mode in modes:
            argv = [sys.executable, __file__, "--home", str(args.home), "--modes", mode]
            argv += ["--requests", str(args.requests), "--seed", str(args.seed)]
            subprocess.run(argv, check=True)
        return 0
    for mode in modes:
        r = run_mode(args.home, mode, args.requests, args.seed)
        print(
            f"{r['mode']:8} {r['p50_ms']:6.2f} {r['p99_ms']:6.2f} {r['p999_ms']:7.2f} "
            f"{r['max_ms']:7.1f} {r['over_20_ms']:6d} {r['collections']:5d}  "
            f"{r['collections_over_5_ms'][:8]}; {r['gen2_objects']:,} objects {r['gen2_top']}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
