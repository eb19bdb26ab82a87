"""Push cap counters: rolling windows, idempotence and atomic reservations (SQLite and Redis)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fitpulse_orchestration.push.caps import (
    CapPolicy,
    PushCapStore,
    RedisPushCapStore,
    SQLitePushCapStore,
)
from fitpulse_orchestration.serving.online_store import OnlineStoreUnavailableError

REDIS_URL = "redis://127.0.0.1:6379/13"
T0 = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except (redis.RedisError, OSError):
        pytest.skip("Redis not reachable at 127.0.0.1:6379")


@pytest.fixture(params=["sqlite", "redis"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], PushCapStore]]:
    if request.param == "sqlite":
        yield lambda: SQLitePushCapStore(tmp_path / "caps.sqlite")
        return
    _redis_or_skip()
    prefix = f"test:caps:{uuid.uuid4().hex}"
    yield lambda: RedisPushCapStore(REDIS_URL, prefix=prefix)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


def test_daily_cap_rolls_over_after_24_hours(make_store: Callable[[], PushCapStore]) -> None:
    store, caps = make_store(), CapPolicy(per_day=1, per_week=3)
    assert store.try_reserve("u", "s1", T0, caps).allowed
    second = store.try_reserve("u", "s2", T0 + dt.timedelta(hours=23), caps)
    assert (second.allowed, second.blocked_by, second.sent_last_day) == (False, "daily_cap", 1)
    assert store.try_reserve("u", "s3", T0 + dt.timedelta(hours=24, seconds=1), caps).allowed
    assert store.counts("u", T0 + dt.timedelta(hours=25)) == (1, 2)


def test_weekly_cap_blocks_the_fourth_send(make_store: Callable[[], PushCapStore]) -> None:
    store, caps = make_store(), CapPolicy(per_day=1, per_week=3)
    for day in range(3):
        assert store.try_reserve("u", f"s{day}", T0 + dt.timedelta(days=day), caps).allowed
    fourth = store.try_reserve("u", "s3", T0 + dt.timedelta(days=3), caps)
    assert (fourth.allowed, fourth.blocked_by, fourth.sent_last_week) == (False, "weekly_cap", 3)
    assert store.try_reserve("u", "s4", T0 + dt.timedelta(days=7, seconds=1), caps).allowed


def test_reservations_are_idempotent_and_releasable(make_store: Callable[[], PushCapStore]) -> None:
    store, caps = make_store(), CapPolicy(per_day=1, per_week=3)
    assert store.try_reserve("u", "s1", T0, caps).allowed
    again = store.try_reserve("u", "s1", T0, caps)
    assert again.allowed
    assert store.counts("u", T0) == (1, 1)
    assert store.release("u", "s1")
    assert not store.release("u", "s1")
    assert store.try_reserve("u", "s2", T0, caps).allowed


def test_seeding_erasure_and_pruning(make_store: Callable[[], PushCapStore]) -> None:
    store = make_store()
    sends = [("u", "a", T0 - dt.timedelta(days=9)), ("u", "b", T0), ("v", "c", T0)]
    assert store.record_sends(sends) == 3
    assert store.record_sends(sends) == 0
    assert store.send_times("u", T0) == [T0.timestamp()]
    assert store.prune(T0 - dt.timedelta(days=8)) == 1
    assert store.forget_user("u") == 1
    assert store.counts("u", T0) == (0, 0)
    assert store.counts("v", T0) == (1, 1)


@pytest.mark.parametrize(("per_day", "expected"), [(1, 1), (3, 3)])
def test_concurrent_reservations_never_exceed_the_cap(
    make_store: Callable[[], PushCapStore], per_day: int, expected: int
) -> None:
    caps = CapPolicy(per_day=per_day, per_week=3)
    barrier = threading.Barrier(16)
    allowed: list[bool] = []
    lock = threading.Lock()

    def reserve(i: int) -> None:
        store = make_store()  # one store object per thread, as separate processes would have
        barrier.wait()
        decision = store.try_reserve("u", f"s{i}", T0, caps)
        with lock:
            allowed.append(decision.allowed)

    threads = [threading.Thread(target=reserve, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == expected
    assert make_store().counts("u", T0)[0] == expected


def test_bad_inputs_and_unreachable_backends(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="per_day"):
        CapPolicy(per_day=4, per_week=3)
    store = SQLitePushCapStore(tmp_path / "caps.sqlite")
    with pytest.raises(ValueError, match="timezone-aware"):
        store.try_reserve("u", "s", dt.datetime(2026, 11, 2, 12), CapPolicy())
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OnlineStoreUnavailableError):
        SQLitePushCapStore(blocker / "caps.sqlite")
    dead = RedisPushCapStore("redis://127.0.0.1:1/0", timeout_s=0.2)
    with pytest.raises(OnlineStoreUnavailableError):
        dead.try_reserve("u", "s", T0, CapPolicy())
