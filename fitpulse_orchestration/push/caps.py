"""Per-user push frequency caps, enforced atomically.

A decision that wants to send *reserves* the send: in one atomic step the store counts the
user's recorded sends around the decision time and records the new one (keyed by its decision
id) only if the user is under both caps. Two concurrent decisions for one user can therefore
never both pass a cap: whichever runs second sees the first one's record. Counting first and
recording later in a separate step would let both through.

Windows are rolling and half-open: the day window of a time ``at`` is ``(at - 24 h, at]``, the
week window ``(at - 7 d, at]``; times are UTC epoch seconds (floats). The counts a decision
reports are the sends in those windows before it. The *check*, however, also counts sends
recorded at or after ``at`` (within one window length): decision times are taken when a
request starts, so a slower request can reserve after a faster one that started later, and
a window ending at its own ``at`` would not see the other's record. Counting both sides keeps
every rolling window within the caps whatever order reservations arrive in; with reservations
in time order (the normal case) it changes nothing.

Two implementations, as for the online feature store (``storage.online_store``):

* ``SQLitePushCapStore`` (the embedded default): one WAL-mode file; a reservation is one
  ``BEGIN IMMEDIATE`` transaction, which takes the database's write lock before reading, so
  reservations from threads and processes serialize. Each thread keeps its own connection.
* ``RedisPushCapStore`` (production): one sorted set per user (member: send id, score: epoch
  seconds); a reservation is one Lua script, which Redis runs without interleaving. The script
  also trims the user's records older than 8 days and keeps the key alive for 8 days.

Decisions made under a client's idempotency key are remembered per (user, key) for
``KEEP_S``: the first answer stored wins, and a replay (or a concurrent twin) gets it back
instead of a new decision, so a key can never buy a second send.

Sends that were delivered without a reservation (seeded from logged ``push_sent`` events) are
recorded idempotently by their send id, so a reserved send that comes back through the logs is
not counted twice. A reservation whose push was not delivered is released. An unreachable or
unusable store raises ``OnlineStoreUnavailableError``; the caller fails safe (no push).
"""

from __future__ import annotations

import abc
import datetime as dt
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from fitpulse_orchestration.storage.online_store import OnlineStoreUnavailableError, scrub_wal

DAY_S: Final = 86400.0
WEEK_S: Final = 7 * DAY_S
KEEP_S: Final = 8 * DAY_S  # records older than this are never needed for a decision

_T = TypeVar("_T")


@dataclass(frozen=True)
class CapPolicy:
    """At most ``per_day`` sends in any rolling 24 h and ``per_week`` in any rolling 7 days.

    Raises:
        ValueError: unless ``0 <= per_day <= per_week``.
    """

    per_day: int = 1
    per_week: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.per_day <= self.per_week:
            raise ValueError(
                f"caps need 0 <= per_day <= per_week, got per_day={self.per_day}, "
                f"per_week={self.per_week}"
            )


@dataclass(frozen=True)
class CapDecision:
    """The outcome of a reservation.

    Attributes:
        allowed: whether the send is recorded (or was already recorded).
        sent_last_day: the user's other sends in ``(at - 24 h, at]``.
        sent_last_week: the user's other sends in ``(at - 7 d, at]``.
        blocked_by: ``"daily_cap"`` (checked first), ``"weekly_cap"``, or None when allowed.
    """

    allowed: bool
    sent_last_day: int
    sent_last_week: int
    blocked_by: str | None


def _epoch(at: dt.datetime) -> float:
    """UTC epoch seconds of a timezone-aware time.

    Raises:
        ValueError: for a naive time.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"cap times must be timezone-aware, got {at!r}")
    return at.timestamp()


def _verdict(day_around: int, week_around: int, caps: CapPolicy) -> str | None:
    """The cap a new send would break, from the counts of other sends within one window."""
    if day_around >= caps.per_day:
        return "daily_cap"
    if week_around >= caps.per_week:
        return "weekly_cap"
    return None


class PushCapStore(abc.ABC):
    """Send records per user: atomic reservations, idempotent seeding, erasure.

    Raises (every method):
        OnlineStoreUnavailableError: when the store cannot be reached or used.
        ValueError: for a naive time.
    """

    @abc.abstractmethod
    def try_reserve(
        self, user_id: str, send_id: str, at: dt.datetime, caps: CapPolicy
    ) -> CapDecision:
        """Atomically count the user's sends and record ``send_id`` at ``at`` if under both caps.

        Re-reserving an already recorded ``send_id`` is idempotent: allowed, nothing is added,
        and the counts exclude that send itself.

        Args:
            user_id: the (pseudonymous) user.
            send_id: the decision's id; the record's key within the user.
            at: the decision time (timezone-aware).
            caps: the caps to enforce.

        Returns:
            The decision, with the counts of the user's other sends before it.
        """

    @abc.abstractmethod
    def counts(self, user_id: str, at: dt.datetime) -> tuple[int, int]:
        """The user's sends in ``(at - 24 h, at]`` and in ``(at - 7 d, at]``."""

    @abc.abstractmethod
    def send_times(self, user_id: str, at: dt.datetime, exclude: str | None = None) -> list[float]:
        """Epoch seconds of the user's sends in ``(at - 7 d, at]``, oldest first.

        ``exclude``: a send id left out, a decision's own: a concurrent twin of the same
        idempotency key may already have reserved it, and it must not count against itself.
        """

    @abc.abstractmethod
    def record_sends(self, sends: Iterable[tuple[str, str, dt.datetime]]) -> int:
        """Idempotently record delivered ``(user_id, send_id, at)`` sends.

        Returns:
            How many of them were new.
        """

    @abc.abstractmethod
    def release(self, user_id: str, send_id: str) -> bool:
        """Drop a reservation whose push was not delivered; True if it existed."""

    @abc.abstractmethod
    def remember_decision(self, user_id: str, key: str, answer: str, at: dt.datetime) -> str:
        """Store ``answer`` for (``user_id``, ``key``) unless one is stored; return the stored."""

    @abc.abstractmethod
    def recall_decision(self, user_id: str, key: str) -> str | None:
        """The answer stored for (``user_id``, ``key``), None when there is none."""

    @abc.abstractmethod
    def forget_user(self, user_id: str) -> int:
        """Erase the user's records and remembered decisions; return how many were removed."""

    @abc.abstractmethod
    def prune(self, before: dt.datetime) -> int:
        """Drop every user's records older than ``before``; return how many were removed."""


class SQLitePushCapStore(PushCapStore):
    """One SQLite file (WAL); reservations are ``BEGIN IMMEDIATE`` transactions.

    Each thread (and each process) opens its own connection in autocommit mode
    (``isolation_level=None``), so transactions are exactly the ones written here.

    Args:
        path: the database file; its folder is created if missing.
        timeout_s: how long to wait for another writer's lock before giving up.

    Raises:
        OnlineStoreUnavailableError: when the file cannot be created or opened.
    """

    def __init__(self, path: str | Path, timeout_s: float = 2.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OnlineStoreUnavailableError(f"cannot create {self.path.parent}: {exc}") from exc

        def schema(conn: sqlite3.Connection) -> None:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS push_sends (user_id TEXT NOT NULL, "
                "send_id TEXT NOT NULL, ts REAL NOT NULL, PRIMARY KEY (user_id, send_id))"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS push_sends_ts ON push_sends (user_id, ts)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS push_decisions (user_id TEXT NOT NULL, "
                "key TEXT NOT NULL, answer TEXT NOT NULL, ts REAL NOT NULL, "
                "PRIMARY KEY (user_id, key))"
            )

        # journal_mode is persistent in the file and cannot change inside a transaction.
        self._read(lambda conn: conn.execute("PRAGMA journal_mode=WAL").fetchall())
        self._write(schema)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (a forked child opens its own)."""
        held: tuple[int, sqlite3.Connection] | None = getattr(self._local, "conn", None)
        if held is not None and held[0] == os.getpid():
            return held[1]
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            raise OnlineStoreUnavailableError(f"cannot open {self.path}: {exc}") from exc
        self._local.conn = (os.getpid(), conn)
        return conn

    def _drop_conn(self) -> None:
        held: tuple[int, sqlite3.Connection] | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if held is not None and held[0] == os.getpid():
            try:
                held[1].close()
            except sqlite3.Error:
                pass

    def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction (the write lock first)."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            self._drop_conn()  # a new connection starts clean (no half-open transaction)
            raise OnlineStoreUnavailableError(f"push cap store {self.path}: {exc}") from exc

    def _read(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in autocommit mode (each statement reads one consistent snapshot)."""
        conn = self._conn()
        try:
            return work(conn)
        except sqlite3.Error as exc:
            self._drop_conn()
            raise OnlineStoreUnavailableError(f"push cap store {self.path}: {exc}") from exc

    @staticmethod
    def _count(conn: sqlite3.Connection, user_id: str, t: float, skip: str | None) -> list[int]:
        """Other sends in the day and week windows ending at ``t``, then within one window."""
        row = conn.execute(
            "SELECT COALESCE(SUM(ts > :day_lo AND ts <= :t), 0), "
            "COALESCE(SUM(ts <= :t), 0), "
            "COALESCE(SUM(ts > :day_lo AND ts < :day_hi), 0), "
            "COUNT(*) "
            "FROM push_sends WHERE user_id = :user AND ts > :week_lo AND ts < :week_hi "
            "AND (:skip IS NULL OR send_id != :skip)",
            {
                "user": user_id,
                "t": t,
                "day_lo": t - DAY_S,
                "day_hi": t + DAY_S,
                "week_lo": t - WEEK_S,
                "week_hi": t + WEEK_S,
                "skip": skip,
            },
        ).fetchone()
        return [int(v) for v in row]

    def try_reserve(
        self, user_id: str, send_id: str, at: dt.datetime, caps: CapPolicy
    ) -> CapDecision:
        """Atomically reserve a send (see ``PushCapStore.try_reserve``)."""
        t = _epoch(at)

        def work(conn: sqlite3.Connection) -> CapDecision:
            known = conn.execute(
                "SELECT 1 FROM push_sends WHERE user_id = ? AND send_id = ?", (user_id, send_id)
            ).fetchone()
            day, week, day_around, week_around = self._count(conn, user_id, t, send_id)
            if known is not None:
                return CapDecision(True, day, week, None)
            blocked = _verdict(day_around, week_around, caps)
            if blocked is None:
                conn.execute(
                    "INSERT INTO push_sends (user_id, send_id, ts) VALUES (?, ?, ?)",
                    (user_id, send_id, t),
                )
            return CapDecision(blocked is None, day, week, blocked)

        return self._write(work)

    def counts(self, user_id: str, at: dt.datetime) -> tuple[int, int]:
        """The user's sends in the last 24 h and 7 days before ``at`` (inclusive)."""
        t = _epoch(at)
        day, week, _, _ = self._read(lambda conn: self._count(conn, user_id, t, None))
        return day, week

    def send_times(self, user_id: str, at: dt.datetime, exclude: str | None = None) -> list[float]:
        """Epoch seconds of the user's sends in the last 7 days but ``exclude``, oldest first."""
        t = _epoch(at)
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT ts FROM push_sends WHERE user_id = ? AND ts > ? AND ts <= ? "
                "AND send_id IS NOT ? ORDER BY ts",
                (user_id, t - WEEK_S, t, exclude),
            ).fetchall()
        )
        return [float(r[0]) for r in rows]

    def record_sends(self, sends: Iterable[tuple[str, str, dt.datetime]]) -> int:
        """Idempotently record delivered sends (one transaction); return how many were new."""
        rows = [(str(u), str(s), _epoch(at)) for u, s, at in sends]

        def work(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO push_sends (user_id, send_id, ts) VALUES (?, ?, ?)", rows
            )
            return conn.total_changes - before

        return self._write(work)

    def release(self, user_id: str, send_id: str) -> bool:
        """Drop one reservation; True if it existed."""
        removed = self._write(
            lambda conn: (
                conn.execute(
                    "DELETE FROM push_sends WHERE user_id = ? AND send_id = ?", (user_id, send_id)
                ).rowcount
            )
        )
        return removed > 0

    def remember_decision(self, user_id: str, key: str, answer: str, at: dt.datetime) -> str:
        """Store the first answer for (user, key) (one transaction); return the stored one."""
        t = _epoch(at)

        def work(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT OR IGNORE INTO push_decisions (user_id, key, answer, ts) "
                "VALUES (?, ?, ?, ?)",
                (user_id, key, answer, t),
            )
            row = conn.execute(
                "SELECT answer FROM push_decisions WHERE user_id = ? AND key = ?", (user_id, key)
            ).fetchone()
            return str(row[0])

        return self._write(work)

    def recall_decision(self, user_id: str, key: str) -> str | None:
        """The stored answer for (user, key), if any."""
        row = self._read(
            lambda conn: conn.execute(
                "SELECT answer FROM push_decisions WHERE user_id = ? AND key = ?", (user_id, key)
            ).fetchone()
        )
        return None if row is None else str(row[0])

    def forget_user(self, user_id: str) -> int:
        """Erase the user's records and decisions; return how many were removed.

        Freed cells are zeroed (``secure_delete``) and the WAL is checkpointed and truncated,
        so no byte of the user's rows stays in the file or its WAL.
        """

        def work(conn: sqlite3.Connection) -> int:
            sends = conn.execute("DELETE FROM push_sends WHERE user_id = ?", (user_id,)).rowcount
            answers = conn.execute(
                "DELETE FROM push_decisions WHERE user_id = ?", (user_id,)
            ).rowcount
            return int(sends) + int(answers)

        conn = self._conn()
        try:
            conn.execute("PRAGMA secure_delete=ON")
            removed = self._write(work)
            scrub_wal(conn, self.path)
        except sqlite3.Error as exc:
            self._drop_conn()
            raise OnlineStoreUnavailableError(f"push cap store {self.path}: {exc}") from exc
        finally:
            try:
                conn.execute("PRAGMA secure_delete=OFF")
            except sqlite3.Error:
                pass
        return removed

    def prune(self, before: dt.datetime) -> int:
        """Drop records older than ``before``; return how many were removed."""
        t = _epoch(before)

        def work(conn: sqlite3.Connection) -> int:
            sends = conn.execute("DELETE FROM push_sends WHERE ts < ?", (t,)).rowcount
            conn.execute("DELETE FROM push_decisions WHERE ts < ?", (t,))
            return int(sends)

        return self._write(work)


# KEYS[1]: the user's sorted set. ARGV: at, send_id, per_day, per_week (numbers as text).
# Bounds go to Redis as '%.17g' text: Lua's own number-to-text ('%.14g') would round epoch
# seconds to 0.1 ms and disagree with the stored scores at the window edges.
_RESERVE_LUA: Final = """
local key = KEYS[1]
local t = tonumber(ARGV[1])
local send_id = ARGV[2]
local per_day = tonumber(ARGV[3])
local per_week = tonumber(ARGV[4])
local day_s = 86400
local function num(x) return string.format('%.17g', x) end
local function open(x) return '(' .. num(x) end
redis.call('ZREMRANGEBYSCORE', key, '-inf', open(t - 8 * day_s))
local known = redis.call('ZSCORE', key, send_id)
local day = redis.call('ZCOUNT', key, open(t - day_s), num(t))
local week = redis.call('ZCOUNT', key, open(t - 7 * day_s), num(t))
if known then
  local s = tonumber(known)
  if s > t - day_s and s <= t then day = day - 1 end
  if s > t - 7 * day_s and s <= t then week = week - 1 end
  return {1, day, week, ''}
end
local day_around = redis.call('ZCOUNT', key, open(t - day_s), open(t + day_s))
local week_around = redis.call('ZCOUNT', key, open(t - 7 * day_s), open(t + 7 * day_s))
local blocked = ''
if day_around >= per_day then
  blocked = 'daily_cap'
elseif week_around >= per_week then
  blocked = 'weekly_cap'
end
if blocked ~= '' then
  return {0, day, week, blocked}
end
redis.call('ZADD', key, num(t), send_id)
redis.call('PEXPIRE', key, 8 * day_s * 1000)
return {1, day, week, ''}
"""


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisPushCapStore(PushCapStore):
    """One sorted set per user (member: send id, score: epoch seconds); Lua reservations.

    Args:
        url: a ``redis://`` URL (the database index selects the keyspace).
        prefix: the key prefix; a user's key is ``{prefix}:{user_id}``.
        timeout_s: connect and socket timeout.
    """

    def __init__(
        self, url: str, prefix: str = "fitpulse:push:sends", timeout_s: float = 2.0
    ) -> None:
        import redis

        self.prefix = prefix
        self._redis = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._reserve = self._redis.register_script(_RESERVE_LUA)

    def _key(self, user_id: str) -> str:
        return f"{self.prefix}:{user_id}"

    def _decisions_key(self, user_id: str) -> str:
        # Outside the sends' ``{prefix}:*`` pattern, so pruning never scans it.
        return f"{self.prefix}-decisions:{user_id}"

    def _call(self, work: Callable[[], _T]) -> _T:
        try:
            return work()
        except self._errors as exc:
            raise OnlineStoreUnavailableError(f"redis unreachable: {exc}") from exc

    def try_reserve(
        self, user_id: str, send_id: str, at: dt.datetime, caps: CapPolicy
    ) -> CapDecision:
        """Atomically reserve a send (one Lua script; see ``PushCapStore.try_reserve``)."""
        t = _epoch(at)
        reply: Any = self._call(
            lambda: self._reserve(
                keys=[self._key(user_id)],
                args=[repr(t), send_id, caps.per_day, caps.per_week],
            )
        )
        ok, day, week, blocked = reply
        name = blocked.decode() if isinstance(blocked, bytes) else str(blocked)
        return CapDecision(bool(ok), int(day), int(week), name or None)

    def counts(self, user_id: str, at: dt.datetime) -> tuple[int, int]:
        """The user's sends in the last 24 h and 7 days before ``at`` (inclusive)."""
        t = _epoch(at)
        key = self._key(user_id)

        def work() -> tuple[int, int]:
            pipe = self._redis.pipeline(transaction=True)  # one snapshot for both counts
            pipe.zcount(key, f"({t - DAY_S!r}", repr(t))
            pipe.zcount(key, f"({t - WEEK_S!r}", repr(t))
            day, week = pipe.execute()
            return int(day), int(week)

        return self._call(work)

    def send_times(self, user_id: str, at: dt.datetime, exclude: str | None = None) -> list[float]:
        """Epoch seconds of the user's sends in the last 7 days but ``exclude``, oldest first."""
        t = _epoch(at)
        pairs: Any = self._call(
            lambda: self._redis.zrangebyscore(
                self._key(user_id), f"({t - WEEK_S!r}", repr(t), withscores=True
            )
        )
        skip = None if exclude is None else exclude.encode()
        return [float(score) for member, score in pairs if member != skip]

    def record_sends(self, sends: Iterable[tuple[str, str, dt.datetime]]) -> int:
        """Idempotently record delivered sends (``ZADD NX``); return how many were new."""
        rows = [(self._key(str(u)), str(s), _epoch(at)) for u, s, at in sends]
        if not rows:
            return 0

        def work() -> int:
            added = 0
            for start in range(0, len(rows), 1000):
                pipe = self._redis.pipeline(transaction=False)
                for key, send_id, t in rows[start : start + 1000]:
                    pipe.zadd(key, {send_id: t}, nx=True)
                    pipe.pexpire(key, int(KEEP_S * 1000))
                added += sum(int(n) for n in pipe.execute()[::2])
            return added

        return self._call(work)

    def release(self, user_id: str, send_id: str) -> bool:
        """Drop one reservation; True if it existed."""
        removed: Any = self._call(lambda: self._redis.zrem(self._key(user_id), send_id))
        return bool(removed)

    def remember_decision(self, user_id: str, key: str, answer: str, at: dt.datetime) -> str:
        """``HSETNX`` in the user's decision hash (kept ``KEEP_S``); return the stored answer."""
        _epoch(at)
        name = self._decisions_key(user_id)

        def work() -> str:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hsetnx(name, key, answer)
            pipe.hget(name, key)
            pipe.pexpire(name, int(KEEP_S * 1000))
            _, stored, _ = pipe.execute()
            return stored.decode() if isinstance(stored, bytes) else str(stored)

        return self._call(work)

    def recall_decision(self, user_id: str, key: str) -> str | None:
        """The stored answer for (user, key), if any."""
        stored: Any = self._call(lambda: self._redis.hget(self._decisions_key(user_id), key))
        if stored is None:
            return None
        return stored.decode() if isinstance(stored, bytes) else str(stored)

    def forget_user(self, user_id: str) -> int:
        """Erase the user's records and decisions (deletes both keys); return how many."""
        key = self._key(user_id)
        decisions = self._decisions_key(user_id)

        def work() -> int:
            pipe = self._redis.pipeline(transaction=True)
            pipe.zcard(key)
            pipe.hlen(decisions)
            pipe.delete(key, decisions)
            sends, answers, _ = pipe.execute()
            return int(sends) + int(answers)

        return self._call(work)

    def prune(self, before: dt.datetime) -> int:
        """Drop every user's records older than ``before`` (a ``SCAN`` over the prefix)."""
        bound = f"({_epoch(before)!r}"
        pattern = f"{_glob_escape(self.prefix)}:*"

        def work() -> int:
            removed = 0
            keys: list[Any] = []
            for key in self._redis.scan_iter(match=pattern, count=500, _type="zset"):
                keys.append(key)
                if len(keys) >= 500:
                    removed += self._prune_keys(keys, bound)
                    keys = []
            return removed + self._prune_keys(keys, bound)

        return self._call(work)

    def _prune_keys(self, keys: list[Any], bound: str) -> int:
        if not keys:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.zremrangebyscore(key, "-inf", bound)
        return sum(int(n) for n in pipe.execute())
