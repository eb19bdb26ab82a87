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

from dataclasses import dataclass
from typing import Final

import pandas as pd

from fitpulse_orchestration.features.reference import UNKNOWN

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


def rerank(
    candidates: pd.DataFrame,
    fitness_level: str,
    recently_completed: set[str],
    as_of: pd.Timestamp,
    params: RerankParams,
) -> tuple[pd.DataFrame, RerankStats]:
    """Build one user's feed from scored candidates.

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
    pool = candidates.sort_values(["score", "item_id"], ascending=[False, True], kind="stable")
    unsafe = (
        pool["unsafe_for_beginner"].astype(bool)
        if fitness_level == "beginner"
        else pd.Series(False, index=pool.index)
    )
    recent = pool["item_id"].isin(recently_completed)
    eligible = pool[~unsafe & ~recent]
    picked: list[int] = []
    per_category: dict[str, int] = {}

    def has_room(category: str) -> bool:
        return category == UNKNOWN or per_category.get(category, 0) < params.max_per_category

    capped = 0
    for idx, category in zip(eligible.index, eligible["category"], strict=True):
        if len(picked) >= params.n:
            break
        if not has_room(category):
            capped += 1
            continue
        per_category[category] = per_category.get(category, 0) + 1
        picked.append(idx)
    fresh_cut = as_of - pd.Timedelta(days=params.fresh_days)
    is_fresh = eligible["published_at"] >= fresh_cut
    promoted = False
    slot = min(params.fresh_slot, max(len(picked) - 1, 0))
    if is_fresh.any() and not any(is_fresh.loc[picked[: slot + 1]]):
        best_fresh = next(
            (
                i
                for i in eligible.index[is_fresh.to_numpy()]
                if i not in picked[: slot + 1]
                and (i in picked or has_room(eligible.at[i, "category"]))
            ),
            None,
        )
        if best_fresh is not None:
            if best_fresh in picked:
                picked.remove(best_fresh)
            elif len(picked) >= params.n:
                picked.pop()
            picked.insert(slot, best_fresh)
            promoted = True
    feed = eligible.loc[picked, ["item_id", "score", "source", "category"]].reset_index(drop=True)
    feed.insert(1, "rank", range(len(feed)))
    feed["reason"] = feed["source"].map(REASONS).fillna("for_you")
    if promoted:
        feed.loc[slot, "reason"] = FRESH_REASON
    stats = RerankStats(
        unsafe_removed=int(unsafe.sum()),
        recent_removed=int((recent & ~unsafe).sum()),
        category_capped=capped,
        fresh_promoted=promoted,
    )
    return feed, stats
