"""Rewriting a landed batch for an erasure: hostile lines never crash it or change others."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from fitpulse_orchestration.privacy.erasure import erase_user
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.privacy.raw_zone import filter_landing_batch, line_user
from fitpulse_orchestration.storage import LocalObjectStore

KEY = "landing/events/date=2026-11-03/hour=10/batch.ndjson.gz"
GONE = "usr_gone"


def _delete(user: str | None, text: str) -> bool:
    return user == GONE or (user is None and json.dumps(GONE) in text)


def test_hostile_lines_are_judged_one_by_one_and_others_kept_byte_for_byte(
    tmp_path: Path,
) -> None:
    store = LocalObjectStore(tmp_path)
    others = [
        b'{"user_id": "usr_kept", "payload": {"note": "a\xe2\x80\xa8b"}}',  # U+2028 inside
        b'{"user_id": "usr_kept", "payload": {"x": 1}}\r',  # a CRLF line stays as it was
        b'{"user_id": "usr_kept", "note": "caf\xe9"}',  # not UTF-8, another user's
        b'{"payload": ' + b'{"x":' * 5_000 + b"1" + b"}" * 5_001,  # past the parser's limit
    ]
    erased = [
        b'{"user_id": "usr_gone", "event_id": "e1"}',
        b'{"user_id": "usr_gone", "note": "\xff"}',  # not UTF-8, the erased user's
    ]
    lines = [others[0], erased[0], others[1], erased[1], others[2], others[3]]
    store.put_bytes(KEY, gzip.compress(b"\n".join(lines) + b"\n"))

    counts = filter_landing_batch(store, KEY, _delete)

    assert (counts.records_deleted, counts.records_kept) == (2, 4)
    assert gzip.decompress(store.get_bytes(KEY)) == b"\n".join(others) + b"\n"


def test_line_user_never_raises() -> None:
    assert line_user('{"user_id": "u1"}') == "u1"
    for hostile in ("", "[1]", "{", '{"user_id": 5}', '{"x":' * 5_000 + "1" + "}" * 5_000, "NaN"):
        assert line_user(hostile) is None


def test_erasure_reaches_the_rejects_of_an_import(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    key = "landing/import_rejects/ratings-0123abcd.csv"
    store.put_bytes(
        key,
        b"row_number,reason,userId,movieId,timestamp\n"
        b"2,unparseable_timestamp,usr_gone,10,yesterday\n"
        b"3,missing_item_id,usr_kept,,881250949\n"
        b"4,invalid_item_id,usr_gone,wk/1,881250949\n",
    )

    report = erase_user(
        store, Pseudonymizer.from_secret("raw-zone-test-key-0123456789"), GONE, requested_by="dpo"
    )

    assert report.zones["import_rejects"].records_deleted == 2
    assert store.get_bytes(key) == (
        b"row_number,reason,userId,movieId,timestamp\n3,missing_item_id,usr_kept,,881250949\n"
    )
    assert GONE.encode() not in store.get_bytes(key)
