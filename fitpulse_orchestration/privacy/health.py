"""Health fields of event payloads: they never leave the raw zone.

``workout_complete`` payloads carry what a watch measured (heart rate, calories, ...). The
landing zone keeps them as the app sent them (subject to retention and erasure); ingestion
removes them before anything is written to the clean warehouse, so feature tables, models,
MLflow and logs never see them. The platform's models do not use them.

Apps spell the same measurement many ways (``heartRate``, ``HR``, ``avg_hr``, ``calorie_burn``,
``blood_glucose``), so a key is matched by its words, not its spelling: split at camel case,
underscores, hyphens, dots and digits, lower-cased; it is health data when its joined words
are a ``HEALTH_FIELDS`` name or any word is a ``HEALTH_WORDS`` word (``is_health_field``).
"""

from __future__ import annotations

import re
from typing import Any, Final

HEALTH_FIELDS: Final = frozenset(
    {
        "avg_heart_rate",
        "max_heart_rate",
        "min_heart_rate",
        "resting_heart_rate",
        "heart_rate",
        "heart_rate_zones",
        "hrv",
        "calories",
        "active_calories",
        "weight_kg",
        "body_weight",
        "body_fat",
        "bmi",
        "vo2max",
        "spo2",
        "blood_pressure",
        "sleep_minutes",
        "cycle_day",
    }
)
"""Payload keys treated as health data (matched by their joined words, any spelling).

Plain ``weight`` is not one: the import path's payload ``weight`` is an interaction's strength
(a rating), which training uses."""

HEALTH_WORDS: Final = frozenset(
    {
        # heart
        "heart", "hr", "hrv", "bpm", "pulse", "ecg", "ekg",
        # energy
        "calorie", "calories", "kcal", "kilocalories",
        # blood and breath
        "glucose", "insulin", "cholesterol", "spo2", "oxygen", "systolic", "diastolic",
        "vo2", "vo2max", "respiration", "respiratory",
        # body
        "bmi", "bodyfat", "bodyweight", "waist",
        # sleep and cycle
        "sleep", "menstrual", "menstruation", "ovulation", "pregnancy",
        # wording of medical records
        "medication", "diagnosis", "symptom", "symptoms",
    }
)  # fmt: skip
"""Words that make a key health data wherever they appear in it (``avg_hr``, ``heartRate``)."""

_CAMEL: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS: Final = re.compile(r"[^A-Za-z0-9]+|(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])")


def key_words(key: str) -> list[str]:
    """The lower-case words of a payload key: ``avgHR`` -> ``["avg", "hr"]``."""
    spaced = _CAMEL.sub("_", key)
    return [w.lower() for w in _SEPARATORS.split(spaced) if w]


def is_health_field(key: str) -> bool:
    """Whether a payload key names health data, however it is spelled."""
    words = key_words(str(key))
    if not words:
        return False
    joined = "".join(words)
    # Words with their digits kept on (``spo2``, ``vo2``) as well as split off.
    alnum = [w.lower() for w in re.split(r"[^A-Za-z0-9]+", _CAMEL.sub("_", str(key))) if w]
    return (
        joined in _JOINED_FIELDS
        or joined in HEALTH_WORDS
        or any(w in HEALTH_WORDS for w in (*words, *alnum))
    )


_JOINED_FIELDS: Final = frozenset(name.replace("_", "") for name in HEALTH_FIELDS)


def strip_health_fields(payload: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """``payload`` without its health fields (at any depth, lists included), and the count."""
    kept, removed = _strip(payload)
    return kept, removed


def _strip(value: Any) -> tuple[Any, int]:
    if isinstance(value, dict):
        removed = 0
        kept: dict[str, Any] = {}
        for key, inner in value.items():
            if is_health_field(str(key)):
                removed += 1
                continue
            kept[key], count = _strip(inner)
            removed += count
        return kept, removed
    if isinstance(value, list):
        pairs = [_strip(inner) for inner in value]
        return [v for v, _ in pairs], sum(c for _, c in pairs)
    return value, 0
