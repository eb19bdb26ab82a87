"""Public MovieLens data through the project's CLI, side by side with reference models (issue 18).

Two datasets, each with its own protocol; every model of a dataset is trained on the same train
part and scored on the same test part by the same metric code.

**MovieLens 100K** (``ml-100k/u.data``), the Microsoft Recommenders benchmark protocol:

- split: ``python_stratified_split(ratio=0.75, seed=42)`` semantics, implemented with numpy.
  The exact rule: users in ascending id order, each user's ratings in file order; one
  ``np.random.default_rng(seed)`` draws ``rng.permutation(n)`` for each user in that order; the
  first ``round(0.75 * n)`` positions of the permutation go to train, the rest to test
  (``round`` is Python's, half to even, as Recommenders' ``split_pandas_data_with_ratios``
  uses). The rows differ from Recommenders' pandas-sampled split; the sizes do not.
- evaluation: top 10 per test user, the user's train items removed from the ranking, only
  items with at least one train rating ranked (a model knows no other item), every test item
  relevant whatever its rating (binary relevance).

**ml-latest-small** (``ratings.csv`` + ``movies.csv``), a time-based protocol: one global cut
at the timestamp of the rating at position ``floor(0.9 * n)`` of the ratings sorted by time
(0-based), so the latest 10% begin there; train is every rating before the cut, test every
rating at or after it. Every user with a test item is evaluated: ``warm`` are those with train
history, ``all`` adds the cold ones. A reference model has nothing for a user without history,
so every reference serves cold users its popularity list.

Metrics (Recommenders' ``python_evaluation`` definitions, ``k = 10``), averaged over the
evaluated users; a user a model returned nothing for counts 0 (so does Recommenders' NDCG, while
its precision, recall and MAP leave such a user out; the ``served`` column says how many got a
list):

- NDCG@10: DCG = sum over hits in the top 10 of ``1 / log2(rank + 1)``; IDCG = the same sum
  over ranks ``1 .. min(10, #test items)``; binary gains;
- Precision@10: hits / 10; Recall@10: hits / #test items;
- MAP@10: the sum over hits of (hits so far / rank), divided by ``min(#test items, 10)``
  (Recommenders' ``map_at_k``; its ``map`` divides by #test items).

Reference models, inside this script, trained on the train part only:

- ``popularity``: items by number of train ratings (ties: lower item index first);
- ``als``: ``implicit.cpu.als.AlternatingLeastSquares`` on the binary user x item CSR matrix
  times ``alpha`` (implicit takes a cell's value as its confidence and 1 for empty cells, so
  ``alpha = 1`` weighs rated and unrated cells alike), 15 iterations.
  ``factors x regularization x alpha`` is chosen on a validation split carved from the train
  part by the dataset's own rule (another seed, ``seed + 1``, for the stratified one; the latest
  10% of the train part for the time one), then refitted on the whole train part;
- ``ease``: Steck 2019's closed form on the binary matrix: ``G = X^T X + lambda I``,
  ``P = G^-1``, ``B = -P / diag(P)`` (column j divided by ``P_jj``), ``diag(B) = 0``, scores
  ``X B``; once with ``lambda = 500`` as published and once with lambda chosen on the same
  validation split.

**The project's path**, through the real CLI in a fresh home (a temp dir, or ``--keep-home``):
the train part is written as a CSV (``user_id,item_id,rating,timestamp``) and landed with
``fitpulse import-interactions ... --weight-col rating --grades ...``; the films' catalog
(ml-latest-small's ``movies.csv``, ml-100k's ``u.item`` rewritten in that shape) is landed with
``fitpulse import-catalog ... --difficulty beginner --intensity low`` (``CATALOG_ARGS``); then
``fitpulse train --home H --holdout X`` (the option is left out, and the row says so, while
``fitpulse train --help`` does not list it), then ``fitpulse recommend --users USERS.csv --n 10
--output RECS.parquet`` for every evaluated user (raw ids). ``train`` exits 1 when a blocking
check fails; that is recorded and ``recommend`` still runs: with ``--version N`` for the version
``train`` registered (a reviewer has not promoted it yet), else without, when it serves what the
service serves while no champion is promoted, the popularity fallback. A step that fails shows
as a row with its reason. Every step is timed.

    .venv/bin/python benchmarks/public_data_bench.py --skip-project     # references: ~3 min
    .venv/bin/python benchmarks/public_data_bench.py                    # with the CLI path
    .venv/bin/python benchmarks/public_data_bench.py --datasets ml-100k --keep-home /tmp/pb
"""

from __future__ import annotations

import os

# Before numpy is imported: implicit wants one BLAS thread, and on the shared 2-core VM ml-100k's
# EASE weights took 2.0-3.0 s on two OpenBLAS threads against 0.26-0.71 s on one.
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import datetime as dt
import json
import math
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from bench_common import git_state, jsonable
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

K = 10
REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "movielens"
DATASETS = ("ml-100k", "ml-latest-small")
ALS_FACTORS = (32, 64, 128)
ALS_REGULARIZATION = (0.5, 5.0, 50.0)
ALS_ALPHA = (1.0, 5.0, 25.0)
ALS_ITERATIONS = 15
EASE_LAMBDAS = (100.0, 200.0, 300.0, 500.0, 800.0, 1200.0)
EASE_PUBLISHED_LAMBDA = 500.0
ML100K_GRADES = "5:workout_complete,4:workout_start,1:click"
SMALL_GRADES = "5:workout_complete,4:workout_start,0.5:click"
CATALOG_ARGS = (
    "--id-col movieId --title-col title --genres-col genres --difficulty beginner --intensity low"
)
"""``import-catalog`` options for a film catalog. The declared difficulty and intensity say that
every film may be shown to anyone: without them every item's difficulty is unknown, so the
beginner-safety rule (which applies to members of unknown level too, as every imported member
is) would keep every item out of every feed."""
TAIL_LINES = 12
SUMMARY_LINES = 120
STAMP = re.compile(r"^\[fitpulse \d\d:\d\d:\d\d\] ")
"""The CLI's progress-line prefix (``_say``)."""
STAGE_TIME = re.compile(r"^  \S+ +\d+\.\d s$")
"""``train``'s per-stage seconds."""
INGESTED_DAY = re.compile(r"^\s+\d{4}-\d\d-\d\d: read ")
REASON = re.compile(r"^((push )?step \S+ failed: |training run \S+ failed|asset checks: FAILED)")
"""Lines of the CLI's own that say why a step failed."""
ERROR = re.compile(r"^\S*Error: ")
BOX = re.compile(r"^\s*│ ?(.*?) *│?$")
"""A line inside typer's error box."""
NOISE = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO |\d{4}-\d\d-\d\d .* - dagster - )")
"""MLflow's database set-up and Dagster's own log lines (the failures are in REASON lines)."""


def say(message: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[public-data-bench {stamp}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data and splits


def load_ml100k() -> pd.DataFrame:
    """``u.data``: int columns ``user, item, rating, timestamp`` in file order."""
    return pd.read_csv(
        DATA / "ml-100k" / "u.data",
        sep="\t",
        header=None,
        names=["user", "item", "rating", "timestamp"],
        dtype={"user": np.int64, "item": np.int64, "rating": np.float64, "timestamp": np.int64},
    )


def ml100k_catalog(workdir: Path) -> Path:
    """``u.item`` as a ``movies.csv``-shaped file (``movieId,title,genres``) in ``workdir``.

    ``u.item`` is ``|``-separated Latin-1 with one 0/1 column per genre of ``u.genre``; the
    film's genres are joined with ``|`` as ml-latest-small writes them (``unknown`` is left out;
    a film without another genre gets ``(no genres listed)``).
    """
    genres = pd.read_csv(
        DATA / "ml-100k" / "u.genre", sep="|", header=None, names=["genre", "code"]
    ).dropna()
    names = list(genres.sort_values("code")["genre"])
    items = pd.read_csv(
        DATA / "ml-100k" / "u.item",
        sep="|",
        header=None,
        encoding="latin-1",
        names=["movieId", "title", "released", "video", "imdb", *names],
    )
    flags = items[names].to_numpy(dtype=bool)
    joined = [
        "|".join(g for g, on in zip(names, row, strict=True) if on and g != "unknown")
        or "(no genres listed)"
        for row in flags
    ]
    out = workdir / "movies.csv"
    pd.DataFrame({"movieId": items["movieId"], "title": items["title"], "genres": joined}).to_csv(
        out, index=False
    )
    return out


def load_ml_latest_small() -> pd.DataFrame:
    """``ratings.csv`` renamed to ``user, item, rating, timestamp`` in file order."""
    frame = pd.read_csv(DATA / "ml-latest-small" / "ratings.csv")
    frame = frame.rename(columns={"userId": "user", "movieId": "item"})
    return frame.astype({"user": np.int64, "item": np.int64, "timestamp": np.int64})


def stratified_split(
    ratings: pd.DataFrame, ratio: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per user a random ``round(ratio * n)`` of the user's ratings to train, the rest to test.

    Users in ascending id order, each user's rows in the frame's order; one generator seeded
    with ``seed`` draws ``permutation(n)`` per user in that order.
    """
    rng = np.random.default_rng(seed)
    order = np.argsort(ratings["user"].to_numpy(), kind="stable")
    users = ratings["user"].to_numpy()[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    train_rows: list[np.ndarray] = []
    test_rows: list[np.ndarray] = []
    for start, end in zip(starts, ends, strict=True):
        n = int(end - start)
        perm = rng.permutation(n)
        cut = round(ratio * n)
        rows = order[start:end]
        train_rows.append(rows[perm[:cut]])
        test_rows.append(rows[perm[cut:]])
    train = ratings.iloc[np.sort(np.concatenate(train_rows))].reset_index(drop=True)
    test = ratings.iloc[np.sort(np.concatenate(test_rows))].reset_index(drop=True)
    return train, test


def time_split(ratings: pd.DataFrame, test_share: float) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Train before the timestamp where the latest ``test_share`` of ratings begin, test after.

    Returns:
        Train, test (rows in frame order) and the cut timestamp (ties at it go to test).
    """
    stamps = np.sort(ratings["timestamp"].to_numpy())
    cut = int(stamps[math.floor((1.0 - test_share) * len(stamps))])
    before = ratings["timestamp"].to_numpy() < cut
    return (
        ratings[before].reset_index(drop=True),
        ratings[~before].reset_index(drop=True),
        cut,
    )


@dataclass
class Encoded:
    """A train/test pair on shared indices.

    Attributes:
        users: raw user id of each row index of ``x``.
        items: raw item id of each column index of ``x``.
        x: binary float64 CSR, users x items, 1 where the user rated the item in train.
        truth: user index -> set of item indices of the user's test ratings.
        eval_users: user indices evaluated (those with a test item), ascending.
        warm: for each of ``eval_users``, whether the user has a train rating.
        candidates: boolean per item, True where the item has a train rating.
    """

    users: np.ndarray
    items: np.ndarray
    x: sp.csr_matrix
    truth: dict[int, set[int]]
    eval_users: np.ndarray
    warm: np.ndarray
    candidates: np.ndarray


def encode(train: pd.DataFrame, test: pd.DataFrame) -> Encoded:
    users = np.union1d(train["user"].unique(), test["user"].unique())
    items = np.union1d(train["item"].unique(), test["item"].unique())
    tu = np.searchsorted(users, train["user"].to_numpy())
    ti = np.searchsorted(items, train["item"].to_numpy())
    x = sp.csr_matrix(
        (np.ones(len(tu)), (tu, ti)), shape=(len(users), len(items)), dtype=np.float64
    )
    x.data[:] = 1.0  # a repeated (user, item) pair is still one positive
    x.sum_duplicates()
    x.data[:] = 1.0
    su = np.searchsorted(users, test["user"].to_numpy())
    si = np.searchsorted(items, test["item"].to_numpy())
    truth: dict[int, set[int]] = {}
    for u, i in zip(su.tolist(), si.tolist(), strict=True):
        truth.setdefault(u, set()).add(i)
    eval_users = np.array(sorted(truth), dtype=np.int64)
    warm = np.diff(x.indptr)[eval_users] > 0
    candidates = np.asarray(x.sum(axis=0)).ravel() > 0
    return Encoded(users, items, x, truth, eval_users, warm, candidates)


# --------------------------------------------------------------------------- metrics


def ranking_metrics(
    recs: Mapping[int, Sequence[int]], truth: Mapping[int, set[int]], users: Iterable[int]
) -> dict[str, float]:
    """NDCG, Precision, Recall and MAP at ``K`` (Recommenders' definitions) over ``users``.

    Args:
        recs: user index -> recommended item indices, best first (-1: an item unknown here).
        truth: user index -> relevant (test) item indices.
        users: the users averaged over; one missing from ``recs`` scores 0 everywhere.
    """
    discount = 1.0 / np.log2(np.arange(2, K + 2))
    rows = []
    served = 0
    for u in users:
        relevant = truth[u]
        ranked = list(recs.get(u, ()))[:K]
        served += u in recs
        hits = np.fromiter((i in relevant for i in ranked), dtype=bool, count=len(ranked))
        n_rel = len(relevant)
        dcg = float(discount[: len(ranked)][hits].sum())
        idcg = float(discount[: min(n_rel, K)].sum())
        hit_ranks = np.flatnonzero(hits) + 1
        ap = float((np.arange(1, len(hit_ranks) + 1) / hit_ranks).sum()) / min(n_rel, K)
        rows.append((dcg / idcg, hits.sum() / K, hits.sum() / n_rel, ap))
    values = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    mean = values.mean(axis=0) if len(values) else np.full(4, np.nan)
    return {
        "users": len(values),
        "served": served,
        "ndcg@10": float(mean[0]),
        "precision@10": float(mean[1]),
        "recall@10": float(mean[2]),
        "map@10": float(mean[3]),
    }


def top_k(scores: np.ndarray, exclude: sp.csr_matrix, candidates: np.ndarray) -> np.ndarray:
    """Best ``K`` item indices per row of ``scores``, excluded cells and non-candidates removed.

    Ties go to the lower item index. ``scores`` is modified in place.
    """
    scores[:, ~candidates] = -np.inf
    rows, cols = exclude.nonzero()
    scores[rows, cols] = -np.inf
    part = np.argpartition(-scores, K, axis=1)[:, :K]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    return np.take_along_axis(part, order, axis=1)


Scorer = Callable[[np.ndarray], np.ndarray]
"""User indices -> dense float scores, users x all items."""


def recommend_all(
    scorer: Scorer, enc: Encoded, fallback: np.ndarray | None = None, batch: int = 1024
) -> dict[int, list[int]]:
    """Top ``K`` of ``scorer`` for every evaluated user; users without history get ``fallback``."""
    recs: dict[int, list[int]] = {}
    users = enc.eval_users
    if fallback is not None:
        cold = users[~enc.warm]
        recs.update({int(u): fallback.tolist() for u in cold})
        users = users[enc.warm]
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        scores = np.array(scorer(chunk), dtype=np.float64)
        best = top_k(scores, enc.x[chunk], enc.candidates)
        recs.update({int(u): row.tolist() for u, row in zip(chunk, best, strict=True)})
    return recs


# --------------------------------------------------------------------------- reference models


def popularity_scorer(x: sp.csr_matrix) -> Scorer:
    counts = np.asarray(x.sum(axis=0)).ravel()
    return lambda users: np.broadcast_to(counts, (len(users), len(counts)))


def popularity_list(enc: Encoded) -> np.ndarray:
    """The ``K`` most-rated candidate items (for users with no history)."""
    counts = np.asarray(enc.x.sum(axis=0)).ravel().astype(np.float64)
    counts[~enc.candidates] = -np.inf
    return np.lexsort((np.arange(len(counts)), -counts))[:K]


@dataclass(frozen=True)
class AlsPoint:
    """One ALS hyper-parameter point."""

    factors: int
    regularization: float
    alpha: float


def als_scorer(x: sp.csr_matrix, point: AlsPoint, seed: int) -> Scorer:
    from implicit.cpu.als import AlternatingLeastSquares

    # One BLAS thread inside implicit, as train_als does (nested threads oversubscribe).
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=point.factors,
            regularization=point.regularization,
            alpha=point.alpha,
            iterations=ALS_ITERATIONS,
            random_state=seed,
        )
        model.fit(x.astype(np.float32).tocsr(), show_progress=False)
    user_factors = np.asarray(model.user_factors)
    item_factors = np.asarray(model.item_factors)
    return lambda users: user_factors[users] @ item_factors.T


def ease_weights(x: sp.csr_matrix, lam: float) -> np.ndarray:
    """EASE item-item weights ``B`` (items x items, float64), zero diagonal.

    Only items with a train rating are solved for: an empty column of ``X`` makes a row and a
    column of ``G`` that are zero except ``lambda`` on the diagonal, so ``P`` is block-diagonal
    and such an item's weights are exactly 0.
    """
    active = np.flatnonzero(np.diff(x.tocsc().indptr) > 0)
    xa = x[:, active]
    gram = np.asarray((xa.T @ xa).todense(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += lam
    # G is symmetric positive definite: Cholesky inverse costs about a third of an LU inverse.
    chol, info = lapack.dpotrf(gram, lower=0, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"dpotrf info={info}")
    inv, info = lapack.dpotri(chol, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"dpotri info={info}")
    p = np.triu(inv) + np.triu(inv, 1).T
    b_active = -p / np.diag(p)[None, :]
    np.fill_diagonal(b_active, 0.0)
    b = np.zeros((x.shape[1], x.shape[1]), dtype=np.float64)
    b[np.ix_(active, active)] = b_active
    return b


def ease_scorer(x: sp.csr_matrix, lam: float) -> Scorer:
    b = ease_weights(x, lam)
    return lambda users: np.asarray(x[users] @ b)


@dataclass
class RefResult:
    """One reference model's metrics and costs."""

    model: str
    params: dict[str, Any]
    fit_s: float
    metrics: dict[str, dict[str, float]]
    note: str = ""


@dataclass
class Validation:
    """What the validation split chose, with every grid point's NDCG@10."""

    split: dict[str, Any]
    als_grid: list[dict[str, Any]] = field(default_factory=list)
    als_best: dict[str, Any] = field(default_factory=dict)
    ease_grid: list[dict[str, Any]] = field(default_factory=list)
    ease_best: float = float("nan")
    seconds: float = 0.0


def slices(enc: Encoded, recs: Mapping[int, Sequence[int]], time_based: bool) -> dict[str, Any]:
    """Metrics over every evaluated user (``all``), and for the time split also ``warm``."""
    out = {"all": ranking_metrics(recs, enc.truth, enc.eval_users.tolist())}
    if time_based:
        warm = enc.eval_users[enc.warm].tolist()
        out = {"warm": ranking_metrics(recs, enc.truth, warm), **out}
    return out


def validate(
    val_enc: Encoded, split_info: dict[str, Any], time_based: bool, seed: int
) -> Validation:
    """Pick ALS's point and EASE's lambda by NDCG@10 on warm validation users."""
    started = time.perf_counter()
    val = Validation(split=split_info)
    slice_name = "warm" if time_based else "all"
    fallback = popularity_list(val_enc) if time_based else None
    for f, reg, alpha in product(ALS_FACTORS, ALS_REGULARIZATION, ALS_ALPHA):
        point = AlsPoint(f, reg, alpha)
        t0 = time.perf_counter()
        recs = recommend_all(als_scorer(val_enc.x, point, seed), val_enc, fallback)
        ndcg = slices(val_enc, recs, time_based)[slice_name]["ndcg@10"]
        val.als_grid.append({**asdict(point), "ndcg@10": ndcg, "s": time.perf_counter() - t0})
    best = max(val.als_grid, key=lambda r: r["ndcg@10"])
    val.als_best = dict(best)
    say(
        f"  ALS validation: best factors={best['factors']} reg={best['regularization']} "
        f"alpha={best['alpha']} NDCG@10 {best['ndcg@10']:.4f} of {len(val.als_grid)} points"
    )
    for lam in EASE_LAMBDAS:
        t0 = time.perf_counter()
        recs = recommend_all(ease_scorer(val_enc.x, lam), val_enc, fallback)
        ndcg = slices(val_enc, recs, time_based)[slice_name]["ndcg@10"]
        val.ease_grid.append({"lambda": lam, "ndcg@10": ndcg, "s": time.perf_counter() - t0})
    val.ease_best = max(val.ease_grid, key=lambda r: r["ndcg@10"])["lambda"]
    say(f"  EASE validation: best lambda={val.ease_best:g}")
    val.seconds = time.perf_counter() - started
    return val


def run_references(
    enc: Encoded, val: Validation, time_based: bool, seed: int
) -> tuple[list[RefResult], dict[str, dict[int, list[int]]]]:
    """Fit every reference on the whole train part and score it on the test part."""
    fallback = popularity_list(enc) if time_based else None
    best = val.als_best
    point = AlsPoint(int(best["factors"]), float(best["regularization"]), float(best["alpha"]))
    specs: list[tuple[str, dict[str, Any], Callable[[], Scorer], str]] = [
        ("popularity", {}, lambda: popularity_scorer(enc.x), "most-rated train items"),
        (
            "als (validated)",
            asdict(point) | {"iterations": ALS_ITERATIONS},
            lambda: als_scorer(enc.x, point, seed),
            f"chosen on validation from {len(val.als_grid)} points",
        ),
        (
            f"ease lambda={EASE_PUBLISHED_LAMBDA:g}",
            {"lambda": EASE_PUBLISHED_LAMBDA},
            lambda: ease_scorer(enc.x, EASE_PUBLISHED_LAMBDA),
            "published lambda",
        ),
        (
            f"ease lambda={val.ease_best:g} (validated)",
            {"lambda": val.ease_best},
            lambda: ease_scorer(enc.x, val.ease_best),
            f"chosen on validation from {list(EASE_LAMBDAS)}",
        ),
    ]
    results: list[RefResult] = []
    all_recs: dict[str, dict[int, list[int]]] = {}
    for name, params, build, note in specs:
        t0 = time.perf_counter()
        scorer = build()
        fit_s = time.perf_counter() - t0
        recs = recommend_all(scorer, enc, fallback)
        metrics = slices(enc, recs, time_based)
        results.append(RefResult(name, params, fit_s, metrics, note))
        all_recs[name] = recs
        head = metrics["warm" if time_based else "all"]
        say(f"  {name}: NDCG@10 {head['ndcg@10']:.4f} (fit {fit_s:.1f} s)")
    return results, all_recs


# --------------------------------------------------------------------------- the project's path


@dataclass
class Step:
    """One CLI call of the project's path."""

    name: str
    argv: list[str]
    rc: int | None
    seconds: float
    tail: list[str]
    note: str = ""
    summary: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


@dataclass
class ProjectRun:
    """The project's path on one dataset: its steps and its recommendations' metrics."""

    home: str
    steps: list[Step] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    status: str = ""
    notes: list[str] = field(default_factory=list)
    recs_rows: int = 0
    unknown_items: int = 0


def fitpulse_exe() -> str:
    beside = Path(sys.executable).parent / "fitpulse"
    if beside.exists():
        return str(beside)
    found = shutil.which("fitpulse")
    if found is None:
        raise FileNotFoundError("no fitpulse executable beside this Python or on PATH")
    return found


def cli_env() -> dict[str, str]:
    # Wide, plain help output, so option names are not wrapped or styled away.
    # Unbuffered, so a step's log file shows its progress while it runs.
    return os.environ | {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "PYTHONUNBUFFERED": "1"}


def run_step(name: str, argv: list[str], log: Path, timeout_s: float, note: str = "") -> Step:
    """Run one CLI call with its output (stdout and stderr) in ``log``; keep the last lines."""
    say(f"  $ {' '.join(argv[1:])}  (output: {log})")
    t0 = time.perf_counter()
    rc: int | None
    with log.open("w") as out:
        try:
            rc = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=cli_env(),
                timeout=timeout_s,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            rc = None
            note = (note + "; " if note else "") + f"timed out after {timeout_s:.0f} s"
    seconds = time.perf_counter() - t0
    lines = [STAMP.sub("", line.rstrip()) for line in log.read_text(errors="replace").splitlines()]
    tail = [line for line in lines if line.strip()][-TAIL_LINES:]
    say(f"    exit {rc} in {seconds:.1f} s" + (f" ({note})" if note else ""))
    return Step(name, argv, rc, seconds, tail, note, summary_lines(lines), failure_reasons(lines))


def failure_reasons(lines: Sequence[str]) -> list[str]:
    """The CLI's failure lines; else typer's error box; else the last ``...Error:`` line."""
    reasons = [line.strip() for line in lines if REASON.match(line)]
    if not reasons:
        box = [BOX.sub(r"\1", line) for line in lines if BOX.match(line)]
        reasons = [" ".join(part for part in box if part.strip())] if box else []
    if not reasons:
        reasons = [line.strip() for line in lines if ERROR.match(line)][-1:]
    return list(dict.fromkeys(reasons))


def summary_lines(lines: Sequence[str]) -> list[str]:
    """What ``train`` printed from its pipeline line on, without tracebacks, logs and days."""
    keep: list[str] = []
    started = in_trace = False
    for line in lines:
        started = started or line.startswith("training:") or line.startswith("ingesting ")
        if line.startswith(("Traceback", "Stack Trace:")):
            in_trace = True
            continue
        if in_trace:
            if (line[:1].isspace() or not line.strip()) and not STAGE_TIME.match(line):
                continue
            in_trace = False
        if (
            started
            and line.strip()
            and not INGESTED_DAY.match(line)
            and not NOISE.match(line)
            and not ERROR.match(line)
            and not line.startswith("home_feed_evaluation: ")
        ):
            keep.append(line)
    return keep[:SUMMARY_LINES]


def help_text(*command: str) -> tuple[int, str]:
    done = subprocess.run(
        [fitpulse_exe(), *command, "--help"],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def run_project(
    name: str,
    train: pd.DataFrame,
    enc: Encoded,
    workdir: Path,
    grades: str,
    holdout: str,
    catalog: Path | None,
    catalog_args: list[str],
    timeout_s: float,
    time_based: bool,
) -> ProjectRun:
    """Import the train part, train and recommend through the CLI; score the recommendations."""
    exe = fitpulse_exe()
    home = workdir / "home"
    run = ProjectRun(home=str(home))
    train_csv = workdir / "train.csv"
    users_csv = workdir / "users.csv"
    recs_path = workdir / "recs.parquet"
    train.rename(columns={"user": "user_id", "item": "item_id"})[
        ["user_id", "item_id", "rating", "timestamp"]
    ].to_csv(train_csv, index=False)
    pd.DataFrame({"user_id": enc.users[enc.eval_users]}).to_csv(users_csv, index=False)

    run.steps.append(
        run_step(
            "import-interactions",
            [
                exe,
                "import-interactions",
                str(train_csv),
                "--home",
                str(home),
                "--user-col",
                "user_id",
                "--item-col",
                "item_id",
                "--weight-col",
                "rating",
                "--ts-col",
                "timestamp",
                "--ts-unit",
                "s",
                "--grades",
                grades,
            ],
            workdir / "import-interactions.log",
            timeout_s,
        )
    )
    if run.steps[-1].rc != 0:
        run.status = "import-interactions failed"
        return run

    if catalog is not None:
        rc, _ = help_text("import-catalog")
        if rc != 0:
            run.notes.append("catalog not imported: the CLI has no `import-catalog` command")
            say(f"  {run.notes[-1]}")
        else:
            run.steps.append(
                run_step(
                    "import-catalog",
                    [exe, "import-catalog", str(catalog), "--home", str(home), *catalog_args],
                    workdir / "import-catalog.log",
                    timeout_s,
                )
            )
            if run.steps[-1].rc != 0:
                run.notes.append(f"import-catalog exited {run.steps[-1].rc}; training without it")

    train_argv = [exe, "train", "--home", str(home)]
    if holdout != "none":
        _, train_help = help_text("train")
        if "--holdout" in train_help:
            train_argv += ["--holdout", holdout]
        else:
            run.notes.append(f"`train` has no --holdout option yet: ran without `{holdout}`")
            say(f"  {run.notes[-1]}")
    run.steps.append(run_step("train", train_argv, workdir / "train.log", timeout_s))
    train_rc = run.steps[-1].rc
    train_log = workdir / "train.log"
    registered = re.search(
        r"promotion gate for version (\d+)", train_log.read_text() if train_log.exists() else ""
    )
    version = registered.group(1) if registered else None
    if train_rc != 0:
        run.notes.append(train_failure(run.steps[-1]) + "; recommending anyway")
    served = ["--version", version] if version else []

    run.steps.append(
        run_step(
            "recommend",
            [
                exe,
                "recommend",
                "--users",
                str(users_csv),
                "--n",
                str(K),
                "--output",
                str(recs_path),
                *served,
                "--home",
                str(home),
            ],
            workdir / "recommend.log",
            timeout_s,
        )
    )
    if run.steps[-1].rc != 0 or not recs_path.exists():
        why = "; ".join(run.steps[-1].reasons) or "no recommendations written"
        run.status = f"no recommendations: recommend exit {run.steps[-1].rc} ({why})"
        return run

    recs_frame = pd.read_parquet(recs_path)
    run.recs_rows = len(recs_frame)
    recs = project_recs(recs_frame, enc)
    known = set(enc.items.astype(str).tolist())
    run.unknown_items = int((~recs_frame["item_id"].astype(str).isin(known)).sum())
    run.metrics = slices(enc, recs, time_based)
    what = f"version {version}" if version else "the popularity fallback (nothing registered)"
    run.status = "ok" if train_rc == 0 else f"train exit {train_rc}; scored {what}"
    return run


def train_failure(step: Step) -> str:
    """Why ``train`` exited non-zero, in a line (1: a blocking check; 2: a failed step)."""
    kind = {1: "blocking check failed", 2: "a step failed"}.get(step.rc or 0, "")
    if step.rc is None:
        kind = step.note
    reason = "; ".join(dict.fromkeys(step.reasons)) or (step.tail[-1] if step.tail else "")
    return f"train exit {step.rc} ({kind}): {reason}"


def project_recs(frame: pd.DataFrame, enc: Encoded) -> dict[int, list[int]]:
    """Map the CLI's raw-id recommendations to this script's indices (-1: item unknown here)."""
    user_index = {str(u): i for i, u in enumerate(enc.users.tolist())}
    item_index = {str(v): i for i, v in enumerate(enc.items.tolist())}
    recs: dict[int, list[int]] = {}
    frame = frame.sort_values(["user_id", "rank"], kind="stable")
    for user, group in frame.groupby("user_id", sort=False):
        u = user_index.get(str(user))
        if u is None:
            continue
        recs[u] = [item_index.get(str(i), -1) for i in group["item_id"].tolist()]
    return recs


# --------------------------------------------------------------------------- datasets


@dataclass
class DatasetSpec:
    """How one dataset is loaded, split and imported."""

    name: str
    load: Callable[[], pd.DataFrame]
    time_based: bool
    grades: str
    catalog: Callable[[Path], Path] | None
    """Writes (or finds) the dataset's ``movies.csv``-shaped catalog, given the work dir."""


def split_dataset(
    spec: DatasetSpec, ratings: pd.DataFrame, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    if spec.time_based:
        train, test, cut = time_split(ratings, 0.1)
        info = {
            "rule": "global time cut: latest 10% of ratings to test",
            "cut_timestamp": cut,
            "cut_utc": dt.datetime.fromtimestamp(cut, dt.UTC).isoformat(),
        }
    else:
        train, test = stratified_split(ratings, 0.75, seed)
        info = {"rule": "per-user random 75/25 (python_stratified_split semantics)", "seed": seed}
    info |= {
        "train_ratings": len(train),
        "test_ratings": len(test),
        "train_users": int(train["user"].nunique()),
        "test_users": int(test["user"].nunique()),
        "train_items": int(train["item"].nunique()),
    }
    return train, test, info


def bench_dataset(spec: DatasetSpec, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    say(f"{spec.name}: loading")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    ratings = spec.load()
    train, test, split_info = split_dataset(spec, ratings, args.seed)
    enc = encode(train, test)
    split_info |= {
        "eval_users": len(enc.eval_users),
        "warm_eval_users": int(enc.warm.sum()),
        "candidate_items": int(enc.candidates.sum()),
    }
    say(f"{spec.name}: {split_info}")
    timings["load + split"] = time.perf_counter() - started

    t0 = time.perf_counter()
    val_train, val_test, val_info = split_dataset(spec, train, args.seed + 1)
    val = validate(encode(val_train, val_test), val_info, spec.time_based, args.seed)
    timings["validation (ALS grid + EASE lambdas)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    refs, _ = run_references(enc, val, spec.time_based, args.seed)
    timings["references (fit + score)"] = time.perf_counter() - t0

    project: ProjectRun | None = None
    # Others may edit the checkout while this runs: the state as the CLI path starts.
    git = checkout_state()
    if not args.skip_project:
        workdir = root / spec.name
        workdir.mkdir(parents=True, exist_ok=True)
        holdout = args.holdout if not spec.time_based else args.time_holdout
        say(f"{spec.name}: the project's path in {workdir}")
        t0 = time.perf_counter()
        project = run_project(
            spec.name,
            train,
            enc,
            workdir,
            spec.grades,
            holdout,
            None if spec.catalog is None else spec.catalog(workdir),
            args.catalog_args.split(),
            args.step_timeout,
            spec.time_based,
        )
        timings["project path (all steps)"] = time.perf_counter() - t0
    timings["dataset total"] = time.perf_counter() - started
    return {
        "dataset": spec.name,
        "git": git,
        "split": split_info,
        "validation": asdict(val),
        "references": [asdict(r) for r in refs],
        "project": asdict(project) if project is not None else None,
        "timings_s": timings,
    }


# --------------------------------------------------------------------------- report


def metric_row(label: str, m: Mapping[str, float], extra: str = "") -> str:
    return (
        f"{label:<34} {m['users']:>6} {m['served']:>6} {m['ndcg@10']:>8.4f} "
        f"{m['precision@10']:>8.4f} {m['recall@10']:>8.4f} {m['map@10']:>8.4f}  {extra}"
    )


def print_dataset(result: dict[str, Any]) -> None:
    split = result["split"]
    print()
    print(f"== {result['dataset']}: {split['rule']} ==")
    print(
        f"train {split['train_ratings']:,} ratings / {split['train_users']:,} users / "
        f"{split['train_items']:,} items; test {split['test_ratings']:,} ratings; evaluated "
        f"users {split['eval_users']:,} (warm {split['warm_eval_users']:,})"
        + (f"; cut {split['cut_utc']}" if "cut_utc" in split else "")
    )
    val = result["validation"]
    best = val["als_best"]
    print(
        f"validation ({val['split']['rule']}): ALS factors={best['factors']} "
        f"regularization={best['regularization']} alpha={best['alpha']} "
        f"(NDCG@10 {best['ndcg@10']:.4f}); EASE lambda={val['ease_best']:g} "
        f"(grid: "
        + ", ".join(f"{r['lambda']:g}: {r['ndcg@10']:.4f}" for r in val["ease_grid"])
        + ")"
    )
    slice_names = list(result["references"][0]["metrics"])
    project = result["project"]
    for slice_name in slice_names:
        head = (
            f"{'model [' + slice_name + ']':<34} {'users':>6} {'served':>6} {'NDCG@10':>8} "
            f"{'P@10':>8} {'R@10':>8} {'MAP@10':>8}  fit s"
        )
        print()
        print(head)
        print("-" * len(head))
        for ref in result["references"]:
            print(metric_row(ref["model"], ref["metrics"][slice_name], f"{ref['fit_s']:.1f}"))
        best_ref = max(result["references"], key=lambda r: r["metrics"][slice_name]["ndcg@10"])
        if project is None:
            continue
        if project["metrics"]:
            m = project["metrics"][slice_name]
            print(metric_row("fitpulse (CLI path)", m, project["status"]))
            ratio = m["ndcg@10"] / best_ref["metrics"][slice_name]["ndcg@10"]
            print(
                f"  fitpulse NDCG@10 / best reference ({best_ref['model']}): {ratio:.3f}"
                f" ({ratio - 1:+.1%})"
            )
        else:
            print(f"{'fitpulse (CLI path)':<34} {'-':>6} {'-':>6}  FAILED: {project['status']}")
    if project is not None:
        print()
        print(f"project path steps (home {project['home']}):")
        for step in project["steps"]:
            note = f"  [{step['note']}]" if step["note"] else ""
            print(f"  {step['name']:<20} exit {step['rc']!s:>4} {step['seconds']:>8.1f} s{note}")
        for note in project["notes"]:
            print(f"  note: {note}")
        if project["metrics"]:
            print(
                f"  {project['recs_rows']:,} recommendation rows, "
                f"{project['unknown_items']:,} of items this split does not know"
            )
        for step in project["steps"]:
            if step["name"] == "train" and step["summary"]:
                print("  what `train` printed (ingested days and tracebacks left out):")
                lines = step["summary"]
            elif step["rc"] != 0:
                print(f"  last lines of `{step['name']}`:")
                lines = step["tail"]
            else:
                continue
            for line in lines:
                print(f"    | {line}")
    print()
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["timings_s"].items()))
    print(f"git when this dataset ran: {describe_git(result['git'])}")


def checkout_state() -> dict[str, Any]:
    """``git_state()`` plus untracked files and whether ``git status --porcelain`` is empty."""
    done = subprocess.run(
        ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=False
    )
    lines = done.stdout.splitlines() if done.returncode == 0 else []
    untracked = [line[3:] for line in lines if line.startswith("??")]
    return git_state() | {"untracked_files": untracked, "dirty": bool(lines)}


def describe_git(state: Mapping[str, Any]) -> str:
    if not state["dirty"]:
        return f"{state['commit']} (clean)"
    return (
        f"{state['commit']} with uncommitted changes ({len(state['modified_files'])} modified, "
        f"{len(state['untracked_files'])} untracked files)"
    )


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--datasets",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=list(DATASETS),
        help=f"comma-separated, of {','.join(DATASETS)}",
    )
    parser.add_argument("--skip-project", action="store_true", help="references only (fast)")
    parser.add_argument(
        "--keep-home", type=Path, default=None, help="keep the CLI homes and files here"
    )
    parser.add_argument("--seed", type=int, default=42, help="split seed (validation: seed+1)")
    parser.add_argument(
        "--holdout",
        default="user_random",
        help="`fitpulse train --holdout` for ml-100k ('none': leave the option out)",
    )
    parser.add_argument(
        "--time-holdout",
        default="time",
        help="`fitpulse train --holdout` for ml-latest-small ('none': leave the option out)",
    )
    parser.add_argument(
        "--catalog-args",
        default=CATALOG_ARGS,
        help="options of `fitpulse import-catalog` for each dataset's movies.csv",
    )
    parser.add_argument(
        "--step-timeout", type=float, default=3600.0, help="seconds per CLI step before it is cut"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON result file (default: print only)"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.datasets) - set(DATASETS))
    if unknown:
        parser.error(f"unknown --datasets {unknown}; choose from {','.join(DATASETS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    specs = {
        "ml-100k": DatasetSpec("ml-100k", load_ml100k, False, ML100K_GRADES, ml100k_catalog),
        "ml-latest-small": DatasetSpec(
            "ml-latest-small",
            load_ml_latest_small,
            True,
            SMALL_GRADES,
            lambda _: DATA / "ml-latest-small" / "movies.csv",
        ),
    }
    git = checkout_state()
    import implicit
    import scipy

    meta: dict[str, Any] = {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "args": vars(args),
        "git": git,
        "k": K,
        "cpu_count": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "pandas": pd.__version__,
            "implicit": implicit.__version__,
        },
        "als_grid": {
            "factors": ALS_FACTORS,
            "regularization": ALS_REGULARIZATION,
            "alpha": ALS_ALPHA,
            "iterations": ALS_ITERATIONS,
        },
        "ease_lambdas": EASE_LAMBDAS,
    }
    say(f"git {describe_git(git)}; datasets {args.datasets}")
    wall = time.perf_counter()
    root = args.keep_home or Path(tempfile.mkdtemp(prefix="fitpulse-public-data-"))
    results = []
    try:
        for name in args.datasets:
            results.append(bench_dataset(specs[name], args, root))
    finally:
        if args.keep_home is None:
            shutil.rmtree(root, ignore_errors=True)
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["total_s"] = time.perf_counter() - wall
    for result in results:
        print_dataset(result)
    print()
    print(
        f"total {meta['total_s']:.0f} s; load average {meta['loadavg_start']} -> "
        f"{meta['loadavg_end']}; {os.cpu_count()} cores; implicit "
        f"{meta['versions']['implicit']}, numpy {np.__version__}"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(jsonable({"meta": meta, "datasets": results}), indent=2)
        args.out.write_text(payload + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
