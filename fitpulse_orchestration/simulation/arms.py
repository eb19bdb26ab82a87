"""The policies a simulated A/B can test: the platform's services and baselines.

An *arm* pairs a feed policy (what a user sees on opening the app) with a push policy (asked
at fixed local hours whether to send). The platform's arms call the real services in process:
``FeedService.home_feed`` and ``PushDecisionService.decide``, guardrails and all. Baselines:

============== ============================================================================
``champion``   the platform: the champion feed model and the champion push policy
``challenger`` the challenger feed model (registry alias ``challenger``), champion push policy
``popularity`` the service's model-less path (segment popularity, guardrails on), no pushes
``push-daily`` the champion feed; a push every day at 18:00 local to everyone who can get
               one (the most popular beginner-safe items in turn), no policy, no caps
``harmful``    deliberately harmful: the most popular advanced or high-intensity items for
               everyone, beginners included, and a push every hour
============== ============================================================================
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Final, Protocol

import pandas as pd

from fitpulse_orchestration.features.reference import unsafe_for_beginners
from fitpulse_orchestration.push.service import PushDecisionService
from fitpulse_orchestration.retrieval.popularity import ANY
from fitpulse_orchestration.serving.experiments import Experiment, Variant
from fitpulse_orchestration.serving.feed_service import FeedService
from fitpulse_orchestration.serving.feed_state import LoadedModel

FEED_ITEMS: Final = 20
PLATFORM_PUSH_HOURS: Final = (8, 12, 19)
"""Local hours at which the platform's scheduler asks the push policy (one per chronotype)."""
DAILY_PUSH_HOUR: Final = 18


@dataclass(frozen=True)
class FeedOutcome:
    """One served feed as the simulation sees it."""

    items: list[str]
    variant: str
    model_version: str
    fallback: str | None
    latency_ms: float


@dataclass(frozen=True)
class PushOutcome:
    """One push decision: the item when sent, else why not."""

    send: bool
    item: str | None
    blocked_by: str | None
    latency_ms: float


class FeedPolicy(Protocol):
    """Serves a feed to an app user."""

    def serve(self, user_id: str, request_id: str) -> FeedOutcome:
        """The feed ``user_id`` gets now."""


class PushPolicy(Protocol):
    """Decides pushes at fixed local hours."""

    local_hours: tuple[int, ...]

    def decide(self, user_id: str, at: pd.Timestamp, request_id: str, sent: int) -> PushOutcome:
        """Whether to push to ``user_id`` at ``at``; ``sent`` counts pushes it already got."""


@dataclass(frozen=True)
class Arm:
    """A named pair of policies."""

    name: str
    feed: FeedPolicy
    push: PushPolicy


class ServiceFeed:
    """The real feed service; latency is the wall time of ``home_feed``."""

    def __init__(self, service: FeedService, n: int = FEED_ITEMS) -> None:
        self.service = service
        self.n = n

    def serve(self, user_id: str, request_id: str) -> FeedOutcome:
        """``home_feed`` of the service."""
        t0 = time.perf_counter()
        response = self.service.home_feed(user_id, self.n, request_id)
        latency = (time.perf_counter() - t0) * 1e3
        return FeedOutcome(
            items=[item.id for item in response.items],
            variant=response.variant,
            model_version=response.model_version,
            fallback=response.fallbacks[0] if response.fallbacks else None,
            latency_ms=latency,
        )


class FixedFeed:
    """The same list for everyone (the harmful baseline)."""

    def __init__(self, items: list[str], name: str) -> None:
        self.items = items[:FEED_ITEMS]
        self.name = name

    def serve(self, user_id: str, request_id: str) -> FeedOutcome:
        """The fixed list."""
        return FeedOutcome(list(self.items), self.name, self.name, None, float("nan"))


class ServicePush:
    """The real push decision service, asked at ``PLATFORM_PUSH_HOURS``."""

    local_hours: tuple[int, ...] = PLATFORM_PUSH_HOURS

    def __init__(self, service: PushDecisionService) -> None:
        self.service = service

    def decide(self, user_id: str, at: pd.Timestamp, request_id: str, sent: int) -> PushOutcome:
        """``decide`` of the service at ``at``."""
        t0 = time.perf_counter()
        decision = self.service.decide(user_id, at=at.isoformat(), request_id=request_id)
        latency = (time.perf_counter() - t0) * 1e3
        item = decision.item["id"] if decision.send and decision.item else None
        return PushOutcome(decision.send, item, decision.blocked_by, latency)


class SchedulePush:
    """Sends at every one of ``local_hours`` to everyone, cycling through ``items``."""

    def __init__(self, items: list[str], local_hours: tuple[int, ...]) -> None:
        if not items:
            raise ValueError("a scheduled push needs at least one item")
        self.items = items
        self.local_hours = local_hours

    def decide(self, user_id: str, at: pd.Timestamp, request_id: str, sent: int) -> PushOutcome:
        """Always send the next item."""
        return PushOutcome(True, self.items[sent % len(self.items)], None, float("nan"))


class NoPush:
    """Never asked, never sends."""

    local_hours: tuple[int, ...] = ()

    def decide(self, user_id: str, at: pd.Timestamp, request_id: str, sent: int) -> PushOutcome:
        """Never sends."""
        return PushOutcome(False, None, "no_push_arm", float("nan"))


def popular_order(service: FeedService) -> list[str]:
    """Catalog items by overall popularity (the ``*|*`` segment), most popular first."""
    popular = service.state.popular
    overall = popular[popular["segment"] == f"{ANY}|{ANY}"].sort_values("rank")
    known = set(service.state.catalog.index)
    return [str(i) for i in overall["item_id"] if str(i) in known]


def _unsafe_items(service: FeedService) -> set[str]:
    catalog = service.state.catalog.source
    return set(catalog.loc[unsafe_for_beginners(catalog).to_numpy(), "item_id"].astype(str))


ARMS: Final = ("champion", "challenger", "popularity", "push-daily", "harmful")


def build_arms(
    names: list[str],
    service: FeedService,
    push: PushDecisionService,
) -> list[Arm]:
    """The arms ``names`` (see the module docstring) around one loaded feed and push service.

    Raises:
        ValueError: for an unknown or repeated arm, or a challenger arm without a loaded
            challenger model.
    """
    unknown = sorted(set(names) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown arms {unknown}; choose from {list(ARMS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"an arm is repeated in {names}")
    state = service.state
    order = popular_order(service)
    unsafe = _unsafe_items(service)
    safe_popular = [i for i in order if i not in unsafe]
    unsafe_popular = [i for i in order if i in unsafe]
    arms = []
    for name in names:
        if name == "champion":
            arms.append(Arm(name, ServiceFeed(service), ServicePush(push)))
        elif name == "challenger":
            challenger = state.models.get("challenger")
            if challenger is None or challenger.model is None:
                why = challenger.problem if challenger is not None else "no challenger alias"
                raise ValueError(f"the challenger arm needs a loaded challenger model: {why}")
            experiment = Experiment(
                "simulated-challenger",
                "simulated-challenger",
                (Variant("challenger", 1.0, "challenger"),),
            )
            feed = sibling_service(service, state.models, experiment)
            arms.append(Arm(name, ServiceFeed(feed), ServicePush(push)))
        elif name == "popularity":
            models = {"champion": LoadedModel("popularity", None, "the popularity arm")}
            feed = sibling_service(service, models, None)
            arms.append(Arm(name, ServiceFeed(feed), NoPush()))
        elif name == "push-daily":
            arms.append(
                Arm(name, ServiceFeed(service), SchedulePush(safe_popular, (DAILY_PUSH_HOUR,)))
            )
        else:
            if not unsafe_popular:
                raise ValueError("the harmful arm needs advanced or high-intensity items")
            arms.append(
                Arm(
                    name,
                    FixedFeed(unsafe_popular, name),
                    SchedulePush(unsafe_popular, tuple(range(24))),
                )
            )
    return arms


def sibling_service(
    service: FeedService, models: dict[str, LoadedModel], experiment: Experiment | None
) -> FeedService:
    """A feed service like ``service`` (stores, settings) serving ``models``."""
    return FeedService(
        replace(service.state, models=models),
        service.store,
        service.pseudonymizer,
        service.config,
        experiment,
    )
