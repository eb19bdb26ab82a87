"""What a forked serving worker copies of the state it was forked from, by what it does.

``fitpulse serve`` loads the models once and forks its workers from that process
(``server/prefork.py``): a worker shares every page until it writes to it. This script loads a
home's service as ``fitpulse serve`` does (``serve_bench.load_service``), with
``serve_bench``'s synthetic ``--index-items`` index swapped in (0: the trained index only),
collects and freezes the heap as ``serve_forked`` does, then forks one child per scenario:

- ``idle``: nothing (the floor);
- ``requests N``: ``FeedService.home_feed`` for N requests in the child's main thread, with no
  served log;
- ``requests N + served log``: the same with the served log recording every feed, its writer
  thread flushing every ``flush_s`` seconds into a temporary folder (the service's feature
  sample share); read once the requests are done and again after the log's ``close``.

Each child reads ``/proc/self/smaps_rollup`` before and after its work: the private pages it
gained are pages it wrote, copies of shared ones (a reference count, a reused free slot of the
parent's heap) or its own allocations. The parent's own private memory is what a worker that
loaded its own copy would hold, the denominator of issue 22's "adding a worker adds at most 15%
of one worker's model memory". Nothing is asserted; every number is measured in the run.

    .venv/bin/python benchmarks/fork_memory_bench.py              # demo home, 1M items
    .venv/bin/python benchmarks/fork_memory_bench.py --home H --index-items 0
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import argparse
import datetime as dt
import gc
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import serve_bench
from bench_common import git_state, jsonable

from fitpulse_orchestration.serving.feed_service import FeedService
from fitpulse_orchestration.serving.logs import ServedLog
from fitpulse_orchestration.storage import LocalObjectStore


def private_mib() -> float:
    """Private (dirty and clean) memory of this process, MiB."""
    return serve_bench.memory_mib(os.getpid())["private"]


def in_child(work: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Run ``work`` in a forked child; its private MiB before and after, and what it reports."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(read_end)
            before = private_mib()
            started = time.perf_counter()
            extra = work()
            out = {
                "before_mib": before,
                "after_mib": private_mib(),
                "seconds": time.perf_counter() - started,
                **extra,
            }
            os.write(write_end, json.dumps(out).encode())
        except BaseException as exc:  # the parent reports it
            os.write(write_end, json.dumps({"error": repr(exc)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    result: dict[str, float] = json.loads(data)
    if "error" in result:
        raise SystemExit(f"a child failed: {result['error']}")
    result["gained_mib"] = result["after_mib"] - result["before_mib"]
    return result


def scenarios(
    service: FeedService, users: list[str], args: argparse.Namespace, log_root: Path
) -> list[tuple[str, int, Callable[[], dict[str, float]]]]:
    def serve(n: int) -> Callable[[], dict[str, float]]:
        def work() -> dict[str, float]:
            service.on_served = None
            for user in users[:n]:
                service.home_feed(user)
            return {}

        return work

    def serve_logged(n: int) -> Callable[[], dict[str, float]]:
        def work() -> dict[str, float]:
            served_log = ServedLog(
                LocalObjectStore(log_root / f"child-{n}"),
                feature_share=service.config.feature_log_share,
                flush_s=args.flush_s,
            )
            served_log.start()
            service.on_served = served_log.record
            for user in users[:n]:
                service.home_feed(user)
            during = private_mib()
            served_log.close()
            return {"during_mib": during, "written_exposures": served_log.written_exposures}

        return work

    out: list[tuple[str, int, Callable[[], dict[str, float]]]] = [("idle", 0, dict)]
    out += [("requests", n, serve(n)) for n in args.requests]
    out += [("requests + served log", n, serve_logged(n)) for n in args.log_requests]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="trained project home (default: a demo home)")
    parser.add_argument("--scale", default="demo", help="world scale of a created demo home")
    parser.add_argument("--seed", type=int, default=7, help="world, request and synthetic seed")
    parser.add_argument("--index-items", type=int, default=1_000_000, help="0: trained index")
    parser.add_argument("--requests", type=serve_bench._ints, default=[1, 2000, 6000])
    parser.add_argument("--log-requests", type=serve_bench._ints, default=[2000, 6000])
    parser.add_argument("--flush-s", type=float, default=5.0, help="the served log's interval")
    parser.add_argument("--cold-share", type=float, default=0.2, help="share of unknown ids")
    parser.add_argument("--json-out", type=Path, help="write every number as JSON here")
    args = parser.parse_args(argv)
    if not Path("/proc/self/smaps_rollup").exists():
        raise SystemExit("needs Linux /proc/self/smaps_rollup")

    args.fresh_home = False
    home, home_info = serve_bench.prepare_home(args)
    known = serve_bench.known_user_ids(home)
    users = serve_bench.request_users(
        known, max([*args.requests, *args.log_requests, 1]), args.cold_share, args.seed
    )
    log_root = Path(tempfile.mkdtemp(prefix="fitpulse-fork-memory-"))
    service, _ = serve_bench.load_service(home, log_root / "unused")
    facts: dict[str, Any] = {"index_items": 0}
    if args.index_items > 0:
        facts, service, _ = serve_bench.run_large(home, service, args)
    service.on_served = None
    gc.collect()
    gc.freeze()  # as ``serve_forked`` does before the first fork
    parent = private_mib()
    rows: list[dict[str, Any]] = []
    for name, n, work in scenarios(service, users, args, log_root):
        serve_bench.say(f"child: {name}, {n} requests")
        rows.append({"scenario": name, "requests": n, **in_child(work)})

    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git": git_state(),
        "home": {"path": str(home), **home_info},
        "index_items": facts.get("index_items", 0),
        "flush_s": args.flush_s,
        "feature_share": service.config.feature_log_share,
        "parent_private_mib": parent,
    }
    print(f"fork memory benchmark ({meta['started']}), commit {meta['git']['commit']}")
    print(f"home {home}; index items {meta['index_items']:,}; parent private {parent:,.0f} MiB")
    print(f"{'scenario':<24}{'requests':>9}{'gained MiB':>12}{'of parent':>11}{'s':>8}  notes")
    for row in rows:
        notes = ""
        if "during_mib" in row:
            notes = (
                f"{row['during_mib'] - row['before_mib']:,.0f} MiB before the log's close; "
                f"{row['written_exposures']:,} exposures written"
            )
        print(
            f"{row['scenario']:<24}{row['requests']:>9,}{row['gained_mib']:>12,.1f}"
            f"{row['gained_mib'] / parent:>11.1%}{row['seconds']:>8.1f}  {notes}"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(jsonable({"meta": meta, "rows": rows}), indent=2))
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
