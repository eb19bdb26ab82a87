from __future__ import annotations

import datetime as dt

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.landing_watch import changed_days, landing_fingerprints

D1 = dt.date(2026, 10, 19)
D2 = dt.date(2026, 10, 20)
D3 = dt.date(2026, 10, 21)


def _keys(*day_hours: tuple[dt.date, int]) -> dict[str, str]:
    """Landing keys of the given days and hours, each at version ``v1``."""
    return {
        layout.landing_events_key(day, hour, f"batch-{hour:02d}"): "v1" for day, hour in day_hours
    }


def test_fingerprints_have_one_entry_per_day_in_date_order() -> None:
    keys = _keys((D2, 1), (D1, 3), (D1, 0))

    prints = landing_fingerprints(keys)

    assert list(prints) == ["2026-10-19", "2026-10-20"]
    assert all(len(fp) == 16 for fp in prints.values())
    assert prints["2026-10-19"] != prints["2026-10-20"]


def test_fingerprint_ignores_key_order() -> None:
    keys = _keys((D1, 0), (D1, 1), (D2, 5))

    assert landing_fingerprints(keys) == landing_fingerprints(dict(reversed(keys.items())))


def test_fingerprint_changes_only_for_the_day_that_gains_a_batch() -> None:
    before = landing_fingerprints(_keys((D1, 0), (D2, 0)))
    after = landing_fingerprints(_keys((D1, 0), (D2, 0), (D2, 7)))

    assert after["2026-10-19"] == before["2026-10-19"]
    assert after["2026-10-20"] != before["2026-10-20"]


def test_fingerprint_changes_for_a_batch_rewritten_under_the_same_key() -> None:
    before = _keys((D1, 0), (D2, 0))
    after = {**before, layout.landing_events_key(D2, 0, "batch-00"): "v2"}

    assert landing_fingerprints(after)["2026-10-19"] == landing_fingerprints(before)["2026-10-19"]
    assert landing_fingerprints(after)["2026-10-20"] != landing_fingerprints(before)["2026-10-20"]


def test_fingerprints_of_no_keys_are_empty() -> None:
    assert landing_fingerprints({}) == {}


def test_changed_days_returns_new_and_changed_days_oldest_first() -> None:
    previous = landing_fingerprints(_keys((D1, 0), (D2, 0)))
    current = landing_fingerprints(_keys((D3, 2), (D2, 0), (D2, 9), (D1, 0)))

    changed = changed_days(current, previous)

    assert changed == [("2026-10-20", current["2026-10-20"]), ("2026-10-21", current["2026-10-21"])]


def test_changed_days_is_empty_when_nothing_changed_and_everything_on_first_look() -> None:
    current = landing_fingerprints(_keys((D2, 0), (D1, 4)))

    assert changed_days(current, dict(current)) == []
    assert changed_days(current, {}) == sorted(current.items())
    assert [day for day, _ in changed_days(current, {})] == ["2026-10-19", "2026-10-20"]


def test_keys_without_a_valid_date_belong_to_no_day() -> None:
    stray = [
        f"{layout.LANDING_EVENTS}/notes.txt",
        f"{layout.LANDING_EVENTS}/date=bogus/batch.jsonl.gz",
        f"{layout.LANDING_EVENTS}/date=1997-13-40/batch.jsonl.gz",
    ]
    keys = {**_keys((D1, 0)), **dict.fromkeys(stray, "v1")}

    assert list(landing_fingerprints(keys)) == ["2026-10-19"]
    assert landing_fingerprints(keys) == landing_fingerprints(_keys((D1, 0)))
    assert layout.landed_dates(list(keys)) == [D1]
    assert layout.undated_keys(list(keys)) == sorted(stray)
