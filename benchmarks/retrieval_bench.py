"""Retrieval ANN index benchmark: exact vs HNSW vs IVF, 10K to 1M items, to pick the default.

For every catalog size of ``--sizes`` (default 10K, 50K, 100K, 1M) and every index type of
``--indexes``, the script builds the index the way ``retrieval/index.py`` does (the base index
wrapped in ``faiss.IndexIDMap2``, filled with ``add_with_ids`` and random 63-bit int64 ids like
the project's blake2b item-id hashes) and measures:

- build: wall seconds with ``--build-threads`` OpenMP threads (IVF and SQ8: training included,
  and the training time alone);
- memory: the bytes of ``faiss.serialize_index`` (deterministic; it holds the vectors, the graph
  or the lists, and the id array, but not ``IndexIDMap2``'s reverse hash map, rebuilt at load),
  and the process RSS delta of the build (``/proc/self/status`` after ``malloc_trim``, Linux
  only; it does include the reverse map);
- single-query latency: wall p50, p99 and mean, and mean CPU time, over ``--single-queries``
  calls of one query each, on one thread (``faiss.omp_set_num_threads(1)``, as the serving
  process runs), after a warm-up;
- batched throughput: ``--queries`` queries in batches of ``--batch``, on 1 thread (per CPU
  second) and on 2 threads (per wall second);
- recall@100: the share of the exact top-100 (``IndexFlatIP`` over the same vectors and ids)
  that the index returns, averaged over ``--queries`` queries;
- speed-up: the index's single-query throughput (1000 / mean CPU ms) over the exact index's at
  the same size (the ">= 20x" of the target), and the same for 1-thread batched throughput;
- the live-index operations the project uses: ``add_with_ids`` of ``--add`` new vectors into the
  built index on one thread, then ``remove_ids`` of them (HNSW raises: it cannot delete).

Search parameters are swept on the same built index: HNSW ``efSearch`` (``--ef-search``;
faiss 1.15 does not raise an efSearch below k to k: ``ef=64`` returns 100 results, found with a
64-wide beam) and IVF ``nprobe`` (``--nprobe``). IVF uses ``nlist = 4 * sqrt(n)`` lists (at
most ``n / 39``), k-means trained on a sample of ``min(n, max(39, --ivf-train-per-list) *
nlist)`` vectors. The HNSW+SQ8 index (``hnsw32sq8``: 8-bit scalar-quantized vectors, a quarter
of the vector memory) trains its quantizer on a sample too.

Vectors: the item embeddings are L2-normalised ``--dim``-dimensional (32) two-tower embeddings
searched by inner product. Real embeddings are clustered, so items are drawn as
``centre + noise``, normalised: ``--clusters`` Gaussian centres on the unit sphere with
log-normal cluster sizes, and isotropic Gaussian noise of expected norm ``--noise``. Queries are
drawn the same way from the same centres with another seed. ``--unclustered`` draws uniform
directions instead (Gaussian, normalised): no structure for the index to exploit, a
pessimistic case for every ANN index (and no change for exact search).

Throughput figures use the CPU time of the searching thread (``time.thread_time``), so that
other work on a shared machine does not slow them down; latency percentiles are wall time and
do include it (a p99 far above the CPU mean is preemption, not the index).

At the end it prints the recommended default: exact search while its mean CPU per query stays
under ``--exact-budget-ms`` (0.25 ms: about 2% of the 12.6 ms of CPU a home-feed request costs
in ``serve_bench.py``; the largest measured size that does, and a linear fit's estimate of the
threshold), and above it the settings with recall@100 >= ``--target-recall`` at >=
``--target-speedup`` x exact single-query throughput at the largest size, whether that target
is met, the one with the least CPU per query and the most accurate one, each with its numbers at
every size. Every number printed (and written with ``--json``) is measured in this run, except
the threshold estimate, labelled as one.

    .venv/bin/python benchmarks/retrieval_bench.py                     # 10K to 1M: ~6 min
    .venv/bin/python benchmarks/retrieval_bench.py --quick             # 10K, 100K: ~1 min
    .venv/bin/python benchmarks/retrieval_bench.py --sizes 100000 --unclustered --json b.json
"""

from __future__ import annotations

import os

# Before numpy is imported: data generation needs no BLAS threads. (faiss-cpu bundles its own
# OpenMP OpenBLAS, which follows faiss.omp_set_num_threads instead.)
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import ctypes
import datetime as dt
import gc
import json
import math
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

K = 100
FAMILIES = ("flat", "hnsw16", "hnsw32", "hnsw32sq8", "ivf")
QUICK_SIZES = (10_000, 100_000)
FULL_SIZES = (10_000, 50_000, 100_000, 1_000_000)


def say(message: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[retrieval-bench {stamp}] {message}", file=sys.stderr, flush=True)


def rss_mib() -> float:
    """Resident set size now (Linux ``/proc``; NaN elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _malloc_trim() -> Callable[[], None]:
    """``malloc_trim(0)`` of glibc (returns freed heap pages, so RSS deltas mean something)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None

    def run() -> None:
        trim(0)

    return run


TRIM = _malloc_trim()


def settle() -> float:
    """Collect garbage, give freed memory back to the OS, and return the RSS in MiB."""
    gc.collect()
    TRIM()
    return rss_mib()


# --------------------------------------------------------------------------- data


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    return x


@dataclass(frozen=True)
class DataSpec:
    """How the synthetic embeddings are drawn."""

    dim: int
    clusters: int
    noise: float
    unclustered: bool
    seed: int


def make_centres(spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """Cluster centres on the unit sphere and their (log-normal) shares."""
    rng = np.random.default_rng(spec.seed)
    centres = unit_rows(rng.standard_normal((spec.clusters, spec.dim)).astype(np.float32))
    weights = rng.lognormal(0.0, 1.0, spec.clusters)
    return centres, weights / weights.sum()


def draw_vectors(
    spec: DataSpec, centres: np.ndarray, weights: np.ndarray, n: int, seed: int
) -> np.ndarray:
    """``n`` normalised float32 vectors (clustered, or uniform directions)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, spec.dim), dtype=np.float32)
    scale = np.float32(spec.noise / math.sqrt(spec.dim))
    for start in range(0, n, 200_000):
        stop = min(n, start + 200_000)
        noise = rng.standard_normal((stop - start, spec.dim), dtype=np.float32)
        if spec.unclustered:
            out[start:stop] = noise
        else:
            labels = rng.choice(len(centres), size=stop - start, p=weights)
            out[start:stop] = centres[labels] + scale * noise
    return unit_rows(out)


def unique_ids(n: int, seed: int) -> np.ndarray:
    """``n`` distinct random non-negative int64 ids (like the project's 63-bit item hashes)."""
    rng = np.random.default_rng(seed)
    ids = np.unique(rng.integers(0, 2**63 - 1, size=n + n // 100 + 16, dtype=np.int64))
    rng.shuffle(ids)
    if len(ids) < n:  # pragma: no cover - 1e-7 odds at 1M
        raise RuntimeError("id collision: rerun with another seed")
    return ids[:n]


# --------------------------------------------------------------------------- indexes


@dataclass
class Built:
    """One built index and what its build cost."""

    family: str
    index: Any
    base: Any
    build_s: float
    train_s: float
    params: dict[str, Any]
    serialized_bytes: int = 0
    rss_delta_mib: float = float("nan")


def ivf_nlist(n: int) -> int:
    return max(1, min(round(4 * math.sqrt(n)), n // 39))


def training_sample(xb: np.ndarray, size: int, seed: int) -> np.ndarray:
    if size >= len(xb):
        return xb
    rng = np.random.default_rng(seed)
    return xb[np.sort(rng.choice(len(xb), size=size, replace=False))]


def build_index(family: str, xb: np.ndarray, ids: np.ndarray, args: argparse.Namespace) -> Built:
    """Build ``family`` over ``xb`` under ``ids``, timed, with ``args.build_threads`` threads."""
    dim = xb.shape[1]
    ip = faiss.METRIC_INNER_PRODUCT
    faiss.omp_set_num_threads(args.build_threads)
    params: dict[str, Any] = {}
    train_s = 0.0
    t0 = time.perf_counter()
    base: Any
    if family == "flat":
        base = faiss.IndexFlatIP(dim)
    elif family in ("hnsw16", "hnsw32"):
        m = int(family.removeprefix("hnsw"))
        base = faiss.IndexHNSWFlat(dim, m, ip)
        base.hnsw.efConstruction = args.ef_construction
        params = {"M": m, "efConstruction": args.ef_construction}
    elif family == "hnsw32sq8":
        qtype: Any = faiss.ScalarQuantizer.QT_8bit  # an int; faiss's stubs say ScalarQuantizer
        base = faiss.IndexHNSWSQ(dim, qtype, 32, ip)
        base.hnsw.efConstruction = args.ef_construction
        sample = training_sample(xb, args.sq_train, args.seed + 11)
        base.train(sample)
        train_s = time.perf_counter() - t0
        params = {"M": 32, "efConstruction": args.ef_construction, "sq_train": len(sample)}
    elif family == "ivf":
        nlist = ivf_nlist(len(xb))
        quantizer = faiss.IndexFlatIP(dim)
        base = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
        per_list = max(39, args.ivf_train_per_list)
        sample = training_sample(xb, per_list * nlist, args.seed + 12)
        base.train(sample)
        train_s = time.perf_counter() - t0
        params = {"nlist": nlist, "train_points": len(sample)}
    else:
        raise ValueError(f"unknown index family {family!r}")
    index = faiss.IndexIDMap2(base)
    index.add_with_ids(xb, ids)
    build_s = time.perf_counter() - t0
    return Built(family, index, base, build_s, train_s, params)


def search_settings(family: str, args: argparse.Namespace) -> list[tuple[str, int]]:
    """The swept search parameter of ``family``: ``(name, value)`` pairs (flat: none)."""
    if family.startswith("hnsw"):
        return [("efSearch", ef) for ef in args.ef_search]
    if family == "ivf":
        return [("nprobe", p) for p in args.nprobe]
    return [("-", 0)]


def apply_setting(built: Built, name: str, value: int) -> None:
    if name == "efSearch":
        built.base.hnsw.efSearch = value
    elif name == "nprobe":
        built.base.nprobe = min(value, built.base.nlist)


def label(family: str, params: dict[str, Any]) -> str:
    if family == "flat":
        return "flat (exact)"
    if family == "ivf":
        return f"ivf nlist={params['nlist']}"
    if family == "hnsw32sq8":
        return "hnsw M=32 sq8"
    return f"hnsw M={params['M']}"


# --------------------------------------------------------------------------- measurements


def single_query_ms(
    index: Any, xq: np.ndarray, n: int, warmup: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Wall and CPU (this thread's) time of ``n`` one-query searches on one thread, in ms."""
    faiss.omp_set_num_threads(1)
    for i in range(min(warmup, len(xq))):
        index.search(xq[i : i + 1], K)
    wall = np.empty(n)
    cpu = np.empty(n)
    for i in range(n):
        q = xq[i % len(xq) : i % len(xq) + 1]
        c0 = time.thread_time()
        t0 = time.perf_counter()
        index.search(q, K)
        wall[i] = time.perf_counter() - t0
        cpu[i] = time.thread_time() - c0
    return wall * 1e3, cpu * 1e3


def batched_qps(index: Any, xq: np.ndarray, batch: int, threads: int) -> tuple[float, float]:
    """Queries per wall second and per CPU second of this thread, in batches of ``batch``.

    On one OpenMP thread every search runs in this thread, so the CPU figure is the per-core
    throughput; on more threads only the wall figure means something.
    """
    faiss.omp_set_num_threads(threads)
    index.search(xq[: min(batch, len(xq))], K)  # warm-up
    c0 = time.thread_time()
    t0 = time.perf_counter()
    for start in range(0, len(xq), batch):
        index.search(xq[start : start + batch], K)
    wall = time.perf_counter() - t0
    cpu = time.thread_time() - c0
    return len(xq) / wall, len(xq) / cpu if cpu > 0 else float("nan")


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [
        len(np.intersect1d(f[f >= 0], t, assume_unique=True))
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) / truth.shape[1]


def search_all(index: Any, xq: np.ndarray, threads: int) -> np.ndarray:
    faiss.omp_set_num_threads(threads)
    _, ids = index.search(xq, K)
    return np.asarray(ids)


def live_ops(
    built: Built, xnew: np.ndarray, new_ids: np.ndarray
) -> tuple[float, float | None, str]:
    """Seconds of ``add_with_ids`` of the new vectors (1 thread), then of their ``remove_ids``."""
    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    built.index.add_with_ids(xnew, new_ids)
    add_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        removed = built.index.remove_ids(new_ids)
    except RuntimeError as exc:
        return add_s, None, str(exc).splitlines()[0].split(": ")[-1]
    remove_s = time.perf_counter() - t0
    return add_s, remove_s, f"removed {removed}"


@dataclass
class Row:
    """One (size, index, search setting) measurement."""

    size: int
    family: str
    index: str
    params: dict[str, Any]
    setting: str
    value: int
    build_s: float
    train_s: float
    serialized_mib: float
    rss_delta_mib: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    cpu_ms: float
    single_qps: float
    batch_qps_t1: float
    batch_qps_t1_wall: float
    batch_qps_t2: float
    recall: float
    speedup_single: float = float("nan")
    speedup_batch: float = float("nan")


@dataclass
class SizeResult:
    """Every row of one catalog size, and the live-index operations per index."""

    size: int
    data_s: float
    truth_s: float
    rows: list[Row] = field(default_factory=list)
    live: list[dict[str, Any]] = field(default_factory=list)


def bench_size(
    n: int,
    spec: DataSpec,
    centres: np.ndarray,
    weights: np.ndarray,
    xq: np.ndarray,
    args: argparse.Namespace,
) -> SizeResult:
    t0 = time.perf_counter()
    xb = draw_vectors(spec, centres, weights, n, spec.seed + 1)
    all_ids = unique_ids(n + args.add, spec.seed + 3)
    ids, new_ids = all_ids[:n], all_ids[n:]
    xnew = draw_vectors(spec, centres, weights, args.add, spec.seed + 4)
    result = SizeResult(n, time.perf_counter() - t0, 0.0)
    say(f"{n:,} items: vectors drawn in {result.data_s:.1f} s, RSS {rss_mib():,.0f} MiB")
    truth: np.ndarray | None = None
    families = ["flat", *[f for f in args.indexes if f != "flat"]]
    for family in families:
        before = settle()
        say(f"{n:,} items: building {family}")
        built = build_index(family, xb, ids, args)
        built.rss_delta_mib = settle() - before
        built.serialized_bytes = int(faiss.serialize_index(built.index).nbytes)
        gc.collect()
        name = label(family, built.params)
        say(
            f"{n:,} items: {name} built in {built.build_s:.1f} s, "
            f"{built.serialized_bytes / 2**20:,.1f} MiB serialized, RSS +{built.rss_delta_mib:,.0f}"
        )
        if truth is None:
            t1 = time.perf_counter()
            truth = search_all(built.index, xq, args.build_threads)
            result.truth_s = time.perf_counter() - t1
        for setting, value in search_settings(family, args):
            apply_setting(built, setting, value)
            ms, cpu_ms = single_query_ms(built.index, xq, args.single_queries)
            qps1_wall, qps1 = batched_qps(built.index, xq, args.batch, 1)
            qps2, _ = batched_qps(built.index, xq, args.batch, 2)
            found = search_all(built.index, xq, args.build_threads)
            row = Row(
                size=n,
                family=family,
                index=name,
                params=built.params,
                setting=setting,
                value=value,
                build_s=built.build_s,
                train_s=built.train_s,
                serialized_mib=built.serialized_bytes / 2**20,
                rss_delta_mib=built.rss_delta_mib,
                p50_ms=float(np.percentile(ms, 50)),
                p99_ms=float(np.percentile(ms, 99)),
                mean_ms=float(ms.mean()),
                cpu_ms=float(cpu_ms.mean()),
                single_qps=1e3 / float(cpu_ms.mean()),
                batch_qps_t1=qps1,
                batch_qps_t1_wall=qps1_wall,
                batch_qps_t2=qps2,
                recall=recall_at_k(found, truth),
            )
            result.rows.append(row)
            say(
                f"{n:,} items: {name} {setting}={value}: p50 {row.p50_ms:.3f} ms, "
                f"recall@{K} {row.recall:.4f}"
            )
        add_s, remove_s, note = live_ops(built, xnew, new_ids)
        result.live.append(
            {
                "index": name,
                "family": family,
                "added": len(new_ids),
                "add_s": add_s,
                "remove_ids": remove_s is not None,
                "remove_s": remove_s,
                "note": note,
            }
        )
        del built
        settle()
    exact = next(r for r in result.rows if r.family == "flat")
    for row in result.rows:
        row.speedup_single = row.single_qps / exact.single_qps
        row.speedup_batch = row.batch_qps_t1 / exact.batch_qps_t1
    return result


# --------------------------------------------------------------------------- report


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def print_size(result: SizeResult, spec: DataSpec, nq: int, single: int) -> None:
    if spec.unclustered:
        data = "uniform directions"
    else:
        data = f"{spec.clusters} clusters, noise {spec.noise}"
    print()
    print(
        f"== {result.size:,} items, dim {spec.dim}, {data}; recall over {nq} queries, "
        f"latency over {single} single queries (1 thread) =="
    )
    head = (
        f"{'index':<16} {'search':<13} {'build s':>7} {'ser MiB':>7} {'RSS MiB':>7} "
        f"{'p50 ms':>6} {'p99 ms':>6} {'cpu ms':>6} {'1q qps':>7} {'x exact':>7} "
        f"{'b1 qps':>7} {'b2 qps':>7} {'x ex b1':>7} {'rec@100':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in result.rows:
        search = "-" if r.setting == "-" else f"{r.setting}={r.value}"
        print(
            f"{r.index:<16} {search:<13} {r.build_s:>7.2f} {r.serialized_mib:>7.1f} "
            f"{r.rss_delta_mib:>7.0f} {r.p50_ms:>6.3f} {r.p99_ms:>6.3f} {r.cpu_ms:>6.3f} "
            f"{fmt_int(r.single_qps):>7} {r.speedup_single:>6.1f}x {fmt_int(r.batch_qps_t1):>7} "
            f"{fmt_int(r.batch_qps_t2):>7} {r.speedup_batch:>6.1f}x {r.recall:>7.4f}"
        )
    seen: set[str] = set()
    for r in result.rows:
        if r.train_s > 0 and r.index not in seen:
            seen.add(r.index)
            print(f"  {r.index}: training {r.train_s:.2f} s of the {r.build_s:.2f} s build")
    for live in result.live:
        if live["remove_ids"]:
            remove = f"remove_ids {live['remove_s']:.4f} s"
        else:
            remove = f"remove_ids unsupported ({live['note']})"
        print(
            f"  {live['index']}: add_with_ids of {live['added']:,} new vectors "
            f"{live['add_s']:.3f} s (1 thread), {remove}"
        )


def exact_threshold_estimate(sizes: Sequence[int], cpu_ms: Sequence[float], budget: float) -> int:
    """Catalog size where exact search's CPU per query reaches ``budget`` (linear in n)."""
    if len(sizes) == 1:
        return int(sizes[0] * budget / cpu_ms[0])
    slope, intercept = np.polyfit(np.asarray(sizes, float), np.asarray(cpu_ms, float), 1)
    return int((budget - intercept) / slope) if slope > 0 else 0


def recommend(results: Sequence[SizeResult], args: argparse.Namespace) -> dict[str, Any]:
    """Exact under the CPU budget; above it the cheapest setting meeting the target at the top."""
    exact = {r.size: next(x for x in r.rows if x.family == "flat") for r in results}
    sizes = sorted(exact)
    under = [n for n in sizes if exact[n].cpu_ms <= args.exact_budget_ms]
    top = max(results, key=lambda r: r.size)
    meeting = [
        r
        for r in top.rows
        if r.family != "flat"
        and r.recall >= args.target_recall
        and r.speedup_single >= args.target_speedup
    ]
    cheapest = min(meeting, key=lambda r: (r.cpu_ms, r.serialized_mib), default=None)
    accurate = max(meeting, key=lambda r: (r.recall, -r.cpu_ms), default=None)
    out: dict[str, Any] = {
        "exact_budget_cpu_ms": args.exact_budget_ms,
        "exact_cpu_ms": {str(n): exact[n].cpu_ms for n in sizes},
        "largest_size_exact_under_budget": max(under) if under else None,
        "exact_threshold_estimate": exact_threshold_estimate(
            sizes, [exact[n].cpu_ms for n in sizes], args.exact_budget_ms
        ),
        "target": {
            "size": top.size,
            "recall": args.target_recall,
            "speedup_single": args.target_speedup,
        },
        "meeting_target": [asdict(r) for r in sorted(meeting, key=lambda r: r.cpu_ms)],
        "target_met": bool(meeting),
        "choices": {},
    }
    for name, chosen in (("least CPU per query", cheapest), ("most accurate", accurate)):
        if chosen is None:
            continue
        out["choices"][name] = {
            **asdict(chosen),
            "at_each_size": [
                asdict(r)
                for res in results
                for r in res.rows
                if (r.family, r.setting, r.value) == (chosen.family, chosen.setting, chosen.value)
            ],
        }
    return out


def describe(row: dict[str, Any]) -> str:
    search = "" if row["setting"] == "-" else f" {row['setting']}={row['value']}"
    return (
        f"{row['index']}{search}: recall@{K} {row['recall']:.4f}, "
        f"{row['speedup_single']:.1f}x exact single-query throughput "
        f"({row['cpu_ms']:.3f} ms CPU, p50 {row['p50_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms), "
        f"{row['speedup_batch']:.1f}x exact batched, build {row['build_s']:.1f} s, "
        f"{row['serialized_mib']:.0f} MiB serialized"
    )


def print_recommendation(rec: dict[str, Any]) -> None:
    print()
    print("== recommended default ==")
    budget = rec["exact_budget_cpu_ms"]
    costs = ", ".join(f"{int(n):,}: {ms:.3f} ms" for n, ms in rec["exact_cpu_ms"].items())
    print(f"exact (flat) mean CPU per single query by size: {costs}")
    largest = rec["largest_size_exact_under_budget"]
    if largest:
        print(f"exact costs <= {budget} ms CPU per query up to {largest:,} items (measured)")
    else:
        print(f"exact costs more than {budget} ms CPU per query at every measured size")
    print(
        f"linear fit of exact CPU per query over the sizes: {budget} ms at about "
        f"{rec['exact_threshold_estimate']:,} items (an estimate)"
    )
    target = rec["target"]
    print(
        f"target at {target['size']:,} items: recall@{K} >= {target['recall']} at >= "
        f"{target['speedup_single']}x exact single-query throughput; settings meeting it:"
    )
    for row in rec["meeting_target"]:
        print(f"  {describe(row)}")
    if not rec["target_met"]:
        print("  none: target NOT met by any measured setting")
        return
    print("target met.")
    for name, chosen in rec["choices"].items():
        print(f"{name} among them: {describe(chosen)}")
        for row in chosen["at_each_size"]:
            print(
                f"  same setting at {row['size']:,} items: recall@{K} {row['recall']:.4f}, "
                f"{row['speedup_single']:.1f}x exact single-query throughput, "
                f"{row['cpu_ms']:.3f} ms CPU, p99 {row['p99_ms']:.3f} ms"
            )


# --------------------------------------------------------------------------- CLI


def int_list(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int_list, default=None, help="catalog sizes (10000,...)")
    parser.add_argument("--quick", action="store_true", help="sizes 10K,100K: a ~1-minute run")
    parser.add_argument(
        "--indexes",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=list(FAMILIES),
        help=f"index families to compare ({','.join(FAMILIES)}); flat is always measured",
    )
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.6, help="expected noise norm per item")
    parser.add_argument("--unclustered", action="store_true", help="uniform random directions")
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall, batches")
    parser.add_argument("--single-queries", type=int, default=500)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--ef-search", type=int_list, default=[64, 128, 256])
    parser.add_argument("--ef-construction", type=int, default=80)
    parser.add_argument("--nprobe", type=int_list, default=[8, 16, 32, 64])
    parser.add_argument("--ivf-train-per-list", type=int, default=50)
    parser.add_argument("--sq-train", type=int, default=100_000)
    parser.add_argument("--add", type=int, default=1000, help="vectors added to the live index")
    parser.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--target-speedup", type=float, default=20.0)
    parser.add_argument(
        "--exact-budget-ms", type=float, default=0.25, help="exact search CPU per query allowed"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else FULL_SIZES)
    unknown = sorted(set(args.indexes) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown --indexes {unknown}; choose from {','.join(FAMILIES)}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    spec = DataSpec(args.dim, args.clusters, args.noise, args.unclustered, args.seed)
    centres, weights = make_centres(spec)
    xq = draw_vectors(spec, centres, weights, args.queries, args.seed + 2)
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    say(
        f"sizes {args.sizes}, indexes {args.indexes}, build threads {args.build_threads}, "
        f"load average {load0}"
    )
    results = [bench_size(n, spec, centres, weights, xq, args) for n in sorted(args.sizes)]
    for result in results:
        print_size(result, spec, args.queries, args.single_queries)
    rec = recommend(results, args)
    print_recommendation(rec)
    total = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load1 = os.getloadavg() if hasattr(os, "getloadavg") else None
    print()
    print(
        f"total {total:.0f} s, peak RSS {peak:,.0f} MiB, load average {load0} -> {load1}, "
        f"faiss {faiss.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores"
    )
    if args.json is not None:
        doc = {
            "measured_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "data": asdict(spec),
            "k": K,
            "results": [asdict(r) for r in results],
            "recommendation": rec,
            "total_s": total,
            "peak_rss_mib": peak,
            "load_average": [load0, load1],
            "versions": {
                "faiss": faiss.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cores": os.cpu_count(),
            },
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        say(f"wrote {args.json}")


if __name__ == "__main__":
    main()
