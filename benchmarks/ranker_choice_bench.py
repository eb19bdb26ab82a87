"""Which model for the ranking stage: LambdaRank against measured alternatives.

Builds the training spine once through the domain functions (no Dagster, no MLflow), as the
``training_job`` does: world -> ingestion -> snapshot -> two-tower (trained before the ranker's
window) -> ranker training frame -> ALS -> FAISS -> two-tower index -> popularity. Then, on the
same frame and the same candidate pools, it trains and evaluates these ranking stages:

- ``lambdarank`` (the project's): ``train_ranker(frame, feature_columns(), RankerParams())``;
- ``lambdarank_30`` / ``lambdarank_300``: the same with 30 or 300 trees;
- ``lgbm_binary``: LightGBM, pointwise ``binary`` objective on ``label > 0``, the same features,
  hyper-parameters and number of trees, trained on the same rows;
- ``logistic``: scikit-learn ``LogisticRegression`` on standardized features (median-imputed,
  with missing-value indicators), ``label > 0``, the same rows; ``logistic_numpy`` is the same
  fitted model folded into one numpy affine map (what serving a linear model would run);
- ``blend_order``: no learned ranker; candidates in the order retrieval emits them (source
  priority als > two_tower > popular > fresh, then each source's rank);
- ``interleaved``: no learned ranker; retrieval rank first, source priority between equal ranks
  (round-robin over the sources);
- ``als_score``: no learned ranker; the ``als_score`` feature, candidates without one after
  the others in blend order.

Each alternative is plugged in where the ranker scores: ``RankerArtifacts.model`` is the object
``score_candidates`` calls (``model.booster_.predict(X, num_iteration=..., num_threads=...)``),
so a LightGBM classifier goes in as it is and the others through a small adapter with that
interface. No domain file changes. ``evaluate_home_feed`` then builds every held-out user's feed
with it (retrieval, features, scoring, beginner-safety and the other re-ranking guardrails) and
computes the project's metrics; the paired NDCG@10 intervals come from the promotion gate's
``bootstrap_mean_diff``.

Scoring latency: one ``score_candidates`` call per request pool (one user's candidates), single
thread, over ``--latency-requests`` calls, the alternatives interleaved on the same pools so
load changes on a shared machine hit all of them; ``(matrix only)`` times the float32 feature
matrix alone, the floor of any scorer reading every feature. Nothing is asserted.

    .venv/bin/python benchmarks/ranker_choice_bench.py --scale demo   # about 3 minutes
    .venv/bin/python benchmarks/ranker_choice_bench.py --scale tiny   # about 25 seconds
"""

from __future__ import annotations

import os

# Before numpy is imported: scoring is measured on one thread, and implicit and LightGBM
# parallelise themselves (nested OpenBLAS threads would only oversubscribe the cores).
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import datetime as dt
import json
import pickle
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import lightgbm as lgb
import numpy as np
import pandas as pd
from bench_common import git_state, jsonable

from fitpulse_orchestration.evaluation.home_feed import HomeFeedEvaluation, evaluate_home_feed
from fitpulse_orchestration.evaluation.metrics import recall_at_k
from fitpulse_orchestration.events.ingest import ingest_day, write_ingested
from fitpulse_orchestration.features.point_in_time import (
    FeatureInputs,
    as_float_matrix,
    feature_columns,
)
from fitpulse_orchestration.features.reference import load_catalog, load_profiles
from fitpulse_orchestration.features.snapshot import build_training_snapshot
from fitpulse_orchestration.features.training import (
    SplitParams,
    TimeSplit,
    build_ranker_examples,
    heldout_relevance,
)
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.ranking.feed import HomeFeedModel, build_ranker_training_frame
from fitpulse_orchestration.ranking.ranker import (
    RankerArtifacts,
    RankerParams,
    score_candidates,
    train_ranker,
)
from fitpulse_orchestration.retrieval.als import (
    AlsArtifacts,
    AlsParams,
    build_interaction_matrix,
    train_als,
)
from fitpulse_orchestration.retrieval.index import ItemIndex, build_item_index
from fitpulse_orchestration.retrieval.live_index import build_two_tower_index
from fitpulse_orchestration.retrieval.popularity import PopularityParams, compute_popular_items
from fitpulse_orchestration.retrieval.two_tower import (
    TwoTowerArtifacts,
    TwoTowerParams,
    build_examples,
    train_two_tower,
)
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.world.generator import generate_world
from fitpulse_orchestration.world.params import SCALES, world_params
from model_registry.gate import GatePolicy, bootstrap_mean_diff

DESCRIPTION = "Ranking-stage model choice: LambdaRank against measured alternatives."
# The key stage_bench.py uses: the same seed gives the same pseudonyms and the same world.
PSEUDONYM_KEY = b"stage-bench-pseudonymization-key"
REFERENCE = "lambdarank"
SOURCE_PRIORITY_STRIDE = 10_000.0
"""Larger than any retrieval rank: ``x_source * stride + rank`` sorts by source, then rank."""


class PredictOnly:
    """The part of ``lgb.Booster`` that ``score_candidates`` calls: ``predict``."""

    def __init__(self, score: Callable[[np.ndarray], np.ndarray]) -> None:
        self._score = score

    def predict(
        self, x: np.ndarray, num_iteration: int | None = None, num_threads: int = 1
    ) -> np.ndarray:
        return np.asarray(self._score(x), dtype=np.float64)


class ScorerModel:
    """Stands in for the ``LGBMRanker`` in ``RankerArtifacts.model``.

    ``score_candidates`` reads ``model.booster_`` and ``model.best_iteration_`` only; this is
    the seam the alternatives go through, with no domain change.
    """

    def __init__(self, score: Callable[[np.ndarray], np.ndarray]) -> None:
        self.booster_ = PredictOnly(score)
        self.best_iteration_: int | None = None


@dataclass
class Trained:
    """One ranking-stage alternative, ready to plug into ``HomeFeedModel.ranker``."""

    name: str
    description: str
    artifacts: RankerArtifacts
    train_seconds: list[float] = field(default_factory=list)
    size_bytes: int | None = None
    trees: int | None = None
    explain: list[str] = field(default_factory=list)
    explain_kind: str = ""


@dataclass
class Spine:
    """What every alternative shares: the snapshot, the ranker frame and retrieval."""

    inputs: FeatureInputs
    split: TimeSplit
    frame: pd.DataFrame
    als: AlsArtifacts
    index: ItemIndex
    popular: pd.DataFrame
    two_tower: TwoTowerArtifacts
    tt_index: ItemIndex
    seconds: dict[str, float]
    world: dict[str, Any]

    def feed_model(self, ranker: RankerArtifacts) -> HomeFeedModel:
        """The home-feed model as ``home_feed_model`` assembles it, with ``ranker`` scoring."""
        return HomeFeedModel(
            als=self.als,
            index=self.index,
            popular=self.popular,
            ranker=ranker,
            two_tower=self.two_tower,
            tt_index=self.tt_index,
        )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def build_spine(root: Path, scale: str, seed: int) -> Spine:
    """World, ingestion, snapshot, two-tower, ranker frame, ALS, indexes and popularity."""
    store = LocalObjectStore(root)
    pseudonymizer = Pseudonymizer(PSEUDONYM_KEY)
    seconds: dict[str, float] = {}
    seconds["world"], summary = timed(lambda: generate_world(world_params(scale, seed), store))

    def ingest() -> None:
        for day in summary.landed_days:
            write_ingested(store, day, ingest_day(store, day, pseudonymizer))

    seconds["ingest"], _ = timed(ingest)

    def snapshot() -> Any:
        catalog = load_catalog(store)
        profiles = load_profiles(store, pseudonymizer)
        return build_training_snapshot(store, catalog, profiles, SplitParams())

    seconds["snapshot"], snap = timed(snapshot)
    inputs, split = snap.inputs, snap.split

    tt_params = TwoTowerParams()
    seconds["two_tower"], two_tower = timed(
        lambda: train_two_tower(
            build_examples(
                inputs.events,
                inputs.catalog,
                inputs.profiles,
                split.ranker_start,
                tt_params.max_examples,
            ),
            tt_params,
        )
    )
    als_params = AlsParams()

    def ranker_frame() -> pd.DataFrame:
        examples = build_ranker_examples(inputs.events, inputs.catalog, split)
        frame, _ = build_ranker_training_frame(inputs, examples, split, als_params, two_tower)
        return frame

    seconds["ranker_frame"], frame = timed(ranker_frame)

    def retrieval() -> tuple[AlsArtifacts, ItemIndex, pd.DataFrame, ItemIndex]:
        matrix = build_interaction_matrix(inputs.events, als_params, before=split.eval_start)
        als = train_als(matrix, als_params)
        popular = compute_popular_items(
            inputs.events, inputs.profiles, split.eval_start, PopularityParams()
        )
        index = build_item_index(als.item_ids, als.item_factors)
        return als, index, popular, build_two_tower_index(two_tower, inputs.catalog)

    seconds["retrieval"], (als, index, popular, tt_index) = timed(retrieval)
    world = {
        "users": summary.n_users,
        "items": summary.n_items,
        "records_written": summary.records_written,
        "landed_days": len(summary.landed_days),
        "frame_rows": len(frame),
        "frame_groups": int(frame["group_id"].nunique()),
        "frame_positive_share": float((frame["label"] > 0).mean()),
        "clean_events": len(inputs.events),
    }
    return Spine(inputs, split, frame, als, index, popular, two_tower, tt_index, seconds, world)


def training_rows(frame: pd.DataFrame, params: RankerParams) -> pd.DataFrame:
    """The rows ``train_ranker`` fits on: all but the latest ``valid_fraction`` of groups."""
    groups = frame["group_id"].drop_duplicates().to_numpy()
    n_valid = max(1, int(len(groups) * params.valid_fraction))
    return frame[~frame["group_id"].isin(set(groups[-n_valid:]))]


def pickled_size(obj: Any) -> int:
    """Bytes of ``obj`` pickled as the feed bundle pickles the ranker."""
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def top_gain(booster: lgb.Booster, names: list[str], k: int = 5) -> list[str]:
    gain = np.asarray(booster.feature_importance("gain"), dtype=float)
    total = gain.sum() or 1.0
    order = np.argsort(-gain)[:k]
    return [f"{names[i]} {gain[i] / total:.1%}" for i in order]


def train_lambdarank(frame: pd.DataFrame, names: list[str], trees: int, repeat: int) -> Trained:
    params = replace(RankerParams(), n_estimators=trees)
    runs = [train_ranker(frame, names, params) for _ in range(repeat)]
    ranker = runs[-1]
    label = "lambdarank" if trees == RankerParams().n_estimators else f"lambdarank_{trees}"
    return Trained(
        name=label,
        description=f"LightGBM LambdaRank, {trees} trees"
        + (" (the project's RankerParams())" if label == REFERENCE else ""),
        artifacts=ranker,
        train_seconds=[r.metrics["train_seconds"] for r in runs],
        size_bytes=pickled_size(ranker.model),
        trees=ranker.model.booster_.num_trees(),
        explain=top_gain(ranker.model.booster_, names),
        explain_kind="gain share",
    )


def train_binary(frame: pd.DataFrame, names: list[str], repeat: int) -> Trained:
    """LightGBM pointwise ``binary`` on ``label > 0`` with the ranker's hyper-parameters."""
    p = RankerParams()
    train = training_rows(frame, p)
    times, model = [], None
    for _ in range(repeat):
        model = lgb.LGBMClassifier(
            objective="binary",
            num_leaves=p.num_leaves,
            learning_rate=p.learning_rate,
            n_estimators=p.n_estimators,
            min_child_samples=p.min_child_samples,
            subsample=p.subsample,
            subsample_freq=1,
            colsample_bytree=p.colsample_bytree,
            random_state=p.random_state,
            num_threads=p.num_threads,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )
        start = time.perf_counter()
        model.fit(
            as_float_matrix(train, names),
            (train["label"].to_numpy() > 0).astype(int),
            feature_name=names,
        )
        times.append(time.perf_counter() - start)
    assert model is not None
    # booster_.predict of a binary model returns probabilities: the same order as the raw
    # margin, which is all the re-ranker uses.
    artifacts = RankerArtifacts(model=model, feature_names=list(names), params=p)
    return Trained(
        name="lgbm_binary",
        description=f"LightGBM pointwise binary (label > 0), {p.n_estimators} trees",
        artifacts=artifacts,
        train_seconds=times,
        size_bytes=pickled_size(model),
        trees=model.booster_.num_trees(),
        explain=top_gain(model.booster_, names),
        explain_kind="gain share",
    )


class FoldedLinear:
    """A fitted imputer -> scaler -> logistic pipeline folded into one affine map of raw features.

    Scores equal the pipeline's ``decision_function`` (up to float rounding) without its per-call
    input validation: what a serving implementation of the linear model would run.
    """

    def __init__(self, pipe: Any) -> None:
        imputer, scaler, linear = pipe[0], pipe[1], pipe[-1]
        coef = linear.coef_[0] / scaler.scale_
        n = len(imputer.statistics_)
        self.fill = np.asarray(imputer.statistics_, dtype=np.float64)
        self.weights = coef[:n]
        self.missing = np.asarray(imputer.indicator_.features_, dtype=int)
        self.missing_weights = coef[n:]
        self.bias = float(linear.intercept_[0] - (coef * scaler.mean_).sum())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        nan = np.isnan(x)
        filled = np.where(nan, self.fill, x)
        return filled @ self.weights + nan[:, self.missing] @ self.missing_weights + self.bias

    def size_bytes(self) -> int:
        return pickled_size(
            (self.fill, self.weights, self.missing, self.missing_weights, self.bias)
        )


def train_logistic(frame: pd.DataFrame, names: list[str], repeat: int) -> list[Trained]:
    """Logistic regression on standardized features (median-imputed, missing indicators).

    Returns the scikit-learn pipeline and the same model folded into numpy (``FoldedLinear``).
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    p = RankerParams()
    train = training_rows(frame, p)
    times, pipe = [], None
    for _ in range(repeat):
        pipe = make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(max_iter=2000),
        )
        start = time.perf_counter()
        pipe.fit(as_float_matrix(train, names), (train["label"].to_numpy() > 0).astype(int))
        times.append(time.perf_counter() - start)
    assert pipe is not None
    imputer = pipe[0]
    columns = list(names) + [f"missing({names[i]})" for i in imputer.indicator_.features_]
    coef = pipe[-1].coef_[0]
    order = np.argsort(-np.abs(coef))[:5]
    folded = FoldedLinear(pipe)
    x = as_float_matrix(frame, names)
    fold_error = float(np.max(np.abs(folded(x) - pipe.decision_function(x))))
    explain = [f"{columns[i]} {coef[i]:+.3f}" for i in order]
    return [
        Trained(
            name="logistic",
            description="LogisticRegression (label > 0), standardized features",
            artifacts=RankerArtifacts(
                model=cast(lgb.LGBMRanker, ScorerModel(pipe.decision_function)),
                feature_names=list(names),
                params=p,
            ),
            train_seconds=times,
            size_bytes=pickled_size(pipe),
            explain=explain,
            explain_kind="coefficient per standard deviation",
        ),
        Trained(
            name="logistic_numpy",
            description="the same logistic model folded into one numpy affine map",
            artifacts=RankerArtifacts(
                model=cast(lgb.LGBMRanker, ScorerModel(folded)),
                feature_names=list(names),
                params=p,
            ),
            train_seconds=times,
            size_bytes=folded.size_bytes(),
            explain=[f"max |score - pipeline score| on the frame {fold_error:.1e}"],
            explain_kind="as logistic",
        ),
    ]


def blend_order(x: np.ndarray) -> np.ndarray:
    """Columns ``x_source``, ``retrieval_rank``: source priority, then the source's rank."""
    return -(x[:, 0].astype(np.float64) * SOURCE_PRIORITY_STRIDE + x[:, 1])


def interleaved_order(x: np.ndarray) -> np.ndarray:
    """Columns ``x_source``, ``retrieval_rank``: rank first, source priority among equals."""
    return -(x[:, 1].astype(np.float64) * 10.0 + x[:, 0])


def als_order(x: np.ndarray) -> np.ndarray:
    """Columns ``als_score``, ``x_source``, ``retrieval_rank``; no ALS score: after, in blend."""
    als = x[:, 0].astype(np.float64)
    fallback = blend_order(x[:, 1:])
    known = np.isfinite(als)
    # Known scores are inner products of ALS factors, far above -1e6.
    return np.where(known, als, -1e6 + fallback / (SOURCE_PRIORITY_STRIDE * 10))


def rule(
    name: str, description: str, columns: list[str], fn: Callable[[np.ndarray], np.ndarray]
) -> Trained:
    return Trained(
        name=name,
        description=description,
        artifacts=RankerArtifacts(
            model=cast(lgb.LGBMRanker, ScorerModel(fn)),
            feature_names=columns,
            params=RankerParams(),
        ),
        train_seconds=[0.0],
        size_bytes=0,
        explain=[description],
        explain_kind="rule",
    )


def train_alternatives(frame: pd.DataFrame, repeat: int) -> list[Trained]:
    names = feature_columns()
    return [
        train_lambdarank(frame, names, RankerParams().n_estimators, repeat),
        train_lambdarank(frame, names, 30, repeat),
        train_lambdarank(frame, names, 300, repeat),
        train_binary(frame, names, repeat),
        *train_logistic(frame, names, repeat),
        rule(
            "blend_order",
            "retrieval order: source priority, then the source's rank",
            ["x_source", "retrieval_rank"],
            blend_order,
        ),
        rule(
            "interleaved",
            "retrieval rank, sources interleaved (priority among equal ranks)",
            ["x_source", "retrieval_rank"],
            interleaved_order,
        ),
        rule(
            "als_score",
            "ALS score; candidates without one after, in blend order",
            ["als_score", "x_source", "retrieval_rank"],
            als_order,
        ),
    ]


def pool_recall(evaluation: HomeFeedEvaluation, relevance: dict[str, dict[str, int]]) -> float:
    """Mean share of relevant items anywhere in the user's candidate pool (0 without a pool)."""
    pools = evaluation.feeds.scored.groupby("user_id")["item_id"].agg(list).to_dict()
    return float(
        np.mean([recall_at_k(pools.get(u, []), rel, 10**9) for u, rel in relevance.items()])
    )


def _matrix(pool: pd.DataFrame, names: list[str]) -> np.ndarray:
    return as_float_matrix(pool, names)


MATRIX_ONLY = "(matrix only)"
"""Latency row of ``as_float_matrix`` over every ranker feature alone: the floor of a call."""


def measure_latency(
    alternatives: list[Trained], scored: pd.DataFrame, requests: int
) -> dict[str, list[float]]:
    """Milliseconds of one ``score_candidates`` call per request pool, alternatives interleaved.

    Pools are users' candidate pools in user order, cycled when there are fewer than
    ``requests``; the order of the alternatives rotates from one pool to the next. The
    ``MATRIX_ONLY`` entry times the float32 feature matrix of the pool alone.
    """
    pools = [pool for _, pool in scored.groupby("user_id", sort=True)]
    names = feature_columns()
    calls: list[tuple[str, Callable[[pd.DataFrame], Any]]] = [
        (alt.name, partial(score_candidates, alt.artifacts)) for alt in alternatives
    ]
    calls.append((MATRIX_ONLY, partial(_matrix, names=names)))
    for _, call in calls:
        call(pools[0])  # warm-up, not counted
    times: dict[str, list[float]] = {name: [] for name, _ in calls}
    n = len(calls)
    for i in range(requests):
        pool = pools[i % len(pools)]
        for j in range(n):
            name, call = calls[(i + j) % n]
            start = time.perf_counter()
            call(pool)
            times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def evaluate(
    spine: Spine, alternatives: list[Trained], requests: int, policy: GatePolicy
) -> dict[str, Any]:
    relevance = {u: dict(r) for u, r in heldout_relevance(spine.inputs.events, spine.split).items()}
    tables, per_user, eval_seconds, pool_recalls = {}, {}, {}, {}
    scored = None
    for alt in alternatives:
        print(f"  evaluating {alt.name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        evaluation = evaluate_home_feed(spine.feed_model(alt.artifacts), spine.inputs, spine.split)
        eval_seconds[alt.name] = time.perf_counter() - start
        tables[alt.name] = evaluation.table
        per_user[alt.name] = (
            evaluation.per_user[evaluation.per_user["model"] == "candidate"]
            .set_index("user_id")
            .sort_index()
        )
        pool_recalls[alt.name] = pool_recall(evaluation, relevance)
        if scored is None:
            scored = evaluation.feeds.scored
    assert scored is not None
    pool_sizes = scored.groupby("user_id").size()
    latency = measure_latency(alternatives, scored, requests)

    ref = per_user[REFERENCE]
    rows = []
    for alt in alternatives:
        table = tables[alt.name]

        def get(metric: str, slice_name: str, table: pd.DataFrame = table) -> float:
            row = table[(table["model"] == "candidate") & (table["slice"] == slice_name)]
            return float(row.iloc[0][metric]) if len(row) else float("nan")

        mine = per_user[alt.name]
        if not mine.index.equals(ref.index):
            raise AssertionError("alternatives were evaluated on different users")
        diff = (mine["ndcg_at_10"] - ref["ndcg_at_10"]).to_numpy()
        cold = mine["cold"].to_numpy()
        d_all = bootstrap_mean_diff(diff, policy.bootstrap_samples, policy.confidence, policy.seed)
        d_cold = (
            bootstrap_mean_diff(
                diff[cold], policy.bootstrap_samples, policy.confidence, policy.seed
            )
            if cold.any()
            else (float("nan"),) * 3
        )
        lat = np.array(latency[alt.name])
        rows.append(
            {
                "name": alt.name,
                "description": alt.description,
                "trees": alt.trees,
                "users": int(get("users", "all")),
                "cold_users": int(get("users", "cold")),
                "ndcg_at_10": get("ndcg_at_10", "all"),
                "ndcg_at_10_cold": get("ndcg_at_10", "cold"),
                "recall_at_100": get("recall_at_100", "all"),
                "recall_at_100_cold": get("recall_at_100", "cold"),
                "map_at_10": get("map_at_10", "all"),
                "coverage": get("coverage", "all"),
                "intra_list_diversity": get("intra_list_diversity", "all"),
                "beginner_safety_violations": int(get("beginner_safety_violations", "all")),
                "pool_recall": pool_recalls[alt.name],
                "train_seconds_median": statistics.median(alt.train_seconds),
                "train_seconds": alt.train_seconds,
                "score_p50_ms": float(np.quantile(lat, 0.5)),
                "score_p99_ms": float(np.quantile(lat, 0.99)),
                "score_mean_ms": float(lat.mean()),
                "eval_scoring_p50_ms": get("scoring_p50_ms", "all"),
                "eval_scoring_p99_ms": get("scoring_p99_ms", "all"),
                "size_bytes": alt.size_bytes,
                "ndcg_diff": d_all,
                "ndcg_diff_cold": d_cold,
                "evaluate_seconds": eval_seconds[alt.name],
                "explain_kind": alt.explain_kind,
                "explain": alt.explain,
            }
        )
    baselines = tables[REFERENCE][tables[REFERENCE]["model"] != "candidate"]
    floor = np.array(latency[MATRIX_ONLY])
    return {
        "rows": rows,
        "matrix_only_ms": {
            "p50": float(np.quantile(floor, 0.5)),
            "p99": float(np.quantile(floor, 0.99)),
            "mean": float(floor.mean()),
            "features": len(feature_columns()),
        },
        "baselines": baselines,
        "latency_requests": requests,
        "latency_distinct_pools": int(min(requests, len(pool_sizes))),
        "pool_rows": {
            "median": float(pool_sizes.median()),
            "min": int(pool_sizes.min()),
            "max": int(pool_sizes.max()),
            "pools": len(pool_sizes),
        },
    }


def _ratio(value: float, ref: float) -> str:
    return f"{value / ref:.2f}x" if ref else "-"


def report(meta: dict[str, Any], spine: Spine, result: dict[str, Any]) -> str:
    rows = result["rows"]
    ref = next(r for r in rows if r["name"] == REFERENCE)
    w = spine.world
    pool = result["pool_rows"]
    lines = [
        f"FitPulse ranker choice benchmark: scale={meta['scale']} seed={meta['seed']} "
        f"({meta['started']})",
        f"machine: {meta['cpu_count']} cores, {meta['platform']}, Python {meta['python']}, "
        f"LightGBM {meta['versions']['lightgbm']}, scikit-learn {meta['versions']['sklearn']}",
        f"load average 1/5/15 min: start {meta['loadavg_start']}, end {meta['loadavg_end']}",
        f"code: commit {meta['git']['commit']}, {len(meta['git']['modified_files'])} tracked "
        "files modified in the working tree",
        f"world: {w['users']:,} users, {w['items']:,} items, {w['landed_days']} days, "
        f"{w['clean_events']:,} clean events; ranker frame {w['frame_rows']:,} rows in "
        f"{w['frame_groups']:,} requests, {w['frame_positive_share']:.1%} with label > 0",
        "spine (s): " + ", ".join(f"{k} {v:.1f}" for k, v in spine.seconds.items()),
        f"held-out: {ref['users']:,} users ({ref['cold_users']:,} cold); candidate pools: "
        f"{pool['pools']:,}, rows per pool median {pool['median']:.0f} "
        f"(min {pool['min']}, max {pool['max']})",
        "",
        "Quality on the held-out window (evaluate_home_feed: feeds after re-ranking; recall@100 "
        "is the top 100 of the scored pool):",
        f"{'alternative':<16}{'trees':>6}{'NDCG@10':>9}{'cold':>8}{'rec@100':>9}{'cold':>8}"
        f"{'MAP@10':>8}{'cover':>7}{'ILD':>7}{'unsafe':>7}",
    ]
    for r in rows:
        lines.append(
            f"{r['name']:<16}{r['trees'] if r['trees'] is not None else '-':>6}"
            f"{r['ndcg_at_10']:>9.4f}{r['ndcg_at_10_cold']:>8.4f}{r['recall_at_100']:>9.4f}"
            f"{r['recall_at_100_cold']:>8.4f}{r['map_at_10']:>8.4f}{r['coverage']:>7.3f}"
            f"{r['intra_list_diversity']:>7.3f}{r['beginner_safety_violations']:>7d}"
        )
    lines += [
        f"pool recall (every candidate, the ceiling of any ranker): {ref['pool_recall']:.4f}",
        "",
        f"Cost (training: median of {meta['train_repeat']} fits, conversion to float32 "
        f"included; scoring: one score_candidates call per pool, 1 thread, "
        f"{result['latency_requests']} calls over {result['latency_distinct_pools']} pools, "
        "interleaved):",
        f"{'alternative':<16}{'train s':>9}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}"
        f"{'size B':>11}{'eval p50':>10}{'eval p99':>10}",
    ]
    for r in rows:
        size = "-" if r["size_bytes"] is None else f"{r['size_bytes']:,}"
        lines.append(
            f"{r['name']:<16}{r['train_seconds_median']:>9.3f}{r['score_p50_ms']:>9.3f}"
            f"{r['score_p99_ms']:>9.3f}{r['score_mean_ms']:>9.3f}{size:>11}"
            f"{r['eval_scoring_p50_ms']:>10.3f}{r['eval_scoring_p99_ms']:>10.3f}"
        )
    floor = result["matrix_only_ms"]
    lines += [
        f"{MATRIX_ONLY:<16}{'':>9}{floor['p50']:>9.3f}{floor['p99']:>9.3f}{floor['mean']:>9.3f}"
        f"   (as_float_matrix of the pool's {floor['features']} features alone)",
        "(eval p50/p99: evaluate_home_feed's own measure_scoring_latency, 200 pools, "
        "run per alternative, not interleaved)",
        "",
        f"Against {REFERENCE} (paired user-level bootstrap, model_registry.gate."
        f"bootstrap_mean_diff, {meta['bootstrap']['samples']} samples, "
        f"{meta['bootstrap']['confidence']:.0%}, seed {meta['bootstrap']['seed']}):",
        f"{'alternative':<16}{'dNDCG@10 all [CI]':>32}{'dNDCG@10 cold [CI]':>32}"
        f"{'p50':>8}{'p99':>8}{'train':>8}",
    ]
    for r in rows:
        if r["name"] == REFERENCE:
            continue
        d, dc = r["ndcg_diff"], r["ndcg_diff_cold"]
        lines.append(
            f"{r['name']:<16}{f'{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]':>32}"
            f"{f'{dc[0]:+.4f} [{dc[1]:+.4f}, {dc[2]:+.4f}]':>32}"
            f"{_ratio(r['score_p50_ms'], ref['score_p50_ms']):>8}"
            f"{_ratio(r['score_p99_ms'], ref['score_p99_ms']):>8}"
            f"{_ratio(r['train_seconds_median'], ref['train_seconds_median']):>8}"
        )
    lines += ["", "Interpretability (what each offers):"]
    for r in rows:
        lines.append(f"  {r['name']:<16}{r['explain_kind']}: " + "; ".join(r["explain"]))
    lines += [
        "",
        "Retrieval baselines of the same evaluation (no re-ranking guardrails):",
    ]
    for b in result["baselines"].itertuples(index=False):
        lines.append(
            f"  {b.model:<12}{b.slice:<6}users {b.users:>5}  NDCG@10 {b.ndcg_at_10:.4f}  "
            f"recall@100 {b.recall_at_100:.4f}  unsafe {b.beginner_safety_violations}"
        )
    return "\n".join(lines)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--scale", default="demo", choices=sorted(SCALES))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--train-repeat", type=int, default=3, help="fits per alternative")
    parser.add_argument(
        "--latency-requests", type=int, default=500, help="scoring calls per alternative"
    )
    parser.add_argument("--json-out", type=Path, help="write every number as JSON here")
    parser.add_argument("--workdir", type=Path, help="keep the store here (default: temp dir)")
    args = parser.parse_args(argv)
    if args.train_repeat < 1 or args.latency_requests < 1:
        parser.error("--train-repeat and --latency-requests must be at least 1")
    import sklearn

    policy = GatePolicy()
    meta: dict[str, Any] = {
        "scale": args.scale,
        "seed": args.seed,
        "train_repeat": args.train_repeat,
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {"lightgbm": lgb.__version__, "sklearn": sklearn.__version__},
        "loadavg_start": _load(),
        "git": git_state(),
        "bootstrap": {
            "samples": policy.bootstrap_samples,
            "confidence": policy.confidence,
            "seed": policy.seed,
        },
    }
    print(f"load average at start: {meta['loadavg_start']}", file=sys.stderr, flush=True)
    wall = time.perf_counter()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fitpulse-ranker-choice-"))
    if args.workdir is not None and workdir.exists() and any(workdir.iterdir()):
        parser.error(f"{workdir} is not empty; pass an empty --workdir")
    try:
        print(f"building the spine in {workdir} ...", file=sys.stderr, flush=True)
        spine = build_spine(workdir, args.scale, args.seed)
        print("training the alternatives ...", file=sys.stderr, flush=True)
        alternatives = train_alternatives(spine.frame, args.train_repeat)
        result = evaluate(spine, alternatives, args.latency_requests, policy)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["loadavg_end"] = _load()
    meta["total_seconds"] = time.perf_counter() - wall
    print(report(meta, spine, result))
    print(f"\ntotal {meta['total_seconds']:.1f} s; load average at end {meta['loadavg_end']}")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "meta": meta,
            "spine_seconds": spine.seconds,
            "world": spine.world,
            "split": spine.split.as_dict(),
            **result,
        }
        args.json_out.write_text(json.dumps(jsonable(payload), indent=2) + "\n")
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
