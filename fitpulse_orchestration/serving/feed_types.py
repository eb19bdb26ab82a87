"""What a home-feed request and response are: limits, budgets, errors and the served feed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.events.schema import USER_ID_PATTERN

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

    ``served_columns`` holds the served items with their scores, sources and (when ranked) the
    features they were ranked with, as columns: the served-feature log takes its rows from it.
    ``served_rows`` builds it on first read, so a request that is never logged in full never
    builds it, and one that is builds it in the log's writer thread. ``served`` is the same as a
    frame.
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
    served_rows: Callable[[], Mapping[str, Any]]
    fitness_level: str
    pseudo_id: str
    ranked: bool
    client_request_id: str | None = None

    @cached_property
    def served_columns(self) -> dict[str, np.ndarray]:
        """The served rows as columns (``serving.stages.served_columns``), built once."""
        return {str(name): np.asarray(values) for name, values in self.served_rows().items()}

    @cached_property
    def served(self) -> pd.DataFrame:
        """The served rows as a frame."""
        return pd.DataFrame(self.served_columns)

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
