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

import numpy as np
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
    # Arrays in (score desc, item id asc) order: this runs once per served feed, and frame
    # indexing per candidate costs more than the whole rule set.
    item_ids = candidates["item_id"].to_numpy().astype(str)
    order = np.lexsort((item_ids, -candidates["score"].to_numpy(dtype=float)))
    items = item_ids[order]
    scores = candidates["score"].to_numpy(dtype=float)[order]
    sources = candidates["source"].to_numpy()[order]
    categories = candidates["category"].to_numpy()[order]
    unsafe = (
        candidates["unsafe_for_beginner"].to_numpy(dtype=bool)[order]
        if fitness_level == "beginner"
        else np.zeros(len(items), dtype=bool)
    )
    recent = np.fromiter((i in recently_completed for i in items), dtype=bool, count=len(items))
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
    published = pd.to_datetime(candidates["published_at"], utc=True).dt.tz_convert(None)
    published = published.to_numpy(dtype="datetime64[ns]")[order]
    fresh_cut = (as_of - pd.Timedelta(days=params.fresh_days)).tz_convert("UTC")
    is_fresh = published >= fresh_cut.tz_localize(None).to_datetime64()
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
    feed = pd.DataFrame(
        {
            "item_id": items[picked],
            "rank": np.arange(len(picked)),
            "score": scores[picked],
            "source": sources[picked],
            "category": categories[picked],
        }
    )
    feed["reason"] = [REASONS.get(str(src), "for_you") for src in feed["source"]]
    if promoted:
        feed.loc[slot, "reason"] = FRESH_REASON
    stats = RerankStats(
        unsafe_removed=int(unsafe.sum()),
        recent_removed=int((recent & ~unsafe).sum()),
        category_capped=capped,
        fresh_promoted=promoted,
    )
    return feed, stats
