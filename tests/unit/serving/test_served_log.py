"""The served and shadow logs write nothing for an erased user, even one erased while serving."""

from __future__ import annotations

import dataclasses
import gc
import gzip
import json
import weakref
from pathlib import Path

import numpy as np
import pandas as pd

from fitpulse_orchestration.privacy.suppression import add_erased
from fitpulse_orchestration.serving.feed_types import FeedItem, FeedResponse
from fitpulse_orchestration.serving.logs import (
    ServedLog,
    exposure_records,
    read_served_features,
    served_feature_frame,
    served_feature_rows,
)
from fitpulse_orchestration.serving.shadow import ShadowLog, read_shadow_rows
from fitpulse_orchestration.storage import LocalObjectStore

AS_OF = pd.Timestamp("2026-11-02T10:00:00Z")


def _response(user: str, request_id: str) -> FeedResponse:
    items = [FeedItem(f"wk_{i}", "workout", "Core", "for_you") for i in range(3)]
    served = pd.DataFrame({"item_id": [i.id for i in items], "rank": [0, 1, 2], "score": 1.0})
    return FeedResponse(
        request_id=request_id,
        user_id=user,
        variant="default",
        experiment=None,
        model_version="1",
        items=items,
        fallbacks=[],
        cold=False,
        as_of=AS_OF,
        stage_ms={"lookup": 1.0},
        served_rows=lambda: served,
        fitness_level="beginner",
        pseudo_id=f"p_{user}",
        ranked=True,
    )


def _exposed_users(store: LocalObjectStore) -> list[str]:
    users = []
    for key in store.iter_keys("landing/events/"):
        for line in gzip.decompress(store.get_bytes(key)).decode().splitlines():
            users.append(json.loads(line)["user_id"])
    return users


def test_nothing_is_logged_for_a_user_erased_before_or_while_serving(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    log = ServedLog(store, feature_share=1.0)
    add_erased(store, "p_gone_before", "2026-11-01T00:00:00Z")
    log.flush()  # the service learns the list at its first flush
    log.record(_response("gone_before", "r1"))
    log.record(_response("kept", "r2"))
    log.record(_response("gone_while", "r3"))
    add_erased(store, "p_gone_while", "2026-11-02T10:00:01Z")  # erased before the next flush

    log.flush()

    assert sorted(set(_exposed_users(store))) == ["kept"]
    rows = read_served_features(store, AS_OF, AS_OF + pd.Timedelta(hours=1))
    assert set(rows["user_id"]) == {"p_kept"}
    assert log.skipped_erased == 3 + 3  # the two erased users' exposures
    assert log.written_exposures == 3


def test_the_shadow_log_writes_no_row_of_an_erased_user(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    log = ShadowLog(store)
    add_erased(store, "p_gone_before", "2026-11-01T00:00:00Z")
    log.flush()
    for user in ("gone_before", "kept", "gone_while"):
        log.record(_response(user, f"r-{user}"), _response(user, f"r-{user}-shadow"))
    add_erased(store, "p_gone_while", "2026-11-02T10:00:01Z")

    log.flush()

    rows = read_shadow_rows(store)
    assert set(rows["user_id"]) == {"p_kept"}
    assert len(rows) == 6  # three items on each side


def test_a_feed_json_cannot_encode_as_utf8_is_still_written(tmp_path: Path) -> None:
    """A lone surrogate (here in the experiment's name) is escaped, not a dead writer thread."""
    store = LocalObjectStore(tmp_path)
    log = ServedLog(store, feature_share=0.0)
    odd = dataclasses.replace(_response("odd", "r-odd"), experiment="exp-\ud800")
    log.record(odd)
    log.record(_response("next", "r-next"))

    log.flush()

    assert sorted(set(_exposed_users(store))) == ["next", "odd"]
    assert log.written_exposures == 6
    assert log.write_errors == 0


def test_the_writer_releases_queued_feeds_between_writes(tmp_path: Path) -> None:
    """Each tick serializes the queued feeds (a sampled feed's response is let go) and writes
    only once ``flush_s`` has passed; ``close`` writes the rest."""
    store = LocalObjectStore(tmp_path)
    log = ServedLog(store, feature_share=1.0, flush_s=3600.0, absorb_s=0.5)
    response = _response("kept", "r1")
    held = weakref.ref(response)
    log.record(response)
    del response

    log._tick()
    gc.collect()

    assert held() is None
    assert _exposed_users(store) == []
    log.close()
    assert _exposed_users(store) == ["kept"] * 3
    assert log.written_feature_rows == 3


def _served(kind: str, n: int) -> pd.DataFrame:
    """Served rows of three shapes: ranked (features, one with gaps), a fallback, none."""
    if kind == "empty":
        return pd.DataFrame()
    rows = {
        "item_id": [f"wk_{i}" for i in range(n)],
        "rank": np.arange(n),
        "score": np.linspace(1.0, 0.5, n),
        "source": ["als"] * n,
        "unsafe_for_beginner": [i % 2 == 0 for i in range(n)],
    }
    if kind == "ranked":
        rows |= {
            "u_engaged_7d": np.arange(n, dtype=float),
            "i_ctr_28d": [np.nan if i == 1 else 0.1 * i for i in range(n)],
            "category": ["core"] * n,
            "retrieval_rank": np.arange(n),
        }
    return pd.DataFrame(rows)


def _one_frame_per_feed(response: FeedResponse) -> pd.DataFrame:
    """The served-log rows of one feed as they were built before, one frame per feed."""
    served = response.served
    skip = {"request_id", "user_id", "fitness_level", "as_of", "retrieval_score", "retrieval_rank"}
    body = (
        {c: served[c].to_numpy() for c in served.columns if c not in skip}
        if len(served)
        else {"item_id": [None]}
    )
    return pd.DataFrame(
        {
            "request_id": response.request_id,
            "user_id": response.pseudo_id,
            "fitness_level": response.fitness_level,
            "as_of": response.as_of,
            **body,
            "model_version": response.model_version,
            "variant": response.variant,
            "ranked": response.ranked,
            "fallback": response.fallbacks[0] if response.fallbacks else None,
            "latency_ms": float(sum(response.stage_ms.values())),
        }
    )


def test_the_feature_table_of_a_write_is_the_per_feed_frames_concatenated() -> None:
    # Runs of feeds of the same shape and changes of shape, in an order that is not grouped.
    kinds = ["ranked", "ranked", "fallback", "empty", "ranked", "fallback", "fallback", "ranked"]
    responses = []
    for k, kind in enumerate(kinds):
        served = _served(kind, 3 + k % 4)
        response = dataclasses.replace(
            _response(f"u{k}", f"r{k}"),
            served_rows=lambda served=served: served,
            ranked=kind == "ranked",
            fallbacks=[] if kind == "ranked" else ["popularity"],
            variant="default" if k % 3 else None,
            stage_ms={"lookup": 0.5 * k},
        )
        responses.append(response)

    table = served_feature_frame([served_feature_rows(r) for r in responses])

    expected = pd.concat([_one_frame_per_feed(r) for r in responses], ignore_index=True)
    pd.testing.assert_frame_equal(table, expected)
    assert len(table) == sum(max(len(r.served), 1) for r in responses)


def test_exposure_times_are_pandas_iso_text_and_land_in_their_utc_hour(tmp_path: Path) -> None:
    stamps = [
        pd.Timestamp("2026-11-02T23:59:59Z"),
        pd.Timestamp("2026-11-02T13:05:07.123456Z"),
        pd.Timestamp("2026-11-02T13:05:07.123456789Z"),
        pd.Timestamp("2026-11-02T13:05:07.000000001Z"),
        pd.Timestamp("1969-12-31T23:59:59.5Z"),
        # Another zone: its own offset in the text, the UTC hour for the landing key.
        pd.Timestamp("2026-11-03T00:30:00", tz="Europe/Berlin"),
    ]
    for stamp in stamps:
        response = dataclasses.replace(_response("u1", f"r-{stamp.value}"), as_of=stamp)
        assert {r["ts"] for r in exposure_records(response)} == {stamp.isoformat()}
    log = ServedLog(LocalObjectStore(tmp_path), feature_share=0.0)
    log.record(dataclasses.replace(_response("u1", "r-berlin"), as_of=stamps[-1]))
    log.flush()
    keys = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.ndjson.gz")]
    assert len(keys) == 1
    assert "date=2026-11-02/hour=23/" in keys[0]
