"""Push cap counters: rolling windows, idempotence and atomic reservations (SQLite and Redis)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fitpulse_orchestration.push.caps import (
    CapDecision,
    CapPolicy,
    PushCapStore,
    RedisPushCapStore,
    SQLitePushCapStore,
)
from fitpulse_orchestration.storage.online_store import OnlineStoreUnavailableError

REDIS_URL = "redis://127.0.0.1:6379/13"
T0 = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
CAPS = CapPolicy(per_day=1, per_week=3)
N_THREADS = 16


@pytest.fixture
def redis_prefix(require_redis: None) -> Iterator[str]:
    """A key prefix of this test's own in Redis db 13, deleted afterwards."""
    prefix = f"fitpulse-test:push-caps:{uuid.uuid4().hex}"
    yield prefix
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for pattern in (f"{prefix}:*", f"{prefix}-decisions:*"):
        for key in client.scan_iter(match=pattern):
            client.delete(key)


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], PushCapStore]:
    """A factory of store objects over one backing store (a file, or a Redis key prefix)."""
    if request.param == "sqlite":
        return lambda: SQLitePushCapStore(tmp_path / "caps.sqlite")
    prefix: str = request.getfixturevalue("redis_prefix")
    return lambda: RedisPushCapStore(REDIS_URL, prefix=prefix)


@pytest.fixture
def store(make_store: Callable[[], PushCapStore]) -> PushCapStore:
    return make_store()


def _decision(d: CapDecision) -> tuple[bool, int, int, str | None]:
    return d.allowed, d.sent_last_day, d.sent_last_week, d.blocked_by


# --- policy ---------------------------------------------------------------------------------


def test_cap_policy_defaults_and_valid_edges() -> None:
    assert (CapPolicy().per_day, CapPolicy().per_week) == (1, 3)
    assert CapPolicy(per_day=0, per_week=0).per_week == 0
    assert CapPolicy(per_day=3, per_week=3).per_day == 3


@pytest.mark.parametrize(("per_day", "per_week"), [(-1, 3), (4, 3), (2, 1), (0, -1)])
def test_cap_policy_rejects_inconsistent_caps(per_day: int, per_week: int) -> None:
    with pytest.raises(ValueError, match="per_day"):
        CapPolicy(per_day=per_day, per_week=per_week)


# --- rolling windows ------------------------------------------------------------------------


def test_daily_cap_blocks_within_24_hours_and_allows_after(store: PushCapStore) -> None:
    assert _decision(store.try_reserve("u", "s1", T0, CAPS)) == (True, 0, 0, None)
    late = T0 + dt.timedelta(hours=23, minutes=59, seconds=59)
    assert _decision(store.try_reserve("u", "s2", late, CAPS)) == (False, 1, 1, "daily_cap")
    # The window is half-open, (at - 24 h, at]: a send exactly 24 h earlier has left it.
    assert _decision(store.try_reserve("u", "s3", T0 + DAY, CAPS)) == (True, 0, 1, None)
    assert store.counts("u", T0 + DAY) == (1, 2)
    assert store.counts("u", late) == (1, 1)
    assert store.counts("other", T0) == (0, 0)


def test_weekly_cap_blocks_the_fourth_send_within_7_days(store: PushCapStore) -> None:
    for day in range(3):
        assert store.try_reserve("u", f"s{day}", T0 + day * DAY, CAPS).allowed
    fourth = store.try_reserve("u", "s3", T0 + 3 * DAY, CAPS)
    assert _decision(fourth) == (False, 0, 3, "weekly_cap")
    blocked = store.try_reserve("u", "s4", T0 + 7 * DAY - dt.timedelta(seconds=1), CAPS)
    assert _decision(blocked) == (False, 0, 3, "weekly_cap")
    # At T0 + 7 d the first send (at T0) has left the week window.
    assert _decision(store.try_reserve("u", "s5", T0 + 7 * DAY, CAPS)) == (True, 0, 2, None)
    assert store.counts("u", T0 + 7 * DAY) == (1, 3)


def test_daily_cap_is_checked_before_the_weekly_cap(store: PushCapStore) -> None:
    caps = CapPolicy(per_day=2, per_week=2)
    assert store.try_reserve("u", "a", T0, caps).allowed
    assert store.try_reserve("u", "b", T0 + dt.timedelta(hours=1), caps).allowed
    assert store.try_reserve("u", "c", T0 + dt.timedelta(hours=2), caps).blocked_by == "daily_cap"
    assert store.try_reserve("u", "d", T0 + DAY, caps).blocked_by == "weekly_cap"


def test_zero_caps_block_everything(store: PushCapStore) -> None:
    blocked = store.try_reserve("u", "s", T0, CapPolicy(per_day=0, per_week=0))
    assert _decision(blocked) == (False, 0, 0, "daily_cap")
    assert store.counts("u", T0) == (0, 0)


def test_window_edges_are_exact_at_sub_millisecond_times(store: PushCapStore) -> None:
    # 61 microseconds: Lua's default number formatting ('%.14g') would round it to 0.1 ms.
    sent = T0 + dt.timedelta(microseconds=61)
    assert store.record_sends([("u", "s0", sent)]) == 1
    assert store.send_times("u", sent) == [sent.timestamp()]
    just_inside = sent + DAY - dt.timedelta(microseconds=1)
    assert store.counts("u", just_inside) == (1, 1)
    assert store.try_reserve("u", "s1", just_inside, CAPS).blocked_by == "daily_cap"
    assert store.counts("u", sent + DAY) == (0, 1)
    assert store.try_reserve("u", "s2", sent + DAY, CAPS).allowed


def test_a_reservation_for_an_earlier_time_still_sees_a_later_send(store: PushCapStore) -> None:
    """Decision times are taken at request start; a slower request may reserve second."""
    assert store.try_reserve("u", "fast", T0 + dt.timedelta(milliseconds=5), CAPS).allowed
    slow = store.try_reserve("u", "slow", T0, CAPS)
    # The later send is not in (at - 24 h, at], but it would share a 24 h window with this one.
    assert _decision(slow) == (False, 0, 0, "daily_cap")
    assert store.counts("u", T0 + DAY) == (1, 1)
    assert store.try_reserve("u", "next", T0 + dt.timedelta(milliseconds=5) + DAY, CAPS).allowed


# --- idempotence, seeding, release, erasure, pruning ----------------------------------------


def test_re_reserving_a_recorded_send_is_idempotent(store: PushCapStore) -> None:
    assert store.try_reserve("u", "s1", T0, CAPS).allowed
    assert _decision(store.try_reserve("u", "s1", T0, CAPS)) == (True, 0, 0, None)
    assert store.counts("u", T0) == (1, 1)
    # Still allowed once the cap is full: the send is the one that filled it.
    assert store.try_reserve("u", "s2", T0, CAPS).blocked_by == "daily_cap"
    later = T0 + dt.timedelta(hours=1)
    assert _decision(store.try_reserve("u", "s1", later, CAPS)) == (True, 0, 0, None)
    assert store.send_times("u", later) == [T0.timestamp()]
    # The same send id of another user is another send.
    assert store.try_reserve("v", "s1", T0, CAPS).allowed


def test_record_sends_is_idempotent_and_counts_against_the_caps(store: PushCapStore) -> None:
    sends = [
        ("u", "a", T0 - dt.timedelta(hours=30)),
        ("u", "b", T0 - dt.timedelta(hours=1)),
        ("v", "c", T0),
    ]
    assert store.record_sends(sends) == 3
    assert store.record_sends(sends) == 0
    assert store.record_sends([*sends[1:], ("u", "d", T0 - 2 * DAY)]) == 1
    assert store.record_sends([]) == 0
    assert store.counts("u", T0) == (1, 3)
    assert store.send_times("u", T0) == sorted(
        (T0 - h).timestamp() for h in (2 * DAY, dt.timedelta(hours=30), dt.timedelta(hours=1))
    )
    assert store.try_reserve("u", "e", T0, CAPS).blocked_by == "daily_cap"
    # A reserved send that comes back through the logs is not counted twice.
    assert store.try_reserve("w", "r1", T0, CAPS).allowed
    assert store.record_sends([("w", "r1", T0)]) == 0
    assert store.counts("w", T0) == (1, 1)


def test_release_frees_the_slot(store: PushCapStore) -> None:
    assert store.try_reserve("u", "s1", T0, CAPS).allowed
    assert not store.try_reserve("u", "s2", T0, CAPS).allowed
    assert store.release("u", "s1")
    assert not store.release("u", "s1")
    assert not store.release("nobody", "s1")
    assert store.counts("u", T0) == (0, 0)
    assert store.try_reserve("u", "s2", T0, CAPS).allowed


def test_the_first_remembered_answer_wins(store: PushCapStore) -> None:
    assert store.recall_decision("u", "key-0001") is None

    assert store.remember_decision("u", "key-0001", '{"send":true}', T0) == '{"send":true}'
    assert store.remember_decision("u", "key-0001", '{"send":false}', T0 + DAY) == '{"send":true}'
    assert store.recall_decision("u", "key-0001") == '{"send":true}'
    # A key is bound to its user: the same key of another user is another decision.
    assert store.recall_decision("v", "key-0001") is None


def test_concurrent_twins_all_get_the_first_answer(
    make_store: Callable[[], PushCapStore],
) -> None:
    barrier = threading.Barrier(N_THREADS)
    answers: list[str] = []
    lock = threading.Lock()

    def remember(k: int) -> None:
        mine = make_store()
        barrier.wait()
        stored = mine.remember_decision("u", "twin-key", f"answer-{k}", T0)
        with lock:
            answers.append(stored)

    threads = [threading.Thread(target=remember, args=(k,)) for k in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(answers) == N_THREADS
    assert len(set(answers)) == 1
    assert make_store().recall_decision("u", "twin-key") == answers[0]


def test_erasure_forgets_remembered_answers(store: PushCapStore) -> None:
    store.remember_decision("u", "key-0001", "a", T0)
    store.record_sends([("u", "s", T0)])

    assert store.forget_user("u") == 2
    assert store.recall_decision("u", "key-0001") is None


def test_forget_user_erases_only_that_user(store: PushCapStore) -> None:
    store.record_sends([("u", "a", T0 - DAY), ("u", "b", T0), ("v", "c", T0)])
    assert store.forget_user("u") == 2
    assert store.forget_user("u") == 0
    assert store.counts("u", T0) == (0, 0)
    assert store.send_times("u", T0) == []
    assert store.counts("v", T0) == (1, 1)
    assert store.try_reserve("u", "d", T0, CAPS).allowed


def test_prune_drops_records_older_than_the_bound(store: PushCapStore) -> None:
    cutoff = T0 - 8 * DAY
    store.record_sends(
        [
            ("u", "old", cutoff - dt.timedelta(seconds=1)),
            ("v", "old", cutoff - DAY),
            ("u", "edge", cutoff),
            ("u", "new", T0),
        ]
    )
    assert store.prune(cutoff) == 2
    assert store.prune(cutoff) == 0
    assert store.send_times("u", cutoff + 7 * DAY - dt.timedelta(seconds=1)) == [cutoff.timestamp()]
    assert store.counts("u", T0) == (1, 1)
    assert store.counts("v", cutoff) == (0, 0)


def test_naive_times_are_rejected(store: PushCapStore) -> None:
    naive = dt.datetime(2026, 11, 2, 12)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.try_reserve("u", "s", naive, CAPS)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.counts("u", naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.send_times("u", naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.prune(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record_sends([("u", "a", T0), ("u", "b", naive)])
    assert store.counts("u", T0) == (0, 0)  # a rejected batch records nothing


def test_times_in_other_timezones_are_the_same_instants(store: PushCapStore) -> None:
    berlin = dt.timezone(dt.timedelta(hours=1))
    assert store.try_reserve("u", "s1", T0.astimezone(berlin), CAPS).allowed
    assert store.counts("u", T0) == (1, 1)
    assert store.send_times("u", T0) == [T0.timestamp()]


# --- atomicity under concurrency ------------------------------------------------------------


def _race(stores: list[PushCapStore], user: str, caps: CapPolicy) -> list[CapDecision]:
    """Each store reserves a different send for ``user`` at ``T0``, all released at once."""
    barrier = threading.Barrier(len(stores))
    decisions: list[CapDecision | BaseException | None] = [None] * len(stores)

    def reserve(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            decisions[i] = stores[i].try_reserve(user, f"s{i}", T0, caps)
        except BaseException as exc:  # reported below, not lost in the thread
            decisions[i] = exc

    threads = [threading.Thread(target=reserve, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    results = [d for d in decisions if isinstance(d, CapDecision)]
    assert len(results) == len(stores), decisions
    return results


@pytest.mark.parametrize("per_thread_store", [False, True], ids=["shared", "store-per-thread"])
@pytest.mark.parametrize(("per_day", "per_week"), [(1, 3), (3, 3)])
def test_concurrent_reservations_never_exceed_the_cap(
    make_store: Callable[[], PushCapStore], per_thread_store: bool, per_day: int, per_week: int
) -> None:
    caps = CapPolicy(per_day=per_day, per_week=per_week)
    shared = make_store()
    for round_ in range(3):  # a few rounds, one user each, to give a race more chances
        user = f"u{round_}"
        stores = [make_store() if per_thread_store else shared for _ in range(N_THREADS)]
        results = _race(stores, user, caps)
        allowed = [d for d in results if d.allowed]
        assert len(allowed) == per_day
        # Serialized: the allowed ones saw 0, 1, ... earlier sends, the blocked ones saw them all.
        assert sorted(d.sent_last_day for d in allowed) == list(range(per_day))
        assert {_decision(d) for d in results if not d.allowed} == {
            (False, per_day, per_day, "daily_cap")
        }
        assert shared.counts(user, T0) == (per_day, per_day)
        assert shared.counts(user, T0 + DAY) == (0, per_day)


def _reserve_in_child(
    path: Path, i: int, caps: CapPolicy, barrier: Any, out: Any
) -> None:  # pragma: no cover - runs in a forked child
    store = SQLitePushCapStore(path)  # a process opens its own store
    barrier.wait(timeout=30)
    out.put((i, store.try_reserve("u", f"p{i}", T0, caps)))


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
@pytest.mark.parametrize(("per_day", "per_week"), [(1, 3), (3, 3)])
def test_sqlite_reservations_from_separate_processes_serialize(
    tmp_path: Path, per_day: int, per_week: int
) -> None:
    ctx = multiprocessing.get_context("fork")  # children share the imports: no start-up cost
    path = tmp_path / "caps.sqlite"
    SQLitePushCapStore(path)  # create the file first, as a deployment would
    caps = CapPolicy(per_day=per_day, per_week=per_week)
    barrier, out = ctx.Barrier(N_THREADS), ctx.Queue()
    procs = [
        ctx.Process(target=_reserve_in_child, args=(path, i, caps, barrier, out))
        for i in range(N_THREADS)
    ]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=30)[1] for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    assert all(p.exitcode == 0 for p in procs)
    allowed = [d for d in results if d.allowed]
    assert sorted(d.sent_last_day for d in allowed) == list(range(per_day))
    assert {_decision(d) for d in results if not d.allowed} == {
        (False, per_day, per_day, "daily_cap")
    }
    assert SQLitePushCapStore(path).counts("u", T0) == (per_day, per_day)


# --- backend specifics and failures ---------------------------------------------------------


def test_redis_keeps_one_expiring_sorted_set_per_user(redis_prefix: str) -> None:
    import redis

    store = RedisPushCapStore(REDIS_URL, prefix=redis_prefix)
    client = redis.Redis.from_url(REDIS_URL)
    key = f"{redis_prefix}:u"
    store.record_sends([("u", "old", T0 - 9 * DAY)])
    assert store.try_reserve("u", "s1", T0, CAPS).allowed
    assert client.type(key) == b"zset"
    assert client.zrange(key, 0, -1, withscores=True) == [(b"s1", T0.timestamp())]  # trimmed
    ttl_ms: Any = client.pttl(key)
    assert 0 < ttl_ms <= 8 * 86400 * 1000
    assert store.forget_user("u") == 1
    assert not client.exists(key)


def test_sqlite_store_uses_wal_and_the_expected_schema(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "caps.sqlite"
    SQLitePushCapStore(path).try_reserve("u", "s1", T0, CAPS)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT user_id, send_id, ts FROM push_sends").fetchall() == [
            ("u", "s1", T0.timestamp())
        ]
        indexes = conn.execute("PRAGMA index_list(push_sends)").fetchall()
        assert any(r[1] == "push_sends_ts" for r in indexes)
    finally:
        conn.close()


def test_sqlite_store_under_a_regular_file_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OnlineStoreUnavailableError):
        SQLitePushCapStore(blocker / "caps.sqlite")
    with pytest.raises(OnlineStoreUnavailableError):
        SQLitePushCapStore(blocker / "deeper" / "caps.sqlite")


def test_sqlite_busy_timeout_is_unavailable_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "caps.sqlite"
    store = SQLitePushCapStore(path, timeout_s=0.05)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        with pytest.raises(OnlineStoreUnavailableError, match="locked"):
            store.try_reserve("u", "s1", T0, CAPS)
        assert store.counts("u", T0) == (0, 0)  # reads do not wait for the writer (WAL)
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert store.try_reserve("u", "s1", T0, CAPS).allowed


def test_unreachable_redis_is_unavailable() -> None:
    dead = RedisPushCapStore("redis://127.0.0.1:1/0", timeout_s=0.2)
    calls: list[Callable[[], object]] = [
        lambda: dead.try_reserve("u", "s", T0, CAPS),
        lambda: dead.counts("u", T0),
        lambda: dead.send_times("u", T0),
        lambda: dead.record_sends([("u", "s", T0)]),
        lambda: dead.release("u", "s"),
        lambda: dead.forget_user("u"),
        lambda: dead.prune(T0),
    ]
    for call in calls:
        with pytest.raises(OnlineStoreUnavailableError, match="redis unreachable"):
            call()


def test_a_forgotten_user_leaves_no_byte_in_the_sqlite_file_or_its_wal(tmp_path: Path) -> None:
    path = tmp_path / "caps.sqlite"
    store = SQLitePushCapStore(path)
    secret = "p_erase_me_5d2e"
    at = dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)
    assert store.try_reserve(secret, "send-1", at, CapPolicy()).allowed
    store.remember_decision(secret, "key-00000001", '{"send":true}', at)
    assert store.try_reserve("p_other", "send-2", at, CapPolicy()).allowed

    def on_disk() -> bytes:
        wal = path.with_name(path.name + "-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

    assert secret.encode() in on_disk()  # the positive control

    assert store.forget_user(secret) == 2

    assert secret.encode() not in on_disk()
    assert store.counts("p_other", at) == (1, 1)


def test_a_decisions_own_reservation_is_left_out_of_its_send_times(store: PushCapStore) -> None:
    # A concurrent twin of the same idempotency key reserved this decision's send already: the
    # decision counts the other sends only, or the daily cap would block it against itself.
    assert store.record_sends([("u", "earlier", T0 - 2 * DAY)]) == 1
    assert store.try_reserve("u", "idem:key-0001", T0, CAPS).allowed

    assert store.send_times("u", T0) == [(T0 - 2 * DAY).timestamp(), T0.timestamp()]
    assert store.send_times("u", T0, exclude="idem:key-0001") == [(T0 - 2 * DAY).timestamp()]
    assert store.send_times("u", T0, exclude="other") == store.send_times("u", T0)
