"""Ingestion throughput per core: this checkout against a baseline commit, in one run.

Lands ``--lines`` collector lines of one day as NDJSON.gz batches (``capacity_bench``'s
generator: valid records in the collectors' shape), replaces ``--bad-share`` of them with
hostile lines (every reason of the event contract), then times ``ingest_batches`` and the
write of the day's partitions, as the ``raw_events`` asset runs them, on the same files with
this checkout's code and, with ``--baseline REV``, with that commit's code (a
temporary ``git worktree``). Each timing runs in a fresh child process, one core, rounds
alternating between the versions. It prints lines/s per core, CPU/wall, the peak RSS per line
and whether both versions give the same result (counts, reasons, clean rows and quarantine
rows, compared by digest). Nothing is asserted about timings.

    .venv/bin/python benchmarks/ingest_bench.py --baseline 3fb7219
    .venv/bin/python benchmarks/ingest_bench.py --lines 1000000 --repeat 1 --out /tmp/ing.json
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import datetime as dt
import gzip
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import git_state, peak_rss_kib, proc_status_kib, reset_peak_rss

REPO = Path(__file__).resolve().parent.parent
DAY = dt.date(2026, 3, 2)

HOSTILE: tuple[bytes, ...] = (
    b"",
    b"not json",
    b"[1, 2]",
    b'{"event_id": "h", "payload": {"hr": NaN}}',
    b'{"event_id": "h", "user_id": "usr_\xff"}',
    b'{"event_id": "h", "event_type": "click", "user_id": "../x", "ts": "2026-03-02T01:00:00Z"}',
    b'{"event_id": "h", "event_type": "teleport", "user_id": "u", "ts": "2026-03-02T01:00:00Z"}',
    b'{"event_id": "h", "event_type": "click", "user_id": 7, "ts": "2026-03-02T01:00:00Z"}',
    b'{"event_id": "h", "event_type": "click", "user_id": "u", "ts": "yesterday"}',
    b'{"event_id": "h", "event_type": "click", "user_id": "u", "ts": "1970-01-01T00:00:00Z"}',
    b'{"event_id": "h", "event_type": "impression", "user_id": "u", "item_id": "i", '
    b'"ts": "2026-03-02T01:00:00Z", "request_id": "r", "position": -1}',
    b'{"event_id": "h", "payload": ' + b'{"x": ' * 40 + b"1" + b"}" * 41,
)


def land(root: Path, lines: int, batch_lines: int, bad_share: float, seed: int) -> dict[str, Any]:
    """Write the landing files; return their counts."""
    import capacity_bench

    info = capacity_bench.write_landing(
        np.random.default_rng([seed, 0]), lines, root, batch_lines, DAY
    )
    rng = np.random.default_rng([seed, 1])
    bad = 0
    for path in sorted(root.rglob("*.ndjson.gz")):
        rows = gzip.decompress(path.read_bytes()).split(b"\n")[:-1]
        picks = np.flatnonzero(rng.random(len(rows)) < bad_share)
        for i in picks:
            rows[i] = HOSTILE[int(rng.integers(len(HOSTILE)))]
        bad += len(picks)
        path.write_bytes(gzip.compress(b"\n".join(rows) + b"\n"))
    info["hostile_lines"] = bad
    return info


def child(root: Path) -> dict[str, Any]:
    """Time ingesting every file under ``root`` and writing the day's partitions, as the
    ``raw_events`` asset does (the code on ``sys.path``): with a ``CleanPartitionWriter`` where
    the code has one (clean rows streamed to Parquet row groups), else the rows collected and
    written at the end."""
    from fitpulse_orchestration import layout
    from fitpulse_orchestration.events import ingest
    from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
    from fitpulse_orchestration.storage import LocalObjectStore, read_parquet

    batches = [
        (path.relative_to(root).as_posix(), path.read_bytes())
        for path in sorted(root.rglob("*.ndjson.gz"))
    ]
    pseudonymizer = Pseudonymizer.from_secret("ingest-bench-secret-" + "x" * 12)
    out = Path(tempfile.mkdtemp(prefix="fitpulse-ingest-bench-out-"))
    store = LocalObjectStore(out)
    writer = getattr(ingest, "CleanPartitionWriter", None)
    before = proc_status_kib("VmRSS") or 0
    reset_peak_rss()
    cpu0, t0 = time.process_time(), time.perf_counter()
    if writer is None:
        result = ingest.ingest_batches(batches, DAY, pseudonymizer)
        ingest.write_ingested(store, DAY, result)
    else:
        clean = writer()
        result = ingest.ingest_batches(batches, DAY, pseudonymizer, sink=clean)
        ingest.write_ingested(store, DAY, result, clean)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    peak = peak_rss_kib()
    events = read_parquet(store, layout.warehouse_key(layout.WAREHOUSE_EVENTS, DAY, "events"))
    shutil.rmtree(out, ignore_errors=True)
    digest = hashlib.sha256()
    # The quarantine in landing order: its row order follows the ingestion's chunks.
    quarantine = result.quarantine.sort_values(["source_file", "line_no"], kind="stable")
    for frame in (events, quarantine):
        digest.update(frame.astype(str).to_csv(index=False).encode())
    import fitpulse_orchestration

    return {
        "code": str(Path(fitpulse_orchestration.__file__).parent.parent),
        "streamed": writer is not None,
        "wall_s": wall,
        "cpu_s": cpu,
        "read": result.read,
        "accepted": result.accepted,
        "quarantined": result.quarantined,
        "duplicates": result.duplicates,
        "balanced": result.balanced,
        "reasons": dict(sorted(result.reasons.items())),
        "digest": digest.hexdigest(),
        "rss_before_kib": before,
        "peak_rss_kib": peak,
    }


def run_child(code: Path, root: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(code))
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(root)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=code,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200_000, help="landed lines")
    parser.add_argument("--batch-lines", type=int, default=5_000, help="lines per NDJSON.gz file")
    parser.add_argument("--bad-share", type=float, default=0.01, help="share of hostile lines")
    parser.add_argument("--baseline", help="a commit to compare with (a temporary worktree)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per version (median)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="write every number as JSON")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return

    work = Path(tempfile.mkdtemp(prefix="fitpulse-ingest-bench-"))
    versions: dict[str, Path] = {"this checkout": REPO}
    try:
        if args.baseline:
            tree = work / "baseline"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(tree), args.baseline],
                cwd=REPO,
                check=True,
                capture_output=True,
            )
            versions = {f"baseline {args.baseline}": tree, **versions}
        print(f"landing {args.lines:,} lines ...", file=sys.stderr, flush=True)
        root = work / "landing"
        landed = land(root, args.lines, args.batch_lines, args.bad_share, args.seed)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in versions}
        names = list(versions)
        for r in range(args.repeat):
            for name in names if r % 2 == 0 else names[::-1]:
                print(f"{name}, round {r + 1}/{args.repeat}", file=sys.stderr, flush=True)
                runs[name].append(run_child(versions[name], root))
    finally:
        if args.baseline:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(work / "baseline")],
                cwd=REPO,
                check=False,
                capture_output=True,
            )
        shutil.rmtree(work, ignore_errors=True)

    lines = landed["lines"]
    summary: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        wall = statistics.median(x["wall_s"] for x in results)
        cpu = statistics.median(x["cpu_s"] for x in results)
        peak = statistics.median(x["peak_rss_kib"] - x["rss_before_kib"] for x in results)
        summary[name] = {
            "wall_s": wall,
            "cpu_s": cpu,
            "lines_per_s": lines / wall,
            "lines_per_cpu_s": lines / cpu,
            "peak_rss_bytes_per_line": peak * 1024 / lines,
            "counts": {k: results[0][k] for k in ("read", "accepted", "quarantined", "duplicates")},
            "balanced": all(x["balanced"] for x in results),
            "digest": results[0]["digest"],
            "reasons": results[0]["reasons"],
        }
    same = len({s["digest"] for s in summary.values()}) == 1
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\ningest_batches and the partition write, {lines:,} lines in {landed['files']} "
        f"NDJSON.gz files "
        f"({landed['hostile_lines']:,} hostile), median of {args.repeat}, one process each; "
        f"load {load}\n"
    )
    print("| code | wall s | lines/s | lines per CPU-s | cpu/wall | peak RSS B/line | accepted |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, s in summary.items():
        print(
            f"| {name} | {s['wall_s']:.2f} | {s['lines_per_s']:,.0f} | "
            f"{s['lines_per_cpu_s']:,.0f} | {s['cpu_s'] / s['wall_s']:.2f} | "
            f"{s['peak_rss_bytes_per_line']:,.0f} | {s['counts']['accepted']:,} |"
        )
    if len(summary) == 2:
        base, new = summary.values()
        ratio = new["lines_per_s"] / base["lines_per_s"]
        print(f"\nthroughput ratio (this / baseline): {ratio:.2f}")
        print(f"same result (counts, reasons, clean and quarantine rows): {same}")
    print(f"balanced: {all(s['balanced'] for s in summary.values())}")
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "git": git_state(),
                    "args": {k: str(v) for k, v in vars(args).items() if k != "child"},
                    "landed": landed,
                    "load_end": load,
                    "summary": summary,
                    "runs": runs,
                    "same_result": same,
                },
                indent=2,
            )
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
