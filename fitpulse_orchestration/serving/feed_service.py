"""The online home feed: one request through lookup, retrieval, features, ranking, re-ranking.

The request path uses the offline functions (``retrieve_candidates``, ``model_scores``,
``rerank``) on state prepared once per model load (``ServingState``), plus two online sources:
the online feature store (user and item features, the user's history record) and the item
catalog held in memory.

Every stage has a budget inside the request deadline. A stage that fails or overruns leaves a
labelled fallback in the response, and the remaining optional stages are skipped:

============================ ====================================================
``model_unavailable``        the model file is missing or scoring failed: segment popularity
``features_unavailable``     the online store is unreachable: default (missing) features, and
                             the beginner-safety rule for a user whose level is unknown
``index_unavailable``        the ALS or the two-tower FAISS index is missing or unreadable:
                             the other sources' candidates, still ranked
``deadline_exceeded``        a stage overran: the best list so far (retrieval order)
============================ ====================================================

Re-ranking guardrails run on every path, fallbacks included. A user whose fitness level is
unknown (no profile yet, or the store is down) gets the beginner-safety rule: serving cannot
tell that user from a beginner.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.events.schema import USER_ID_PATTERN
from fitpulse_orchestration.features.online import COLD_USER_FEATURES, UserHistory, cross_features
from fitpulse_orchestration.features.point_in_time import ITEM_FEATURES, USER_FEATURES
from fitpulse_orchestration.features.reference import (
    DIFFICULTY_ORDINAL,
    LEVEL_ORDINAL,
    UNKNOWN,
    publish_time_known,
    unsafe_for_beginners,
)
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.ranking.feed import HomeFeedModel, model_scores, source_codes
from fitpulse_orchestration.ranking.rerank import RerankParams, rerank
from fitpulse_orchestration.retrieval.als import als_scores
from fitpulse_orchestration.retrieval.candidates import (
    CandidateParams,
    CandidatePools,
    candidate_pools,
    retrieve_candidates,
)
from fitpulse_orchestration.retrieval.index import ItemIndex
from fitpulse_orchestration.retrieval.live_index import LiveIndex
from fitpulse_orchestration.retrieval.two_tower import item_token_codes, request_inputs
from fitpulse_orchestration.serving.experiments import Assignment, Experiment
from fitpulse_orchestration.storage.online_store import (
    OnlineFeatureStore,
    OnlineStoreUnavailableError,
)

log = logging.getLogger(__name__)

STORE_LOG_EVERY_S: Final = 60.0
"""A failing online store is logged once a minute, not once per request."""

STAGES: Final = ("lookup", "retrieval", "features", "ranking", "rerank")
FALLBACKS: Final = (
    "model_unavailable",
    "features_unavailable",
    "index_unavailable",
    "deadline_exceeded",
)
MAX_ITEMS: Final = 50


class InvalidRequestError(ValueError):
    """The request itself is wrong (answered with a 4xx and this message)."""


class ServiceUnavailableError(RuntimeError):
    """Nothing can be served at all (no catalog): the only case answered with a 5xx."""


@dataclass(frozen=True)
class StageBudgets:
    """Milliseconds each stage may take, and the whole request's deadline.

    The deadline leaves room inside the 180 ms end-to-end p99 for the network and the app.
    """

    lookup_ms: float = 20.0
    retrieval_ms: float = 30.0
    features_ms: float = 30.0
    ranking_ms: float = 30.0
    rerank_ms: float = 20.0
    deadline_ms: float = 120.0

    def budget(self, stage: str) -> float:
        """Budget of ``stage`` in milliseconds."""
        value: float = getattr(self, f"{stage}_ms")
        return value


@dataclass(frozen=True)
class ServingConfig:
    """Request handling settings."""

    budgets: StageBudgets = field(default_factory=StageBudgets)
    max_items: int = MAX_ITEMS
    title_chars: int = 32
    feature_log_share: float = 0.1


class ItemCatalog:
    """The catalog as serving needs it: payload fields and guardrail attributes by item id.

    Held as arrays behind an id index: a request reads ~200 rows by position, which is much
    cheaper than reindexing a frame.
    """

    def __init__(self, catalog: pd.DataFrame) -> None:
        if catalog.empty:
            raise ServiceUnavailableError("the catalog is empty: nothing can be served")
        frame = catalog.drop_duplicates("item_id", keep="last").reset_index(drop=True)
        self.index = pd.Index(frame["item_id"].astype(str))
        known = publish_time_known(frame).to_numpy()
        self._columns: dict[str, np.ndarray] = {
            "item_type": np.append(frame["item_type"].astype(str).to_numpy(object), UNKNOWN),
            "title": np.append(frame["title"].astype(str).to_numpy(object), ""),
            "category": np.append(frame["category"].astype(str).to_numpy(object), UNKNOWN),
            "difficulty": np.append(
                frame["difficulty"].map(DIFFICULTY_ORDINAL).to_numpy(dtype=float), np.nan
            ),
            "published_at": np.append(
                frame["published_at"].where(known).to_numpy(dtype="datetime64[ns]"),
                np.datetime64("NaT"),
            ),
            "unsafe_for_beginner": np.append(unsafe_for_beginners(frame).to_numpy(bool), True),
        }
        content = frame.reindex(columns=_CONTENT_COLUMNS)
        unknown = pd.DataFrame({c: [None] for c in _CONTENT_COLUMNS})
        self._codes = np.vstack([item_token_codes(content), item_token_codes(unknown)])
        self.source = catalog

    def __len__(self) -> int:
        return len(self.index)

    def attributes(self, item_ids: np.ndarray) -> pd.DataFrame:
        """Rows of ``item_ids`` in order; unknown items are unknown and unsafe for beginners.

        Columns: ``item_type``, ``title``, ``category``, ``difficulty`` (ordinal, NaN when
        unknown), ``published_at`` (UTC, NaT when not a real publication),
        ``unsafe_for_beginner``.
        """
        pos = self.index.get_indexer(item_ids)
        pos = np.where(pos < 0, len(self.index), pos)
        out = pd.DataFrame({name: values[pos] for name, values in self._columns.items()})
        out["published_at"] = pd.to_datetime(out["published_at"]).dt.tz_localize("UTC")
        return out

    def token_codes(self, item_ids: np.ndarray) -> np.ndarray:
        """Two-tower content tokens of ``item_ids`` (unknown items: all-unknown tokens)."""
        pos = self.index.get_indexer(item_ids)
        codes: np.ndarray = self._codes[np.where(pos < 0, len(self.index), pos)]
        return codes


_CONTENT_COLUMNS: Final = (
    "item_id",
    "item_type",
    "category",
    "difficulty",
    "intensity",
    "duration_min",
    "equipment",
    "tags",
)


@dataclass
class LoadedModel:
    """One registered version as serving holds it.

    ``model`` is None when the version could not be loaded (``problem`` says why); ``pools``
    are the retrieval lookups prepared for the serving time.
    """

    version: str
    model: HomeFeedModel | None
    problem: str | None = None
    pools: CandidatePools | None = None
    digest: str = ""
    """The artifact digest the version was loaded with (``ModelSource.digest``)."""


@dataclass
class ServingState:
    """Everything a request reads, swapped as a whole when a model or the catalog reloads.

    Attributes:
        models: loaded versions by registry alias (``champion`` always present).
        catalog: the in-memory catalog.
        popular: the popularity table used when no model can be used (``fallback_popular_items``).
        fallback_pools: retrieval lookups over ``popular`` and the catalog.
        as_of: when the state was built: items published before it are available.
        live: requests are served at the wall clock (else at ``as_of``: a replay).
        live_index: the live two-tower index generation (``retrieval.live_index``), used by the
            model version it was embedded with instead of that version's training-time index.
    """

    models: dict[str, LoadedModel]
    catalog: ItemCatalog
    popular: pd.DataFrame
    fallback_pools: CandidatePools
    as_of: pd.Timestamp
    live: bool = False
    live_index: LiveIndex | None = None

    def two_tower_index(self, loaded: LoadedModel) -> ItemIndex | None:
        """The two-tower index ``loaded`` searches: the live one when it was built for it."""
        return _two_tower_index(self.live_index, loaded)

    @property
    def ready(self) -> bool:
        """The champion loaded whole: its model and every index, with no problem."""
        champ = self.models.get("champion")
        return bool(
            champ
            and champ.model is not None
            and champ.model.index is not None
            and champ.problem is None
        )


def _two_tower_index(live_index: LiveIndex | None, loaded: LoadedModel) -> ItemIndex | None:
    """The live index when it was embedded by ``loaded``'s version, else the version's own."""
    if loaded.model is None:
        return None
    if live_index is not None and live_index.meta.model_version == loaded.version:
        return live_index.index
    return loaded.model.tt_index


def prepare_state(
    models: dict[str, LoadedModel],
    catalog: pd.DataFrame,
    popular: pd.DataFrame,
    as_of: pd.Timestamp,
    live: bool = False,
    live_index: LiveIndex | None = None,
) -> ServingState:
    """Build the retrieval lookups of every loaded model and of the popularity fallback."""
    if "champion" not in models:
        raise ValueError("serving needs a champion entry (loaded or not)")
    for loaded in models.values():
        if loaded.model is not None:
            loaded.pools = candidate_pools(
                loaded.model.als,
                loaded.model.popular,
                catalog,
                as_of,
                loaded.model.candidate_params,
                _two_tower_index(live_index, loaded),
                loaded.model.ease,
            )
    fallback = candidate_pools(None, popular, catalog, as_of, CandidateParams())
    return ServingState(models, ItemCatalog(catalog), popular, fallback, as_of, live, live_index)


@dataclass(frozen=True)
class FeedItem:
    """One item of a served feed (the compact payload)."""

    id: str
    type: str
    title: str
    reason: str


@dataclass
class FeedResponse:
    """A served feed and how it was made.

    ``served`` holds the served items with their scores, sources and (when ranked) the features
    they were ranked with: the served-feature log takes its rows from it.
    """

    request_id: str
    user_id: str
    variant: str
    experiment: str | None
    model_version: str
    items: list[FeedItem]
    fallbacks: list[str]
    cold: bool
    as_of: pd.Timestamp
    stage_ms: dict[str, float]
    served: pd.DataFrame
    fitness_level: str
    pseudo_id: str
    ranked: bool
    client_request_id: str | None = None

    def payload(self) -> dict[str, Any]:
        """The compact JSON body sent to the app."""
        return {
            "request_id": self.request_id,
            "model_version": self.model_version,
            "variant": self.variant,
            "fallback": self.fallbacks[0] if self.fallbacks else None,
            "fallbacks": self.fallbacks,
            "items": [
                {"id": i.id, "type": i.type, "title": i.title, "reason": i.reason}
                for i in self.items
            ],
        }


class _Clock:
    def __init__(self, budgets: StageBudgets) -> None:
        self.budgets = budgets
        self.start = time.perf_counter()
        self.stage_ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_ms[name] = self.stage_ms.get(name, 0.0) + (time.perf_counter() - t0) * 1e3

    def overran(self, name: str) -> bool:
        elapsed = (time.perf_counter() - self.start) * 1e3
        return (
            self.stage_ms.get(name, 0.0) > self.budgets.budget(name)
            or elapsed > self.budgets.deadline_ms
        )


def validate_request(user_id: str, n: int, max_items: int) -> None:
    """Raise ``InvalidRequestError`` for a malformed user id or an ``n`` out of range."""
    if not USER_ID_PATTERN.fullmatch(user_id):
        raise InvalidRequestError(
            f"malformed user id {user_id[:80]!r}: expected 1-64 characters of letters, digits "
            "(any script) and _ . : @ -, starting with a letter or digit"
        )
    if not 1 <= n <= max_items:
        raise InvalidRequestError(f"n must be between 1 and {max_items}, got {n}")


def sampled(request_id: str, share: float) -> bool:
    """Whether a request is in a sampled ``share`` (deterministic in the request id)."""
    if share <= 0.0:
        return False
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < share


class FeedService:
    """Serves home feeds from a ``ServingState`` that can be swapped while requests run.

    Shadow mode: with ``on_shadow`` set, a sampled ``shadow_share`` of the requests the
    champion serves is also scored by the ``challenger`` alias after the response is built;
    ``on_shadow(served, shadow)`` receives both. Only the champion's feed is returned (and
    logged as served).
    """

    def __init__(
        self,
        state: ServingState,
        online_store: OnlineFeatureStore,
        pseudonymizer: Pseudonymizer,
        config: ServingConfig | None = None,
        experiment: Experiment | None = None,
        on_served: Callable[[FeedResponse], None] | None = None,
        shadow_share: float = 0.0,
        on_shadow: Callable[[FeedResponse, FeedResponse], None] | None = None,
    ) -> None:
        if not 0.0 <= shadow_share <= 1.0:
            raise ValueError(f"shadow_share must be in [0, 1], got {shadow_share}")
        self.shadow_share = shadow_share
        self.on_shadow = on_shadow
        self._state = state
        self.store = online_store
        self.pseudonymizer = pseudonymizer
        self.config = config or ServingConfig()
        self.experiment = experiment
        self.on_served = on_served
        self.log_errors = 0
        self.store_problem: str | None = None
        """Why the last online-store lookup failed (None once one succeeds again)."""
        self._store_logged_at = -STORE_LOG_EVERY_S

    @property
    def state(self) -> ServingState:
        """The state requests currently read."""
        return self._state

    def swap_state(self, state: ServingState) -> None:
        """Replace the state; requests in flight finish on the state they started with."""
        self._state = state

    def assign(self, user_id: str) -> Assignment:
        """The user's experiment variant (the champion outside any experiment)."""
        if self.experiment is None:
            return Assignment(experiment=None, variant="default", model_alias="champion")
        return self.experiment.assign(user_id)

    def home_feed(
        self,
        user_id: str,
        n: int = 20,
        request_id: str | None = None,
        client_request_id: str | None = None,
    ) -> FeedResponse:
        """Serve ``n`` items to the app user ``user_id`` (the app's raw id).

        ``request_id`` (trusted in-process callers only; new when None) keys the exposures and
        the sampling; a client's ``client_request_id`` is only carried into the logs.

        Raises:
            InvalidRequestError: malformed id or ``n`` out of range.
            ServiceUnavailableError: nothing at all can be served.
        """
        validate_request(user_id, n, self.config.max_items)
        state = self._state
        request_id = request_id or uuid.uuid4().hex
        assignment = self.assign(user_id)
        loaded = state.models.get(assignment.model_alias) or state.models["champion"]
        response = self._serve(state, loaded, assignment, user_id, n, request_id)
        response.client_request_id = client_request_id
        if self.on_served is not None:
            try:
                self.on_served(response)
            except Exception:
                self.log_errors += 1
                log.exception("recording served feed %s failed", request_id)
        if self.on_shadow is not None and sampled(request_id, self.shadow_share):
            self._shadow(state, response, assignment, user_id, n)
        return response

    def _shadow(
        self,
        state: ServingState,
        served: FeedResponse,
        assignment: Assignment,
        user_id: str,
        n: int,
    ) -> None:
        """Score the challenger for a served champion request and hand both to ``on_shadow``.

        Only requests the champion served are shadowed (a user already in a challenger variant
        has nothing to compare). A failure is counted and logged, never raised.
        """
        challenger = state.models.get("challenger")
        if (
            self.on_shadow is None
            or challenger is None
            or challenger.model is None
            or assignment.model_alias != "champion"
        ):
            return
        try:
            shadow = self._serve(
                state, challenger, assignment, user_id, n, f"{served.request_id}-shadow"
            )
            self.on_shadow(served, shadow)
        except Exception:
            self.log_errors += 1
            log.exception("shadow scoring of %s failed", served.request_id)

    def _serve(
        self,
        state: ServingState,
        loaded: LoadedModel,
        assignment: Assignment,
        user_id: str,
        n: int,
        request_id: str,
    ) -> FeedResponse:
        """Build one feed from ``loaded`` (see ``home_feed``); nothing is recorded."""
        clock = _Clock(self.config.budgets)
        now = pd.Timestamp.now(tz="UTC") if state.live else state.as_of
        model = loaded.model
        fallbacks: list[str] = []
        pid = self.pseudonymizer.pseudonymize(user_id)

        with clock.stage("lookup"):
            history, user_values, store_ok = self._lookup_user(pid)
        if not store_ok:
            fallbacks.append("features_unavailable")
        cold = history is None
        history = history or UserHistory()
        level = history.fitness_level
        safety_level = level if level in LEVEL_ORDINAL else "beginner"
        users = pd.DataFrame(
            {"user_id": [pid], "fitness_level": [level], "region": [history.region]}
        )
        seen = {pid: history.engaged}

        with clock.stage("retrieval"):
            candidates = None
            if model is not None:
                no_two_tower = model.two_tower is not None and state.two_tower_index(loaded) is None
                if model.index is None or no_two_tower:
                    fallbacks.append("index_unavailable")
                try:
                    candidates = _retrieve(state, loaded, users, history)
                except Exception:
                    log.exception("retrieval failed for version %s", loaded.version)
                    candidates = None
            if candidates is None:
                model = None
                fallbacks.append("model_unavailable")
                candidates = retrieve_candidates(
                    users, None, None, state.fallback_pools, seen, CandidateParams()
                )
        attrs = state.catalog.attributes(candidates["item_id"].to_numpy())
        # Retrieval order is the fallback order: sources by priority, then their own rank.
        candidates["score"] = -np.arange(len(candidates), dtype=float)
        ranked = False
        featured: pd.DataFrame | None = None
        overran = clock.overran("retrieval")
        if model is not None and not overran and len(candidates):
            with clock.stage("features"):
                featured, features_ok = self._features(
                    model, candidates, attrs, history, user_values, store_ok
                )
            if not features_ok and "features_unavailable" not in fallbacks:
                fallbacks.append("features_unavailable")
            overran = clock.overran("features")
            if not overran:
                with clock.stage("ranking"):
                    try:
                        candidates["score"] = model_scores(model, featured)
                        ranked = True
                    except Exception:
                        fallbacks.append("model_unavailable")
                overran = clock.overran("ranking")
        if overran:
            fallbacks.append("deadline_exceeded")

        with clock.stage("rerank"):
            pool = candidates.assign(
                category=attrs["category"].to_numpy(),
                published_at=attrs["published_at"].to_numpy(),
                unsafe_for_beginner=attrs["unsafe_for_beginner"].to_numpy(),
            )
            params = model.rerank_params if model is not None else _default_rerank(state)
            feed, _ = rerank(
                pool,
                safety_level,
                set(history.completed_recent),
                now,
                replace(params, n=n, **dict(assignment.rerank)),
            )
        items_attrs = state.catalog.attributes(feed["item_id"].to_numpy())
        items = [
            FeedItem(
                id=str(item),
                type=str(kind),
                title=_short(str(title), self.config.title_chars),
                reason=str(reason),
            )
            for item, kind, title, reason in zip(
                feed["item_id"],
                items_attrs["item_type"],
                items_attrs["title"],
                feed["reason"],
                strict=True,
            )
        ]
        served = feed.assign(
            unsafe_for_beginner=items_attrs["unsafe_for_beginner"].to_numpy(),
        )
        if ranked and featured is not None:
            keep = [c for c in featured.columns if c not in served.columns]
            pos = pd.Index(featured["item_id"]).get_indexer(served["item_id"])
            served = pd.concat(
                [served.reset_index(drop=True), featured[keep].iloc[pos].reset_index(drop=True)],
                axis=1,
            )
        response = FeedResponse(
            request_id=request_id,
            user_id=user_id,
            variant=assignment.variant,
            experiment=assignment.experiment,
            model_version=loaded.version if model is not None else "popularity",
            items=items,
            fallbacks=list(dict.fromkeys(fallbacks)),
            cold=cold,
            as_of=now,
            stage_ms=dict(clock.stage_ms),
            served=served,
            fitness_level=level,
            pseudo_id=pid,
            ranked=ranked,
        )
        return response

    def candidates(self, user_id: str) -> pd.DataFrame:
        """The retrieval stage of ``home_feed`` alone: the user's candidates by source.

        For diagnostics and freshness checks ("is this item retrievable for this user?").

        Raises:
            InvalidRequestError: malformed id.
            ServiceUnavailableError: the assigned model is not loaded.
        """
        validate_request(user_id, 1, self.config.max_items)
        state = self._state
        loaded = state.models.get(self.assign(user_id).model_alias) or state.models["champion"]
        if loaded.model is None or loaded.pools is None:
            raise ServiceUnavailableError(f"model version {loaded.version} is not loaded")
        pid = self.pseudonymizer.pseudonymize(user_id)
        history = self._lookup_user(pid)[0] or UserHistory()
        users = pd.DataFrame(
            {"user_id": [pid], "fitness_level": [history.fitness_level], "region": [history.region]}
        )
        return _retrieve(state, loaded, users, history)

    def _lookup_user(self, pid: str) -> tuple[UserHistory | None, dict[str, float], bool]:
        """The user's history, user feature values and whether the store answered.

        An unknown user gets the features of a user without events (``COLD_USER_FEATURES``); an
        unreachable store gives missing values (NaN) for every feature.
        """
        try:
            record = self.store.lookup_records("history", [pid]).get(pid)
            row = self.store.lookup("user", [pid])
        except (OnlineStoreUnavailableError, LookupError) as exc:
            self._store_failed(exc)
            return None, dict.fromkeys(USER_FEATURES, np.nan), False
        self.store_problem = None
        history = UserHistory.from_record(record) if record is not None else None
        if row.empty:
            return history, dict(COLD_USER_FEATURES), True
        return history, {c: float(row[c].iloc[0]) for c in USER_FEATURES}, True

    def _store_failed(self, exc: Exception) -> None:
        """Remember why the store failed; log it at most every ``STORE_LOG_EVERY_S``."""
        self.store_problem = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if now - self._store_logged_at >= STORE_LOG_EVERY_S:
            self._store_logged_at = now
            log.error("online store lookup failed, serving features_unavailable: %s", exc)

    def store_health(self) -> str | None:
        """None when the online store answers now; else why it does not."""
        try:
            self.store.meta("user")
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return self.store_problem

    def _features(
        self,
        model: HomeFeedModel,
        candidates: pd.DataFrame,
        attrs: pd.DataFrame,
        history: UserHistory,
        user_values: dict[str, float],
        store_ok: bool,
    ) -> tuple[pd.DataFrame, bool]:
        """Ranker features of the candidates; False when the item lookup failed (NaN used)."""
        item_ids = candidates["item_id"].to_numpy().astype(str)
        n = len(item_ids)
        ok = store_ok
        columns: dict[str, np.ndarray] = {}
        values = np.full((n, len(ITEM_FEATURES)), np.nan)
        names: tuple[str, ...] = ITEM_FEATURES
        if store_ok:
            try:
                values, names = self.store.lookup_values("item", list(item_ids))
            except (OnlineStoreUnavailableError, LookupError):
                ok = False
        for j, name in enumerate(names):
            columns[name] = values[:, j]
        for col in USER_FEATURES:
            columns[col] = np.full(n, user_values[col])
        cross = cross_features(
            history, list(item_ids), list(attrs["category"]), attrs["difficulty"].to_numpy()
        )
        for col in cross.columns:
            columns[col] = cross[col].to_numpy()
        pid = str(candidates["user_id"].iloc[0])
        columns["als_score"] = als_scores(model.als, np.full(n, pid, dtype=object), item_ids)
        columns["x_source"] = source_codes(candidates["source"])
        frame = pd.concat(
            [candidates.reset_index(drop=True), pd.DataFrame(columns)], axis=1, copy=False
        )
        return frame, ok


def _retrieve(
    state: ServingState, loaded: LoadedModel, users: pd.DataFrame, history: UserHistory
) -> pd.DataFrame | None:
    """Candidates of one user (``users`` has one row) from every source of ``loaded``.

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
                str(users["fitness_level"].iloc[0]),
                history.region,
                state.catalog.token_codes(engaged),
                len(engaged),
            )
        )
    pid = str(users["user_id"].iloc[0])
    return retrieve_candidates(
        users,
        model.als,
        model.index,
        loaded.pools,
        {pid: history.engaged},
        model.candidate_params,
        user_vectors,
        tt_index,
        model.ease,
    )


def _default_rerank(state: ServingState) -> RerankParams:
    champ = state.models["champion"].model
    return champ.rerank_params if champ is not None else RerankParams()


def _short(title: str, limit: int) -> str:
    return title if len(title) <= limit else title[: limit - 1].rstrip() + "…"
