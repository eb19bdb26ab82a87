from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.errors
import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.ingest import read_clean_events
from fitpulse_orchestration.events.schema import CLEAN_EVENT_COLUMNS
from fitpulse_orchestration.features.reference import (
    CATALOG_SCHEMA,
    CATALOG_STATUSES,
    LIVE_STATUS,
    PROFILES_SCHEMA,
    UNKNOWN,
    complete_catalog,
    complete_profiles,
    live_items,
    load_catalog,
    load_profiles,
    publication_times,
    unsafe_for_beginners,
)
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.storage import (
    LocalObjectStore,
    ObjectStore,
    read_parquet,
    write_parquet,
)

D1 = dt.date(2026, 10, 1)
D2 = dt.date(2026, 10, 2)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _item(item_id: str, **fields: Any) -> dict[str, Any]:
    row = {
        "item_id": item_id,
        "item_type": "workout",
        "title": f"Title {item_id}",
        "category": "yoga",
        "difficulty": "beginner",
        "intensity": "low",
        "duration_min": 20,
        "equipment": "mat",
        "tags": "stretch,morning",
        "published_at": utc("2026-09-01"),
    }
    return {**row, **fields}


def _user(user_id: str, **fields: Any) -> dict[str, Any]:
    row = {
        "user_id": user_id,
        "signup_at": utc("2026-08-01"),
        "region": "uk",
        "timezone": "Europe/London",
        "fitness_level": "beginner",
        "goals": "flexibility",
        "push_opt_out": False,
    }
    return {**row, **fields}


def _events(rows: list[dict[str, Any]]) -> pd.DataFrame:
    full = [
        {col: None for col in CLEAN_EVENT_COLUMNS}
        | {"event_id": f"e{i}", "source_file": "f", "line_no": i + 1}
        | row
        for i, row in enumerate(rows)
    ]
    frame = pd.DataFrame(full, columns=list(CLEAN_EVENT_COLUMNS))
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def _ev(event_type: str, user: str, ts: str, item: str | None = None, **extra: Any) -> dict:
    return {"event_type": event_type, "user_id": user, "item_id": item, "ts": ts, **extra}


def _catalog(*rows: dict[str, Any]) -> pd.DataFrame:
    return CATALOG_SCHEMA.validate(pd.DataFrame(list(rows)))


def _profiles(*rows: dict[str, Any]) -> pd.DataFrame:
    return PROFILES_SCHEMA.validate(pd.DataFrame(list(rows)))


def test_tiny_world_catalog_is_schema_valid_and_complete(tiny_world) -> None:
    catalog = load_catalog(tiny_world.store)

    CATALOG_SCHEMA.validate(catalog)
    assert len(catalog) == tiny_world.summary.n_items
    assert catalog["item_id"].is_unique
    window_end = pd.Timestamp(tiny_world.summary.params.end_date, tz="UTC") + pd.Timedelta(days=1)
    assert (catalog["published_at"] < window_end).all()


def test_tiny_world_profiles_are_pseudonymized_and_schema_valid(tiny_world) -> None:
    store = tiny_world.store
    params = tiny_world.summary.params
    profiles = load_profiles(store, tiny_world.pseudonymizer)
    raw = read_parquet(
        store, layout.landing_reference_key(layout.LANDING_USERS, params.start_date, "snapshot")
    )

    PROFILES_SCHEMA.validate(profiles)
    assert len(profiles) == tiny_world.summary.n_users
    assert profiles["user_id"].str.startswith("p_").all()
    assert set(tiny_world.pseudonymizer.pseudonymize_many(raw["user_id"])) <= set(
        profiles["user_id"]
    )
    assert not profiles["user_id"].isin(raw["user_id"]).any()


def test_tiny_world_events_need_no_completion(tiny_world) -> None:
    events = read_clean_events(tiny_world.store)
    catalog = load_catalog(tiny_world.store)
    profiles = load_profiles(tiny_world.store, tiny_world.pseudonymizer)

    assert len(complete_catalog(catalog, events)) == len(catalog)
    assert len(complete_profiles(profiles, events)) == len(profiles)


def test_later_landing_file_wins_for_catalog_items(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    write_parquet(
        store,
        layout.landing_reference_key(layout.LANDING_CATALOG, D1, "snapshot"),
        pd.DataFrame([_item("wk_a"), _item("wk_b")]),
    )
    write_parquet(
        store,
        layout.landing_reference_key(layout.LANDING_CATALOG, D2, "updates"),
        pd.DataFrame([_item("wk_a", difficulty="advanced", title="Renamed")]),
    )

    catalog = load_catalog(store).set_index("item_id")

    assert sorted(catalog.index) == ["wk_a", "wk_b"]
    assert catalog.loc["wk_a", "difficulty"] == "advanced"
    assert catalog.loc["wk_a", "title"] == "Renamed"
    assert catalog.loc["wk_b", "difficulty"] == "beginner"
    assert catalog["duration_min"].dtype == float


def test_later_landing_file_wins_for_profiles(tmp_path: Path, pseudonymizer: Pseudonymizer) -> None:
    store = LocalObjectStore(tmp_path / "store")
    write_parquet(
        store,
        layout.landing_reference_key(layout.LANDING_USERS, D1, "snapshot"),
        pd.DataFrame([_user("usr_1"), _user("usr_2")]),
    )
    write_parquet(
        store,
        layout.landing_reference_key(layout.LANDING_USERS, D2, "updates"),
        pd.DataFrame([_user("usr_1", fitness_level="intermediate")]),
    )

    profiles = load_profiles(store, pseudonymizer).set_index("user_id")

    assert sorted(profiles.index) == sorted(pseudonymizer.pseudonymize_many(["usr_1", "usr_2"]))
    assert profiles.loc[pseudonymizer.pseudonymize("usr_1"), "fitness_level"] == "intermediate"
    assert profiles.loc[pseudonymizer.pseudonymize("usr_2"), "fitness_level"] == "beginner"


def test_empty_landing_zone_gives_empty_schema_valid_tables(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    store = LocalObjectStore(tmp_path / "store")

    catalog = load_catalog(store)
    profiles = load_profiles(store, pseudonymizer)

    assert catalog.empty
    assert list(catalog.columns) == list(CATALOG_SCHEMA.columns)
    assert profiles.empty
    assert list(profiles.columns) == list(PROFILES_SCHEMA.columns)


def test_complete_catalog_adds_event_only_items_as_unknown() -> None:
    catalog = _catalog(_item("wk_a"))
    events = _events(
        [
            _ev("app_open", "p_1", "2026-10-01T07:00Z"),
            _ev("click", "p_1", "2026-10-03T09:00Z", "x_new"),
            _ev("impression", "p_2", "2026-10-02T08:00Z", "x_new", request_id="r"),
            _ev("click", "p_1", "2026-10-01T09:00Z", "wk_a"),
        ]
    )

    completed = complete_catalog(catalog, events)

    CATALOG_SCHEMA.validate(completed)
    assert list(completed["item_id"]) == ["wk_a", "x_new"]
    pd.testing.assert_series_equal(completed.iloc[0], catalog.iloc[0], check_names=False)
    new = completed.set_index("item_id").loc["x_new"]
    assert new["published_at"] == utc("2026-10-02T08:00")
    assert new["title"] == "x_new"
    assert new["tags"] == ""
    assert pd.isna(new["duration_min"])
    for column in ("item_type", "category", "difficulty", "intensity", "equipment"):
        assert new[column] == UNKNOWN


def test_complete_catalog_without_any_catalog(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    events = _events(
        [
            _ev("click", "p_1", "2026-10-03T09:00Z", "m_1"),
            _ev("click", "p_1", "2026-10-01T09:00Z", "m_2"),
        ]
    )

    completed = complete_catalog(load_catalog(store), events)

    assert sorted(completed["item_id"]) == ["m_1", "m_2"]
    assert (completed["difficulty"] == UNKNOWN).all()
    assert unsafe_for_beginners(completed).all()


def test_complete_profiles_adds_event_only_users_as_unknown() -> None:
    profiles = _profiles(_user("p_known"))
    events = _events(
        [
            _ev("app_open", "p_known", "2026-10-01T07:00Z"),
            _ev("app_open", "p_new", "2026-10-01T08:00Z"),
            _ev("app_open", "p_new", "2026-10-02T08:00Z"),
        ]
    )

    completed = complete_profiles(profiles, events)

    PROFILES_SCHEMA.validate(completed)
    assert list(completed["user_id"]) == ["p_known", "p_new"]
    pd.testing.assert_series_equal(completed.iloc[0], profiles.iloc[0], check_names=False)
    new = completed.set_index("user_id").loc["p_new"]
    assert pd.isna(new["signup_at"])
    assert (new["region"], new["fitness_level"], new["timezone"]) == (UNKNOWN, UNKNOWN, "UTC")
    assert new["goals"] == ""
    assert not new["push_opt_out"]


def test_complete_profiles_without_any_profile(
    pseudonymizer: Pseudonymizer, tmp_path: Path
) -> None:
    empty = load_profiles(LocalObjectStore(tmp_path / "store"), pseudonymizer)
    events = _events([_ev("app_open", "p_1", "2026-10-01T07:00Z")])

    completed = complete_profiles(empty, events)

    assert list(completed["user_id"]) == ["p_1"]
    assert list(completed["fitness_level"]) == [UNKNOWN]


@pytest.mark.parametrize(
    ("difficulty", "intensity", "unsafe"),
    [
        ("beginner", "low", False),
        ("beginner", "medium", False),
        ("intermediate", "low", False),
        ("intermediate", "medium", False),
        ("beginner", "high", True),
        ("intermediate", "high", True),
        ("advanced", "low", True),
        ("advanced", "high", True),
        (UNKNOWN, "low", True),
        ("beginner", UNKNOWN, True),
        (UNKNOWN, UNKNOWN, True),
    ],
)
def test_unsafe_for_beginners_truth_table(difficulty: str, intensity: str, unsafe: bool) -> None:
    catalog = _catalog(_item("wk_a", difficulty=difficulty, intensity=intensity))

    assert unsafe_for_beginners(catalog).tolist() == [unsafe]


def test_publication_times_hide_inferred_times_and_keep_the_dtype() -> None:
    published = pd.to_datetime(["2026-10-01", "2026-10-02"], utc=True)
    catalog = pd.DataFrame(
        {
            "item_id": ["cat", "inferred"],
            "item_type": ["workout", UNKNOWN],
            "published_at": published,
        }
    )
    times = publication_times(catalog)

    assert times["cat"] == published[0]
    assert pd.isna(times["inferred"])
    # All-inferred catalogs (an imported log) must still compare as timestamps, not objects.
    only_inferred = publication_times(catalog.assign(item_type=UNKNOWN))
    assert str(only_inferred.dtype) == "datetime64[ns, UTC]"
    assert not (only_inferred >= published[0]).any()


# Catalog status: published, unpublished (back office) or flagged (moderation).


def _land(store: ObjectStore, day: dt.date, name: str, *rows: dict[str, Any]) -> None:
    write_parquet(
        store,
        layout.landing_reference_key(layout.LANDING_CATALOG, day, name),
        pd.DataFrame(list(rows)),
    )


def _statuses(store: ObjectStore) -> dict[str, str]:
    return load_catalog(store).set_index("item_id")["status"].to_dict()


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


def test_statuses_are_published_unpublished_and_flagged() -> None:
    assert CATALOG_STATUSES == ("published", "unpublished", "flagged")
    assert LIVE_STATUS == "published"


def test_old_format_file_without_status_loads_as_published(store: LocalObjectStore) -> None:
    _land(store, D1, "snapshot", _item("wk_a"), _item("wk_b"))

    catalog = load_catalog(store)

    assert list(catalog.columns) == list(CATALOG_SCHEMA.columns)
    assert _statuses(store) == {"wk_a": LIVE_STATUS, "wk_b": LIVE_STATUS}


def test_old_and_new_format_files_load_together(store: LocalObjectStore) -> None:
    _land(store, D1, "snapshot", _item("wk_a"), _item("wk_b"))
    _land(store, D2, "items-07", _item("wk_c", status="flagged"), _item("wk_d", status=None))

    assert _statuses(store) == {
        "wk_a": LIVE_STATUS,
        "wk_b": LIVE_STATUS,
        "wk_c": "flagged",
        "wk_d": LIVE_STATUS,
    }


def test_update_file_wins_over_publications_of_its_day_and_earlier_days(
    store: LocalObjectStore,
) -> None:
    _land(store, D1, "snapshot", _item("wk_old"))
    _land(store, D1, "items-05", _item("wk_new", status="published"))
    _land(store, D1, "updates-00", _item("wk_old", status="flagged"))
    _land(store, D1, "updates-05", _item("wk_new", status="unpublished", title="Gone"))
    _land(store, D2, "items-00", _item("wk_other", status="published"))

    catalog = load_catalog(store).set_index("item_id")

    assert catalog.loc["wk_old", "status"] == "flagged"
    assert catalog.loc["wk_new", "status"] == "unpublished"
    assert catalog.loc["wk_new", "title"] == "Gone"
    assert catalog.loc["wk_other", "status"] == LIVE_STATUS


def test_later_update_wins_over_earlier_update(store: LocalObjectStore) -> None:
    _land(store, D1, "items-03", _item("wk_a", status="published"))
    _land(store, D1, "updates-09", _item("wk_a", status="unpublished"))
    _land(store, D1, "updates-21", _item("wk_a", status="flagged"))
    _land(store, D2, "updates-02", _item("wk_a", status="published"))

    assert _statuses(store) == {"wk_a": LIVE_STATUS}


def test_update_keys_sort_after_publication_keys_of_their_day() -> None:
    def key(day: dt.date, name: str) -> str:
        return layout.landing_reference_key(layout.LANDING_CATALOG, day, name)

    chronological = [
        key(D1, "items-05"),
        key(D1, "items-23"),
        key(D1, "snapshot"),
        key(D1, "updates-00"),
        key(D1, "updates-05"),
        key(D1, "updates-23"),
        key(D2, "items-00"),
        key(D2, "updates-00"),
    ]

    assert sorted(reversed(chronological)) == chronological


def test_invalid_status_fails_validation(store: LocalObjectStore) -> None:
    _land(store, D1, "items-05", _item("wk_a", status="deleted"))

    with pytest.raises(pandera.errors.SchemaError, match=r"(?s)'status'.*isin.*deleted"):
        load_catalog(store)


def test_complete_catalog_marks_inferred_items_published(store: LocalObjectStore) -> None:
    _land(store, D1, "snapshot", _item("wk_a", status="flagged"))
    events = pd.DataFrame(
        {
            "item_id": ["wk_a", "x_new", None],
            "ts": [utc("2026-10-01T09:00"), utc("2026-10-02T08:00"), utc("2026-10-02T09:00")],
        }
    )

    completed = complete_catalog(load_catalog(store), events).set_index("item_id")

    assert completed["status"].to_dict() == {"wk_a": "flagged", "x_new": LIVE_STATUS}


def test_live_items_are_the_published_ones(store: LocalObjectStore) -> None:
    _land(
        store,
        D1,
        "items-05",
        _item("wk_a", status="published"),
        _item("wk_b", status="unpublished"),
        _item("wk_c", status="flagged"),
        _item("wk_d"),
    )
    catalog = load_catalog(store)

    live = live_items(catalog)

    assert live.dtype == bool
    assert list(catalog.loc[live, "item_id"]) == ["wk_a", "wk_d"]
    assert live.index.equals(catalog.index)
