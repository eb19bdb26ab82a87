"""Candidate generation: ALS, EASE, two-tower, popularity and fresh items, seen items removed.

Quotas depend on how warm the user is. A warm user (at least ``cold_threshold`` engaged items)
gets mostly ALS neighbours, plus two-tower, popular and fresh items; a cold user has no useful
ALS row, so the two-tower (profile and the few engagements there are) and segment popularity
fill the pool. Only *live* catalog items are candidates: published before ``as_of`` and not
unpublished or flagged since (``status``); an item taken down is gone from every source at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace

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
        by_segment: each segment's popularity list (``SegmentList.segments``).
        unpublished_als: how many ALS items are not yet published (searched for and dropped).
        unpublished_tt: how many two-tower index items are not live (searched for and dropped).
        ease_not_live: positions in the EASE model's ``item_ids`` of items that are not live
            (never listed).
    """

    published: frozenset[str]
    fresh: np.ndarray
    by_segment: dict[str, SegmentList]
    unpublished_als: int
    unpublished_tt: int = 0
    ease_not_live: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))

    @property
    def fresh_scores(self) -> np.ndarray:
        """The fresh source's scores: newest first, 0, -1, -2, ..."""
        return -np.arange(len(self.fresh), dtype=float)


@dataclass(frozen=True)
class SegmentList:
    """One popularity segment's item ids, best first, with their scores (``pick_segment``)."""

    items: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def segments(cls, popular: pd.DataFrame) -> dict[str, SegmentList]:
        """``split_segments`` of a popularity table, as arrays."""
        return {
            key: cls(rows["item_id"].to_numpy(), rows["score"].to_numpy())
            for key, rows in split_segments(popular).items()
        }


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
        by_segment=SegmentList.segments(popular),
        unpublished_als=0
        if als is None
        else sum(1 for item in als.item_ids if item not in published),
        unpublished_tt=0
        if tt_index is None
        else sum(1 for item in tt_index.item_ids() if item not in published),
        ease_not_live=np.array([], dtype=np.int64)
        if ease is None
        else np.flatnonzero([item not in published for item in ease.item_ids]),
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
    """``generate_candidates`` with the shared lookups already built (``retrieve_columns``)."""
    return pd.DataFrame(
        retrieve_columns(
            users["user_id"].astype(str).to_numpy(),
            users["fitness_level"].fillna(UNKNOWN).to_numpy(),
            users["region"].fillna(UNKNOWN).to_numpy(),
            als,
            index,
            pools,
            seen,
            params,
            user_vectors,
            tt_index,
            ease,
        )
    )


def retrieve_columns(
    user_ids: Sequence[str],
    levels: Sequence[str],
    regions: Sequence[str],
    als: AlsArtifacts | None,
    index: ItemIndex | None,
    pools: CandidatePools,
    seen: Mapping[str, AbstractSet[str]],
    params: CandidateParams,
    user_vectors: np.ndarray | None = None,
    tt_index: ItemIndex | None = None,
    ease: EaseArtifacts | None = None,
) -> dict[str, np.ndarray]:
    """The candidates of ``user_ids`` (with their ``levels`` and ``regions``) as columns.

    The columns of ``generate_candidates``' frame, as arrays: the request path reads them
    without building a frame. Without ALS factors or an index (``None``) users get no ALS
    candidates; without user vectors or a two-tower index no two-tower candidates; without
    ``ease`` no EASE candidates.
    """
    ids = np.asarray(user_ids, dtype=object)
    published = pools.published
    known = als is not None and len(als.user_ids) > 0
    rows_als = [als.user_row(u) if known and als is not None else None for u in ids]
    has_als = np.array([r is not None for r in rows_als], dtype=bool)
    als_hits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if als is not None and has_als.any() and index is not None and len(index):
        queries = als.user_factors[[r for r in rows_als if r is not None]]
        als_users = ids[has_als]
        # Seen and not-live items are filtered after the search: ask for that many extra. Every
        # not-live item of the index is a bound that grows with the catalog's churn (29,797 of
        # a 1M-item benchmark index), so the first search asks for at most as many not-live
        # items as it wants live ones, and only a member it leaves short is searched again with
        # the whole bound. Either way the member's list holds its quota's eligible items in the
        # index's order.
        max_seen = max((len(seen.get(u, ())) for u in als_users), default=0)
        want = params.n_als + max_seen
        margin = min(pools.unpublished_als, want)
        items, scores = index.search(queries, want + margin)
        for u, it, sc in zip(als_users, items, scores, strict=True):
            als_hits[u] = (it, sc)
        if pools.unpublished_als > margin:
            short = [
                k
                for k, (u, row) in enumerate(zip(als_users, items, strict=True))
                if _eligible(row, seen.get(u, frozenset()), published, params.n_als) < params.n_als
                and all(row)
            ]
            if short:
                full = want + pools.unpublished_als
                again, again_scores = index.search(queries[short], full)
                for k, it, sc in zip(short, again, again_scores, strict=True):
                    als_hits[als_users[k]] = (it, sc)
    tt_found: tuple[np.ndarray, np.ndarray] | None = None
    tt_more = 0
    if user_vectors is not None and tt_index is not None and len(tt_index) and len(ids):
        if len(user_vectors) != len(ids):
            raise ValueError("user_vectors must have one row per user")
        max_seen = max((len(seen.get(u, ())) for u in ids), default=0)
        # Seen, not-live (taken down, or not yet published at an offline ``as_of``) and
        # already-listed items are dropped after the search. As for ALS, the first search asks
        # for at most as many not-live items as it wants listable ones, and a member it leaves
        # short is searched again with every not-live item as slack (``tt_more``: how many
        # results that second search asks for; 0 when the first one already did).
        tt_need = max(params.n_two_tower, params.cold_n_two_tower) + max_seen
        tt_first = tt_need + min(pools.unpublished_tt, tt_need)
        tt_found = tt_index.search(user_vectors, tt_first)
        if pools.unpublished_tt > tt_need:
            tt_more = tt_need + pools.unpublished_tt
    parts: list[_UserCandidates] = []
    for row, (u, level, region) in enumerate(zip(ids, levels, regions, strict=True)):
        user_seen = seen.get(u, frozenset())
        quota = params.quotas(len(user_seen))
        mine = _UserCandidates(str(u), user_seen, published)
        if u in als_hits:
            mine.take("als", *als_hits[u], quota["als"])
        if ease is not None and quota["ease"] > 0 and user_seen:
            # Seen and not-live items are never listed; an item ALS took is skipped by
            # ``take``: ask for that many extra.
            want = quota["ease"] + len(mine.items)
            mine.take("ease", *ease.top_items(user_seen, want, pools.ease_not_live), quota["ease"])
        if tt_found is not None:
            it, sc = tt_found[0][row], tt_found[1][row]
            if (
                tt_more
                and tt_index is not None
                and user_vectors is not None
                and all(it)
                and _eligible(it, user_seen, published, quota["two_tower"], mine.row_of)
                < quota["two_tower"]
            ):
                again, again_scores = tt_index.search(user_vectors[row : row + 1], tt_more)
                it, sc = again[0], again_scores[0]
            mine.take("two_tower", it, sc, quota["two_tower"])
        seg = pick_segment(pools.by_segment, str(level), str(region), quota["popular"])
        if seg is not None:
            mine.take("popular", seg.items, seg.scores, quota["popular"])
        mine.take("fresh", pools.fresh, pools.fresh_scores, quota["fresh"])
        parts.append(mine)
    return _columns(parts)


def _eligible(
    items: np.ndarray,
    seen: AbstractSet[str],
    published: AbstractSet[str],
    enough: int,
    taken: Mapping[str, int] | AbstractSet[str] = frozenset(),
) -> int:
    """How many of ``items`` a member may get, counting up to ``enough``.

    Listed (not empty), unseen, live, and not ``taken`` by an earlier source.
    """
    count = 0
    for item in items.tolist():
        if item and item not in seen and item in published and item not in taken:
            count += 1
            if count >= enough:
                break
    return count


class _UserCandidates:
    """One user's candidates as sources add them (``retrieve_columns``)."""

    def __init__(self, user: str, seen: AbstractSet[str], published: AbstractSet[str]) -> None:
        self.user = user
        self.seen = seen
        self.published = published
        self.row_of: dict[str, int] = {}
        """Item -> its row: the first source that listed it took it."""
        self.items: list[str] = []
        self.sources: list[str] = []
        self.scores: list[float] = []
        self.ranks: list[int] = []
        self.listed: dict[str, tuple[list[int], list[int]]] = {}
        """Per source, the rows it listed and the item's position in its list of eligible items."""

    def take(self, source: str, items: np.ndarray, scores: np.ndarray, limit: int) -> None:
        """Add ``source``'s items (best first) until it has added ``limit`` new ones.

        Seen, empty and not-live items are skipped and take no position; an item listed twice
        keeps its first position; an item an earlier source added keeps that source's row.
        """
        rows: list[int] = []
        positions: list[int] = []
        self.listed[source] = (rows, positions)
        if limit <= 0:
            return
        seen, published, row_of = self.seen, self.published, self.row_of
        here: set[str] = set()
        rank = 0
        position = 0
        item_list = items.tolist() if isinstance(items, np.ndarray) else list(items)
        score_list = scores.tolist() if isinstance(scores, np.ndarray) else list(scores)
        for item, score in zip(item_list, score_list, strict=True):
            if rank >= limit:
                break
            if not item or item in seen or item not in published:
                continue
            if item in here:
                position += 1
                continue
            here.add(item)
            row = row_of.get(item)
            if row is None:
                row = row_of[item] = len(self.items)
                self.items.append(item)
                self.sources.append(source)
                self.scores.append(float(score))
                self.ranks.append(rank)
                rank += 1
            rows.append(row)
            positions.append(position)
            position += 1


def _columns(parts: list[_UserCandidates]) -> dict[str, np.ndarray]:
    """The candidate columns of every user, in user order then row order."""
    sizes = [len(p.items) for p in parts]
    n = sum(sizes)
    columns: dict[str, np.ndarray] = {
        "user_id": np.repeat(np.array([p.user for p in parts], dtype=object), sizes),
        "item_id": np.array([i for p in parts for i in p.items], dtype=object),
        "source": np.array([s for p in parts for s in p.sources], dtype=object),
        "retrieval_score": np.array([x for p in parts for x in p.scores], dtype=float),
        "retrieval_rank": np.array([r for p in parts for r in p.ranks], dtype=np.int64),
    }
    offsets = np.cumsum([0, *sizes], dtype=np.int64)[:-1]
    for source, column in RANK_COLUMNS.items():
        values = np.full(n, np.nan)
        for part, offset in zip(parts, offsets, strict=True):
            listed = part.listed.get(source)
            if listed is not None and listed[0]:
                values[offset + np.asarray(listed[0], dtype=np.int64)] = listed[1]
        columns[column] = values
    return columns
