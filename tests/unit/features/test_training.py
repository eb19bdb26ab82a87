from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from fitpulse_orchestration.events.ingest import read_clean_events
from fitpulse_orchestration.events.schema import (
    clean_events_from_records,
)
from fitpulse_orchestration.features.reference import (
    CATALOG_SCHEMA,
    load_catalog,
    load_profiles,
)
from fitpulse_orchestration.features.snapshot import build_training_snapshot
from fitpulse_orchestration.features.training import (
    EXAMPLES_SCHEMA,
    MIN_IMPRESSION_GROUPS,
    SplitParams,
    TimeSplit,
    build_ranker_examples,
    compute_time_split,
    heldout_relevance,
)

SPLIT = TimeSplit(
    start=pd.Timestamp("2026-10-01", tz="UTC"),
    ranker_start=pd.Timestamp("2026-10-03", tz="UTC"),
    eval_start=pd.Timestamp("2026-10-09", tz="UTC"),
    end=pd.Timestamp("2026-10-11", tz="UTC"),
)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _events(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return clean_events_from_records(rows)


def _ev(event_type: str, user: str, ts: pd.Timestamp, item: str | None, **extra: Any) -> dict:
    return {"event_type": event_type, "user_id": user, "item_id": item, "ts": ts, **extra}


def _catalog(published: dict[str, str]) -> pd.DataFrame:
    return CATALOG_SCHEMA.validate(
        pd.DataFrame(
            {
                "item_id": list(published),
                "item_type": "workout",
                "title": "t",
                "category": "yoga",
                "difficulty": "beginner",
                "intensity": "low",
                "duration_min": 10.0,
                "equipment": "none",
                "tags": "",
                "published_at": [utc(ts) for ts in published.values()],
            }
        )
    )


CATALOG = _catalog({item: "2026-09-01" for item in ["A", "B", "C", "D"]})


def _request(rid: str, user: str, ts: pd.Timestamp, items: list[str]) -> list[dict[str, Any]]:
    return [
        _ev("impression", user, ts, item, request_id=rid, position=pos)
        for pos, item in enumerate(items)
    ]


def _engage(rid: str | None, user: str, ts: pd.Timestamp, item: str, *types: str) -> list[dict]:
    return [
        _ev(t, user, ts + pd.Timedelta(seconds=10 * (k + 1)), item, request_id=rid)
        for k, t in enumerate(types)
    ]


def _is_contiguous(groups: pd.Series) -> bool:
    runs = (groups != groups.shift()).sum()
    return runs == groups.nunique()


def test_time_split_cuts_whole_days_from_the_end() -> None:
    events = _events(
        [
            _ev("app_open", "p_a", utc("2026-10-01T05:00"), None),
            _ev("app_open", "p_a", utc("2026-10-11T23:59"), None),
        ]
    )

    split = compute_time_split(events, SplitParams(eval_days=5, ranker_days=5))

    assert split == TimeSplit(
        start=utc("2026-10-01"),
        ranker_start=utc("2026-10-02"),
        eval_start=utc("2026-10-07"),
        end=utc("2026-10-12"),
    )
    assert split.as_dict() == {
        "start": "2026-10-01T00:00:00+00:00",
        "ranker_start": "2026-10-02T00:00:00+00:00",
        "eval_start": "2026-10-07T00:00:00+00:00",
        "end": "2026-10-12T00:00:00+00:00",
        "protocol": "time",
    }


def test_time_split_needs_history_ranker_and_eval_days() -> None:
    ten_days = _events(
        [
            _ev("app_open", "p_a", utc("2026-10-01T05:00"), None),
            _ev("app_open", "p_a", utc("2026-10-10T23:59"), None),
        ]
    )

    with pytest.raises(ValueError, match="span 10 days but the split needs at least 11"):
        compute_time_split(ten_days, SplitParams(eval_days=5, ranker_days=5))
    assert compute_time_split(ten_days, SplitParams(eval_days=4, ranker_days=5)).start == utc(
        "2026-10-01"
    )
    with pytest.raises(ValueError, match="no clean events"):
        compute_time_split(_events([]), SplitParams())


def _impression_log() -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    t = utc("2026-10-04T08:00")
    rows += _request("r00", "p_a", t, ["A", "B", "C"])
    rows += _engage("r00", "p_a", t, "B", "click")
    rows += _engage("r00", "p_a", t, "D", "click")  # D was never shown in r00
    rows += _engage(None, "p_a", t, "A", "click", "workout_start")  # organic: labels nothing
    t = utc("2026-10-04T09:00")
    rows += _request("r01", "p_b", t, ["A", "B", "C"])
    rows += _engage("r01", "p_b", t, "A", "click", "workout_start")
    t = utc("2026-10-05T09:00")
    rows += _request("r02", "p_a", t, ["A", "B", "C", "B"])  # B re-logged in the same request
    rows += _engage("r02", "p_a", t, "C", "click", "workout_start", "workout_complete")
    rows += _engage("r02", "p_a", t, "A", "click")
    t = utc("2026-10-05T10:00")
    rows += _request("r03", "p_b", t, ["A", "B"])
    rows += _engage("r03", "p_b", t, "B", "click", "article_read")
    rows += _request("r04", "p_c", utc("2026-10-05T11:00"), ["A", "B", "C"])  # no engagement
    for k in range(5, 12):
        t = utc("2026-10-06T08:00") + pd.Timedelta(hours=k)
        rows += _request(f"r{k:02d}", "p_c", t, ["C", "A"])
        rows += _engage(f"r{k:02d}", "p_c", t, "A", "click")
    t = utc("2026-10-02T23:00")  # before the ranker window
    rows += _request("early", "p_a", t, ["A", "B"])
    rows += _engage("early", "p_a", t, "A", "click")
    t = utc("2026-10-09T00:00")  # the first instant of the evaluation window
    rows += _request("late", "p_a", t, ["A", "B"])
    rows += _engage("late", "p_a", t, "A", "click")
    return _events(rows)


def test_impression_examples_label_the_deepest_engagement_of_the_request() -> None:
    examples = build_ranker_examples(_impression_log(), CATALOG, SPLIT)

    EXAMPLES_SCHEMA.validate(examples)
    labels = {
        (g, i): int(label) for g, i, label in examples[["group_id", "item_id", "label"]].values
    }
    assert {k: v for k, v in labels.items() if k[0] in {"r00", "r01", "r02", "r03"}} == {
        ("r00", "A"): 0,
        ("r00", "B"): 1,
        ("r00", "C"): 0,
        ("r01", "A"): 2,
        ("r01", "B"): 0,
        ("r01", "C"): 0,
        ("r02", "A"): 1,
        ("r02", "B"): 0,
        ("r02", "C"): 3,
        ("r03", "A"): 0,
        ("r03", "B"): 2,
    }
    assert set(examples["group_id"]) == {"r00", "r01", "r02", "r03"} | {
        f"r{k:02d}" for k in range(5, 12)
    }
    assert len(examples) == 11 + 7 * 2
    assert (examples["kind"] == "impression").all()
    assert examples.groupby("group_id")["label"].max().gt(0).all()
    assert examples.groupby("group_id")["user_id"].nunique().eq(1).all()


def test_impression_examples_are_contiguous_by_group_and_in_time_order() -> None:
    examples = build_ranker_examples(_impression_log(), CATALOG, SPLIT)

    assert _is_contiguous(examples["group_id"])
    assert examples["as_of"].is_monotonic_increasing
    first = examples[examples["group_id"] == "r01"]
    assert (first["as_of"] == utc("2026-10-04T09:00")).all()
    assert (first["user_id"] == "p_b").all()


def test_groups_stay_contiguous_when_impressions_of_a_request_differ_in_time() -> None:
    log = _impression_log()
    t = utc("2026-10-07T08:00")
    scrolled = _request("r_scroll", "p_a", t, ["A", "B"])
    scrolled += _request("r_scroll", "p_a", t + pd.Timedelta(minutes=2), ["C"])
    scrolled += _request("r_other", "p_b", t + pd.Timedelta(minutes=1), ["A", "B"])
    scrolled += _engage("r_scroll", "p_a", t, "C", "click")
    scrolled += _engage("r_other", "p_b", t, "A", "click")
    events = pd.concat([log, _events(scrolled).assign(event_id=lambda f: "s" + f["event_id"])])

    examples = build_ranker_examples(events, CATALOG, SPLIT)

    assert _is_contiguous(examples["group_id"])


def test_sampled_negatives_without_impressions() -> None:
    catalog = _catalog(
        {
            "A": "2026-09-01",
            "B": "2026-09-01",
            "C": "2026-09-01",
            "D": "2026-09-01",
            "E": "2026-09-01",
            "F": "2026-10-08",  # published after most examples
        }
    )
    rows: list[dict[str, Any]] = []
    for day in range(3, 9):
        t = utc(f"2026-10-0{day}T10:00")
        rows += _engage(None, "p_a", t, "A", "click", "workout_start")
        rows += _engage(None, "p_b", t, "B", "click")
        rows += _engage(None, "p_c", t, "C" if day % 2 else "D", "click")
        rows += _engage(None, "p_d", t, "E", "click")
    rows += _engage(None, "p_d", utc("2026-10-08T12:00"), "F", "click")
    rows += _engage(None, "p_a", utc("2026-10-02T10:00"), "D", "click")  # history only
    events = _events(rows)

    examples = build_ranker_examples(events, catalog, SPLIT, negatives=3, seed=1)

    assert (examples["kind"] == "sampled").all()
    assert _is_contiguous(examples["group_id"])
    published = catalog.set_index("item_id")["published_at"]
    engaged = events.groupby("user_id")["item_id"].agg(set)
    for _, group in examples.groupby("group_id", sort=False):
        positive, negatives = group.iloc[0], group.iloc[1:]
        assert positive["label"] > 0
        assert len(group) <= 1 + 3
        assert (negatives["label"] == 0).all()
        assert not negatives["item_id"].isin(engaged[positive["user_id"]]).any()
        assert (negatives["item_id"].map(published) < positive["as_of"]).all()
    assert (examples.groupby("group_id").size() > 1).any()
    # One group per (user, item, day), labelled with that day's deepest engagement.
    positives = examples[examples["label"] > 0]
    assert len(positives) == 6 * 4 + 1
    assert positives.loc[positives["item_id"] == "A", "label"].eq(2).all()


def test_heldout_relevance_keeps_the_max_grade_in_the_eval_window() -> None:
    rows = [
        *_engage(None, "p_a", utc("2026-10-09T08:00"), "A", "click", "workout_start"),
        *_engage(None, "p_a", utc("2026-10-10T08:00"), "A", "workout_complete", "click"),
        *_engage(None, "p_a", utc("2026-10-09T09:00"), "B", "click"),
        *_engage(None, "p_b", utc("2026-10-09T09:00"), "C", "video_watch"),
        _ev("impression", "p_b", utc("2026-10-09T09:00"), "D", request_id="r", position=0),
        _ev("push_open", "p_b", utc("2026-10-09T09:00"), "D"),
        *_engage(None, "p_b", utc("2026-10-08T23:59"), "D", "workout_complete"),  # before
        _ev("workout_complete", "p_b", utc("2026-10-11T00:00"), "B"),  # at the end: excluded
        _ev("click", "p_c", utc("2026-10-08T12:00"), "A"),
    ]

    relevance = heldout_relevance(_events(rows), SPLIT)

    assert relevance == {"p_a": {"A": 3, "B": 1}, "p_b": {"C": 2}}


def test_too_few_labelled_requests_fall_back_to_sampled_negatives() -> None:
    log = _impression_log()
    few = log[log["request_id"].isin(["r00", "r01", "r02"]) | log["request_id"].isna()]

    examples = build_ranker_examples(few, CATALOG, SPLIT, negatives=2)

    assert (examples["kind"] == "sampled").all()
    assert examples["group_id"].str.startswith("sampled-").all()
    assert examples.groupby("group_id").size().le(3).all()


def test_training_snapshot_of_the_tiny_world(tiny_world) -> None:
    store = tiny_world.store
    params = tiny_world.summary.params
    catalog = load_catalog(store)
    profiles = load_profiles(store, tiny_world.pseudonymizer)

    snapshot = build_training_snapshot(store, catalog, profiles, SplitParams())

    pd.testing.assert_frame_equal(snapshot.inputs.events, read_clean_events(store))
    end = pd.Timestamp(params.end_date, tz="UTC") + pd.Timedelta(days=1)
    # Sized by events: the last 3 of 14 days hold 15% of the engagements, the 2 before them
    # 15% of the rest.
    assert snapshot.split == TimeSplit(
        start=pd.Timestamp(params.start_date, tz="UTC"),
        ranker_start=end - pd.Timedelta(days=5),
        eval_start=end - pd.Timedelta(days=3),
        end=end,
    )
    summary = snapshot.summary()
    assert summary["events"] == tiny_world.summary.n_valid_events
    assert summary["items"] == tiny_world.summary.n_items
    assert summary["profiled_users"] == tiny_world.summary.n_users
    assert 0 < summary["users"] <= tiny_world.summary.n_users
    assert summary["end"] == end.isoformat()
    with pytest.raises(ValueError, match="split needs at least 15"):
        build_training_snapshot(store, catalog, profiles, SplitParams(eval_days=7, ranker_days=7))


def test_above_the_cap_a_seeded_sample_of_whole_groups_is_kept() -> None:
    everything = build_ranker_examples(_impression_log(), CATALOG, SPLIT)
    groups = everything["group_id"].nunique()
    assert groups > 3

    capped = build_ranker_examples(_impression_log(), CATALOG, SPLIT, max_groups=3)

    assert capped["group_id"].nunique() == 3
    kept = everything[everything["group_id"].isin(set(capped["group_id"]))]
    pd.testing.assert_frame_equal(capped, kept.reset_index(drop=True))
    assert _is_contiguous(capped["group_id"])
    again = build_ranker_examples(_impression_log(), CATALOG, SPLIT, max_groups=3)
    pd.testing.assert_frame_equal(capped, again)
    assert len(build_ranker_examples(_impression_log(), CATALOG, SPLIT, max_groups=groups)) == len(
        everything
    )


def test_tiny_world_ranker_examples_come_from_feed_requests(tiny_world) -> None:
    store = tiny_world.store
    snapshot = build_training_snapshot(
        store, load_catalog(store), load_profiles(store, tiny_world.pseudonymizer), SplitParams()
    )
    events, split = snapshot.inputs.events, snapshot.split

    examples = build_ranker_examples(events, snapshot.inputs.catalog, split)

    assert (examples["kind"] == "impression").all()
    assert examples["group_id"].nunique() >= MIN_IMPRESSION_GROUPS
    assert _is_contiguous(examples["group_id"])
    assert examples.groupby("group_id")["label"].max().gt(0).all()
    assert examples["as_of"].between(split.ranker_start, split.eval_start, inclusive="left").all()
    assert set(examples["label"]) == {0, 1, 2, 3}
    # Labels only see engagements inside the ranker window: a completion that finishes after
    # eval_start belongs to the held-out window and must not leak into a training label.
    completes = events[
        (events["event_type"] == "workout_complete")
        & events["request_id"].isin(examples["group_id"])
        & (events["ts"] < split.eval_start)
    ]
    by_key = examples.set_index(["group_id", "item_id"])["label"]
    assert (
        by_key.loc[list(zip(completes["request_id"], completes["item_id"], strict=True))] == 3
    ).all()


def _one_click_a_day(days: int) -> pd.DataFrame:
    """One click a day, by a different user each day, from 2026-10-01."""
    start = utc("2026-10-01T12:00")
    return _events(
        [_ev("click", f"p_{d:02d}", start + pd.Timedelta(days=d), f"i{d}") for d in range(days)]
    )


def test_time_split_sizes_each_window_by_its_share_of_engagements() -> None:
    events = _one_click_a_day(20)

    split = compute_time_split(events, SplitParams(heldout_share=0.15, min_heldout_users=1))

    # 15% of 20 engagements is 3: the last 3 days; then 15% of the 17 before them: 3 days.
    assert split == TimeSplit(
        start=utc("2026-10-01"),
        ranker_start=utc("2026-10-15"),
        eval_start=utc("2026-10-18"),
        end=utc("2026-10-21"),
    )


def test_time_split_grows_the_windows_to_hold_enough_users() -> None:
    events = _one_click_a_day(20)

    split = compute_time_split(events, SplitParams(heldout_share=0.15, min_heldout_users=5))

    assert split.eval_start == utc("2026-10-16")
    assert split.ranker_start == utc("2026-10-11")


def test_time_split_without_room_for_a_history_is_refused() -> None:
    with pytest.raises(ValueError, match="too few to hold a history"):
        compute_time_split(_one_click_a_day(3), SplitParams(heldout_share=0.4))


def _library() -> pd.DataFrame:
    """p_a engaged with 8 items, p_b with 4, p_c with 1; p_a was also shown (not engaged) Z."""
    t0 = utc("2026-10-01T08:00")
    rows = [_ev("click", "p_a", t0 + pd.Timedelta(hours=h), f"a{h}") for h in range(8)]
    rows += [_ev("workout_start", "p_b", t0 + pd.Timedelta(hours=h), f"b{h}") for h in range(4)]
    rows += [_ev("click", "p_c", t0, "c0"), _ev("impression", "p_a", t0, "Z")]
    # A late impression of an item p_b engaged with first: it leaves with its pair.
    rows += [_ev("impression", "p_b", t0 + pd.Timedelta(days=1), "b3")]
    return _events(rows)


def test_user_random_holdout_takes_a_share_of_each_users_items() -> None:
    events = _library()

    split = compute_time_split(
        events, SplitParams(holdout="user_random", heldout_share=0.25, seed=42)
    )

    held = split.heldout_pairs
    # round(0.25 * 8) = 2 of p_a's items and 1 of p_b's; p_c has a single item and keeps it.
    assert sorted(u for u, _ in held) == ["p_a", "p_a", "p_b"]
    # The validation part comes from what is left, by the same rule: 2 of 6 and 1 of 3.
    assert sorted(u for u, _ in split.validation_pairs) == ["p_a", "p_a", "p_b"]
    assert not held & split.validation_pairs
    assert split.ranker_start == split.eval_start == split.end == utc("2026-10-03")
    train = split.train_events(events)
    pairs = set(zip(train["user_id"], train["item_id"], strict=True))
    assert not pairs & held
    assert len(train) == len(events) - len(held) - sum(p == ("p_b", "b3") for p in held)
    assert heldout_relevance(events, split) == {
        u: {i: 1 if u == "p_a" else 2 for uu, i in held if uu == u} for u in ("p_a", "p_b")
    }
    fit = split.fit_events(events)
    assert not set(zip(fit["user_id"], fit["item_id"], strict=True)) & split.validation_pairs


def test_user_random_holdout_is_seeded() -> None:
    events = _library()
    params = SplitParams(holdout="user_random", heldout_share=0.25, seed=42)

    first = compute_time_split(events, params)
    again = compute_time_split(events, params)
    other = compute_time_split(events, SplitParams(holdout="user_random", seed=7))

    assert first.heldout_pairs == again.heldout_pairs
    assert first.heldout_pairs != other.heldout_pairs


def test_leave_last_holds_out_each_users_latest_item() -> None:
    events = _library()

    split = compute_time_split(events, SplitParams(holdout="leave_last"))

    assert split.heldout_pairs == {("p_a", "a7"), ("p_b", "b3")}
    assert split.validation_pairs == {("p_a", "a6"), ("p_b", "b2")}
    assert split.describe() == (
        "leave_last: 2 held-out and 2 validation (user, item) pairs, as of "
        "2026-10-03 00:00:00+00:00"
    )
    assert split.as_dict()["protocol"] == "leave_last"


def test_per_user_holdout_needs_users_with_several_items() -> None:
    events = _events([_ev("click", f"p_{k}", utc("2026-10-01"), "x") for k in range(3)])

    with pytest.raises(ValueError, match="no user has enough engaged items"):
        compute_time_split(events, SplitParams(holdout="user_random"))


def test_split_params_reject_an_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="holdout must be one of time, user_random, leave_last"):
        SplitParams(holdout="random")
