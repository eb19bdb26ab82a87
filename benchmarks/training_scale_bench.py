"""Training time of each model-training step against data size, extrapolated to full scale.

Calls the project's real training functions on synthetic inputs of growing size:

1. ``als``: ``train_als(InteractionMatrix, AlsParams())`` on a users x items CSR matrix whose
   users and items are drawn Zipf-like (user weight 1/rank^0.6, item weight 1/rank), distinct
   (user, item) cells, confidences ``alpha * log1p(weight sum)`` of click/start/complete
   funnels. Users and items per non-zero are those of the full-scale matrix (the assumptions).
   n = non-zeros.
2. ``ranker``: ``train_ranker(frame, feature_columns(), RankerParams())`` on a frame with every
   feature column, ``group_id`` (requests of 16-24 rows, contiguous, in time order) and graded
   labels 0-3 at the impression -> click -> start/read -> complete rates of the event mix.
   n = frame rows.
3. ``two_tower``: ``train_two_tower(examples, TwoTowerParams())`` (CPU, the params' thread
   count), the examples built by the project's ``build_examples`` from synthetic first
   engagements, catalog and profiles (that build is timed apart, as preparation).
   n = positives.
4. ``index``: ``build_item_index(item_ids, vectors)`` with default ``IndexParams`` (IVF above
   50,000 items) on random unit vectors of the live two-tower index's dimension. n = items.
5. ``push``: ``train_push_classifier`` for the open and the fatigue model (LightGBM, isotonic
   calibration, evaluation on the later window), on a frame of labelled sends with every push
   feature. n = labelled sends.

For each size: wall time (median over ``--repeat``), process CPU time (all threads), CPU/wall,
RSS before the call and its peak during the call (the high-water mark is reset first, Linux).
Then ``t = a * n^b`` is fitted by least squares on log-log over the measured sizes, for wall
and for CPU time, and extrapolated to full scale: every input is printed on an ``ASSUMPTION``
line (each has an option), every derived value on a ``DERIVED`` line. Nothing is asserted.

    .venv/bin/python benchmarks/training_scale_bench.py                 # about 5 minutes, 2 cores
    .venv/bin/python benchmarks/training_scale_bench.py --quick         # under a minute
    .venv/bin/python benchmarks/training_scale_bench.py --steps als,index --omp-threads 1
"""

from __future__ import annotations

import os

# Before numpy and torch are imported: implicit, faiss and LightGBM parallelise themselves
# (nested OpenBLAS threads would only oversubscribe the cores), and training runs on the CPU.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["FITPULSE_DISABLE_GPU"] = "1"

import argparse
import ctypes
import datetime as dt
import gc
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_common import git_state, jsonable, peak_rss_kib, proc_status_kib, reset_peak_rss
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from fitpulse_orchestration.features.point_in_time import (
    CATEGORY_CODES,
    ITEM_TYPES,
    feature_columns,
)
from fitpulse_orchestration.features.reference import (
    DIFFICULTY_ORDINAL,
    INTENSITY_ORDINAL,
    LEVEL_ORDINAL,
)
from fitpulse_orchestration.push.features import PUSH_FEATURES
from fitpulse_orchestration.push.models import PushModelParams, train_push_classifier
from fitpulse_orchestration.ranking.ranker import RankerParams, train_ranker
from fitpulse_orchestration.retrieval.als import AlsParams, InteractionMatrix, train_als
from fitpulse_orchestration.retrieval.index import IndexParams, build_item_index
from fitpulse_orchestration.retrieval.two_tower import (
    TrainingExamples,
    TwoTowerParams,
    build_examples,
    train_two_tower,
)

STEPS = ("als", "ranker", "two_tower", "index", "push")
LABELS = {
    "als": "ALS fit (train_als)",
    "ranker": "ranker (train_ranker)",
    "two_tower": "two-tower (train_two_tower)",
    "index": "item index (build_item_index)",
    "push": "push open + fatigue",
}
UNITS = {
    "als": "non-zeros",
    "ranker": "rows",
    "two_tower": "positives",
    "index": "items",
    "push": "labelled sends",
}
UNIT = {
    "als": "non-zero",
    "ranker": "row",
    "two_tower": "positive",
    "index": "item",
    "push": "labelled send",
}
DEFAULT_SIZES = {
    "als": (500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000),
    "ranker": (50_000, 100_000, 200_000, 400_000, 800_000),
    "two_tower": (25_000, 50_000, 100_000, 200_000, 400_000),
    "index": (100_000, 200_000, 500_000, 1_000_000),
    "push": (50_000, 100_000, 200_000, 400_000, 800_000),
}
QUICK_SIZES = {
    "als": (250_000, 500_000),
    "ranker": (25_000, 50_000),
    "two_tower": (10_000, 20_000),
    "index": (60_000, 120_000),
    "push": (25_000, 50_000),
}
# One untimed run per step first, so the first measured size pays no one-off set-up (torch's
# first backward pass, LightGBM's and faiss's thread pools). The index one takes the IVF path.
WARMUP_SIZES = {"als": 20_000, "ranker": 5_000, "two_tower": 2_000, "index": 60_000, "push": 5_000}
# The event mix of capacity_bench.py (shares of all events). A click is on an impression, a
# start or an article read on a click, a complete on a start.
MIX = {"impression": 0.85, "click": 0.05, "start": 0.03, "complete": 0.02, "read": 0.01}
USER_ZIPF = 0.6
ITEM_ZIPF = 1.0
REQUEST_ROWS = (16, 24)
REGIONS = ("uk", "us", "de", "fr", "es", "it", "br", "in", "jp", "au")
TAGS = tuple(f"tag{k:03d}" for k in range(400))
EQUIPMENT = ("none", "dumbbells", "mat", "bike", "kettlebell", "band", "treadmill")
# Steps whose training runs on every core (the others are pinned to params.num_threads or 1).
MULTITHREADED = {"als": "implicit, num_threads=0", "index": "faiss OpenMP"}
INT32_MAX = 2**31 - 1


# --------------------------------------------------------------------------- measurement


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc), so RSS before a call is its true base.

    Without it, memory freed by an earlier (larger) call stays resident, the next call reuses
    it, and its peak RSS growth reads as 0.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure(fn: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
    """Wall, process CPU (all threads), RSS before and peak RSS during ``fn()``."""
    gc.collect()
    _release_free_heap()
    before = proc_status_kib("VmRSS") or 0
    reset = reset_peak_rss()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    value = fn()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    peak = peak_rss_kib()
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_before_mib": before / 1024,
        "peak_rss_mib": peak / 1024,
        "peak_delta_mib": max(0, peak - before) / 1024,
        "peak_reset": reset,
    }, value


# --------------------------------------------------------------------------- synthetic data


def zipf_sampler(rng: np.random.Generator, n: int, s: float) -> tuple[np.ndarray, np.ndarray]:
    """CDF of a 1/rank**s law over n ids, and a random rank -> id permutation."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return cdf, rng.permutation(n)


def draw(rng: np.random.Generator, sampler: tuple[np.ndarray, np.ndarray], size: int) -> Any:
    cdf, perm = sampler
    return perm[np.minimum(np.searchsorted(cdf, rng.random(size)), len(cdf) - 1)]


def distinct_pairs(
    rng: np.random.Generator, n: int, n_users: int, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct (user, item) pairs, users and items Zipf-like, sorted by user then item."""
    users, items = zipf_sampler(rng, n_users, USER_ZIPF), zipf_sampler(rng, n_items, ITEM_ZIPF)
    if n > n_users * n_items // 2:
        raise ValueError(f"{n:,} pairs do not fit a {n_users:,} x {n_items:,} matrix")
    keys = np.empty(0, dtype=np.int64)
    while len(keys) < n:
        k = int(1.3 * (n - len(keys))) + 1_000
        new = draw(rng, users, k).astype(np.int64) * n_items + draw(rng, items, k)
        keys = np.unique(np.concatenate([keys, new]))
    if len(keys) > n:
        keys = np.sort(rng.choice(keys, n, replace=False))
    return keys // n_items, keys % n_items


def engagement_weights(rng: np.random.Generator, n: int, params: AlsParams) -> np.ndarray:
    """Event-weight sum of each cell: a click, then a start or a read, then a complete."""
    click = MIX["click"]
    only_click = (click - MIX["start"] - MIX["read"]) / click
    start_only = (MIX["start"] - MIX["complete"]) / click
    complete = MIX["complete"] / click
    read = MIX["read"] / click
    w = np.array(
        [
            params.weight_click,
            params.weight_click + params.weight_start,
            params.weight_click + params.weight_start + params.weight_complete,
            params.weight_click + params.weight_start,
        ],
        dtype=np.float32,
    )
    return w[rng.choice(4, size=n, p=[only_click, start_only, complete, read])]


def make_als_input(
    rng: np.random.Generator, nnz: int, users_per_nnz: float, items_per_nnz: float
) -> tuple[InteractionMatrix, dict[str, Any]]:
    params = AlsParams()
    n_users = max(100, round(nnz * users_per_nnz))
    n_items = max(100, round(nnz * items_per_nnz))
    rows, cols = distinct_pairs(rng, nnz, n_users, n_items)
    conf = (params.alpha * np.log1p(engagement_weights(rng, nnz, params))).astype(np.float32)
    matrix = csr_matrix((conf, (rows, cols)), shape=(n_users, n_items))
    data = InteractionMatrix(
        matrix=matrix,
        user_ids=np.array([f"u{k:09d}" for k in range(n_users)]),
        item_ids=np.array([f"it_{k:08d}" for k in range(n_items)]),
    )
    empty_users = int((np.diff(matrix.indptr) == 0).sum())
    empty_items = n_items - len(np.unique(cols))
    info = {
        "shape": f"{n_users:,} users x {n_items:,} items",
        "users": n_users,
        "items": n_items,
        "empty_users": empty_users,
        "empty_items": empty_items,
        "input_mib": (matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes) / 2**20,
    }
    return data, info


def _request_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    sizes = rng.integers(REQUEST_ROWS[0], REQUEST_ROWS[1] + 1, size=n // REQUEST_ROWS[0] + 2)
    ends = np.cumsum(sizes)
    k = int(np.searchsorted(ends, n) + 1)
    sizes = sizes[:k].copy()
    sizes[-1] -= int(ends[k - 1] - n)
    return sizes[sizes > 0]


def _column(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """Values of one ranker feature (counts, rates, ordinals, codes), NaN where it can be."""
    if name.endswith("_active_days_28d"):
        out = rng.integers(0, 29, n).astype(float)
    elif name.endswith("_days_since_engaged"):
        out = np.minimum(rng.exponential(6.0, n), 29.0)
    elif "ctr" in name or "rate" in name or "affinity" in name:
        out = rng.beta(1.2, 12.0, n)
    elif name in ("u_level", "i_difficulty", "i_intensity"):
        out = rng.integers(0, 3, n).astype(float)
    elif name == "x_difficulty_gap":
        out = rng.integers(-2, 3, n).astype(float)
    elif name in ("u_is_cold", "x_item_engaged_before"):
        out = (rng.random(n) < 0.3).astype(float)
    elif name == "i_type":
        out = rng.integers(0, len(ITEM_TYPES), n).astype(float)
    elif name == "i_category":
        out = rng.integers(0, len(CATEGORY_CODES), n).astype(float)
    elif name == "x_source":
        out = rng.integers(0, 4, n).astype(float)
    elif name == "als_score":
        out = rng.normal(0.0, 1.0, n)
    elif "days" in name or "duration" in name:
        out = rng.gamma(2.0, 40.0, n).round()
    else:
        out = rng.negative_binomial(1, 0.05, n).astype(float)
    if name in ("als_score", "i_age_days", "i_duration_min"):
        out[rng.random(n) < 0.1] = np.nan
    return out.astype(np.float32)


def _graded_labels(rng: np.random.Generator, score: np.ndarray) -> np.ndarray:
    """Labels 0-3 at the mix's rates, engagement more likely with a higher ``score``."""
    base = MIX["click"] / MIX["impression"]
    logit = math.log(base / (1 - base)) + 0.8 * (score - score.mean()) / (score.std() + 1e-9)
    engaged = rng.random(len(score)) < 1 / (1 + np.exp(-logit))
    click = MIX["click"]
    grade = rng.choice(
        [1, 2, 3],
        size=len(score),
        p=[
            (click - MIX["start"] - MIX["read"]) / click,
            (MIX["start"] - MIX["complete"] + MIX["read"]) / click,
            MIX["complete"] / click,
        ],
    )
    return np.where(engaged, grade, 0).astype(np.int8)


def make_ranker_input(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Grouped feature frame: user features per request, item features per (Zipf) item."""
    sizes = _request_sizes(rng, n)
    group = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    n_items = max(1_000, n // 50)
    item = draw(rng, zipf_sampler(rng, n_items, ITEM_ZIPF), n)
    cols: dict[str, np.ndarray] = {}
    for name in feature_columns():
        if name.startswith("u_"):
            cols[name] = _column(name, rng, len(sizes))[group]
        elif name.startswith("i_"):
            cols[name] = _column(name, rng, n_items)[item]
        else:
            cols[name] = _column(name, rng, n)
    score = np.nan_to_num(cols.get("als_score", np.zeros(n)), nan=0.0) + rng.normal(0, 1, n)
    frame = pd.DataFrame({"group_id": group, **cols, "label": _graded_labels(rng, score)})
    labels = frame["label"].value_counts(normalize=True).sort_index()
    info = {
        "shape": f"{len(sizes):,} requests x {REQUEST_ROWS[0]}-{REQUEST_ROWS[1]} rows, "
        f"{len(feature_columns())} features",
        "requests": len(sizes),
        "label_shares": {int(k): float(v) for k, v in labels.items()},
        "input_mib": frame.memory_usage(deep=True).sum() / 2**20,
    }
    return frame, info


def make_two_tower_input(
    rng: np.random.Generator, n: int, users_per_positive: float, items_per_positive: float
) -> tuple[Any, dict[str, Any]]:
    """First engagements, catalog and profiles for ``build_examples`` (one event per pair)."""
    n_users = max(200, round(n * users_per_positive))
    n_items = max(200, round(n * items_per_positive))
    users, items = distinct_pairs(rng, n, n_users, n_items)
    start = pd.Timestamp("2026-10-01", tz="UTC")
    seconds = rng.integers(0, 28 * 86_400, size=n)
    kinds = np.array(["click", "workout_start", "workout_complete", "article_read"])
    click = MIX["click"]
    events = pd.DataFrame(
        {
            "event_id": [f"e{k:010d}" for k in range(n)],
            "user_id": np.array([f"p_{k:09d}" for k in range(n_users)])[users],
            "item_id": np.array([f"it_{k:08d}" for k in range(n_items)])[items],
            "event_type": kinds[
                rng.choice(
                    4,
                    size=n,
                    p=[
                        (click - MIX["start"] - MIX["read"]) / click,
                        (MIX["start"] - MIX["complete"]) / click,
                        MIX["complete"] / click,
                        MIX["read"] / click,
                    ],
                )
            ],
            "ts": start + pd.to_timedelta(seconds, unit="s"),
        }
    )
    n_tags = rng.integers(0, 6, size=n_items)
    catalog = pd.DataFrame(
        {
            "item_id": [f"it_{k:08d}" for k in range(n_items)],
            "item_type": rng.choice(ITEM_TYPES, n_items),
            "category": rng.choice(CATEGORY_CODES, n_items),
            "difficulty": rng.choice(list(DIFFICULTY_ORDINAL), n_items),
            "intensity": rng.choice(list(INTENSITY_ORDINAL), n_items),
            "duration_min": rng.choice([5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0], n_items),
            "equipment": rng.choice(EQUIPMENT, n_items),
            "tags": [",".join(rng.choice(TAGS, k, replace=False)) for k in n_tags],
        }
    )
    profiles = pd.DataFrame(
        {
            "user_id": [f"p_{k:09d}" for k in range(n_users)],
            "fitness_level": rng.choice(list(LEVEL_ORDINAL), n_users),
            "region": rng.choice(REGIONS, n_users),
        }
    )
    before = start + pd.Timedelta(days=28)
    info = {
        "shape": f"{n_users:,} users x {n_items:,} items",
        "users": n_users,
        "items": n_items,
        "input_mib": sum(f.memory_usage(deep=True).sum() for f in (events, catalog, profiles))
        / 2**20,
    }
    return (events, catalog, profiles, before), info


def make_index_input(
    rng: np.random.Generator, n: int, dim: int
) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    item_ids = np.array([f"it_{k:08d}" for k in range(n)])
    info = {"shape": f"{n:,} x {dim} float32", "input_mib": vectors.nbytes / 2**20}
    return (item_ids, vectors), info


def make_push_input(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Labelled sends over 28 days with every push feature, an open and a fatigue label."""
    span_s = 28 * 86_400
    n_users = max(500, n // 10)
    user = draw(rng, zipf_sampler(rng, n_users, USER_ZIPF), n)
    ts = np.sort(rng.integers(0, span_s, size=n))
    cols: dict[str, np.ndarray] = {}
    for name in PUSH_FEATURES:
        if name == "local_hour":
            values = rng.integers(0, 24, n).astype(float)
        elif name == "weekend":
            values = (rng.random(n) < 2 / 7).astype(float)
        elif name in ("fitness_level", "item_difficulty", "item_intensity"):
            values = rng.integers(0, 3, n).astype(float)
        elif name == "level_gap":
            values = rng.integers(-2, 3, n).astype(float)
        elif name == "item_type":
            values = rng.integers(0, len(ITEM_TYPES), n).astype(float)
        elif "rate" in name or "share" in name:
            values = rng.beta(1.5, 6.0, n_users)[user]
        elif name.startswith("hours_since"):
            values = np.minimum(rng.exponential(30.0, n), 24.0 * 28)
        elif name in ("item_duration_min", "item_age_days"):
            values = rng.gamma(2.0, 15.0, n).round()
        else:
            values = rng.negative_binomial(1, 0.15, n_users)[user].astype(float)
        cols[name] = values
    z = (cols["open_rate_28d"] - 0.2) * 5 + rng.normal(0, 1, n)
    opened = rng.random(n) < 1 / (1 + np.exp(-(math.log(0.08 / 0.92) + 0.8 * z)))
    z2 = cols.get("pushes_7d", np.zeros(n)) * 0.1 + rng.normal(0, 1, n)
    disabled = rng.random(n) < 1 / (1 + np.exp(-(math.log(0.01 / 0.99) + 0.5 * z2)))
    frame = pd.DataFrame(
        {
            "ts": pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(ts, unit="s"),
            "sent": True,
            "fatigue_observed": ts <= span_s - 7 * 86_400,
            "opened": opened,
            "disabled_7d": disabled,
            **cols,
        }
    )
    info = {
        "shape": f"{n:,} sends of {n_users:,} users, {len(PUSH_FEATURES)} features",
        "open_rate": float(opened.mean()),
        "disable_rate": float(disabled.mean()),
        "fatigue_rows": int(frame["fatigue_observed"].sum()),
        "input_mib": frame.memory_usage(deep=True).sum() / 2**20,
    }
    return frame, info


# --------------------------------------------------------------------------- steps


def run_size(
    step: str, n: int, args: argparse.Namespace, full: dict[str, float], repeat: int
) -> dict[str, Any]:
    """Generate the input of size ``n`` once, then time the step ``repeat`` times."""
    rng = np.random.default_rng([args.seed, STEPS.index(step), n])
    gen0 = time.perf_counter()
    extra: dict[str, Any] = {}
    fn: Callable[[], Any]
    if step == "als":
        data, info = make_als_input(
            rng, n, full["users"] / full["als_nnz"], full["items"] / full["als_nnz"]
        )
        n = int(data.matrix.nnz)
        fn = lambda: train_als(data, AlsParams())  # noqa: E731
    elif step == "ranker":
        frame, info = make_ranker_input(rng, n)
        fn = lambda: train_ranker(frame, feature_columns(), RankerParams())  # noqa: E731
    elif step == "two_tower":
        (events, catalog, profiles, before), info = make_two_tower_input(
            rng,
            n,
            full["users"] / full["two_tower_positives"],
            full["items"] / full["two_tower_positives"],
        )
        prep, examples = measure(lambda: build_examples(events, catalog, profiles, before, n))
        del events, catalog, profiles
        assert isinstance(examples, TrainingExamples)
        n = len(examples.item_ids)
        extra["prep"] = prep
        # What train_two_tower receives: the examples (the frames they came from are gone).
        info["frames_mib"] = info["input_mib"]
        info["input_mib"] = (examples.user_x.nbytes + examples.item_x.nbytes) / 2**20
        info["user_x"] = list(examples.user_x.shape)
        info["item_x"] = list(examples.item_x.shape)
        fn = lambda: train_two_tower(examples, TwoTowerParams())  # noqa: E731
    elif step == "index":
        (item_ids, vectors), info = make_index_input(rng, n, args.index_dim)
        fn = lambda: build_item_index(item_ids, vectors, IndexParams())  # noqa: E731
    elif step == "push":
        push_frame, info = make_push_input(rng, n)
        fn = lambda: [  # noqa: E731
            train_push_classifier(push_frame, name, PushModelParams())
            for name in ("open", "fatigue")
        ]
    else:
        raise ValueError(step)
    info["generate_s"] = time.perf_counter() - gen0 - extra.get("prep", {}).get("wall_s", 0.0)
    runs = []
    result: Any = None
    for _ in range(repeat):
        result = None
        gc.collect()
        if args.omp_threads:
            with threadpool_limits(args.omp_threads, "openmp"):
                run, result = measure(fn)
        else:
            run, result = measure(fn)
        runs.append(run)
    extra.update(_result_facts(step, result))
    return {"n": n, "info": info, "runs": runs, **extra, **summarise_runs(runs)}


def _result_facts(step: str, result: Any) -> dict[str, Any]:
    """What the trained object says about the run (fit-only seconds, trees, index kind)."""
    if step == "als":
        return {"implicit_fit_s": float(result.train_seconds)}
    if step == "ranker":
        return {
            "lightgbm_fit_s": float(result.metrics["train_seconds"]),
            "trees": int(result.metrics["trees_used"]),
            "valid_ndcg_at_10": float(result.metrics["valid_ndcg_at_10"]),
        }
    if step == "two_tower":
        return {
            "torch_fit_s": float(result.metrics["train_seconds"]),
            "valid_loss": float(result.metrics["valid_loss"]),
        }
    if step == "index":
        return {"index_kind": result.kind, "index_dim": int(result.dim)}
    if step == "push":
        return {
            "open_test_auc": float(result[0][1].calibrated.get("auc", float("nan"))),
            "fatigue_test_auc": float(result[1][1].calibrated.get("auc", float("nan"))),
        }
    return {}


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    wall = statistics.median(r["wall_s"] for r in runs)
    cpu = statistics.median(r["cpu_s"] for r in runs)
    return {
        "wall_s": wall,
        "wall_min_s": min(r["wall_s"] for r in runs),
        "cpu_s": cpu,
        "cpu_per_wall": cpu / wall if wall else float("nan"),
        "rss_before_mib": max(r["rss_before_mib"] for r in runs),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "peak_delta_mib": max(r["peak_delta_mib"] for r in runs),
        "peak_reset": all(r["peak_reset"] for r in runs),
    }


def fit_power_law(n: list[float], t: list[float]) -> dict[str, float]:
    """Least squares of log t = log a + b log n; max relative residual of the fit."""
    x, y = np.log(np.asarray(n, dtype=float)), np.log(np.asarray(t, dtype=float))
    if len(x) < 2:
        return {"a": float("nan"), "b": float("nan"), "max_rel_residual": float("nan")}
    b, log_a = np.polyfit(x, y, 1)
    pred = np.exp(log_a + b * x)
    residual = float(np.max(np.abs(pred / np.exp(y) - 1.0)))
    return {"a": float(np.exp(log_a)), "b": float(b), "max_rel_residual": residual}


def predict(fit: dict[str, float], n: float) -> float:
    return fit["a"] * n ** fit["b"]


# --------------------------------------------------------------------------- full scale


def full_scale(args: argparse.Namespace) -> dict[str, float]:
    """Full-scale sizes from the assumptions (each printed by ``assumption_lines``)."""
    engagements_day = args.events_per_day * args.engagement_share
    als_nnz = args.als_days * engagements_day * args.distinct_share
    impressions_day = args.events_per_day * args.impression_share
    ranker_uncapped = args.ranker_days * impressions_day
    pool = args.two_tower_days * engagements_day * args.distinct_share
    return {
        "users": args.monthly_users,
        "items": args.catalog_items,
        "engagements_per_day": engagements_day,
        "impressions_per_day": impressions_day,
        "als_nnz": als_nnz,
        "als_nnz_with_impressions": args.als_days
        * args.events_per_day
        * (args.engagement_share + args.impression_share)
        * args.distinct_share,
        "ranker_rows_uncapped": ranker_uncapped,
        "ranker_rows": min(ranker_uncapped, args.ranker_max_rows),
        "two_tower_pool": pool,
        "two_tower_positives": min(pool, args.two_tower_positives),
        "two_tower_configured": min(pool, TwoTowerParams().max_examples),
        "index_items": args.catalog_items,
        "push_rows": args.push_qps * 86_400 * args.push_days * args.push_sample,
    }


def assumption_lines(args: argparse.Namespace, full: dict[str, float]) -> list[str]:
    a = "ASSUMPTION "
    d = "DERIVED    "
    return [
        f"{a} {args.monthly_users:,.0f} monthly users (--monthly-users); every one is a row of "
        "the ALS matrix and a user of the two-tower examples",
        f"{a} {args.catalog_items:,.0f} catalog items (--catalog-items); every one is an ALS "
        "column and is in the item index",
        f"{a} {args.events_per_day:,.0f} events/day (--events-per-day), engagements (click, "
        f"start, complete, read, watch) {args.engagement_share:.0%} of them "
        f"(--engagement-share), impressions {args.impression_share:.0%} (--impression-share): "
        "the mix of capacity_bench.py",
        f"{d} {full['engagements_per_day']:,.0f} engagements/day, "
        f"{full['impressions_per_day']:,.0f} impressions/day",
        f"{a} ALS trains on {args.als_days} days (--als-days) of engagements; distinct "
        f"user-item pairs = {args.distinct_share:.0%} of engagement events (--distinct-share)",
        f"{d} ALS non-zeros = {args.als_days} x {args.events_per_day:,.0f} x "
        f"{args.engagement_share} x {args.distinct_share} = {full['als_nnz']:,.0f} "
        f"({full['als_nnz'] / full['users']:.1f} per user, "
        f"{full['als_nnz'] / full['items']:.1f} per item; the synthetic matrices keep these "
        "ratios)",
        f"{d} as configured, build_interaction_matrix also counts impressions (weight "
        f"{AlsParams().weight_impression}): at the same distinct share the matrix would have "
        f"{full['als_nnz_with_impressions']:,.0f} non-zeros",
        f"{a} the ranker trains on a sample of {args.ranker_days} days (--ranker-days) of "
        f"logged feed impressions, capped at {args.ranker_max_rows:,.0f} rows "
        "(--ranker-max-rows)",
        f"{d} ranker rows = min({full['ranker_rows_uncapped']:,.0f}, "
        f"{args.ranker_max_rows:,.0f}) = {full['ranker_rows']:,.0f}",
        f"{a} the two-tower's positives are the first engagements of {args.two_tower_days} "
        f"days (--two-tower-days; = distinct engaged pairs, the same {args.distinct_share:.0%}), "
        f"sampled down to {args.two_tower_positives:,.0f} (--two-tower-positives)",
        f"{d} first engagements in {args.two_tower_days} days: {full['two_tower_pool']:,.0f}; "
        f"trained positives {full['two_tower_positives']:,.0f}",
        f"{d} as configured, TwoTowerParams().max_examples = "
        f"{TwoTowerParams().max_examples:,} caps the positives build_examples keeps",
        f"{a} the item index holds every catalog item: {args.catalog_items:,.0f} vectors of "
        f"{args.index_dim} dimensions (--index-dim: the live two-tower index's, tower output "
        "+ popularity prior)",
        f"{a} push models train on {args.push_qps:,.0f} decisions/s (--push-qps) x 86,400 s x "
        f"{args.push_days} day(s) (--push-days) x {args.push_sample} (--push-sample: the share "
        "of logged decisions kept as labelled sends)",
        f"{d} push training rows = {full['push_rows']:,.0f}",
        f"{a} KEY: the power law t = a * n^b fitted over the measured range holds out to "
        "full scale (no change of regime: caches, memory bandwidth, swapping, int64 indices), "
        "on a core of this VM type",
        f"{a} 1-core time = the process CPU time fit (core-seconds; for a step that ran "
        "on several threads here, its threads' CPU time is what one core would need)",
        f"{a} N cores: linear speed-up (1-core time / N) for the steps that use every core "
        f"as configured ({', '.join(f'{k}: {v}' for k, v in MULTITHREADED.items())}); the "
        "others are pinned to one thread and gain nothing from N cores unless unpinned "
        f"(--cores {args.cores})",
    ]


def memory_lines(
    args: argparse.Namespace, full: dict[str, float], results: dict[str, Any]
) -> list[str]:
    """Full-scale memory where it is simply derivable (analytic, or measured bytes x n)."""
    gib = 2**30
    d = "DERIVED    "
    lines = []
    factors = AlsParams().factors
    nnz = full["als_nnz"]
    idx_bytes = 8 if nnz > INT32_MAX else 4
    lines += [
        f"{d} ALS user factors {full['users']:,.0f} x {factors} x 4 B = "
        f"{full['users'] * factors * 4 / gib:,.1f} GiB; item factors {full['items']:,.0f} x "
        f"{factors} x 4 B = {full['items'] * factors * 4 / gib:,.1f} GiB",
        f"{d} ALS CSR: {nnz:,.0f} non-zeros "
        + (
            "> 2^31-1, so int64 indices: (4 B value + 8 B index) x 2 copies (the matrix and "
            "implicit's transpose)"
            if idx_bytes == 8
            else "x (4 B value + 4 B index) x 2 copies (the matrix and implicit's transpose)"
        )
        + f" = {nnz * (4 + idx_bytes) * 2 / gib:,.1f} GiB",
        f"{d} ALS CSR with impressions counted (as configured): "
        f"{full['als_nnz_with_impressions']:,.0f} non-zeros x (4 + 8) B x 2 copies = "
        f"{full['als_nnz_with_impressions'] * 12 * 2 / gib:,.1f} GiB",
        f"{d} train_als's positive-cell MSE gathers user_factors[coo.row] and "
        f"item_factors[coo.col]: {nnz:,.0f} x {factors} x 4 B x 2 = "
        f"{nnz * factors * 4 * 2 / gib:,.1f} GiB (plus the COO copy, "
        f"{nnz * (4 + 2 * idx_bytes) / gib:,.1f} GiB)",
    ]
    tt = TwoTowerParams()
    lines.append(
        f"{d} two-tower examples in memory: positives x (user_x + item_x) float32; "
        f"{full['two_tower_positives']:,.0f} positives -> "
        f"{full['two_tower_positives'] * _two_tower_row_bytes(results) / gib:,.1f} GiB "
        f"(as configured, {tt.max_examples:,} -> "
        f"{tt.max_examples * _two_tower_row_bytes(results) / gib:,.2f} GiB)"
    )
    lines.append(
        f"{d} item index vectors: {full['index_items']:,.0f} x {args.index_dim} x 4 B = "
        f"{full['index_items'] * args.index_dim * 4 / gib:,.1f} GiB (IVF lists also hold an "
        "8 B id per vector)"
    )
    # Measured working memory per unit at the largest size, scaled linearly.
    for step, res in results.items():
        if not res.get("sizes"):
            continue
        big = max(res["sizes"], key=lambda s: s["n"])
        n_full = res["full_n"]
        per_unit = (big["info"]["input_mib"] + big["peak_delta_mib"]) * 2**20 / big["n"]
        lines.append(
            f"{d} {LABELS[step]}: input + peak RSS growth during the call at n={big['n']:,} = "
            f"{per_unit:,.0f} B per {UNIT[step]} -> {per_unit * n_full / gib:,.1f} GiB at "
            f"{n_full:,.0f} (linear in n)"
        )
        if step == "two_tower" and "prep" in big:
            prep_unit = big["prep"]["peak_delta_mib"] * 2**20 / big["n"]
            lines.append(
                f"{d} two-tower build_examples: peak RSS growth {prep_unit:,.0f} B per first "
                f"engagement at n={big['n']:,}; it encodes every first engagement before "
                f"keeping the latest max_examples: {full['two_tower_pool']:,.0f} -> "
                f"{prep_unit * full['two_tower_pool'] / gib:,.0f} GiB (linear in n)"
            )
    return lines


def _two_tower_row_bytes(results: dict[str, Any]) -> float:
    sizes = results.get("two_tower", {}).get("sizes") or []
    if sizes:
        info = sizes[-1]["info"]
        return 4.0 * (info["user_x"][1] + info["item_x"][1])
    return float("nan")


def extrapolate(
    args: argparse.Namespace, full: dict[str, float], results: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per step (two extra for the configured variants) at full scale."""
    rows = []
    variants: dict[str, list[tuple[str, float]]] = {
        "als": [
            ("engagements only", full["als_nnz"]),
            ("impressions counted, as configured", full["als_nnz_with_impressions"]),
        ],
        "ranker": [
            (f"cap {args.ranker_max_rows:,.0f}", full["ranker_rows"]),
            ("uncapped", full["ranker_rows_uncapped"]),
        ],
        "two_tower": [
            (f"sampled to {full['two_tower_positives']:,.0f}", full["two_tower_positives"]),
            ("as configured (max_examples)", full["two_tower_configured"]),
        ],
        "index": [("every catalog item", full["index_items"])],
        "push": [("open + fatigue", full["push_rows"])],
    }
    for step, res in results.items():
        if not res.get("sizes"):
            continue
        ns = [s["n"] for s in res["sizes"]]
        for label, n_full in variants[step]:
            one_core_h = predict(res["fit_cpu"], n_full) / 3600
            last2_h = predict(res["fit_cpu_last2"], n_full) / 3600
            wall_h = predict(res["fit_wall"], n_full) / 3600
            # Sensitivity: b = 1 from the largest size (the measured CPU seconds per unit there).
            big = res["sizes"][-1]
            linear_h = big["cpu_s"] * n_full / big["n"] / 3600
            parallel = step in MULTITHREADED
            rows.append(
                {
                    "step": step,
                    "variant": label,
                    "measured_range": [min(ns), max(ns)],
                    "b_wall": res["fit_wall"]["b"],
                    "b_cpu": res["fit_cpu"]["b"],
                    "max_rel_residual_cpu": res["fit_cpu"]["max_rel_residual"],
                    "n_full": n_full,
                    "extrapolation_factor": n_full / max(ns),
                    "hours_wall_here": wall_h,
                    "hours_1_core": one_core_h,
                    "b_cpu_last2": res["fit_cpu_last2"]["b"],
                    "hours_1_core_last2": last2_h,
                    "hours_1_core_linear_from_largest": linear_h,
                    "hours_n_cores_as_configured": one_core_h / args.cores
                    if parallel
                    else one_core_h,
                    "hours_n_cores_linear": one_core_h / args.cores,
                    "parallel_as_configured": parallel,
                }
            )
    return rows


# --------------------------------------------------------------------------- report


def _hours(h: float) -> str:
    if h < 1 / 60:
        return f"{h * 3600:,.1f} s"
    if h < 1:
        return f"{h * 60:,.1f} min"
    return f"{h:,.1f} h"


def report_step(step: str, res: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"== {LABELS[step]}: n = {UNITS[step]}",
        "| n | shape | wall s | min | CPU s | cpu/wall | RSS before | peak RSS | growth | notes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in res["sizes"]:
        notes = []
        if step == "als":
            notes.append(f"implicit fit {s['implicit_fit_s']:.2f} s")
            factor_mib = AlsParams().factors * 4 / 2**20
            notes.append(
                f"factors: users {s['info']['users'] * factor_mib:,.1f} MiB, items "
                f"{s['info']['items'] * factor_mib:,.1f} MiB"
            )
            notes.append(
                f"{s['info']['empty_users']:,} users / {s['info']['empty_items']:,} items empty"
            )
        elif step == "ranker":
            notes.append(f"LightGBM fit {s['lightgbm_fit_s']:.2f} s, {s['trees']} trees")
            notes.append(f"valid NDCG@10 {s['valid_ndcg_at_10']:.3f}")
        elif step == "two_tower":
            p = s["prep"]
            notes.append(
                f"build_examples {p['wall_s']:.2f} s, +{p['peak_delta_mib']:,.0f} MiB; "
                f"valid loss {s['valid_loss']:.3f}"
            )
        elif step == "index":
            notes.append(f"{s['index_kind']}, dim {s['index_dim']}")
        elif step == "push":
            notes.append(
                f"test AUC open {s['open_test_auc']:.3f}, fatigue {s['fatigue_test_auc']:.3f}"
            )
        lines.append(
            f"| {s['n']:,} | {s['info']['shape']} | {s['wall_s']:.2f} | {s['wall_min_s']:.2f} | "
            f"{s['cpu_s']:.2f} | {s['cpu_per_wall']:.2f} | {s['rss_before_mib']:,.0f} MiB | "
            f"{s['peak_rss_mib']:,.0f} MiB | +{s['peak_delta_mib']:,.0f} MiB | "
            f"{'; '.join(notes)} |"
        )
    for kind in ("wall", "cpu"):
        f = res[f"fit_{kind}"]
        lines.append(
            f"FIT {kind:<4} t = {f['a']:.3e} * n^{f['b']:.3f}  (max relative residual "
            f"{f['max_rel_residual']:.1%} over {len(res['sizes'])} sizes)"
        )
    last2 = res["fit_cpu_last2"]
    lines.append(
        f"FIT cpu, two largest sizes only: t = {last2['a']:.3e} * n^{last2['b']:.3f} "
        "(the local exponent, for sensitivity)"
    )
    return lines


def report(
    meta: dict[str, Any],
    args: argparse.Namespace,
    full: dict[str, float],
    results: dict[str, Any],
    table: list[dict[str, Any]],
) -> str:
    lines = [
        "FitPulse training-time scaling benchmark (MEASURED here unless marked ASSUMPTION/DERIVED)",
        f"date {meta['date']}; commit {meta['git']['commit']} "
        f"({len(meta['git']['modified_files'])} tracked files modified in the working tree)",
        f"machine: {meta['cpus']} CPUs, L3 {meta['l3_cache']}, {meta['mem_gib']:.1f} GiB, "
        f"{meta['platform']}, Python "
        f"{meta['python']}; numpy {meta['versions']['numpy']}, implicit "
        f"{meta['versions']['implicit']}, LightGBM {meta['versions']['lightgbm']}, torch "
        f"{meta['versions']['torch']}, faiss {meta['versions']['faiss']}, scikit-learn "
        f"{meta['versions']['sklearn']}",
        f"load average 1/5/15 min at start {meta['load_start']}, at end {meta['load_end']}",
        "threads: OPENBLAS_NUM_THREADS=1; implicit num_threads=0 and faiss OpenMP: "
        + (
            f"limited to {args.omp_threads} (--omp-threads)"
            if args.omp_threads
            else f"all {meta['faiss_omp_threads']} threads (as configured)"
        )
        + f"; ranker LightGBM num_threads="
        f"{RankerParams().num_threads}; push LightGBM num_threads=1; torch "
        f"{TwoTowerParams().num_threads} thread(s) (TwoTowerParams), CPU only",
        f"repeat {args.repeat} (median wall time), seed {args.seed}, quick {args.quick}; "
        f"imports before timing {meta['import_s']:.1f} s",
        "params: "
        f"AlsParams factors={AlsParams().factors} iterations={AlsParams().iterations}; "
        f"RankerParams n_estimators={RankerParams().n_estimators} "
        f"num_leaves={RankerParams().num_leaves}; TwoTowerParams epochs="
        f"{TwoTowerParams().epochs} batch_size={TwoTowerParams().batch_size} hidden="
        f"{TwoTowerParams().hidden} dim={TwoTowerParams().dim}; IndexParams "
        f"exact_threshold={IndexParams().exact_threshold} large_kind={IndexParams().large_kind}"
        f" ivf_train_per_list={IndexParams().ivf_train_per_list}; PushModelParams "
        f"n_estimators={PushModelParams().n_estimators} calibration="
        f"{PushModelParams().calibration}",
        "growth = peak RSS during the call minus RSS before it (the input is already in "
        "memory); "
        + (
            "high-water mark reset before each call"
            if all(s["peak_reset"] for r in results.values() for s in r.get("sizes", []))
            else "this OS cannot reset the high-water mark: peak is the process's so far"
        ),
    ]
    for step in STEPS:
        if step in results:
            if results[step].get("skipped"):
                lines += ["", f"== {LABELS[step]}: SKIPPED ({results[step]['skipped']})"]
            else:
                lines += report_step(step, results[step])
    lines += [
        "",
        "NOTE        training_job runs train_als twice (als_model, and the ranker frame's feature "
        "ALS on the events before the ranker window) and builds two indexes (ALS item factors, "
        f"{AlsParams().factors}-d; every live catalog item, two-tower, "
        f"{TwoTowerParams().dim + 1}-d); each is counted once below",
    ]
    lines += ["", "== Extrapolation to full scale", *assumption_lines(args, full)]
    lines += memory_lines(args, full, results)
    for row in table:
        lines.append(
            f"DERIVED     {LABELS[row['step']]} ({row['variant']}): n = {row['n_full']:,.0f} "
            f"({row['extrapolation_factor']:,.0f}x the largest measured size): "
            f"{_hours(row['hours_1_core'])} on 1 core ({_hours(row['hours_1_core_last2'])} with "
            f"the local exponent {row['b_cpu_last2']:.2f}, "
            f"{_hours(row['hours_1_core_linear_from_largest'])} linear from the largest size); "
            f"{_hours(row['hours_wall_here'])} by "
            f"the wall-time fit on this machine's {meta['cpus']} cores"
        )
    per_day = [r for r in table if r["variant"] == _main_variant(r["step"], table)]
    total_1 = sum(r["hours_1_core"] for r in per_day)
    total_cfg = sum(r["hours_n_cores_as_configured"] for r in per_day)
    total_lin = sum(r["hours_n_cores_linear"] for r in per_day)
    lines.append(
        f"DERIVED     daily training, the first variant of each step, run one after another: "
        f"{_hours(total_1)} on 1 core; on {args.cores} cores {_hours(total_cfg)} as "
        f"configured, {_hours(total_lin)} if every step sped up linearly"
    )
    lines += [
        "",
        f"| step | variant | measured range | b (wall) | b (CPU) | max residual (CPU) | "
        f"n at full scale | x largest | 1 core | 1 core, local b | 1 core, b = 1 from largest | "
        f"{args.cores} cores as configured | {args.cores} cores, linear speed-up |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table:
        lo, hi = row["measured_range"]
        lines.append(
            f"| {LABELS[row['step']]} | {row['variant']} | {lo:,}-{hi:,} | {row['b_wall']:.2f} | "
            f"{row['b_cpu']:.2f} | {row['max_rel_residual_cpu']:.1%} | {row['n_full']:,.0f} | "
            f"{row['extrapolation_factor']:,.0f}x | {_hours(row['hours_1_core'])} | "
            f"{_hours(row['hours_1_core_last2'])} | "
            f"{_hours(row['hours_1_core_linear_from_largest'])} | "
            f"{_hours(row['hours_n_cores_as_configured'])}"
            f"{'' if row['parallel_as_configured'] else ' (1 thread)'} | "
            f"{_hours(row['hours_n_cores_linear'])} |"
        )
    return "\n".join(lines)


def _main_variant(step: str, table: list[dict[str, Any]]) -> str:
    return next(r["variant"] for r in table if r["step"] == step)


# --------------------------------------------------------------------------- main


def _l3_cache() -> str:
    try:
        return Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
    except OSError:
        return "unknown"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _sizes(text: str | None, default: tuple[int, ...]) -> list[int]:
    return sorted({int(float(s)) for s in text.split(",")}) if text else list(default)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", default=",".join(STEPS), help="comma list of " + ",".join(STEPS))
    parser.add_argument("--quick", action="store_true", help="two small sizes per step")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per size (median)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json-out", type=Path, help="write every number as JSON")
    for step in STEPS:
        parser.add_argument(
            f"--{step.replace('_', '-')}-sizes",
            help=f"comma list of sizes ({UNITS[step]}); default "
            + ",".join(f"{s:,}".replace(",", "_") for s in DEFAULT_SIZES[step]),
        )
    parser.add_argument(
        "--omp-threads",
        type=int,
        default=0,
        help="limit OpenMP (implicit ALS, faiss) to this many threads; 0: as configured (all)",
    )
    g = parser.add_argument_group("assumptions of the extrapolation")
    g.add_argument("--monthly-users", type=float, default=65e6)
    g.add_argument("--catalog-items", type=float, default=9e6)
    g.add_argument("--events-per-day", type=float, default=1.53e9)
    g.add_argument("--engagement-share", type=float, default=0.11)
    g.add_argument("--impression-share", type=float, default=0.85)
    g.add_argument("--als-days", type=int, default=28)
    g.add_argument("--distinct-share", type=float, default=0.5, help="distinct pairs / events")
    g.add_argument("--ranker-days", type=int, default=5)
    g.add_argument("--ranker-max-rows", type=float, default=50e6)
    g.add_argument("--two-tower-days", type=int, default=28)
    g.add_argument("--two-tower-positives", type=float, default=200e6)
    g.add_argument("--index-dim", type=int, default=TwoTowerParams().dim + 1)
    g.add_argument("--push-qps", type=float, default=35_000)
    g.add_argument("--push-days", type=float, default=1)
    g.add_argument("--push-sample", type=float, default=0.01)
    g.add_argument("--cores", type=int, default=32, help="cores of the training machine")
    args = parser.parse_args(argv)
    args.step_list = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(args.step_list) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; choose from {', '.join(STEPS)}")
    if args.repeat < 1 or args.cores < 1:
        parser.error("--repeat and --cores must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "mem_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "load_start": _load(),
        "l3_cache": _l3_cache(),
        "git": git_state(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    import_start = time.perf_counter()
    # The domain imports these inside functions: import them before any timing.
    import faiss
    import implicit
    import implicit.cpu.als
    import lightgbm
    import sklearn
    import torch

    meta["import_s"] = time.perf_counter() - import_start
    meta["faiss_omp_threads"] = faiss.omp_get_max_threads()
    meta["versions"] = {
        "numpy": np.__version__,
        "implicit": implicit.__version__,
        "lightgbm": lightgbm.__version__,
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "sklearn": sklearn.__version__,
        "pandas": pd.__version__,
    }
    full = full_scale(args)
    results: dict[str, Any] = {}
    for step in (s for s in STEPS if s in args.step_list):
        option = getattr(args, f"{step}_sizes")
        default = QUICK_SIZES[step] if args.quick else DEFAULT_SIZES[step]
        sizes = _sizes(option, default)
        res: dict[str, Any] = {"sizes": []}
        print(f"{step}: warm-up n={WARMUP_SIZES[step]:,} (not timed) ...", file=sys.stderr)
        run_size(step, WARMUP_SIZES[step], args, full, 1)
        for n in sizes:
            print(f"{step}: n={n:,} ...", file=sys.stderr, flush=True)
            res["sizes"].append(run_size(step, n, args, full, args.repeat))
            gc.collect()
        ns = [s["n"] for s in res["sizes"]]
        res["fit_wall"] = fit_power_law(ns, [s["wall_s"] for s in res["sizes"]])
        res["fit_cpu"] = fit_power_law(ns, [s["cpu_s"] for s in res["sizes"]])
        # Sensitivity: the exponent between the two largest sizes only, anchored at the largest.
        res["fit_cpu_last2"] = fit_power_law(ns[-2:], [s["cpu_s"] for s in res["sizes"][-2:]])
        res["full_n"] = {
            "als": full["als_nnz"],
            "ranker": full["ranker_rows"],
            "two_tower": full["two_tower_positives"],
            "index": full["index_items"],
            "push": full["push_rows"],
        }[step]
        results[step] = res
    meta["load_end"] = _load()
    meta["wall_s"] = time.perf_counter() - t_start
    table = extrapolate(args, full, results)
    print(report(meta, args, full, results, table))
    print(f"\ntotal wall time {meta['wall_s']:.1f} s")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "meta": meta,
            "full_scale": full,
            "params": {
                "als": asdict(AlsParams()),
                "ranker": asdict(RankerParams()),
                "two_tower": asdict(TwoTowerParams()),
                "index": asdict(IndexParams()),
                "push": asdict(PushModelParams()),
            },
            "results": results,
            "extrapolation": table,
        }
        args.json_out.write_text(json.dumps(jsonable(payload), indent=2) + "\n")
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
