from __future__ import annotations

import datetime as dt

import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.retrieval.catalog_watch import (
    CatalogBatch,
    CatalogCursor,
    new_catalog_files,
)


def _key(day: str, name: str) -> str:
    return layout.landing_reference_key(layout.LANDING_CATALOG, dt.date.fromisoformat(day), name)


FIRST_DAYS = [
    _key("2026-10-19", "snapshot"),
    _key("2026-10-19", "items-03"),
    _key("2026-10-20", "items-01"),
    _key("2026-10-21", "items-05"),
    _key("2026-10-21", "updates-07"),
    _key("2026-10-22", "items-02"),
]


def test_first_call_is_initial_with_every_key() -> None:
    batch = new_catalog_files(reversed(FIRST_DAYS), CatalogCursor())

    assert batch.initial
    assert batch.files == sorted(FIRST_DAYS)
    assert batch.run_key.startswith("catalog:initial:")
    assert batch.cursor.since == "2026-10-20"
    assert batch.cursor.keys == frozenset(k for k in FIRST_DAYS if "2026-10-19" not in k)


def test_later_calls_return_only_new_keys() -> None:
    first = new_catalog_files(FIRST_DAYS, CatalogCursor())
    landed = [_key("2026-10-22", "updates-09"), _key("2026-10-23", "items-00")]

    second = new_catalog_files([*FIRST_DAYS, *landed], first.cursor)
    third = new_catalog_files([*FIRST_DAYS, *landed], second.cursor)

    assert not second.initial
    assert second.files == sorted(landed)
    assert second.run_key.startswith("catalog:update:")
    assert second.cursor.since == "2026-10-21"
    assert third.files == []
    assert not third.initial
    assert third.cursor == second.cursor


def test_late_keys_of_days_before_the_window_are_ignored() -> None:
    first = new_catalog_files(FIRST_DAYS, CatalogCursor())
    late = [_key("2026-10-19", "updates-23"), _key("2026-10-20", "updates-23")]

    batch = new_catalog_files([*FIRST_DAYS, *late], first.cursor)

    assert batch.files == [_key("2026-10-20", "updates-23")]
    assert _key("2026-10-19", "updates-23") not in batch.cursor.keys


def test_window_moves_with_the_newest_day() -> None:
    cursor = CatalogCursor()
    keys: list[str] = []
    requested: list[str] = []
    for day in range(19, 31):
        keys.append(_key(f"2026-10-{day}", "items-00"))
        batch = new_catalog_files(keys, cursor, window_days=2)
        requested.extend(batch.files)
        cursor = batch.cursor
        assert {layout.date_of_key(k) for k in cursor.keys} <= {
            dt.date(2026, 10, day - 1),
            dt.date(2026, 10, day),
        }

    assert requested == keys
    assert cursor.since == "2026-10-29"


def test_non_parquet_keys_are_ignored() -> None:
    noise = [
        "landing/catalog/date=2026-10-22/_SUCCESS",
        "landing/catalog/date=2026-10-22/items-09.parquet.tmp",
        "landing/catalog/README.md",
    ]

    first = new_catalog_files([*FIRST_DAYS, *noise], CatalogCursor())
    only_noise = new_catalog_files(noise, first.cursor)

    assert first.files == sorted(FIRST_DAYS)
    assert only_noise.files == []
    assert only_noise.cursor == first.cursor


def test_run_key_is_stable_for_the_same_files() -> None:
    first = new_catalog_files(FIRST_DAYS, CatalogCursor())
    again = new_catalog_files(list(reversed(FIRST_DAYS)), CatalogCursor())
    fewer = new_catalog_files(FIRST_DAYS[:-1], CatalogCursor())
    as_update = CatalogBatch(first.files, first.cursor, initial=False)

    assert again.run_key == first.run_key
    assert fewer.run_key != first.run_key
    assert as_update.run_key != first.run_key
    assert len({first.run_key, fewer.run_key, as_update.run_key}) == 3


@pytest.mark.parametrize(
    "cursor",
    [
        CatalogCursor(),
        CatalogCursor(since="2026-10-20", keys=frozenset(FIRST_DAYS[2:])),
        CatalogCursor(since="2026-10-22", keys=frozenset()),
    ],
    ids=["empty", "keys", "no-keys"],
)
def test_cursor_round_trips_through_text(cursor: CatalogCursor) -> None:
    text = cursor.dump()

    assert CatalogCursor.parse(text) == cursor
    assert CatalogCursor.parse(text).dump() == text


@pytest.mark.parametrize("text", [None, ""])
def test_missing_cursor_text_is_an_empty_cursor(text: str | None) -> None:
    assert CatalogCursor.parse(text) == CatalogCursor()


def test_replayed_tick_asks_for_the_same_run() -> None:
    cursor = new_catalog_files(FIRST_DAYS, CatalogCursor()).cursor
    landed = [*FIRST_DAYS, _key("2026-10-22", "updates-11")]

    tick = new_catalog_files(landed, CatalogCursor.parse(cursor.dump()))
    replay = new_catalog_files(landed, CatalogCursor.parse(cursor.dump()))

    assert tick == replay
    assert tick.run_key == replay.run_key
