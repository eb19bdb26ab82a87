from __future__ import annotations

import pandas as pd
import pytest

from fitpulse_orchestration.retrieval.popularity import (
    PopularityParams,
    compute_popular_items,
    pick_segment,
    segment_keys,
    split_segments,
)

AS_OF = pd.Timestamp("2026-11-01", tz="UTC")
PARAMS = PopularityParams(half_life_days=7.0, top_n=200)
PROFILES = pd.DataFrame(
    {
        "user_id": ["b_eu", "b_us", "a_eu"],
        "fitness_level": ["beginner", "beginner", "advanced"],
        "region": ["eu", "us", "eu"],
    }
)


def _events(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    """Events from ``(user_id, item_id, event_type, days before AS_OF)`` tuples."""
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "ts": [AS_OF - pd.Timedelta(days=r[3]) for r in rows],
        }
    )


def _scores(table: pd.DataFrame, segment: str) -> dict[str, float]:
    rows = table[table["segment"] == segment]
    return dict(zip(rows["item_id"], rows["score"], strict=True))


def test_recency_decay_halves_weight_per_half_life() -> None:
    events = _events(
        [("b_eu", "old", "workout_complete", 14.0), ("b_eu", "new", "workout_complete", 0.0001)]
    )

    table = compute_popular_items(events, PROFILES, AS_OF, PARAMS)

    scores = _scores(table, "*|*")
    assert scores["old"] == pytest.approx(3 * 0.25)
    assert scores["new"] == pytest.approx(3.0, rel=1e-4)
    assert list(table.loc[table["segment"] == "*|*", "item_id"]) == ["new", "old"]


def test_grade_weighting_and_impressions_ignored() -> None:
    events = _events(
        [
            ("b_eu", "done", "workout_complete", 7),
            ("b_eu", "started", "workout_start", 7),
            ("b_eu", "read", "article_read", 7),
            ("b_eu", "clicked", "click", 7),
            ("b_eu", "shown", "impression", 7),
            ("b_eu", "shown", "impression", 1),
            ("b_eu", "opened", "app_open", 1),
        ]
    )

    table = compute_popular_items(events, PROFILES, AS_OF, PARAMS)

    scores = _scores(table, "*|*")
    assert scores == pytest.approx({"done": 1.5, "started": 1.0, "read": 1.0, "clicked": 0.5})
    ordered = table.loc[table["segment"] == "*|*", "item_id"].tolist()
    assert ordered == ["done", "read", "started", "clicked"]


def test_engagements_of_one_item_add_up() -> None:
    events = _events([("b_eu", "x", "click", 7.0), ("b_us", "x", "click", 14.0)])

    table = compute_popular_items(events, PROFILES, AS_OF, PARAMS)

    assert _scores(table, "*|*")["x"] == pytest.approx(0.75)
    assert _scores(table, "beginner|*")["x"] == pytest.approx(0.75)
    assert _scores(table, "beginner|eu")["x"] == pytest.approx(0.5)
    assert _scores(table, "beginner|us")["x"] == pytest.approx(0.25)


def test_segments_and_fallback_rows() -> None:
    events = _events(
        [
            ("b_eu", "yoga", "workout_complete", 1),
            ("a_eu", "hiit", "workout_complete", 1),
            ("nobody", "walk", "click", 1),
        ]
    )

    table = compute_popular_items(events, PROFILES, AS_OF, PARAMS)

    by_segment = table.groupby("segment")["item_id"].agg(sorted).to_dict()
    assert by_segment == {
        "*|*": ["hiit", "walk", "yoga"],
        "advanced|*": ["hiit"],
        "advanced|eu": ["hiit"],
        "beginner|*": ["yoga"],
        "beginner|eu": ["yoga"],
        "unknown|*": ["walk"],
        "unknown|unknown": ["walk"],
    }
    assert list(table.columns) == ["segment", "item_id", "score", "rank"]
    assert table["rank"].dtype == "int64"


def test_top_n_limits_each_segment_and_ranks_from_zero() -> None:
    events = _events([("b_eu", f"item{k}", "click", k + 1) for k in range(5)])

    table = compute_popular_items(events, PROFILES, AS_OF, PopularityParams(top_n=2))

    for _, rows in table.groupby("segment"):
        assert rows["rank"].tolist() == [0, 1]
        assert rows["item_id"].tolist() == ["item0", "item1"]


def test_ties_broken_by_item_id() -> None:
    events = _events([("b_eu", "b", "click", 1), ("b_eu", "a", "click", 1)])

    table = compute_popular_items(events, PROFILES, AS_OF, PARAMS)

    assert table.loc[table["segment"] == "*|*", "item_id"].tolist() == ["a", "b"]


def test_events_at_or_after_as_of_ignored() -> None:
    events = _events(
        [
            ("b_eu", "before", "click", 1),
            ("b_eu", "at", "workout_complete", 0),
            ("b_eu", "after", "workout_complete", -1),
        ]
    )

    table = compute_popular_items(events, PROFILES, AS_OF, PARAMS)

    assert set(table["item_id"]) == {"before"}


def test_no_engagements_gives_empty_typed_table() -> None:
    events = _events([("b_eu", "shown", "impression", 1), ("b_eu", "late", "click", -1)])

    table = compute_popular_items(events, PROFILES, AS_OF, PARAMS)

    assert table.empty
    assert list(table.columns) == ["segment", "item_id", "score", "rank"]
    assert split_segments(table) == {}
    assert pick_segment(split_segments(table), "beginner", "eu", 1) is None


def test_segment_keys_most_specific_first() -> None:
    assert segment_keys("beginner", "eu") == ["beginner|eu", "beginner|*", "*|*"]


@pytest.fixture
def by_segment() -> dict[str, pd.DataFrame]:
    rows = (
        [("b_eu", f"eu{k}", "click", 1) for k in range(2)]
        + [("b_us", f"us{k}", "click", 1) for k in range(4)]
        + [("a_eu", f"adv{k}", "click", 1) for k in range(3)]
    )
    return split_segments(compute_popular_items(_events(rows), PROFILES, AS_OF, PARAMS))


def _picked(by_segment: dict[str, pd.DataFrame], level: str, region: str, n: int) -> str:
    """Segment key of the list ``pick_segment`` chose (``"none"`` when it found nothing)."""
    rows = pick_segment(by_segment, level, region, n)
    return "none" if rows is None else "/".join(sorted(set(rows["segment"])))


def test_pick_segment_prefers_specific_segment_with_enough_items(
    by_segment: dict[str, pd.DataFrame],
) -> None:
    picked = pick_segment(by_segment, "beginner", "us", 4)

    assert picked is not None
    assert set(picked["segment"]) == {"beginner|us"}
    assert picked["rank"].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("level", "region", "n", "expected"),
    [
        ("beginner", "eu", 2, "beginner|eu"),
        ("beginner", "eu", 3, "beginner|*"),
        ("advanced", "jp", 3, "advanced|*"),
        ("beginner", "eu", 7, "*|*"),
        ("intermediate", "eu", 1, "*|*"),
        ("beginner", "eu", 100, "*|*"),
    ],
)
def test_pick_segment_falls_back_when_segment_is_short(
    by_segment: dict[str, pd.DataFrame], level: str, region: str, n: int, expected: str
) -> None:
    assert _picked(by_segment, level, region, n) == expected


def test_pick_segment_global_list_is_whole(by_segment: dict[str, pd.DataFrame]) -> None:
    rows = pick_segment(by_segment, "beginner", "eu", 100)

    assert rows is not None
    assert len(rows) == 9
    assert _picked({}, "beginner", "eu", 1) == "none"
