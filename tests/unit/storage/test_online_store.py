from __future__ import annotations

import socket
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration.storage.online_store import (
    CorruptRecordError,
    OnlineFeatureStore,
    OnlineStoreUnavailableError,
    RedisOnlineStore,
    SQLiteOnlineStore,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
AS_OF = pd.Timestamp("2026-11-01", tz="UTC")
FEATURES = ("u_engaged_7d", "u_level")


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineFeatureStore]:
    if request.param == "sqlite":
        yield SQLiteOnlineStore(tmp_path / "online.sqlite")
        return
    request.getfixturevalue("require_redis")
    prefix = f"fitpulse-test:{uuid.uuid4().hex}"
    redis_store = RedisOnlineStore(REDIS_URL, prefix=prefix)
    yield redis_store
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def _users(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [f"p_{i}" for i in range(len(values))],
            "u_engaged_7d": values,
            "u_level": [0.0] * len(values),
        }
    )


def test_lookup_returns_materialized_values(store: OnlineFeatureStore) -> None:
    meta = store.materialize("user", _users([1.0, 2.0, np.nan]), FEATURES, AS_OF)

    got = store.lookup("user", ["p_2", "p_0", "nobody"]).set_index("user_id")

    assert meta.rows == 3
    assert store.meta("user") == meta
    assert sorted(got.index) == ["p_0", "p_2"]
    assert got.loc["p_0", "u_engaged_7d"] == 1.0
    assert np.isnan(got.loc["p_2", "u_engaged_7d"])
    assert list(got.columns) == list(FEATURES)


def test_lookup_row_answers_one_members_values_or_none(store: OnlineFeatureStore) -> None:
    store.materialize("user", _users([1.0, np.nan]), FEATURES, AS_OF)

    first = store.lookup_row("user", "p_0")
    second = store.lookup_row("user", "p_1")

    assert first == {"u_engaged_7d": 1.0, "u_level": 0.0}
    assert second is not None
    assert np.isnan(second["u_engaged_7d"])
    assert store.lookup_row("user", "nobody") is None
    with pytest.raises(LookupError, match="never materialized"):
        store.lookup_row("item", "wk_1")


def test_lookup_member_reads_the_record_and_the_row_in_one_round_trip(
    store: OnlineFeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.materialize("user", _users([1.0, np.nan]), FEATURES, AS_OF)
    store.materialize_records("history", {"p_0": {"n": 3}, "p_9": {"n": 1}}, AS_OF)
    store.cached_meta("user")
    store.cached_meta("history")
    reads: list[object] = []
    for name in ("_get", "_get_rows"):
        original = getattr(store, name)

        def counted(*args: object, _original: object = original, _name: str = name) -> object:
            reads.append(_name)
            return _original(*args)  # type: ignore[operator]

        monkeypatch.setattr(store, name, counted)

    both = store.lookup_member("p_0", "history", "user")
    row_only = store.lookup_member("p_1", "history", "user")
    record_only = store.lookup_member("p_9", "history", "user")
    nobody = store.lookup_member("nobody", "history", "user")

    assert both == ({"n": 3}, {"u_engaged_7d": 1.0, "u_level": 0.0})
    assert row_only[0] is None
    assert row_only[1] is not None
    assert np.isnan(row_only[1]["u_engaged_7d"])
    assert record_only == ({"n": 1}, None)
    assert nobody == (None, None)
    assert reads == ["_get_rows"] * 4
    with pytest.raises(LookupError, match="never materialized"):
        store.lookup_member("p_0", "push", "user")


def test_materialize_replaces_the_whole_table(store: OnlineFeatureStore) -> None:
    store.materialize("user", _users([1.0, 2.0, 3.0]), FEATURES, AS_OF)
    store.materialize("user", _users([9.0]), FEATURES, AS_OF + pd.Timedelta(days=1))

    got = store.lookup("user", ["p_0", "p_1", "p_2"])

    assert list(got["user_id"]) == ["p_0"]
    assert got["u_engaged_7d"].tolist() == [9.0]
    meta = store.meta("user")
    assert meta is not None
    assert meta.as_of == (AS_OF + pd.Timedelta(days=1)).isoformat()


def test_kinds_are_separate(store: OnlineFeatureStore) -> None:
    store.materialize("user", _users([1.0]), FEATURES, AS_OF)

    with pytest.raises(LookupError, match="never materialized"):
        store.lookup("item", ["p_0"])


def test_bad_tables_are_rejected(store: OnlineFeatureStore) -> None:
    frame = _users([1.0, 2.0])
    frame.loc[1, "user_id"] = "p_0"

    with pytest.raises(ValueError, match="duplicated ids"):
        store.materialize("user", frame, FEATURES, AS_OF)
    with pytest.raises(ValueError, match="lacks columns"):
        store.materialize("user", _users([1.0]), ("u_missing",), AS_OF)
    with pytest.raises(ValueError, match="unknown feature kind"):
        store.materialize("session", _users([1.0]), FEATURES, AS_OF)


def test_unreachable_redis_raises_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisOnlineStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)

    with pytest.raises(OnlineStoreUnavailableError, match="redis unreachable"):
        store.lookup("user", ["p_0"])


def test_forget_deletes_the_users_rows_from_every_user_table(store: OnlineFeatureStore) -> None:
    store.materialize("user", _users([1.0, 2.0, 3.0]), FEATURES, AS_OF)
    store.materialize_records("history", {"p_0": {"n": 4}, "p_1": {"n": 1}}, AS_OF)
    store.materialize_records("push", {"p_0": {"sent": 2}}, AS_OF)
    items = pd.DataFrame({"item_id": ["p_0", "wk_1"], "u_engaged_7d": [5.0, 6.0], "u_level": 0.0})
    store.materialize("item", items, FEATURES, AS_OF)

    removed = store.forget("p_0")

    assert removed == 3
    assert store.lookup("user", ["p_0", "p_1", "p_2"])["user_id"].tolist() == ["p_1", "p_2"]
    assert store.lookup_records("history", ["p_0", "p_1"]) == {"p_1": {"n": 1}}
    assert store.lookup_records("push", ["p_0"]) == {}
    # Items are not keyed by users: an item id that looks like a pseudonym stays.
    assert sorted(store.lookup("item", ["p_0", "wk_1"])["item_id"]) == ["p_0", "wk_1"]
    assert store.forget("p_0") == 0
    assert store.forget("p_1") == 2
    assert store.forget("nobody") == 0
    assert store.lookup("user", ["p_2"])["u_engaged_7d"].tolist() == [3.0]


def test_a_serving_store_never_creates_the_file_and_recovers_when_it_appears(
    tmp_path: Path,
) -> None:
    path = tmp_path / "online" / "features.sqlite"
    serving = SQLiteOnlineStore(path, create=False)

    with pytest.raises(OnlineStoreUnavailableError, match="cannot read"):
        serving.lookup("user", ["p_0"])
    assert not path.exists()
    assert not path.parent.exists()

    SQLiteOnlineStore(path).materialize("user", _users([4.0]), FEATURES, AS_OF)

    assert serving.lookup("user", ["p_0"])["u_engaged_7d"].tolist() == [4.0]


def test_a_replaced_or_deleted_file_is_noticed_by_an_open_reader(tmp_path: Path) -> None:
    path = tmp_path / "features.sqlite"
    SQLiteOnlineStore(path).materialize("user", _users([1.0]), FEATURES, AS_OF)
    reader = SQLiteOnlineStore(path, create=False)
    assert reader.lookup("user", ["p_0"])["u_engaged_7d"].tolist() == [1.0]

    # A new store is built beside and moved over the old one (a redeploy, a restore).
    staged = tmp_path / "staged.sqlite"
    SQLiteOnlineStore(staged).materialize("user", _users([7.0]), FEATURES, AS_OF)
    staged.replace(path)
    replaced = reader.lookup("user", ["p_0"])["u_engaged_7d"].tolist()
    path.rename(tmp_path / "moved-away.sqlite")

    assert replaced == [7.0]
    with pytest.raises(OnlineStoreUnavailableError):
        reader.lookup("user", ["p_0"])


def _file_bytes(path: Path) -> bytes:
    """The database file and its WAL, as they lie on disk."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_a_forgotten_user_leaves_no_byte_in_the_sqlite_file_or_its_wal(tmp_path: Path) -> None:
    path = tmp_path / "features.sqlite"
    store = SQLiteOnlineStore(path)
    store.materialize("user", _users([1.0, 2.0, 3.0]), FEATURES, AS_OF)
    secret = "p_erase_me_7c41"
    store.materialize_records("history", {secret: {"n": 4}, "p_1": {"n": 1}}, AS_OF)
    reader = SQLiteOnlineStore(path, create=False)
    assert reader.lookup_records("history", [secret]) == {secret: {"n": 4}}
    assert secret.encode() in _file_bytes(path)  # the positive control

    assert store.forget(secret) == 1

    assert secret.encode() not in _file_bytes(path)
    assert reader.lookup_records("history", [secret, "p_1"]) == {"p_1": {"n": 1}}


def _items(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {"item_id": [f"i_{i}" for i in range(len(values))], "i_ctr": values, "i_age": values}
    )


def _counting_reads(store: OnlineFeatureStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    read = store._get

    def counted(kind: str, ids: list[str]) -> list[tuple[str, str]]:
        reads.append(len(ids))
        return read(kind, ids)

    monkeypatch.setattr(store, "_get", counted)
    return reads


def test_item_values_are_read_from_the_store_once_per_materialization(
    store: OnlineFeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = store.materialize("item", _items([1.0, 2.0]), ("i_ctr", "i_age"), AS_OF)
    reads = _counting_reads(store, monkeypatch)

    values, _ = store.lookup_values("item", ["i_1", "nowhere", "i_0"])
    again, _ = store.lookup_values("item", ["i_0", "i_1", "nowhere", "i_1"])
    second = store.materialize("item", _items([5.0, 6.0]), ("i_ctr", "i_age"), AS_OF)
    fresh, _ = store.lookup_values("item", ["i_0"])

    assert reads == [3, 1]  # the second lookup read nothing; the new table is read again
    assert first.generation != second.generation
    np.testing.assert_array_equal(values[[0, 2]], [[2.0, 2.0], [1.0, 1.0]])
    assert np.isnan(values[1]).all()
    np.testing.assert_array_equal(again[[0, 1, 3]], [[1.0, 1.0], [2.0, 2.0], [2.0, 2.0]])
    assert np.isnan(again[2]).all()
    np.testing.assert_array_equal(fresh, [[5.0, 5.0]])


def test_member_features_are_never_cached(
    store: OnlineFeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.materialize("user", _users([1.0, 2.0]), FEATURES, AS_OF)
    reads = _counting_reads(store, monkeypatch)

    store.lookup_values("user", ["p_0"])
    store.forget("p_0")
    values, _ = store.lookup_values("user", ["p_0"])

    assert reads == [1, 1]
    assert np.isnan(values).all()


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ('{"u_engaged_7d": 1.0, "u_lev', "is not JSON"),
        ("[1.0, 0.0]", "is not a JSON object"),
        ('{"u_engaged_7d": "many", "u_level": 0.0}', "holds a non-number"),
    ],
)
def test_a_damaged_row_is_a_lookup_error_of_that_row_alone(
    tmp_path: Path, payload: str, why: str
) -> None:
    path = tmp_path / "online.sqlite"
    store = SQLiteOnlineStore(path)
    store.materialize("user", _users([1.0, 2.0]), FEATURES, AS_OF)
    store.materialize_records("history", {"p_0": {"level": "beginner"}, "p_1": {}}, AS_OF)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE features SET payload = ? WHERE id = 'p_1'", (payload,))

    lookups = [
        lambda: store.lookup_row("user", "p_1"),
        lambda: store.lookup("user", ["p_1"]),
    ]
    if why != "holds a non-number":  # a record is any JSON object
        lookups.append(lambda: store.lookup_records("history", ["p_1"]))
    for lookup in lookups:
        with pytest.raises(CorruptRecordError, match=rf"the online \w+ row of 'p_1' {why}"):
            lookup()
    assert issubclass(CorruptRecordError, LookupError)
    # The request path's batch lookup reads the damaged row as unknown and keeps the others.
    values, names = store.lookup_values("user", ["p_0", "p_1"])
    assert names == FEATURES
    assert values[0].tolist() == [1.0, 0.0]
    assert np.isnan(values[1]).all()
    assert store.lookup_row("user", "p_0") == {"u_engaged_7d": 1.0, "u_level": 0.0}
    assert store.lookup_records("history", ["p_0"]) == {"p_0": {"level": "beginner"}}
