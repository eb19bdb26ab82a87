"""The online home feed: one request through lookup, retrieval, features, ranking, re-ranking.

``FeedService`` runs each request through the stages of ``serving.stages`` on the state of
``serving.feed_state``; ``serving.feed_types`` holds the request's limits and the response,
``serving.budget`` its clock. The request path uses the offline functions
(``retrieve_candidates``, ``model_scores``, ``rerank``) on state prepared once per model load
(``ServingState``), plus two online sources: the online feature store (user and item features,
the user's history record) and the item catalog held in memory.

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

import logging
import time
import uuid
from collections.abc import Callable

import numpy as np
import pandas as pd

from fitpulse_orchestration.features.online import COLD_USER_FEATURES, UserHistory
from fitpulse_orchestration.features.point_in_time import USER_FEATURES
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.serving.budget import StageClock
from fitpulse_orchestration.serving.experiments import Assignment, Experiment
from fitpulse_orchestration.serving.feed_state import LoadedModel, ServingState
from fitpulse_orchestration.serving.feed_types import (
    STORE_LOG_EVERY_S,
    FeedResponse,
    ServiceUnavailableError,
    ServingConfig,
    sampled,
    validate_request,
)
from fitpulse_orchestration.serving.stages import FeedRequest, respond, retrieve_for, run_pipeline
from fitpulse_orchestration.storage.online_store import (
    CorruptRecordError,
    OnlineFeatureStore,
    OnlineStoreUnavailableError,
)

log = logging.getLogger(__name__)


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
        req = FeedRequest(
            state=state,
            loaded=loaded,
            assignment=assignment,
            user_id=user_id,
            n=n,
            request_id=request_id,
            pid=self.pseudonymizer.pseudonymize(user_id),
            now=pd.Timestamp.now(tz="UTC") if state.live else state.as_of,
            model=loaded.model,
            clock=StageClock(self.config.budgets),
            log_features=sampled(request_id, self.config.feature_log_share),
        )
        run_pipeline(self, req)
        return respond(req, self.config)

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
        history = self.lookup_user(pid)[0] or UserHistory()
        return pd.DataFrame(retrieve_for(state, loaded, pid, history))

    def lookup_user(self, pid: str) -> tuple[UserHistory | None, dict[str, float], bool]:
        """The user's history, user feature values and whether the store answered.

        An unknown user gets the features of a user without events (``COLD_USER_FEATURES``); an
        unreachable store gives missing values (NaN) for every feature.
        """
        try:
            record, row = self.store.lookup_member(pid, "history", "user")
            history = UserHistory.from_record(record) if record is not None else None
        except CorruptRecordError as exc:
            # One member's damaged row or record: their feed falls back, the store stays healthy.
            log.warning("serving features_unavailable for %r: %s", pid, exc)
            return None, dict.fromkeys(USER_FEATURES, np.nan), False
        except (OnlineStoreUnavailableError, LookupError) as exc:
            self._store_failed(exc)
            return None, dict.fromkeys(USER_FEATURES, np.nan), False
        self.store_problem = None
        if row is None:
            return history, dict(COLD_USER_FEATURES), True
        return history, {c: row.get(c, np.nan) for c in USER_FEATURES}, True

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
