"""Health fields of event payloads: they never leave the raw zone.

``workout_complete`` payloads carry what a watch measured (heart rate, calories, ...). The
landing zone keeps them as the app sent them (subject to retention and erasure); ingestion
removes them before anything is written to the clean warehouse, so feature tables, models,
MLflow and logs never see them. The platform's models do not use them.
"""

from __future__ import annotations

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
"""Payload keys treated as health data (matched case-insensitively).

Plain ``weight`` is not one: the import path's payload ``weight`` is an interaction's strength
(a rating), which training uses."""


def strip_health_fields(payload: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """``payload`` without its health fields (at any depth, lists included), and the count."""
    kept, removed = _strip(payload)
    return kept, removed


def _strip(value: Any) -> tuple[Any, int]:
    if isinstance(value, dict):
        removed = 0
        kept: dict[str, Any] = {}
        for key, inner in value.items():
            if str(key).lower() in HEALTH_FIELDS:
                removed += 1
                continue
            kept[key], count = _strip(inner)
            removed += count
        return kept, removed
    if isinstance(value, list):
        pairs = [_strip(inner) for inner in value]
        return [v for v, _ in pairs], sum(c for _, c in pairs)
    return value, 0
