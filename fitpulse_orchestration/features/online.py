"""Request-time user x item features from a per-user history record.

User and item features are looked up online exactly as the offline snapshot computed them. The
cross features (``CROSS_FEATURES``) depend on the item being ranked, so they cannot be
precomputed for every pair: the online store holds one *history record* per user (computed
here with DuckDB from the same clean events), and ``cross_features`` evaluates each cross
feature's definition for the request's candidates:

- ``x_category_affinity``: share of the user's engagements in the 28 days before ``as_of`` that
  fell in the item's category;
- ``x_difficulty_gap``: item difficulty minus user level (NaN when either is unknown);
- ``x_item_engaged_before``: 1.0 when the user ever engaged with the item before ``as_of``;
- ``x_item_impressions_7d``: the user's impressions of the item in the 7 days before ``as_of``.

``tests/unit/features/test_online.py`` checks these against ``compute_cross_features`` (the
offline SQL) on the same events, so the two definitions cannot drift apart silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.features.point_in_time import (
    CROSS_FEATURES,
    NO_HISTORY_DAYS,
    FeatureInputs,
    connect_events,
)
from fitpulse_orchestration.features.reference import LEVEL_ORDINAL, UNKNOWN
from fitpulse_orchestration.storage.online_store import CorruptRecordError

COLD_USER_FEATURES: Final = {
    "u_engaged_7d": 0.0,
    "u_engaged_28d": 0.0,
    "u_completes_28d": 0.0,
    "u_impressions_28d": 0.0,
    "u_ctr_28d": 1.0 / 20.0,
    "u_active_days_28d": 0.0,
    "u_days_since_engaged": NO_HISTORY_DAYS,
    "u_push_open_rate_28d": 0.5 / 5.0,
    "u_level": float("nan"),
    "u_tenure_days": float("nan"),
    "u_is_cold": 1.0,
}
"""``USER_FEATURES`` of a user without events or profile, as ``compute_user_features`` gives them
(a new sign-up the online store has not seen yet)."""


@dataclass(frozen=True)
class UserHistory:
    """What serving needs to know about one user's past, as of the history's ``as_of``.

    Attributes:
        fitness_level: profile level (``unknown`` when the profile is missing).
        region: profile region.
        category_counts: engagements per item category in the last 28 days.
        engaged: items the user ever engaged with (clicked or deeper): never recommended again.
        impressions_7d: the user's impressions per item in the last 7 days.
        completed_recent: items completed in the last ``recent_days`` (re-ranking hides them).
    """

    fitness_level: str = UNKNOWN
    region: str = UNKNOWN
    category_counts: dict[str, int] = field(default_factory=dict)
    engaged: frozenset[str] = frozenset()
    impressions_7d: dict[str, int] = field(default_factory=dict)
    completed_recent: frozenset[str] = frozenset()

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict (what the online store keeps)."""
        return {
            "level": self.fitness_level,
            "region": self.region,
            "cat": self.category_counts,
            "engaged": sorted(self.engaged),
            "imps7": self.impressions_7d,
            "done": sorted(self.completed_recent),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> UserHistory:
        """Inverse of ``to_record``.

        Raises:
            CorruptRecordError: when a field does not have the shape ``to_record`` writes.
        """
        try:
            return cls(
                fitness_level=str(record.get("level", UNKNOWN)),
                region=str(record.get("region", UNKNOWN)),
                category_counts={str(k): int(v) for k, v in record.get("cat", {}).items()},
                engaged=frozenset(map(str, record.get("engaged", ()))),
                impressions_7d={str(k): int(v) for k, v in record.get("imps7", {}).items()},
                completed_recent=frozenset(map(str, record.get("done", ()))),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise CorruptRecordError(f"a history record of the wrong shape: {exc}") from None


def compute_user_histories(
    inputs: FeatureInputs, user_ids: Sequence[str], as_of: pd.Timestamp, recent_days: float
) -> dict[str, UserHistory]:
    """History records of ``user_ids`` from events strictly before ``as_of``.

    Returns:
        User id -> history; every requested id is present (empty history without events).
    """
    con = connect_events(inputs)
    cut = pd.Timestamp(as_of).tz_convert("UTC").tz_localize(None).to_pydatetime()
    users = pd.DataFrame({"user_id": pd.Index(user_ids).astype(str).unique()})
    con.register("wanted", users)
    recent_cut = cut - pd.Timedelta(days=recent_days).to_pytimedelta()

    def query(sql: str) -> pd.DataFrame:
        params = {"as_of": cut} | ({"recent_cut": recent_cut} if "$recent_cut" in sql else {})
        return con.execute(sql, params).df()

    cats = query(
        """SELECT e.user_id, e.category, COUNT(*) AS n FROM events e JOIN wanted USING (user_id)
           WHERE e.grade >= 1 AND e.ts < $as_of AND e.ts >= $as_of - INTERVAL 28 DAY
           GROUP BY 1, 2"""
    )
    engaged = query(
        """SELECT DISTINCT e.user_id, e.item_id FROM events e JOIN wanted USING (user_id)
           WHERE e.grade >= 1 AND e.ts < $as_of AND e.item_id IS NOT NULL"""
    )
    imps = query(
        """SELECT e.user_id, e.item_id, COUNT(*) AS n FROM events e JOIN wanted USING (user_id)
           WHERE e.event_type = 'impression' AND e.ts < $as_of
             AND e.ts >= $as_of - INTERVAL 7 DAY
           GROUP BY 1, 2"""
    )
    done = query(
        """SELECT DISTINCT e.user_id, e.item_id FROM events e JOIN wanted USING (user_id)
           WHERE e.event_type = 'workout_complete' AND e.ts < $as_of
             AND e.ts >= $recent_cut"""
    )
    con.close()
    profiles = inputs.profiles.set_index("user_id")
    cat_by = {
        u: dict(zip(g["category"], g["n"].astype(int), strict=True))
        for u, g in cats.groupby("user_id")
    }
    eng_by = {u: frozenset(g["item_id"]) for u, g in engaged.groupby("user_id")}
    imp_by = {
        u: dict(zip(g["item_id"], g["n"].astype(int), strict=True))
        for u, g in imps.groupby("user_id")
    }
    done_by = {u: frozenset(g["item_id"]) for u, g in done.groupby("user_id")}
    out = {}
    for u in users["user_id"]:
        out[u] = UserHistory(
            fitness_level=str(profiles["fitness_level"].get(u, UNKNOWN)),
            region=str(profiles["region"].get(u, UNKNOWN)),
            category_counts=cat_by.get(u, {}),
            engaged=eng_by.get(u, frozenset()),
            impressions_7d=imp_by.get(u, {}),
            completed_recent=done_by.get(u, frozenset()),
        )
    return out


def cross_features(
    history: UserHistory, item_ids: Sequence[str], categories: Sequence[str], difficulty: np.ndarray
) -> pd.DataFrame:
    """``cross_feature_columns`` as a frame: one row per item, the ``CROSS_FEATURES`` columns."""
    return pd.DataFrame(cross_feature_columns(history, item_ids, categories, difficulty))


def cross_feature_columns(
    history: UserHistory,
    item_ids: Sequence[str] | np.ndarray,
    categories: Sequence[str] | np.ndarray,
    difficulty: np.ndarray,
) -> dict[str, np.ndarray]:
    """``CROSS_FEATURES`` of one user against ``item_ids``.

    Args:
        history: the user's history record.
        item_ids: candidate item ids.
        categories: each item's category (``unknown`` when the catalog lacks it).
        difficulty: each item's difficulty ordinal (NaN when unknown), float array.

    Returns:
        The ``CROSS_FEATURES`` columns in that order, each a float64 array, item by item.
    """
    total = sum(history.category_counts.values())
    affinity = np.array(
        [history.category_counts.get(c, 0) / total if total else 0.0 for c in categories],
        dtype=float,
    )
    level = LEVEL_ORDINAL.get(history.fitness_level)
    gap = np.asarray(difficulty, dtype=float) - (np.nan if level is None else float(level))
    engaged = np.array([1.0 if i in history.engaged else 0.0 for i in item_ids])
    imps = np.array([float(history.impressions_7d.get(i, 0)) for i in item_ids])
    columns = {
        "x_category_affinity": affinity,
        "x_difficulty_gap": gap,
        "x_item_engaged_before": engaged,
        "x_item_impressions_7d": imps,
    }
    return {name: columns[name] for name in CROSS_FEATURES}
