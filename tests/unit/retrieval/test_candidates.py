from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.sparse import csr_matrix

from fitpulse_orchestration.retrieval.als import AlsArtifacts, AlsParams
from fitpulse_orchestration.retrieval.candidates import (
    SOURCES,
    CandidateParams,
    fresh_items,
    generate_candidates,
    live_mask,
    seen_items,
)
from fitpulse_orchestration.retrieval.index import ItemIndex, build_item_index

AS_OF = pd.Timestamp("2026-11-01", tz="UTC")
OLD = AS_OF - pd.Timedelta(days=30)
# Both hand-made users have one engaged item: with a threshold of 1 they get the warm quotas.
PARAMS = CandidateParams(n_als=3, n_popular=3, n_fresh=2, cold_threshold=1, fresh_days=3.0)

# ALS scores of the warm user (a1 is already seen, "late" is not yet published).
ALS_SCORES = {"a1": 6.0, "a2": 5.0, "a3": 4.0, "a4": 3.0, "a5": 2.0, "late": 1.0}
# "*|*" popularity order; a2 is also an ALS hit and f1 is also fresh.
POPULAR = ["p1", "a2", "f1", "p2", "p3"]
CATALOG = pd.DataFrame(
    {
        "item_id": ["a1", "a2", "a3", "a4", "a5", "p1", "p2", "p3", "f1", "f2", "f3", "late"],
        "published_at": [OLD] * 8
        + [
            AS_OF - pd.Timedelta(days=0.5),
            AS_OF - pd.Timedelta(days=1),
            AS_OF - pd.Timedelta(days=2),
            AS_OF + pd.Timedelta(days=1),
        ],
        "item_type": "workout",
    }
)
USERS = pd.DataFrame(
    {"user_id": ["warm", "cold"], "fitness_level": ["beginner", None], "region": ["eu", None]}
)
SEEN = {"warm": {"a1"}, "cold": {"p1"}}


def _als(scores: dict[str, float] | None = None) -> AlsArtifacts:
    """Hand-set factors: the user vector is e0, so an item's score is its first coordinate."""
    scores = scores or ALS_SCORES
    item_ids = np.array(sorted(scores))
    item_factors = np.array([[scores[i], 0.0] for i in item_ids], dtype=np.float32)
    return AlsArtifacts(
        user_factors=np.array([[1.0, 0.0]], dtype=np.float32),
        item_factors=item_factors,
        user_ids=np.array(["warm"]),
        item_ids=item_ids,
        seen=csr_matrix((1, len(item_ids)), dtype=np.float32),
        params=AlsParams(factors=2),
        train_seconds=0.0,
        train_positive_mse=0.0,
    )


def _popular() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "segment": "*|*",
            "item_id": POPULAR,
            "score": np.arange(len(POPULAR), 0, -1, dtype=float),
            "rank": np.arange(len(POPULAR), dtype="int64"),
        }
    )


def _generate(
    params: CandidateParams = PARAMS,
    users: pd.DataFrame = USERS,
    als_scores: dict[str, float] | None = None,
) -> pd.DataFrame:
    als = _als(als_scores)
    index = build_item_index(als.item_ids, als.item_factors)
    return generate_candidates(users, AS_OF, als, index, _popular(), CATALOG, SEEN, params)


def _rows(frame: pd.DataFrame, user: str) -> list[tuple[str, str, int]]:
    mine = frame[frame["user_id"] == user]
    return list(zip(mine["item_id"], mine["source"], mine["retrieval_rank"], strict=True))


def test_warm_user_gets_sources_in_priority_order() -> None:
    out = _generate()

    assert _rows(out, "warm") == [
        ("a2", "als", 0),
        ("a3", "als", 1),
        ("a4", "als", 2),
        ("p1", "popular", 0),
        ("f1", "popular", 1),
        ("p2", "popular", 2),
        ("f2", "fresh", 0),
        ("f3", "fresh", 1),
    ]
    als_scores = out.loc[(out["user_id"] == "warm") & (out["source"] == "als"), "retrieval_score"]
    assert als_scores.tolist() == pytest.approx([5.0, 4.0, 3.0])
    assert list(out.columns) == [
        "user_id",
        "item_id",
        "source",
        "retrieval_score",
        "retrieval_rank",
        "rank_als",
        "rank_ease",
        "rank_two_tower",
        "rank_popular",
        "rank_fresh",
    ]


def test_rank_columns_hold_each_sources_position_whoever_added_the_item() -> None:
    out = _generate().set_index(["user_id", "item_id"])

    # a2 was ALS's first and popularity's second pick (p1 ahead of it): ALS added it.
    a2 = out.loc[("warm", "a2")]
    assert (a2["source"], a2["rank_als"], a2["rank_popular"]) == ("als", 0.0, 1.0)
    assert np.isnan(a2["rank_fresh"])
    assert np.isnan(a2["rank_ease"])
    # f1 is popular (position 2) and the newest fresh item (position 0).
    f1 = out.loc[("warm", "f1")]
    assert (f1["source"], f1["rank_popular"], f1["rank_fresh"]) == ("popular", 2.0, 0.0)
    assert np.isnan(f1["rank_als"])


def test_ease_candidates_come_from_the_users_engaged_items() -> None:
    from fitpulse_orchestration.retrieval.ease import EaseParams, train_ease

    clicks = pd.DataFrame(
        {
            "user_id": [f"u{k}" for k in range(5) for _ in range(2)],
            "item_id": ["a1", "a5"] * 5,
            "event_type": "click",
            "ts": OLD,
        }
    )
    ease = train_ease(clicks, EaseParams(l2=1.0))
    als = _als()
    params = CandidateParams(n_als=0, n_ease=2, n_popular=0, n_fresh=0, cold_threshold=1)

    out = generate_candidates(USERS, AS_OF, als, None, _popular(), CATALOG, SEEN, params, ease=ease)

    # warm engaged with a1, which co-occurs with a5 only; cold's p1 is not in EASE's head.
    assert _rows(out, "warm") == [("a5", "ease", 0)]
    assert _rows(out, "cold") == []


def test_cold_user_gets_popular_and_fresh() -> None:
    out = _generate()

    assert _rows(out, "cold") == [
        ("a2", "popular", 0),
        ("f1", "popular", 1),
        ("p2", "popular", 2),
        ("f2", "fresh", 0),
        ("f3", "fresh", 1),
    ]


def test_seen_and_unpublished_items_never_returned() -> None:
    out = _generate(CandidateParams(n_als=50, n_popular=50, n_fresh=50))

    for user, seen in SEEN.items():
        assert not seen & set(out.loc[out["user_id"] == user, "item_id"])
    assert "late" not in set(out["item_id"])
    assert not out.duplicated(["user_id", "item_id"]).any()
    assert set(out["source"]) <= set(SOURCES)


@pytest.mark.parametrize(
    "params",
    [
        CandidateParams(n_als=1, n_popular=1, n_fresh=1, cold_n_popular=1),
        CandidateParams(n_als=2, n_popular=0, n_fresh=3, cold_n_popular=0),
        CandidateParams(n_als=0, n_popular=4, n_fresh=0, cold_n_popular=4),
    ],
    ids=str,
)
def test_quotas_respected(params: CandidateParams) -> None:
    out = _generate(params)

    counts = out.groupby(["user_id", "source"]).size()
    for (user, source), n in counts.items():
        assert n <= params.quotas(len(SEEN[user]))[source]
    for _, group in out.groupby(["user_id", "source"]):
        assert group["retrieval_rank"].tolist() == list(range(len(group)))


def test_generate_candidates_with_no_users() -> None:
    out = _generate(users=USERS.iloc[:0])

    assert out.empty
    assert "item_id" in out.columns


def test_unpublished_top_hits_do_not_shrink_als_quota() -> None:
    out = _generate(als_scores={**ALS_SCORES, "late": 10.0}, users=USERS.iloc[:1])

    assert out.loc[out["source"] == "als", "item_id"].tolist() == ["a2", "a3", "a4"]


def test_many_not_live_top_hits_are_searched_past() -> None:
    """More not-live items outrank the live ones than the first search asks for: searched again."""
    gone = {f"gone{k}": 20.0 + k for k in range(10)}  # ALS items no longer in the catalog
    out = _generate(als_scores={**ALS_SCORES, **gone, "late": 10.0}, users=USERS.iloc[:1])

    als_rows = out[out["source"] == "als"]
    assert als_rows["item_id"].tolist() == ["a2", "a3", "a4"]
    assert als_rows["rank_als"].tolist() == [0.0, 1.0, 2.0]


def test_fresh_items_window_newest_first() -> None:
    catalog = pd.DataFrame(
        {
            "item_id": ["edge", "b", "a", "now", "old", "future"],
            "published_at": [
                AS_OF - pd.Timedelta(days=3),
                AS_OF - pd.Timedelta(days=1),
                AS_OF - pd.Timedelta(days=1),
                AS_OF,
                AS_OF - pd.Timedelta(days=3, seconds=1),
                AS_OF + pd.Timedelta(hours=1),
            ],
            "item_type": "workout",
        }
    )

    fresh = fresh_items(catalog, AS_OF, 3.0)

    assert fresh["item_id"].tolist() == ["a", "b", "edge"]


def test_items_known_only_from_events_are_never_fresh() -> None:
    # complete_catalog gives such items their first event time as published_at; that is no
    # publication, and treating it as one made every first engagement look "brand new".
    catalog = pd.DataFrame(
        {
            "item_id": ["cat", "inferred"],
            "published_at": [AS_OF - pd.Timedelta(days=1)] * 2,
            "item_type": ["workout", "unknown"],
        }
    )

    assert fresh_items(catalog, AS_OF, 3.0)["item_id"].tolist() == ["cat"]


def test_seen_items_counts_engagements_before_as_of_only() -> None:
    events = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u1", "u2"],
            "item_id": ["clicked", "shown", "done", "later", "read"],
            "event_type": ["click", "impression", "workout_complete", "click", "article_read"],
            "ts": [
                AS_OF - pd.Timedelta(days=2),
                AS_OF - pd.Timedelta(days=2),
                AS_OF - pd.Timedelta(seconds=1),
                AS_OF,
                AS_OF - pd.Timedelta(days=9),
            ],
        }
    )

    assert seen_items(events, AS_OF) == {"u1": {"clicked", "done"}, "u2": {"read"}}


def test_quotas_depend_on_warmth() -> None:
    params = CandidateParams(
        n_als=7,
        n_two_tower=11,
        n_popular=13,
        n_fresh=17,
        cold_n_two_tower=19,
        cold_n_popular=23,
        cold_threshold=3,
    )

    warm = {"als": 7, "ease": 120, "two_tower": 11, "popular": 13, "fresh": 17}
    cold = {"als": 7, "ease": 120, "two_tower": 19, "popular": 23, "fresh": 17}
    assert params.quotas(3) == warm
    assert params.quotas(50) == warm
    assert params.quotas(2) == cold
    assert params.quotas(0) == cold
    assert set(CandidateParams().quotas(0)) == set(SOURCES)


def test_popular_quota_follows_warmth() -> None:
    params = CandidateParams(
        n_als=3, n_popular=1, n_fresh=0, cold_n_popular=4, cold_threshold=2, fresh_days=3.0
    )
    seen = {"warm": {"a1", "old-item"}, "cold": {"p1"}}
    als = _als()

    out = generate_candidates(
        USERS,
        AS_OF,
        als,
        build_item_index(als.item_ids, als.item_factors),
        _popular(),
        CATALOG,
        seen,
        params,
    )

    popular = out[out["source"] == "popular"].groupby("user_id").size()
    assert popular.to_dict() == {"warm": 1, "cold": 4}


# Two-tower item vectors (hand-set): the cold user's vector is e0, so a score is the first
# coordinate. "late" is not yet published and a2 is also an ALS hit of the warm user.
TT_SCORES = {"late": 9.0, "t1": 8.0, "p1": 7.0, "a2": 6.5, "t2": 6.0, "t3": 5.0, "t4": 4.0}
TT_CATALOG = pd.concat(
    [
        CATALOG,
        pd.DataFrame(
            {"item_id": ["t1", "t2", "t3", "t4"], "published_at": OLD, "item_type": "workout"}
        ),
    ],
    ignore_index=True,
)


def _tt_index(scores: dict[str, float] = TT_SCORES) -> ItemIndex:
    items = np.array(list(scores))
    return build_item_index(items, np.array([[scores[i], 0.0] for i in items], dtype=np.float32))


def _tt_generate(
    catalog: pd.DataFrame, params: CandidateParams, tt_index: ItemIndex | None
) -> pd.DataFrame:
    als = _als()
    user_vectors = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    return generate_candidates(
        USERS,
        AS_OF,
        als,
        build_item_index(als.item_ids, als.item_factors),
        _popular(),
        catalog,
        {"warm": {"a1", "x1"}, "cold": {"p1"}},
        params,
        user_vectors=None if tt_index is None else user_vectors,
        tt_index=tt_index,
    )


def test_cold_user_gets_two_tower_candidates() -> None:
    params = CandidateParams(
        n_als=3, n_two_tower=1, n_popular=1, n_fresh=1, cold_n_two_tower=3, cold_threshold=2
    )

    out = _tt_generate(TT_CATALOG, params, _tt_index())
    without = _tt_generate(TT_CATALOG, params, None)

    cold = out[(out["user_id"] == "cold") & (out["source"] == "two_tower")]
    assert cold["item_id"].tolist() == ["t1", "a2", "t2"]
    assert cold["retrieval_rank"].tolist() == [0, 1, 2]
    assert cold["retrieval_score"].tolist() == pytest.approx([8.0, 6.5, 6.0])
    warm = out[out["user_id"] == "warm"]
    assert warm.loc[warm["source"] == "two_tower", "item_id"].tolist() == ["t1"]
    assert warm.loc[warm["item_id"] == "a2", "source"].tolist() == ["als"]
    assert "two_tower" not in set(without["source"])
    assert not out.duplicated(["user_id", "item_id"]).any()


def test_two_tower_needs_one_vector_per_user() -> None:
    als = _als()

    with pytest.raises(ValueError, match="one row per user"):
        generate_candidates(
            USERS,
            AS_OF,
            als,
            None,
            _popular(),
            TT_CATALOG,
            SEEN,
            PARAMS,
            user_vectors=np.ones((1, 2), dtype=np.float32),
            tt_index=_tt_index(),
        )


def test_live_mask_excludes_taken_down_and_future_items() -> None:
    catalog = pd.DataFrame(
        {
            "item_id": ["ok", "no-status", "unpublished", "flagged", "now", "future"],
            "published_at": [OLD, OLD, OLD, OLD, AS_OF, AS_OF + pd.Timedelta(hours=1)],
            "status": ["published", None, "unpublished", "flagged", "published", "published"],
        }
    )

    mask = live_mask(catalog, AS_OF)

    assert catalog.loc[mask, "item_id"].tolist() == ["ok", "no-status"]
    assert live_mask(catalog.drop(columns="status"), AS_OF).tolist() == [True] * 4 + [False] * 2


def test_taken_down_items_are_never_candidates() -> None:
    # One taken-down item per source: an ALS hit, a two-tower hit, a popular and a fresh item.
    taken_down = {"a3": "unpublished", "t1": "flagged", "p2": "flagged", "f2": "unpublished"}
    catalog = TT_CATALOG.assign(status=TT_CATALOG["item_id"].map(taken_down).fillna("published"))
    params = CandidateParams(
        n_als=50,
        n_two_tower=50,
        n_popular=50,
        n_fresh=50,
        cold_n_two_tower=50,
        cold_n_popular=50,
        cold_threshold=2,
    )

    out = _tt_generate(catalog, params, _tt_index())
    everything = _tt_generate(TT_CATALOG, params, _tt_index())

    assert not set(taken_down) & set(out["item_id"])
    assert set(taken_down) <= set(everything["item_id"])
    # No EASE model here: every other source contributes.
    assert set(out["source"]) == set(SOURCES) - {"ease"}
    assert set(out["item_id"]) == set(everything["item_id"]) - set(taken_down)


def test_taken_down_top_hits_do_not_shrink_two_tower_quota() -> None:
    # The two-tower index can hold items the catalog has taken down since it was built (a
    # model's own index before the live index catches up) while the catalog has live items
    # that the index does not hold (ALS-only and popular items here).
    scores = {"g1": 9.5, "g2": 9.4, "g3": 9.3, **TT_SCORES}
    catalog = pd.concat(
        [
            TT_CATALOG,
            pd.DataFrame(
                {
                    "item_id": ["g1", "g2", "g3"],
                    "published_at": OLD,
                    "item_type": "workout",
                    "status": "flagged",
                }
            ),
        ],
        ignore_index=True,
    )
    params = CandidateParams(
        n_als=3,
        n_two_tower=2,
        n_popular=0,
        n_fresh=0,
        cold_n_two_tower=2,
        cold_n_popular=0,
        cold_threshold=2,
    )

    out = _tt_generate(catalog, params, _tt_index(scores))

    cold = out[(out["user_id"] == "cold") & (out["source"] == "two_tower")]
    assert cold["item_id"].tolist() == ["t1", "a2"]


def test_ease_lists_past_not_live_items_and_the_items_als_took() -> None:
    from fitpulse_orchestration.retrieval.ease import EaseArtifacts, EaseParams

    # Hand-set weights from the warm user's a1: the not-yet-published "late" first, then the
    # items ALS also ranks first (a2, a3, a4), then a5 and p2.
    order = ["late", "a2", "a3", "a4", "a5", "p2"]
    item_ids = np.array(sorted(["a1", *order]))
    weights = np.zeros((len(item_ids), len(item_ids)), dtype=np.float32)
    row = int(np.searchsorted(item_ids, "a1"))
    for rank, item in enumerate(order):
        weights[row, int(np.searchsorted(item_ids, item))] = 10.0 - rank
    ease = EaseArtifacts(item_ids=item_ids, weights=weights, params=EaseParams())
    als = _als()
    params = CandidateParams(n_als=3, n_ease=2, n_popular=0, n_fresh=0, cold_threshold=1)

    out = generate_candidates(
        USERS.iloc[:1],
        AS_OF,
        als,
        build_item_index(als.item_ids, als.item_factors),
        _popular(),
        CATALOG,
        SEEN,
        params,
        ease=ease,
    )

    # EASE still adds its two: ALS's three items and the unpublished one take no place.
    assert _rows(out, "warm") == [
        ("a2", "als", 0),
        ("a3", "als", 1),
        ("a4", "als", 2),
        ("a5", "ease", 0),
        ("p2", "ease", 1),
    ]


def test_the_first_two_tower_search_is_bounded_and_a_short_member_searched_again() -> None:
    # Ten flagged items outrank every live one: more than the first search's slack.
    gone = {f"gone{k}": 20.0 + k for k in range(10)}
    catalog = pd.concat(
        [
            TT_CATALOG,
            pd.DataFrame(
                {
                    "item_id": list(gone),
                    "published_at": OLD,
                    "item_type": "workout",
                    "status": "flagged",
                }
            ),
        ],
        ignore_index=True,
    )
    index = _tt_index({**gone, **TT_SCORES})
    searches: list[tuple[int, int]] = []
    search = index.search

    def recording(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        searches.append((len(queries), k))
        return search(queries, k)

    index.search = recording  # type: ignore[method-assign]
    params = CandidateParams(
        n_als=3, n_two_tower=2, n_popular=0, n_fresh=0, cold_n_two_tower=2, cold_threshold=2
    )

    out = _tt_generate(catalog, params, index)

    # want 2 + 2 seen = 4; 11 not-live items (the ten and "late"): 4 more first, then one
    # search per member with all 11 as slack.
    assert searches == [(2, 8), (1, 15), (1, 15)]
    tt = out[out["source"] == "two_tower"]
    assert tt.loc[tt["user_id"] == "cold", "item_id"].tolist() == ["t1", "a2"]
    assert tt.loc[tt["user_id"] == "warm", "item_id"].tolist() == ["t1", "p1"]
