"""FAISS inner-product index over item vectors with stable item-id mapping.

FAISS ids are a 63-bit hash of the item id, so an item keeps its id across rebuilds and an
incremental ``add_with_ids`` of a new item never collides with an existing slot. Catalogs up to
``exact_threshold`` items use an exact flat index; larger ones an HNSW graph.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class IndexParams:
    """Index choice and HNSW parameters."""

    exact_threshold: int = 50_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128


def stable_item_ids(item_ids: np.ndarray) -> np.ndarray:
    """Deterministic int64 FAISS id of each item id (blake2b, top bit cleared)."""
    out = np.empty(len(item_ids), dtype=np.int64)
    for k, item_id in enumerate(item_ids):
        digest = hashlib.blake2b(str(item_id).encode(), digest_size=8).digest()
        out[k] = int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF
    return out


class ItemIndex:
    """Item vectors searchable by inner product, keyed by item id.

    Attributes:
        kind: ``"flat"`` (exact) or ``"hnsw"``.
        dim: vector dimension.
    """

    def __init__(self, index: Any, id_map: dict[int, str], kind: str, dim: int) -> None:
        self._index = index
        self._id_map = id_map
        self.kind = kind
        self.dim = dim

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items per query row.

        Args:
            queries: float32 array (n, dim).
            k: neighbours per query.

        Returns:
            ``(item_ids, scores)``, both (n, min(k, len(self))); missing slots are ``""`` with
            score ``-inf``.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (n, {self.dim}), got {queries.shape}")
        k = min(k, len(self))
        if k <= 0:
            return np.empty((len(queries), 0), dtype=object), np.empty((len(queries), 0))
        scores, ids = self._index.search(queries, k)
        items = np.array([[self._id_map.get(int(i), "") for i in row] for row in ids], dtype=object)
        scores = np.where(ids < 0, -np.inf, scores)
        return items, scores

    def item_ids(self) -> list[str]:
        """Every indexed item id."""
        return list(self._id_map.values())

    def __getstate__(self) -> dict[str, Any]:
        import faiss

        return {
            "index": faiss.serialize_index(self._index),
            "id_map": self._id_map,
            "kind": self.kind,
            "dim": self.dim,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        import faiss

        self._index = faiss.deserialize_index(state["index"])
        self._id_map = state["id_map"]
        self.kind = state["kind"]
        self.dim = state["dim"]


def build_item_index(
    item_ids: np.ndarray, vectors: np.ndarray, params: IndexParams | None = None
) -> ItemIndex:
    """Index ``vectors[j]`` under ``item_ids[j]`` (flat below the threshold, HNSW above)."""
    import faiss

    params = params or IndexParams()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(item_ids):
        raise ValueError("vectors must be (n_items, dim) aligned with item_ids")
    dim = int(vectors.shape[1])
    base: Any
    if len(item_ids) <= params.exact_threshold:
        base = faiss.IndexFlatIP(dim)
        kind = "flat"
    else:
        base = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = params.hnsw_ef_construction
        base.hnsw.efSearch = params.hnsw_ef_search
        kind = "hnsw"
    if len(set(map(str, item_ids))) != len(item_ids):
        raise ValueError("item_ids must be unique")
    index = faiss.IndexIDMap2(base)
    ids = stable_item_ids(item_ids)
    if len(np.unique(ids)) != len(ids):
        raise ValueError("item id hash collision: two items map to the same FAISS id")
    if len(ids):
        index.add_with_ids(vectors, ids)
    id_map = {int(i): str(item) for i, item in zip(ids, item_ids, strict=True)}
    return ItemIndex(index, id_map, kind, dim)
