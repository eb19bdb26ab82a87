from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.ingest import IngestResult, ingest_day
from fitpulse_orchestration.importing.interactions import (
    ImportOptions,
    ImportSummary,
    import_interactions,
    import_name,
    import_rejects_key,
    read_interactions,
)
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.storage import LocalObjectStore, ObjectStore

# shared/ sits beside the checkout (development machines and CI alike).
MOVIELENS = Path(__file__).resolve().parents[4] / "shared/data/movielens/ml-100k/u.data"
PSEUDONYMIZER = Pseudonymizer(b"k" * 32)
WEIGHTED = ImportOptions(event_col=None, weight_col="rating", ts_unit="s")


def _write_csv(path: Path, rows: list[dict[str, Any]], **kwargs: Any) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False, **kwargs)
    return path


def _landed(store: ObjectStore) -> dict[str, list[dict[str, Any]]]:
    """Records per landed batch key, parsed from the gzipped NDJSON."""
    out = {}
    for key in store.list_keys(f"{layout.LANDING_EVENTS}/"):
        text = gzip.decompress(store.get_bytes(key)).decode("utf-8")
        out[key] = [json.loads(line) for line in text.splitlines()]
    return out


def _all_records(store: ObjectStore) -> list[dict[str, Any]]:
    return [rec for recs in _landed(store).values() for rec in recs]


def _ingest(store: ObjectStore, summary: ImportSummary) -> list[IngestResult]:
    return [ingest_day(store, day, PSEUDONYMIZER) for day in summary.days]


@pytest.fixture
def events_csv(tmp_path: Path) -> Path:
    rows = [
        ("u1", "w1", "2024-03-01T10:15:00Z", "click"),
        ("u1", "w2", "2024-03-01T10:45:30.123456", "workout_start"),
        ("u2", "w1", "2024-03-01 11:00:00", "workout_complete"),
        ("u2", "w3", "2024-03-02T00:10:00+02:00", "impression"),
        ("007", "w3", "2024-03-02T09:00:00Z", "video_watch"),
    ]
    cols = ["user_id", "item_id", "timestamp", "event_type"]
    return _write_csv(tmp_path / "events.csv", [dict(zip(cols, r, strict=True)) for r in rows])


def test_csv_lands_collector_records(tmp_path: Path, events_csv: Path) -> None:
    store = LocalObjectStore(tmp_path / "home")
    summary = import_interactions(events_csv, store)

    name = import_name(events_csv)
    assert name.startswith("import-events-")
    assert summary.rows_read == summary.rows_landed == 5
    assert summary.rows_rejected == 0
    assert summary.rejects_file is None
    # The +02:00 timestamp is 22:10 UTC on the 1st.
    assert summary.days == [dt.date(2024, 3, 1), dt.date(2024, 3, 2)]
    assert summary.files_written == sorted(
        [
            layout.landing_events_key(dt.date(2024, 3, 1), 10, name),
            layout.landing_events_key(dt.date(2024, 3, 1), 11, name),
            layout.landing_events_key(dt.date(2024, 3, 1), 22, name),
            layout.landing_events_key(dt.date(2024, 3, 2), 9, name),
        ]
    )
    assert summary.event_counts == {
        "click": 1,
        "impression": 1,
        "video_watch": 1,
        "workout_complete": 1,
        "workout_start": 1,
    }
    records = {(r["user_id"], r["item_id"]): r for r in _all_records(store)}
    start = records[("u1", "w2")]
    assert start["ts"] == "2024-03-01T10:45:30.123Z"
    assert start["event_type"] == "workout_start"
    assert start["event_id"].startswith("imp-")
    assert len(start["event_id"]) == len("imp-") + 16
    assert set(start) == {"event_id", "event_type", "user_id", "item_id", "ts"}
    assert records[("u2", "w3")]["ts"] == "2024-03-01T22:10:00.000Z"
    assert records[("u2", "w3")]["request_id"] == f"{name}-4"
    assert "007" in {r["user_id"] for r in records.values()}


def test_parquet_input_keeps_native_types(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "user_id": [42, 43],
            "item_id": [7.0, None],
            "timestamp": pd.to_datetime(["2024-05-01 08:30:00", "2024-05-01 09:00:00"]),
            "event_type": ["click", "click"],
        }
    )
    path = tmp_path / "log.parquet"
    frame.to_parquet(path, index=False)
    store = LocalObjectStore(tmp_path / "home")

    summary = import_interactions(path, store)

    assert (summary.rows_landed, summary.rows_rejected) == (1, 1)
    assert summary.reject_reasons == {"missing_item_id": 1}
    [record] = _all_records(store)
    assert (record["user_id"], record["item_id"]) == ("42", "7")
    assert record["ts"] == "2024-05-01T08:30:00.000Z"


def test_parquet_tz_aware_timestamps_convert_to_utc(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["a"],
            "item_id": ["b"],
            "timestamp": pd.to_datetime(["2024-05-01 01:30:00"]).tz_localize("Europe/Berlin"),
            "event_type": ["click"],
        }
    )
    path = tmp_path / "berlin.parquet"
    frame.to_parquet(path, index=False)
    store = LocalObjectStore(tmp_path / "home")

    summary = import_interactions(path, store)

    assert summary.days == [dt.date(2024, 4, 30)]
    assert _all_records(store)[0]["ts"] == "2024-04-30T23:30:00.000Z"


def test_column_mapping_and_event_map(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "app export.csv",
        [
            {"member": "m1", "workout": "x", "when": "2024-01-01T00:00:00Z", "action": "view"},
            {"member": "m1", "workout": "x", "when": "2024-01-01T00:01:00Z", "action": "start"},
            {"member": "m2", "workout": "y", "when": "2024-01-01T00:02:00Z", "action": "click"},
        ],
    )
    options = ImportOptions(
        user_col="member",
        item_col="workout",
        ts_col="when",
        event_col="action",
        event_map={"view": "impression", "start": "workout_start"},
    )
    store = LocalObjectStore(tmp_path / "home")

    summary = import_interactions(path, store, options)

    assert summary.event_counts == {"click": 1, "impression": 1, "workout_start": 1}
    assert all(" " not in key for key in summary.files_written)
    impression = next(r for r in _all_records(store) if r["event_type"] == "impression")
    assert impression["request_id"] == f"{import_name(path)}-1"


def test_read_interactions_returns_mapped_columns_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("extra,user_id,item_id,timestamp,event_type\nz,007, 12,2024-01-01,click\n")

    frame = read_interactions(path, ImportOptions())

    assert list(frame.columns) == ["user_id", "item_id", "timestamp", "event_type"]
    assert frame.iloc[0].tolist() == ["007", "12", "2024-01-01", "click"]


def test_missing_column_error_names_missing_and_found(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "log.csv", [{"uid": 1, "item_id": 2, "timestamp": 3}])

    with pytest.raises(ValueError, match=r"\['user_id', 'event_type'\].*\['uid', 'item_id'"):
        read_interactions(path, ImportOptions())


def test_unknown_extension_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_interactions(path, ImportOptions())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight_col": "rating"}, "exactly one of event_col and weight_col"),
        ({"event_col": None}, "exactly one of event_col and weight_col"),
        ({"ts_unit": "us"}, "ts_unit"),
        ({"event_map": {"view": "glance"}}, "event_map targets"),
        ({"event_col": None, "weight_col": "r", "grades": ((3.0, "like"),)}, "grade event"),
    ],
)
def test_options_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImportOptions(**kwargs)


def test_weight_grades_map_ratings(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "ratings.csv",
        [
            {"user_id": f"u{r}", "item_id": "i", "timestamp": 1_700_000_000 + r, "rating": r}
            for r in (5, 4, 3, 2, 1)
        ],
    )
    store = LocalObjectStore(tmp_path / "home")

    summary = import_interactions(path, store, WEIGHTED)

    by_user = {r["user_id"]: r for r in _all_records(store)}
    assert {u: r["event_type"] for u, r in by_user.items()} == {
        "u5": "workout_complete",
        "u4": "workout_start",
        "u3": "click",
        "u2": "impression",
        "u1": "impression",
    }
    assert by_user["u2"]["request_id"] == f"{import_name(path)}-4"
    assert "request_id" not in by_user["u5"]
    assert by_user["u5"]["payload"] == {"source": "import", "weight": 5.0}
    assert "position" not in by_user["u2"]
    assert summary.event_counts["impression"] == 2


def test_custom_grades_on_a_dwell_score(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "dwell.csv",
        [
            {"user_id": "a", "item_id": "i", "timestamp": "2024-01-01T00:00:00Z", "score": 0.9},
            {"user_id": "b", "item_id": "i", "timestamp": "2024-01-01T00:00:00Z", "score": 0.2},
        ],
    )
    options = ImportOptions(
        event_col=None, weight_col="score", grades=((0.1, "click"), (0.8, "workout_complete"))
    )
    store = LocalObjectStore(tmp_path / "home")

    summary = import_interactions(path, store, options)

    assert summary.event_counts == {"click": 1, "workout_complete": 1}


@pytest.mark.parametrize(("unit", "scale"), [("s", 1), ("ms", 1000)])
def test_epoch_timestamps(tmp_path: Path, unit: str, scale: int) -> None:
    epoch = 881_250_949  # 1997-12-04T15:55:49Z, the first MovieLens rating
    path = _write_csv(
        tmp_path / "epochs.csv",
        [{"user_id": 1, "item_id": 2, "timestamp": epoch * scale + (scale - 1), "rating": 5}],
    )
    store = LocalObjectStore(tmp_path / "home")

    summary = import_interactions(path, store, dataclasses.replace(WEIGHTED, ts_unit=unit))

    expected = "1997-12-04T15:55:49.999Z" if unit == "ms" else "1997-12-04T15:55:49.000Z"
    assert _all_records(store)[0]["ts"] == expected
    assert summary.files_written == [
        layout.landing_events_key(dt.date(1997, 12, 4), 15, import_name(path))
    ]


def test_numeric_timestamps_need_a_unit(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "epochs.csv",
        [{"user_id": 1, "item_id": 2, "timestamp": 881250949, "event_type": "click"}],
    )
    with pytest.raises(ValueError, match="ts_unit"):
        import_interactions(path, LocalObjectStore(tmp_path / "home"))


def test_rejected_rows_are_counted_written_and_balanced(tmp_path: Path) -> None:
    path = tmp_path / "dirty.csv"
    path.write_text(
        "user_id,item_id,timestamp,event_type\n"
        "u1,i1,2024-01-01T00:00:00Z,click\n"
        ",i1,2024-01-01T00:00:00Z,click\n"
        "u1,,2024-01-01T00:00:00Z,click\n"
        "u1,i1,,click\n"
        "u1,i1,yesterday,click\n"
        "u1,i1,2024-01-01T00:00:00Z,like\n"
        "u1,i1,2024-01-01T00:00:00Z,\n"
        ",,not-a-date,like\n"
        "u2,i2,2024-01-01T01:00:00Z,impression\n"
    )
    store = LocalObjectStore(tmp_path / "home")

    summary = import_interactions(path, store)

    assert summary.rows_read == 9
    assert (summary.rows_landed, summary.rows_rejected) == (2, 7)
    assert summary.balanced
    assert summary.reject_reasons == {
        "missing_event_type": 1,
        "missing_item_id": 2,
        "missing_timestamp": 1,
        "missing_user_id": 2,
        "unknown_event_type": 2,
        "unparseable_timestamp": 2,
    }
    assert summary.rejects_file == import_rejects_key(import_name(path).removeprefix("import-"))
    assert summary.rejects_file.startswith("landing/import_rejects/dirty-")
    rejects = pd.read_csv(io.BytesIO(store.get_bytes(summary.rejects_file)), dtype=str)
    assert rejects["row_number"].astype(int).tolist() == [2, 3, 4, 5, 6, 7, 8]
    assert rejects.loc[6, "reason"] == (
        "missing_item_id;missing_user_id;unknown_event_type;unparseable_timestamp"
    )
    assert rejects.loc[3, "timestamp"] == "yesterday"
    assert len(_all_records(store)) == summary.rows_landed


def test_ids_outside_the_contract_are_rejected_at_import(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    long_id = "u" * 65
    path.write_text(
        "user_id,item_id,timestamp,event_type\n"
        "u1,i1,2024-01-01T00:00:00Z,click\n"
        "../etc,i1,2024-01-01T00:00:00Z,click\n"
        "u 2,i1,2024-01-01T00:00:00Z,click\n"
        f"{long_id},i1,2024-01-01T00:00:00Z,click\n"
        "u3,wk/1,2024-01-01T00:00:00Z,click\n"
    )
    store = LocalObjectStore(tmp_path / "home")

    summary = import_interactions(path, store)

    assert (summary.rows_landed, summary.rows_rejected) == (1, 4)
    assert summary.reject_reasons == {"invalid_user_id": 3, "invalid_item_id": 1}
    assert summary.balanced


def test_weight_rejections(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(
        "user_id,item_id,timestamp,rating\n1,1,100,five\n1,2,100,\n1,3,100,inf\n1,4,100,4\n"
    )
    store = LocalObjectStore(tmp_path / "home")

    summary = import_interactions(path, store, WEIGHTED)

    assert summary.reject_reasons == {
        "missing_weight": 1,
        "non_finite_weight": 1,
        "non_numeric_weight": 1,
    }
    assert (summary.rows_read, summary.rows_landed, summary.rows_rejected) == (4, 1, 3)


def test_out_of_range_epochs_are_rejected_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("user_id,item_id,timestamp,rating\n1,1,1e30,5\n1,2,881250949,5\n")

    summary = import_interactions(path, LocalObjectStore(tmp_path / "home"), WEIGHTED)

    assert summary.reject_reasons == {"unparseable_timestamp": 1}
    assert summary.rows_landed == 1


def test_clean_reimport_removes_stale_rejects(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp,event_type\nu,i,2024-01-01T00:00:00Z,view\n")
    store = LocalObjectStore(tmp_path / "home")
    first = import_interactions(path, store)
    assert first.rejects_file is not None

    second = import_interactions(path, store, ImportOptions(event_map={"view": "click"}))

    assert second.rejects_file is None
    assert not store.exists(first.rejects_file)
    assert second.rows_landed == 1


def test_event_ids_are_deterministic(tmp_path: Path, events_csv: Path) -> None:
    first, second = LocalObjectStore(tmp_path / "a"), LocalObjectStore(tmp_path / "b")
    import_interactions(events_csv, first)
    import_interactions(events_csv, second)
    import_interactions(events_csv, second)

    assert _landed(first) == _landed(second)
    for key in first.list_keys(f"{layout.LANDING_EVENTS}/"):
        assert first.get_bytes(key) == second.get_bytes(key)


def test_landed_rows_ingest_without_quarantine(tmp_path: Path, events_csv: Path) -> None:
    store = LocalObjectStore(tmp_path / "home")
    summary = import_interactions(events_csv, store)

    results = _ingest(store, summary)

    assert all(r.balanced for r in results)
    assert sum(r.quarantined for r in results) == 0
    assert sum(r.duplicates for r in results) == 0
    assert sum(r.accepted for r in results) == summary.rows_landed
    events = pd.concat([r.events for r in results], ignore_index=True)
    assert events["user_id"].str.startswith("p_").all()
    assert events["request_id"].notna().sum() == 1


def test_reimport_gives_duplicates_not_new_events(tmp_path: Path, events_csv: Path) -> None:
    store = LocalObjectStore(tmp_path / "home")
    summary = import_interactions(events_csv, store)
    before = sum(r.accepted for r in _ingest(store, summary))

    # The same file again rewrites the same batches: nothing new, nothing doubled.
    import_interactions(events_csv, store)
    again = _ingest(store, summary)
    assert sum(r.accepted for r in again) == before
    assert sum(r.duplicates for r in again) == 0

    # The same rows under another name land in other batches with the same event ids.
    copy = shutil.copy(events_csv, tmp_path / "events-copy.csv")
    import_interactions(Path(copy), store)
    results = _ingest(store, summary)
    assert sum(r.accepted for r in results) == before
    assert sum(r.duplicates for r in results) == summary.rows_landed
    assert sum(r.quarantined for r in results) == 0
    assert all(r.balanced for r in results)


def test_different_files_with_the_same_name_do_not_collide(tmp_path: Path) -> None:
    paths = []
    for month in ("01", "02"):
        (tmp_path / month).mkdir()
        paths.append(
            _write_csv(
                tmp_path / month / "events.csv",
                [
                    {
                        "user_id": "u",
                        "item_id": "i",
                        "timestamp": f"2024-03-01T10:{month}:00Z",
                        "event_type": "click",
                    }
                ],
            )
        )
    store = LocalObjectStore(tmp_path / "home")
    summaries = [import_interactions(p, store) for p in paths]

    assert import_name(paths[0]) != import_name(paths[1])
    [result] = _ingest(store, summaries[0])
    assert (result.accepted, result.duplicates, result.quarantined) == (2, 0, 0)


def test_large_hours_are_split_into_parts(tmp_path: Path) -> None:
    rows = [
        {"user_id": f"u{i}", "item_id": "i", "timestamp": f"2024-01-01T05:{i:02d}:00Z"}
        for i in range(5)
    ]
    path = _write_csv(tmp_path / "big.csv", [{**r, "event_type": "click"} for r in rows])
    store = LocalObjectStore(tmp_path / "home")

    summary = import_interactions(path, store, batch_size=2)

    name = import_name(path)
    assert summary.files_written == [
        layout.landing_events_key(dt.date(2024, 1, 1), 5, f"{name}-part{p:03d}") for p in range(3)
    ]
    [result] = _ingest(store, summary)
    assert (result.accepted, result.quarantined, result.files) == (5, 0, 3)


def test_duplicate_rows_share_an_event_id(tmp_path: Path) -> None:
    row = {"user_id": "u", "item_id": "i", "timestamp": "2024-01-01T05:00:00Z"}
    path = _write_csv(
        tmp_path / "dupes.csv", [{**row, "event_type": "click"}] * 2 + [{**row, "event_type": "x"}]
    )
    store = LocalObjectStore(tmp_path / "home")

    summary = import_interactions(path, store, ImportOptions(event_map={"x": "workout_start"}))

    assert (summary.rows_landed, summary.duplicate_rows) == (3, 1)
    [result] = _ingest(store, summary)
    assert (result.accepted, result.duplicates, result.quarantined) == (2, 1, 0)


def test_header_less_tsv_with_custom_separator(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    path.write_text("a;b;2024-01-01T00:00:00Z;click\n")
    options = ImportOptions(sep=";", column_names=("user_id", "item_id", "timestamp", "event_type"))

    summary = import_interactions(path, LocalObjectStore(tmp_path / "home"), options)

    assert summary.rows_landed == 1


def test_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(ValueError, match="empty"):
        import_interactions(path, LocalObjectStore(tmp_path / "home"))


def test_header_only_file_lands_nothing(tmp_path: Path) -> None:
    path = tmp_path / "none.csv"
    path.write_text("user_id,item_id,timestamp,event_type\n")

    summary = import_interactions(path, LocalObjectStore(tmp_path / "home"))

    assert (summary.rows_read, summary.files_written, summary.days) == (0, [], [])


@pytest.mark.skipif(
    not MOVIELENS.exists(), reason="MovieLens 100k not found in shared/ beside the checkout"
)
def test_movielens_sample_goes_through_ingestion(tmp_path: Path) -> None:
    sample = tmp_path / "u.data"
    with MOVIELENS.open() as src:
        sample.write_text("".join(line for _, line in zip(range(2000), src, strict=False)))
    options = ImportOptions(
        event_col=None,
        weight_col="rating",
        ts_unit="s",
        column_names=("user_id", "item_id", "rating", "timestamp"),
    )
    store = LocalObjectStore(tmp_path / "home")

    summary = import_interactions(sample, store, options)

    assert (summary.rows_read, summary.rows_landed, summary.rows_rejected) == (2000, 2000, 0)
    assert sum(summary.event_counts.values()) == 2000
    assert summary.event_counts["impression"] > 0
    first = next(r for r in _all_records(store) if r["ts"] == "1997-12-04T15:55:49.000Z")
    assert (first["user_id"], first["item_id"], first["event_type"]) == ("196", "242", "click")
    results = _ingest(store, summary)
    assert all(r.balanced for r in results)
    assert sum(r.quarantined for r in results) == 0
    assert sum(r.accepted for r in results) == summary.rows_landed - summary.duplicate_rows


def test_a_non_utf8_log_lands_with_the_catalog_spelling_and_rejects_undecodable_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "latin.csv"
    # A cp1252 export: "café" and "Zoë" are single bytes; 0x81 is undefined in cp1252 too.
    path.write_bytes(
        b"user_id,item_id,timestamp,event_type\n"
        b"caf\xe9,i1,2024-01-01T00:00:00Z,click\n"
        b"u2,Zo\xeb,2024-01-01T00:00:00Z,click\n"
        b"u3,bad\x81,2024-01-01T00:00:00Z,click\n"
        b"u\xc3\xa9,i2,2024-01-01T00:00:00Z,click\n"
    )
    store = LocalObjectStore(tmp_path / "home")

    summary = import_interactions(path, store)

    assert (summary.rows_landed, summary.rows_rejected) == (3, 1)
    assert summary.reject_reasons == {"undecodable_text": 1}
    records = _all_records(store)
    assert sorted((r["user_id"], r["item_id"]) for r in records) == [
        ("café", "i1"),
        ("u2", "Zoë"),
        ("ué", "i2"),
    ]
    rejects = pd.read_csv(io.BytesIO(store.get_bytes(summary.rejects_file)), dtype=str)
    assert rejects["row_number"].tolist() == ["3"]
    assert rejects.loc[0, "item_id"] == "bad\\x81"
