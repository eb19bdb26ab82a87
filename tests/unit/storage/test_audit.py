from __future__ import annotations

import datetime as dt
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from audit_keys import AUDIT_KEY

from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.storage.audit import (
    AUDIT_KEY_ENV,
    AUDIT_PREFIX,
    GENESIS,
    AuditEntry,
    AuditIntegrityError,
    AuditLog,
    load_audit_key,
)


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path)


@pytest.fixture
def log(store: LocalObjectStore) -> AuditLog:
    return AuditLog(store, AUDIT_KEY)


def _keys(store: LocalObjectStore, model: str = "ranker") -> list[str]:
    return store.list_keys(f"{AUDIT_PREFIX}/{model}/")


def test_append_returns_the_entry_and_writes_it_under_the_model(
    log: AuditLog, store: LocalObjectStore
) -> None:
    entry = log.append("approved", "ranker", "3", "  alice  ", note="looks good")

    assert entry.action == "approved"
    assert (entry.model, entry.version) == ("ranker", "3")
    assert entry.actor == "alice"
    assert entry.note == "looks good"
    assert entry.details == {}
    assert (entry.seq, entry.prev) == (1, GENESIS)
    assert len(entry.mac) == 64
    at = dt.datetime.fromisoformat(entry.at)
    assert at.tzinfo is not None
    assert abs(dt.datetime.now(dt.UTC) - at) < dt.timedelta(minutes=1)
    assert _keys(store) == [f"{AUDIT_PREFIX}/ranker/00000001-approved.json"]
    assert json.loads(store.get_bytes(_keys(store)[0]))["actor"] == "alice"


def test_entries_chain_to_their_predecessor(log: AuditLog) -> None:
    # action names in reverse alphabetical order, so a sort by action would reverse them
    actions = ["rolled_back", "promoted", "gate_passed", "approved"]
    for action in actions:
        log.append(action, "ranker", "1", "ci")

    entries = log.verify("ranker")

    assert [e.action for e in entries] == actions
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert [e.prev for e in entries] == [GENESIS] + [e.digest() for e in entries[:-1]]
    assert log.entries("ranker") == entries


def test_entries_are_filtered_by_model(log: AuditLog) -> None:
    log.append("registered", "ranker", "1", "ci")
    log.append("registered", "ranker-b", "1", "ci")
    log.append("gate_passed", "ranker", "1", "ci")
    log.append("registered", "other", "7", "ci")

    assert [e.action for e in log.entries("ranker")] == ["registered", "gate_passed"]
    assert [(e.model, e.version) for e in log.entries("other")] == [("other", "7")]
    assert [e.model for e in log.entries("ranker-b")] == ["ranker-b"]
    assert log.entries("unknown") == []
    assert log.verify("unknown") == []
    assert [e.model for e in log.entries()] == ["ranker", "ranker-b", "ranker", "other"]


def test_concurrent_appends_each_get_their_own_place_in_the_chain(log: AuditLog) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda i: log.append("gate_failed", "ranker", str(i), "ci"), range(24)))

    entries = log.verify("ranker")

    assert [e.seq for e in entries] == list(range(1, 25))
    assert sorted(int(e.version or -1) for e in entries) == list(range(24))


def test_blank_actor_raises(log: AuditLog, store: LocalObjectStore) -> None:
    for actor in ("", "   ", "\t\n"):
        with pytest.raises(ValueError, match="actor"):
            log.append("approved", "ranker", "1", actor)

    assert store.list_keys("") == []


def test_details_and_none_version_round_trip(log: AuditLog) -> None:
    details = {
        "passed": False,
        "checks": [{"name": "coverage", "value": -0.2, "threshold": -0.02}],
        "previous": None,
        "nested": {"a": [1, 2, 3]},
    }

    written = log.append("gate_failed", "ranker", None, "ci", note="n", details=details)

    (read,) = log.verify("ranker")
    assert read == written
    assert read.details == details
    assert read.version is None
    assert isinstance(read, AuditEntry)


def test_custom_prefix_and_location(store: LocalObjectStore, tmp_path: Path) -> None:
    log = AuditLog(store, AUDIT_KEY, prefix="audit/custom/")
    log.append("registered", "ranker", "1", "ci")

    assert store.list_keys("audit/custom/ranker/") != []
    assert store.list_keys(f"{AUDIT_PREFIX}/") == []
    assert log.location() == str(tmp_path.resolve() / "audit" / "custom")
    assert [e.action for e in log.entries("ranker")] == ["registered"]


def test_a_short_key_is_refused(store: LocalObjectStore) -> None:
    with pytest.raises(ValueError, match="at least 32"):
        AuditLog(store, "short")


# ---- tampering ---------------------------------------------------------------------------------


def _three(log: AuditLog) -> None:
    log.append("registered", "ranker", "1", "ci")
    log.append("gate_failed", "ranker", "1", "ci")
    log.append("registered", "ranker", "2", "ci")


def test_an_edited_entry_fails_its_signature(log: AuditLog, store: LocalObjectStore) -> None:
    _three(log)
    key = _keys(store)[1]
    body = json.loads(store.get_bytes(key))
    body["action"] = "gate_passed"
    store.put_bytes(key, json.dumps(body).encode())

    with pytest.raises(AuditIntegrityError, match=r"00000002-gate_failed\.json: signature"):
        log.verify("ranker")


def test_an_entry_signed_with_another_key_is_refused(
    log: AuditLog, store: LocalObjectStore
) -> None:
    forger = AuditLog(store, "x" * 64)
    log.append("registered", "ranker", "1", "ci")
    forger.append("gate_passed", "ranker", "1", "ci")

    with pytest.raises(AuditIntegrityError, match=r"00000002-gate_passed\.json: signature"):
        log.verify("ranker")


def test_a_removed_entry_breaks_the_chain(log: AuditLog, store: LocalObjectStore) -> None:
    _three(log)
    store.delete(_keys(store)[1])

    with pytest.raises(AuditIntegrityError, match="expected entry 2"):
        log.verify("ranker")


def test_a_replaced_middle_entry_does_not_follow_its_predecessor(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    # two chains under one key: entry 2 of the other chain is validly signed but follows a
    # different entry 1
    log = AuditLog(store, AUDIT_KEY)
    other_store = LocalObjectStore(tmp_path / "other")
    other = AuditLog(other_store, AUDIT_KEY)
    _three(log)
    other.append("registered", "ranker", "9", "ci")
    other.append("gate_passed", "ranker", "9", "ci")
    stolen = _keys(other_store)[1]
    store.delete(_keys(store)[1])
    store.put_bytes(stolen, other_store.get_bytes(stolen))

    with pytest.raises(AuditIntegrityError, match="does not follow entry 1"):
        log.verify("ranker")


def test_an_unreadable_entry_is_an_integrity_error(log: AuditLog, store: LocalObjectStore) -> None:
    log.append("registered", "ranker", "1", "ci")
    store.put_bytes(_keys(store)[0], b"{not json")

    with pytest.raises(AuditIntegrityError, match="unreadable"):
        log.verify("ranker")


# ---- the key ----------------------------------------------------------------------------------


def test_the_local_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "audit.key"

    first = load_audit_key(path, env={})
    again = load_audit_key(path, env={})

    assert first == again
    assert len(first) == 64
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_the_environment_key_wins_and_must_be_long(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"

    assert load_audit_key(path, env={AUDIT_KEY_ENV: "k" * 40}) == "k" * 40
    assert not path.exists()
    with pytest.raises(ValueError, match="at least 32"):
        load_audit_key(path, env={AUDIT_KEY_ENV: "short"})
