"""Recency-decayed popularity per segment (fitness level x region).

The source for cold users and the universal fallback. Besides exact segments the table holds
``level|*`` and ``*|*`` rows, so a user of an unseen region or unknown level still gets a list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd

from fitpulse_orchestration.events.schema import ENGAGEMENT_GRADE
from fitpulse_orchestration.features.reference import UNKNOWN

ANY = "*"

_Segment = TypeVar("_Segment", bound=Sized)


@dataclass(frozen=True)
class PopularityParams:
    """Half-life of an engagement's weight and list length per segment.

    ``half_life_days`` None counts every engagement alike (all-time popularity). Which half-life
    suits a log depends on it: trends of a week on a busy app, the classics on a sparse one
    (``evaluation.tuning`` picks it on the validation split).
    """

    half_life_days: float | None = 7.0
    top_n: int = 200

    def __post_init__(self) -> None:
        if self.half_life_days is not None and not self.half_life_days > 0:
            raise ValueError(f"half_life_days must be > 0 or None, got {self.half_life_days}")

    def describe(self) -> str:
        """``7 days`` or ``none (all-time)``."""
        if self.half_life_days is None:
            return "none (all-time)"
        return f"{self.half_life_days:g} days"


def segment_keys(fitness_level: str, region: str) -> list[str]:
    """Segments to try for a user, most specific first."""
    return [f"{fitness_level}|{region}", f"{fitness_level}|{ANY}", f"{ANY}|{ANY}"]


def compute_popular_items(
    events: pd.DataFrame,
    profiles: pd.DataFrame,
    as_of: pd.Timestamp,
    params: PopularityParams,
) -> pd.DataFrame:
    """Rank items per segment by grade-weighted, exponentially decayed engagements before ``as_of``.

    Returns:
        Columns ``segment``, ``item_id``, ``score`` (float), ``rank`` (0-based int) with at most
        ``params.top_n`` rows per segment.
    """
    grades = {k: v for k, v in ENGAGEMENT_GRADE.items() if v > 0}
    ev = events[events["event_type"].isin(list(grades)) & (events["ts"] < as_of)]
    if ev.empty:
        return pd.DataFrame(
            {
                "segment": pd.Series(dtype=str),
                "item_id": pd.Series(dtype=str),
                "score": pd.Series(dtype=float),
                "rank": pd.Series(dtype="int64"),
            }
        )
    age_days = (as_of - ev["ts"]).dt.total_seconds().to_numpy() / 86400.0
    decay = 1.0 if params.half_life_days is None else np.exp2(-age_days / params.half_life_days)
    weight = ev["event_type"].map(grades).to_numpy() * decay
    prof = profiles.set_index("user_id")
    level = ev["user_id"].map(prof["fitness_level"]).fillna(UNKNOWN).to_numpy()
    region = ev["user_id"].map(prof["region"]).fillna(UNKNOWN).to_numpy()
    base = pd.DataFrame({"item_id": ev["item_id"].to_numpy(), "w": weight})
    parts = []
    for seg in (
        pd.Series(level, dtype=str) + "|" + pd.Series(region, dtype=str),
        pd.Series(level, dtype=str) + f"|{ANY}",
        pd.Series(np.full(len(ev), f"{ANY}|{ANY}"), dtype=str),
    ):
        scored = base.assign(segment=seg.to_numpy()).groupby(["segment", "item_id"])["w"].sum()
        parts.append(scored.rename("score").reset_index())
    table = pd.concat(parts, ignore_index=True)
    table = table.sort_values(["segment", "score", "item_id"], ascending=[True, False, True])
    table["rank"] = table.groupby("segment").cumcount().astype("int64")
    return table[table["rank"] < params.top_n].reset_index(drop=True)


def pick_segment(
    by_segment: Mapping[str, _Segment], fitness_level: str, region: str, n: int
) -> _Segment | None:
    """The most specific segment list with at least ``n`` items, else the global one.

    ``by_segment`` maps segment key to its rows of the popularity table (``split_segments``),
    or to any list of them whose ``len`` is its number of items.
    """
    global_key = f"{ANY}|{ANY}"
    for key in segment_keys(fitness_level, region):
        rows = by_segment.get(key)
        if rows is not None and (len(rows) >= n or key == global_key):
            return rows
    return by_segment.get(global_key)


def split_segments(popular: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Popularity table rows grouped by segment key (each already in rank order)."""
    return {str(k): g for k, g in popular.groupby("segment", sort=False)}
