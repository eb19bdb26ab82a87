from __future__ import annotations

import pickle
import threading
import time

import numpy as np
import pytest

from fitpulse_orchestration.retrieval.index import (
    IndexParams,
    ItemIndex,
    build_item_index,
    stable_item_ids,
)

SMALL = IndexParams(exact_threshold=10, large_kind="hnsw")
SMALL_IVF = IndexParams(exact_threshold=10, large_kind="ivf")


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
    hnsw = build_item_index(items, vectors, IndexParams(exact_threshold=100, large_kind="hnsw"))
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


@pytest.mark.parametrize("params", [IndexParams(), SMALL, SMALL_IVF], ids=["flat", "hnsw", "ivf"])
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


KINDS = pytest.mark.parametrize(
    "params", [IndexParams(), SMALL, SMALL_IVF], ids=["flat", "hnsw", "ivf"]
)


def _unit(rng: np.random.Generator, n: int, dim: int = 8) -> np.ndarray:
    """Unit rows: an item's own vector is its unique best inner-product match."""
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _all_hits(index: ItemIndex, queries: np.ndarray) -> set[str]:
    found, _ = index.search(queries, len(index))
    return set(found.ravel().tolist())


@KINDS
def test_added_item_is_its_own_top_hit(params: IndexParams, rng: np.random.Generator) -> None:
    vectors = _unit(rng, 60)
    index = build_item_index(_items(60), vectors, params)
    new = _unit(rng, 2)

    added = index.add(np.array(["new-a", "new-b"]), new)

    found, scores = index.search(new, 3)
    assert added == 2
    assert len(index) == 62
    assert "new-a" in index
    assert "new-b" in index
    assert found[:, 0].tolist() == ["new-a", "new-b"]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert index.add(np.array(["new-a"]), new[:1]) == 0


@KINDS
def test_removed_items_leave_every_later_search(
    params: IndexParams, rng: np.random.Generator
) -> None:
    vectors = _unit(rng, 60)
    items = _items(60)
    index = build_item_index(items, vectors, params)
    gone = items[[0, 7, 33]]

    removed = index.remove(np.append(gone, "never-indexed"))

    queries = np.vstack([vectors, _unit(rng, 20)])
    found, scores = index.search(queries, len(index))
    assert removed == 3
    assert len(index) == 57
    assert not any(item in index for item in gone)
    assert found.shape == (80, 57)
    assert not set(gone) & set(found.ravel().tolist())
    assert "" not in set(found.ravel().tolist())
    assert np.isfinite(scores).all()
    assert all(len(set(row)) == 57 for row in found)
    assert sorted(index.item_ids()) == sorted(set(items) - set(gone))
    assert index.remove(gone) == 0
    top, _ = index.search(vectors[[0, 7, 33]], 1)
    assert not set(top.ravel().tolist()) & set(gone)


def test_hnsw_keeps_removed_vectors_but_filters_them(rng: np.random.Generator) -> None:
    vectors = _unit(rng, 40)
    items = _items(40)
    index = build_item_index(items, vectors, SMALL)

    index.remove(items[:5])

    assert index.kind == "hnsw"
    assert index.removed == 5
    assert len(index) == 35
    for k in (1, 5, 35, 100):
        found, _ = index.search(vectors[:5], k)
        assert found.shape == (5, min(k, 35))
        assert not set(items[:5]) & set(found.ravel().tolist())


@KINDS
def test_re_added_item_comes_back(params: IndexParams, rng: np.random.Generator) -> None:
    vectors = _unit(rng, 30)
    items = _items(30)
    index = build_item_index(items, vectors, params)
    index.remove(items[:2])

    back = index.add(items[:1], vectors[:1])

    found, _ = index.search(vectors[:2], 1)
    assert back == 1
    assert items[0] in index
    assert items[1] not in index
    assert len(index) == 29
    assert found[0, 0] == items[0]
    assert found[1, 0] != items[1]
    assert items[0] in _all_hits(index, vectors)
    assert items[1] not in _all_hits(index, vectors)


@KINDS
def test_re_embedded_item_is_listed_once(params: IndexParams, rng: np.random.Generator) -> None:
    vectors = _unit(rng, 30)
    items = _items(30)
    index = build_item_index(items, vectors, params)
    moved = _unit(rng, 1)

    assert index.add(items[:1], moved) == 0

    queries = np.vstack([moved, vectors[:1], _unit(rng, 10)])
    found, scores = index.search(queries, 30)
    assert len(index) == 30
    assert found.shape == (12, 30)
    for row, row_scores in zip(found, scores, strict=True):
        assert len(set(row)) == 30
        assert set(row) == set(items)
        assert (np.diff(row_scores) <= 1e-6).all()
    assert found[0, 0] == items[0]
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_flat_re_embedding_replaces_the_old_vector(rng: np.random.Generator) -> None:
    vectors = _unit(rng, 30)
    items = _items(30)
    index = build_item_index(items, vectors)
    moved = _unit(rng, 1)

    index.add(items[:1], moved)

    found, scores = index.search(vectors[:1], 30)
    position = found[0].tolist().index(items[0])
    assert index.kind == "flat"
    assert scores[0, position] == pytest.approx(float(moved[0] @ vectors[0]), abs=1e-5)


@KINDS
def test_pickle_round_trip_keeps_removals_and_additions(
    params: IndexParams, rng: np.random.Generator
) -> None:
    vectors = _unit(rng, 40)
    items = _items(40)
    index = build_item_index(items, vectors, params)
    index.remove(items[:4])
    extra = _unit(rng, 1)
    index.add(np.array(["extra"]), extra)

    restored = pickle.loads(pickle.dumps(index))

    assert (len(restored), restored.removed, restored.kind) == (37, index.removed, index.kind)
    assert not any(item in restored for item in items[:4])
    assert "extra" in restored
    assert not set(items[:4]) & _all_hits(restored, vectors)
    assert restored.search(extra, 1)[0][0, 0] == "extra"
    before_ids, before_scores = index.search(vectors, 10)
    after_ids, after_scores = restored.search(vectors, 10)
    assert (after_ids == before_ids).all()
    np.testing.assert_array_equal(after_scores, before_scores)


def test_add_rejects_bad_input(rng: np.random.Generator) -> None:
    index = build_item_index(_items(5), _unit(rng, 5))

    with pytest.raises(ValueError, match="vectors must be"):
        index.add(np.array(["a"]), _unit(rng, 1, dim=4))
    with pytest.raises(ValueError, match="vectors must be"):
        index.add(np.array(["a", "b"]), _unit(rng, 1))
    with pytest.raises(ValueError, match="unique"):
        index.add(np.array(["a", "a"]), _unit(rng, 2))
    assert index.add(np.array([], dtype=str), np.zeros((0, 8), dtype=np.float32)) == 0
    assert len(index) == 5


def test_searches_survive_concurrent_index_swaps(rng: np.random.Generator) -> None:
    """Serving swaps in a new generation by reassigning one reference while requests search."""
    k = 10
    versions = [
        (np.array([f"{tag}-{j:03d}" for j in range(50)]), _unit(rng, 50)) for tag in ("even", "odd")
    ]
    params = [IndexParams(), SMALL, SMALL_IVF]

    def generation(which: int) -> ItemIndex:
        items, vectors = versions[which]
        fresh = build_item_index(items, vectors, params[which])
        fresh.remove(items[:3])
        fresh.add(items[:1], vectors[:1])
        return fresh

    holder = {"index": generation(0)}
    allowed = (set(versions[0][0]) | set(versions[1][0])) - {
        f"{tag}-{j:03d}" for tag in ("even", "odd") for j in (1, 2)
    }
    queries = _unit(rng, 4)
    errors: list[BaseException] = []
    bad_rows: list[object] = []
    searches = [0]
    stop = threading.Event()

    def serve() -> None:
        try:
            while not stop.is_set():
                found, scores = holder["index"].search(queries, k)
                if found.shape != (4, k) or scores.shape != (4, k):
                    bad_rows.append(found.shape)
                for row in found:
                    if not set(row) <= allowed or len(set(row)) != k:
                        bad_rows.append(row.tolist())
                searches[0] += 1
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=serve) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        for swap in range(30):
            holder["index"] = generation((swap + 1) % 2)
            # Let the searches run against this generation before the next swap, however
            # busy the machine is: the interleaving is what the test is about.
            target, deadline = searches[0] + 1, time.monotonic() + 10.0
            while searches[0] < target and time.monotonic() < deadline:
                time.sleep(0.001)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)

    assert not any(worker.is_alive() for worker in workers)
    assert errors == []
    assert bad_rows == []
    assert searches[0] >= 30


def test_ivf_recall_against_exact_and_default_kind(rng: np.random.Generator) -> None:
    centres = rng.normal(size=(20, 16))
    vectors = (centres[rng.integers(0, 20, 4000)] + 0.3 * rng.normal(size=(4000, 16))).astype(
        np.float32
    )
    queries = (centres[rng.integers(0, 20, 50)] + 0.3 * rng.normal(size=(50, 16))).astype(
        np.float32
    )
    items = _items(4000)
    ivf = build_item_index(items, vectors, IndexParams(exact_threshold=100))
    exact = build_item_index(items, vectors)
    approx_ids, _ = ivf.search(queries, 20)
    exact_ids, _ = exact.search(queries, 20)

    assert (ivf.kind, exact.kind) == ("ivf", "flat")
    recall = np.mean(
        [len(set(a) & set(e)) / 20 for a, e in zip(approx_ids, exact_ids, strict=True)]
    )
    assert recall > 0.9
    with pytest.raises(ValueError, match="large_kind"):
        build_item_index(items, vectors, IndexParams(exact_threshold=100, large_kind="lsh"))
