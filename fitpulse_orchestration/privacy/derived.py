"""Derived asset values of erased members expire by a deadline, and a second pass proves it.

An erasure scrubs the data (``privacy.erasure``), but the values computed from it before the
erasure (the training snapshot, feature tables, fitted models, evaluation and monitoring
values, all under ``assets/``) still hold the member's pseudonym. Every training run rebuilds
them from the scrubbed warehouse, which excludes erased members, so on a platform that trains
daily they are gone by the next day. The deadline does not depend on that: once an erasure is
``DERIVED_VALUE_DAYS`` old, ``expire_derived_values`` (the daily ``retention_job``) deletes every
asset value that still holds its pseudonym, and ``derived_values_holding`` is the independent
read-only pass its check runs. A deleted value is rebuilt by the next run of its job; until
then a step that needs it fails with the missing key, never with the member's data.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fitpulse_orchestration import layout
from fitpulse_orchestration.privacy.erasure import DERIVED_VALUE_DAYS
from fitpulse_orchestration.privacy.suppression import ERASED_PREFIX
from fitpulse_orchestration.privacy.traces import bytes_texts
from fitpulse_orchestration.storage import ObjectStore


@dataclass
class ExpiryReport:
    """One expiry pass: which erasures were due and which values went."""

    as_of: str
    deadline_days: int
    overdue: int
    """Erased members whose deadline has passed."""
    values_scanned: int = 0
    expired: dict[str, int] = field(default_factory=dict)
    """Deleted asset value key -> how many overdue members it held."""

    def summary(self) -> dict[str, Any]:
        """Counts and keys (no pseudonym)."""
        return {
            "as_of": self.as_of,
            "deadline_days": self.deadline_days,
            "overdue_members": self.overdue,
            "values_scanned": self.values_scanned,
            "values_expired": sorted(self.expired),
        }


def overdue_erasures(
    store: ObjectStore, as_of: dt.datetime, days: int = DERIVED_VALUE_DAYS
) -> frozenset[str]:
    """Pseudonyms erased at least ``days`` before ``as_of`` (from the erasure list).

    An entry without a readable time counts as overdue: the deadline never waits on a guess.
    """
    due = as_of - dt.timedelta(days=days)
    out = set()
    for key in store.iter_keys(f"{ERASED_PREFIX}/", ".json"):
        pseudonym = key[len(ERASED_PREFIX) + 1 : -len(".json")]
        try:
            erased_at = dt.datetime.fromisoformat(json.loads(store.get_bytes(key))["erased_at"])
            if erased_at.tzinfo is None:
                erased_at = erased_at.replace(tzinfo=dt.UTC)
        except (ValueError, KeyError, TypeError):
            out.add(pseudonym)
            continue
        if erased_at <= due:
            out.add(pseudonym)
    return frozenset(out)


def derived_values_holding(
    store: ObjectStore, pseudonyms: Iterable[str]
) -> tuple[dict[str, int], int]:
    """``({asset value key: how many of pseudonyms it holds}, values scanned)``."""
    wanted = [p for p in pseudonyms if p]
    holding: dict[str, int] = {}
    keys = store.list_keys(f"{layout.ASSETS}/")
    if not wanted:
        return holding, len(keys)
    for key in keys:
        texts = bytes_texts(store.get_bytes(key), key)
        hits = sum(1 for p in wanted if any(p in text for text in texts))
        if hits:
            holding[key] = hits
    return holding, len(keys)


def expire_derived_values(
    store: ObjectStore, as_of: dt.datetime, days: int = DERIVED_VALUE_DAYS
) -> ExpiryReport:
    """Delete every asset value that holds a member erased at least ``days`` ago."""
    overdue = overdue_erasures(store, as_of, days)
    report = ExpiryReport(as_of.isoformat(), days, len(overdue))
    holding, report.values_scanned = derived_values_holding(store, overdue)
    for key, hits in holding.items():
        store.delete(key)
        report.expired[key] = hits
    return report
