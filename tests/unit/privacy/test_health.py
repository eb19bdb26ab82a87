from __future__ import annotations

import copy
import datetime as dt
import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.ingest import ingest_batches, ingest_day, write_ingested
from fitpulse_orchestration.privacy.health import (
    HEALTH_FIELDS,
    is_health_field,
    key_words,
    strip_health_fields,
)
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.storage import LocalObjectStore, read_parquet

if TYPE_CHECKING:
    from conftest import TinyWorld

DAY = dt.date(2026, 10, 20)
KEY = layout.landing_events_key(DAY, 9, "watch")


def _health_keys(value: Any) -> list[str]:
    """Every key of ``value`` (dicts and lists, at any depth) that names a health field."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if str(key).lower() in HEALTH_FIELDS:
                found.append(str(key))
            found += _health_keys(inner)
    elif isinstance(value, list):
        for inner in value:
            found += _health_keys(inner)
    return found


def _workout(event_id: str, payload: dict[str, Any], user: str = "usr_0000001") -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "event_type": "workout_complete",
            "user_id": user,
            "ts": "2026-10-20T09:15:00.000Z",
            "item_id": "wk_7",
            "payload": payload,
        }
    )


def test_health_fields_are_lower_case_names() -> None:
    assert HEALTH_FIELDS
    assert all(name == name.lower() for name in HEALTH_FIELDS)
    assert {"avg_heart_rate", "calories", "hrv", "spo2"} <= HEALTH_FIELDS


def test_strip_removes_nested_fields_case_insensitively_and_counts_them() -> None:
    payload = {
        "duration_s": 1800,
        "avg_heart_rate": 141,
        "Calories": 320,
        "HEART_RATE_ZONES": {"z1": 300, "z2": 900},
        "device": {"model": "band-3", "HRV": 48, "sensors": {"SpO2": 97, "firmware": "1.2"}},
        "source": "watch",
    }
    original = copy.deepcopy(payload)

    kept, removed = strip_health_fields(payload)

    assert kept == {
        "duration_s": 1800,
        "device": {"model": "band-3", "sensors": {"firmware": "1.2"}},
        "source": "watch",
    }
    # A removed object counts once, whatever it held.
    assert removed == 5
    assert payload == original


def test_strip_keeps_a_payload_without_health_fields() -> None:
    payload = {"seconds": 42, "nested": {"position": 3}, "tags": ["a", "b"]}

    assert strip_health_fields(payload) == (payload, 0)
    assert strip_health_fields({}) == ({}, 0)


def test_strip_removes_health_fields_inside_lists() -> None:
    payload = {"laps": [{"split_s": 300, "avg_heart_rate": 150}, {"split_s": 310, "hrv": 40}]}

    kept, removed = strip_health_fields(payload)

    assert kept == {"laps": [{"split_s": 300}, {"split_s": 310}]}
    assert removed == 2


def test_ingest_removes_health_fields_from_clean_payloads_only(
    tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    lines = [
        _workout("e1", {"duration_s": 1800, "avg_heart_rate": 141, "calories": 320}),
        _workout("e2", {"duration_s": 900, "Max_Heart_Rate": 170, "watch": {"vo2max": 51}}),
        _workout("e3", {"duration_s": 600}),
        # A re-sent copy: a duplicate, never written, so its fields are not counted.
        _workout("e1", {"duration_s": 1800, "avg_heart_rate": 141, "calories": 320}),
        # A record from the future is quarantined verbatim, health fields included.
        json.dumps(
            {
                "event_id": "e4",
                "event_type": "workout_complete",
                "user_id": "usr_0000002",
                "ts": "2026-10-27T09:15:00.000Z",
                "item_id": "wk_7",
                "payload": {"duration_s": 100, "calories": 12},
            }
        ),
    ]
    landed = gzip.compress(("\n".join(lines) + "\n").encode())
    store.put_bytes(KEY, landed)

    direct = ingest_batches([(KEY, landed)], DAY, pseudonymizer)
    result = ingest_day(store, DAY, pseudonymizer)
    write_ingested(store, DAY, result)

    for res in (direct, result):
        assert res.balanced
        assert (res.accepted, res.duplicates, res.quarantined) == (3, 1, 1)
        assert res.health_fields_removed == 4
        payloads = dict(zip(res.events["event_id"], res.events["payload"], strict=True))
        assert {k: json.loads(v) for k, v in payloads.items()} == {
            "e1": {"duration_s": 1800},
            "e2": {"duration_s": 900, "watch": {}},
            "e3": {"duration_s": 600},
        }
    clean = read_parquet(store, layout.warehouse_key(layout.WAREHOUSE_EVENTS, DAY, "events"))
    assert [_health_keys(json.loads(p)) for p in clean["payload"]] == [[], [], []]
    # The landing zone keeps what the app sent, byte for byte.
    assert store.get_bytes(KEY) == landed
    text = gzip.decompress(store.get_bytes(KEY)).decode()
    assert text.count("avg_heart_rate") == 2
    assert "Max_Heart_Rate" in text
    assert "vo2max" in text
    quarantine = read_parquet(
        store, layout.warehouse_key(layout.WAREHOUSE_QUARANTINE, DAY, "quarantine")
    )
    assert quarantine["reason"].tolist() == ["future_timestamp:ts"]
    assert '"calories": 12' in quarantine["raw"].iloc[0]


def test_tiny_world_clean_events_carry_no_health_field(
    tiny_world: TinyWorld, pseudonymizer: Pseudonymizer
) -> None:
    store = tiny_world.store
    day = tiny_world.summary.landed_days[3]
    landing = {
        key: gzip.decompress(store.get_bytes(key)).decode().splitlines()
        for key in store.list_keys(layout.landing_events_prefix(day))
    }

    result = ingest_day(store, day, pseudonymizer)

    # Independently: the health keys of the landed lines that became clean events.
    expected = 0
    for source, line_no in zip(result.events["source_file"], result.events["line_no"], strict=True):
        expected += len(_health_keys(json.loads(landing[source][line_no - 1]).get("payload")))
    landed_workouts = [
        line for lines in landing.values() for line in lines if "avg_heart_rate" in line
    ]
    assert landed_workouts
    assert expected > 0
    assert result.health_fields_removed == expected
    for key in store.list_keys(f"{layout.WAREHOUSE_EVENTS}/"):
        payloads = read_parquet(store, key)["payload"].dropna()
        assert not [p for p in payloads if _health_keys(json.loads(p))], key


SPELLINGS = [
    # the spellings that reached the clean warehouse before (issue 20)
    "heartRate", "HR", "avg_hr", "blood_glucose", "calorie_burn",
    # more of each: camel, snake, kebab, upper, abbreviations, units
    "avgHR", "restingHR", "HeartRateBPM", "heart-rate", "HEART_RATE", "hrv_ms", "pulse",
    "Calories", "activeCalories", "kcal", "calorieBurn", "glucose_mg_dl", "bloodPressure",
    "systolic", "SpO2", "spo2_pct", "vo2Max", "bodyFat", "body-fat", "weightKg", "weight_kg",
    "BMI", "sleepMinutes", "cycle_day", "menstrualPhase", "ecg_trace",
]  # fmt: skip
NOT_HEALTH = [
    "weight", "duration_s", "duration", "action", "propensity", "source", "variant",
    "model_version", "known_user", "experiment", "fallback", "hour", "note", "item_type",
    "platform", "trial_period", "three", "x",
]  # fmt: skip


@pytest.mark.parametrize("key", SPELLINGS)
def test_every_spelling_of_a_health_field_is_caught(key: str) -> None:
    assert is_health_field(key), key_words(key)
    assert strip_health_fields({key: 1, "duration_s": 60}) == ({"duration_s": 60}, 1)


@pytest.mark.parametrize("key", NOT_HEALTH)
def test_fields_the_platform_reads_are_kept(key: str) -> None:
    assert not is_health_field(key), key_words(key)


def test_key_words_split_camel_snake_kebab_and_digits() -> None:
    assert key_words("avgHR") == ["avg", "hr"]
    assert key_words("HeartRateBPM") == ["heart", "rate", "bpm"]
    assert key_words("glucose_mg-dl") == ["glucose", "mg", "dl"]
    assert key_words("spo2Pct") == ["spo", "2", "pct"]
    assert key_words("") == []
