"""The trace scanner reads every format the platform writes, including deleted SQLite rows."""

from __future__ import annotations

import gzip
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from fitpulse_orchestration.privacy.traces import file_texts, find_traces

NEEDLE = "p_0123456789abcdef0123"


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_compressed_parquet_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    # Ids sharing the needle's prefix: the compressor back-references it, so the needle's
    # bytes never appear whole in the file.
    ids = [NEEDLE[:-1] + digit for digit in "0123456789"] * 5
    pd.DataFrame({"user_id": ids}).to_parquet(path, compression="gzip")

    assert NEEDLE.encode() not in path.read_bytes()
    assert any(NEEDLE in text for text in file_texts(path))


def test_gzip_and_pickled_numpy_strings_are_read(tmp_path: Path) -> None:
    gz = _write(tmp_path / "a.ndjson.gz", gzip.compress(f'{{"user_id": "{NEEDLE}"}}'.encode()))
    pkl = _write(tmp_path / "m.pkl", pickle.dumps(np.array([NEEDLE, "p_other"])))

    assert any(NEEDLE in text for text in file_texts(gz))
    # numpy stores UTF-32: the needle appears once NUL bytes are dropped.
    assert NEEDLE.encode() not in pkl.read_bytes()
    assert any(NEEDLE in text for text in file_texts(pkl))


def test_a_deleted_sqlite_row_is_found_until_it_is_overwritten(tmp_path: Path) -> None:
    db = tmp_path / "online.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE f (user_id TEXT, v BLOB)")
        conn.execute("INSERT INTO f VALUES (?, zeroblob(100))", (NEEDLE,))
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA secure_delete = OFF")  # some builds default to ON
        conn.execute("DELETE FROM f")
    dump_only = file_texts(db)[:1]

    assert not any(NEEDLE in text for text in dump_only)  # no live row
    assert any(NEEDLE in text for text in file_texts(db))  # the freed page still holds it
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("VACUUM")
    assert not any(NEEDLE in text for text in file_texts(db))


def test_find_traces_names_each_file_and_skips_what_it_is_told(tmp_path: Path) -> None:
    _write(tmp_path / "store/a.json", f'"{NEEDLE}"'.encode())
    _write(tmp_path / "store/keep/b.json", f'"{NEEDLE}"'.encode())
    _write(tmp_path / "store/c.json", b'"nothing"')
    _write(tmp_path / "store/d.txt", b"usr_0000001")

    found = find_traces(tmp_path, [NEEDLE, "usr_0000001"], skip=[tmp_path / "store/keep"])

    assert found == {"store/a.json": [NEEDLE], "store/d.txt": ["usr_0000001"]}
