"""Hostile landed lines: each costs only itself, with a stable reason; every physical line counts.

One case per attack of issue 20 (a line that failed a whole day, good lines lost around a bad
byte, line accounting off, timestamps without a lower bound, ids and values that should never
have been accepted). Each case lands next to two good lines; the good lines must be accepted.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.ingest import (
    MAX_DEPTH,
    MAX_LINE_BYTES,
    IngestResult,
    ingest_batches,
    ingest_day,
    write_ingested,
)
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.storage import LocalObjectStore

DAY = dt.date(2026, 11, 3)
KEY = layout.landing_events_key(DAY, 10, "hostile")
PSEUDO = Pseudonymizer.from_secret("hostile-lines-test")


def _line(event_id: str, **fields: Any) -> bytes:
    rec: dict[str, Any] = {
        "event_id": event_id,
        "event_type": "app_open",
        "user_id": "usr_0000001",
        "ts": "2026-11-03T10:05:00Z",
    }
    rec.update(fields)
    return json.dumps(rec).encode()


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


GOOD = [_line("good-1"), _line("good-2")]


def _ingest(*lines: bytes, ending: bytes = b"\n") -> IngestResult:
    data = ending.join(lines) + ending
    return ingest_batches([(KEY, gzip.compress(data))], DAY, PSEUDO)


def _balanced(result: IngestResult) -> bool:
    return result.read == result.accepted + result.quarantined + result.duplicates + result.erased


HOSTILE: dict[str, tuple[bytes, str]] = {
    "position beyond int32": (
        _line("e", event_type="impression", item_id="wk_1", request_id="r_1", position=10**30),
        "out_of_range:position",
    ),
    "payload nested 5,000 deep (the parser's recursion limit)": (
        b'{"event_id": "e", "payload": ' + b'{"x":' * 5_000 + b"1" + b"}" * 5_001,
        "too_deep",
    ),
    "payload nested 100,000 deep (beyond the size limit)": (
        b'{"event_id": "e", "payload": ' + b'{"x": ' * 100_000 + b"1" + b"}" * 100_001,
        "line_too_long",
    ),
    "payload nested beyond the limit": (
        _line("e", payload=_nested(MAX_DEPTH)),
        "too_deep",
    ),
    "a non-UTF-8 byte": (b'{"event_id": "e", "user_id": "usr_\xff"}', "not_utf8"),
    "timestamp in 1970": (_line("e", ts="1970-01-01T00:00:00Z"), "stale_timestamp:ts"),
    "timestamp in 1900": (_line("e", ts="1900-01-01T00:00:00Z"), "stale_timestamp:ts"),
    "timestamp in year 1": (_line("e", ts="0001-01-01T00:00:00Z"), "wrong_type:ts"),
    "timestamp 31 days late": (_line("e", ts="2026-10-02T23:59:59Z"), "stale_timestamp:ts"),
    "user id with a path separator": (_line("e", user_id="../../etc/passwd"), "invalid_id:user_id"),
    "user id with NUL": (_line("e", user_id="usr\u0000x"), "invalid_id:user_id"),
    "user id of whitespace only": (_line("e", user_id="   "), "invalid_id:user_id"),
    "user id of 10 KB": (_line("e", user_id="u" * 10_000), "invalid_id:user_id"),
    "event id with a space": (_line("e 1"), "invalid_id:event_id"),
    "item id with a slash": (
        _line("e", event_type="click", item_id="wk/1", request_id="r_1"),
        "invalid_id:item_id",
    ),
    "a 5 MB line": (_line("e", payload={"blob": "a" * 5_000_000}), "line_too_long"),
    "NaN in a payload": (b'{"event_id": "e", "payload": {"hr": NaN}}', "non_finite_number"),
    "position a float beyond 64 bits (not an int)": (
        _line("e", event_type="impression", item_id="wk_1", request_id="r_1", position=1e19),
        "wrong_type:position",
    ),
    "user id with a lone surrogate": (
        b'{"event_id": "e", "event_type": "app_open", "user_id": "u\\ud800", '
        b'"ts": "2026-11-03T10:05:00Z"}',
        "invalid_id:user_id",
    ),
    "timestamp on 30 February": (_line("e", ts="2026-02-30T10:05:00Z"), "wrong_type:ts"),
    "a byte-order mark before the object": (b"\xef\xbb\xbf" + _line("e"), "malformed_json"),
    "Infinity in a payload": (
        b'{"event_id": "e", "payload": {"x": -Infinity}}',
        "non_finite_number",
    ),
}


@pytest.mark.parametrize(("line", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_line_is_quarantined_alone_with_its_reason(line: bytes, reason: str) -> None:
    result = _ingest(GOOD[0], line, GOOD[1])

    assert list(result.quarantine["reason"]) == [reason]
    assert list(result.quarantine["line_no"]) == [2]
    assert list(result.events["event_id"]) == ["good-1", "good-2"]
    assert result.read == 3
    assert _balanced(result)


def test_quarantined_raw_text_is_escaped_and_bounded() -> None:
    bad_byte = b'{"event_id": "e", "user_id": "usr_\xff"}'
    huge = _line("e", payload={"blob": "a" * (MAX_LINE_BYTES + 1)})

    raw = list(_ingest(bad_byte, huge).quarantine["raw"])

    assert raw[0] == '{"event_id": "e", "user_id": "usr_\\xff"}'
    assert raw[1].endswith(f"... [{len(huge)} bytes]")
    assert len(raw[1]) < 5000


def test_only_newline_splits_lines() -> None:
    # U+2028, U+2029 and U+0085 are legal inside JSON strings; they are not line breaks here.
    odd = [_line(f"e{i}", session_id=None, payload={"note": f"a{sep}b"}) for i, sep in
           enumerate(["\u2028", "\u2029", "\u0085", "\x0b", "\x1c"])]  # fmt: skip

    result = _ingest(*odd)

    assert result.read == len(odd)
    assert result.quarantined == 0
    assert list(result.events["line_no"]) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("data", "physical"),
    [
        (b"", 0),
        (b"\n", 1),
        (b"\n\n", 2),
        (GOOD[0], 1),  # no final newline: the last line still counts
        (GOOD[0] + b"\n" + GOOD[1], 2),
        (GOOD[0] + b"\r\n" + GOOD[1] + b"\r\n", 2),  # CRLF endings
        (GOOD[0] + b"\n\n" + GOOD[1] + b"\n", 3),  # an empty line in between is a line
    ],
)
def test_every_physical_line_is_read_once(data: bytes, physical: int) -> None:
    result = ingest_batches([(KEY, gzip.compress(data))], DAY, PSEUDO)

    assert result.read == physical
    assert _balanced(result)
    assert set(result.quarantine["reason"]) <= {"empty_record"}


def test_a_file_of_every_attack_balances() -> None:
    lines = [GOOD[0], *(line for line, _ in HOSTILE.values()), GOOD[1], GOOD[0]]

    result = _ingest(*lines)

    assert result.read == len(lines)
    assert result.accepted == 2
    assert result.duplicates == 1
    assert result.quarantined == len(HOSTILE)
    assert _balanced(result)


def test_a_resend_is_a_duplicate_for_the_whole_retention_window(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    first = dt.date(2026, 10, 5)
    original = _line("evt-once", ts="2026-10-05T09:00:00Z")
    store.put_bytes(layout.landing_events_key(first, 9, "a"), gzip.compress(original + b"\n"))
    write_ingested(store, first, ingest_day(store, first, PSEUDO))
    # The phone re-sends it 29 days later, with a fresh event beside it.
    late = first + dt.timedelta(days=29)
    fresh = _line("evt-new", ts=f"{late.isoformat()}T09:00:00Z")
    store.put_bytes(
        layout.landing_events_key(late, 9, "b"), gzip.compress(original + b"\n" + fresh + b"\n")
    )

    result = ingest_day(store, late, PSEUDO)

    assert (result.read, result.duplicates, result.quarantined) == (2, 1, 0)
    assert list(result.events["event_id"]) == ["evt-new"]


def test_ids_follow_the_unicode_pattern_in_any_script() -> None:
    ids = ["ユーザー1", "é", "\u0661\u0662", "usr_0000009", "é/x", "_é", "ü" * 65]

    result = _ingest(*(_line(f"e{i}", user_id=uid) for i, uid in enumerate(ids)))

    assert list(result.quarantine["line_no"]) == [5, 6, 7]
    assert set(result.quarantine["reason"]) == {"invalid_id:user_id"}
    assert result.accepted == 4


def test_integers_beyond_64_bits_keep_their_value() -> None:
    result = _ingest(_line("e", event_type="workout_complete", item_id="wk_1",
                           payload={"n": 2**70, "m": -(2**64), "f": 1e300}))  # fmt: skip

    assert json.loads(result.events["payload"].iloc[0]) == {"n": 2**70, "m": -(2**64), "f": 1e300}


def test_timestamps_outside_the_collectors_shape_parse_as_pandas_parses_them() -> None:
    stamps = ["2026-11-03T10:05:00Z", "2026-11-03T12:05:00+0200", "2026-11-03 10:06:00.5Z",
              "2026-11-03T10:07:00-00:00", "2026-11-03T10:08"]  # fmt: skip

    result = _ingest(*(_line(f"e{i}", ts=ts) for i, ts in enumerate(stamps)))

    assert [str(t) for t in result.events["ts"]] == [
        "2026-11-03 10:05:00+00:00",
        "2026-11-03 10:05:00+00:00",
        "2026-11-03 10:06:00.500000+00:00",
        "2026-11-03 10:07:00+00:00",
    ]
    assert list(result.quarantine["reason"]) == ["wrong_type:ts"]
