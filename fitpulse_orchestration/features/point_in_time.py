"""Point-in-time user, item and user x item features, computed with DuckDB.

One code path serves offline training examples, the feature tables and (later) online lookups:
every function takes a *spine* of entities with an ``as_of`` timestamp and uses only events
strictly before each row's ``as_of``. User aggregates use exact timestamps; item aggregates use
whole days before the ``as_of`` day (item counters refresh daily, like a batch feature).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import duckdb
import numpy as np
import pandas as pd
import pandera.pandas as pa

from fitpulse_orchestration.events.schema import COLD_THRESHOLD, ENGAGEMENT_GRADE
from fitpulse_orchestration.features.reference import (
    DIFFICULTY_ORDINAL,
    INTENSITY_ORDINAL,
    LEVEL_ORDINAL,
    UNKNOWN,
    publication_times,
)

USER_FEATURES: Final = (
    "u_engaged_7d",
    "u_engaged_28d",
    "u_completes_28d",
    "u_impressions_28d",
    "u_ctr_28d",
    "u_active_days_28d",
    "u_days_since_engaged",
    "u_push_open_rate_28d",
    "u_level",
    "u_tenure_days",
    "u_is_cold",
)
ITEM_FEATURES: Final = (
    "i_impressions_7d",
    "i_engaged_7d",
    "i_engaged_28d",
    "i_ctr_7d",
    "i_age_days",
    "i_difficulty",
    "i_intensity",
    "i_duration_min",
    "i_type",
    "i_category",
)
CROSS_FEATURES: Final = (
    "x_category_affinity",
    "x_difficulty_gap",
    "x_item_engaged_before",
    "x_item_impressions_7d",
)
NO_HISTORY_DAYS: Final = 29.0
"""``u_days_since_engaged`` of a user without engagement in the 28-day window."""

ITEM_TYPES: Final = ("workout", "plan", "article", "video")
CATEGORY_CODES: Final = (
    "strength", "cardio", "yoga", "hiit", "running",
    "mobility", "meditation", "nutrition", "cycling", "pilates", "dance",
)  # fmt: skip


@dataclass(frozen=True)
class FeatureInputs:
    """Everything features are computed from.

    ``events`` follows the clean-events schema (``user_id`` pseudonymized); ``catalog`` and
    ``profiles`` come from ``reference`` (completed with defaults for unknown ids).
    """

    events: pd.DataFrame
    catalog: pd.DataFrame
    profiles: pd.DataFrame


def _naive(ts: pd.Series) -> pd.Series:
    """UTC timestamps without a zone, so DuckDB compares plain TIMESTAMPs."""
    out: pd.Series = pd.to_datetime(ts, utc=True).dt.tz_localize(None).astype("datetime64[us]")
    return out


def connect_events(inputs: FeatureInputs) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with an ``events`` table (grade and item category joined)."""
    con = duckdb.connect()
    ev = inputs.events[["user_id", "item_id", "event_type", "ts"]].copy()
    ev["ts"] = _naive(ev["ts"])
    grades = pd.DataFrame(
        {"event_type": list(ENGAGEMENT_GRADE), "grade": list(ENGAGEMENT_GRADE.values())}
    )
    cat = inputs.catalog[["item_id", "category", "published_at"]].copy()
    cat["published_at"] = _naive(cat["published_at"])
    con.register("events_raw", ev)
    con.register("grades", grades)
    con.register("catalog", cat)
    con.execute(
        """
        CREATE TEMP TABLE events AS
        SELECT e.user_id, e.item_id, e.event_type, e.ts, CAST(e.ts AS DATE) AS day,
               COALESCE(g.grade, -1) AS grade, COALESCE(c.category, 'unknown') AS category
        FROM events_raw e
        LEFT JOIN grades g USING (event_type)
        LEFT JOIN catalog c USING (item_id)
        """
    )
    return con


def _spine(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    spine = frame[[*keys, "as_of"]].drop_duplicates().reset_index(drop=True)
    spine["as_of"] = _naive(spine["as_of"])
    return spine


def compute_user_features(inputs: FeatureInputs, spine: pd.DataFrame) -> pd.DataFrame:
    """User features as of each spine row.

    Args:
        inputs: events, catalog and profiles.
        spine: ``user_id`` and ``as_of`` (UTC timestamps); duplicates are computed once.

    Returns:
        One row per distinct ``(user_id, as_of)`` with ``USER_FEATURES`` (float64).
    """
    con = connect_events(inputs)
    con.register("spine", _spine(spine, ["user_id"]))
    agg = con.execute(
        """
        SELECT s.user_id, s.as_of,
          COUNT(*) FILTER (WHERE e.grade >= 1 AND e.ts >= s.as_of - INTERVAL 7 DAY) AS u_engaged_7d,
          COUNT(*) FILTER (WHERE e.grade >= 1) AS u_engaged_28d,
          COUNT(*) FILTER (WHERE e.event_type = 'workout_complete') AS u_completes_28d,
          COUNT(*) FILTER (WHERE e.event_type = 'impression') AS u_impressions_28d,
          COUNT(*) FILTER (WHERE e.event_type = 'click') AS u_clicks_28d,
          COUNT(DISTINCT e.day) AS u_active_days_28d,
          MAX(e.ts) FILTER (WHERE e.grade >= 1) AS last_engaged,
          COUNT(*) FILTER (WHERE e.event_type = 'push_sent') AS u_push_sent,
          COUNT(*) FILTER (WHERE e.event_type = 'push_open') AS u_push_open
        FROM spine s
        LEFT JOIN events e
          ON e.user_id = s.user_id AND e.ts < s.as_of AND e.ts >= s.as_of - INTERVAL 28 DAY
        GROUP BY s.user_id, s.as_of
        """
    ).df()
    con.close()
    agg["u_ctr_28d"] = (agg["u_clicks_28d"] + 1.0) / (agg["u_impressions_28d"] + 20.0)
    since = (agg["as_of"] - agg["last_engaged"]).dt.total_seconds() / 86400.0
    agg["u_days_since_engaged"] = since.fillna(NO_HISTORY_DAYS)
    agg["u_push_open_rate_28d"] = (agg["u_push_open"] + 0.5) / (agg["u_push_sent"] + 5.0)
    agg["u_is_cold"] = (agg["u_engaged_28d"] < COLD_THRESHOLD).astype(float)
    profiles = inputs.profiles.set_index("user_id")
    level = agg["user_id"].map(profiles["fitness_level"]).fillna(UNKNOWN)
    agg["u_level"] = level.map(LEVEL_ORDINAL).astype(float)
    signup = _naive(agg["user_id"].map(profiles["signup_at"]))
    agg["u_tenure_days"] = (agg["as_of"] - signup).dt.total_seconds() / 86400.0
    agg["fitness_level"] = level
    agg["region"] = agg["user_id"].map(profiles["region"]).fillna(UNKNOWN)
    out = agg[["user_id", "as_of", "fitness_level", "region", *USER_FEATURES]].copy()
    out[list(USER_FEATURES)] = out[list(USER_FEATURES)].astype(float)
    return out


def compute_item_features(inputs: FeatureInputs, spine: pd.DataFrame) -> pd.DataFrame:
    """Item features as of each spine row (counts over the 7 or 28 whole days before its day).

    Args:
        inputs: events, catalog and profiles.
        spine: ``item_id`` and ``as_of``.

    Returns:
        One row per distinct ``(item_id, as_of)`` with ``ITEM_FEATURES`` (float64).
    """
    con = connect_events(inputs)
    con.register("spine", _spine(spine, ["item_id"]))
    agg = con.execute(
        """
        WITH daily AS (
          SELECT item_id, day,
                 COUNT(*) FILTER (WHERE event_type = 'impression') AS imps,
                 COUNT(*) FILTER (WHERE grade >= 1) AS engaged
          FROM events WHERE item_id IS NOT NULL GROUP BY item_id, day
        )
        SELECT s.item_id, s.as_of,
               COALESCE(SUM(d.imps) FILTER (WHERE d.day >= CAST(s.as_of AS DATE) - 7), 0)
                 AS i_impressions_7d,
               COALESCE(SUM(d.engaged) FILTER (WHERE d.day >= CAST(s.as_of AS DATE) - 7), 0)
                 AS i_engaged_7d,
               COALESCE(SUM(d.engaged), 0) AS i_engaged_28d
        FROM spine s
        LEFT JOIN daily d
          ON d.item_id = s.item_id AND d.day < CAST(s.as_of AS DATE)
         AND d.day >= CAST(s.as_of AS DATE) - 28
        GROUP BY s.item_id, s.as_of
        """
    ).df()
    con.close()
    agg["i_ctr_7d"] = (agg["i_engaged_7d"] + 1.0) / (agg["i_impressions_7d"] + 20.0)
    catalog = inputs.catalog.set_index("item_id")
    published = _naive(agg["item_id"].map(publication_times(inputs.catalog)))
    agg["i_age_days"] = ((agg["as_of"] - published).dt.total_seconds() / 86400.0).clip(lower=0)
    agg["i_difficulty"] = agg["item_id"].map(catalog["difficulty"]).map(DIFFICULTY_ORDINAL)
    agg["i_intensity"] = agg["item_id"].map(catalog["intensity"]).map(INTENSITY_ORDINAL)
    agg["i_duration_min"] = agg["item_id"].map(catalog["duration_min"])
    agg["i_type"] = (
        agg["item_id"].map(catalog["item_type"]).map({t: i for i, t in enumerate(ITEM_TYPES)})
    )
    agg["i_category"] = (
        agg["item_id"].map(catalog["category"]).map({c: i for i, c in enumerate(CATEGORY_CODES)})
    )
    out = agg[["item_id", "as_of", *ITEM_FEATURES]].copy()
    out[list(ITEM_FEATURES)] = out[list(ITEM_FEATURES)].astype(float)
    return out


def compute_cross_features(inputs: FeatureInputs, spine: pd.DataFrame) -> pd.DataFrame:
    """User x item features as of each spine row.

    ``x_category_affinity`` is the share of the user's engagements in the 28 days before
    ``as_of`` that fell in the item's category (0 without history); ``x_difficulty_gap`` is item
    difficulty minus user level (NaN when either is unknown).

    Args:
        inputs: events, catalog and profiles.
        spine: ``user_id``, ``item_id`` and ``as_of``.

    Returns:
        One row per distinct ``(user_id, item_id, as_of)`` with ``CROSS_FEATURES``.
    """
    con = connect_events(inputs)
    sp = _spine(spine, ["user_id", "item_id"])
    con.register("spine", sp)
    agg = con.execute(
        """
        WITH s AS (
          SELECT sp.*, COALESCE(c.category, 'unknown') AS category
          FROM spine sp LEFT JOIN catalog c USING (item_id)
        ),
        ua AS (
          SELECT DISTINCT user_id, as_of FROM spine
        ),
        user_cat AS (
          SELECT ua.user_id, ua.as_of, e.category, COUNT(*) AS n
          FROM ua JOIN events e
            ON e.user_id = ua.user_id AND e.ts < ua.as_of AND e.ts >= ua.as_of - INTERVAL 28 DAY
           AND e.grade >= 1
          GROUP BY ua.user_id, ua.as_of, e.category
        ),
        user_tot AS (
          SELECT user_id, as_of, SUM(n) AS total FROM user_cat GROUP BY user_id, as_of
        ),
        user_item AS (
          SELECT s.user_id, s.item_id, s.as_of,
                 COUNT(*) FILTER (WHERE e.grade >= 1) AS engaged,
                 COUNT(*) FILTER (WHERE e.event_type = 'impression'
                                  AND e.ts >= s.as_of - INTERVAL 7 DAY) AS imps
          FROM s JOIN events e
            ON e.user_id = s.user_id AND e.item_id = s.item_id AND e.ts < s.as_of
          GROUP BY s.user_id, s.item_id, s.as_of
        )
        SELECT s.user_id, s.item_id, s.as_of,
               COALESCE(uc.n / NULLIF(ut.total, 0), 0.0) AS x_category_affinity,
               CAST(COALESCE(ui.engaged, 0) > 0 AS DOUBLE) AS x_item_engaged_before,
               COALESCE(ui.imps, 0) AS x_item_impressions_7d
        FROM s
        LEFT JOIN user_cat uc
          ON uc.user_id = s.user_id AND uc.as_of = s.as_of AND uc.category = s.category
        LEFT JOIN user_tot ut ON ut.user_id = s.user_id AND ut.as_of = s.as_of
        LEFT JOIN user_item ui
          ON ui.user_id = s.user_id AND ui.item_id = s.item_id AND ui.as_of = s.as_of
        """
    ).df()
    con.close()
    levels = agg["user_id"].map(inputs.profiles.set_index("user_id")["fitness_level"])
    difficulty = agg["item_id"].map(inputs.catalog.set_index("item_id")["difficulty"])
    agg["x_difficulty_gap"] = difficulty.map(DIFFICULTY_ORDINAL) - levels.map(LEVEL_ORDINAL)
    out = agg[["user_id", "item_id", "as_of", *CROSS_FEATURES]].copy()
    out[list(CROSS_FEATURES)] = out[list(CROSS_FEATURES)].astype(float)
    return out


def attach_features(inputs: FeatureInputs, frame: pd.DataFrame) -> pd.DataFrame:
    """Join user, item and cross features onto ``frame`` (``user_id``, ``item_id``, ``as_of``).

    The output keeps ``frame``'s rows and order and adds every feature column.
    """
    base = frame.copy()
    base["as_of"] = _naive(base["as_of"])
    users = compute_user_features(inputs, base)
    items = compute_item_features(inputs, base)
    cross = compute_cross_features(inputs, base)
    out = base.merge(users, on=["user_id", "as_of"], how="left")
    out = out.merge(items, on=["item_id", "as_of"], how="left")
    out = out.merge(cross, on=["user_id", "item_id", "as_of"], how="left")
    if len(out) != len(frame):
        raise AssertionError("feature joins must not change the number of rows")
    return out


USER_FEATURES_SCHEMA = pa.DataFrameSchema(
    {
        "user_id": pa.Column(str, unique=True),
        "as_of": pa.Column("datetime64[us]"),
        "fitness_level": pa.Column(str),
        "region": pa.Column(str),
        **{
            name: pa.Column(float, pa.Check.ge(0), nullable=name in ("u_level", "u_tenure_days"))
            for name in USER_FEATURES
        },
    },
    name="user_features",
)
ITEM_FEATURES_SCHEMA = pa.DataFrameSchema(
    {
        "item_id": pa.Column(str, unique=True),
        "as_of": pa.Column("datetime64[us]"),
        **{name: pa.Column(float, pa.Check.ge(0), nullable=True) for name in ITEM_FEATURES},
    },
    name="item_features",
)


def snapshot_user_features(inputs: FeatureInputs, as_of: pd.Timestamp) -> pd.DataFrame:
    """Features of every user who signed up or was active before ``as_of`` (validated)."""
    profiles = inputs.profiles
    signed_up = profiles["signup_at"].isna() | (profiles["signup_at"] < as_of)
    active = inputs.events.loc[inputs.events["ts"] < as_of, "user_id"].unique()
    users = pd.Index(profiles.loc[signed_up, "user_id"]).union(pd.Index(active))
    spine = pd.DataFrame({"user_id": users.astype(str), "as_of": as_of})
    validated: pd.DataFrame = USER_FEATURES_SCHEMA.validate(compute_user_features(inputs, spine))
    return validated


def snapshot_item_features(inputs: FeatureInputs, as_of: pd.Timestamp) -> pd.DataFrame:
    """Features of every catalog item published before ``as_of`` (validated)."""
    published = inputs.catalog["published_at"] < as_of
    spine = pd.DataFrame(
        {"item_id": inputs.catalog.loc[published, "item_id"].astype(str), "as_of": as_of}
    )
    validated: pd.DataFrame = ITEM_FEATURES_SCHEMA.validate(compute_item_features(inputs, spine))
    return validated


def feature_columns(include_als: bool = True) -> list[str]:
    """The ranker's feature columns, in model order.

    ``include_als`` adds the retrieval-derived features (``als_score``, ``x_source``), which
    come from the feed model rather than from events.
    """
    cols = [*USER_FEATURES, *ITEM_FEATURES, *CROSS_FEATURES]
    return [*cols, "als_score", "x_source"] if include_als else cols


def as_float_matrix(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The ``columns`` of ``frame`` as a C-contiguous float32 matrix (NaN for missing)."""
    return np.ascontiguousarray(frame[columns].to_numpy(dtype=np.float32, na_value=np.nan))
