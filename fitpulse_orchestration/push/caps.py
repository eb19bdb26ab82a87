"""Per-user push frequency caps, enforced atomically.

A decision that wants to send *reserves* a send: in one atomic step the store counts the
user's sends in the rolling last 24 hours and 7 days and records the new one only if both
counts are under the caps. Two concurrent decisions for one user therefore can never both
pass a cap. SQLite (the embedded default) serializes reservations with ``BEGIN IMMEDIATE``;
Redis (production) runs each reservation as one Lua script on a per-user sorted set.
Sends that were delivered without a reservation (seeded from the logs) are recorded
idempotently by their decision id.
"""

from __future__ import annotations

import abc
import datetime as dt
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fitpulse_orchestration.serving.online_store import OnlineStoreUnavailableError

DAY_S: Final = 86400.0
KEEP_S: Final = 8 * DAY_S


@dataclass(frozen=True)
class CapPolicy:
    """At most ``per_day`` sends in any rolling 24 h and ``per_week`` in any rolling 7 days."""

    per_day: int = 1
    per_week: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.per_day <= self.per_week:
            raise ValueError("caps need 0 <= per_day <= per_week")


@dataclass(frozen=True)
class CapDecision:
    """The outcome of a reservation; counts are the sends before this one."""

    allowed: bool
    sent_last_day: int
    sent_last_week: int
    blocked_by: str | None


def _epoch(at: dt.datetime) -> float:
    if at.tzinfo is None:
        raise ValueError("cap times must be timezone-aware")
    return at.timestamp()


def _verdict(day: int, week: int, caps: CapPolicy) -> str | None:
    if day >= caps.per_day:
        return "daily_cap"
    if week >= caps.per_week:
        return "weekly_cap"
    return None


class PushCapStore(abc.ABC):
    """Send records per user: atomic reservations, idempotent seeding, erasure."""

    @abc.abstractmethod
    def try_reserve(
        self, user_id: str, send_id: str, at: dt.datetime, caps: CapPolicy
    ) -> CapDecision:
        """Atomically record ``send_id`` at ``at`` if the user is under both caps.

        Re-reserving a recorded ``send_id`` is idempotent (allowed, nothing added).
        """

    @abc.abstractmethod
    def counts(self, user_id: str, at: dt.datetime) -> tuple[int, int]:
        """Sends in ``(at - 24h, at]`` and ``(at - 7d, at]``."""

    @abc.abstractmethod
    def send_times(self, user_id: str, at: dt.datetime) -> list[float]:
        """Epoch seconds of the user's sends in ``(at - 7d, at]``, oldest first."""

    @abc.abstractmethod
    def record_sends(self, sends: Iterable[tuple[str, str, dt.datetime]]) -> int:
        """Record delivered ``(user_id, send_id, at)`` sends idempotently; return the new count."""

    @abc.abstractmethod
    def release(self, user_id: str, send_id: str) -> bool:
        """Drop a reservation that was not delivered; True if it existed."""

    @abc.abstractmethod
    def forget_user(self, user_id: str) -> int:
        """Erase the user's records; return how many were removed."""

    @abc.abstractmethod
    def prune(self, before: dt.datetime) -> int:
        """Drop records older than ``before``; return how many were removed."""


class SQLitePushCapStore(PushCapStore):
    """One SQLite file (WAL); reservations run in ``BEGIN IMMEDIATE`` transactions."""

    def __init__(self, path: str | Path, timeout_s: float = 2.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OnlineStoreUnavailableError(f"cannot create {self.path.parent}: {exc}") from exc
        conn = self._conn()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS push_sends (user_id TEXT NOT NULL, "
                "send_id TEXT NOT NULL, ts REAL NOT NULL, PRIMARY KEY (user_id, send_id))"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS push_sends_ts ON push_sends (user_id, ts)")
        except sqlite3.Error as exc:
            raise OnlineStoreUnavailableError(f"cannot use {self.path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
            except sqlite3.Error as exc:
                raise OnlineStoreUnavailableError(f"cannot open {self.path}: {exc}") from exc
            self._local.conn = conn
        return conn

    def _run(self, work: Any) -> Any:
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
            self._local.conn = None
            raise OnlineStoreUnavailableError(f"push cap store {self.path}: {exc}") from exc

    @staticmethod
    def _counts(
        conn: sqlite3.Connection, user_id: str, t: float, skip: str = ""
    ) -> tuple[int, int]:
        day, week = conn.execute(
            "SELECT COALESCE(SUM(ts > ?), 0), COUNT(*) FROM push_sends "
            "WHERE user_id = ? AND ts > ? AND ts <= ? AND send_id != ?",
            (t - DAY_S, user_id, t - 7 * DAY_S, t, skip),
        ).fetchone()
        return int(day), int(week)

    def try_reserve(
        self, user_id: str, send_id: str, at: dt.datetime, caps: CapPolicy
    ) -> CapDecision:
        """Atomically reserve (see ``PushCapStore.try_reserve``)."""
        t = _epoch(at)

        def work(conn: sqlite3.Connection) -> CapDecision:
            day, week = self._counts(conn, user_id, t, send_id)
            known = conn.execute(
                "SELECT 1 FROM push_sends WHERE user_id = ? AND send_id = ?", (user_id, send_id)
            ).fetchone()
            if known:
                return CapDecision(True, day, week, None)
            blocked = _verdict(day, week, caps)
            if blocked is None:
                conn.execute(
                    "INSERT INTO push_sends (user_id, send_id, ts) VALUES (?, ?, ?)",
                    (user_id, send_id, t),
                )
            return CapDecision(blocked is None, day, week, blocked)

        decision: CapDecision = self._run(work)
        return decision

    def counts(self, user_id: str, at: dt.datetime) -> tuple[int, int]:
        """Sends in the last 24 h and 7 days."""
        t = _epoch(at)
        result: tuple[int, int] = self._run(lambda conn: self._counts(conn, user_id, t))
        return result

    def send_times(self, user_id: str, at: dt.datetime) -> list[float]:
        """Send times in the last 7 days."""
        t = _epoch(at)
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT ts FROM push_sends WHERE user_id = ? AND ts > ? AND ts <= ? ORDER BY ts",
                (user_id, t - 7 * DAY_S, t),
            ).fetchall()
        )
        return [float(r[0]) for r in rows]

    def record_sends(self, sends: Iterable[tuple[str, str, dt.datetime]]) -> int:
        """Idempotent seeding."""
        rows = [(u, s, _epoch(at)) for u, s, at in sends]

        def work(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO push_sends (user_id, send_id, ts) VALUES (?, ?, ?)", rows
            )
            return conn.total_changes - before

        added: int = self._run(work)
        return added

    def release(self, user_id: str, send_id: str) -> bool:
        """Drop one reservation."""
        removed: int = self._run(
            lambda conn: (
                conn.execute(
                    "DELETE FROM push_sends WHERE user_id = ? AND send_id = ?", (user_id, send_id)
                ).rowcount
            )
        )
        return removed > 0

    def forget_user(self, user_id: str) -> int:
        """Erase a user's records."""
        removed: int = self._run(
            lambda conn: (
                conn.execute("DELETE FROM push_sends WHERE user_id = ?", (user_id,)).rowcount
            )
        )
        return removed

    def prune(self, before: dt.datetime) -> int:
        """Drop old records."""
        t = _epoch(before)
        removed: int = self._run(
            lambda conn: conn.execute("DELETE FROM push_sends WHERE ts < ?", (t,)).rowcount
        )
        return removed


_RESERVE_LUA: Final = """
local key = KEYS[1]
local t = tonumber(ARGV[1])
local send_id = ARGV[2]
local per_day = tonumber(ARGV[3])
local per_week = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (t - 8 * 86400))
local known = redis.call('ZSCORE', key, send_id)
local day = redis.call('ZCOUNT', key, '(' .. (t - 86400), t)
local week = redis.call('ZCOUNT', key, '(' .. (t - 7 * 86400), t)
if known then
  local s = tonumber(known)
  if s > t - 86400 and s <= t then day = day - 1 end
  if s > t - 7 * 86400 and s <= t then week = week - 1 end
  return {1, day, week, ''}
end
local blocked = ''
if day >= per_day then blocked = 'daily_cap' elseif week >= per_week then blocked = 'weekly_cap' end
if blocked == '' then
  redis.call('ZADD', key, t, send_id)
  redis.call('PEXPIRE', key, 8 * 86400 * 1000)
  return {1, day, week, ''}
end
return {0, day, week, blocked}
"""


class RedisPushCapStore(PushCapStore):
    """One sorted set per user (member: send id, score: epoch seconds); Lua reservations."""

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

    def _call(self, work: Any) -> Any:
        try:
            return work()
        except self._errors as exc:
            raise OnlineStoreUnavailableError(f"redis unreachable: {exc}") from exc

    def try_reserve(
        self, user_id: str, send_id: str, at: dt.datetime, caps: CapPolicy
    ) -> CapDecision:
        """Atomically reserve (one Lua script)."""
        t = _epoch(at)
        ok, day, week, blocked = self._call(
            lambda: self._reserve(
                keys=[self._key(user_id)], args=[t, send_id, caps.per_day, caps.per_week]
            )
        )
        name = blocked.decode() if isinstance(blocked, bytes) else str(blocked)
        return CapDecision(bool(ok), int(day), int(week), name or None)

    def counts(self, user_id: str, at: dt.datetime) -> tuple[int, int]:
        """Sends in the last 24 h and 7 days."""
        t = _epoch(at)
        key = self._key(user_id)

        def work() -> tuple[int, int]:
            pipe = self._redis.pipeline(transaction=False)
            pipe.zcount(key, f"({t - DAY_S}", t)
            pipe.zcount(key, f"({t - 7 * DAY_S}", t)
            day, week = pipe.execute()
            return int(day), int(week)

        result: tuple[int, int] = self._call(work)
        return result

    def send_times(self, user_id: str, at: dt.datetime) -> list[float]:
        """Send times in the last 7 days."""
        t = _epoch(at)
        pairs = self._call(
            lambda: self._redis.zrangebyscore(
                self._key(user_id), f"({t - 7 * DAY_S}", t, withscores=True
            )
        )
        return [float(score) for _, score in pairs]

    def record_sends(self, sends: Iterable[tuple[str, str, dt.datetime]]) -> int:
        """Idempotent seeding (ZADD NX)."""
        rows = list(sends)

        def work() -> int:
            pipe = self._redis.pipeline(transaction=False)
            for user_id, send_id, at in rows:
                pipe.zadd(self._key(user_id), {send_id: _epoch(at)}, nx=True)
                pipe.pexpire(self._key(user_id), int(KEEP_S * 1000))
            results = pipe.execute()
            return int(sum(results[::2]))

        added: int = self._call(work)
        return added

    def release(self, user_id: str, send_id: str) -> bool:
        """Drop one reservation."""
        removed = self._call(lambda: self._redis.zrem(self._key(user_id), send_id))
        return bool(removed)

    def forget_user(self, user_id: str) -> int:
        """Erase a user's records."""
        key = self._key(user_id)

        def work() -> int:
            pipe = self._redis.pipeline(transaction=True)
            pipe.zcard(key)
            pipe.delete(key)
            count, _ = pipe.execute()
            return int(count)

        removed: int = self._call(work)
        return removed

    def prune(self, before: dt.datetime) -> int:
        """Drop old records of every user (SCAN over the prefix)."""
        t = _epoch(before)

        def work() -> int:
            removed = 0
            for key in self._redis.scan_iter(match=f"{self.prefix}:*", count=500):
                removed += int(self._redis.zremrangebyscore(key, "-inf", f"({t}"))  # type: ignore[arg-type]
            return removed

        pruned: int = self._call(work)
        return pruned
