"""The default item index on real two-tower embeddings at catalog scale.

``retrieval_bench.py`` chose the index on synthetic clustered vectors. This script checks the
choice on what the platform actually indexes: the item-tower embeddings of a trained home
(``fitpulse demo``), for a synthetic catalog of ``--items`` rows whose attributes are drawn
column by column from the home's catalog (so content combinations the world never produced
appear too), searched with the user-tower vectors of the home's users. It goes through the
project's ``build_item_index`` and ``ItemIndex.search`` (the serving code path, id mapping
included).

Content-only embeddings have many exact ties (items with the same tokens get the same vector),
so recall is reported two ways: by ids (an ANN hit tied with a missed exact hit counts as a
miss) and tie-aware (the share of the ANN top-100 scoring at least the exact 100th score).

    python benchmarks/two_tower_index_check.py --home /tmp/fitpulse-demo --items 1000000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fitpulse_orchestration.ranking.feed import HomeFeedModel
from fitpulse_orchestration.retrieval.index import IndexParams, build_item_index
from fitpulse_orchestration.retrieval.two_tower import history_inputs
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.storage.asset_values import load_asset_value

K = 100
COLUMNS = ("item_type", "category", "difficulty", "intensity", "duration_min", "equipment", "tags")


def synthetic_catalog(catalog: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` new items, each attribute drawn independently from ``catalog``'s column."""
    rng = np.random.default_rng(seed)
    out = {c: catalog[c].to_numpy()[rng.integers(0, len(catalog), n)] for c in COLUMNS}
    frame = pd.DataFrame(out)
    frame.insert(0, "item_id", [f"syn_{j:08d}" for j in range(n)])
    # Published after the training cutoff: every item gets the new-item prior.
    frame["published_at"] = pd.Timestamp.now(tz="UTC")
    return frame


def main() -> None:
    """Embed, index exactly and with the default, and compare."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--nprobe", type=str, default="", help="extra IVF nprobe values to try, e.g. 48,64"
    )
    parser.add_argument("--hnsw", action="store_true", help="also HNSW (M=32, efSearch=128)")
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    store = LocalObjectStore(ProjectHome.resolve(args.home).store)
    model: HomeFeedModel = load_asset_value(store, "home_feed_model")
    snapshot = load_asset_value(store, "training_snapshot")
    assert model.two_tower is not None, "the home's feed model has no two-tower"
    inputs = snapshot.inputs

    t0 = time.perf_counter()
    catalog = synthetic_catalog(inputs.catalog, args.items, args.seed)
    vectors = model.two_tower.embed_items(catalog)
    ids = catalog["item_id"].to_numpy()
    print(f"embedded {len(ids):,} items in {time.perf_counter() - t0:.1f} s")
    distinct = len(np.unique(vectors.round(5), axis=0))
    print(f"distinct item vectors: {distinct:,} ({distinct / len(ids):.1%})")

    users = inputs.profiles["user_id"].astype(str).to_numpy()
    users = np.random.default_rng(args.seed).choice(users, min(args.queries, len(users)), False)
    x = history_inputs(inputs.events, inputs.catalog, inputs.profiles, users, snapshot.split.end)
    queries = model.two_tower.embed_users(x)

    built = {}
    configs = [("exact", IndexParams(exact_threshold=10**9)), ("default", IndexParams())]
    if args.hnsw:
        configs.append(("hnsw", IndexParams(exact_threshold=0, large_kind="hnsw")))
    for name, params in configs:
        t0 = time.perf_counter()
        built[name] = build_item_index(ids, vectors, params)
        print(f"{name}: {built[name].kind}, built in {time.perf_counter() - t0:.1f} s")
    exact_ids, exact_scores = built["exact"].search(queries, K)
    floor = exact_scores[:, -1:] - 1e-5
    default_nprobe = IndexParams().ivf_nprobe
    for nprobe in [default_nprobe, *(int(v) for v in args.nprobe.split(",") if v)]:
        label = f"nprobe={nprobe}" + (" (default)" if nprobe == default_nprobe else "")
        if built["default"].kind == "ivf":
            built["default"]._index.nprobe = nprobe
        t0 = time.perf_counter()
        ann_ids, ann_scores = built["default"].search(queries, K)
        ms = (time.perf_counter() - t0) * 1e3 / len(queries)
        by_id = np.mean([len(set(a) & set(e)) / K for a, e in zip(ann_ids, exact_ids, strict=True)])
        tie_aware = float(np.mean((ann_scores >= floor).sum(axis=1) / K))
        print(
            f"{label}: recall@{K} vs exact by id {by_id:.4f}, tie-aware {tie_aware:.4f}, "
            f"{ms:.3f} ms per query in a batch"
        )
        if built["default"].kind == "ivf":
            built["default"]._index.nprobe = default_nprobe

    if "hnsw" in built:
        hnsw_ids, hnsw_scores = built["hnsw"].search(queries, K)
        by_id = np.mean(
            [len(set(a) & set(e)) / K for a, e in zip(hnsw_ids, exact_ids, strict=True)]
        )
        tie_aware = float(np.mean((hnsw_scores >= floor).sum(axis=1) / K))
        print(f"hnsw: recall@{K} vs exact by id {by_id:.4f}, tie-aware {tie_aware:.4f}")
    for name, index in built.items():
        times = []
        for q in queries[: args.single]:
            t0 = time.perf_counter()
            index.search(q[None, :], K)
            times.append((time.perf_counter() - t0) * 1e3)
        p50, p99 = np.percentile(times, [50, 99])
        print(f"{name}: single-query search + id mapping p50 {p50:.3f} ms, p99 {p99:.3f} ms")


if __name__ == "__main__":
    main()
