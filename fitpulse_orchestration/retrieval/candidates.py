"""Candidate generation: ALS neighbours, segment popularity and fresh items, seen items removed."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fitpulse_orchestration.events.schema import ENGAGEMENT_TYPES
from fitpulse_orchestration.features.reference import UNKNOWN, publish_time_known
from fitpulse_orchestration.retrieval.als import AlsArtifacts
from fitpulse_orchestration.retrieval.index import ItemIndex
from fitpulse_orchestration.retrieval.popularity import pick_segment, split_segments

SOURCES = ("als", "popular", "fresh")
"""Candidate sources in priority order: an item found by several keeps the first."""


@dataclass(frozen=True)
class CandidateParams:
    """How many candidates each source contributes per user."""

    n_als: int = 150
    n_popular: int = 60
    n_fresh: int = 20
    fresh_days: float = 3.0


def seen_items(events: pd.DataFrame, as_of: pd.Timestamp) -> dict[str, set[str]]:
    """Items each user engaged with (click or deeper) before ``as_of``."""
    ev = events[events["event_type"].isin(list(ENGAGEMENT_TYPES)) & (events["ts"] < as_of)]
    return {u: set(items) for u, items in ev.groupby("user_id")["item_id"]}


def fresh_items(catalog: pd.DataFrame, as_of: pd.Timestamp, fresh_days: float) -> pd.DataFrame:
    """Catalog items published in the ``fresh_days`` before ``as_of``, newest first.

    Items known only from events (no catalog publish time) are never fresh.
    """
    lo = as_of - pd.Timedelta(days=fresh_days)
    fresh = catalog[
        (catalog["published_at"] < as_of)
        & (catalog["published_at"] >= lo)
        & publish_time_known(catalog)
    ]
    return fresh.sort_values(["published_at", "item_id"], ascending=[False, True])


@dataclass(frozen=True)
class CandidatePools:
    """Per-serving-time lookups shared by every user: built once, reused for many requests.

    Attributes:
        published: ids of catalog items published before ``as_of``.
        fresh: ids of fresh items, newest first (``fresh_items``).
        by_segment: popularity rows per segment key (``split_segments``).
        unpublished_als: how many ALS items are not yet published (searched for and dropped).
    """

    published: frozenset[str]
    fresh: np.ndarray
    by_segment: dict[str, pd.DataFrame]
    unpublished_als: int


def candidate_pools(
    als: AlsArtifacts | None,
    popular: pd.DataFrame,
    catalog: pd.DataFrame,
    as_of: pd.Timestamp,
    params: CandidateParams,
) -> CandidatePools:
    """The shared lookups of ``retrieve_candidates`` at ``as_of``."""
    published = frozenset(catalog.loc[catalog["published_at"] < as_of, "item_id"].astype(str))
    return CandidatePools(
        published=published,
        fresh=fresh_items(catalog, as_of, params.fresh_days)["item_id"].to_numpy(),
        by_segment=split_segments(popular),
        unpublished_als=0
        if als is None
        else sum(1 for item in als.item_ids if item not in published),
    )


def generate_candidates(
    users: pd.DataFrame,
    as_of: pd.Timestamp,
    als: AlsArtifacts,
    index: ItemIndex | None,
    popular: pd.DataFrame,
    catalog: pd.DataFrame,
    seen: dict[str, set[str]],
    params: CandidateParams,
) -> pd.DataFrame:
    """Merge candidate sources for each user.

    Args:
        users: ``user_id``, ``fitness_level``, ``region`` of the users to serve.
        as_of: serving time; only items published before it are candidates.
        als: ALS factors (users without a row get no ALS candidates).
        index: FAISS index over ALS item factors (None: no ALS candidates).
        popular: ``compute_popular_items`` table.
        catalog: completed catalog (for publish times and fresh items).
        seen: ``seen_items`` output; these items are removed.
        params: per-source quotas.

    Returns:
        Columns ``user_id``, ``item_id``, ``source`` (one of ``SOURCES``), ``retrieval_score``
        and ``retrieval_rank`` (0-based within the source).
    """
    pools = candidate_pools(als, popular, catalog, as_of, params)
    return retrieve_candidates(users, als, index, pools, seen, params)


def retrieve_candidates(
    users: pd.DataFrame,
    als: AlsArtifacts | None,
    index: ItemIndex | None,
    pools: CandidatePools,
    seen: Mapping[str, AbstractSet[str]],
    params: CandidateParams,
) -> pd.DataFrame:
    """``generate_candidates`` with the shared lookups already built (the serving path).

    Without ALS factors or an index (``None``) users get popular and fresh candidates only.
    """
    published = pools.published
    rows: list[tuple[str, str, str, float, int]] = []
    user_ids = users["user_id"].astype(str).to_numpy()
    rows_als = np.array(
        [als.user_row(u) if als is not None and len(als.user_ids) else None for u in user_ids]
    )
    has_als = np.array([r is not None for r in rows_als], dtype=bool)
    als_hits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if als is not None and has_als.any() and index is not None and len(index):
        queries = als.user_factors[rows_als[has_als].astype(int)]
        # Seen and not-yet-published items are filtered after the search: ask for enough extra.
        max_seen = max((len(seen.get(u, ())) for u in user_ids[has_als]), default=0)
        items, scores = index.search(queries, params.n_als + max_seen + pools.unpublished_als)
        for u, it, sc in zip(user_ids[has_als], items, scores, strict=True):
            als_hits[u] = (it, sc)
    by_segment = pools.by_segment
    fresh = pools.fresh
    for u, level, region in zip(
        user_ids,
        users["fitness_level"].fillna(UNKNOWN),
        users["region"].fillna(UNKNOWN),
        strict=True,
    ):
        user_seen = seen.get(u, frozenset())
        taken: set[str] = set()

        def take(
            source: str,
            items: np.ndarray,
            scores: np.ndarray,
            limit: int,
            user: str = u,
            taken: set[str] = taken,
            user_seen: AbstractSet[str] = user_seen,
        ) -> None:
            rank = 0
            for item, score in zip(items, scores, strict=True):
                if rank >= limit:
                    break
                if not item or item in user_seen or item in taken or item not in published:
                    continue
                taken.add(item)
                rows.append((user, item, source, float(score), rank))
                rank += 1

        if u in als_hits:
            take("als", *als_hits[u], params.n_als)
        seg = pick_segment(by_segment, level, region, params.n_popular)
        if seg is not None:
            take("popular", seg["item_id"].to_numpy(), seg["score"].to_numpy(), params.n_popular)
        take("fresh", fresh, -np.arange(len(fresh), dtype=float), params.n_fresh)
    return pd.DataFrame(
        rows, columns=["user_id", "item_id", "source", "retrieval_score", "retrieval_rank"]
    )
