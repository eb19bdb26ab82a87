"""The push decision service: whether to interrupt a user now, with what, and when at earliest.

WHAT comes from the home feed's retrieval (the champion's ALS, popular and fresh pools; the
popularity pools when no feed model is loaded), or the caller's candidate item. WHETHER and
WHEN come from the push policy (``push.policy``): guardrails first, then the expected value of
each beginner-safe candidate; the best one is sent when its value clears the threshold, and
only after the cap store atomically reserved the send. Failures fail safe: no push model, no
push history (online store unreachable) or no cap store means *don't send*, labelled.

The clock is the server's (``clock``): wall time when serving live, the snapshot's time
otherwise; only trusted in-process callers (simulations) pass their own ``at``. Reservation
ids are made here, never taken from a caller. A caller's idempotency key binds the decision to
(user, key) in the cap store: a replay, or a concurrent twin, gets the first answer back
(``replayed``), never a second send. Fail-safe answers are not remembered, so a retry after an
outage decides afresh. Nothing is read or written for a user on the erasure list (``is_erased``:
``erased_user``, no send), and nothing is remembered for a user the online store does not know.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.push.caps import PushCapStore
from fitpulse_orchestration.push.features import (
    PushHistory,
    PushItem,
    local_time,
    push_feature_matrix,
    push_features,
    push_items,
)
from fitpulse_orchestration.push.policy import (
    PushPolicyBundle,
    blocking_guardrails,
    earliest_send_time,
    expected_values,
)
from fitpulse_orchestration.retrieval.candidates import CandidateParams, retrieve_candidates
from fitpulse_orchestration.serving.feed_service import FeedService
from fitpulse_orchestration.serving.feed_types import InvalidRequestError, validate_request
from fitpulse_orchestration.serving.loading import ModelSource
from fitpulse_orchestration.storage.online_store import OnlineStoreUnavailableError

MAX_CANDIDATES: Final = 20
FALLBACKS: Final = ("model_unavailable", "features_unavailable", "caps_unavailable")
IDEMPOTENCY_KEY: Final = re.compile(r"[A-Za-z0-9_.:-]{8,128}")
"""What an idempotency key may look like."""


@dataclass
class LoadedPushPolicy:
    """A registered push-policy version as serving holds it (``bundle`` None: it failed)."""

    version: str | None
    bundle: PushPolicyBundle | None
    problem: str | None = None


@dataclass
class PushDecision:
    """The answer to one decision request."""

    request_id: str
    send: bool
    item: dict[str, str] | None
    send_at: str | None
    earliest_send_at: str | None
    blocked_by: str | None
    reasons: list[str]
    scores: dict[str, float] | None
    fallback: str | None
    model_version: str | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    replayed: bool = False

    @classmethod
    def from_payload(cls, body: dict[str, Any], replayed: bool = True) -> PushDecision:
        """A remembered answer (``payload`` of the original) as a decision."""
        fields = {k: body[k] for k in cls.__dataclass_fields__ if k in body}
        return cls(**{**fields, "replayed": replayed})

    def payload(self) -> dict[str, Any]:
        """The JSON body."""
        return {
            "request_id": self.request_id,
            "send": self.send,
            "item": self.item,
            "send_at": self.send_at,
            "earliest_send_at": self.earliest_send_at,
            "blocked_by": self.blocked_by,
            "reasons": self.reasons,
            "scores": self.scores,
            "fallback": self.fallback,
            "model_version": self.model_version,
            "replayed": self.replayed,
        }


def _iso_local(at: float, timezone: str) -> str:
    return local_time(at, timezone).isoformat(timespec="seconds")


class PushDecisionService:
    """Decides pushes for app user ids; reads the feed service's state for candidates."""

    def __init__(
        self,
        feed: FeedService,
        policy: LoadedPushPolicy,
        caps: PushCapStore | None,
        max_candidates: int = MAX_CANDIDATES,
        clock: Callable[[], float] | None = None,
        is_erased: Callable[[str], bool] | None = None,
    ) -> None:
        self.feed = feed
        self.is_erased = is_erased
        self._policy = policy
        self.caps = caps
        self.max_candidates = max_candidates
        self._clock = clock
        self._items_for: tuple[int, dict[str, PushItem]] = (0, {})

    @property
    def policy(self) -> LoadedPushPolicy:
        """The policy requests currently use."""
        return self._policy

    def swap_policy(self, policy: LoadedPushPolicy) -> None:
        """Replace the policy; decisions in flight finish with the one they started with."""
        self._policy = policy

    def _items(self) -> dict[str, PushItem]:
        catalog = self.feed.state.catalog.source
        if self._items_for[0] != id(catalog):
            self._items_for = (id(catalog), push_items(catalog))
        return self._items_for[1]

    def clock(self) -> float:
        """The server's time (epoch seconds) decisions run on."""
        if self._clock is not None:
            return self._clock()
        state = self.feed.state
        return time.time() if state.live else float(state.as_of.timestamp())

    def set_clock(self, clock: Callable[[], float] | None) -> None:
        """Run decisions on ``clock`` (None: the server's own); for replays and tests."""
        self._clock = clock

    def _now(self, at: str | None) -> float:
        if at is not None:
            try:
                stamp = pd.Timestamp(at)
            except ValueError as exc:
                raise InvalidRequestError(f"'at' is not an ISO timestamp: {at!r}") from exc
            if stamp.tzinfo is None:
                raise InvalidRequestError("'at' needs a UTC offset, e.g. 2026-11-01T18:00:00Z")
            return float(stamp.timestamp())
        return self.clock()

    def _candidates(self, pid: str, history: PushHistory) -> list[str]:
        state = self.feed.state
        loaded = state.models.get("champion")
        users = pd.DataFrame(
            {"user_id": [pid], "fitness_level": [history.fitness_level], "region": ["unknown"]}
        )
        model = loaded.model if loaded is not None else None
        if model is not None and loaded is not None and loaded.pools is not None:
            try:
                frame = retrieve_candidates(
                    users,
                    model.als,
                    model.index,
                    loaded.pools,
                    {pid: frozenset()},
                    model.candidate_params,
                )
                return [str(i) for i in frame["item_id"].head(self.max_candidates)]
            except Exception:
                pass
        frame = retrieve_candidates(
            users, None, None, state.fallback_pools, {pid: frozenset()}, CandidateParams()
        )
        return [str(i) for i in frame["item_id"].head(self.max_candidates)]

    def decide(
        self,
        user_id: str,
        item_id: str | None = None,
        at: str | None = None,
        request_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> PushDecision:
        """Decide a push for the app user ``user_id`` (see the module docstring).

        ``at`` (trusted callers only) replaces the server's clock; ``request_id`` is echoed in
        the answer; ``idempotency_key`` binds the answer to (user, key).

        Raises:
            InvalidRequestError: malformed user id or key, unknown item, or a bad ``at``.
        """
        validate_request(user_id, 1, 1)
        if idempotency_key is not None and not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise InvalidRequestError(f"idempotency key must match {IDEMPOTENCY_KEY.pattern}")
        request_id = request_id or uuid.uuid4().hex
        pid = self.feed.pseudonymizer.pseudonymize(user_id)
        if self.is_erased is not None and self.is_erased(pid):
            return self._erased_answer(request_id)
        if idempotency_key is None:
            return self._decide(user_id, item_id, at, request_id, uuid.uuid4().hex)
        try:
            prior = self.caps.recall_decision(pid, idempotency_key) if self.caps else None
        except OnlineStoreUnavailableError:
            prior = None  # the decision below fails safe on the same store
        if prior is not None:
            return PushDecision.from_payload(json.loads(prior))
        decision = self._decide(user_id, item_id, at, request_id, f"idem:{idempotency_key}")
        if decision.fallback is not None or self.caps is None:
            return decision
        if decision.blocked_by == "unknown_user":
            return decision  # nothing is kept about a user the platform does not know
        mine = json.dumps(decision.payload(), separators=(",", ":"))
        try:
            stored = self.caps.remember_decision(
                pid, idempotency_key, mine, dt.datetime.fromtimestamp(self._now(at), dt.UTC)
            )
        except OnlineStoreUnavailableError:
            return decision
        return decision if stored == mine else PushDecision.from_payload(json.loads(stored))

    def _erased_answer(self, request_id: str) -> PushDecision:
        """No send, and nothing read or written: the user is on the erasure list."""
        return PushDecision(
            request_id=request_id,
            send=False,
            item=None,
            send_at=None,
            earliest_send_at=None,
            blocked_by="erased_user",
            reasons=["the user was erased: nothing is decided or kept for them"],
            scores=None,
            fallback=None,
            model_version=self._policy.version,
            timings_ms={"total": 0.0},
        )

    def _decide(
        self,
        user_id: str,
        item_id: str | None,
        at: str | None,
        request_id: str,
        send_id: str,
    ) -> PushDecision:
        """One decision; a send is reserved under ``send_id``."""
        started = time.perf_counter()
        now = self._now(at)
        items = self._items()
        if item_id is not None and item_id not in items:
            raise InvalidRequestError(f"unknown item_id {item_id!r}")
        policy = self._policy
        version = policy.version

        def answer(
            blocked: str | None,
            reasons: list[str],
            fallback: str | None = None,
            history: PushHistory | None = None,
            earliest: float | None = None,
        ) -> PushDecision:
            tz = history.timezone if history is not None else "UTC"
            return PushDecision(
                request_id=request_id,
                send=False,
                item=None,
                send_at=None,
                earliest_send_at=None if earliest is None else _iso_local(earliest, tz),
                blocked_by=blocked,
                reasons=reasons,
                scores=None,
                fallback=fallback,
                model_version=version,
                timings_ms={"total": (time.perf_counter() - started) * 1e3},
            )

        if policy.bundle is None:
            why = policy.problem or "no push policy is registered"
            return answer(None, [f"fail safe: {why}"], "model_unavailable")
        bundle = policy.bundle
        params = bundle.params
        pid = self.feed.pseudonymizer.pseudonymize(user_id)
        try:
            record = self.feed.store.lookup_records("push", [pid]).get(pid)
            history = None if record is None else PushHistory.from_record(record)
        except (OnlineStoreUnavailableError, LookupError) as exc:
            return answer(
                None, [f"fail safe: push history unavailable ({exc})"], "features_unavailable"
            )
        if history is None:
            return answer("unknown_user", ["no profile or push history for this user"])
        moment = dt.datetime.fromtimestamp(now, dt.UTC)
        try:
            sends = (
                np.asarray(self.caps.send_times(pid, moment, exclude=send_id))
                if self.caps is not None
                else None
            )
        except OnlineStoreUnavailableError as exc:
            sends = None
            problem = str(exc)
        else:
            problem = "no cap store configured"
        if sends is None:
            return answer(
                None,
                [f"fail safe: cap counters unavailable ({problem})"],
                "caps_unavailable",
                history,
            )
        day = int(np.count_nonzero(sends > now - 86400.0))
        week = len(sends)

        def guardrail(name: str) -> PushDecision:
            earliest = (
                None
                if name in ("opted_out", "unsafe_for_beginner")
                else earliest_send_time(history, now, params, sends)
            )
            return answer(name, [f"guardrail: {name}"], None, history, earliest)

        # Every guardrail but unsafe_for_beginner depends on the user alone, so it is checked
        # before any candidate is retrieved or scored (GUARDRAILS order). unsafe_for_beginner
        # never blocks a member who is not a beginner, and it comes second: so a beginner's
        # candidates are still looked at before a time guardrail answers.
        blocked = blocking_guardrails(
            push_features(history, now, None),
            np.array([history.notifications_off(now)]),
            np.array([False]),
            np.array([False]),
            params,
            sends_day=np.array([day]),
            sends_week=np.array([week]),
        )[0]
        if blocked == "opted_out" or (blocked is not None and not history.is_beginner):
            return guardrail(str(blocked))

        ids = [item_id] if item_id is not None else self._candidates(pid, history)
        cands = [items[i] for i in ids if i in items]
        if history.is_beginner:
            safe = [c for c in cands if not c.unsafe_for_beginners]
            if not safe:
                return answer(
                    "unsafe_for_beginner",
                    ["every candidate is unsafe for a beginner"],
                    None,
                    history,
                )
            cands = safe
        if not cands:
            return answer("no_candidate", ["retrieval returned no candidate"], None, history)
        if blocked is not None:
            return guardrail(str(blocked))
        features = push_feature_matrix(history, now, cands)
        try:
            p_open, p_fatigue, value = expected_values(
                bundle.models, features, [c.item_type for c in cands], params
            )
        except Exception as exc:
            return answer(
                None, [f"fail safe: push model failed ({exc})"], "model_unavailable", history
            )
        best = int(np.argmax(value))
        item = cands[best]
        scores = {
            "p_open": round(float(p_open[best]), 6),
            "p_fatigue": round(float(p_fatigue[best]), 6),
            "content_value": float(params.value_of([item.item_type])[0]),
            "expected_value": round(float(value[best]), 6),
            "threshold": params.threshold,
            "fatigue_weight": params.fatigue_weight,
        }
        catalog = self.feed.state.catalog
        title = catalog.titles(catalog.rows(np.array([item.item_id])))[0][
            : self.feed.config.title_chars
        ]
        payload_item = {"id": item.item_id, "type": item.item_type, "title": title}
        if value[best] < params.threshold:
            decision = answer(
                "below_threshold",
                [f"expected value {value[best]:.4f} < threshold {params.threshold}"],
                None,
                history,
            )
            decision.scores, decision.item = scores, payload_item
            return decision
        try:
            reserved = self.caps.try_reserve(pid, send_id, moment, params.caps)  # type: ignore[union-attr]
        except OnlineStoreUnavailableError as exc:
            return answer(
                None, [f"fail safe: cap counters unavailable ({exc})"], "caps_unavailable", history
            )
        if not reserved.allowed:
            sends_now = np.asarray(self.caps.send_times(pid, moment))  # type: ignore[union-attr]
            earliest = earliest_send_time(history, now, params, sends_now)
            decision = answer(
                reserved.blocked_by, [f"guardrail: {reserved.blocked_by}"], None, history, earliest
            )
            decision.scores = scores
            return decision
        return PushDecision(
            request_id=request_id,
            send=True,
            item=payload_item,
            send_at=_iso_local(now, history.timezone),
            earliest_send_at=_iso_local(now, history.timezone),
            blocked_by=None,
            reasons=["expected value clears the threshold; every guardrail passed"],
            scores=scores,
            fallback=None,
            model_version=version,
            timings_ms={"total": (time.perf_counter() - started) * 1e3},
        )


def load_push_policy(source: ModelSource, alias: str = "champion") -> LoadedPushPolicy:
    """The push policy ``alias`` stands for (the audited champion: gate passed, approved, promoted).

    A missing or unreadable version loads as a labelled failure: the service then fails safe
    (never sends) instead of refusing to start.
    """
    try:
        version = source.version_for(alias)
    except Exception as exc:
        return LoadedPushPolicy(None, None, f"registry unreachable: {exc}")
    if version is None:
        return LoadedPushPolicy(
            None, None, "no push policy has passed its gate, been approved and been promoted"
        )
    try:
        return LoadedPushPolicy(version, PushPolicyBundle.load(source.fetch(version)))
    except Exception as exc:
        source.discard(version)
        return LoadedPushPolicy(version, None, f"version {version} failed to load: {exc}")
