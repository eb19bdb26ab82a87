from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from scipy.sparse import csr_matrix

from fitpulse_orchestration.retrieval.als import (
    AlsArtifacts,
    AlsParams,
    InteractionMatrix,
    als_scores,
    build_interaction_matrix,
    positive_mse,
    train_als,
)

CHECKER_PARAMS = AlsParams(factors=4, iterations=20, regularization=0.01)
USERS = np.array([f"u{i}" for i in range(8)])
ITEMS = np.array([f"i{j}" for j in range(8)])
T0 = pd.Timestamp("2026-10-01", tz="UTC")


def _events(rows: list[tuple[str, str | None, str, float]]) -> pd.DataFrame:
    """Events from ``(user_id, item_id, event_type, hours after T0)`` tuples."""
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "ts": [T0 + pd.Timedelta(hours=r[3]) for r in rows],
        }
    )


@pytest.fixture
def checker_als(checkerboard: csr_matrix) -> AlsArtifacts:
    return train_als(InteractionMatrix(checkerboard, USERS, ITEMS), CHECKER_PARAMS)


def test_als_recovers_heldout_item(checker_als: AlsArtifacts, checkerboard: csr_matrix) -> None:
    scores = checker_als.user_factors[0] @ checker_als.item_factors.T
    scores[checkerboard[0].indices] = -np.inf

    assert int(np.argmax(scores)) == 0


def test_als_prefers_own_taste_block(checker_als: AlsArtifacts) -> None:
    scores = checker_als.user_factors @ checker_als.item_factors.T

    assert scores[5, 4:].min() > scores[5, :4].max()
    assert scores[1, :4].min() > scores[1, 4:].max()


def test_train_als_shapes_and_metrics(checker_als: AlsArtifacts, checkerboard: csr_matrix) -> None:
    assert checker_als.user_factors.shape == (8, 4)
    assert checker_als.item_factors.shape == (8, 4)
    assert checker_als.user_factors.dtype == np.float32
    assert checker_als.metrics == {"n_users": 8.0, "n_items": 8.0, "nnz": 31.0}
    assert checker_als.seen is checkerboard
    assert checker_als.param_dict()["factors"] == 4
    assert math.isfinite(checker_als.train_positive_mse)


def test_build_interaction_matrix_orders_event_weights() -> None:
    params = AlsParams()  # every impression-only cell kept (the default)
    events = _events(
        [
            ("u1", "complete", "workout_complete", 1),
            ("u1", "start", "workout_start", 1),
            ("u1", "click", "click", 1),
            ("u1", "shown", "impression", 1),
        ]
    )

    m = build_interaction_matrix(events, params)
    row = dict(zip(m.item_ids, m.matrix.toarray()[0], strict=True))

    assert row["complete"] > row["start"] > row["click"] > row["shown"] > 0
    assert row["complete"] == pytest.approx(params.alpha * math.log1p(params.weight_complete))
    assert row["shown"] == pytest.approx(params.alpha * math.log1p(params.weight_impression))


def test_build_interaction_matrix_sums_events_of_a_cell() -> None:
    params = AlsParams()
    events = _events([("u1", "a", "click", 1), ("u1", "a", "click", 2), ("u2", "a", "click", 3)])

    m = build_interaction_matrix(events, params)

    dense = m.matrix.toarray()
    assert dense[0, 0] == pytest.approx(params.alpha * math.log1p(2 * params.weight_click))
    assert dense[1, 0] == pytest.approx(params.alpha * math.log1p(params.weight_click))


def test_build_interaction_matrix_ids_sorted_and_unweighted_dropped() -> None:
    events = _events(
        [
            ("u2", "b", "click", 1),
            ("u1", "c", "workout_complete", 1),
            ("u3", None, "app_open", 1),
            ("u4", "d", "push_sent", 1),
            ("u5", None, "click", 1),
        ]
    )

    m = build_interaction_matrix(events, AlsParams())

    assert list(m.user_ids) == ["u1", "u2"]
    assert list(m.item_ids) == ["b", "c"]
    assert m.matrix.shape == (2, 2)
    assert m.matrix.dtype == np.float32
    assert m.user_index() == {"u1": 0, "u2": 1}
    assert m.item_index() == {"b": 0, "c": 1}
    assert m.matrix[0, 1] > 0
    assert m.matrix[1, 0] > 0
    assert m.matrix.nnz == 2


def test_build_interaction_matrix_keeps_events_strictly_before() -> None:
    before = T0 + pd.Timedelta(hours=10)
    events = _events(
        [("u1", "early", "click", 9), ("u1", "at", "click", 10), ("u2", "late", "click", 11)]
    )

    m = build_interaction_matrix(events, AlsParams(), before=before)

    assert list(m.item_ids) == ["early"]
    assert list(m.user_ids) == ["u1"]


def test_build_interaction_matrix_raises_when_nothing_is_left() -> None:
    events = _events([("u1", "a", "click", 5), ("u1", None, "app_open", 1)])

    with pytest.raises(ValueError, match="no weighted interactions"):
        build_interaction_matrix(events, AlsParams(), before=T0 + pd.Timedelta(hours=5))
    with pytest.raises(ValueError, match="no weighted interactions"):
        build_interaction_matrix(events.iloc[1:], AlsParams())


def test_als_scores_nan_for_unknown_users_and_items(checker_als: AlsArtifacts) -> None:
    users = np.array(["u0", "u9", "u3", "a", "u5"])
    items = np.array(["i1", "i1", "zz", "i2", "i5"])

    scores = als_scores(checker_als, users, items)

    assert np.isnan(scores[[1, 2, 3]]).all()
    expected_0 = checker_als.user_factors[0] @ checker_als.item_factors[1]
    expected_4 = checker_als.user_factors[5] @ checker_als.item_factors[5]
    assert scores[0] == pytest.approx(expected_0, rel=1e-5)
    assert scores[4] == pytest.approx(expected_4, rel=1e-5)


def test_user_row_finds_known_users_only(checker_als: AlsArtifacts) -> None:
    assert checker_als.user_row("u0") == 0
    assert checker_als.user_row("u7") == 7
    assert checker_als.user_row("a") is None
    assert checker_als.user_row("u35") is None
    assert checker_als.user_row("zzz") is None


def test_unsorted_interaction_ids_are_rejected(checkerboard: csr_matrix) -> None:
    # user_row/als_scores are binary searches, so the matrix refuses ids out of order.
    with pytest.raises(ValueError, match="user_ids must be sorted and unique"):
        InteractionMatrix(checkerboard, USERS[::-1].copy(), ITEMS)


def test_matrix_shape_must_match_ids(checkerboard: csr_matrix) -> None:
    with pytest.raises(ValueError, match="does not match"):
        InteractionMatrix(checkerboard, USERS[:4], ITEMS)


def _random_fit(users: int, seed: int = 3) -> tuple[csr_matrix, np.ndarray, np.ndarray]:
    """A sparse confidence matrix (about 20 cells per user) and random factors."""
    rng = np.random.default_rng(seed)
    items = 500
    dense = rng.random((users, items)) < 0.04
    rows, cols = np.nonzero(dense)
    data = rng.uniform(0.5, 5.0, len(rows)).astype(np.float32)
    matrix = csr_matrix((data, (rows, cols)), shape=(users, items))
    user_factors = rng.normal(0, 0.3, (users, 16)).astype(np.float32)
    item_factors = rng.normal(0, 0.3, (items, 16)).astype(np.float32)
    return matrix, user_factors, item_factors


def test_the_blocked_fit_check_is_the_weighted_mean_over_every_cell() -> None:
    matrix, user_factors, item_factors = _random_fit(300)
    coo = matrix.tocoo()
    pred = (user_factors[coo.row].astype(np.float64) * item_factors[coo.col]).sum(axis=1)
    expected = np.average((1.0 - pred) ** 2, weights=1.0 + coo.data.astype(np.float64))

    for block in (1, 7, 4096, matrix.nnz, 10 * matrix.nnz):
        assert positive_mse(matrix, user_factors, item_factors, block) == pytest.approx(
            expected, rel=1e-6
        )
    empty = csr_matrix((3, 4), dtype=np.float32)
    assert positive_mse(empty, user_factors[:3], item_factors[:4]) == 0.0


def _peak_bytes(users: int) -> int:
    matrix, user_factors, item_factors = _random_fit(users)
    tracemalloc.start()
    try:
        positive_mse(matrix, user_factors, item_factors, block_cells=2048)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_fit_checks_memory_does_not_grow_with_the_matrix() -> None:
    small, large = _peak_bytes(1_000), _peak_bytes(4_000)

    # One block's gather (2,048 cells x 16 factors x 4 bytes x 2 = 256 KiB) is the peak at
    # either size; gathering every cell at once would take 4x more at 4x the cells.
    assert large < 1.25 * small
    assert large < 1 << 20


def test_engaged_cells_keep_their_impressions_and_impression_only_cells_are_sampled() -> None:
    rows: list[tuple[str, str | None, str, float]] = [
        (f"u{u}", f"i{i}", "impression", 1) for u in range(40) for i in range(100)
    ]
    rows += [(f"u{u}", f"i{u}", "click", 2) for u in range(40)]  # one engaged cell per user
    events = _events(rows)
    params = AlsParams(impression_share=0.25)

    m = build_interaction_matrix(events, params)
    again = build_interaction_matrix(events, params)
    none = build_interaction_matrix(events, AlsParams(impression_share=0.0))

    # Engaged cells: all kept, with their impression counted.
    engaged = params.alpha * math.log1p(params.weight_click + params.weight_impression)
    dense = pd.DataFrame(m.matrix.toarray(), index=m.user_ids, columns=m.item_ids)
    assert [dense.loc[f"u{u}", f"i{u}"] for u in range(40)] == pytest.approx([engaged] * 40)
    # Impression-only cells: about a quarter of the 3,960, the same ones every time.
    assert 900 <= m.matrix.nnz - 40 <= 1100
    assert (m.matrix != again.matrix).nnz == 0
    assert none.matrix.nnz == 40
    assert build_interaction_matrix(events, AlsParams()).matrix.nnz == 4000  # the default
    with pytest.raises(ValueError, match="impression_share"):
        AlsParams(impression_share=1.5)
