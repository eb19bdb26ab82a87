"""EASE item-to-item retrieval (Steck 2019, "Embarrassingly Shallow Autoencoders").

A closed-form linear item-item model: with ``X`` the binary users x items engagement matrix,
``P = (XᵀX + λI)⁻¹`` and ``B = -P / diag(P)`` with a zero diagonal; a user's scores are
``x_u · B``. It needs no user factors, so anyone with an engaged item gets scores, including
users who arrived after training.

Memory plan: ``B`` is dense, ``n² x 4`` bytes in float32, and the inversion holds two float64
``n x n`` matrices (``16 n²`` bytes). The model is therefore restricted to the ``max_items``
most-engaged items of the training window (the head of the catalog): 10,000 items take 400 MB
served and 1.6 GB while training. At FitPulse's 9M-item catalog the head covers most
engagements while the long tail, new items and cold users are left to ALS, the two-tower and
freshness, which index every live item.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from fitpulse_orchestration.events.schema import ENGAGEMENT_TYPES


@dataclass(frozen=True)
class EaseParams:
    """L2 regularization (λ) and the head of the catalog the model covers.

    λ = 500 is the paper's value for MovieLens-scale data; training's hyper-parameter search
    tunes it on the validation split.
    """

    l2: float = 500.0
    max_items: int = 10_000

    def __post_init__(self) -> None:
        if self.l2 <= 0:
            raise ValueError(f"l2 must be > 0, got {self.l2}")
        if self.max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {self.max_items}")


@dataclass
class EaseArtifacts:
    """The item-item weights with their id map.

    ``weights[i, j]`` is how much engaging with ``item_ids[i]`` predicts ``item_ids[j]``
    (float32, zero diagonal); ``item_ids`` is sorted.
    """

    item_ids: np.ndarray
    weights: np.ndarray
    params: EaseParams
    train_seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)

    def param_dict(self) -> dict[str, float | int]:
        """Hyper-parameters as a flat dict (for tracking)."""
        return asdict(self.params)

    def _rows(self, history: Collection[str]) -> np.ndarray:
        if not len(self.item_ids) or not history:
            return np.zeros(0, dtype=np.int64)
        ids = np.fromiter((str(i) for i in history), dtype=object, count=len(history))
        pos = np.searchsorted(self.item_ids, ids.astype(str))
        pos = np.minimum(pos, len(self.item_ids) - 1)
        return np.unique(pos[self.item_ids[pos] == ids.astype(str)])

    def user_scores(self, history: Collection[str]) -> np.ndarray:
        """Scores of every head item for a user who engaged with ``history`` (float32)."""
        rows = self._rows(history)
        if rows.size == 0:
            return np.zeros(len(self.item_ids), dtype=np.float32)
        return np.asarray(self.weights[rows].sum(axis=0), dtype=np.float32)

    def top_items(
        self, history: Collection[str], k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best-scored head items (history excluded), best first, with scores.

        ``exclude``: positions in ``item_ids`` never to list (items that are not live), so
        ``k`` counts listable items only. Users without any head item in ``history`` get
        nothing.
        """
        rows = self._rows(history)
        if rows.size == 0 or k <= 0:
            return np.array([], dtype=object), np.array([], dtype=np.float32)
        scores = np.asarray(self.weights[rows].sum(axis=0), dtype=np.float32)
        scores[rows] = -np.inf
        if exclude is not None:
            scores[exclude] = -np.inf
        dropped = int(np.isneginf(scores).sum())
        k = min(k, len(scores) - dropped)
        if k <= 0:
            return np.array([], dtype=object), np.array([], dtype=np.float32)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((self.item_ids[top], -scores[top]))]
        return self.item_ids[top].astype(object), scores[top]


def engagement_pairs(events: pd.DataFrame) -> pd.DataFrame:
    """Distinct (user_id, item_id) pairs with a click or deeper engagement, as strings."""
    ev = events[events["event_type"].isin(list(ENGAGEMENT_TYPES)) & events["item_id"].notna()]
    return pd.DataFrame(
        {"user_id": ev["user_id"].astype(str), "item_id": ev["item_id"].astype(str)}
    ).drop_duplicates()


def train_ease(events: pd.DataFrame, params: EaseParams) -> EaseArtifacts:
    """Fit EASE on the engagements in ``events`` (restrict the events before calling).

    Raises:
        ValueError: when there is no engagement to learn from.
    """
    pairs = engagement_pairs(events)
    if pairs.empty:
        raise ValueError("no engagements to fit EASE on")
    counts = pairs["item_id"].value_counts()
    # Most-engaged first; ties by id so the head is deterministic.
    ranked = counts.reset_index().sort_values(["count", "item_id"], ascending=[False, True])
    head = np.sort(ranked["item_id"].head(params.max_items).to_numpy().astype(str))
    pairs = pairs[pairs["item_id"].isin(set(head))]
    users = np.sort(pairs["user_id"].unique())
    rows = np.searchsorted(users, pairs["user_id"].to_numpy())
    cols = np.searchsorted(head, pairs["item_id"].to_numpy())
    started = time.perf_counter()
    matrix = csr_matrix(
        (np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(len(users), len(head))
    )
    gram = (matrix.T @ matrix).toarray()
    diag = np.diag_indices(len(head))
    gram[diag] += params.l2
    with threadpool_limits(2, "blas"):
        inverse = np.linalg.inv(gram)
    del gram
    weights = inverse / -np.diag(inverse)
    weights[diag] = 0.0
    seconds = time.perf_counter() - started
    return EaseArtifacts(
        item_ids=head,
        weights=weights.astype(np.float32),
        params=params,
        train_seconds=seconds,
        metrics={
            "n_items": float(len(head)),
            "n_users": float(len(users)),
            "nnz": float(len(pairs)),
            "head_engagement_share": float(counts.loc[head].sum() / counts.sum()),
            "train_seconds": seconds,
        },
    )
