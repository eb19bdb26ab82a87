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
    seen_items,
)
from fitpulse_orchestration.retrieval.index import build_item_index

AS_OF = pd.Timestamp("2026-11-01", tz="UTC")
OLD = AS_OF - pd.Timedelta(days=30)
PARAMS = CandidateParams(n_als=3, n_popular=3, n_fresh=2, fresh_days=3.0)

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
    ]


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
    [CandidateParams(1, 1, 1), CandidateParams(2, 0, 3), CandidateParams(0, 4, 0)],
    ids=str,
)
def test_quotas_respected(params: CandidateParams) -> None:
    out = _generate(params)

    counts = out.groupby(["user_id", "source"]).size()
    quota = {"als": params.n_als, "popular": params.n_popular, "fresh": params.n_fresh}
    for (_, source), n in counts.items():
        assert n <= quota[source]
    for _, group in out.groupby(["user_id", "source"]):
        assert group["retrieval_rank"].tolist() == list(range(len(group)))


def test_generate_candidates_with_no_users() -> None:
    out = _generate(users=USERS.iloc[:0])

    assert out.empty
    assert "item_id" in out.columns


def test_unpublished_top_hits_do_not_shrink_als_quota() -> None:
    out = _generate(als_scores={**ALS_SCORES, "late": 10.0}, users=USERS.iloc[:1])

    assert out.loc[out["source"] == "als", "item_id"].tolist() == ["a2", "a3", "a4"]


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
