"""Catalog and member profiles from the landing zone, with defaults when either is missing.

A real interaction log may come without a catalog or profiles. Then every item seen in events
gets ``unknown`` content attributes (and its first event time as publish time) and every user an
``unknown`` fitness level and region, so downstream features take defaults instead of failing.

Every catalog item has a lifecycle ``status`` (``CATALOG_STATUSES``); only ``LIVE_STATUS`` items
may be served. The back office lands a status change as the item's full row in a later file.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd
import pandera.pandas as pa
from numpy.typing import ArrayLike

from fitpulse_orchestration import layout
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.storage import ObjectStore
from fitpulse_orchestration.storage.tables import read_parquet_prefix

UNKNOWN: Final = "unknown"
DIFFICULTY_ORDINAL: Final = {"beginner": 0, "intermediate": 1, "advanced": 2}
INTENSITY_ORDINAL: Final = {"low": 0, "medium": 1, "high": 2}
LEVEL_ORDINAL: Final = {"beginner": 0, "intermediate": 1, "advanced": 2}

CATALOG_STATUSES: Final = ("published", "unpublished", "flagged")
"""Lifecycle of a catalog item: live, taken down by the back office, or pulled by content
moderation as unsafe (``flagged``)."""
LIVE_STATUS: Final = "published"
"""The only status whose items may be served."""


def _default_status(catalog: pd.DataFrame) -> pd.DataFrame:
    """Give rows without a status ``LIVE_STATUS``.

    Catalog files landed before items had a status carry no ``status`` column; they were
    publications.
    """
    if "status" not in catalog.columns:
        return catalog.assign(status=LIVE_STATUS)
    return catalog.assign(status=catalog["status"].fillna(LIVE_STATUS))


CATALOG_SCHEMA = pa.DataFrameSchema(
    {
        "item_id": pa.Column(str, unique=True),
        "item_type": pa.Column(str),
        "title": pa.Column(str),
        "category": pa.Column(str),
        "difficulty": pa.Column(str, pa.Check.isin([*DIFFICULTY_ORDINAL, UNKNOWN])),
        "intensity": pa.Column(str, pa.Check.isin([*INTENSITY_ORDINAL, UNKNOWN])),
        "duration_min": pa.Column(float, nullable=True),
        "equipment": pa.Column(str),
        "tags": pa.Column(str),
        "published_at": pa.Column(pd.DatetimeTZDtype(tz="UTC")),
        "status": pa.Column(str, pa.Check.isin(CATALOG_STATUSES)),
    },
    strict=True,
    coerce=True,
    # Runs before the column checks, so old-format frames (no status) validate as published.
    parsers=pa.Parser(_default_status),
    name="catalog",
)

PROFILES_SCHEMA = pa.DataFrameSchema(
    {
        "user_id": pa.Column(str, unique=True),
        "signup_at": pa.Column(pd.DatetimeTZDtype(tz="UTC"), nullable=True),
        "region": pa.Column(str),
        "timezone": pa.Column(str),
        "fitness_level": pa.Column(str, pa.Check.isin([*LEVEL_ORDINAL, UNKNOWN])),
        "goals": pa.Column(str),
        "push_opt_out": pa.Column(bool),
    },
    strict=True,
    coerce=True,
    name="member_profiles",
)


def load_catalog(store: ObjectStore) -> pd.DataFrame:
    """Latest version of every landed catalog item (later landing files win).

    Files are read in key order, which ``layout`` makes chronological for each item: days in
    date order and, within a day, the ``updates-HH`` files after that day's publications. A
    missing or null ``status`` (files landed before items had one) reads as ``LIVE_STATUS``.

    Raises:
        pandera.errors.SchemaError: a row breaks ``CATALOG_SCHEMA``, e.g. a status outside
            ``CATALOG_STATUSES``.
    """
    frames = read_parquet_prefix(store, f"{layout.LANDING_CATALOG}/")
    if not frames:
        return CATALOG_SCHEMA.validate(pd.DataFrame(columns=list(CATALOG_SCHEMA.columns)))
    catalog = pd.concat(frames, ignore_index=True).drop_duplicates("item_id", keep="last")
    catalog["duration_min"] = catalog["duration_min"].astype(float)
    validated: pd.DataFrame = CATALOG_SCHEMA.validate(catalog.reset_index(drop=True))
    return validated


def load_profiles(store: ObjectStore, pseudonymizer: Pseudonymizer) -> pd.DataFrame:
    """Latest landed profile of every member, with ``user_id`` pseudonymized."""
    frames = read_parquet_prefix(store, f"{layout.LANDING_USERS}/")
    if not frames:
        return PROFILES_SCHEMA.validate(pd.DataFrame(columns=list(PROFILES_SCHEMA.columns)))
    profiles = pd.concat(frames, ignore_index=True).drop_duplicates("user_id", keep="last")
    profiles["user_id"] = pseudonymizer.pseudonymize_many(profiles["user_id"].astype(str))
    validated: pd.DataFrame = PROFILES_SCHEMA.validate(profiles.reset_index(drop=True))
    return validated


def complete_catalog(catalog: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Add items that appear in events but not in the catalog, with unknown attributes.

    Their ``published_at`` is the first time any event mentions them, and their status
    ``LIVE_STATUS``: events show them being used.
    """
    first_seen = events.dropna(subset=["item_id"]).groupby("item_id")["ts"].min()
    missing = first_seen[~first_seen.index.isin(catalog["item_id"])]
    if missing.empty:
        return catalog.reset_index(drop=True)
    extra = pd.DataFrame(
        {
            "item_id": missing.index.astype(str),
            "item_type": UNKNOWN,
            "title": missing.index.astype(str),
            "category": UNKNOWN,
            "difficulty": UNKNOWN,
            "intensity": UNKNOWN,
            "duration_min": np.nan,
            "equipment": UNKNOWN,
            "tags": "",
            "published_at": missing.to_numpy(),
            "status": LIVE_STATUS,
        }
    )
    merged = pd.concat([catalog, extra], ignore_index=True) if len(catalog) else extra
    validated: pd.DataFrame = CATALOG_SCHEMA.validate(merged)
    return validated


def complete_profiles(profiles: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Add users who appear in events but have no profile, with unknown attributes."""
    users = pd.Index(events["user_id"].unique())
    missing = users[~users.isin(profiles["user_id"])]
    if missing.empty:
        return profiles.reset_index(drop=True)
    extra = pd.DataFrame(
        {
            "user_id": missing.astype(str),
            "signup_at": pd.NaT,
            "region": UNKNOWN,
            "timezone": "UTC",
            "fitness_level": UNKNOWN,
            "goals": "",
            "push_opt_out": False,
        }
    )
    merged = pd.concat([profiles, extra], ignore_index=True) if len(profiles) else extra
    validated: pd.DataFrame = PROFILES_SCHEMA.validate(merged)
    return validated


def live_items(catalog: pd.DataFrame) -> pd.Series:
    """Boolean per catalog row: the item is live (``status`` is ``LIVE_STATUS``).

    Unpublished and flagged items stay in the catalog, so that their past events keep their
    attributes, but must not be served. A missing or null status counts as live, as when
    loading (``_default_status``): landed rows without one were publications.
    """
    return _default_status(catalog)["status"] == LIVE_STATUS


def profile_attributes(profiles: pd.DataFrame, user_ids: ArrayLike) -> pd.DataFrame:
    """``user_id``, ``fitness_level`` and ``region`` of each of ``user_ids``, in order.

    Repeated ids repeat their row; an id without a profile gets ``UNKNOWN`` for both.
    """
    latest = profiles.drop_duplicates("user_id", keep="last").set_index("user_id")
    ids = pd.Index(pd.Series(user_ids, dtype=object).astype(str))
    return pd.DataFrame(
        {
            "user_id": ids.to_numpy(),
            "fitness_level": latest["fitness_level"].reindex(ids).fillna(UNKNOWN).to_numpy(),
            "region": latest["region"].reindex(ids).fillna(UNKNOWN).to_numpy(),
        }
    )


def publish_time_known(catalog: pd.DataFrame) -> pd.Series:
    """Boolean per catalog row: the publish time came from the catalog, not from events.

    Items added by ``complete_catalog`` get their first event time as ``published_at``; that is
    no publication. Used as an age or freshness signal it leaks the label (an item's first
    engagement is always "brand new"), so such items have no age and are never "fresh".
    """
    return catalog["item_type"] != UNKNOWN


def publication_times(catalog: pd.DataFrame) -> pd.Series:
    """``published_at`` by item id, NaT where the time was inferred from events.

    Age and freshness use these; availability ("published before ``as_of``") still uses the
    catalog's ``published_at``, inferred or not.
    """
    known = catalog["published_at"].where(publish_time_known(catalog))
    return known.set_axis(catalog["item_id"].to_numpy())


def treated_as_beginner(fitness_level: object) -> bool:
    """Whether the beginner-safety rule applies to a member of ``fitness_level``.

    Beginners, and every member whose level is not a known one (``unknown``, a missing or
    garbled profile): the rule cannot tell them apart from beginners, so it must hold for
    them. One rule for the served feed, push, the offline feeds and their checks.
    """
    return LEVEL_ORDINAL.get(fitness_level, 0) == 0 if isinstance(fitness_level, str) else True


def unsafe_for_beginners(catalog: pd.DataFrame) -> pd.Series:
    """Boolean per catalog row: advanced, high-intensity, or of unknown difficulty/intensity.

    Unknown content is treated as unsafe: the guardrail must hold even without a catalog.
    """
    return catalog["difficulty"].isin(["advanced", UNKNOWN]) | catalog["intensity"].isin(
        ["high", UNKNOWN]
    )
