"""The online feature store: the latest user and item features, keyed by id, for serving.

Materialization writes a whole feature table at once (the offline snapshot tables computed by
``features.point_in_time``, so online values come from the same code as training features) and
swaps it in atomically: a reader sees the previous table or the new one, never a mix. Two
implementations: SQLite (the embedded default, one file) and Redis (the production profile).

Layout: one table per *kind*; each row is an id and a JSON object, plus a metadata record with
the table's ``as_of``, row count and feature names. ``user`` and ``item`` rows hold feature
values (floats, null for missing); ``history`` rows hold each user's history record
(``features.online.UserHistory``) from which serving computes the user x item features;
``push`` rows hold each user's push history (``push.features.PushHistory``).
"""

from __future__ import annotations

import abc
import json
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

KINDS: Final = ("user", "item", "history", "push")
USER_KINDS: Final = ("user", "history", "push")
"""Tables keyed by a user's pseudonym (what an erasure removes)."""
META_TTL_S: Final = 5.0
CACHED_KINDS: Final = ("item",)
"""Tables whose decoded rows ``lookup_values`` keeps per generation (none keyed by a member)."""
VALUE_CACHE_ROWS: Final = 500_000
"""Rows a value cache holds at most (about 60 MB at 15 features); past it, it starts over."""
ID_COLUMNS: Final = {"user": "user_id", "item": "item_id", "history": "user_id", "push": "user_id"}


log = logging.getLogger(__name__)


class OnlineStoreUnavailableError(RuntimeError):
    """The online store cannot be reached (the caller falls back to default features)."""


class CorruptRecordError(LookupError):
    """A stored row is not the JSON object of numbers (or record) that was written.

    A ``LookupError``: request paths serve that one member or item as if its row could not be
    read (labelled fallbacks), and the store stays healthy for everyone else.
    """


def _decode(kind: str, id_: str, payload: str) -> dict[str, Any]:
    """One stored payload as a JSON object; ``CorruptRecordError`` otherwise."""
    try:
        data = json.loads(payload)
    except (ValueError, TypeError) as exc:
        raise CorruptRecordError(f"the online {kind} row of {id_!r} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CorruptRecordError(f"the online {kind} row of {id_!r} is not a JSON object")
    return data


def _numbers(kind: str, id_: str, data: Mapping[str, Any], features: Sequence[str]) -> np.ndarray:
    """``features`` of one decoded row as floats (NaN for null); ``CorruptRecordError`` else."""
    try:
        return np.array([data.get(f) for f in features], dtype=float)
    except (ValueError, TypeError) as exc:
        raise CorruptRecordError(
            f"the online {kind} row of {id_!r} holds a non-number: {exc}"
        ) from None


def _row_values(kind: str, id_: str, payload: str, features: Sequence[str]) -> dict[str, float]:
    """One stored feature row as ``{feature: value}`` (NaN for null)."""
    values = _numbers(kind, id_, _decode(kind, id_, payload), features)
    return dict(zip(features, values.tolist(), strict=True))


@dataclass(frozen=True)
class TableMeta:
    """What a materialized feature table holds."""

    kind: str
    as_of: str
    rows: int
    features: tuple[str, ...]
    generation: str = ""
    """Random id of the materialization (what a value cache is keyed by; "" before it existed)."""


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {KINDS}")
    return kind


def encode_rows(frame: pd.DataFrame, kind: str, features: Sequence[str]) -> list[tuple[str, str]]:
    """``(id, JSON of features)`` per row; NaN becomes null.

    Raises:
        ValueError: for a missing id or feature column, or duplicated ids.
    """
    id_col = ID_COLUMNS[_check_kind(kind)]
    missing = [c for c in (id_col, *features) if c not in frame.columns]
    if missing:
        raise ValueError(f"{kind} feature table lacks columns {missing}")
    dup = frame[id_col][frame[id_col].duplicated()]
    if not dup.empty:
        raise ValueError(f"{kind} feature table has duplicated ids, e.g. {dup.iloc[0]!r}")
    out = []
    for row in frame[[id_col, *features]].itertuples(index=False):
        values = {
            f: (None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v))
            for f, v in zip(features, row[1:], strict=True)
        }
        out.append((str(row[0]), json.dumps(values, separators=(",", ":"))))
    return out


def decode_rows(
    pairs: Sequence[tuple[str, str]], kind: str, features: Sequence[str]
) -> pd.DataFrame:
    """A frame with the id column and ``features`` (float64, NaN for null) from stored pairs."""
    id_col = ID_COLUMNS[_check_kind(kind)]
    # None becomes NaN in a float array.
    values = np.array(
        [_numbers(kind, i, _decode(kind, i, payload), features) for i, payload in pairs],
        dtype=float,
    ).reshape(len(pairs), len(features))
    frame = pd.DataFrame(values, columns=list(features))
    frame.insert(0, id_col, [i for i, _ in pairs])
    return frame


class OnlineFeatureStore(abc.ABC):
    """Latest feature values per user and per item."""

    def __init__(self) -> None:
        self._meta_cache: dict[str, tuple[float, TableMeta]] = {}
        self._values: dict[str, tuple[str, dict[str, np.ndarray]]] = {}

    def materialize(
        self, kind: str, frame: pd.DataFrame, features: Sequence[str], as_of: pd.Timestamp
    ) -> TableMeta:
        """Replace the ``kind`` table with ``frame`` atomically and return its metadata."""
        meta = TableMeta(
            _check_kind(kind), as_of.isoformat(), len(frame), tuple(features), uuid.uuid4().hex
        )
        self._replace(kind, encode_rows(frame, kind, features), meta)
        self._meta_cache.pop(kind, None)
        return meta

    def lookup(self, kind: str, ids: Sequence[str]) -> pd.DataFrame:
        """Features of ``ids`` that the store holds (unknown ids are absent from the result).

        Raises:
            OnlineStoreUnavailableError: when the store cannot be reached.
            LookupError: when the ``kind`` table was never materialized.
            CorruptRecordError: when a stored row is not what was written (a ``LookupError``).
        """
        meta = self.cached_meta(kind)
        if meta is None:
            raise LookupError(f"the online {kind} features were never materialized")
        return decode_rows(self._get(kind, list(dict.fromkeys(ids))), kind, meta.features)

    def lookup_values(self, kind: str, ids: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
        """Feature values of ``ids`` as a float matrix aligned with ``ids`` (NaN rows: unknown).

        The request path's lookup: no frame is built. A damaged row (``CorruptRecordError``)
        reads as unknown and is logged. Raises like ``lookup`` otherwise.
        """
        meta = self.cached_meta(kind)
        if meta is None:
            raise LookupError(f"the online {kind} features were never materialized")
        cache = self._value_cache(kind, meta)
        missing = [i for i in dict.fromkeys(ids) if cache is None or i not in cache]
        found: dict[str, np.ndarray] = {}
        if missing:
            pairs = dict(self._get(kind, missing))
            nan_row = np.full(len(meta.features), np.nan)
            for item in missing:
                payload = pairs.get(item)
                if payload is None:
                    found[item] = nan_row
                    continue
                try:
                    # json null -> None -> NaN in a float array.
                    found[item] = _numbers(kind, item, _decode(kind, item, payload), meta.features)
                except CorruptRecordError as exc:
                    # One damaged row must not take every other row of the call with it: it
                    # reads as unknown (cached with the rest, so logged once a generation).
                    log.warning("%s; read as missing", exc)
                    found[item] = nan_row
            if cache is not None:
                if len(cache) + len(found) > VALUE_CACHE_ROWS:
                    cache.clear()
                cache.update(found)
        values = np.empty((len(ids), len(meta.features)))
        for row, item in enumerate(ids):
            values[row] = found[item] if item in found else cache[item]  # type: ignore[index]
        return values, meta.features

    def lookup_row(self, kind: str, id_: str) -> dict[str, float] | None:
        """Feature values of one id (NaN for null), None when the store holds no row for it.

        The request path's lookup of one member: no frame is built. Raises like ``lookup``.
        """
        meta = self.cached_meta(kind)
        if meta is None:
            raise LookupError(f"the online {kind} features were never materialized")
        pairs = self._get(kind, [id_])
        if not pairs:
            return None
        return _row_values(kind, id_, pairs[0][1], meta.features)

    def lookup_member(
        self, id_: str, record_kind: str, row_kind: str
    ) -> tuple[dict[str, Any] | None, dict[str, float] | None]:
        """``lookup_records(record_kind, [id_])`` and ``lookup_row(row_kind, id_)`` in one read.

        The request path's member lookup: one round trip to the store for both rows (the
        tables' metadata comes from ``cached_meta``). Raises like ``lookup_row``.
        """
        if self.cached_meta(_check_kind(record_kind)) is None:
            raise LookupError(f"the online {record_kind} records were never materialized")
        meta = self.cached_meta(row_kind)
        if meta is None:
            raise LookupError(f"the online {row_kind} features were never materialized")
        record, row = self._get_rows([(record_kind, id_), (row_kind, id_)])
        return (
            None if record is None else _decode(record_kind, id_, record),
            None if row is None else _row_values(row_kind, id_, row, meta.features),
        )

    def _get_rows(self, keys: Sequence[tuple[str, str]]) -> list[str | None]:
        """The payload of each ``(kind, id)``, None where absent.

        Stores override it to read every key in one round trip.
        """
        return [dict(self._get(kind, [id_])).get(id_) for kind, id_ in keys]

    def _value_cache(self, kind: str, meta: TableMeta) -> dict[str, np.ndarray] | None:
        """Decoded rows of a ``CACHED_KINDS`` table's current generation (None: not cached).

        Item features hold nothing about a member and change only with a materialization, so
        a request reads from the store only the items no earlier request has read.
        """
        if kind not in CACHED_KINDS or not meta.generation:
            return None
        current = self._values.get(kind)
        if current is None or current[0] != meta.generation:
            current = (meta.generation, {})
            self._values[kind] = current
        return current[1]

    def materialize_records(
        self, kind: str, records: Mapping[str, Mapping[str, Any]], as_of: pd.Timestamp
    ) -> TableMeta:
        """Replace the ``kind`` table with JSON ``records`` (id -> object) atomically."""
        meta = TableMeta(_check_kind(kind), as_of.isoformat(), len(records), (), uuid.uuid4().hex)
        rows = [(str(i), json.dumps(r, separators=(",", ":"))) for i, r in records.items()]
        self._replace(kind, rows, meta)
        self._meta_cache.pop(kind, None)
        return meta

    def lookup_records(self, kind: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """JSON records of ``ids`` that the store holds.

        Raises:
            OnlineStoreUnavailableError: when the store cannot be reached.
            LookupError: when the ``kind`` table was never materialized.
        """
        if self.cached_meta(_check_kind(kind)) is None:
            raise LookupError(f"the online {kind} records were never materialized")
        return {i: _decode(kind, i, p) for i, p in self._get(kind, list(dict.fromkeys(ids)))}

    def cached_meta(self, kind: str) -> TableMeta | None:
        """``meta``, read from the store at most once per ``META_TTL_S`` seconds.

        Lookups need only the feature names, which change with the code, not with each
        materialization; a materialization through this object drops the cached entry.
        """
        now = time.monotonic()
        hit = self._meta_cache.get(kind)
        if hit is not None and now - hit[0] < META_TTL_S:
            return hit[1]
        meta = self.meta(kind)
        if meta is not None:
            self._meta_cache[kind] = (now, meta)
        return meta

    def forget(self, user_id: str) -> int:
        """Delete the user's rows from every user-keyed table (erasure); return how many.

        Raises:
            OnlineStoreUnavailableError: when the store cannot be reached.
        """
        return sum(self._delete(kind, user_id) for kind in USER_KINDS)

    @abc.abstractmethod
    def meta(self, kind: str) -> TableMeta | None:
        """Metadata of the ``kind`` table, None before its first materialization."""

    @abc.abstractmethod
    def _delete(self, kind: str, row_id: str) -> int:
        """Delete one row of the ``kind`` table; return 1 when it existed, else 0."""

    @abc.abstractmethod
    def _replace(self, kind: str, rows: list[tuple[str, str]], meta: TableMeta) -> None:
        """Swap in a new table."""

    @abc.abstractmethod
    def _get(self, kind: str, ids: list[str]) -> list[tuple[str, str]]:
        """Stored ``(id, payload)`` pairs of the ids that exist."""


def _meta_from_json(text: str | bytes | None) -> TableMeta | None:
    if text is None:
        return None
    data: dict[str, Any] = json.loads(text)
    return TableMeta(
        data["kind"],
        data["as_of"],
        data["rows"],
        tuple(data["features"]),
        str(data.get("generation", "")),
    )


def _meta_json(meta: TableMeta) -> str:
    return json.dumps(
        {
            "kind": meta.kind,
            "as_of": meta.as_of,
            "rows": meta.rows,
            "features": meta.features,
            "generation": meta.generation,
        }
    )


def scrub_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Checkpoint the WAL into the database and truncate it (after an erasure's delete).

    Raises:
        sqlite3.OperationalError: when a reader kept the checkpoint from finishing.
    """
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        raise sqlite3.OperationalError(f"{path}: a reader kept the WAL checkpoint from finishing")


class SQLiteOnlineStore(OnlineFeatureStore):
    """One SQLite file (WAL journal); a materialization is one transaction.

    Readers keep one read-only connection per thread, so a lookup costs a query (and a
    ``stat``), not an open. A connection follows its file: when the path is gone or names
    another file (deleted, renamed, replaced), the lookup fails as unavailable or reopens the
    new file, instead of reading the old one through the open handle.

    ``create`` False (serving) never creates the file or its tables: a missing store is
    unavailable (the service's labelled fallback) until the real one appears.
    """

    def __init__(self, path: str | Path, timeout_s: float = 2.0, create: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._local = threading.local()
        if not create:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn, conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS features "
                "(kind TEXT NOT NULL, id TEXT NOT NULL, payload TEXT NOT NULL, "
                "PRIMARY KEY (kind, id))"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS meta (kind TEXT PRIMARY KEY, body TEXT)")

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(self.path, timeout=self.timeout_s)
        except sqlite3.Error as exc:
            raise OnlineStoreUnavailableError(f"cannot open {self.path}: {exc}") from exc

    def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        held: tuple[sqlite3.Connection, int, int] | None = getattr(self._local, "conn", None)
        try:
            inode = os.stat(self.path).st_ino
        except OSError as exc:
            self._drop_reader()
            raise OnlineStoreUnavailableError(f"cannot read {self.path}: {exc}") from exc
        try:
            if held is not None and held[2] != os.getpid():
                # A forked worker never uses its parent's connection (SQLite forbids carrying
                # one across a fork): it forgets it, unclosed, and opens its own.
                self._local.conn = held = None
            if held is None or held[1] != inode:
                self._drop_reader()
                conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, timeout=self.timeout_s
                )
                held = (conn, inode, os.getpid())
                self._local.conn = held
            return held[0].execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            self._drop_reader()
            raise OnlineStoreUnavailableError(f"cannot read {self.path}: {exc}") from exc

    def _drop_reader(self) -> None:
        held: tuple[sqlite3.Connection, int, int] | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if held is not None:
            try:
                held[0].close()
            except sqlite3.Error:
                pass

    def meta(self, kind: str) -> TableMeta | None:
        """Metadata of the ``kind`` table."""
        rows = self._read("SELECT body FROM meta WHERE kind = ?", (kind,))
        return _meta_from_json(rows[0][0] if rows else None)

    def _replace(self, kind: str, rows: list[tuple[str, str]], meta: TableMeta) -> None:
        with closing(self._connect()) as conn, conn:
            conn.execute("DELETE FROM features WHERE kind = ?", (kind,))
            conn.executemany(
                "INSERT INTO features (kind, id, payload) VALUES (?, ?, ?)",
                [(kind, i, p) for i, p in rows],
            )
            conn.execute(
                "INSERT OR REPLACE INTO meta (kind, body) VALUES (?, ?)", (kind, _meta_json(meta))
            )

    def _delete(self, kind: str, row_id: str) -> int:
        try:
            with closing(self._connect()) as conn, conn:
                cursor = conn.execute(
                    "DELETE FROM features WHERE kind = ? AND id = ?", (kind, row_id)
                )
                return int(cursor.rowcount)
        except sqlite3.Error as exc:
            raise OnlineStoreUnavailableError(f"cannot write {self.path}: {exc}") from exc

    def forget(self, user_id: str) -> int:
        """Delete the user's rows, zero the freed space and empty the WAL (erasure).

        ``secure_delete`` overwrites the deleted cells, and a ``TRUNCATE`` checkpoint copies
        the pages back into the file and cuts the WAL to nothing, so neither the database
        file nor its WAL keeps the user's bytes.

        Raises:
            OnlineStoreUnavailableError: when the store cannot be written.
        """
        marks = ",".join("?" * len(USER_KINDS))
        try:
            with closing(self._connect()) as conn:
                conn.execute("PRAGMA secure_delete=ON")
                with conn:
                    cursor = conn.execute(
                        f"DELETE FROM features WHERE kind IN ({marks}) AND id = ?",
                        (*USER_KINDS, user_id),
                    )
                scrub_wal(conn, self.path)
                return int(cursor.rowcount)
        except sqlite3.Error as exc:
            raise OnlineStoreUnavailableError(f"cannot write {self.path}: {exc}") from exc

    def _get_rows(self, keys: Sequence[tuple[str, str]]) -> list[str | None]:
        where = " OR ".join("(kind = ? AND id = ?)" for _ in keys)
        rows = self._read(
            f"SELECT kind, id, payload FROM features WHERE {where}",
            [value for key in keys for value in key],
        )
        found = {(kind, id_): payload for kind, id_, payload in rows}
        return [found.get(key) for key in keys]

    def _get(self, kind: str, ids: list[str]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out += self._read(
                f"SELECT id, payload FROM features WHERE kind = ? AND id IN ({marks})",
                (kind, *chunk),
            )
        return out


class InMemoryOnlineStore(OnlineFeatureStore):
    """Tables held in memory: a private, writable copy of another store for simulations.

    ``copy_of`` copies the rows of chosen ids; ``put_record`` then changes one row, so a
    simulation can play days forward without touching the store it copied.
    """

    def __init__(self) -> None:
        super().__init__()
        self._tables: dict[str, dict[str, str]] = {}
        self._metas: dict[str, TableMeta] = {}

    @classmethod
    def copy_of(
        cls, source: OnlineFeatureStore, ids: Mapping[str, Sequence[str]]
    ) -> InMemoryOnlineStore:
        """A copy of ``source``'s rows of ``ids`` per kind (kinds never materialized stay so).

        Raises:
            OnlineStoreUnavailableError: when ``source`` cannot be read.
        """
        out = cls()
        for kind, wanted in ids.items():
            meta = source.meta(_check_kind(kind))
            if meta is None:
                continue
            out._metas[kind] = meta
            out._tables[kind] = dict(source._get(kind, [str(i) for i in dict.fromkeys(wanted)]))
        return out

    def put_record(self, kind: str, row_id: str, record: Mapping[str, Any]) -> None:
        """Replace one row of a materialized ``kind`` table with a JSON record."""
        if _check_kind(kind) not in self._metas:
            raise LookupError(f"the {kind} table was never materialized")
        self._tables[kind][row_id] = json.dumps(record, separators=(",", ":"))

    def forget_record(self, kind: str, row_id: str) -> None:
        """Remove one row of ``kind`` (absent rows are fine)."""
        self._delete(_check_kind(kind), row_id)

    def meta(self, kind: str) -> TableMeta | None:
        """Metadata of the ``kind`` table."""
        return self._metas.get(kind)

    def _delete(self, kind: str, row_id: str) -> int:
        return 0 if self._tables.get(kind, {}).pop(row_id, None) is None else 1

    def _replace(self, kind: str, rows: list[tuple[str, str]], meta: TableMeta) -> None:
        self._tables[kind] = dict(rows)
        self._metas[kind] = meta

    def _get(self, kind: str, ids: list[str]) -> list[tuple[str, str]]:
        table = self._tables.get(kind, {})
        return [(i, table[i]) for i in ids if i in table]


class RedisOnlineStore(OnlineFeatureStore):
    """One Redis hash per kind; materializing fills a new hash and renames it over the live one."""

    def __init__(self, url: str, prefix: str = "fitpulse:features", timeout_s: float = 2.0) -> None:
        import redis

        super().__init__()
        self.prefix = prefix
        self._redis = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)

    def _key(self, kind: str) -> str:
        return f"{self.prefix}:{kind}"

    def meta(self, kind: str) -> TableMeta | None:
        """Metadata of the ``kind`` table."""
        try:
            raw = self._redis.get(f"{self._key(kind)}:meta")
        except self._errors as exc:
            raise OnlineStoreUnavailableError(f"redis unreachable: {exc}") from exc
        return _meta_from_json(raw)  # type: ignore[arg-type]

    def _replace(self, kind: str, rows: list[tuple[str, str]], meta: TableMeta) -> None:
        staging = f"{self._key(kind)}:staging:{uuid.uuid4().hex}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            for start in range(0, len(rows), 1000):
                pipe.hset(staging, mapping=dict(rows[start : start + 1000]))
            pipe.execute()
            swap = self._redis.pipeline(transaction=True)
            if rows:
                swap.rename(staging, self._key(kind))
            else:
                swap.delete(self._key(kind))
            swap.set(f"{self._key(kind)}:meta", _meta_json(meta))
            swap.execute()
        except self._errors as exc:
            raise OnlineStoreUnavailableError(f"redis unreachable: {exc}") from exc

    def _delete(self, kind: str, row_id: str) -> int:
        try:
            return int(self._redis.hdel(self._key(kind), row_id))  # type: ignore[arg-type]
        except self._errors as exc:
            raise OnlineStoreUnavailableError(f"redis unreachable: {exc}") from exc

    def _get_rows(self, keys: Sequence[tuple[str, str]]) -> list[str | None]:
        pipe = self._redis.pipeline(transaction=False)
        for kind, id_ in keys:
            pipe.hget(self._key(kind), id_)
        try:
            values = pipe.execute()
        except self._errors as exc:
            raise OnlineStoreUnavailableError(f"redis unreachable: {exc}") from exc
        return [
            None if v is None else v.decode() if isinstance(v, bytes) else str(v) for v in values
        ]

    def _get(self, kind: str, ids: list[str]) -> list[tuple[str, str]]:
        if not ids:
            return []
        try:
            values = self._redis.hmget(self._key(kind), ids)
        except self._errors as exc:
            raise OnlineStoreUnavailableError(f"redis unreachable: {exc}") from exc
        return [
            (i, v.decode() if isinstance(v, bytes) else str(v))
            for i, v in zip(ids, values, strict=True)  # type: ignore[arg-type]
            if v is not None
        ]
