from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

import model_registry.audit as audit_module
from fitpulse_orchestration.storage import LocalObjectStore
from model_registry.audit import AUDIT_PREFIX, AuditEntry, AuditLog


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path)


@pytest.fixture
def log(store: LocalObjectStore) -> AuditLog:
    return AuditLog(store)


def test_append_returns_the_entry_and_writes_it_under_the_model(
    log: AuditLog, store: LocalObjectStore
) -> None:
    entry = log.append("approved", "ranker", "3", "  alice  ", note="looks good")

    assert entry.action == "approved"
    assert (entry.model, entry.version) == ("ranker", "3")
    assert entry.actor == "alice"
    assert entry.note == "looks good"
    assert entry.details == {}
    at = dt.datetime.fromisoformat(entry.at)
    assert at.tzinfo is not None
    assert abs(dt.datetime.now(dt.UTC) - at) < dt.timedelta(minutes=1)
    keys = store.list_keys(f"{AUDIT_PREFIX}/ranker/")
    assert len(keys) == 1
    assert keys[0].endswith(".json")
    assert "-approved-" in keys[0]
    assert json.loads(store.get_bytes(keys[0]))["actor"] == "alice"


def test_entries_are_oldest_first(log: AuditLog) -> None:
    # action names in reverse alphabetical order, so a sort by action would reverse them
    actions = ["rolled_back", "promoted", "gate_passed", "approved"]
    for action in actions:
        log.append(action, "ranker", "1", "ci")

    entries = log.entries("ranker")

    assert [e.action for e in entries] == actions
    assert [e.at for e in entries] == sorted(e.at for e in entries)


def test_entries_are_filtered_by_model(log: AuditLog) -> None:
    log.append("registered", "ranker", "1", "ci")
    log.append("registered", "ranker-b", "1", "ci")
    log.append("gate_passed", "ranker", "1", "ci")
    log.append("registered", "other", "7", "ci")

    assert [e.action for e in log.entries("ranker")] == ["registered", "gate_passed"]
    assert [(e.model, e.version) for e in log.entries("other")] == [("other", "7")]
    assert [e.model for e in log.entries("ranker-b")] == ["ranker-b"]
    assert log.entries("unknown") == []
    assert [e.model for e in log.entries()] == ["ranker", "ranker-b", "ranker", "other"]


def test_entries_of_an_empty_log_are_empty(log: AuditLog) -> None:
    assert log.entries() == []
    assert log.entries("ranker") == []


def test_appends_in_a_tight_loop_never_overwrite_each_other(
    log: AuditLog, store: LocalObjectStore
) -> None:
    for i in range(50):
        log.append("gate_failed", "ranker", str(i), "ci")

    entries = log.entries("ranker")

    assert len(entries) == 50
    assert len(store.list_keys(f"{AUDIT_PREFIX}/ranker/")) == 50
    assert sorted(int(e.version or -1) for e in entries) == list(range(50))


def test_two_appends_at_the_same_instant_give_two_entries(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a stopped clock (the only stand-in): both keys get the same timestamp part
    frozen = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    monkeypatch.setattr(audit_module, "_now", lambda: frozen)

    log.append("approved", "ranker", "1", "alice", note="first")
    log.append("approved", "ranker", "1", "bob", note="second")

    entries = log.entries("ranker")
    assert sorted(e.note for e in entries) == ["first", "second"]
    assert {e.at for e in entries} == {"2026-01-02T03:04:05.678901+00:00"}


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

    (read,) = log.entries("ranker")
    assert read == written
    assert read.details == details
    assert read.version is None
    assert isinstance(read, AuditEntry)


def test_custom_prefix_and_location(store: LocalObjectStore, tmp_path: Path) -> None:
    log = AuditLog(store, prefix="audit/custom/")
    log.append("registered", "ranker", "1", "ci")

    assert store.list_keys("audit/custom/ranker/") != []
    assert store.list_keys(f"{AUDIT_PREFIX}/") == []
    assert log.location() == str(tmp_path.resolve() / "audit" / "custom")
    assert [e.action for e in log.entries("ranker")] == ["registered"]
