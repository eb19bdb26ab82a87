from __future__ import annotations

import datetime as dt
import gc
import gzip
import json
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.ingest import (
    CleanPartitionWriter,
    IngestResult,
    SeenIds,
    accepted_among,
    ingest_batches,
    ingest_day,
    read_clean_events,
    write_ingested,
)
from fitpulse_orchestration.events.schema import (
    CLEAN_EVENT_COLUMNS,
    CLEAN_EVENTS_SCHEMA,
    QUARANTINE_COLUMNS,
)
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.storage import LocalObjectStore, read_parquet, write_parquet

DAY = dt.date(2026, 10, 19)
KEY = layout.landing_events_key(DAY, 10, "b")
KEY_11 = layout.landing_events_key(DAY, 11, "b")


def _record(event_id: str, /, **fields: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "event_id": event_id,
        "event_type": "app_open",
        "user_id": "usr_0000001",
        "ts": "2026-10-19T10:05:00.000Z",
    }
    rec.update(fields)
    return {k: v for k, v in rec.items() if v is not None}


def _line(event_id: str, /, **fields: Any) -> str:
    return json.dumps(_record(event_id, **fields))


def _impression(event_id: str, /, **fields: Any) -> str:
    base = {"event_type": "impression", "item_id": "wk_1", "request_id": "r_1", "position": 0}
    return _line(event_id, **{**base, **fields})


def _gz(lines: list[str]) -> bytes:
    return gzip.compress(("\n".join(lines) + "\n").encode())


def _quarantine_rows(result: IngestResult) -> list[tuple[str, int, str, str]]:
    rows = result.quarantine.sort_values(["source_file", "line_no"])
    return list(rows.itertuples(index=False, name=None))


def _ingest_tiny_world(tiny_world) -> list[IngestResult]:
    return [
        ingest_day(tiny_world.store, day, tiny_world.pseudonymizer)
        for day in tiny_world.summary.landed_days
    ]


def test_tiny_world_quarantines_every_injected_record_and_keeps_every_valid_one(
    tiny_world,
) -> None:
    summary = tiny_world.summary
    bad = summary.bad_records
    results = _ingest_tiny_world(tiny_world)
    reasons = Counter(r for res in results for r in res.quarantine["reason"])

    def prefixed(prefix: str) -> int:
        return sum(n for reason, n in reasons.items() if reason.startswith(prefix))

    assert all(res.balanced for res in results)
    assert sum(res.read for res in results) == summary.records_written
    assert reasons["malformed_json"] == bad["malformed_json"]
    assert prefixed("missing_field:") == bad["missing_field"]
    assert prefixed("wrong_type:") == bad["wrong_type"]
    assert reasons["unknown_event_type"] == bad["unknown_event_type"]
    assert reasons["future_timestamp:ts"] == bad["future_timestamp"]
    assert sum(res.duplicates for res in results) == bad["duplicate_event_id"]
    assert sum(res.accepted for res in results) == summary.n_valid_events
    corrupted = sum(bad.values()) - bad["duplicate_event_id"]
    assert sum(res.quarantined for res in results) == corrupted
    assert sum(reasons.values()) == corrupted


def test_tiny_world_clean_events_are_pseudonymized_and_schema_valid(tiny_world) -> None:
    events = read_clean_events(tiny_world.store)

    CLEAN_EVENTS_SCHEMA.validate(events)
    assert len(events) == tiny_world.summary.n_valid_events
    assert events["event_id"].is_unique
    assert events["user_id"].str.startswith("p_").all()
    assert not events["user_id"].str.contains("usr_").any()
    assert events["ts"].is_monotonic_increasing


def test_every_bad_line_is_quarantined_with_reason_file_and_line(
    pseudonymizer: Pseudonymizer,
) -> None:
    lines = [
        _line("e01"),
        '{"event_id": "e02", "event_t',
        _line("e03", user_id=None),
        _impression("e04", position="third"),
        _line("e05", event_type="swipe_left"),
        _line("e06", ts="2026-10-22T10:05:00.000Z"),
        _impression("e07", item_id=None),
        _impression("e08", request_id=None),
        "[1, 2]",
        "",
        _impression("e11", position=3),
        _line("e12", event_type="click", item_id="wk_2", payload={"b": 1, "a": "x"}),
    ]

    result = ingest_batches([(KEY, _gz(lines))], DAY, pseudonymizer)

    expected = [
        (2, "malformed_json"),
        (3, "missing_field:user_id"),
        (4, "wrong_type:position"),
        (5, "unknown_event_type"),
        (6, "future_timestamp:ts"),
        (7, "missing_field:item_id"),
        (8, "missing_field:request_id"),
        (9, "not_an_object"),
        (10, "empty_record"),
    ]
    assert _quarantine_rows(result) == [
        (KEY, line_no, reason, lines[line_no - 1]) for line_no, reason in expected
    ]
    assert list(result.quarantine.columns) == list(QUARANTINE_COLUMNS)
    assert result.reasons == {reason: 1 for _, reason in expected}
    assert list(result.events["event_id"]) == ["e01", "e11", "e12"]
    assert list(result.events["line_no"]) == [1, 11, 12]
    assert (result.events["source_file"] == KEY).all()
    assert (result.read, result.accepted, result.quarantined, result.duplicates) == (12, 3, 9, 0)
    assert result.balanced
    assert result.quarantine_rate == pytest.approx(9 / 12)


def test_record_breaking_several_rules_lists_every_reason(pseudonymizer: Pseudonymizer) -> None:
    line = _impression("e1", user_id=None, request_id=None, position=-1)

    result = ingest_batches([(KEY, _gz([line]))], DAY, pseudonymizer)

    assert _quarantine_rows(result) == [
        (KEY, 1, "missing_field:request_id;missing_field:user_id;negative:position", line)
    ]
    assert result.reasons == {
        "missing_field:request_id": 1,
        "missing_field:user_id": 1,
        "negative:position": 1,
    }


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"user_id": 12345}, "wrong_type:user_id"),
        ({"user_id": ""}, "wrong_type:user_id"),
        ({"ts": 1_760_000_000}, "wrong_type:ts"),
        ({"ts": "2026-10-19T10:05:00"}, "wrong_type:ts"),
        ({"event_id": None}, "missing_field:event_id"),
        ({"event_type": None}, "missing_field:event_type"),
        ({"ts": None}, "missing_field:ts"),
        ({"payload": [1, 2]}, "wrong_type:payload"),
        ({"position": True}, "wrong_type:position"),
    ],
)
def test_field_rules_give_stable_reasons(
    pseudonymizer: Pseudonymizer, fields: dict[str, Any], reason: str
) -> None:
    result = ingest_batches([(KEY, _gz([_line("e1", **fields)]))], DAY, pseudonymizer)

    assert list(result.quarantine["reason"]) == [reason]
    assert result.accepted == 0
    assert result.balanced


def test_future_tolerance_is_ten_minutes_after_the_landing_hour(
    pseudonymizer: Pseudonymizer,
) -> None:
    lines = [
        _line("on_edge", ts="2026-10-19T11:10:00Z"),
        _line("past_edge", ts="2026-10-19T11:10:01Z"),
        _line("offset_on_edge", ts="2026-10-19T13:10:00+02:00"),
    ]

    result = ingest_batches([(KEY, _gz(lines))], DAY, pseudonymizer)

    assert list(result.events["event_id"]) == ["on_edge", "offset_on_edge"]
    assert list(result.events["ts"]) == [pd.Timestamp("2026-10-19T11:10:00", tz="UTC")] * 2
    assert _quarantine_rows(result) == [(KEY, 2, "future_timestamp:ts", lines[1])]


def test_unreadable_file_is_quarantined_and_other_files_still_ingested(
    pseudonymizer: Pseudonymizer,
) -> None:
    not_gzip = layout.landing_events_key(DAY, 9, "garbage")
    truncated = layout.landing_events_key(DAY, 9, "truncated")
    batches = [
        (not_gzip, b"this is not gzip"),
        (truncated, _gz([_line("lost")])[:-6]),
        (KEY, _gz([_line("e1"), _line("e2")])),
    ]

    result = ingest_batches(batches, DAY, pseudonymizer)

    rows = _quarantine_rows(result)
    assert [(key, line_no, raw) for key, line_no, _, raw in rows] == [
        (not_gzip, 0, ""),
        (truncated, 0, ""),
    ]
    assert all(reason.startswith("unreadable_file:") for _, _, reason, _ in rows)
    assert list(result.events["event_id"]) == ["e1", "e2"]
    assert (result.files, result.read) == (3, 4)
    assert result.balanced


def test_resent_event_within_the_day_keeps_the_first_copy(pseudonymizer: Pseudonymizer) -> None:
    batches = [
        (KEY, _gz([_line("e1"), _line("e2"), _line("e1")])),
        (KEY_11, _gz([_line("e2", platform="ios"), _line("e3")])),
    ]

    result = ingest_batches(batches, DAY, pseudonymizer)

    assert list(result.events["event_id"]) == ["e1", "e2", "e3"]
    assert list(zip(result.events["source_file"], result.events["line_no"], strict=True)) == [
        (KEY, 1),
        (KEY, 2),
        (KEY_11, 2),
    ]
    assert result.events["platform"].isna().all()
    assert result.duplicates == 2
    assert result.quarantined == 0
    assert result.balanced


def test_event_ids_seen_in_earlier_partitions_count_as_duplicates(
    pseudonymizer: Pseudonymizer,
) -> None:
    batches = [(KEY, _gz([_line("e0"), _line("e1")]))]

    asked: list[list[str]] = []

    def accepted_before(ids: pd.Series) -> set[str]:
        asked.append(sorted(ids))
        return {"e0", "e9"} & set(ids)

    result = ingest_batches(batches, DAY, pseudonymizer, accepted_before)

    assert list(result.events["event_id"]) == ["e1"]
    assert result.duplicates == 1
    assert result.balanced
    assert asked == [["e0", "e1"]]


def test_earlier_acceptances_are_found_in_the_window_alone(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    for day, ids in (
        (DAY - dt.timedelta(days=31), ["old"]),  # before the window: may be accepted again
        (DAY - dt.timedelta(days=30), ["a", "b"]),
        (DAY - dt.timedelta(days=1), ["c"]),
        (DAY, ["d"]),  # the day itself is not an earlier partition
    ):
        key = layout.warehouse_key(layout.WAREHOUSE_EVENTS, day, "events")
        write_parquet(store, key, pd.DataFrame({"event_id": ids}))

    found = accepted_among(
        store, DAY - dt.timedelta(days=30), DAY, pd.Series(["old", "a", "c", "d", "new", "a"])
    )

    assert found == {"a", "c"}


def test_valid_resend_of_a_quarantined_copy_is_accepted(pseudonymizer: Pseudonymizer) -> None:
    batches = [(KEY, _gz([_line("e1", ts="2026-10-25T00:00:00Z"), _line("e1")]))]

    result = ingest_batches(batches, DAY, pseudonymizer)

    assert list(result.events["line_no"]) == [2]
    assert list(result.quarantine["reason"]) == ["future_timestamp:ts"]
    assert result.duplicates == 0
    assert result.balanced


def test_clean_events_are_pseudonymized_typed_and_schema_valid(
    pseudonymizer: Pseudonymizer,
) -> None:
    lines = [
        _line("e1", ts="2026-10-19T12:05:00+02:00", session_id="s1", platform="android"),
        _impression("e2", user_id="usr_0000002", position=4),
        _line(
            "e3",
            event_type="workout_complete",
            item_id="wk_1",
            payload={"duration_s": 600, "calories": 90},
        ),
    ]

    result = ingest_batches([(KEY, _gz(lines))], DAY, pseudonymizer)
    events = result.events

    CLEAN_EVENTS_SCHEMA.validate(events)
    assert list(events.columns) == list(CLEAN_EVENT_COLUMNS)
    assert list(events["user_id"]) == [
        pseudonymizer.pseudonymize("usr_0000001"),
        pseudonymizer.pseudonymize("usr_0000002"),
        pseudonymizer.pseudonymize("usr_0000001"),
    ]
    assert events["user_id"].str.startswith("p_").all()
    assert not events.astype(str).apply(lambda col: col.str.contains("usr_")).any().any()
    assert events.loc[0, "ts"] == pd.Timestamp("2026-10-19T10:05:00", tz="UTC")
    assert events.loc[1, "position"] == 4
    assert pd.isna(events.loc[0, "position"])
    # Health fields stay in the landing zone.
    assert json.loads(events.loc[2, "payload"]) == {"duration_s": 600}
    assert result.health_fields_removed == 1
    assert events.loc[0, "payload"] is None


def test_empty_input_is_balanced_with_zero_rows(pseudonymizer: Pseudonymizer) -> None:
    nothing = ingest_batches([], DAY, pseudonymizer)
    empty_file = ingest_batches([(KEY, gzip.compress(b""))], DAY, pseudonymizer)

    for result in (nothing, empty_file):
        assert (result.read, result.accepted, result.quarantined, result.duplicates) == (0, 0, 0, 0)
        assert result.balanced
        assert result.quarantine_rate == 0.0
        assert list(result.events.columns) == list(CLEAN_EVENT_COLUMNS)
        assert list(result.quarantine.columns) == list(QUARANTINE_COLUMNS)
    assert (nothing.files, empty_file.files) == (0, 1)


def test_batch_with_only_bad_lines_yields_empty_clean_events(
    pseudonymizer: Pseudonymizer,
) -> None:
    result = ingest_batches([(KEY, _gz(["{oops", _line("e1", user_id=7)]))], DAY, pseudonymizer)

    assert result.accepted == 0
    assert list(result.events.columns) == list(CLEAN_EVENT_COLUMNS)
    assert sorted(result.quarantine["reason"]) == ["malformed_json", "wrong_type:user_id"]
    assert result.balanced


def test_non_iso_timestamp_is_quarantined_without_losing_the_day(
    pseudonymizer: Pseudonymizer,
) -> None:
    lines = [_line("ok"), _line("rfc2822", ts="Mon, 19 Oct 2026 10:05:00 +0000")]

    result = ingest_batches([(KEY, _gz(lines))], DAY, pseudonymizer)

    assert list(result.events["event_id"]) == ["ok"]
    assert list(result.quarantine["reason"]) == ["wrong_type:ts"]


def test_ingest_day_reads_the_day_and_dedups_against_the_previous_partition(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    next_day = DAY + dt.timedelta(days=1)
    store.put_bytes(KEY, _gz([_line("e1"), _line("e2")]))
    store.put_bytes(
        layout.landing_events_key(next_day, 0, "b"),
        _gz([_line("e2"), _line("e3", ts="2026-10-20T00:01:00Z")]),
    )

    first = ingest_day(store, DAY, pseudonymizer)
    before_write = ingest_day(store, next_day, pseudonymizer)
    write_ingested(store, DAY, first)
    after_write = ingest_day(store, next_day, pseudonymizer)

    assert list(first.events["event_id"]) == ["e1", "e2"]
    assert list(before_write.events["event_id"]) == ["e2", "e3"]
    assert list(after_write.events["event_id"]) == ["e3"]
    assert after_write.duplicates == 1
    assert after_write.balanced


def test_write_ingested_and_read_clean_events_round_trip_sorted_by_time(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    day2 = DAY + dt.timedelta(days=1)
    first = ingest_batches(
        [(KEY, _gz([_line("a2", ts="2026-10-19T10:30:00Z"), _line("a1"), "{bad"]))],
        DAY,
        pseudonymizer,
    )
    second = ingest_batches(
        [
            (
                layout.landing_events_key(day2, 3, "b"),
                _gz([_impression("b1", ts="2026-10-20T03:00Z")]),
            )
        ],
        day2,
        pseudonymizer,
    )

    uris = write_ingested(store, DAY, first)
    write_ingested(store, day2, second)

    assert Path(uris["events"]).is_file()
    quarantine = read_parquet(
        store, layout.warehouse_key(layout.WAREHOUSE_QUARANTINE, DAY, "quarantine")
    )
    pd.testing.assert_frame_equal(quarantine, first.quarantine)
    events = read_clean_events(store)
    CLEAN_EVENTS_SCHEMA.validate(events)
    assert list(events["event_id"]) == ["a1", "a2", "b1"]
    expected = pd.concat([first.events, second.events], ignore_index=True)
    expected = expected.sort_values("ts", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(events, expected, check_dtype=False)
    assert list(read_clean_events(store, [day2])["event_id"]) == ["b1"]
    assert read_clean_events(store, [DAY - dt.timedelta(days=1)]).empty


def _last_day_resent_and_erased(
    tiny_world,
) -> tuple[dt.date, list[tuple[str, bytes]], frozenset[str]]:
    """The tiny world's last day, its batches with the first one landed again (duplicates),
    and one of its users on the erasure list."""
    store, pseudonymizer = tiny_world.store, tiny_world.pseudonymizer
    day = tiny_world.summary.landed_days[-1]
    batches = [(k, store.get_bytes(k)) for k in store.iter_keys(layout.landing_events_prefix(day))]
    batches.append((layout.landing_events_key(day, 23, "resent"), batches[0][1]))
    erased = frozenset(ingest_batches(batches, day, pseudonymizer).events["user_id"][:1])
    return day, batches, erased


def test_checking_in_chunks_changes_no_result(tiny_world) -> None:
    pseudonymizer = tiny_world.pseudonymizer
    day, batches, erased = _last_day_resent_and_erased(tiny_world)

    whole = ingest_batches(batches, day, pseudonymizer, erased_users=erased)
    chunked = ingest_batches(batches, day, pseudonymizer, erased_users=erased, chunk_lines=7)

    assert min(whole.quarantined, whole.duplicates, whole.erased) > 0
    assert whole.read > 70
    pd.testing.assert_frame_equal(chunked.events, whole.events)
    assert _quarantine_rows(chunked) == _quarantine_rows(whole)
    assert (chunked.read, chunked.duplicates, chunked.erased, chunked.health_fields_removed) == (
        whole.read,
        whole.duplicates,
        whole.erased,
        whole.health_fields_removed,
    )
    assert chunked.reasons == whole.reasons
    assert chunked.balanced


def test_a_streamed_partition_holds_what_the_collected_one_holds(
    tiny_world, tmp_path: Path
) -> None:
    pseudonymizer = tiny_world.pseudonymizer
    day, batches, erased = _last_day_resent_and_erased(tiny_world)
    whole = ingest_batches(batches, day, pseudonymizer, erased_users=erased)
    clean = CleanPartitionWriter()

    # Chunks of 7: the re-sent batch's duplicates are found in chunks other than their first
    # copy's, and some chunks are left with no row at all.
    streamed = ingest_batches(
        batches, day, pseudonymizer, erased_users=erased, chunk_lines=7, sink=clean
    )

    assert min(whole.duplicates, whole.erased) > 0
    assert streamed.events.empty
    assert (streamed.accepted, streamed.duplicates, streamed.erased) == (
        whole.accepted,
        whole.duplicates,
        whole.erased,
    )
    collected_store = LocalObjectStore(tmp_path / "collected")
    streamed_store = LocalObjectStore(tmp_path / "streamed")
    write_ingested(collected_store, day, whole)
    write_ingested(streamed_store, day, streamed, clean)
    key = layout.warehouse_key(layout.WAREHOUSE_EVENTS, day, "events")
    written = read_parquet(streamed_store, key)
    pd.testing.assert_frame_equal(written, read_parquet(collected_store, key))
    pd.testing.assert_frame_equal(written, whole.events)


def test_a_partition_with_no_clean_row_is_written_empty_and_typed(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    clean = CleanPartitionWriter()
    result = ingest_batches([(KEY, _gz(["{bad"]))], DAY, pseudonymizer, sink=clean)

    write_ingested(store, DAY, result, clean)

    written = read_parquet(store, layout.warehouse_key(layout.WAREHOUSE_EVENTS, DAY, "events"))
    assert result.accepted == 0
    assert list(written.columns) == list(CLEAN_EVENT_COLUMNS)
    assert written.empty
    CLEAN_EVENTS_SCHEMA.validate(written)


def test_the_partition_is_spooled_to_a_temporary_file_removed_put_or_not(
    tmp_path: Path, pseudonymizer: Pseudonymizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    store = LocalObjectStore(tmp_path / "store")
    clean = CleanPartitionWriter()
    result = ingest_batches(_landed(30), DAY, pseudonymizer, sink=clean)
    assert [p.name.startswith("fitpulse-clean-") for p in spool.iterdir()] == [True]

    write_ingested(store, DAY, result, clean)

    assert list(spool.iterdir()) == []
    written = read_parquet(store, layout.warehouse_key(layout.WAREHOUSE_EVENTS, DAY, "events"))
    assert len(written) == result.accepted == 30
    # A writer dropped without ``put`` (a failed ingestion) leaves no file either.
    dropped = CleanPartitionWriter()
    ingest_batches(_landed(5), DAY, pseudonymizer, sink=dropped)
    assert len(list(spool.iterdir())) == 1
    del dropped
    gc.collect()
    assert list(spool.iterdir()) == []


def _landed(lines: int, per_file: int = 1000) -> list[tuple[str, bytes]]:
    """``lines`` distinct impressions in files of ``per_file`` lines."""
    batches = []
    for start in range(0, lines, per_file):
        body = [
            _impression(
                f"ev_{i:08d}",
                user_id=f"usr_{i % 997:07d}",
                item_id=f"wk_{i % 311}",
                request_id=f"r_{i // 20}",
                position=i % 20,
                session_id=f"s_{i // 50}",
                platform="ios",
                payload={"screen": "home", "v": i},
            )
            for i in range(start, min(lines, start + per_file))
        ]
        batches.append((layout.landing_events_key(DAY, 10, f"b{start}"), _gz(body)))
    return batches


def _peak_bytes(
    batches: list[tuple[str, bytes]], pseudonymizer: Pseudonymizer, stream: bool
) -> int:
    tracemalloc.start()
    try:
        sink = CleanPartitionWriter() if stream else None
        ingest_batches(iter(batches), DAY, pseudonymizer, chunk_lines=1000, sink=sink)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streamed_ingestion_grows_by_an_eighth_of_what_collected_rows_take(
    pseudonymizer: Pseudonymizer,
) -> None:
    # Peak traced memory at 2,000 and at 8,000 lines (chunks of 1,000). Collected, every clean
    # row stays as a typed frame (about 700 B a line); streamed, a day keeps its event ids as
    # bytes (for de-duplication) and its rows compressed: tens of bytes a line.
    small, large = _landed(2000), _landed(8000)
    _peak_bytes(small, pseudonymizer, stream=True)  # first-call imports and caches
    _peak_bytes(small, pseudonymizer, stream=False)

    streamed = _peak_bytes(large, pseudonymizer, True) - _peak_bytes(small, pseudonymizer, True)
    collected = _peak_bytes(large, pseudonymizer, False) - _peak_bytes(small, pseudonymizer, False)

    assert collected > 6000 * 500
    assert streamed < collected / 8


def test_seen_ids_answer_as_a_set_of_the_added_ids_does() -> None:
    # Ids of several byte lengths, non-ASCII ones among them (more bytes than characters), some
    # a prefix of others, updated in 40 chunks: the runs merge as they go.
    rng = np.random.default_rng(5)
    alphabet = [*"abcXYZ019_.:@-", "é", "ж", "漢"]
    pool = sorted({"".join(rng.choice(alphabet, size=rng.integers(1, 9))) for _ in range(6000)})
    order = rng.permutation(len(pool))
    seen, reference = SeenIds(), set()
    for chunk in np.array_split(order, 40):
        probe = [pool[i] for i in rng.choice(len(pool), size=200)]

        assert seen.contains(probe).tolist() == [p in reference for p in probe]

        # New ids (some twice) and ids of earlier chunks: each is "seen" after its first copy.
        new = [pool[i] for i in chunk[: len(chunk) // 2]]
        batch = [*new, *probe[:20], *new[:10]]
        expected = []
        for i in batch:
            expected.append(i in reference)
            reference.add(i)

        assert seen.update(pd.Series(batch)).tolist() == expected
    assert len(seen) == len(reference)
    assert seen.contains([]).tolist() == []
