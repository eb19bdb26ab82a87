"""The home-feed pipeline: retrieve, featurize, score, re-rank.

The same functions serve offline evaluation, batch recommendations and (later) online serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fitpulse_orchestration.features.point_in_time import FeatureInputs, attach_features
from fitpulse_orchestration.features.reference import publication_times, unsafe_for_beginners
from fitpulse_orchestration.features.training import EXAMPLES_SCHEMA, TimeSplit
from fitpulse_orchestration.ranking.ranker import RankerArtifacts, score_candidates
from fitpulse_orchestration.ranking.rerank import RerankParams, rerank
from fitpulse_orchestration.retrieval.als import (
    AlsArtifacts,
    AlsParams,
    als_scores,
    build_interaction_matrix,
    train_als,
)
from fitpulse_orchestration.retrieval.candidates import (
    CandidateParams,
    generate_candidates,
    seen_items,
)
from fitpulse_orchestration.retrieval.index import ItemIndex


@dataclass
class HomeFeedModel:
    """Everything needed to build feeds: retrieval artifacts, popularity, ranker, settings.

    ``index`` is None when the FAISS index is unavailable: feeds then come from popular and
    fresh items only (still ranked).
    """

    als: AlsArtifacts
    index: ItemIndex | None
    popular: pd.DataFrame
    ranker: RankerArtifacts
    candidate_params: CandidateParams = field(default_factory=CandidateParams)
    rerank_params: RerankParams = field(default_factory=RerankParams)


@dataclass
class FeedResult:
    """Feeds and the scored candidate pools they were cut from.

    ``feeds``: ``user_id``, ``item_id``, ``rank``, ``score``, ``source``, ``category``,
    ``reason``. ``scored``: every candidate with its ranker ``score``. ``guardrails``: totals of
    items each rule removed.
    """

    feeds: pd.DataFrame
    scored: pd.DataFrame
    guardrails: dict[str, int]


def recently_completed(
    events: pd.DataFrame, as_of: pd.Timestamp, days: float
) -> dict[str, set[str]]:
    """Items each user completed in the ``days`` before ``as_of``."""
    lo = as_of - pd.Timedelta(days=days)
    ev = events[
        (events["event_type"] == "workout_complete") & (events["ts"] < as_of) & (events["ts"] >= lo)
    ]
    return {u: set(items) for u, items in ev.groupby("user_id")["item_id"]}


def build_feeds(
    model: HomeFeedModel,
    inputs: FeatureInputs,
    users: pd.DataFrame,
    as_of: pd.Timestamp,
) -> FeedResult:
    """Build a feed for each user of ``users`` (``user_id``, ``fitness_level``, ``region``).

    Raises:
        ValueError: when a user id appears more than once (its level would be ambiguous, and
            the beginner-safety rule must never guess).
    """
    duplicated = users["user_id"][users["user_id"].duplicated()]
    if not duplicated.empty:
        raise ValueError(
            f"{duplicated.nunique()} user ids appear more than once, e.g. {duplicated.iloc[0]!r}"
        )
    candidates = generate_candidates(
        users,
        as_of,
        model.als,
        model.index,
        model.popular,
        inputs.catalog,
        seen_items(inputs.events, as_of),
        model.candidate_params,
    )
    scored = score_frame(model, inputs, candidates, as_of)
    catalog = inputs.catalog.set_index("item_id")
    scored["category"] = scored["item_id"].map(catalog["category"]).fillna("unknown")
    # Inferred publish times (no catalog) are no publications: such items never take the
    # freshness slot.
    scored["published_at"] = scored["item_id"].map(publication_times(inputs.catalog))
    scored["unsafe_for_beginner"] = (
        scored["item_id"]
        .map(unsafe_for_beginners(inputs.catalog).set_axis(inputs.catalog["item_id"]))
        .fillna(True)
    )
    levels = users.set_index("user_id")["fitness_level"]
    completed = recently_completed(inputs.events, as_of, model.rerank_params.recent_days)
    feeds = []
    totals = {"unsafe_removed": 0, "recent_removed": 0, "category_capped": 0, "fresh_promoted": 0}
    for user_id, pool in scored.groupby("user_id", sort=False):
        feed, stats = rerank(
            pool,
            str(levels.get(user_id, "unknown")),
            completed.get(str(user_id), set()),
            as_of,
            model.rerank_params,
        )
        feed.insert(0, "user_id", user_id)
        feeds.append(feed)
        for key in totals:
            totals[key] += int(getattr(stats, key))
    columns = ["user_id", "item_id", "rank", "score", "source", "category", "reason"]
    out = pd.concat(feeds, ignore_index=True) if feeds else pd.DataFrame(columns=columns)
    return FeedResult(feeds=out[columns], scored=scored, guardrails=totals)


def score_frame(
    model: HomeFeedModel, inputs: FeatureInputs, candidates: pd.DataFrame, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Attach features and ALS scores to candidates and add the ranker's ``score``."""
    frame = candidates.assign(as_of=as_of)
    featured = attach_features(inputs, frame)
    featured["als_score"] = als_scores(
        model.als,
        featured["user_id"].to_numpy().astype(str),
        featured["item_id"].to_numpy().astype(str),
    )
    featured["score"] = score_candidates(model.ranker, featured)
    return featured


def build_ranker_training_frame(
    inputs: FeatureInputs,
    examples: pd.DataFrame,
    split: TimeSplit,
    als_params: AlsParams,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Features of every labelled example, as of the example's own timestamp.

    The ``als_score`` feature comes from an ALS trained on events before ``split.ranker_start``
    only, so no example's score was fitted on its own outcome.

    Returns:
        The frame (examples columns plus every feature) and counts for metadata.
    """
    EXAMPLES_SCHEMA.validate(examples)
    history = build_interaction_matrix(inputs.events, als_params, before=split.ranker_start)
    feature_als = train_als(history, als_params)
    frame = attach_features(inputs, examples)
    frame["als_score"] = als_scores(
        feature_als,
        frame["user_id"].to_numpy().astype(str),
        frame["item_id"].to_numpy().astype(str),
    )
    stats = {
        "examples": float(len(frame)),
        "groups": float(frame["group_id"].nunique()),
        "positive_share": float((frame["label"] > 0).mean()) if len(frame) else 0.0,
        "als_score_coverage": float(np.isfinite(frame["als_score"]).mean()) if len(frame) else 0.0,
    }
    return frame, stats
