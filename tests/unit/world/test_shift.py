from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.schema import ENGAGEMENT_TYPES
from fitpulse_orchestration.features.point_in_time import CATEGORY_CODES
from fitpulse_orchestration.storage import LocalObjectStore, ObjectStore
from fitpulse_orchestration.storage.tables import read_parquet
from fitpulse_orchestration.world import vocab
from fitpulse_orchestration.world.generator import generate_world
from fitpulse_orchestration.world.params import ShiftParams, WorldParams, WorldSummary, world_params

SHIFT = ShiftParams()


@dataclasses.dataclass(frozen=True)
class Landed:
    store: ObjectStore
    summary: WorldSummary

    @property
    def shift_start(self) -> pd.Timestamp:
        return pd.Timestamp(self.summary.shift_summary["start_date"], tz="UTC")


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory) -> Landed:
    store = LocalObjectStore(tmp_path_factory.mktemp("shifted"))
    return Landed(store, generate_world(world_params("tiny", shift=SHIFT), store))


def _reference(store: ObjectStore, prefix: str) -> pd.DataFrame:
    """Every landed catalog or profile file, with the date it landed on."""
    frames = [
        read_parquet(store, key).assign(landed=layout.date_of_key(key))
        for key in store.list_keys(f"{prefix}/")
    ]
    return pd.concat(frames, ignore_index=True)


def _landed_records(store: ObjectStore) -> pd.DataFrame:
    """Parseable, well-typed landed event records (injected bad ones dropped)."""
    records = []
    for key in store.list_keys(f"{layout.LANDING_EVENTS}/"):
        for line in gzip.decompress(store.get_bytes(key)).decode().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec.get("ts"), str) and isinstance(rec.get("user_id"), str):
                records.append(rec)
    frame = pd.DataFrame.from_records(records).drop_duplicates("event_id")
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def test_shift_world_reports_what_it_injected(shifted: Landed) -> None:
    shift = shifted.summary.shift_summary
    params = shifted.summary.params

    assert shift["start_date"] == params.shift_start == dt.date(2026, 10, 29)
    assert shift["days"] == SHIFT.days
    assert shift["trending_category"] == vocab.TRENDING_CATEGORY
    assert shift["shift_users"] == SHIFT.n_new_users(params.n_users) == 120
    assert shift["trending_items"] == 6 * SHIFT.days
    assert shifted.summary.n_users == params.n_users + shift["shift_users"]
    assert shift["shift_beginner_share"] > 0.7


def test_trending_items_are_published_only_during_the_shift(shifted: Landed) -> None:
    landed = _reference(shifted.store, layout.LANDING_CATALOG)
    # Status updates re-land an item's row; each item is published exactly once.
    published = landed[landed["status"] == "published"]
    assert published["item_id"].is_unique
    catalog = landed.drop_duplicates("item_id", keep="first")
    trending = catalog[catalog["category"] == vocab.TRENDING_CATEGORY]

    assert len(trending) == shifted.summary.shift_summary["trending_items"]
    assert (trending["published_at"] >= shifted.shift_start).all()
    assert (trending["landed"] >= shifted.summary.params.shift_start).all()
    assert set(catalog["category"]) == set(vocab.ALL_CATEGORIES)
    assert trending["difficulty"].isin(["beginner", "intermediate"]).mean() > 0.75
    assert trending["intensity"].isin(["low", "medium"]).mean() > 0.75


def test_sign_ups_during_the_shift_are_mostly_beginners(shifted: Landed) -> None:
    users = _reference(shifted.store, layout.LANDING_USERS)
    signups = users[users["signup_at"] >= pd.Timestamp(shifted.summary.params.start_date, tz="UTC")]
    during = signups["signup_at"] >= shifted.shift_start
    beginner = signups["fitness_level"] == "beginner"

    assert users["user_id"].is_unique
    per_day_before = (~during).sum() / (shifted.summary.params.days - SHIFT.days)
    assert during.sum() / SHIFT.days > 3 * per_day_before
    assert beginner[during].mean() > 0.7
    assert beginner[during].mean() > beginner[~during].mean() + 0.3


def test_trending_engagement_happens_only_in_the_shift_and_is_substantial(
    shifted: Landed,
) -> None:
    catalog = _reference(shifted.store, layout.LANDING_CATALOG)
    trending_ids = set(catalog.loc[catalog["category"] == vocab.TRENDING_CATEGORY, "item_id"])
    events = _landed_records(shifted.store)
    engaged = events[events["event_type"].isin(ENGAGEMENT_TYPES)]
    on_trending = engaged["item_id"].isin(trending_ids)
    in_shift = engaged["ts"] >= shifted.shift_start

    assert not on_trending[~in_shift].any()
    assert on_trending[in_shift].mean() > 0.25
    assert on_trending[in_shift].mean() == pytest.approx(
        shifted.summary.shift_summary["trending_engagement_share"], abs=0.05
    )


def test_before_the_shift_the_world_behaves_like_the_base_world(tmp_path: Path) -> None:
    # Without bad records every landed line is a valid event; arrival delays still differ.
    base = world_params("tiny", bad_record_rate=0.0)
    plain = LocalObjectStore(tmp_path / "plain")
    generate_world(base, plain)
    shifted = LocalObjectStore(tmp_path / "shifted")
    start = generate_world(dataclasses.replace(base, shift=SHIFT), shifted).params.shift_start
    assert start is not None

    for prefix in (layout.LANDING_CATALOG, layout.LANDING_USERS):
        before = [k for k in plain.list_keys(f"{prefix}/") if layout.date_of_key(k) < start]
        assert before
        assert all(plain.get_bytes(key) == shifted.get_bytes(key) for key in before)
    cutoff = pd.Timestamp(start, tz="UTC")
    a, b = _landed_records(plain), _landed_records(shifted)
    a = a[a["ts"] < cutoff].sort_values("event_id").reset_index(drop=True)
    b = b[b["ts"] < cutoff].sort_values("event_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_no_shift_is_the_default_world(tmp_path: Path) -> None:
    default = generate_world(world_params("tiny"), LocalObjectStore(tmp_path / "a"))
    explicit = generate_world(world_params("tiny", shift=None), LocalObjectStore(tmp_path / "b"))

    assert default == explicit
    assert default.shift_summary == {}
    assert default.params.shift_start is None
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.*"))
    assert files_a == files_b
    assert all(
        (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a
    )


def test_shift_params_resolve_their_defaults() -> None:
    assert SHIFT.n_new_users(300) == 120
    assert ShiftParams(new_users=7).n_new_users(300) == 7
    assert SHIFT.n_trending_items_per_day(6) == 6
    assert SHIFT.n_trending_items_per_day(1) == 3
    assert ShiftParams(trending_items_per_day=0).n_trending_items_per_day(6) == 0
    assert SHIFT.start_date(dt.date(2026, 1, 4)) == dt.date(2026, 1, 1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"days": 0}, "days must be at least 1"),
        ({"new_users": -1}, "new_users"),
        ({"beginner_share": 1.01}, "beginner_share"),
        ({"beginner_share": -0.01}, "beginner_share"),
        ({"trending_items_per_day": -1}, "trending_items_per_day"),
        ({"trending_taste": -0.5}, "trending_taste"),
        ({"trending_taste": float("inf")}, "trending_taste"),
        ({"trending_taste": float("nan")}, "trending_taste"),
    ],
)
def test_shift_params_reject_bad_values(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShiftParams(**fields)


def test_shift_must_be_shorter_than_the_world() -> None:
    fields = {"n_users": 10, "n_items": 20, "new_items_per_day": 1, "days": 4}

    assert WorldParams(**fields, shift=ShiftParams(days=3)).shift_start == dt.date(2026, 10, 30)
    with pytest.raises(ValueError, match="shift days must be fewer"):
        WorldParams(**fields, shift=ShiftParams(days=4))
    with pytest.raises(ValueError, match="shift days must be fewer"):
        world_params("tiny", shift=ShiftParams(days=14))


def test_feature_category_codes_keep_base_codes_and_know_the_trending_category() -> None:
    assert CATEGORY_CODES == vocab.ALL_CATEGORIES
    assert CATEGORY_CODES[: len(vocab.CATEGORIES)] == vocab.CATEGORIES
