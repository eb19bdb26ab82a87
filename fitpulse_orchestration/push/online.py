"""The online push state: each user's push history and the cap counters, as of a snapshot."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fitpulse_orchestration.features.point_in_time import FeatureInputs
from fitpulse_orchestration.push.caps import PushCapStore
from fitpulse_orchestration.push.features import DAY_S, compute_push_histories
from fitpulse_orchestration.storage.online_store import OnlineFeatureStore


def materialize_push_state(
    inputs: FeatureInputs,
    as_of: pd.Timestamp,
    store: OnlineFeatureStore,
    caps: PushCapStore,
) -> dict[str, Any]:
    """Write the push histories and seed the cap counters, as of ``as_of``.

    Each user's history keeps the 28 days before ``as_of``; the cap counters get the pushes
    of the last 7 days.

    Seeding is idempotent (a send is keyed by its decision id), so sends the decision service
    already reserved are not counted twice when their delivery comes back through the logs.
    """
    histories = compute_push_histories(inputs.events, inputs.catalog, inputs.profiles, as_of)
    meta = store.materialize_records(
        "push", {user: h.to_record() for user, h in histories.items()}, as_of
    )
    events = inputs.events
    week = events[
        (events["event_type"] == "push_sent")
        & (events["ts"] < as_of)
        & (events["ts"] >= as_of - pd.Timedelta(days=7))
    ]
    sends = [
        (str(user), str(send_id), ts.to_pydatetime())
        for user, send_id, ts in zip(
            week["user_id"], week["request_id"].fillna(week["event_id"]), week["ts"], strict=True
        )
    ]
    seeded = caps.record_sends(sends)
    pruned = caps.prune((as_of - pd.Timedelta(seconds=8 * DAY_S)).to_pydatetime())
    off = sum(h.notifications_off(float(as_of.timestamp())) for h in histories.values())
    return {
        "users": meta.rows,
        "as_of": meta.as_of,
        "sends_last_7d": len(sends),
        "sends_seeded": seeded,
        "cap_records_pruned": pruned,
        "notifications_off": int(off),
        "mean_pushes_28d": float(np.mean([len(h.sent) for h in histories.values()]))
        if histories
        else 0.0,
    }
