from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.ingest import ingest_day, write_ingested
from fitpulse_orchestration.features.reference import load_catalog, load_profiles
from fitpulse_orchestration.features.snapshot import load_feature_inputs
from fitpulse_orchestration.privacy.erasure import (
    ERASURE_STEPS,
    PRIVACY_AUDIT_PREFIX,
    erase_user,
    purge_erased_lines,
)
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.privacy.suppression import (
    ERASED_PREFIX,
    erased_key,
    erased_pseudonyms,
)
from fitpulse_orchestration.push.caps import SQLitePushCapStore
from fitpulse_orchestration.serving.logs import SERVED_FEATURES, served_features_key
from fitpulse_orchestration.serving.shadow import shadow_key
from fitpulse_orchestration.storage import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    read_parquet,
    write_parquet,
)
from fitpulse_orchestration.storage.online_store import (
    OnlineStoreUnavailableError,
    SQLiteOnlineStore,
)

if TYPE_CHECKING:
    from conftest import S3Endpoint

NOW = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
PREFIXES = {
    "landing": f"{layout.LANDING_EVENTS}/",
    "clean": f"{layout.WAREHOUSE_EVENTS}/",
    "quarantine": f"{layout.WAREHOUSE_QUARANTINE}/",
    "served": f"{SERVED_FEATURES}/",
    "shadow": f"{layout.SHADOW_LOGS}/",
    "profiles": f"{layout.LANDING_USERS}/",
}
TABLE_ZONES = ("clean", "quarantine", "served", "shadow", "profiles")

Records = dict[str, dict[str, Any]]
"""zone -> key -> records (landing: the batch's lines; the other zones: the Parquet frame)."""


# ---------------------------------------------------------------- stores


@pytest.fixture
def world(ingested_world: LocalObjectStore) -> LocalObjectStore:
    """A tiny world of this test alone, with every landed day ingested."""
    return ingested_world


@pytest.fixture(params=["local", "s3"])
def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """An empty store: local, or S3 (moto) under a prefix of this test alone."""
    if request.param == "local":
        return LocalObjectStore(tmp_path / "store")
    endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
    request.getfixturevalue("s3_credentials")
    return S3ObjectStore(
        endpoint.bucket,
        prefix=f"tests/privacy/{uuid.uuid4().hex}",
        endpoint_url=endpoint.endpoint_url,
        region_name=endpoint.region_name,
    )


# ---------------------------------------------------------------- independent accounting


def _lines(store: ObjectStore, key: str) -> list[str]:
    return gzip.decompress(store.get_bytes(key)).decode("utf-8").splitlines()


def _snapshot(store: ObjectStore) -> Records:
    records: Records = {
        "landing": {k: _lines(store, k) for k in store.list_keys(PREFIXES["landing"])}
    }
    for zone in TABLE_ZONES:
        records[zone] = {k: read_parquet(store, k) for k in store.list_keys(PREFIXES[zone])}
    return records


def _mentions(line: str, user_id: str) -> bool:
    """Whether a raw line is the user's: its ``user_id``, or, unparseable, it names the id."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return f'"{user_id}"' in line
    if isinstance(record, dict) and isinstance(record.get("user_id"), str):
        return bool(record["user_id"] == user_id)
    return f'"{user_id}"' in line


def _masks(records: Records, user_id: str, pseudonym: str) -> dict[str, dict[str, list[bool]]]:
    """Per zone and object, which records belong to the user."""
    masks: dict[str, dict[str, list[bool]]] = {
        "landing": {k: [_mentions(x, user_id) for x in v] for k, v in records["landing"].items()},
        "quarantine": {
            k: [_mentions(raw, user_id) for raw in frame["raw"]]
            for k, frame in records["quarantine"].items()
        },
        "profiles": {
            k: (frame["user_id"] == user_id).tolist() for k, frame in records["profiles"].items()
        },
    }
    for zone in ("clean", "served", "shadow"):
        masks[zone] = {k: (f["user_id"] == pseudonym).tolist() for k, f in records[zone].items()}
    return masks


def _totals(masks: dict[str, dict[str, list[bool]]]) -> dict[str, int]:
    return {zone: sum(sum(m) for m in per_key.values()) for zone, per_key in masks.items()}


def _assert_only_the_user_removed(
    store: ObjectStore, before: Records, masks: dict[str, dict[str, list[bool]]]
) -> None:
    """Every object holds exactly its records of other users, in order; emptied ones are gone."""
    for key, lines in before["landing"].items():
        kept = [x for x, mine in zip(lines, masks["landing"][key], strict=True) if not mine]
        if kept:
            assert _lines(store, key) == kept, key
        else:
            assert not store.exists(key), key
    for zone in TABLE_ZONES:
        for key, frame in before[zone].items():
            expected = frame.loc[[not mine for mine in masks[zone][key]]].reset_index(drop=True)
            if expected.empty and not frame.empty:
                assert not store.exists(key), key
            else:
                pd.testing.assert_frame_equal(read_parquet(store, key), expected)
    assert set(store.list_keys(PREFIXES["landing"])) <= set(before["landing"])


def _assert_audited_without_raw_id(
    store: ObjectStore, audit_key: str, user_id: str, pseudonym: str
) -> dict[str, Any]:
    body = store.get_bytes(audit_key)
    entry = store.get_bytes(erased_key(pseudonym))
    assert audit_key.startswith(f"{PRIVACY_AUDIT_PREFIX}/")
    for data in (body, entry):
        assert user_id.encode() not in data
        assert pseudonym.encode() in data
    audit: dict[str, Any] = json.loads(body)
    assert audit["action"] == "erasure"
    assert audit["pseudonym"] == pseudonym
    assert pseudonym in erased_pseudonyms(store)
    return audit


def _pick_user(store: LocalObjectStore, pseudonymizer: Pseudonymizer) -> str:
    """A user with a malformed quarantined line naming them and events on the most days."""
    quarantine = pd.concat(
        [read_parquet(store, k) for k in store.list_keys(PREFIXES["quarantine"])]
    )
    malformed = quarantine.loc[quarantine["reason"] == "malformed_json", "raw"]
    named = {m.group(1) for raw in malformed if (m := re.search(r'"user_id": "(\w+)"', raw))}
    clean = pd.concat(
        [read_parquet(store, k).assign(key=k) for k in store.list_keys(PREFIXES["clean"])]
    )
    days = clean.groupby("user_id")["key"].nunique()
    return max(sorted(named), key=lambda u: int(days.get(pseudonymizer.pseudonymize(u), 0)))


def _app_open(event_id: str, user: str, day: dt.date, hour: int = 8) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "event_type": "app_open",
            "user_id": user,
            "ts": f"{day.isoformat()}T{hour:02d}:10:00.000Z",
        }
    )


def _gz(lines: list[str]) -> bytes:
    return gzip.compress(("\n".join(lines) + "\n").encode())


# ---------------------------------------------------------------- the tiny world


def test_erasure_removes_exactly_the_users_records_everywhere(
    world: LocalObjectStore, pseudonymizer: Pseudonymizer, tmp_path: Path
) -> None:
    user_id = _pick_user(world, pseudonymizer)
    pseudonym = pseudonymizer.pseudonymize(user_id)
    before = _snapshot(world)
    masks = _masks(before, user_id, pseudonym)
    expected = _totals(masks)
    # The user's clean rows are exactly those that came from the user's landed lines.
    clean_lineage = sum(
        _mentions(before["landing"][src][line - 1], user_id)
        for frame in before["clean"].values()
        for src, line in zip(frame["source_file"], frame["line_no"], strict=True)
    )
    assert clean_lineage == expected["clean"]
    assert sum(any(m) for m in masks["clean"].values()) >= 3  # events on several days
    assert expected["quarantine"] >= 1
    assert expected["profiles"] == 1
    profiled = pd.concat(before["profiles"].values())["user_id"]
    other = next(u for u in profiled if u != user_id)
    other_pseudonym = pseudonymizer.pseudonymize(other)

    online = SQLiteOnlineStore(tmp_path / "online.sqlite")
    as_of = pd.Timestamp(NOW)
    users = pd.DataFrame({"user_id": [pseudonym, other_pseudonym, "p_x"], "u_f": [1.0, 2.0, 3.0]})
    online.materialize("user", users, ("u_f",), as_of)
    online.materialize_records("history", {pseudonym: {"n": 3}, other_pseudonym: {"n": 1}}, as_of)
    online.materialize_records("push", {pseudonym: {"sent": 2}}, as_of)
    caps = SQLitePushCapStore(tmp_path / "caps.sqlite")
    sent = dt.datetime(2026, 11, 1, 18, 0, tzinfo=dt.UTC)
    caps.record_sends(
        [
            (pseudonym, "s1", sent),
            (pseudonym, "s2", sent - dt.timedelta(days=1)),
            (other_pseudonym, "s3", sent),
        ]
    )

    report = erase_user(
        world, pseudonymizer, user_id, online=online, caps=caps, requested_by="dpo", now=NOW
    )

    assert report.pseudonym == pseudonym
    assert {z: c.records_deleted for z, c in report.zones.items()} == expected | {
        "import_rejects": 0  # this world landed nothing through an import
    }
    assert report.records_deleted == sum(expected.values())
    assert (report.online_rows, report.push_records) == (3, 2)
    _assert_only_the_user_removed(world, before, masks)
    after = _totals(_masks(_snapshot(world), user_id, pseudonym))
    assert after == dict.fromkeys(expected, 0)
    # Online features and push caps: the user's rows are gone, the others stay.
    assert online.lookup("user", [pseudonym, other_pseudonym])["user_id"].tolist() == [
        other_pseudonym
    ]
    assert online.lookup_records("history", [pseudonym, other_pseudonym]) == {
        other_pseudonym: {"n": 1}
    }
    assert online.lookup_records("push", [pseudonym]) == {}
    assert caps.send_times(pseudonym, sent) == []
    assert caps.send_times(other_pseudonym, sent) == [sent.timestamp()]
    # The erasure list and the audit hold the pseudonym and the counts, never the raw id.
    audit = _assert_audited_without_raw_id(world, report.audit_key, user_id, pseudonym)
    assert audit["records_deleted"] == expected | {"import_rejects": 0}
    assert audit["requested_by"] == "dpo"
    assert (audit["online_rows"], audit["push_records"]) == (3, 2)
    assert audit["erased_at"] == NOW.isoformat()
    assert world.list_keys(f"{ERASED_PREFIX}/") == [erased_key(pseudonym)]


def test_ingestion_after_erasure_never_brings_the_user_back(
    world: LocalObjectStore, pseudonymizer: Pseudonymizer
) -> None:
    user_id = _pick_user(world, pseudonymizer)
    pseudonym = pseudonymizer.pseudonymize(user_id)
    clean = {k: read_parquet(world, k) for k in world.list_keys(PREFIXES["clean"])}
    day = next(layout.date_of_key(k) for k, f in clean.items() if (f["user_id"] == pseudonym).any())
    other = next(
        u
        for u in clean[layout.warehouse_key(layout.WAREHOUSE_EVENTS, day, "events")]["user_id"]
        if u != pseudonym
    )

    erase_user(world, pseudonymizer, user_id, now=NOW)
    rerun = ingest_day(world, day, pseudonymizer)

    assert rerun.balanced
    assert rerun.erased == 0  # the landed lines are gone already
    assert pseudonym not in set(rerun.events["user_id"])
    assert not rerun.quarantine["raw"].str.contains(f'"{user_id}"', regex=False).any()

    # A late batch from the user's device lands after the erasure.
    late_key = layout.landing_events_key(day, 23, "late")
    profiled = read_parquet(world, world.list_keys(PREFIXES["profiles"])[0])["user_id"]
    somebody = next(u for u in profiled if u != user_id)
    world.put_bytes(
        late_key,
        _gz(
            [
                _app_open("late-1", user_id, day, 23),
                _app_open("late-2", somebody, day, 23),
                _app_open("late-3", user_id, day, 23),
                # Invalid (no event type): it would be quarantined, raw id and all.
                json.dumps({"event_id": "late-4", "user_id": user_id, "ts": "bad"}),
            ]
        ),
    )
    late = ingest_day(world, day, pseudonymizer)
    write_ingested(world, day, late)

    assert late.erased == 3
    assert late.balanced
    assert late.read == rerun.read + 4
    assert late.accepted == rerun.accepted + 1
    assert late.quarantined == rerun.quarantined
    assert late.erased_sources == [late_key]
    purged = purge_erased_lines(world, late.erased_sources, pseudonymizer, erased_pseudonyms(world))
    assert purged.records_deleted == 3
    remaining = gzip.decompress(world.get_bytes(late_key)).decode()
    assert user_id not in remaining
    assert "late-2" in remaining
    assert "late-2" in set(late.events["event_id"])
    assert not {"late-1", "late-3"} & set(late.events["event_id"])
    stored = read_parquet(world, layout.warehouse_key(layout.WAREHOUSE_EVENTS, day, "events"))
    assert pseudonym not in set(stored["user_id"])
    assert other in set(stored["user_id"])


def test_training_inputs_exclude_an_erased_user_even_from_a_stale_partition(
    world: LocalObjectStore, pseudonymizer: Pseudonymizer
) -> None:
    user_id = _pick_user(world, pseudonymizer)
    pseudonym = pseudonymizer.pseudonymize(user_id)
    catalog = load_catalog(world)
    profiles = load_profiles(world, pseudonymizer)  # read before the erasure
    stale = {k: world.get_bytes(k) for k in world.list_keys(PREFIXES["clean"])}
    before = load_feature_inputs(world, catalog, profiles)
    assert pseudonym in set(before.events["user_id"])
    assert pseudonym in set(profiles["user_id"])

    erase_user(world, pseudonymizer, user_id, now=NOW)
    for key, data in stale.items():  # an ingestion that ran during the erasure
        world.put_bytes(key, data)
    inputs = load_feature_inputs(world, catalog, profiles)

    assert pseudonym not in set(inputs.events["user_id"])
    assert pseudonym not in set(inputs.profiles["user_id"])
    assert len(inputs.events) == int((before.events["user_id"] != pseudonym).sum()) > 0
    assert len(inputs.profiles) == len(before.profiles) - 1


# ---------------------------------------------------------------- a hand-written store


DAY = dt.date(2026, 10, 20)
KEY = layout.landing_events_key(DAY, 8, "b")
KEY_2 = layout.landing_events_key(DAY, 9, "b")


def _write_small_world(store: ObjectStore, pseudonymizer: Pseudonymizer) -> None:
    """Users ``usr_1`` (to erase), ``usr_10`` and ``usr_2``: events, quarantine, served rows."""
    profiles = pd.DataFrame(
        {"user_id": ["usr_1", "usr_10", "usr_2"], "region": ["uk", "us-east", "jp"]}
    )
    write_parquet(
        store, layout.landing_reference_key(layout.LANDING_USERS, DAY, "signups"), profiles
    )
    future = json.loads(_app_open("e5", "usr_1", DAY))
    future["ts"] = "2026-10-29T08:00:00.000Z"
    store.put_bytes(
        KEY,
        _gz(
            [
                _app_open("e1", "usr_1", DAY),
                _app_open("e2", "usr_10", DAY),
                '{"event_id": "e3", "user_id": "usr_1", "ts": "2026-10-',  # names the user
                '{"event_id": "e4", "user_id": "usr_10", "ts": "2026-10-',  # another user
                json.dumps(future),  # quarantined: from the future
                # Another user's record that mentions the id (quarantined: fields missing).
                json.dumps({"user_id": "usr_2", "payload": {"friend": "usr_1"}}),
            ]
        ),
    )
    store.put_bytes(KEY_2, _gz([_app_open("e6", "usr_1", DAY, 9)]))  # only the user
    write_ingested(store, DAY, ingest_day(store, DAY, pseudonymizer))
    served = pd.DataFrame(
        {
            "user_id": [pseudonymizer.pseudonymize(u) for u in ("usr_1", "usr_10", "usr_1")],
            "item_id": ["wk_1", "wk_2", "wk_3"],
        }
    )
    write_parquet(store, served_features_key(DAY.isoformat(), "s"), served)
    write_parquet(store, shadow_key(DAY.isoformat(), "s"), served)


def test_erasure_on_each_object_store(
    object_store: ObjectStore, pseudonymizer: Pseudonymizer
) -> None:
    _write_small_world(object_store, pseudonymizer)
    pseudonym = pseudonymizer.pseudonymize("usr_1")
    before = _snapshot(object_store)
    masks = _masks(before, "usr_1", pseudonym)

    report = erase_user(object_store, pseudonymizer, "usr_1", now=NOW)

    expected = {
        "landing": 4,
        "clean": 2,
        "quarantine": 2,
        "served": 2,
        "shadow": 2,
        "profiles": 1,
    }
    assert _totals(masks) == expected
    assert {z: c.records_deleted for z, c in report.zones.items()} == expected | {
        "import_rejects": 0  # this world landed nothing through an import
    }
    assert report.zones["landing"].objects_deleted == 1  # KEY_2 held only the user's line
    assert not object_store.exists(KEY_2)
    _assert_only_the_user_removed(object_store, before, masks)
    assert _lines(object_store, KEY) == [
        line
        for line, mine in zip(before["landing"][KEY], masks["landing"][KEY], strict=True)
        if not mine
    ]
    assert len(_lines(object_store, KEY)) == 3
    audit = _assert_audited_without_raw_id(object_store, report.audit_key, "usr_1", pseudonym)
    assert audit["records_deleted"] == expected | {"import_rejects": 0}


def test_erasing_twice_finds_nothing_the_second_time(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    _write_small_world(store, pseudonymizer)
    online = SQLiteOnlineStore(tmp_path / "online.sqlite")
    pseudonym = pseudonymizer.pseudonymize("usr_1")
    online.materialize_records("history", {pseudonym: {"n": 1}}, pd.Timestamp(NOW))
    caps = SQLitePushCapStore(tmp_path / "caps.sqlite")
    caps.record_sends([(pseudonym, "s1", NOW)])

    first = erase_user(store, pseudonymizer, "usr_1", online=online, caps=caps, now=NOW)
    after_first = {k: store.get_bytes(k) for k in store.list_keys() if not k.startswith("audit/")}
    second = erase_user(store, pseudonymizer, "usr_1", online=online, caps=caps)

    assert first.records_deleted == 13  # 11 plus the 2 shadow-log rows
    assert (first.online_rows, first.push_records) == (1, 1)
    assert second.records_deleted == 0
    assert (second.online_rows, second.push_records) == (0, 0)
    for counts in second.zones.values():
        assert (counts.objects_rewritten, counts.objects_deleted) == (0, 0)
    after_second = {k: store.get_bytes(k) for k in store.list_keys() if not k.startswith("audit/")}
    assert after_second.keys() == after_first.keys()
    assert {k: v for k, v in after_second.items() if not k.startswith(ERASED_PREFIX)} == {
        k: v for k, v in after_first.items() if not k.startswith(ERASED_PREFIX)
    }
    assert erased_pseudonyms(store) == {pseudonym}
    audits = store.list_keys(f"{PRIVACY_AUDIT_PREFIX}/")
    assert sorted(audits) == sorted([first.audit_key, second.audit_key])
    assert json.loads(store.get_bytes(second.audit_key))["records_deleted"] == dict.fromkeys(
        first.zones, 0
    )


def test_a_crash_part_way_leaves_an_audit_of_what_was_done_and_a_retry_finishes(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    _write_small_world(store, pseudonymizer)
    pseudonym = pseudonymizer.pseudonymize("usr_1")
    online = SQLiteOnlineStore(tmp_path / "online.sqlite")
    online.materialize_records("history", {pseudonym: {"n": 1}}, pd.Timestamp(NOW))
    caps = SQLitePushCapStore(tmp_path / "caps.sqlite")
    caps.record_sends([(pseudonym, "s1", NOW)])

    class Down(SQLitePushCapStore):
        def forget_user(self, user_id: str) -> int:
            raise OnlineStoreUnavailableError("push cap store went away")

    with pytest.raises(OnlineStoreUnavailableError, match="went away"):
        erase_user(
            store, pseudonymizer, "usr_1", online=online, caps=Down(tmp_path / "caps.sqlite")
        )
    (crashed_key,) = store.list_keys(f"{PRIVACY_AUDIT_PREFIX}/")
    crashed = json.loads(store.get_bytes(crashed_key))
    retried = erase_user(store, pseudonymizer, "usr_1", online=online, caps=caps, now=NOW)
    done = json.loads(store.get_bytes(retried.audit_key))

    assert crashed["status"] == "failed"
    assert crashed["steps_done"] == list(ERASURE_STEPS[: ERASURE_STEPS.index("push_caps")])
    assert crashed["error"] == "push_caps: OnlineStoreUnavailableError: push cap store went away"
    assert crashed["online_rows"] == 1
    assert sum(crashed["records_deleted"].values()) == 13
    assert (done["status"], done["steps_done"], done["error"]) == (
        "complete",
        list(ERASURE_STEPS),
        "",
    )
    assert (sum(done["records_deleted"].values()), done["online_rows"], done["push_records"]) == (
        0,
        0,
        1,
    )
    assert caps.counts(pseudonym, NOW) == (0, 0)


def test_registered_bundles_are_rewritten_last_and_a_failure_there_is_resumable(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    _write_small_world(store, pseudonymizer)
    asked: list[str] = []

    def registry_down(pseudonym: str) -> list[str]:
        asked.append(pseudonym)
        raise OSError("tracking server returned 503")

    def registry(pseudonym: str) -> list[str]:
        asked.append(pseudonym)
        return ["1", "3"]

    with pytest.raises(OSError, match="503"):
        erase_user(store, pseudonymizer, "usr_1", bundles=registry_down, now=NOW)
    (crashed_key,) = store.list_keys(f"{PRIVACY_AUDIT_PREFIX}/")
    crashed = json.loads(store.get_bytes(crashed_key))
    retried = erase_user(store, pseudonymizer, "usr_1", bundles=registry, now=NOW)
    done = json.loads(store.get_bytes(retried.audit_key))

    pseudonym = pseudonymizer.pseudonymize("usr_1")
    assert asked == [pseudonym, pseudonym]
    assert crashed["status"] == "failed"
    assert crashed["steps_done"] == list(ERASURE_STEPS[:-1])
    assert crashed["error"] == "registry_bundles: OSError: tracking server returned 503"
    assert (done["status"], done["bundles_rewritten"]) == ("complete", ["1", "3"])
    assert done["derived_values_gone_by"] == "2026-11-09T12:00:00+00:00"


@pytest.mark.parametrize("user_id", ["", "   ", " usr_1", "usr_1\n", "\t"])
def test_a_blank_or_padded_user_id_is_rejected_before_anything_is_written(
    tmp_path: Path, pseudonymizer: Pseudonymizer, user_id: str
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    _write_small_world(store, pseudonymizer)
    before = {k: store.get_bytes(k) for k in store.list_keys()}

    with pytest.raises(ValueError, match="user id"):
        erase_user(store, pseudonymizer, user_id, now=NOW)

    assert {k: store.get_bytes(k) for k in store.list_keys()} == before
    assert Counter(k.split("/")[0] for k in before)["privacy"] == 0
