"""The stages of one home-feed request, each a function of the request in flight.

``PIPELINE`` lists them in order: lookup, retrieval, features, ranking, rerank. Each stage
reads what the earlier ones left on the ``FeedRequest`` and adds its own part; a stage that
fails leaves a labelled fallback (``feed_types.FALLBACKS``) instead of raising. The optional
stages (features and ranking) run only while there is a model, candidates and time: once a
checked stage overruns its budget or the request its deadline, the feed is cut from what
exists (``deadline_exceeded``). ``FeedService`` runs the pipeline; ``respond`` turns the
finished request into the response.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

import numpy as np
import pandas as pd

from fitpulse_orchestration.features.online import UserHistory, cross_feature_columns
from fitpulse_orchestration.features.point_in_time import ITEM_FEATURES, USER_FEATURES
from fitpulse_orchestration.ranking.feed import (
    HomeFeedModel,
    model_scores,
    ranker_features,
    source_codes,
)
from fitpulse_orchestration.ranking.rerank import Reranked, RerankParams, RerankPool, rerank_pool
from fitpulse_orchestration.retrieval.als import als_scores
from fitpulse_orchestration.retrieval.candidates import CandidateParams, retrieve_columns
from fitpulse_orchestration.retrieval.two_tower import request_inputs
from fitpulse_orchestration.serving.budget import StageClock
from fitpulse_orchestration.serving.experiments import Assignment
from fitpulse_orchestration.serving.feed_state import ItemRows, LoadedModel, ServingState
from fitpulse_orchestration.serving.feed_types import FeedItem, FeedResponse, ServingConfig
from fitpulse_orchestration.storage.online_store import (
    OnlineFeatureStore,
    OnlineStoreUnavailableError,
)

log = logging.getLogger(__name__)


class StageBackend(Protocol):
    """What the stages read besides the request: the online store and the user lookup."""

    store: OnlineFeatureStore

    def lookup_user(self, pid: str) -> tuple[UserHistory | None, dict[str, float], bool]:
        """The user's history, user feature values and whether the store answered."""
        ...


@dataclass
class FeedRequest:
    """One request in flight: its inputs, and what each stage has left so far."""

    state: ServingState
    loaded: LoadedModel
    assignment: Assignment
    user_id: str
    n: int
    request_id: str
    pid: str
    now: pd.Timestamp
    model: HomeFeedModel | None
    clock: StageClock
    fallbacks: list[str] = field(default_factory=list)
    history: UserHistory = field(default_factory=UserHistory)
    cold: bool = True
    user_values: dict[str, float] = field(default_factory=dict)
    store_ok: bool = True
    candidates: dict[str, np.ndarray] | None = None
    """The candidates as columns (``retrieve_columns``) with their ``score``, from
    ``retrieval`` (and ``ranking``). Arrays, not a frame: per request a frame's construction
    and column reads cost more than the re-rank."""
    attrs: ItemRows | None = None
    """Catalog attributes of ``candidates``, row for row."""
    featured: dict[str, np.ndarray] | None = None
    """The ranker's features of ``candidates``, as columns (``feature_columns``)."""
    ranked: bool = False
    log_features: bool = False
    """The request is in the served log's feature sample (``ServingConfig.feature_log_share``)."""
    stopped: bool = False
    """A checked stage overran: the optional stages are skipped."""
    pool: RerankPool | None = None
    """What the guardrails cut the feed from: ``candidates`` as arrays."""
    feed: Reranked | None = None
    """The guardrails' feed, as rows of ``candidates`` (and of ``pool``)."""

    def fall_back(self, reason: str) -> None:
        """Record a fallback (once)."""
        if reason not in self.fallbacks:
            self.fallbacks.append(reason)

    @property
    def level(self) -> str:
        """The user's fitness level as the store knows it (``unknown`` when it does not)."""
        return self.history.fitness_level

    @property
    def optional_stages_run(self) -> bool:
        """A model, candidates and time are left for features and ranking."""
        return (
            self.model is not None
            and not self.stopped
            and self.candidates is not None
            and len(self.candidates["item_id"]) > 0
        )


def lookup(backend: StageBackend, req: FeedRequest) -> None:
    """The user's history and features from the online store (defaults when it is down)."""
    history, req.user_values, req.store_ok = backend.lookup_user(req.pid)
    if not req.store_ok:
        req.fall_back("features_unavailable")
    req.cold = history is None
    req.history = history or UserHistory()


def retrieval(backend: StageBackend, req: FeedRequest) -> None:
    """Candidates from every source of the version, else the popularity fallback's."""
    state, loaded, model = req.state, req.loaded, req.model
    candidates = None
    if model is not None:
        no_two_tower = model.two_tower is not None and state.two_tower_index(loaded) is None
        if model.index is None or no_two_tower:
            req.fall_back("index_unavailable")
        try:
            candidates = retrieve_for(state, loaded, req.pid, req.history)
        except Exception:
            log.exception("retrieval failed for version %s", loaded.version)
            candidates = None
    if candidates is None:
        req.model = None
        req.fall_back("model_unavailable")
        candidates = retrieve_columns(
            [req.pid],
            [req.level],
            [req.history.region],
            None,
            None,
            state.fallback_pools,
            {req.pid: req.history.engaged},
            CandidateParams(),
        )
    req.attrs = state.catalog.attributes(candidates["item_id"])
    # Retrieval order is the fallback order: sources by priority, then their own rank.
    candidates["score"] = -np.arange(len(candidates["item_id"]), dtype=float)
    req.candidates = candidates


def features(backend: StageBackend, req: FeedRequest) -> None:
    """Ranker features of the candidates (NaN where the item lookup failed).

    A blend scorer orders by the retrieval ranks alone: its features are computed only for a
    request in the served log's feature sample, which the skew monitor compares with offline.
    """
    assert req.model is not None
    assert req.attrs is not None
    assert req.candidates is not None
    if req.model.scorer == "blend" and not req.log_features:
        return
    req.featured, ok = feature_columns(
        backend.store,
        req.model,
        req.candidates,
        req.attrs,
        req.history,
        req.user_values,
        req.store_ok,
    )
    if not ok:
        req.fall_back("features_unavailable")


def ranking(backend: StageBackend, req: FeedRequest) -> None:
    """The ranker's scores replace the retrieval order (kept when scoring fails).

    A ranker scorer scores with its compiled trees (``ranking.compiled``), a blend as offline.
    """
    assert req.model is not None
    assert req.candidates is not None
    compiled = req.loaded.compiled if req.model is req.loaded.model else None
    # A blend without features (``features``) scores the candidates' retrieval ranks; a blend
    # reads columns, and only the ranker needs its features as a frame.
    featured = req.candidates if req.featured is None else req.featured
    try:
        if compiled is not None:
            req.candidates["score"] = compiled.score(
                ranker_features(featured, compiled.feature_names)
            )
        else:
            req.candidates["score"] = model_scores(req.model, featured)
        req.ranked = True
    except Exception:
        req.fall_back("model_unavailable")


def rerank_stage(backend: StageBackend, req: FeedRequest) -> None:
    """The guardrails cut the feed: diversity, freshness, beginner safety, recent repeats."""
    if req.stopped:
        req.fall_back("deadline_exceeded")
    attrs = req.attrs
    assert attrs is not None
    candidates = req.candidates
    assert candidates is not None
    req.pool = pool = RerankPool(
        item_ids=candidates["item_id"],
        scores=np.asarray(candidates["score"], dtype=float),
        sources=candidates["source"],
        categories=attrs.category,
        unsafe=attrs.unsafe_for_beginner,
        published=attrs.published_at,
    )
    model = req.model
    params = model.rerank_params if model is not None else default_rerank(req.state)
    # A level serving does not know gets the beginner rule (``treated_as_beginner``).
    req.feed = rerank_pool(
        pool,
        req.level,
        set(req.history.completed_recent),
        req.now,
        replace(params, n=req.n, **dict(req.assignment.rerank)),
    )


@dataclass(frozen=True)
class Stage:
    """One step of ``PIPELINE``.

    Attributes:
        name: its name in ``feed_types.STAGES``, ``StageBudgets`` and the response's timings.
        run: the stage function.
        optional: runs only while ``FeedRequest.optional_stages_run``.
        checked: its budget and the deadline are checked when it ends.
    """

    name: str
    run: Callable[[StageBackend, FeedRequest], None]
    optional: bool = False
    checked: bool = False


PIPELINE: Final = (
    Stage("lookup", lookup),
    Stage("retrieval", retrieval, checked=True),
    Stage("features", features, optional=True, checked=True),
    Stage("ranking", ranking, optional=True, checked=True),
    Stage("rerank", rerank_stage),
)
"""The request's stages in order."""


def run_pipeline(backend: StageBackend, req: FeedRequest) -> None:
    """Run every stage of ``PIPELINE`` that applies, timing each on the request's clock."""
    for stage in PIPELINE:
        if stage.optional and not req.optional_stages_run:
            continue
        with req.clock.stage(stage.name):
            stage.run(backend, req)
        if stage.checked and req.clock.overran(stage.name):
            req.stopped = True


def respond(req: FeedRequest, config: ServingConfig) -> FeedResponse:
    """The response of a finished request: the compact items, and the served rows on demand.

    The served rows (a frame) are built when first read: by the served log's writer thread,
    off the request path.
    """
    feed = req.feed
    assert feed is not None
    assert req.attrs is not None
    assert req.candidates is not None
    rows = feed.rows
    item_ids = req.candidates["item_id"][rows]
    attrs = req.attrs.take(rows)
    items = [
        FeedItem(
            id=str(item),
            type=str(kind),
            title=short_title(title, config.title_chars),
            reason=reason,
        )
        for item, kind, title, reason in zip(
            item_ids,
            attrs.item_type,
            req.state.catalog.titles(attrs.row),
            feed.reasons,
            strict=True,
        )
    ]
    pool, featured = req.pool, req.featured if req.ranked else None
    assert pool is not None

    def served_rows() -> dict[str, np.ndarray]:
        return served_columns(pool, feed, featured)

    return FeedResponse(
        request_id=req.request_id,
        user_id=req.user_id,
        variant=req.assignment.variant,
        experiment=req.assignment.experiment,
        model_version=req.loaded.version if req.model is not None else "popularity",
        items=items,
        fallbacks=list(req.fallbacks),
        cold=req.cold,
        as_of=req.now,
        stage_ms=dict(req.clock.stage_ms),
        served_rows=served_rows,
        fitness_level=req.level,
        pseudo_id=req.pid,
        ranked=req.ranked,
    )


def served_columns(
    pool: RerankPool, feed: Reranked, featured: Mapping[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """The served rows of a feed as columns, the feed's items in order.

    Columns: the feed's (``RerankPool.feed_columns``), ``unsafe_for_beginner``, then (when
    ranked) every other column of ``featured``, whose rows are the pool's. Arrays, not a frame:
    the served log's writer thread builds one frame per write from them.
    """
    rows = feed.rows
    served = pool.feed_columns(feed)
    served["unsafe_for_beginner"] = pool.unsafe[rows]
    if featured is not None:
        served.update({c: v[rows] for c, v in featured.items() if c not in served})
    return served


def feature_columns(
    store: OnlineFeatureStore,
    model: HomeFeedModel,
    candidates: Mapping[str, np.ndarray],
    attrs: ItemRows,
    history: UserHistory,
    user_values: dict[str, float],
    store_ok: bool,
) -> tuple[dict[str, np.ndarray], bool]:
    """Ranker features of the candidates as columns; False when the item lookup failed."""
    item_ids = np.asarray(candidates["item_id"]).astype(str)
    n = len(item_ids)
    ok = store_ok
    values = np.full((n, len(ITEM_FEATURES)), np.nan)
    names: tuple[str, ...] = ITEM_FEATURES
    if store_ok:
        try:
            values, names = store.lookup_values("item", list(item_ids))
        except (OnlineStoreUnavailableError, LookupError):
            ok = False
    # Whole columns (a frame is built from them only where the ranker scores): the candidates'
    # columns, then the item, user and cross features, the ALS score and the source code.
    columns: dict[str, np.ndarray] = {c: np.asarray(v) for c, v in candidates.items()}
    for j, name in enumerate(names):
        columns[name] = values[:, j]
    for col in USER_FEATURES:
        columns[col] = np.full(n, user_values[col])
    columns.update(cross_feature_columns(history, item_ids, attrs.category, attrs.difficulty))
    pid = str(candidates["user_id"][0])
    columns["als_score"] = als_scores(model.als, np.full(n, pid, dtype=object), item_ids)
    columns["x_source"] = source_codes(columns["source"])
    return columns, ok


def retrieve_for(
    state: ServingState, loaded: LoadedModel, pid: str, history: UserHistory
) -> dict[str, np.ndarray] | None:
    """Candidates of member ``pid`` from every source of ``loaded`` (``retrieve_columns``).

    The two-tower query comes from the user's profile and engaged items (the request path of
    ``two_tower.history_inputs``) and searches the live index when it belongs to this version.
    None when the version has no retrieval lookups.
    """
    model = loaded.model
    if model is None or loaded.pools is None:
        return None
    tt_index = state.two_tower_index(loaded)
    user_vectors = None
    if model.two_tower is not None and tt_index is not None:
        engaged = np.array(sorted(history.engaged), dtype=object)
        user_vectors = model.two_tower.embed_users(
            request_inputs(
                history.fitness_level,
                history.region,
                state.catalog.token_codes(engaged),
                len(engaged),
            )
        )
    return retrieve_columns(
        [pid],
        [history.fitness_level],
        [history.region],
        model.als,
        model.index,
        loaded.pools,
        {pid: history.engaged},
        model.candidate_params,
        user_vectors,
        tt_index,
        model.ease,
    )


def default_rerank(state: ServingState) -> RerankParams:
    """The champion's guardrail settings, else the domain defaults."""
    champ = state.models["champion"].model
    return champ.rerank_params if champ is not None else RerankParams()


def short_title(title: str, limit: int) -> str:
    """``title`` cut to ``limit`` characters with an ellipsis."""
    return title if len(title) <= limit else title[: limit - 1].rstrip() + "…"
