from __future__ import annotations

import datetime as dt
import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.ingest import ingest_day
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.storage import LocalObjectStore, ObjectStore, read_parquet
from fitpulse_orchestration.world.generator import generate_world
from fitpulse_orchestration.world.params import world_params
from fitpulse_orchestration.world.respond import (
    WorldLatent,
    load_latent,
    simulate_feed_responses,
    write_landing_events,
)

SERVED_AT = pd.Timestamp("2026-11-02T09:00:00", tz="UTC")
FOLLOW_UPS = {"article_read", "video_watch", "workout_start", "workout_complete"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ObjectStore:
    store = LocalObjectStore(tmp_path_factory.mktemp("respond_world"))
    generate_world(world_params("tiny"), store)
    return store


@pytest.fixture(scope="module")
def latent(world: ObjectStore) -> WorldLatent:
    return load_latent(world)


def _landed_impressions(store: ObjectStore, days: list[dt.date]) -> pd.DataFrame:
    """Well-formed impressions that landed on ``days`` (injected bad records dropped)."""
    rows = []
    keys = [key for day in days for key in store.list_keys(layout.landing_events_prefix(day))]
    for key in keys:
        for line in gzip.decompress(store.get_bytes(key)).decode().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            fields = ("user_id", "item_id", "request_id", "ts")
            if (
                rec.get("event_type") == "impression"
                and all(isinstance(rec.get(f), str) for f in fields)
                and isinstance(rec.get("position"), int)
            ):
                rows.append({f: rec.get(f) for f in (*fields, "position", "platform")})
    frame = pd.DataFrame(rows).drop_duplicates(["request_id", "position"], ignore_index=True)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def _ranked_feeds(latent: WorldLatent, best: bool, n_slots: int = 10) -> pd.DataFrame:
    """One request per user showing its ``n_slots`` highest (or lowest) affinity items."""
    n_users, n_items = len(latent.user_ids), len(latent.item_ids)
    aff = latent.affinity(np.arange(n_users)[:, None], np.arange(n_items)[None, :])
    order = np.argsort(-aff if best else aff, axis=1, kind="stable")[:, :n_slots]
    label = "best" if best else "worst"
    return pd.DataFrame(
        {
            "request_id": [f"{label}-{u}" for u in range(n_users) for _ in range(n_slots)],
            "user_id": np.repeat(latent.user_ids, n_slots),
            "item_id": latent.item_ids[order.ravel()],
            "position": np.tile(np.arange(n_slots), n_users),
            "ts": SERVED_AT,
            "platform": None,
        }
    )


@pytest.fixture(scope="module")
def served(world: ObjectStore) -> pd.DataFrame:
    """Last days' impressions of 50 users, as the online service would have logged them."""
    days = [dt.date(2026, 10, 30), dt.date(2026, 10, 31), dt.date(2026, 11, 1)]
    impressions = _landed_impressions(world, days)
    users = sorted(impressions["user_id"].unique())[:50]
    assert len(users) == 50
    return impressions[impressions["user_id"].isin(users)].reset_index(drop=True)


def test_latent_covers_every_landed_item_and_user(world: ObjectStore, latent: WorldLatent) -> None:
    catalog = pd.concat(
        [read_parquet(world, k) for k in world.list_keys(f"{layout.LANDING_CATALOG}/")]
    )
    profiles = pd.concat(
        [read_parquet(world, k) for k in world.list_keys(f"{layout.LANDING_USERS}/")]
    )

    assert set(catalog["item_id"]) == set(latent.item_ids)
    assert set(profiles["user_id"]) == set(latent.user_ids)
    assert latent.taste_scale == latent.user_cat_taste.shape[1]


def test_same_seed_gives_same_events_whatever_the_row_order(
    latent: WorldLatent, served: pd.DataFrame
) -> None:
    first = simulate_feed_responses(latent, served, seed=3)
    shuffled = served.sample(frac=1.0, random_state=0)
    again = simulate_feed_responses(latent, shuffled, seed=3)
    other = simulate_feed_responses(latent, served, seed=4)

    assert first.events
    assert first.events == again.events
    assert first.events != other.events


def test_clicks_are_on_exposed_items_and_carry_their_request_id(
    latent: WorldLatent, served: pd.DataFrame
) -> None:
    batch = simulate_feed_responses(latent, served, seed=3)
    exposed = set(zip(served["request_id"], served["user_id"], served["item_id"], strict=True))
    engaged = [e for e in batch.events if e["event_type"] != "app_open"]
    types = Counter(e["event_type"] for e in engaged)

    assert types["click"] > 0
    assert set(types) <= {"click"} | FOLLOW_UPS
    assert all((e["request_id"], e["user_id"], e["item_id"]) in exposed for e in engaged)
    clicked = {(e["request_id"], e["item_id"]) for e in engaged if e["event_type"] == "click"}
    assert all(
        (e["request_id"], e["item_id"]) in clicked for e in engaged if e["event_type"] != "click"
    )
    assert len({e["event_id"] for e in batch.events}) == len(batch.events)
    assert (batch.unknown_users, batch.unknown_items) == (0, 0)


def test_returns_come_after_the_last_exposure_within_the_horizon(
    latent: WorldLatent, served: pd.DataFrame
) -> None:
    batch = simulate_feed_responses(latent, served, seed=3, horizon_days=2)
    opens = [e for e in batch.events if e["event_type"] == "app_open"]
    last_day = served.groupby("user_id")["ts"].max().dt.normalize()

    assert opens
    assert len({e["user_id"] for e in opens}) == len(opens)
    for event in opens:
        ts = pd.Timestamp(event["ts"])
        days_after = (ts.normalize() - last_day[event["user_id"]]).days
        assert 1 <= days_after <= 2
        assert "item_id" not in event
        assert "request_id" not in event


def test_highest_affinity_feeds_get_more_clicks_and_starts(latent: WorldLatent) -> None:
    best = simulate_feed_responses(latent, _ranked_feeds(latent, best=True), seed=11)
    worst = simulate_feed_responses(latent, _ranked_feeds(latent, best=False), seed=11)
    best_types = Counter(e["event_type"] for e in best.events)
    worst_types = Counter(e["event_type"] for e in worst.events)
    starts = ("workout_start", "article_read", "video_watch")

    assert best_types["click"] > 100
    assert best_types["click"] > 5 * max(worst_types["click"], 1)
    assert sum(best_types[t] for t in starts) > 5 * max(sum(worst_types[t] for t in starts), 1)


def test_consuming_more_brings_more_users_back(latent: WorldLatent) -> None:
    # Most users are dormant, so the return effect is small per run; sum it over seeds.
    def opens(best: bool) -> int:
        feeds = _ranked_feeds(latent, best=best)
        return sum(
            e["event_type"] == "app_open"
            for seed in range(10)
            for e in simulate_feed_responses(latent, feeds, seed=seed).events
        )

    assert opens(best=True) > 1.1 * opens(best=False)


def test_written_events_are_ingested_without_quarantine(
    latent: WorldLatent, tmp_path: Path, pseudonymizer: Pseudonymizer
) -> None:
    events = simulate_feed_responses(latent, _ranked_feeds(latent, best=True), seed=11).events
    store = LocalObjectStore(tmp_path)

    keys = write_landing_events(store, events, batch="resp-test-11")
    results = [ingest_day(store, day, pseudonymizer) for day in layout.landed_dates(keys)]

    assert keys == sorted(keys)
    assert all(key.endswith("/resp-test-11.ndjson.gz") for key in keys)
    assert all(r.quarantined == 0 and r.duplicates == 0 and r.balanced for r in results)
    assert sum(r.accepted for r in results) == len(events)
    accepted = pd.concat([r.events for r in results])
    assert set(accepted["event_id"]) == {e["event_id"] for e in events}


def test_unknown_users_and_items_are_counted_and_get_no_response(
    latent: WorldLatent, served: pd.DataFrame
) -> None:
    strangers = served.head(20).assign(user_id="usr_unknown", request_id="r-stranger")
    unknown_item = served.head(5).assign(item_id="wk_unknown", position=0)
    batch = simulate_feed_responses(
        latent, pd.concat([served, strangers, unknown_item], ignore_index=True), seed=3
    )

    assert (batch.unknown_users, batch.unknown_items) == (1, 1)
    assert not any(e["user_id"] == "usr_unknown" for e in batch.events)
    assert not any(e.get("item_id") == "wk_unknown" for e in batch.events)


def test_exposures_need_every_column(latent: WorldLatent, served: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="position"):
        simulate_feed_responses(latent, served.drop(columns="position"), seed=3)


def test_load_latent_without_a_world_says_to_generate_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="generate the world first"):
        load_latent(LocalObjectStore(tmp_path))
