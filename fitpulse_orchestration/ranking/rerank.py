"""Re-ranking with guardrails: a pure function from scored candidates to a 20-item feed.

Rules, in order of precedence:

1. Beginner safety (hard): a beginner never gets an advanced or high-intensity item, nor one
   whose difficulty or intensity is unknown.
2. Recently completed items are never shown again within ``recent_days``.
3. Diversity: at most ``max_per_category`` items of one category in the feed (items of unknown
   category, e.g. from an imported log without a catalog, are not capped: they are not known
   to be alike).
4. Freshness: if any eligible item is younger than ``fresh_days``, the best one takes slot
   ``fresh_slot`` (unless a fresh item already ranks above it).

When rules leave fewer than ``n`` items, the feed is shorter: guardrails are never relaxed.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.features.reference import UNKNOWN, treated_as_beginner

REASONS: Final = {
    "als": "for_you",
    "popular": "popular_with_similar",
    "fresh": "new_release",
}
"""Reason code shown with an item, by candidate source."""
FRESH_REASON: Final = "new_release"


@dataclass(frozen=True)
class RerankParams:
    """Guardrail settings."""

    n: int = 20
    max_per_category: int = 6
    fresh_days: float = 3.0
    fresh_slot: int = 4
    recent_days: float = 7.0


@dataclass(frozen=True)
class RerankStats:
    """How many candidates each guardrail removed or moved for one feed."""

    unsafe_removed: int
    recent_removed: int
    category_capped: int
    fresh_promoted: bool


@dataclass(frozen=True)
class RerankPool:
    """One user's scored candidates as arrays, one row per candidate, in any order.

    Attributes:
        item_ids: item ids (str).
        scores: scores, higher first.
        sources: candidate source of each row (``REASONS`` keys, or another source name).
        categories: item categories (``UNKNOWN`` is never capped).
        unsafe: unsafe for a beginner (bool).
        published: publish times as UTC ``datetime64[ns]`` without a zone (NaT: unknown, never
            fresh).
    """

    item_ids: np.ndarray
    scores: np.ndarray
    sources: np.ndarray
    categories: np.ndarray
    unsafe: np.ndarray
    published: np.ndarray

    @classmethod
    def from_frame(cls, candidates: pd.DataFrame) -> RerankPool:
        """The pool of a candidate frame (the columns ``rerank`` documents)."""
        published = pd.to_datetime(candidates["published_at"], utc=True).dt.tz_convert(None)
        return cls(
            item_ids=candidates["item_id"].to_numpy(),
            scores=candidates["score"].to_numpy(dtype=float),
            sources=candidates["source"].to_numpy(),
            categories=candidates["category"].to_numpy(),
            unsafe=candidates["unsafe_for_beginner"].to_numpy(dtype=bool),
            published=published.to_numpy(dtype="datetime64[ns]"),
        )

    def feed_frame(self, feed: Reranked) -> pd.DataFrame:
        """``feed`` as a frame (``feed_columns``)."""
        return pd.DataFrame(self.feed_columns(feed))

    def feed_columns(self, feed: Reranked) -> dict[str, np.ndarray]:
        """``feed`` as columns, one row per feed item in order.

        Columns: ``item_id``, ``rank``, ``score``, ``source``, ``category``, ``reason``.
        """
        rows = feed.rows
        return {
            "item_id": self.item_ids[rows].astype(str),
            "rank": np.arange(len(rows)),
            "score": self.scores[rows],
            "source": self.sources[rows],
            "category": self.categories[rows],
            "reason": np.asarray(feed.reasons, dtype=object),
        }


@dataclass(frozen=True)
class Reranked:
    """A feed as positions into its ``RerankPool``.

    Attributes:
        rows: pool rows in feed order (``rank`` 0 first).
        reasons: the reason code of each feed item.
        stats: the guardrail counts.
    """

    rows: np.ndarray
    reasons: list[str]
    stats: RerankStats


def rerank(
    candidates: pd.DataFrame,
    fitness_level: str,
    recently_completed: set[str],
    as_of: pd.Timestamp,
    params: RerankParams,
) -> tuple[pd.DataFrame, RerankStats]:
    """Build one user's feed from scored candidates (``rerank_pool`` on a frame).

    Args:
        candidates: one user's candidates with ``item_id``, ``score``, ``source``,
            ``category``, ``unsafe_for_beginner`` (bool) and ``published_at`` (UTC).
        fitness_level: the user's level (``beginner`` triggers the safety rule).
        recently_completed: item ids the user completed within ``params.recent_days``.
        as_of: serving time (for freshness).
        params: guardrail settings.

    Returns:
        The feed (``item_id``, ``rank`` 0-based, ``score``, ``source``, ``category``,
        ``reason``) and the guardrail counts.
    """
    pool = RerankPool.from_frame(candidates)
    feed = rerank_pool(pool, fitness_level, recently_completed, as_of, params)
    return pool.feed_frame(feed), feed.stats


def rerank_pool(
    pool: RerankPool,
    fitness_level: str,
    recently_completed: AbstractSet[str],
    as_of: pd.Timestamp,
    params: RerankParams,
) -> Reranked:
    """Build one user's feed from a pool of scored candidates (see ``rerank``).

    Candidates are taken in (score desc, item id asc) order; the rules of the module docstring
    decide which of them fill the ``params.n`` slots.
    """
    item_ids = pool.item_ids.astype(str)
    order = np.lexsort((item_ids, -pool.scores))
    items = item_ids[order]
    categories = pool.categories[order]
    if treated_as_beginner(fitness_level):
        unsafe = pool.unsafe[order]
    else:
        unsafe = np.zeros(len(items), dtype=bool)
    if recently_completed:
        recent = np.fromiter((i in recently_completed for i in items), dtype=bool, count=len(items))
    else:
        recent = np.zeros(len(items), dtype=bool)
    eligible = np.flatnonzero(~unsafe & ~recent)
    picked: list[int] = []
    per_category: dict[str, int] = {}

    def has_room(category: str) -> bool:
        return category == UNKNOWN or per_category.get(category, 0) < params.max_per_category

    capped = 0
    for pos in eligible:
        if len(picked) >= params.n:
            break
        category = categories[pos]
        if not has_room(category):
            capped += 1
            continue
        per_category[category] = per_category.get(category, 0) + 1
        picked.append(int(pos))
    fresh_cut = (as_of - pd.Timedelta(days=params.fresh_days)).tz_convert("UTC")
    is_fresh = pool.published[order] >= fresh_cut.tz_localize(None).to_datetime64()
    promoted = False
    slot = min(params.fresh_slot, max(len(picked) - 1, 0))
    head = set(picked[: slot + 1])
    if is_fresh[eligible].any() and not is_fresh[list(head)].any():
        in_feed = set(picked)
        best_fresh = next(
            (
                int(pos)
                for pos in eligible[is_fresh[eligible]]
                if pos not in head and (pos in in_feed or has_room(categories[pos]))
            ),
            None,
        )
        if best_fresh is not None:
            if best_fresh in in_feed:
                picked.remove(best_fresh)
            elif len(picked) >= params.n:
                picked.pop()
            picked.insert(slot, best_fresh)
            promoted = True
    rows = order[np.asarray(picked, dtype=np.intp)]
    reasons = [REASONS.get(str(src), "for_you") for src in pool.sources[rows]]
    if promoted:
        reasons[slot] = FRESH_REASON
    stats = RerankStats(
        unsafe_removed=int(unsafe.sum()),
        recent_removed=int((recent & ~unsafe).sum()),
        category_capped=capped,
        fresh_promoted=promoted,
    )
    return Reranked(rows=rows, reasons=reasons, stats=stats)
