"""Served-feed logs: the service's own log or a replay, UX monitors and training-serving skew.

The online service logs a sampled share of its requests with the features it served
(``serving.logs``); ``logged_served_feeds`` takes those of the monitored version. Where the
service has not served the window (the demo, a backfill), ``replay_served_feeds`` produces a
log with the same feed code: the champion serves, at the start of each recent day, every user
who requested a feed that day, seeing only the events that had *arrived* by then (an event's
landing batch ``date=D/hour=H`` closes at ``H+1``). That is what an online feature store
knows, so the logged features can differ from the offline recomputation, which sees every event
with ``ts < as_of`` including the late ones. ``compute_skew`` measures exactly that difference.

A served log has one row per feed item: ``request_id``, ``user_id``, ``fitness_level``,
``as_of``, ``item_id``, ``rank``, ``score``, ``source``, ``unsafe_for_beginner``, then every
ranker feature as served. A request whose feed came out empty keeps one row with a null
``item_id``, so empty feeds are counted, not lost.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.events.schema import ENGAGEMENT_TYPES
from fitpulse_orchestration.features.point_in_time import FeatureInputs, attach_features
from fitpulse_orchestration.features.reference import (
    UNKNOWN,
    treated_as_beginner,
    unsafe_for_beginners,
)
from fitpulse_orchestration.ranking.feed import HomeFeedModel, build_feeds

LOG_KEYS: Final = ("request_id", "user_id", "fitness_level", "as_of")
RECENT_DAYS: Final = 3
"""Days of recent traffic that monitoring replays (and that a version's reference covers)."""
MAX_REQUESTS: Final = 300
_BATCH_HOUR = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})")


def arrival_times(events: pd.DataFrame) -> pd.Series:
    """When each event became visible: the close of its landing batch's hour.

    Events without a landing batch in ``source_file`` (imported logs) count as visible at
    their own ``ts``.
    """
    parts = events["source_file"].astype(str).str.extract(_BATCH_HOUR)
    closes = pd.to_datetime(parts[0], utc=True) + pd.to_timedelta(
        parts[1].astype(float) + 1.0, unit="h"
    )
    return closes.fillna(events["ts"])


def visible_inputs(inputs: FeatureInputs, as_of: pd.Timestamp) -> FeatureInputs:
    """``inputs`` restricted to events that had arrived by ``as_of``."""
    arrived = arrival_times(inputs.events) <= as_of
    return FeatureInputs(inputs.events[arrived], inputs.catalog, inputs.profiles)


def recent_feed_requests(
    events: pd.DataFrame, end: pd.Timestamp, days: int, max_requests: int, seed: int = 7
) -> pd.DataFrame:
    """Feed requests in the ``days`` before ``end``, sampled.

    Logged requests are impression groups. A log without them (an imported interaction log
    has no feed requests) stands in the users who engaged with anything on a day for that
    day's requests (``request_id`` ``engaged-<user>-<day>``), so replays, drift references and
    UX monitors work on every kind of data.

    Returns:
        ``request_id``, ``user_id``, ``day`` (UTC midnight of the request), at most
        ``max_requests`` rows, one per request; a user keeps one request per day.
    """
    start = end - pd.Timedelta(days=days)
    recent = events[(events["ts"] >= start) & (events["ts"] < end)]
    imp = recent[(recent["event_type"] == "impression") & recent["request_id"].notna()]
    requests = (
        imp.groupby("request_id", sort=True)
        .agg(user_id=("user_id", "first"), ts=("ts", "min"))
        .reset_index()
    )
    if requests.empty:
        engaged = recent[recent["event_type"].isin(list(ENGAGEMENT_TYPES))]
        requests = (
            engaged.assign(day=engaged["ts"].dt.floor("D"))
            .groupby(["user_id", "day"], sort=True)
            .agg(ts=("ts", "min"))
            .reset_index()
        )
        requests["request_id"] = [
            f"engaged-{u}-{d.date()}"
            for u, d in zip(requests["user_id"], requests["day"], strict=True)
        ]
        requests = requests[["request_id", "user_id", "ts"]]
    requests["day"] = requests["ts"].dt.floor("D")
    requests = requests.drop_duplicates(["user_id", "day"]).drop(columns="ts")
    if len(requests) > max_requests:
        requests = requests.sample(n=max_requests, random_state=seed)
    return requests.sort_values(["day", "request_id"]).reset_index(drop=True)


def replay_served_feeds(
    model: HomeFeedModel, inputs: FeatureInputs, requests: pd.DataFrame
) -> pd.DataFrame:
    """Serve each request's user at the start of the request's day, as the service would.

    Returns:
        The served log (see the module docstring), requests in ``requests`` order.
    """
    profiles = inputs.profiles.set_index("user_id")
    unsafe = unsafe_for_beginners(inputs.catalog).set_axis(inputs.catalog["item_id"])
    logs = []
    for day, group in requests.groupby("day", sort=True):
        as_of = pd.Timestamp(day)
        online = visible_inputs(inputs, as_of)
        users = pd.DataFrame(
            {
                "user_id": group["user_id"].to_numpy(),
                "fitness_level": [
                    profiles["fitness_level"].get(u, UNKNOWN) for u in group["user_id"]
                ],
                "region": [profiles["region"].get(u, UNKNOWN) for u in group["user_id"]],
            }
        )
        result = build_feeds(model, online, users, as_of)
        # The feed's own columns win; the pool adds the features as served.
        pool = result.scored.drop(
            columns=["score", "source", "category", "reason", "rank", *LOG_KEYS[2:]],
            errors="ignore",
        )
        feed = result.feeds.merge(pool, on=["user_id", "item_id"], how="left")
        keys = group.assign(as_of=as_of).merge(
            users[["user_id", "fitness_level"]], on="user_id", how="left"
        )
        log = keys[list(LOG_KEYS)].merge(feed, on="user_id", how="left")
        logs.append(log)
    if not logs:
        raise ValueError("no feed requests to replay")
    log = pd.concat(logs, ignore_index=True)
    log["unsafe_for_beginner"] = log["item_id"].map(unsafe).fillna(True) & log["item_id"].notna()
    return log


def logged_served_feeds(
    logged: pd.DataFrame, model_version: str, max_requests: int, seed: int = 7
) -> pd.DataFrame:
    """Rows the service logged for ``model_version``, at most ``max_requests`` requests.

    Returns:
        The served log (module docstring format) in request order; empty when none match.
    """
    if logged.empty or "model_version" not in logged.columns:
        return pd.DataFrame()
    rows = logged[logged["model_version"].astype(str) == str(model_version)]
    requests = pd.Series(rows["request_id"].unique())
    if len(requests) > max_requests:
        requests = requests.sample(n=max_requests, random_state=seed)
    picked = rows[rows["request_id"].isin(set(requests))]
    return picked.sort_values(["as_of", "request_id", "rank"]).reset_index(drop=True)


PREDICTION_NUMERICAL: Final = ("score",)
PREDICTION_CATEGORICAL: Final = ("source",)
"""What prediction drift compares: the served score, and the retrieval source of each served
item. A blend's scores are rank fusions whose distribution barely moves with the traffic: in the
MLOps loop test's world, an influx of new members moved it by a normed Wasserstein distance of
0.077 (threshold 0.1), while the source mix moved by a Jensen-Shannon distance of 0.41, since
new members are served from two-tower and popularity rather than ALS."""


def reference_served_scores(
    model: HomeFeedModel, inputs: FeatureInputs, end: pd.Timestamp
) -> pd.DataFrame:
    """Predictions ``model`` serves on the ``RECENT_DAYS`` of requests before ``end``.

    Taken at training time over the held-out days, with the same replay monitoring uses later,
    so prediction drift compares like with like: the same code path, only the traffic differs.

    Returns:
        The ``PREDICTION_NUMERICAL`` and ``PREDICTION_CATEGORICAL`` columns, one row per served
        item.
    """
    requests = recent_feed_requests(inputs.events, end, RECENT_DAYS, MAX_REQUESTS)
    served = replay_served_feeds(model, inputs, requests)
    return served_predictions(served, [*PREDICTION_NUMERICAL, *PREDICTION_CATEGORICAL])


def prediction_columns(reference: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The numerical and categorical prediction columns ``reference`` holds.

    Bundles registered before the source was recorded hold ``score`` only; their drift
    compares that.
    """
    numerical = [c for c in PREDICTION_NUMERICAL if c in reference.columns]
    categorical = [c for c in PREDICTION_CATEGORICAL if c in reference.columns]
    return numerical, categorical


def served_predictions(served: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The ``columns`` of a served log's served items (rows without an item left out)."""
    return served.loc[served["item_id"].notna(), list(columns)].reset_index(drop=True)


@dataclass(frozen=True)
class UxThresholds:
    """Upper limits of the UX degradation monitors."""

    max_empty_feed_rate: float = 0.01
    max_fallback_rate: float = 0.6
    max_beginner_violations: int = 0
    max_notifications_per_user_week_p95: float = 7.0


def ux_metrics(served: pd.DataFrame) -> dict[str, float]:
    """Feed-side UX monitors of a served log.

    ``empty_feed_rate``: requests whose feed has no item. ``fallback_rate``: requests served
    without any personalized (ALS) item, i.e. from popularity and fresh items only.
    ``beginner_violations``: unsafe items served to beginners.
    """
    if served.empty:
        raise ValueError("the served log is empty")
    per_request = served.groupby("request_id").agg(
        items=("item_id", "count"),
        personalized=("source", lambda s: bool((s == "als").any())),
    )
    beginners = served["fitness_level"].map(treated_as_beginner).astype(bool)
    return {
        "requests": float(len(per_request)),
        "empty_feed_rate": float((per_request["items"] == 0).mean()),
        "fallback_rate": float((~per_request["personalized"] & (per_request["items"] > 0)).mean()),
        "beginner_violations": float((beginners & served["unsafe_for_beginner"]).sum()),
    }


def notifications_per_user_week(
    events: pd.DataFrame, end: pd.Timestamp, days: int = 7
) -> dict[str, float]:
    """Push notifications sent per user over the ``days`` before ``end``, scaled to a week.

    Returns:
        ``pushed_users``, ``mean`` and ``p95`` (over users who received at least one) and
        ``max``; zeros when nothing was sent.
    """
    start = end - pd.Timedelta(days=days)
    sent = events[
        (events["event_type"] == "push_sent") & (events["ts"] >= start) & (events["ts"] < end)
    ]
    if sent.empty:
        return {"pushed_users": 0.0, "mean": 0.0, "p95": 0.0, "max": 0.0}
    per_user = sent.groupby("user_id").size().to_numpy(dtype=float) * (7.0 / days)
    return {
        "pushed_users": float(per_user.size),
        "mean": float(per_user.mean()),
        "p95": float(np.quantile(per_user, 0.95)),
        "max": float(per_user.max()),
    }


def compute_skew(
    served: pd.DataFrame,
    inputs: FeatureInputs,
    columns: Sequence[str],
    rel_tolerance: float = 1e-6,
) -> pd.DataFrame:
    """Recompute served features offline and report the per-feature mismatch rate.

    The offline side is the training code path (``attach_features``) over every event before
    ``as_of``. Two values match when both are null or they differ by at most
    ``rel_tolerance * max(1, |offline|)``.

    Returns:
        One row per feature: ``feature``, ``rows``, ``mismatches``, ``mismatch_rate``,
        ``max_abs_diff``; sorted by mismatch rate, worst first.
    """
    missing = [c for c in columns if c not in served.columns]
    if missing:
        raise ValueError(f"the served log lacks feature columns {missing}")
    # Rows of fallbacks that skipped ranking (``ranked`` False in the service's log) carry no
    # features: there is nothing to compare.
    ranked = served["ranked"].astype(bool) if "ranked" in served.columns else True
    rows = served[served["item_id"].notna() & ranked].reset_index(drop=True)
    if rows.empty:
        raise ValueError("the served log has no served items to recompute")
    keys = rows[["user_id", "item_id", "as_of"]].copy()
    keys["as_of"] = pd.to_datetime(keys["as_of"], utc=True)
    offline = attach_features(inputs, keys)
    out = []
    for col in columns:
        a = pd.to_numeric(rows[col], errors="coerce").to_numpy(dtype=float)
        b = pd.to_numeric(offline[col], errors="coerce").to_numpy(dtype=float)
        both_null = np.isnan(a) & np.isnan(b)
        diff = np.abs(a - b)
        close = diff <= rel_tolerance * np.maximum(1.0, np.abs(b))
        mismatch = ~(both_null | close)
        finite = diff[np.isfinite(diff)]
        out.append(
            {
                "feature": col,
                "rows": len(rows),
                "mismatches": int(mismatch.sum()),
                "mismatch_rate": float(mismatch.mean()),
                "max_abs_diff": float(finite.max()) if finite.size else 0.0,
            }
        )
    return (
        pd.DataFrame(out)
        .sort_values(["mismatch_rate", "feature"], ascending=[False, True])
        .reset_index(drop=True)
    )
