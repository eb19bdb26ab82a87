"""The home-feed pipeline: retrieve, featurize, score, re-rank.

The same functions serve offline evaluation, batch recommendations and (later) online serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from fitpulse_orchestration.features.point_in_time import FeatureInputs, attach_features
from fitpulse_orchestration.features.reference import (
    profile_attributes,
    publication_times,
    unsafe_for_beginners,
)
from fitpulse_orchestration.features.training import EXAMPLES_SCHEMA
from fitpulse_orchestration.ranking.blend import Candidates, blend_scores
from fitpulse_orchestration.ranking.ranker import RankerArtifacts, score_candidates
from fitpulse_orchestration.ranking.rerank import RerankParams, rerank
from fitpulse_orchestration.retrieval.als import (
    AlsArtifacts,
    AlsParams,
    InteractionMatrix,
    als_scores,
    build_interaction_matrix,
    train_als,
)
from fitpulse_orchestration.retrieval.candidates import (
    SOURCE_CODES,
    CandidateParams,
    candidate_pools,
    generate_candidates,
    retrieve_candidates,
    seen_items,
)
from fitpulse_orchestration.retrieval.ease import EaseArtifacts, EaseParams, train_ease
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
    ``retrieval.live_index``). ``ease`` is the EASE item-item model (None: no EASE source).

    ``scorer`` orders the candidate pool: ``ranker`` (the LightGBM ranker) or ``blend`` (the
    ranker-free fusion of the sources with ``blend_weights``, and ``cold_blend_weights`` for
    members no history source listed anything for, ``ranking.blend``); training picks the one
    that wins on the validation split (``evaluation.selection``).
    """

    als: AlsArtifacts
    index: ItemIndex | None
    popular: pd.DataFrame
    ranker: RankerArtifacts
    candidate_params: CandidateParams = field(default_factory=CandidateParams)
    rerank_params: RerankParams = field(default_factory=RerankParams)
    two_tower: TwoTowerArtifacts | None = None
    tt_index: ItemIndex | None = None
    ease: EaseArtifacts | None = None
    scorer: str = "ranker"
    blend_weights: dict[str, float] = field(default_factory=dict)
    cold_blend_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {self.scorer!r}")
        if self.scorer == "blend" and not any(w > 0 for w in self.blend_weights.values()):
            raise ValueError("the blend scorer needs at least one positive weight")


SCORERS = ("ranker", "blend")


def model_scores(model: HomeFeedModel, featured: Candidates) -> np.ndarray:
    """The serving score of each candidate row by ``model.scorer``.

    ``featured`` holds the ranker's features for ``ranker`` and the ``RANK_COLUMNS`` for
    ``blend``, as a frame or its columns (the request path's); the ranker reads a frame.
    """
    if model.scorer == "blend":
        return blend_scores(featured, model.blend_weights, model.cold_blend_weights)
    return score_candidates(model.ranker, ranker_features(featured, model.ranker.feature_names))


def ranker_features(featured: Candidates, names: Sequence[str]) -> pd.DataFrame:
    """The frame a ranker scores: a frame as it is, columns as a frame of ``names`` alone.

    A request carries about twice as many columns as the ranker reads (keys, ranks, sources);
    a frame of all of them cost twice the time of one of ``names``.
    """
    if isinstance(featured, pd.DataFrame):
        return featured
    return pd.DataFrame({name: featured[name] for name in names})


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
    seen = seen_items(inputs.events, as_of)
    candidates = generate_candidates(
        users,
        as_of,
        model.als,
        model.index,
        model.popular,
        inputs.catalog,
        seen,
        model.candidate_params,
        *two_tower_queries(model.two_tower, model.tt_index, inputs, users, as_of),
        model.ease,
    )
    scored = score_frame(model, inputs, candidates, as_of)
    feeds, totals = cut_feeds(scored, inputs, users, as_of, model.rerank_params)
    return FeedResult(feeds=feeds, scored=scored, guardrails=totals)


def cut_feeds(
    scored: pd.DataFrame,
    inputs: FeatureInputs,
    users: pd.DataFrame,
    as_of: pd.Timestamp,
    params: RerankParams,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Each user's feed from their scored pool (``score_frame`` output) through the guardrails.

    Returns:
        The feeds (``FeedResult.feeds`` columns) and the guardrail totals.
    """
    levels = users.set_index("user_id")["fitness_level"]
    completed = recently_completed(inputs.events, as_of, params.recent_days)
    feeds = []
    totals = {"unsafe_removed": 0, "recent_removed": 0, "category_capped": 0, "fresh_promoted": 0}
    for user_id, pool in scored.groupby("user_id", sort=False):
        feed, stats = rerank(
            pool,
            str(levels.get(user_id, "unknown")),
            completed.get(str(user_id), set()),
            as_of,
            params,
        )
        feed.insert(0, "user_id", user_id)
        feeds.append(feed)
        for key in totals:
            totals[key] += int(getattr(stats, key))
    columns = ["user_id", "item_id", "rank", "score", "source", "category", "reason"]
    out = pd.concat(feeds, ignore_index=True) if feeds else pd.DataFrame(columns=columns)
    return out[columns], totals


def fallback_feeds(
    popular: pd.DataFrame,
    inputs: FeatureInputs,
    users: pd.DataFrame,
    as_of: pd.Timestamp,
    params: RerankParams,
) -> pd.DataFrame:
    """The feeds the service serves while no model can: popularity and fresh items, guarded.

    As ``FeedService`` builds its labelled ``popularity`` fallback: the default quotas of segment
    popularity and fresh items, seen items removed, retrieval order as the score, then the
    guardrails. ``popular`` is the ``fallback_popular_items`` table.

    Returns:
        ``cut_feeds``' feed columns.
    """
    quotas = CandidateParams()
    pools = candidate_pools(None, popular, inputs.catalog, as_of, quotas)
    seen = seen_items(inputs.events, as_of)
    pool = retrieve_candidates(users, None, None, pools, seen, quotas)
    # Retrieval order is the fallback order: sources by priority, then their own rank.
    pool["score"] = -np.arange(len(pool), dtype=float)
    pool = attach_guardrail_attributes(pool, inputs.catalog)
    feeds, _ = cut_feeds(pool, inputs, users, as_of, params)
    return feeds


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


def source_codes(sources: pd.Series | np.ndarray) -> np.ndarray:
    """The ranker's ``x_source`` feature of candidate ``source`` labels (0: not retrieved)."""
    return np.fromiter((SOURCE_CODES.get(s, 0.0) for s in sources), dtype=float, count=len(sources))


def score_frame(
    model: HomeFeedModel, inputs: FeatureInputs, candidates: pd.DataFrame, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Attach features, ALS scores and item attributes to candidates and add the ``score``.

    The guardrails' attributes (``category``, ``published_at``, ``unsafe_for_beginner``) are
    attached too, so ``cut_feeds`` can re-cut the same pool under another score.
    """
    frame = candidates.assign(as_of=as_of)
    featured = attach_features(inputs, frame)
    featured["als_score"] = als_scores(
        model.als,
        featured["user_id"].to_numpy().astype(str),
        featured["item_id"].to_numpy().astype(str),
    )
    featured["x_source"] = source_codes(featured["source"])
    featured["score"] = model_scores(model, featured)
    return attach_guardrail_attributes(featured, inputs.catalog)


def attach_guardrail_attributes(pool: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """``pool`` with the item attributes the guardrails read, from the completed catalog.

    Adds ``category`` (``unknown`` when absent), ``published_at`` and ``unsafe_for_beginner``
    (True for an item the catalog does not know: safety never guesses).
    """
    by_id = catalog.set_index("item_id")
    pool["category"] = pool["item_id"].map(by_id["category"]).fillna("unknown")
    # Inferred publish times (no catalog) are no publications: such items never take the
    # freshness slot.
    pool["published_at"] = pool["item_id"].map(publication_times(catalog))
    pool["unsafe_for_beginner"] = (
        pool["item_id"].map(unsafe_for_beginners(catalog).set_axis(catalog["item_id"])).fillna(True)
    )
    return pool


@dataclass
class ValidationModels:
    """Retrieval models fitted on the split's fit part only, as of ``as_of``.

    What the ranker's examples, the hyper-parameter search and the scorer choice see: none of
    them was fitted on a validation or held-out event. ``as_of`` is ``split.ranker_start``.
    """

    als: AlsArtifacts
    index: ItemIndex | None
    ease: EaseArtifacts | None
    two_tower: TwoTowerArtifacts | None
    tt_index: ItemIndex | None
    popular: pd.DataFrame
    as_of: pd.Timestamp

    def feed_model(
        self,
        ranker: RankerArtifacts,
        candidate_params: CandidateParams,
        rerank_params: RerankParams,
        scorer: str = "ranker",
        blend_weights: dict[str, float] | None = None,
        cold_blend_weights: dict[str, float] | None = None,
    ) -> HomeFeedModel:
        """These models assembled into a feed model with ``ranker`` and the given settings."""
        return HomeFeedModel(
            als=self.als,
            index=self.index,
            popular=self.popular,
            ranker=ranker,
            candidate_params=candidate_params,
            rerank_params=rerank_params,
            two_tower=self.two_tower,
            tt_index=self.tt_index,
            ease=self.ease,
            scorer=scorer,
            blend_weights=dict(blend_weights or {}),
            cold_blend_weights=dict(cold_blend_weights or {}),
        )


def fit_validation_models(
    fit_inputs: FeatureInputs,
    as_of: pd.Timestamp,
    als_params: AlsParams,
    ease_params: EaseParams,
    two_tower: TwoTowerArtifacts | None,
    popularity_params: PopularityParams,
    fitted_als: AlsArtifacts | None = None,
) -> ValidationModels:
    """ALS (and its index), EASE and popularity on ``fit_inputs`` before ``as_of``.

    ``two_tower`` must already be trained on the same part; its index is built here.
    ``fitted_als`` (the search's fit of the chosen parameters, ``TuningResult.als_model``) is
    used instead of fitting ALS again when it was fitted with ``als_params`` on this very
    matrix (same users, items and confidences); otherwise ALS is fitted here.
    """
    before = fit_inputs.events[fit_inputs.events["ts"] < as_of]
    matrix = build_interaction_matrix(before, als_params)
    if fitted_als is not None and _fitted_on(fitted_als, matrix, als_params):
        als = fitted_als
    else:
        als = train_als(matrix, als_params)
    return ValidationModels(
        als=als,
        index=build_item_index(als.item_ids, als.item_factors) if len(als.item_ids) else None,
        ease=train_ease(before, ease_params),
        two_tower=two_tower,
        tt_index=build_two_tower_index(two_tower, fit_inputs.catalog) if two_tower else None,
        popular=compute_popular_items(before, fit_inputs.profiles, as_of, popularity_params),
        as_of=as_of,
    )


def _fitted_on(als: AlsArtifacts, matrix: InteractionMatrix, params: AlsParams) -> bool:
    """Whether ``als`` was fitted with ``params`` on exactly ``matrix``."""
    return (
        als.params == params
        and np.array_equal(als.user_ids, matrix.user_ids)
        and np.array_equal(als.item_ids, matrix.item_ids)
        and als.seen.shape == matrix.matrix.shape
        and (als.seen != matrix.matrix).nnz == 0
    )


def retrieval_sources(
    inputs: FeatureInputs,
    user_ids: np.ndarray,
    models: ValidationModels,
    params: CandidateParams,
) -> pd.DataFrame:
    """Which source would have retrieved each item for each user at ``models.as_of``.

    The candidate generation of serving, run once with models that saw only the fit part, so
    training examples get the ``x_source`` feature the ranker sees at serving.

    Returns:
        ``user_id``, ``item_id``, ``source``.
    """
    users = profile_attributes(inputs.profiles, pd.unique(pd.Series(user_ids).astype(str)))
    as_of = models.as_of
    candidates = generate_candidates(
        users,
        as_of,
        models.als,
        models.index,
        models.popular,
        inputs.catalog,
        seen_items(inputs.events, as_of),
        params,
        *two_tower_queries(models.two_tower, models.tt_index, inputs, users, as_of),
        models.ease,
    )
    return candidates[["user_id", "item_id", "source"]]


def build_ranker_training_frame(
    inputs: FeatureInputs,
    examples: pd.DataFrame,
    models: ValidationModels,
    candidate_params: CandidateParams | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Features of every labelled example, as of the example's own timestamp.

    ``inputs`` are the events examples' features may see (``TrainingSnapshot.example_inputs``).
    The ``als_score`` feature comes from the validation ALS, so no example's score was fitted on
    its own outcome. ``x_source`` is the source that would have retrieved the item for the user
    at ``models.as_of`` (``retrieval_sources``).

    Returns:
        The frame (examples columns plus every feature) and counts for metadata.
    """
    EXAMPLES_SCHEMA.validate(examples)
    frame = attach_features(inputs, examples)
    frame["als_score"] = als_scores(
        models.als,
        frame["user_id"].to_numpy().astype(str),
        frame["item_id"].to_numpy().astype(str),
    )
    sources = retrieval_sources(
        inputs, frame["user_id"].to_numpy(), models, candidate_params or CandidateParams()
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


def refit_feed_model(
    model: HomeFeedModel,
    inputs: FeatureInputs,
    as_of: pd.Timestamp,
    als_params: AlsParams,
    ease_params: EaseParams,
    popularity_params: PopularityParams,
) -> HomeFeedModel:
    """``model`` with ALS, its index, EASE and popularity refit on every event before ``as_of``.

    The version that serves should have seen the latest days: the evaluated model learned only
    from what preceded its held-out part. The refit keeps everything the evaluation judged
    except the data: the same hyper-parameters, candidate quotas, guardrails and scorer. The
    two-tower and the ranker are kept as trained: both are functions of content, profiles,
    histories and scores rather than of ids (the two-tower embeds any item from its content
    and any user from their history at request time), so they apply to the new data as they
    are.
    """
    before = inputs.events[inputs.events["ts"] < as_of]
    als = train_als(build_interaction_matrix(before, als_params), als_params)
    return replace(
        model,
        als=als,
        index=build_item_index(als.item_ids, als.item_factors) if len(als.item_ids) else None,
        ease=train_ease(before, ease_params) if model.ease is not None else None,
        popular=compute_popular_items(before, inputs.profiles, as_of, popularity_params),
    )
