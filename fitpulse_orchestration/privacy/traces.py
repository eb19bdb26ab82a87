"""Finding a user's traces in files: what an erasure must leave behind is checked, not assumed.

``file_texts`` turns any file the platform writes into searchable text: Parquet is decoded (its
pages are compressed), gzip and zip are inflated, a SQLite database is read both as its SQL dump
and as raw bytes (freed pages and the ``-wal`` file hold deleted rows until they are
overwritten), and everything else, pickles included, as raw bytes. Pickled numpy string arrays
store UTF-32, so each text also comes with its NUL bytes removed.

``find_traces`` scans a folder for a set of strings (a raw id, a pseudonym) with that reading.
The erasure uses it to find which derived values and registered bundles still hold an erased
pseudonym, and the erasure completeness test uses it over a whole project home.
"""

from __future__ import annotations

import gzip
import io
import sqlite3
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

_SQLITE_MAGIC = b"SQLite format 3\x00"


def bytes_texts(data: bytes, name: str = "") -> list[str]:
    """Every text ``data`` holds (``name``: the file name, for the Parquet suffix)."""
    if name.endswith(".parquet") or data[:4] == b"PAR1":
        try:
            decoded = pd.read_parquet(io.BytesIO(data)).to_csv()
        except Exception:
            decoded = ""
        return [decoded, *_raw(data)]
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            pass
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            data = b"".join(archive.read(member) for member in archive.namelist())
    return _raw(data)


def file_texts(path: Path) -> list[str]:
    """Every text the file at ``path`` holds (module docstring)."""
    data = path.read_bytes()
    if data.startswith(_SQLITE_MAGIC):
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                dump = "\n".join(conn.iterdump())
        except sqlite3.Error:
            dump = ""
        return [dump, *_raw(data)]
    return bytes_texts(data, path.name)


def find_traces(
    root: Path, needles: Iterable[str], skip: Iterable[Path] = ()
) -> dict[str, list[str]]:
    """``{path relative to root: needles found}`` for every file under ``root`` holding one.

    ``skip`` lists folders or files left out (e.g. the erasure list, which must keep the
    pseudonym to keep the user out).
    """
    wanted = [n for n in dict.fromkeys(needles) if n]
    skipped = [Path(s) for s in skip]
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if any(path == s or path.is_relative_to(s) for s in skipped):
            continue
        texts = file_texts(path)
        hits = [n for n in wanted if any(n in text for text in texts)]
        if hits:
            found[path.relative_to(root).as_posix()] = hits
    return found


def _raw(data: bytes) -> list[str]:
    return [data.decode("latin-1"), data.replace(b"\x00", b"").decode("latin-1")]
