"""LightGBM LambdaRank ranker of the home feed."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from fitpulse_orchestration.features.point_in_time import as_float_matrix


@dataclass(frozen=True)
class RankerParams:
    """LambdaRank hyper-parameters; the last ``valid_fraction`` of groups (by time) validates.

    One thread by default: training frames are small, and two threads on a 2-core machine
    shared with other work were slower (0.52 s vs 0.21 s on the demo frame, benchmarks/).

    Early stopping is off by default (``early_stopping_rounds=0``): NDCG@10 on held-out logged
    feed requests is nearly flat across iterations (0.697 at 3 trees, 0.701 at 18), so it kept
    3 trees on some orderings of the same world, and held-out feed NDCG@10 fell from 0.046 to
    0.029. A fixed 100 trees gave 0.046-0.047 on both orderings; 300 overfit (0.040). On the
    current demo worlds (``benchmarks/ranker_choice_bench.py``, seeds 7 and 11) 30 trees tied
    or beat 100 on NDCG@10 but lost catalog coverage beyond the gate's tolerance, and 300 were
    never better.
    """

    num_leaves: int = 15
    learning_rate: float = 0.03
    n_estimators: int = 100
    min_child_samples: int = 100
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    early_stopping_rounds: int = 0
    valid_fraction: float = 0.2
    random_state: int = 7
    num_threads: int = 1


@dataclass
class RankerArtifacts:
    """A trained ranker and what it expects.

    ``model`` is the fitted ``LGBMRanker``; ``feature_names`` is the column order of the
    float32 matrix it scores.
    """

    model: lgb.LGBMRanker
    feature_names: list[str]
    params: RankerParams
    metrics: dict[str, float] = field(default_factory=dict)
    feature_importance: dict[str, float] = field(default_factory=dict)

    def param_dict(self) -> dict[str, Any]:
        """Hyper-parameters as a flat dict (for tracking)."""
        return asdict(self.params)


def _group_sizes(group_ids: pd.Series) -> np.ndarray:
    """Sizes of contiguous runs of equal group ids (the frame must be grouped)."""
    codes = group_ids.to_numpy()
    if len(codes) == 0:
        return np.zeros(0, dtype=int)
    boundaries = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    sizes = np.diff(np.concatenate([[0], boundaries, [len(codes)]]))
    if len(sizes) != group_ids.nunique():
        raise ValueError("training frame rows must be contiguous by group_id")
    return sizes


def train_ranker(
    frame: pd.DataFrame, feature_names: list[str], params: RankerParams
) -> RankerArtifacts:
    """Fit LambdaRank on grouped examples, validating on the latest groups.

    Args:
        frame: rows grouped contiguously by ``group_id`` in time order, with ``label`` (0-3)
            and every column of ``feature_names``.
        feature_names: model features, in order.
        params: hyper-parameters.

    Returns:
        The model with validation NDCG@10 at the best iteration and the training time.
    """
    groups = frame["group_id"].drop_duplicates().to_numpy()
    if len(groups) < 10:
        raise ValueError(f"need at least 10 training groups, got {len(groups)}")
    n_valid = max(1, int(len(groups) * params.valid_fraction))
    valid_groups = set(groups[-n_valid:])
    is_valid = frame["group_id"].isin(valid_groups).to_numpy()
    train, valid = frame[~is_valid], frame[is_valid]
    model = lgb.LGBMRanker(
        objective="lambdarank",
        num_leaves=params.num_leaves,
        learning_rate=params.learning_rate,
        n_estimators=params.n_estimators,
        min_child_samples=params.min_child_samples,
        subsample=params.subsample,
        subsample_freq=1,
        colsample_bytree=params.colsample_bytree,
        random_state=params.random_state,
        num_threads=params.num_threads,
        # Reproducible training: multithreaded histogram construction under varying CPU load
        # changed which iteration early stopping kept (3 vs 18 trees on the demo world), and
        # with it the held-out NDCG@10 (0.029 vs 0.045).
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )
    start = time.perf_counter()
    model.fit(
        as_float_matrix(train, feature_names),
        train["label"].to_numpy(),
        group=_group_sizes(train["group_id"]),
        eval_X=(as_float_matrix(valid, feature_names),),
        eval_y=(valid["label"].to_numpy(),),
        eval_group=[_group_sizes(valid["group_id"])],
        eval_at=[10],
        feature_name=feature_names,
        callbacks=(
            [lgb.early_stopping(params.early_stopping_rounds, verbose=False)]
            if params.early_stopping_rounds > 0
            else []
        ),
    )
    seconds = time.perf_counter() - start
    best = model.best_score_.get("valid_0", {}).get("ndcg@10", float("nan"))
    importance = dict(
        zip(feature_names, model.booster_.feature_importance("gain").tolist(), strict=True)
    )
    return RankerArtifacts(
        model=model,
        feature_names=list(feature_names),
        params=params,
        metrics={
            "valid_ndcg_at_10": float(best),
            "trees_used": float(model.best_iteration_ or params.n_estimators),
            "train_groups": float(len(groups) - n_valid),
            "valid_groups": float(n_valid),
            "train_rows": float(len(train)),
            "train_seconds": seconds,
        },
        feature_importance={k: float(v) for k, v in importance.items()},
    )


def score_candidates(ranker: RankerArtifacts, frame: pd.DataFrame) -> np.ndarray:
    """Score every row of ``frame`` in one call (per-call overhead dominates single rows)."""
    if frame.empty:
        return np.zeros(0, dtype=np.float64)
    scores = ranker.model.booster_.predict(
        as_float_matrix(frame, ranker.feature_names),
        num_iteration=ranker.model.best_iteration_ or None,
        num_threads=ranker.params.num_threads,
    )
    return np.asarray(scores, dtype=np.float64)
