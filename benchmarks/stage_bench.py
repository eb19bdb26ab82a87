"""Wall time, CPU time and peak memory of each stage of the FitPulse spine.

Runs the spine through the domain functions directly (no Dagster, no MLflow) on a generated
world: world -> ingestion -> snapshot -> feature tables -> ranker frame -> ALS -> FAISS ->
popularity -> ranker -> evaluation, then a serving-shaped micro-benchmark of ``build_feeds``
for 1 user and for a batch of users. Dagster and MLflow overhead is not measured here: compare
with the per-step timings that ``fitpulse demo`` prints.

Every number printed (and written with ``--out``) is measured in this run; nothing is asserted.

    .venv/bin/python benchmarks/stage_bench.py --scale demo
"""

from __future__ import annotations

import os

# Before numpy is imported: implicit and LightGBM parallelise themselves, nested OpenBLAS
# threads would only oversubscribe the cores.
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import datetime as dt
import json
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from bench_common import git_state, jsonable, reset_peak_rss

from fitpulse_orchestration import layout
from fitpulse_orchestration.evaluation.home_feed import evaluate_home_feed, format_table
from fitpulse_orchestration.events.ingest import ingest_day, write_ingested
from fitpulse_orchestration.features.point_in_time import (
    FeatureInputs,
    feature_columns,
    snapshot_item_features,
    snapshot_user_features,
)
from fitpulse_orchestration.features.reference import UNKNOWN, load_catalog, load_profiles
from fitpulse_orchestration.features.snapshot import build_training_snapshot
from fitpulse_orchestration.features.training import (
    SplitParams,
    TimeSplit,
    build_ranker_examples,
    heldout_relevance,
)
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.ranking.feed import (
    HomeFeedModel,
    build_feeds,
    build_ranker_training_frame,
    recently_completed,
    score_frame,
)
from fitpulse_orchestration.ranking.ranker import RankerParams, train_ranker
from fitpulse_orchestration.retrieval.als import AlsParams, build_interaction_matrix, train_als
from fitpulse_orchestration.retrieval.candidates import generate_candidates, seen_items
from fitpulse_orchestration.retrieval.index import build_item_index
from fitpulse_orchestration.retrieval.popularity import PopularityParams, compute_popular_items
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.world.generator import generate_world
from fitpulse_orchestration.world.params import SCALES, world_params

PSEUDONYM_KEY = b"stage-bench-pseudonymization-key"
STAGES = (
    ("world", "world generation"),
    ("ingest", "ingestion (all days)"),
    ("snapshot", "snapshot load"),
    ("features", "feature tables"),
    ("ranker_frame", "ranker examples + frame"),
    ("als", "ALS training"),
    ("index", "FAISS index build"),
    ("popularity", "popularity"),
    ("ranker", "ranker training"),
    ("evaluation", "evaluation"),
)
DATASETS = (
    layout.LANDING_EVENTS,
    layout.LANDING_CATALOG,
    layout.LANDING_USERS,
    layout.WAREHOUSE_EVENTS,
    layout.WAREHOUSE_QUARANTINE,
)


def peak_rss_mib() -> float:
    """High-water mark of this process's resident set size, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class StageClock:
    """Collects wall time, process CPU time and the RSS high-water mark of named stages."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, Any]] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {"parts": {}, "peak_rss_reset": reset_peak_rss()}
        wall, cpu = time.perf_counter(), time.process_time()
        yield record
        record["seconds"] = time.perf_counter() - wall
        record["cpu_seconds"] = time.process_time() - cpu
        record["peak_rss_mib"] = peak_rss_mib()
        self.stages[name] = record


@contextmanager
def part(record: dict[str, Any], name: str) -> Iterator[None]:
    """Add the wall time of the block to ``record['parts'][name]``."""
    start = time.perf_counter()
    yield
    record["parts"][name] = record["parts"].get(name, 0.0) + time.perf_counter() - start


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def landed_data(root: Path, records_landed: int) -> dict[str, dict[str, int]]:
    """Files, bytes and records of each dataset in the store (Parquet rows from metadata)."""
    out = {}
    for prefix in DATASETS:
        files = [p for p in (root / prefix).rglob("*") if p.is_file()]
        parquet_rows = sum(
            pq.ParquetFile(p).metadata.num_rows for p in files if p.suffix == ".parquet"
        )
        out[prefix] = {
            "files": len(files),
            "bytes": sum(p.stat().st_size for p in files),
            "records": records_landed if prefix == layout.LANDING_EVENTS else parquet_rows,
        }
    return out


def serving_users(inputs: FeatureInputs, split: TimeSplit) -> pd.DataFrame:
    """Held-out users (sorted pseudonyms) with the columns ``build_feeds`` needs."""
    profiles = inputs.profiles.set_index("user_id")
    user_ids = sorted(heldout_relevance(inputs.events, split))
    return pd.DataFrame(
        {
            "user_id": user_ids,
            "fitness_level": [profiles["fitness_level"].get(u, UNKNOWN) for u in user_ids],
            "region": [profiles["region"].get(u, UNKNOWN) for u in user_ids],
        }
    )


def bench_serving(
    model: HomeFeedModel,
    inputs: FeatureInputs,
    split: TimeSplit,
    batch: int,
    runs: int,
) -> dict[str, Any]:
    """Median ``build_feeds`` time for 1 user and for ``batch`` users, plus a 1-user breakdown."""
    users = serving_users(inputs, split)
    as_of = split.eval_start
    reset_peak_rss()
    batch = min(batch, len(users))
    build_feeds(model, inputs, users.iloc[:1], as_of)  # warm-up, not counted
    single = [
        timed(lambda i=i: build_feeds(model, inputs, users.iloc[[i % len(users)]], as_of))[0]
        for i in range(runs)
    ]
    many = [
        timed(lambda: build_feeds(model, inputs, users.iloc[:batch], as_of))[0] for _ in range(runs)
    ]
    # Where one user's feed spends its time: the public steps build_feeds is made of.
    one = users.iloc[:1]
    breakdown: dict[str, list[float]] = {
        "seen_items": [],
        "generate_candidates": [],
        "score_frame": [],
        "recently_completed": [],
    }
    for _ in range(runs):
        t_seen, seen = timed(lambda: seen_items(inputs.events, as_of))
        t_cand, candidates = timed(
            lambda seen=seen: generate_candidates(
                one,
                as_of,
                model.als,
                model.index,
                model.popular,
                inputs.catalog,
                seen,
                model.candidate_params,
            )
        )
        t_score, _ = timed(lambda c=candidates: score_frame(model, inputs, c, as_of))
        t_recent, _ = timed(
            lambda: recently_completed(inputs.events, as_of, model.rerank_params.recent_days)
        )
        breakdown["seen_items"].append(t_seen)
        breakdown["generate_candidates"].append(t_cand)
        breakdown["score_frame"].append(t_score)
        breakdown["recently_completed"].append(t_recent)
    single_med = statistics.median(single)
    many_med = statistics.median(many)
    return {
        "runs": runs,
        "batch_users": batch,
        "one_user_seconds": single,
        "batch_seconds": many,
        "one_user_median_s": single_med,
        "batch_median_s": many_med,
        "one_user_ms_per_user": 1000 * single_med,
        "batch_ms_per_user": 1000 * many_med / batch,
        "batch_per_user_speedup": single_med / (many_med / batch),
        "one_user_breakdown_median_s": {k: statistics.median(v) for k, v in breakdown.items()},
        "peak_rss_mib": peak_rss_mib(),
    }


def run_spine(root: Path, scale: str, seed: int, serve_batch: int, serve_runs: int) -> dict:
    """Run every stage once on a fresh store under ``root`` and return the measurements."""
    store = LocalObjectStore(root)
    clock = StageClock()
    pseudonymizer = Pseudonymizer(PSEUDONYM_KEY)

    with clock.stage("world") as rec:
        summary = generate_world(world_params(scale, seed=seed), store)
        rec.update(count=summary.records_written, unit="records")

    with clock.stage("ingest") as rec:
        read = accepted = quarantined = 0
        for day in summary.landed_days:
            with part(rec, "read + validate"):
                result = ingest_day(store, day, pseudonymizer)
            with part(rec, "write partitions"):
                write_ingested(store, day, result)
            read += result.read
            accepted += result.accepted
            quarantined += result.quarantined
        rec.update(count=read, unit="records", accepted=accepted, quarantined=quarantined)

    with clock.stage("snapshot") as rec:
        with part(rec, "load_catalog"):
            catalog = load_catalog(store)
        with part(rec, "load_profiles"):
            profiles = load_profiles(store, pseudonymizer)
        with part(rec, "build_training_snapshot"):
            snapshot = build_training_snapshot(store, catalog, profiles, SplitParams())
        inputs, split = snapshot.inputs, snapshot.split
        rec.update(count=len(inputs.events), unit="events")

    with clock.stage("features") as rec:
        with part(rec, "user table"):
            user_table = snapshot_user_features(inputs, split.end)
        with part(rec, "item table"):
            item_table = snapshot_item_features(inputs, split.end)
        rec.update(count=len(user_table) + len(item_table), unit="rows")

    als_params = AlsParams()
    with clock.stage("ranker_frame") as rec:
        with part(rec, "build_ranker_examples"):
            examples = build_ranker_examples(inputs.events, inputs.catalog, split)
        with part(rec, "build_ranker_training_frame"):
            frame, frame_stats = build_ranker_training_frame(inputs, examples, split, als_params)
        rec.update(count=len(frame), unit="examples", groups=frame_stats["groups"])

    with clock.stage("als") as rec:
        with part(rec, "build_interaction_matrix"):
            matrix = build_interaction_matrix(inputs.events, als_params, before=split.eval_start)
        with part(rec, "train_als"):
            als = train_als(matrix, als_params)
        rec.update(count=int(matrix.matrix.nnz), unit="cells", implicit_fit_s=als.train_seconds)

    with clock.stage("index") as rec:
        index = build_item_index(als.item_ids, als.item_factors)
        rec.update(count=len(index), unit="items", kind=index.kind)

    with clock.stage("popularity") as rec:
        popular = compute_popular_items(
            inputs.events, inputs.profiles, split.eval_start, PopularityParams()
        )
        rec.update(count=len(popular), unit="rows")

    with clock.stage("ranker") as rec:
        ranker = train_ranker(frame, feature_columns(), RankerParams())
        rec.update(
            count=int(ranker.metrics["train_rows"]),
            unit="train rows",
            lightgbm_fit_s=ranker.metrics["train_seconds"],
            trees_used=ranker.metrics["trees_used"],
        )

    model = HomeFeedModel(als, index, popular, ranker)
    with clock.stage("evaluation") as rec:
        evaluation = evaluate_home_feed(model, inputs, split)
        table, feeds = evaluation.table, evaluation.feeds
        heldout_users = int(table.loc[table["slice"] == "all", "users"].iloc[0])
        rec.update(
            count=heldout_users,
            unit="feeds",
            candidate_feeds=int(feeds.feeds["user_id"].nunique()),
            candidates_scored=len(feeds.scored),
        )

    serving = bench_serving(model, inputs, split, serve_batch, serve_runs)
    return {
        "stages": clock.stages,
        "serving": serving,
        "peak_rss_mib": max(
            serving["peak_rss_mib"], *(s["peak_rss_mib"] for s in clock.stages.values())
        ),
        "data": landed_data(root, summary.records_written),
        "world": {
            "users": summary.n_users,
            "items": summary.n_items,
            "valid_events": summary.n_valid_events,
            "records_written": summary.records_written,
            "landed_days": len(summary.landed_days),
        },
        "split": split.as_dict(),
        "evaluation_table": table,
    }


def median_of(runs: list[dict], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def summarize(runs: list[dict]) -> dict[str, Any]:
    """Median stage times over the runs, shares of the total and the derived ratios."""
    stages: dict[str, dict[str, Any]] = {}
    for name, _ in STAGES:
        last = runs[-1]["stages"][name]
        seconds = median_of(runs, "stages", name, "seconds")
        stages[name] = {
            "seconds": seconds,
            "min_seconds": min(r["stages"][name]["seconds"] for r in runs),
            "cpu_seconds": median_of(runs, "stages", name, "cpu_seconds"),
            "peak_rss_mib": max(r["stages"][name]["peak_rss_mib"] for r in runs),
            "count": last["count"],
            "unit": last["unit"],
            "per_second": last["count"] / seconds if seconds else float("nan"),
            "parts": {p: median_of(runs, "stages", name, "parts", p) for p in last["parts"]},
        }
    total = sum(s["seconds"] for s in stages.values())
    for s in stages.values():
        s["share"] = s["seconds"] / total if total else float("nan")
    last = runs[-1]
    ingest, evaluation = stages["ingest"], stages["evaluation"]
    serving = {
        key: median_of(runs, "serving", key)
        for key in ("one_user_ms_per_user", "batch_ms_per_user", "batch_per_user_speedup")
    }
    ratios = {
        "ingest_records_per_s": ingest["count"] / ingest["seconds"],
        "ingest_accepted_events_per_s": last["stages"]["ingest"]["accepted"] / ingest["seconds"],
        "eval_feeds_per_s": evaluation["count"] / evaluation["seconds"],
        "eval_ms_per_feed": 1000 * evaluation["seconds"] / evaluation["count"],
        "serve_one_user_ms": serving["one_user_ms_per_user"],
        "serve_batch_ms_per_user": serving["batch_ms_per_user"],
        "serve_batch_vs_one_user_speedup": serving["batch_per_user_speedup"],
        "als_implicit_fit_share_of_stage": median_of(runs, "stages", "als", "implicit_fit_s")
        / stages["als"]["seconds"],
        "ranker_lightgbm_fit_share_of_stage": median_of(runs, "stages", "ranker", "lightgbm_fit_s")
        / stages["ranker"]["seconds"],
        "world_records_per_s": stages["world"]["per_second"],
    }
    return {"stages": stages, "total_seconds": total, "ratios": ratios}


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def report(meta: dict[str, Any], summary: dict[str, Any], runs: list[dict]) -> str:
    reset = all(r["stages"][name]["peak_rss_reset"] for r in runs for name, _ in STAGES)
    rss_note = (
        "peak RSS: high-water mark during the stage (reset before each stage), max over repeats"
        if reset
        else "peak RSS: process high-water mark so far (this OS cannot reset it per stage)"
    )
    lines = [
        f"FitPulse stage benchmark: scale={meta['scale']} seed={meta['seed']} "
        f"repeat={meta['repeat']} ({meta['started']})",
        f"machine: {meta['cpu_count']} cores, {meta['platform']}, Python {meta['python']}; "
        f"load average 1/5/15 min at start {meta['loadavg_start']}, at end {meta['loadavg_end']}",
        f"code: commit {meta['git']['commit']}, {len(meta['git']['modified_files'])} "
        "tracked files modified in the working tree",
        "timings: median over repeats; cpu/wall > 1 means the stage used more than one core; "
        f"implicit and faiss pre-imported ({meta['lazy_import_seconds']:.2f} s, not in any stage)",
        rss_note,
        "",
        f"{'stage':<32}{'seconds':>9}{'min':>8}{'share':>8}{'cpu/wall':>10}{'peak RSS':>12}"
        "  throughput",
    ]
    stages = summary["stages"]
    for name, label in STAGES:
        s = stages[name]
        cpu_ratio = s["cpu_seconds"] / s["seconds"] if s["seconds"] else float("nan")
        lines.append(
            f"{label:<32}{s['seconds']:>9.2f}{s['min_seconds']:>8.2f}{s['share']:>8.1%}{cpu_ratio:>10.2f}"
            f"{s['peak_rss_mib']:>8,.0f} MiB  {s['per_second']:>12,.0f} {s['unit']}/s"
            f"  ({s['count']:,} {s['unit']})"
        )
        for p, seconds in s["parts"].items():
            lines.append(f"  - {p:<28}{seconds:>9.2f}")
    lines.append(f"{'total':<32}{summary['total_seconds']:>9.2f}")
    lines.append("")

    serving = runs[-1]["serving"]
    r = summary["ratios"]
    lines += [
        f"serving micro-benchmark (build_feeds as of the evaluation start, median of "
        f"{serving['runs']} runs):",
        f"  1 user                      {r['serve_one_user_ms']:>10,.1f} ms per user",
        f"  {serving['batch_users']:<3} users                   "
        f"{r['serve_batch_ms_per_user']:>10,.1f} ms per user"
        f"  ({serving['batch_median_s']:.2f} s per batch)",
        f"  batch vs 1-user speedup     {r['serve_batch_vs_one_user_speedup']:>10,.1f}x per user",
        "  1-user breakdown (median s): "
        + ", ".join(f"{k} {v:.3f}" for k, v in serving["one_user_breakdown_median_s"].items()),
        f"  peak RSS                    {serving['peak_rss_mib']:>10,.0f} MiB",
        "",
        "ratios:",
        f"  ingestion                   {r['ingest_records_per_s']:>10,.0f} records/s read, "
        f"{r['ingest_accepted_events_per_s']:,.0f} accepted events/s",
        f"  evaluation                  {r['eval_feeds_per_s']:>10,.1f} feeds/s, "
        f"{r['eval_ms_per_feed']:,.1f} ms per feed (held-out users, baselines included)",
        f"  world generation            {r['world_records_per_s']:>10,.0f} landed records/s",
        f"  ALS: implicit fit / stage   {r['als_implicit_fit_share_of_stage']:>10.1%}",
        f"  ranker: LightGBM fit/stage  {r['ranker_lightgbm_fit_share_of_stage']:>10.1%}",
        f"  peak RSS                    {max(x['peak_rss_mib'] for x in runs):>10,.0f} MiB",
        "",
        "landed data (last run):",
    ]
    for prefix, d in runs[-1]["data"].items():
        lines.append(
            f"  {prefix:<22}{d['files']:>6,} files{_fmt_bytes(d['bytes']):>13}"
            f"{d['records']:>12,} records"
        )
    lines += ["", "evaluation (last run):", format_table(runs[-1]["evaluation_table"])]
    return "\n".join(lines)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="demo", choices=sorted(SCALES))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="runs of the whole spine")
    parser.add_argument("--serve-batch", type=int, default=100, help="users per batch feed call")
    parser.add_argument("--serve-runs", type=int, default=5, help="runs per serving measurement")
    parser.add_argument("--out", type=Path, help="write every number as JSON here")
    parser.add_argument("--workdir", type=Path, help="keep the stores here (default: temp dir)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.serve_runs < 1 or args.serve_batch < 1:
        parser.error("--repeat, --serve-runs and --serve-batch must be at least 1")

    meta: dict[str, Any] = {
        "scale": args.scale,
        "seed": args.seed,
        "repeat": args.repeat,
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "openblas_num_threads": os.environ["OPENBLAS_NUM_THREADS"],
        "loadavg_start": _load(),
        "git": git_state(),
    }
    import_s, _ = timed(_import_lazy_modules)
    meta["lazy_import_seconds"] = import_s

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fitpulse-bench-"))
    runs = []
    try:
        for i in range(args.repeat):
            root = workdir / f"run-{i}"
            if root.exists() and any(root.iterdir()):
                parser.error(f"{root} is not empty; pass an empty --workdir")
            print(f"run {i + 1}/{args.repeat} in {root} ...", file=sys.stderr, flush=True)
            runs.append(run_spine(root, args.scale, args.seed, args.serve_batch, args.serve_runs))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["loadavg_end"] = _load()

    summary = summarize(runs)
    print(report(meta, summary, runs))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": meta, **summary, "runs": runs}
        args.out.write_text(json.dumps(jsonable(payload), indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


def _import_lazy_modules() -> None:
    """Import what the domain imports inside functions, so no stage pays for it."""
    import faiss  # noqa: F401
    import implicit.cpu.als  # noqa: F401


if __name__ == "__main__":
    raise SystemExit(main())
