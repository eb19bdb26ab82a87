"""FAISS inner-product index over item vectors with stable item-id mapping.

FAISS ids are a 63-bit hash of the item id, so an item keeps its id across rebuilds and an
incremental ``add_with_ids`` of a new item never collides with an existing slot. Catalogs up to
``exact_threshold`` items use an exact flat index; larger ones an inverted-file index
(``IndexIVFFlat``, ``4 * sqrt(n)`` lists, 48 probed). ``benchmarks/retrieval_bench.py`` chose the
family (clustered 32-dimensional vectors, 2 cores): at 1M items IVF nprobe=32 had recall@100
0.9996 of exact search at 31.4x the exact single-query throughput, a 20 s build and 138 MiB,
against 0.9667 at 33.6x, an 89 s build and 389 MiB for HNSW (M=32, efSearch=64); IVF also
deletes vectors and adds 1,000 items in 0.018 s (HNSW: 0.317 s).
``benchmarks/two_tower_index_check.py`` set nprobe on real two-tower embeddings of 1M items
(many exact ties: items with the same content tokens share a vector): nprobe=32 gave recall@100
0.956, 48 gave 0.978 (64: 0.986), HNSW M=32 efSearch=128 only 0.529. HNSW stays available
(``large_kind="hnsw"``).

The live index changes between full rebuilds: ``add`` embeds new items in place and ``remove``
takes items out of every later search at once. Flat and IVF indexes delete the vectors; HNSW
graphs cannot, so there removed ids are kept in a filter that searches skip (asking for that
many extra neighbours), and a re-embedded item shadows its old vector (search results keep each
item's best hit once). The nightly full rebuild starts clean.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class IndexParams:
    """Index choice (exact up to ``exact_threshold`` items, else ``large_kind``) and parameters.

    ``ivf_nlist`` 0 means ``4 * sqrt(n)`` lists (at most n / 39, so each list trains on 39
    points); the quantizer trains on at most ``ivf_train_per_list`` points per list.
    """

    exact_threshold: int = 50_000
    large_kind: str = "ivf"
    ivf_nlist: int = 0
    ivf_nprobe: int = 48
    ivf_train_per_list: int = 64
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
        self._removed: set[int] = set()
        self.kind = kind
        self.dim = dim
        self._lookup: tuple[np.ndarray, pa.LargeStringArray] | None = None
        self._sorted_ids()

    def _sorted_ids(self) -> tuple[np.ndarray, pa.LargeStringArray]:
        """The id map as arrays: FAISS ids ascending and their item ids as an Arrow array.

        A search maps its ids with one ``searchsorted`` instead of a dict lookup per id. Built
        when the index is made or read, so a server builds it before it forks its workers;
        ``add`` and ``remove`` drop it and the next search builds it again. The item ids are
        one Arrow buffer, not ``str`` objects: reading a Python object writes its reference
        count, which copies the page it lives on into every forked worker that reads it (an
        array of objects here made each worker copy most of the 1M item ids of the benchmark's
        index, ``benchmarks/README.md``); a search makes new ``str`` of the ids it returns.
        """
        if self._lookup is None:
            fids = np.fromiter(self._id_map.keys(), dtype=np.int64, count=len(self._id_map))
            order = np.argsort(fids, kind="stable")
            names = pa.array(list(self._id_map.values()), pa.large_string()).take(order)
            self._lookup = (fids[order], names)
        return self._lookup

    def __len__(self) -> int:
        """Items searchable now (removed ones excluded)."""
        return len(self._id_map) - len(self._removed)

    def __contains__(self, item_id: object) -> bool:
        fid = int(stable_item_ids(np.array([str(item_id)]))[0])
        return fid in self._id_map and fid not in self._removed

    @property
    def removed(self) -> int:
        """Removed items whose vectors are still in the graph (filtered from every search)."""
        return len(self._removed)

    def add(self, item_ids: np.ndarray, vectors: np.ndarray) -> int:
        """Add (or re-embed) items without a rebuild; a removed item that is added comes back.

        Returns:
            How many of ``item_ids`` were not searchable before.

        Raises:
            ValueError: for misaligned vectors, a wrong dimension or duplicate ids.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(item_ids) or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be (len(item_ids), {self.dim})")
        if len(set(map(str, item_ids))) != len(item_ids):
            raise ValueError("item_ids must be unique")
        if not len(item_ids):
            return 0
        ids = stable_item_ids(item_ids)
        new = sum(1 for i in ids if int(i) not in self._id_map or int(i) in self._removed)
        present = np.array([int(i) in self._id_map for i in ids], dtype=bool)
        if present.any() and self.kind != "hnsw":
            self._index.remove_ids(ids[present])
        self._index.add_with_ids(vectors, ids)
        self._lookup = None
        for fid, item in zip(ids, item_ids, strict=True):
            self._id_map[int(fid)] = str(item)
            self._removed.discard(int(fid))
        return new

    def remove(self, item_ids: np.ndarray) -> int:
        """Take items out of every later search; returns how many were searchable."""
        ids = [int(i) for i in stable_item_ids(np.asarray(item_ids))]
        gone = [i for i in ids if i in self._id_map and i not in self._removed]
        if not gone:
            return 0
        self._lookup = None
        if self.kind == "hnsw":
            self._removed.update(gone)
        else:
            self._index.remove_ids(np.array(gone, dtype=np.int64))
            for i in gone:
                del self._id_map[i]
        return len(gone)

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
        # Shadowed re-embeddings and removed vectors can take slots: ask for that many more.
        extra = int(self._index.ntotal) - len(self._id_map) + len(self._removed)
        scores, ids = self._index.search(queries, min(k + extra, int(self._index.ntotal)))
        if extra == 0:
            fids, names = self._sorted_ids()
            if not len(fids):
                return np.full(ids.shape, "", dtype=object), np.full(ids.shape, -np.inf)
            at = np.minimum(np.searchsorted(fids, ids), len(fids) - 1)
            found = fids[at] == ids
            taken = names.take(at.ravel()).to_numpy(zero_copy_only=False).reshape(at.shape)
            items = np.where(found, taken, "")
            return items, np.where(found, scores, -np.inf)
        items = np.full((len(queries), k), "", dtype=object)
        out = np.full((len(queries), k), -np.inf)
        for r, (row_ids, row_scores) in enumerate(zip(ids, scores, strict=True)):
            seen: set[int] = set()
            col = 0
            for fid, score in zip(row_ids, row_scores, strict=True):
                fid = int(fid)
                if fid < 0 or fid in self._removed or fid in seen:
                    continue
                seen.add(fid)
                items[r, col] = self._id_map[fid]
                out[r, col] = score
                col += 1
                if col == k:
                    break
        return items, out

    def item_ids(self) -> list[str]:
        """Every searchable item id."""
        return [item for fid, item in self._id_map.items() if fid not in self._removed]

    def __getstate__(self) -> dict[str, Any]:
        import faiss

        return {
            "index": faiss.serialize_index(self._index),
            "id_map": self._id_map,
            "removed": sorted(self._removed),
            "kind": self.kind,
            "dim": self.dim,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        import faiss

        self._index = faiss.deserialize_index(state["index"])
        self._id_map = state["id_map"]
        self._removed = set(state.get("removed", ()))
        self.kind = state["kind"]
        self.dim = state["dim"]
        self._lookup = None
        self._sorted_ids()


def build_item_index(
    item_ids: np.ndarray, vectors: np.ndarray, params: IndexParams | None = None
) -> ItemIndex:
    """Index ``vectors[j]`` under ``item_ids[j]`` (flat up to the threshold, IVF or HNSW above)."""
    import faiss

    params = params or IndexParams()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(item_ids):
        raise ValueError("vectors must be (n_items, dim) aligned with item_ids")
    dim = int(vectors.shape[1])
    base: Any
    n = len(item_ids)
    if n <= params.exact_threshold:
        base = faiss.IndexFlatIP(dim)
        kind = "flat"
    elif params.large_kind == "hnsw":
        base = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = params.hnsw_ef_construction
        base.hnsw.efSearch = params.hnsw_ef_search
        kind = "hnsw"
    elif params.large_kind == "ivf":
        nlist = params.ivf_nlist or max(1, min(round(4 * np.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        base = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors
        if n > nlist * params.ivf_train_per_list:
            rows = np.random.default_rng(7).choice(n, nlist * params.ivf_train_per_list, False)
            sample = vectors[np.sort(rows)]
        base.train(sample)
        base.nprobe = params.ivf_nprobe
        kind = "ivf"
    else:
        raise ValueError(f"large_kind must be 'ivf' or 'hnsw', got {params.large_kind!r}")
    if len(set(map(str, item_ids))) != len(item_ids):
        raise ValueError("item_ids must be unique")
    # IVF lists store ids themselves; an IndexIDMap around them would renumber on remove_ids
    # as if the index were flat and return wrong ids afterwards.
    index = base if kind == "ivf" else faiss.IndexIDMap2(base)
    ids = stable_item_ids(item_ids)
    if len(np.unique(ids)) != len(ids):
        raise ValueError("item id hash collision: two items map to the same FAISS id")
    if len(ids):
        index.add_with_ids(vectors, ids)
    id_map = {int(i): str(item) for i, item in zip(ids, item_ids, strict=True)}
    return ItemIndex(index, id_map, kind, dim)
