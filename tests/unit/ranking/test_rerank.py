from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from fitpulse_orchestration.ranking.rerank import (
    FRESH_REASON,
    REASONS,
    RerankParams,
    RerankStats,
    rerank,
)

AS_OF = pd.Timestamp("2026-11-01", tz="UTC")
OLD = AS_OF - pd.Timedelta(days=60)
NEW = AS_OF - pd.Timedelta(days=1)
PARAMS = RerankParams(n=20, max_per_category=6, fresh_days=3.0, fresh_slot=4, recent_days=7.0)


@dataclass
class Cand:
    item_id: str
    score: float
    source: str = "als"
    category: str | None = None
    unsafe_for_beginner: bool = False
    published_at: pd.Timestamp = OLD


def _frame(cands: list[Cand]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [c.item_id for c in cands],
            "score": [c.score for c in cands],
            "source": [c.source for c in cands],
            "category": [c.category or f"cat-{c.item_id}" for c in cands],
            "unsafe_for_beginner": [c.unsafe_for_beginner for c in cands],
            "published_at": pd.to_datetime([c.published_at for c in cands], utc=True),
        }
    )


def _old(n: int, start: float = 100.0, prefix: str = "o") -> list[Cand]:
    """``n`` old, safe items of distinct categories with descending scores."""
    return [Cand(f"{prefix}{k:02d}", start - k) for k in range(n)]


def _run(
    cands: list[Cand],
    level: str = "intermediate",
    recent: set[str] | None = None,
    params: RerankParams = PARAMS,
) -> tuple[pd.DataFrame, RerankStats]:
    feed, stats = rerank(_frame(cands), level, recent or set(), AS_OF, params)
    assert feed["rank"].tolist() == list(range(len(feed)))
    assert set(feed["reason"]) <= set(REASONS.values())
    assert not feed["item_id"].duplicated().any()
    return feed, stats


def _unsafe_top() -> list[Cand]:
    """Three unsafe items (advanced, high intensity, unknown) outscore three safe ones."""
    return [
        Cand("advanced", 10.0, unsafe_for_beginner=True),
        Cand("high_intensity", 9.0, unsafe_for_beginner=True),
        Cand("unknown", 8.0, source="popular", unsafe_for_beginner=True),
        *_old(3, start=5.0, prefix="safe"),
    ]


def test_beginner_never_gets_unsafe_items_and_feed_gets_shorter() -> None:
    feed, stats = _run(_unsafe_top(), level="beginner", params=RerankParams(n=5))

    assert feed["item_id"].tolist() == ["safe00", "safe01", "safe02"]
    assert stats.unsafe_removed == 3


@pytest.mark.parametrize("level", ["unknown", "", "Beginner", "expert"])
def test_a_member_of_no_known_level_gets_the_beginner_rule(level: str) -> None:
    """Offline as online: the rule cannot tell such a member from a beginner."""
    feed, stats = _run(_unsafe_top(), level=level, params=RerankParams(n=5))

    assert feed["item_id"].tolist() == ["safe00", "safe01", "safe02"]
    assert stats.unsafe_removed == 3


@pytest.mark.parametrize("level", ["intermediate", "advanced"])
def test_non_beginners_get_unsafe_items(level: str) -> None:
    feed, stats = _run(_unsafe_top(), level=level, params=RerankParams(n=5))

    assert feed["item_id"].tolist() == ["advanced", "high_intensity", "unknown", "safe00", "safe01"]
    assert stats.unsafe_removed == 0


def test_feed_is_ordered_by_score_then_item_id() -> None:
    cands = [Cand("b", 1.0), Cand("c", 3.0), Cand("a", 1.0), Cand("d", 2.0, source="popular")]

    feed, _ = _run(cands)

    assert feed["item_id"].tolist() == ["c", "d", "a", "b"]
    assert feed["reason"].tolist() == ["for_you", "popular_with_similar", "for_you", "for_you"]
    assert feed["score"].tolist() == [3.0, 2.0, 1.0, 1.0]
    assert list(feed.columns) == ["item_id", "rank", "score", "source", "category", "reason"]


def test_feed_truncated_to_n() -> None:
    feed, stats = _run(_old(30))

    assert feed["item_id"].tolist() == [f"o{k:02d}" for k in range(20)]
    assert stats == RerankStats(0, 0, 0, False)


def test_max_per_category_cap() -> None:
    yoga = [Cand(f"yoga{k}", 50.0 - k, category="yoga") for k in range(10)]
    cands = yoga + _old(10, start=30.0)

    feed, stats = _run(cands, params=RerankParams(n=10, max_per_category=3))

    assert feed["category"].value_counts().max() == 3
    assert feed["item_id"].tolist() == ["yoga0", "yoga1", "yoga2", *[f"o{k:02d}" for k in range(7)]]
    assert stats.category_capped == 7


def test_recently_completed_excluded() -> None:
    cands = [*_old(5), Cand("risky", 200.0, unsafe_for_beginner=True)]

    feed, stats = _run(cands, level="beginner", recent={"o00", "o03", "risky", "not-a-candidate"})

    assert feed["item_id"].tolist() == ["o01", "o02", "o04"]
    assert stats.recent_removed == 2
    assert stats.unsafe_removed == 1


def test_low_ranked_fresh_item_moves_to_fresh_slot() -> None:
    cands = [*_old(25), Cand("fresh", 0.0, source="fresh", published_at=NEW)]

    feed, stats = _run(cands)

    assert len(feed) == 20
    assert feed.loc[4, "item_id"] == "fresh"
    assert feed.loc[4, "reason"] == FRESH_REASON
    assert feed["item_id"].tolist()[:4] == ["o00", "o01", "o02", "o03"]
    assert feed["item_id"].tolist()[5:] == [f"o{k:02d}" for k in range(4, 19)]
    assert stats.fresh_promoted


def test_fresh_item_in_feed_below_slot_moves_up_with_new_release_reason() -> None:
    cands = [*_old(8), Cand("fresh_pop", 92.5, source="popular", published_at=NEW)]

    feed, stats = _run(cands)

    assert feed["item_id"].tolist()[:6] == ["o00", "o01", "o02", "o03", "fresh_pop", "o04"]
    assert feed.loc[4, "reason"] == FRESH_REASON
    assert feed.loc[4, "source"] == "popular"
    assert len(feed) == 9
    assert stats.fresh_promoted


def test_best_fresh_item_is_the_one_promoted() -> None:
    cands = [
        *_old(25),
        Cand("fresh_low", -5.0, source="fresh", published_at=NEW),
        Cand("fresh_high", -1.0, source="fresh", published_at=NEW),
    ]

    feed, _ = _run(cands)

    assert feed.loc[4, "item_id"] == "fresh_high"
    assert "fresh_low" not in set(feed["item_id"])


@pytest.mark.parametrize("position", [0, 2, 4])
def test_no_promotion_when_fresh_already_at_or_above_slot(position: int) -> None:
    cands = _old(25)
    cands.insert(position, Cand("fresh", 100.5 - position, source="fresh", published_at=NEW))
    cands.append(Cand("fresh_low", -1.0, source="fresh", published_at=NEW))

    feed, stats = _run(cands)

    assert feed.loc[position, "item_id"] == "fresh"
    assert "fresh_low" not in set(feed["item_id"])
    assert not stats.fresh_promoted


def test_no_promotion_without_fresh_items() -> None:
    cands = [*_old(25), Cand("older", 0.0, published_at=AS_OF - pd.Timedelta(days=3, seconds=1))]

    feed, stats = _run(cands)

    assert "older" not in set(feed["item_id"])
    assert not stats.fresh_promoted


def test_unsafe_fresh_item_not_promoted_for_beginner() -> None:
    fresh = Cand("fresh_adv", 0.0, source="fresh", unsafe_for_beginner=True, published_at=NEW)

    beginner, b_stats = _run([*_old(25), fresh], level="beginner")
    advanced, a_stats = _run([*_old(25), fresh], level="advanced")

    assert "fresh_adv" not in set(beginner["item_id"])
    assert not b_stats.fresh_promoted
    assert advanced.loc[4, "item_id"] == "fresh_adv"
    assert a_stats.fresh_promoted


def test_fresh_item_of_a_full_category_not_promoted() -> None:
    yoga = [Cand(f"yoga{k}", 200.0 - k, category="yoga") for k in range(3)]
    fresh = Cand("fresh_yoga", 0.0, source="fresh", category="yoga", published_at=NEW)

    feed, stats = _run([*yoga, *_old(20), fresh], params=RerankParams(max_per_category=3))

    assert "fresh_yoga" not in set(feed["item_id"])
    assert (feed["category"] == "yoga").sum() == 3
    assert not stats.fresh_promoted


def test_everything_filtered_gives_empty_feed() -> None:
    feed, stats = _run([Cand("x", 1.0, unsafe_for_beginner=True)], level="beginner")

    assert feed.empty
    assert list(feed.columns) == ["item_id", "rank", "score", "source", "category", "reason"]
    assert stats == RerankStats(1, 0, 0, False)
