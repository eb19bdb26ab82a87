"""Erased members' derived values expire by the deadline; the read-only pass proves it."""

from __future__ import annotations

import datetime as dt
import json
import pickle
from pathlib import Path

import pandas as pd

from fitpulse_orchestration.privacy.derived import (
    derived_values_holding,
    expire_derived_values,
    overdue_erasures,
)
from fitpulse_orchestration.privacy.suppression import add_erased, erased_key
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.storage.tables import write_parquet

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
OLD, RECENT = "p_00000000000000000old", "p_000000000000000recent"


def _store(tmp_path: Path) -> LocalObjectStore:
    store = LocalObjectStore(tmp_path / "store")
    add_erased(store, OLD, (NOW - dt.timedelta(days=8)).isoformat())
    add_erased(store, RECENT, (NOW - dt.timedelta(days=1)).isoformat())
    write_parquet(store, "assets/user_features.parquet", pd.DataFrame({"user_id": [OLD, "p_x"]}))
    store.put_bytes("assets/als_model.pkl", pickle.dumps({"user_ids": [RECENT, "p_x"]}))
    store.put_bytes("assets/catalog_items.pkl", pickle.dumps({"items": ["i1"]}))
    return store


def test_only_erasures_past_the_deadline_are_overdue(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.put_bytes(erased_key("p_0000000000unreadable"), b"{not json")

    assert overdue_erasures(store, NOW, 7) == {OLD, "p_0000000000unreadable"}
    assert overdue_erasures(store, NOW, 0) == {OLD, RECENT, "p_0000000000unreadable"}


def test_expiry_deletes_exactly_the_values_holding_an_overdue_member(tmp_path: Path) -> None:
    store = _store(tmp_path)

    report = expire_derived_values(store, NOW, 7)

    assert report.overdue == 1
    assert report.values_scanned == 3
    assert report.expired == {"assets/user_features.parquet": 1}
    assert store.list_keys("assets/") == ["assets/als_model.pkl", "assets/catalog_items.pkl"]
    assert derived_values_holding(store, [OLD]) == ({}, 2)
    # The recent erasure's value waits for the next training run or its own deadline.
    assert derived_values_holding(store, [RECENT]) == ({"assets/als_model.pkl": 1}, 2)
    assert json.dumps(report.summary()).count("p_") == 0


def test_nothing_overdue_scans_nothing_and_deletes_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)

    report = expire_derived_values(store, NOW - dt.timedelta(days=30), 7)

    assert report.overdue == 0
    assert report.expired == {}
    assert len(store.list_keys("assets/")) == 3
