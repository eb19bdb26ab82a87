"""Implicit-feedback ALS (benfred/implicit) on confidence-weighted interactions."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Final

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits


@dataclass(frozen=True)
class AlsParams:
    """ALS hyper-parameters and interaction confidences.

    Confidence of a (user, item) cell is ``alpha * log1p(sum of event weights)``; a completed
    workout counts more than a start, a start more than a click, a click more than being shown.

    ``impression_share``: the share of impression-only cells (shown, never engaged with) the
    matrix keeps, picked by a hash of the (user, item) pair, so every run keeps the same ones;
    cells with an engagement are always kept, impressions and all. Impressions are most of a
    feed app's events: they are 84% of the demo world's cells, and at full scale they take the
    matrix from 2.4B non-zeros to 20.6B. They also carry signal: on the demo world's
    validation split, keeping a quarter of them or none cost ALS NDCG@10 beyond noise, keeping
    half did not (``benchmarks/README.md``, "Sampled impressions"). So all are kept by default;
    the share is the lever for a matrix that does not fit, to be checked on that log's
    validation split (``AlsConfig.impression_share``).
    """

    factors: int = 48
    regularization: float = 0.05
    iterations: int = 15
    alpha: float = 4.0
    random_state: int = 7
    weight_complete: float = 8.0
    weight_start: float = 4.0
    weight_click: float = 2.0
    weight_impression: float = 0.1
    impression_share: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.impression_share <= 1.0:
            raise ValueError(f"impression_share must be in [0, 1], got {self.impression_share}")

    def event_weights(self) -> dict[str, float]:
        """Weight of each event type in the confidence sum (others count 0)."""
        return {
            "workout_complete": self.weight_complete,
            "workout_start": self.weight_start,
            "article_read": self.weight_start,
            "video_watch": self.weight_start,
            "click": self.weight_click,
            "impression": self.weight_impression,
        }


@dataclass
class InteractionMatrix:
    """Users x items confidence matrix with its id maps.

    ``matrix[i, j]`` is the confidence of ``user_ids[i]`` for ``item_ids[j]`` (float32 CSR).
    """

    matrix: csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray

    def __post_init__(self) -> None:
        if self.matrix.shape != (len(self.user_ids), len(self.item_ids)):
            raise ValueError(
                f"matrix shape {self.matrix.shape} does not match "
                f"{len(self.user_ids)} user ids x {len(self.item_ids)} item ids"
            )
        for name, ids in (("user_ids", self.user_ids), ("item_ids", self.item_ids)):
            # Lookups are binary searches: ids must be strictly increasing (sorted, unique).
            if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
                raise ValueError(f"{name} must be sorted and unique")

    def user_index(self) -> dict[str, int]:
        """Map user id -> row."""
        return {u: i for i, u in enumerate(self.user_ids)}

    def item_index(self) -> dict[str, int]:
        """Map item id -> column."""
        return {it: j for j, it in enumerate(self.item_ids)}


def build_interaction_matrix(
    events: pd.DataFrame, params: AlsParams, before: pd.Timestamp | None = None
) -> InteractionMatrix:
    """Aggregate events strictly before ``before`` into a confidence matrix.

    Rows are the sorted distinct users and columns the sorted distinct items with at least one
    weighted event; raises ``ValueError`` when nothing is left to train on.
    """
    weights = params.event_weights()
    ev = events[events["event_type"].isin(list(weights)) & events["item_id"].notna()]
    if before is not None:
        ev = ev[ev["ts"] < before]
    if ev.empty:
        raise ValueError("no weighted interactions to build an interaction matrix from")
    w = ev["event_type"].map(weights).astype(np.float32)
    frame = pd.DataFrame({"u": ev["user_id"].to_numpy(), "i": ev["item_id"].to_numpy(), "w": w})
    if params.impression_share < 1.0:
        frame["engaged"] = (ev["event_type"] != "impression").to_numpy()
        cells = (
            frame.groupby(["u", "i"], sort=False)
            .agg(w=("w", "sum"), engaged=("engaged", "max"))
            .reset_index()
        )
        cells = cells[cells["engaged"].to_numpy() | _kept_pairs(cells, params.impression_share)]
    else:
        cells = frame.groupby(["u", "i"], sort=False)["w"].sum().reset_index()
    if cells.empty:
        raise ValueError("no weighted interactions to build an interaction matrix from")
    user_ids = np.sort(cells["u"].unique()).astype(str)
    item_ids = np.sort(cells["i"].unique()).astype(str)
    rows = np.searchsorted(user_ids, cells["u"].to_numpy())
    cols = np.searchsorted(item_ids, cells["i"].to_numpy())
    conf = (params.alpha * np.log1p(cells["w"].to_numpy())).astype(np.float32)
    matrix = csr_matrix((conf, (rows, cols)), shape=(len(user_ids), len(item_ids)))
    return InteractionMatrix(matrix=matrix, user_ids=user_ids, item_ids=item_ids)


def _kept_pairs(cells: pd.DataFrame, share: float) -> np.ndarray:
    """Per cell: its (user, item) pair falls in the kept ``share`` (a fixed-key hash)."""
    hashed = pd.util.hash_pandas_object(cells[["u", "i"]], index=False).to_numpy()
    return np.asarray(hashed / 2.0**64 < share)


@dataclass
class AlsArtifacts:
    """Trained factors with the id maps of the matrix they were trained on.

    ``user_factors[i]`` belongs to ``user_ids[i]``, ``item_factors[j]`` to ``item_ids[j]``;
    ``seen`` is the training matrix (for filtering already-consumed items).
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    seen: csr_matrix
    params: AlsParams
    train_seconds: float
    train_positive_mse: float
    metrics: dict[str, float] = field(default_factory=dict)

    def user_row(self, user_id: str) -> int | None:
        """Row of ``user_id`` or None when the user had no training interactions."""
        idx = int(np.searchsorted(self.user_ids, user_id))
        return idx if idx < len(self.user_ids) and self.user_ids[idx] == user_id else None

    def param_dict(self) -> dict[str, float | int]:
        """Hyper-parameters as a flat dict (for tracking)."""
        return asdict(self.params)


FIT_CHECK_CELLS: Final = 1 << 17
"""Cells per block of ``positive_mse``: 131,072 cells of 64 factors gather 64 MiB."""


def positive_mse(
    matrix: csr_matrix,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    block_cells: int = FIT_CHECK_CELLS,
) -> float:
    """Confidence-weighted mean of ``(1 - u.v)^2`` over the matrix's non-zero cells.

    The fit check: how close the factors come to the cells they were fitted to, with weights
    ``1 + confidence``. It runs over blocks of ``block_cells`` cells in storage order, so its
    memory is one block's factor rows whatever the matrix holds: gathering both factor rows of
    every cell at once takes ``nnz x factors x 8`` bytes, hundreds of GiB at full scale.
    0 for an empty matrix.
    """
    matrix = csr_matrix(matrix)
    total = weights = 0.0
    for start in range(0, matrix.nnz, block_cells):
        stop = min(start + block_cells, matrix.nnz)
        rows = np.searchsorted(matrix.indptr, np.arange(start, stop), side="right") - 1
        pred = np.einsum(
            "ij,ij->i", user_factors[rows], item_factors[matrix.indices[start:stop]]
        ).astype(np.float64)
        weight = 1.0 + matrix.data[start:stop].astype(np.float64)
        total += float(np.dot(weight, (1.0 - pred) ** 2))
        weights += float(weight.sum())
    return total / weights if weights else 0.0


def train_als(interactions: InteractionMatrix, params: AlsParams) -> AlsArtifacts:
    """Fit ALS on a users x items confidence matrix (CPU, float32)."""
    from implicit.cpu.als import AlternatingLeastSquares

    # implicit parallelises over users itself; BLAS threads inside would oversubscribe the
    # cores (and implicit warns about it when the model is built).
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            iterations=params.iterations,
            alpha=1.0,
            random_state=params.random_state,
            calculate_training_loss=False,
            num_threads=0,
        )
        start = time.perf_counter()
        model.fit(interactions.matrix, show_progress=False)
    seconds = time.perf_counter() - start
    user_factors = np.asarray(model.user_factors, dtype=np.float32)
    item_factors = np.asarray(model.item_factors, dtype=np.float32)
    mse = positive_mse(interactions.matrix, user_factors, item_factors)
    return AlsArtifacts(
        user_factors=user_factors,
        item_factors=item_factors,
        user_ids=interactions.user_ids,
        item_ids=interactions.item_ids,
        seen=interactions.matrix,
        params=params,
        train_seconds=seconds,
        train_positive_mse=mse,
        metrics={
            "n_users": float(len(interactions.user_ids)),
            "n_items": float(len(interactions.item_ids)),
            "nnz": float(interactions.matrix.nnz),
        },
    )


def als_scores(artifacts: AlsArtifacts, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Dot product of user and item factors per (user, item) pair; NaN where either is unknown."""
    u = np.searchsorted(artifacts.user_ids, user_ids)
    i = np.searchsorted(artifacts.item_ids, item_ids)
    u_ok = (u < len(artifacts.user_ids)) & (
        artifacts.user_ids[np.minimum(u, len(artifacts.user_ids) - 1)] == user_ids
    )
    i_ok = (i < len(artifacts.item_ids)) & (
        artifacts.item_ids[np.minimum(i, len(artifacts.item_ids) - 1)] == item_ids
    )
    out = np.full(len(user_ids), np.nan, dtype=np.float32)
    ok = u_ok & i_ok
    out[ok] = np.einsum("ij,ij->i", artifacts.user_factors[u[ok]], artifacts.item_factors[i[ok]])
    return out
