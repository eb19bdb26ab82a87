from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fitpulse_orchestration.storage import (
    LocalObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    S3ObjectStore,
    read_parquet,
    write_parquet,
)


def test_put_get_round_trip(store: ObjectStore) -> None:
    payload = bytes(range(256)) * 4
    store.put_bytes("landing/events/2026-10-03/14.ndjson.gz", payload)
    assert store.get_bytes("landing/events/2026-10-03/14.ndjson.gz") == payload


def test_put_get_empty_object(store: ObjectStore) -> None:
    store.put_bytes("empty.bin", b"")
    assert store.get_bytes("empty.bin") == b""
    assert store.exists("empty.bin")


def test_put_file_stores_a_file_replacing_the_old_value(store: ObjectStore, tmp_path: Path) -> None:
    # Over boto3's 8 MiB multipart threshold, so S3 takes it in parts.
    payload = os.urandom(9 * 1024 * 1024 + 7)
    source = tmp_path / "partition.parquet"
    source.write_bytes(payload)
    store.put_bytes("warehouse/events/a.parquet", b"old")
    store.put_file("warehouse/events/a.parquet", source)
    assert store.get_bytes("warehouse/events/a.parquet") == payload
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    store.put_file("empty.bin", empty)
    assert store.get_bytes("empty.bin") == b""
    # The source is the caller's: left in place.
    assert source.read_bytes() == payload


def test_get_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    store.put_bytes("present/a.bin", b"a")
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("present/missing.bin")
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("absent/dir/missing.bin")


def test_object_not_found_is_a_file_not_found_error() -> None:
    assert issubclass(ObjectNotFoundError, FileNotFoundError)


def test_exists(store: ObjectStore) -> None:
    assert not store.exists("a/b.txt")
    store.put_bytes("a/b.txt", b"x")
    assert store.exists("a/b.txt")
    assert not store.exists("a/c.txt")


def test_list_keys_under_prefix_is_sorted_and_excludes_siblings(store: ObjectStore) -> None:
    keys = ["a/b/z.txt", "a/b/c/d.txt", "a/b/a.txt", "a/bc", "a/bcd/e.txt", "b/x.txt", "a.txt"]
    for key in keys:
        store.put_bytes(key, key.encode())

    assert store.list_keys("a/b/") == ["a/b/a.txt", "a/b/c/d.txt", "a/b/z.txt"]
    assert store.list_keys("a/bcd/") == ["a/bcd/e.txt"]
    assert store.list_keys("a/bc") == ["a/bc", "a/bcd/e.txt"]
    assert store.list_keys("b/") == ["b/x.txt"]
    assert store.list_keys("nothing/here/") == []


def test_list_versions_tell_a_rewritten_object_from_an_untouched_one(store: ObjectStore) -> None:
    for key, data in (("d/a.bin", b"one"), ("d/b.bin", b"two"), ("e/c.bin", b"six")):
        store.put_bytes(key, data)
    before = store.list_versions("d/")
    assert list(before) == ["d/a.bin", "d/b.bin"]

    store.put_bytes("d/a.bin", b"uno")  # the same size, other bytes
    after = store.list_versions("d/")

    assert after["d/a.bin"] != before["d/a.bin"]
    assert after["d/b.bin"] == before["d/b.bin"]
    assert store.list_versions("nothing/") == {}


def test_list_keys_without_prefix_returns_every_key_sorted(store: ObjectStore) -> None:
    keys = ["z.txt", "m/n.txt", "a/b/c.txt", "a.txt"]
    for key in keys:
        store.put_bytes(key, b"")
    assert store.list_keys() == sorted(keys)


def test_list_keys_with_partial_name_prefix(store: ObjectStore) -> None:
    for key in ["runs/2026-10-01.json", "runs/2026-10-02.json", "runs/2026-11-01.json"]:
        store.put_bytes(key, b"{}")
    assert store.list_keys("runs/2026-10") == ["runs/2026-10-01.json", "runs/2026-10-02.json"]


def test_list_keys_on_empty_store(store: ObjectStore) -> None:
    assert store.list_keys() == []
    assert store.list_keys("a/") == []


def test_overwrite_replaces_value(store: ObjectStore) -> None:
    store.put_bytes("k.bin", b"a much longer first value")
    store.put_bytes("k.bin", b"short")
    assert store.get_bytes("k.bin") == b"short"
    assert store.list_keys() == ["k.bin"]


def test_put_new_writes_once_and_never_replaces(store: ObjectStore) -> None:
    assert store.put_new("log/0001.json", b"first") is True
    assert store.put_new("log/0001.json", b"second") is False

    assert store.get_bytes("log/0001.json") == b"first"
    assert store.list_keys("log/") == ["log/0001.json"]


def test_put_new_races_have_one_winner(store: ObjectStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        won = list(pool.map(lambda i: store.put_new("race", str(i).encode()), range(16)))

    assert won.count(True) == 1
    assert store.get_bytes("race") == str(won.index(True)).encode()


def test_delete(store: ObjectStore) -> None:
    store.put_bytes("a/keep.txt", b"1")
    store.put_bytes("a/drop.txt", b"2")
    store.delete("a/drop.txt")
    assert not store.exists("a/drop.txt")
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("a/drop.txt")
    assert store.list_keys("a/") == ["a/keep.txt"]


def test_delete_missing_key_is_not_an_error(store: ObjectStore) -> None:
    store.delete("never/written.txt")
    store.put_bytes("once.txt", b"x")
    store.delete("once.txt")
    store.delete("once.txt")
    assert store.list_keys() == []


def test_delete_prefix_returns_count(store: ObjectStore) -> None:
    for key in ["p/q/1.txt", "p/q/2.txt", "p/q/r/3.txt", "p/qr.txt", "other.txt"]:
        store.put_bytes(key, b"")
    assert store.delete_prefix("p/q/") == 3
    assert store.list_keys() == ["other.txt", "p/qr.txt"]
    assert store.delete_prefix("p/q/") == 0


def test_iter_keys_filters_by_suffix(store: ObjectStore) -> None:
    for key in ["t/2.parquet", "t/1.parquet", "t/1.parquet.tmp", "t/readme.md", "u/3.parquet"]:
        store.put_bytes(key, b"")
    assert list(store.iter_keys("t/", ".parquet")) == ["t/1.parquet", "t/2.parquet"]
    assert list(store.iter_keys("t/")) == [
        "t/1.parquet",
        "t/1.parquet.tmp",
        "t/2.parquet",
        "t/readme.md",
    ]
    assert list(store.iter_keys(suffix=".parquet")) == ["t/1.parquet", "t/2.parquet", "u/3.parquet"]


@pytest.mark.parametrize("key", ["", "/abs", "/abs/path.txt", "a/../b", "..", "../escape.txt"])
def test_invalid_keys_raise_value_error(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError, match="invalid object key"):
        store.get_bytes(key)
    with pytest.raises(ValueError, match="invalid object key"):
        store.exists(key)
    with pytest.raises(ValueError, match="invalid object key"):
        store.delete(key)
    with pytest.raises(ValueError, match="invalid object key"):
        store.uri(key)
    assert store.list_keys() == []


def test_dotted_names_are_valid_keys(store: ObjectStore) -> None:
    store.put_bytes("a/..b/c..d", b"ok")
    assert store.get_bytes("a/..b/c..d") == b"ok"


def test_parquet_round_trip(store: ObjectStore) -> None:
    frame = pd.DataFrame(
        {
            "member_id": ["m1", "m2", "m3"],
            "event_ts": pd.to_datetime(
                ["2026-10-03 14:00:00", "2026-10-03 14:05:30", "2026-10-04 00:00:01"]
            ).tz_localize("UTC"),
            "duration_s": pd.array([1800, None, 45], dtype="Int64"),
            "weight": [1.0, 0.5, 2.25],
        }
    )
    write_parquet(store, "features/members.parquet", frame)

    result = read_parquet(store, "features/members.parquet")

    assert str(result["event_ts"].dtype) == "datetime64[ns, UTC]"
    assert result["duration_s"].dtype == pd.Int64Dtype()
    assert result["duration_s"].isna().tolist() == [False, True, False]
    pd.testing.assert_frame_equal(result, frame)


def test_parquet_round_trip_keeps_non_utc_timezone(store: ObjectStore) -> None:
    frame = pd.DataFrame(
        {
            "ts": pd.date_range("2026-03-28", periods=3, freq="D", tz="Europe/Berlin"),
            "n": pd.array([None, 1, 2], dtype="Int64"),
        }
    )
    write_parquet(store, "t.parquet", frame)
    pd.testing.assert_frame_equal(read_parquet(store, "t.parquet"), frame)


def test_read_parquet_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        read_parquet(store, "nope.parquet")


def test_local_uri_is_absolute_path(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "root")
    uri = store.uri("a/b.txt")
    assert Path(uri).is_absolute()
    assert uri == str((tmp_path / "root" / "a" / "b.txt").resolve())
    store.put_bytes("a/b.txt", b"payload")
    assert Path(uri).read_bytes() == b"payload"


def test_local_root_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = LocalObjectStore("relative/root")
    assert store.uri("k") == str(tmp_path.resolve() / "relative" / "root" / "k")


def test_s3_uri_format(s3_store: S3ObjectStore) -> None:
    assert s3_store.uri("a/b.txt") == f"s3://{s3_store.bucket}/{s3_store.prefix}/a/b.txt"
    assert s3_store.uri("a/b.txt").startswith("s3://fitpulse-test/tests/")


def test_s3_uri_format_strips_prefix_slashes(
    make_s3_store: Callable[[str], S3ObjectStore],
) -> None:
    store = make_s3_store("/exports/v1/")
    assert store.uri("x.csv") == "s3://fitpulse-test/exports/v1/x.csv"


def test_s3_uri_format_without_prefix(make_s3_store: Callable[[str], S3ObjectStore]) -> None:
    assert make_s3_store("").uri("a/b.txt") == "s3://fitpulse-test/a/b.txt"


def test_s3_objects_live_under_the_store_prefix(s3_store: S3ObjectStore, s3_client: Any) -> None:
    s3_store.put_bytes("a/b.txt", b"hello")
    body = s3_client.get_object(Bucket=s3_store.bucket, Key=f"{s3_store.prefix}/a/b.txt")["Body"]
    assert body.read() == b"hello"


def test_s3_stores_with_different_prefixes_are_isolated(
    s3_store: S3ObjectStore, make_s3_store: Callable[[str], S3ObjectStore]
) -> None:
    sibling = make_s3_store(f"{s3_store.prefix}-sibling")
    s3_store.put_bytes("k.txt", b"mine")
    sibling.put_bytes("k.txt", b"theirs")
    assert s3_store.list_keys() == ["k.txt"]
    assert s3_store.get_bytes("k.txt") == b"mine"
    assert s3_store.delete_prefix("") == 1
    assert sibling.get_bytes("k.txt") == b"theirs"


def test_s3_list_keys_pages_past_one_response(s3_store: S3ObjectStore) -> None:
    # ListObjectsV2 returns at most 1000 keys per page.
    keys = [f"many/{i:04d}" for i in range(1001)]
    for key in keys:
        s3_store.put_bytes(key, b"")
    assert s3_store.list_keys("many/") == keys


def test_local_put_leaves_no_temporary_files(local_store: LocalObjectStore) -> None:
    local_store.put_bytes("a/b/c.bin", b"1")
    local_store.put_bytes("a/b/c.bin", b"2")
    local_store.put_bytes("a/d.bin", b"3")

    on_disk = sorted(
        Path(dirpath, name).relative_to(local_store.root).as_posix()
        for dirpath, _dirs, files in os.walk(local_store.root)
        for name in files
    )
    assert on_disk == ["a/b/c.bin", "a/d.bin"]
    assert not any(Path(name).name.startswith(".tmp-") for name in on_disk)


def test_local_list_keys_skips_temporary_files(local_store: LocalObjectStore) -> None:
    local_store.put_bytes("a/b/c.bin", b"1")
    # A crashed writer can leave its temporary file behind; readers must never see it.
    (local_store.root / "a" / "b" / ".tmp-abc123c.bin").write_bytes(b"partial")
    (local_store.root / ".tmp-top").write_bytes(b"partial")

    assert local_store.list_keys() == ["a/b/c.bin"]
    assert local_store.list_keys("a/b/") == ["a/b/c.bin"]
    assert list(local_store.iter_keys(suffix=".bin")) == ["a/b/c.bin"]


def test_local_key_that_is_only_a_prefix_is_missing(local_store: LocalObjectStore) -> None:
    local_store.put_bytes("a/b.txt", b"x")
    assert not local_store.exists("a")
    local_store.delete("a")
    with pytest.raises(ObjectNotFoundError):
        local_store.get_bytes("a")


def test_local_list_keys_rejects_prefixes_leaving_root(tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_bytes(b"secret")
    store = LocalObjectStore(tmp_path / "store")
    store.put_bytes("inside.txt", b"x")
    for prefix in ("../", "/etc/", "a//"):
        with pytest.raises(ValueError, match="invalid object key"):
            store.list_keys(prefix)


@pytest.mark.parametrize("key", [".", "x//y", "p/./q", "t/"])
def test_keys_with_empty_or_dot_segments_are_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        store.put_bytes(key, b"1")


def test_a_forked_process_gets_its_own_s3_client(s3_store: S3ObjectStore) -> None:
    s3_store.put_bytes("fork/parent", b"p")  # the parent's client now holds a pooled connection
    parent_client = s3_store._client
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a forked serving worker, in effect
        try:
            s3_store.put_bytes("fork/child", b"c")
            ok = s3_store._client is not parent_client and s3_store.get_bytes("fork/parent") == b"p"
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    os.close(read)

    assert answer == b"1"
    assert s3_store._client is parent_client  # the parent keeps its own
    assert s3_store.get_bytes("fork/child") == b"c"
