"""The home-feed pipeline: retrieve, featurize, score, re-rank.

The same functions serve offline evaluation, batch recommendations and (later) online serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fitpulse_orchestration.features.point_in_time import FeatureInputs, attach_features
from fitpulse_orchestration.features.reference import (
    profile_attributes,
    publication_times,
    unsafe_for_beginners,
)
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
    SOURCE_CODES,
    CandidateParams,
    generate_candidates,
    seen_items,
)
from fitpulse_orchestration.retrieval.index import ItemIndex, build_item_index
from fitpulse_orchestration.retrieval.live_index import build_two_tower_index
from fitpulse_orchestration.retrieval.popularity import PopularityParams, compute_popular_items
from fitpulse_orchestration.retrieval.two_tower import TwoTowerArtifacts, history_inputs


@dataclass
class HomeFeedModel:
    """Everything needed to build feeds: retrieval artifacts, popularity, ranker, settings.

    ``index`` is None when the FAISS index is unavailable: feeds then come from the other
    sources only (still ranked). ``two_tower`` and ``tt_index`` are the two-tower towers and the
    index of item embeddings built at training time (serving prefers the live index, see
    ``retrieval.live_index``); None in bundles made before the two-tower existed.
    """

    als: AlsArtifacts
    index: ItemIndex | None
    popular: pd.DataFrame
    ranker: RankerArtifacts
    candidate_params: CandidateParams = field(default_factory=CandidateParams)
    rerank_params: RerankParams = field(default_factory=RerankParams)
    two_tower: TwoTowerArtifacts | None = None
    tt_index: ItemIndex | None = None


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
        *two_tower_queries(model.two_tower, model.tt_index, inputs, users, as_of),
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


def two_tower_queries(
    two_tower: TwoTowerArtifacts | None,
    tt_index: ItemIndex | None,
    inputs: FeatureInputs,
    users: pd.DataFrame,
    as_of: pd.Timestamp,
) -> tuple[np.ndarray | None, ItemIndex | None]:
    """Two-tower query vectors of ``users`` as of ``as_of`` and the index to search."""
    if two_tower is None or tt_index is None:
        return None, None
    user_ids = users["user_id"].astype(str).to_numpy()
    x = history_inputs(inputs.events, inputs.catalog, inputs.profiles, user_ids, as_of)
    return two_tower.embed_users(x), tt_index


def source_codes(sources: pd.Series) -> np.ndarray:
    """The ranker's ``x_source`` feature of candidate ``source`` labels (0: not retrieved)."""
    return sources.map(SOURCE_CODES).fillna(0.0).to_numpy(dtype=float)


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
    featured["x_source"] = source_codes(featured["source"])
    featured["score"] = score_candidates(model.ranker, featured)
    return featured


def retrieval_sources(
    inputs: FeatureInputs,
    user_ids: np.ndarray,
    as_of: pd.Timestamp,
    als: AlsArtifacts,
    two_tower: TwoTowerArtifacts | None,
    params: CandidateParams,
) -> pd.DataFrame:
    """Which source would have retrieved each item for each user at ``as_of``.

    The candidate generation of serving, run once as of the start of the ranker's window with
    models that saw only earlier events, so training examples get the ``x_source`` feature the
    ranker sees at serving.

    Returns:
        ``user_id``, ``item_id``, ``source``.
    """
    users = profile_attributes(inputs.profiles, pd.unique(pd.Series(user_ids).astype(str)))
    index = build_item_index(als.item_ids, als.item_factors) if len(als.item_ids) else None
    tt_index = build_two_tower_index(two_tower, inputs.catalog) if two_tower else None
    popular = compute_popular_items(inputs.events, inputs.profiles, as_of, PopularityParams())
    candidates = generate_candidates(
        users,
        as_of,
        als,
        index,
        popular,
        inputs.catalog,
        seen_items(inputs.events, as_of),
        params,
        *two_tower_queries(two_tower, tt_index, inputs, users, as_of),
    )
    return candidates[["user_id", "item_id", "source"]]


def build_ranker_training_frame(
    inputs: FeatureInputs,
    examples: pd.DataFrame,
    split: TimeSplit,
    als_params: AlsParams,
    two_tower: TwoTowerArtifacts | None = None,
    candidate_params: CandidateParams | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Features of every labelled example, as of the example's own timestamp.

    The ``als_score`` feature comes from an ALS trained on events before ``split.ranker_start``
    only, so no example's score was fitted on its own outcome. ``x_source`` is the source
    that would have retrieved the item for the user at ``split.ranker_start``
    (``retrieval_sources``; ``two_tower`` must be trained on events before it too).

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
    sources = retrieval_sources(
        inputs,
        frame["user_id"].to_numpy(),
        split.ranker_start,
        feature_als,
        two_tower,
        candidate_params or CandidateParams(),
    )
    key = ["user_id", "item_id"]
    found = frame[key].merge(sources, on=key, how="left")["source"]
    frame["x_source"] = source_codes(found)
    stats = {
        "examples": float(len(frame)),
        "groups": float(frame["group_id"].nunique()),
        "positive_share": float((frame["label"] > 0).mean()) if len(frame) else 0.0,
        "als_score_coverage": float(np.isfinite(frame["als_score"]).mean()) if len(frame) else 0.0,
        "retrieved_share": float((frame["x_source"] > 0).mean()) if len(frame) else 0.0,
    }
    return frame, stats
