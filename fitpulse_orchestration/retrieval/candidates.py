"""Candidate generation: ALS, EASE, two-tower, popularity and fresh items, seen items removed.

Quotas depend on how warm the user is. A warm user (at least ``cold_threshold`` engaged items)
gets mostly ALS neighbours, plus two-tower, popular and fresh items; a cold user has no useful
ALS row, so the two-tower (profile and the few engagements there are) and segment popularity
fill the pool. Only *live* catalog items are candidates: published before ``as_of`` and not
unpublished or flagged since (``status``); an item taken down is gone from every source at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from fitpulse_orchestration.events.schema import COLD_THRESHOLD, ENGAGEMENT_TYPES
from fitpulse_orchestration.features.reference import UNKNOWN, live_items, publish_time_known
from fitpulse_orchestration.retrieval.als import AlsArtifacts
from fitpulse_orchestration.retrieval.ease import EaseArtifacts
from fitpulse_orchestration.retrieval.index import ItemIndex
from fitpulse_orchestration.retrieval.popularity import pick_segment, split_segments

SOURCES = ("als", "ease", "two_tower", "popular", "fresh")
"""Candidate sources in priority order: an item found by several keeps the first."""
SOURCE_CODES = {
    "none": 0.0,
    "als": 1.0,
    "two_tower": 2.0,
    "popular": 3.0,
    "fresh": 4.0,
    "ease": 5.0,
}
"""The ranker's ``x_source`` feature: the source that retrieved the candidate (0: none).

Codes are fixed, not positions in ``SOURCES``: registered rankers learned them."""
RANK_COLUMNS = {source: f"rank_{source}" for source in SOURCES}
"""Candidate columns with the item's 0-based position in each source's list (NaN: not in it)."""


@dataclass(frozen=True)
class CandidateParams:
    """How many candidates each source contributes per user, for warm and for cold users.

    Defaults come from the retrieval evaluation on the demo world (docs/pipeline.md,
    "Retrieval"): the two-tower recalls more than ALS even for warm users, and popular and fresh
    items mostly displace better candidates for them (warm recall@100 of the blend 0.234 with
    60 popular and 20 fresh, 0.271 with 10 and 10, ALS alone 0.255).
    """

    n_als: int = 120
    n_ease: int = 120
    n_two_tower: int = 120
    n_popular: int = 10
    n_fresh: int = 10
    cold_n_two_tower: int = 150
    cold_n_popular: int = 60
    cold_threshold: int = COLD_THRESHOLD
    fresh_days: float = 3.0

    def quotas(self, n_engaged: int) -> dict[str, int]:
        """Per-source quota of a user with ``n_engaged`` engaged items."""
        if n_engaged >= self.cold_threshold:
            return {
                "als": self.n_als,
                "ease": self.n_ease,
                "two_tower": self.n_two_tower,
                "popular": self.n_popular,
                "fresh": self.n_fresh,
            }
        return {
            "als": self.n_als,
            "ease": self.n_ease,
            "two_tower": self.cold_n_two_tower,
            "popular": self.cold_n_popular,
            "fresh": self.n_fresh,
        }


def live_mask(catalog: pd.DataFrame, as_of: pd.Timestamp) -> pd.Series:
    """Catalog rows servable at ``as_of``: published before it and not taken down since."""
    return (catalog["published_at"] < as_of) & live_items(catalog)


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
        live_mask(catalog, as_of) & (catalog["published_at"] >= lo) & publish_time_known(catalog)
    ]
    return fresh.sort_values(["published_at", "item_id"], ascending=[False, True])


@dataclass(frozen=True)
class CandidatePools:
    """Per-serving-time lookups shared by every user: built once, reused for many requests.

    Attributes:
        published: ids of live catalog items (``live_mask``).
        fresh: ids of fresh items, newest first (``fresh_items``).
        by_segment: popularity rows per segment key (``split_segments``).
        unpublished_als: how many ALS items are not yet published (searched for and dropped).
        unpublished_tt: how many two-tower index items are not live (searched for and dropped).
        unpublished_ease: how many EASE items are not live (listed and dropped).
    """

    published: frozenset[str]
    fresh: np.ndarray
    by_segment: dict[str, pd.DataFrame]
    unpublished_als: int
    unpublished_tt: int = 0
    unpublished_ease: int = 0


def candidate_pools(
    als: AlsArtifacts | None,
    popular: pd.DataFrame,
    catalog: pd.DataFrame,
    as_of: pd.Timestamp,
    params: CandidateParams,
    tt_index: ItemIndex | None = None,
    ease: EaseArtifacts | None = None,
) -> CandidatePools:
    """The shared lookups of ``retrieve_candidates`` at ``as_of`` (for ``tt_index`` searches)."""
    published = frozenset(catalog.loc[live_mask(catalog, as_of), "item_id"].astype(str))
    return CandidatePools(
        published=published,
        fresh=fresh_items(catalog, as_of, params.fresh_days)["item_id"].to_numpy(),
        by_segment=split_segments(popular),
        unpublished_als=0
        if als is None
        else sum(1 for item in als.item_ids if item not in published),
        unpublished_tt=0
        if tt_index is None
        else sum(1 for item in tt_index.item_ids() if item not in published),
        unpublished_ease=0
        if ease is None
        else sum(1 for item in ease.item_ids if item not in published),
    )


def single_source_params(params: CandidateParams, source: str, k: int) -> CandidateParams:
    """``params`` with every quota 0 but ``source``'s, which is ``k`` for warm and cold users."""
    quotas = {
        "n_als": 0,
        "n_ease": 0,
        "n_two_tower": 0,
        "cold_n_two_tower": 0,
        "n_popular": 0,
        "cold_n_popular": 0,
        "n_fresh": 0,
    }
    if source == "two_tower":
        quotas["n_two_tower"] = quotas["cold_n_two_tower"] = k
    elif source == "popular":
        quotas["n_popular"] = quotas["cold_n_popular"] = k
    elif source in ("als", "ease", "fresh"):
        quotas[f"n_{source}"] = k
    else:
        raise ValueError(f"unknown candidate source {source!r}; one of {', '.join(SOURCES)}")
    return replace(params, **quotas)


def generate_candidates(
    users: pd.DataFrame,
    as_of: pd.Timestamp,
    als: AlsArtifacts,
    index: ItemIndex | None,
    popular: pd.DataFrame,
    catalog: pd.DataFrame,
    seen: dict[str, set[str]],
    params: CandidateParams,
    user_vectors: np.ndarray | None = None,
    tt_index: ItemIndex | None = None,
    ease: EaseArtifacts | None = None,
) -> pd.DataFrame:
    """Merge candidate sources for each user.

    Args:
        users: ``user_id``, ``fitness_level``, ``region`` of the users to serve.
        as_of: serving time; only items published before it are candidates.
        als: ALS factors (users without a row get no ALS candidates).
        index: FAISS index over ALS item factors (None: no ALS candidates).
        popular: ``compute_popular_items`` table.
        catalog: completed catalog (for publish times and fresh items).
        seen: ``seen_items`` output; these items are removed (and are EASE's input).
        params: per-source quotas.
        user_vectors: two-tower user embeddings, one row per user (None: no two-tower source).
        tt_index: FAISS index over two-tower item embeddings.
        ease: EASE item-item model (None: no EASE candidates).

    Returns:
        Columns ``user_id``, ``item_id``, ``source`` (one of ``SOURCES``), ``retrieval_score``,
        ``retrieval_rank`` (0-based among the candidates the source added) and one
        ``RANK_COLUMNS`` column per source: the item's position in that source's list of
        eligible items, whichever source added it (NaN when the source did not list it).
    """
    pools = candidate_pools(als, popular, catalog, as_of, params, tt_index, ease)
    return retrieve_candidates(users, als, index, pools, seen, params, user_vectors, tt_index, ease)


def retrieve_candidates(
    users: pd.DataFrame,
    als: AlsArtifacts | None,
    index: ItemIndex | None,
    pools: CandidatePools,
    seen: Mapping[str, AbstractSet[str]],
    params: CandidateParams,
    user_vectors: np.ndarray | None = None,
    tt_index: ItemIndex | None = None,
    ease: EaseArtifacts | None = None,
) -> pd.DataFrame:
    """``generate_candidates`` with the shared lookups already built (the serving path).

    Without ALS factors or an index (``None``) users get no ALS candidates; without user
    vectors or a two-tower index no two-tower candidates; without ``ease`` no EASE candidates.
    """
    published = pools.published
    rows: list[tuple[str, str, str, float, int]] = []
    # Per row, its item's position in each source's list of eligible items (NaN: not listed).
    rank_values: dict[str, list[float]] = {column: [] for column in RANK_COLUMNS.values()}
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
    tt_hits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if user_vectors is not None and tt_index is not None and len(tt_index) and len(user_ids):
        if len(user_vectors) != len(user_ids):
            raise ValueError("user_vectors must have one row per user")
        max_seen = max((len(seen.get(u, ())) for u in user_ids), default=0)
        # Indexed items that are not live (taken down, or not yet published at an offline
        # ``as_of``) are dropped after the search: ask for that many extra.
        want = max(params.n_two_tower, params.cold_n_two_tower) + max_seen + pools.unpublished_tt
        items, scores = tt_index.search(user_vectors, want)
        for u, it, sc in zip(user_ids, items, scores, strict=True):
            tt_hits[u] = (it, sc)
    by_segment = pools.by_segment
    fresh = pools.fresh
    for u, level, region in zip(
        user_ids,
        users["fitness_level"].fillna(UNKNOWN),
        users["region"].fillna(UNKNOWN),
        strict=True,
    ):
        user_seen = seen.get(u, frozenset())
        quota = params.quotas(len(user_seen))
        taken: set[str] = set()
        # Each source's position of every item it listed for this user (a source lists an item
        # once: its first position counts).
        positions: dict[str, dict[str, int]] = {}
        first_row = len(rows)

        def take(
            source: str,
            items: np.ndarray,
            scores: np.ndarray,
            limit: int,
            user: str = u,
            taken: set[str] = taken,
            user_seen: AbstractSet[str] = user_seen,
            positions: dict[str, dict[str, int]] = positions,
        ) -> None:
            rank = 0
            position = 0
            listed = positions.setdefault(source, {})
            for item, score in zip(items, scores, strict=True):
                if rank >= limit:
                    break
                if not item or item in user_seen or item not in published:
                    continue
                listed.setdefault(item, position)
                position += 1
                if item in taken:
                    continue
                taken.add(item)
                rows.append((user, item, source, float(score), rank))
                rank += 1

        if u in als_hits:
            take("als", *als_hits[u], quota["als"])
        if ease is not None and quota["ease"] > 0 and user_seen:
            # Seen and not-live items are skipped by ``take``: ask for that many extra.
            want = quota["ease"] + len(user_seen) + pools.unpublished_ease
            take("ease", *ease.top_items(user_seen, want), quota["ease"])
        if u in tt_hits:
            take("two_tower", *tt_hits[u], quota["two_tower"])
        seg = pick_segment(by_segment, level, region, quota["popular"])
        if seg is not None:
            take("popular", seg["item_id"].to_numpy(), seg["score"].to_numpy(), quota["popular"])
        take("fresh", fresh, -np.arange(len(fresh), dtype=float), quota["fresh"])
        user_items = [row[1] for row in rows[first_row:]]
        for source, column in RANK_COLUMNS.items():
            listed = positions.get(source)
            if listed is None:
                rank_values[column].extend([np.nan] * len(user_items))
            else:
                rank_values[column].extend([listed.get(item, np.nan) for item in user_items])
    names = ["user_id", "item_id", "source", "retrieval_score", "retrieval_rank"]
    ranks = {column: np.array(values, dtype=float) for column, values in rank_values.items()}
    if not rows:
        return pd.DataFrame(rows, columns=names).assign(**ranks)
    # One frame from whole columns: per request this is most of the stage's cost otherwise.
    users_col, items_col, sources_col, scores_col, ranks_col = zip(*rows, strict=True)
    columns = {
        "user_id": np.array(users_col, dtype=object),
        "item_id": np.array(items_col, dtype=object),
        "source": np.array(sources_col, dtype=object),
        "retrieval_score": np.array(scores_col, dtype=float),
        "retrieval_rank": np.array(ranks_col, dtype=np.int64),
    }
    return pd.DataFrame({**columns, **ranks})
