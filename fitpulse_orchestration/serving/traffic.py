"""Synthetic traffic: the world's users request feeds from the real service, then respond.

``serve_traffic`` sends one request per sampled user through ``FeedService.home_feed`` (the
same object the HTTP app calls), so exposures are logged exactly as in production. The
synthetic world's hidden tastes then decide what the users do with the feeds they got
(``world.respond``), and those outcomes land as ordinary app events: after ingestion an
experiment can be analysed from the logs alone, as it would be with real users.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fitpulse_orchestration import layout
from fitpulse_orchestration.serving.feed_service import FeedService
from fitpulse_orchestration.serving.feed_types import FeedResponse
from fitpulse_orchestration.storage import ObjectStore
from fitpulse_orchestration.storage.tables import read_parquet_prefix


@dataclass(frozen=True)
class TrafficSummary:
    """What a traffic run served."""

    requests: int
    by_variant: dict[str, int]
    fallbacks: dict[str, int]
    exposures: int


def world_user_ids(store: ObjectStore, n: int, seed: int) -> list[str]:
    """``n`` distinct raw user ids from the landed profiles (all of them when fewer), seeded.

    Raises:
        ValueError: when no profiles have landed.
    """
    frames = read_parquet_prefix(store, f"{layout.LANDING_USERS}/")
    if not frames:
        raise ValueError("no landed user profiles: generate or import a world first")
    ids = pd.concat(frames)["user_id"].astype(str).drop_duplicates().sort_values().to_numpy()
    rng = np.random.default_rng(seed)
    return [str(u) for u in rng.permutation(ids)[: min(n, len(ids))]]


def serve_traffic(
    service: FeedService, user_ids: Sequence[str], n: int = 20
) -> tuple[list[FeedResponse], TrafficSummary]:
    """Serve one feed to each user, in order."""
    responses = [service.home_feed(u, n) for u in user_ids]
    summary = TrafficSummary(
        requests=len(responses),
        by_variant=dict(Counter(r.variant for r in responses)),
        fallbacks=dict(Counter(f for r in responses for f in r.fallbacks)),
        exposures=sum(len(r.items) for r in responses),
    )
    return responses, summary


def exposures_frame(responses: Sequence[FeedResponse]) -> pd.DataFrame:
    """Served items as the world's response model reads them.

    Returns:
        ``request_id``, raw ``user_id``, ``item_id``, ``position``, ``ts``, ``platform``.
    """
    rows = [
        (r.request_id, r.user_id, item.id, pos, r.as_of, None)
        for r in responses
        for pos, item in enumerate(r.items)
    ]
    return pd.DataFrame(
        rows, columns=["request_id", "user_id", "item_id", "position", "ts", "platform"]
    )
