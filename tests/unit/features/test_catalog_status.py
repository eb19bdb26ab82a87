from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.errors
import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.features.reference import (
    CATALOG_SCHEMA,
    CATALOG_STATUSES,
    LIVE_STATUS,
    complete_catalog,
    live_items,
    load_catalog,
)
from fitpulse_orchestration.storage import LocalObjectStore, ObjectStore, write_parquet

D1 = dt.date(2026, 10, 1)
D2 = dt.date(2026, 10, 2)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _item(item_id: str, **fields: Any) -> dict[str, Any]:
    """A catalog row in the format landed before items had a status."""
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
