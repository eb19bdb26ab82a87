from __future__ import annotations

import pickle

import numpy as np
import pytest

from fitpulse_orchestration.retrieval.index import (
    IndexParams,
    ItemIndex,
    build_item_index,
    stable_item_ids,
)

SMALL = IndexParams(exact_threshold=10)


def _items(n: int) -> np.ndarray:
    return np.array([f"item-{j:05d}" for j in range(n)])


def _brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


@pytest.fixture
def random_index(rng: np.random.Generator) -> tuple[ItemIndex, np.ndarray, np.ndarray]:
    vectors = rng.normal(size=(200, 8)).astype(np.float32)
    items = _items(200)
    return build_item_index(items, vectors), items, vectors


def test_index_kind_switches_above_exact_threshold(rng: np.random.Generator) -> None:
    at = build_item_index(_items(10), rng.normal(size=(10, 4)), SMALL)
    above = build_item_index(_items(11), rng.normal(size=(11, 4)), SMALL)

    assert (at.kind, len(at), at.dim) == ("flat", 10, 4)
    assert (above.kind, len(above), above.dim) == ("hnsw", 11, 4)


def test_exact_search_equals_brute_force(
    random_index: tuple[ItemIndex, np.ndarray, np.ndarray], rng: np.random.Generator
) -> None:
    index, items, vectors = random_index
    queries = rng.normal(size=(5, 8)).astype(np.float32)

    found, scores = index.search(queries, 10)

    order, expected = _brute_force(vectors, queries, 10)
    assert found.shape == (5, 10)
    assert (found == items[order]).all()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)


def test_hnsw_recall_against_exact(rng: np.random.Generator) -> None:
    vectors = rng.normal(size=(2000, 16)).astype(np.float32)
    items = _items(2000)
    queries = rng.normal(size=(50, 16)).astype(np.float32)
    hnsw = build_item_index(items, vectors, IndexParams(exact_threshold=100))
    exact = build_item_index(items, vectors)

    approx_ids, _ = hnsw.search(queries, 10)
    exact_ids, _ = exact.search(queries, 10)

    assert hnsw.kind == "hnsw"
    assert exact.kind == "flat"
    recall = np.mean(
        [len(set(a) & set(e)) / 10 for a, e in zip(approx_ids, exact_ids, strict=True)]
    )
    assert recall >= 0.9


def test_stable_item_ids_deterministic_and_order_independent() -> None:
    items = np.array(["w-1", "w-2", "article-9", "", "ü-unicode"])
    perm = np.array([3, 0, 4, 2, 1])

    ids = stable_item_ids(items)

    assert ids.dtype == np.int64
    assert (ids >= 0).all()
    assert len(set(ids.tolist())) == len(items)
    assert (stable_item_ids(items) == ids).all()
    assert (stable_item_ids(items[perm]) == ids[perm]).all()
    assert stable_item_ids(np.array(["w-2"]))[0] == ids[1]


def test_search_maps_ids_back_to_the_right_items(rng: np.random.Generator) -> None:
    vectors = rng.normal(size=(30, 4)).astype(np.float32)
    items = _items(30)
    index = build_item_index(items[::-1], vectors[::-1])
    query = rng.normal(size=(1, 4)).astype(np.float32)

    found, scores = index.search(query, 30)

    expected = dict(zip(items, (vectors @ query[0]).tolist(), strict=True))
    got = dict(zip(found[0], scores[0].tolist(), strict=True))
    assert got.keys() == expected.keys()
    for item, score in got.items():
        assert score == pytest.approx(expected[item], abs=1e-5)
    assert sorted(index.item_ids()) == sorted(items)


@pytest.mark.parametrize("params", [IndexParams(), SMALL], ids=["flat", "hnsw"])
def test_pickle_round_trip_gives_identical_results(
    params: IndexParams, rng: np.random.Generator
) -> None:
    vectors = rng.normal(size=(60, 8)).astype(np.float32)
    index = build_item_index(_items(60), vectors, params)
    queries = rng.normal(size=(4, 8)).astype(np.float32)

    restored = pickle.loads(pickle.dumps(index))

    before_ids, before_scores = index.search(queries, 7)
    after_ids, after_scores = restored.search(queries, 7)
    assert (restored.kind, restored.dim, len(restored)) == (index.kind, index.dim, len(index))
    assert (after_ids == before_ids).all()
    np.testing.assert_array_equal(after_scores, before_scores)


@pytest.mark.parametrize("shape", [(2, 7), (2, 9), (8,)])
def test_search_rejects_wrong_query_shape(
    shape: tuple[int, ...], random_index: tuple[ItemIndex, np.ndarray, np.ndarray]
) -> None:
    index, _, _ = random_index

    with pytest.raises(ValueError, match="queries must have shape"):
        index.search(np.zeros(shape, dtype=np.float32), 3)


def test_search_with_k_larger_than_index(rng: np.random.Generator) -> None:
    vectors = rng.normal(size=(5, 4)).astype(np.float32)
    items = _items(5)
    index = build_item_index(items, vectors)

    found, scores = index.search(vectors[:2], 50)

    for row, row_scores in zip(found, scores, strict=True):
        real = [i for i in row if i]
        assert sorted(real) == sorted(items)
        assert np.isfinite(row_scores[: len(real)]).all()
        assert np.isneginf(row_scores[len(real) :]).all()
        assert (np.diff(row_scores[: len(real)]) <= 0).all()


def test_build_rejects_misaligned_vectors(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="aligned"):
        build_item_index(_items(3), rng.normal(size=(4, 2)))
    with pytest.raises(ValueError, match="aligned"):
        build_item_index(_items(3), rng.normal(size=3))


def test_build_rejects_duplicate_item_ids(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="item_ids must be unique"):
        build_item_index(np.array(["a", "b", "a"]), rng.normal(size=(3, 2)))
