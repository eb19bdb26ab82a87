"""Push training and evaluation examples: one row per logged push decision, with its outcomes.

Rows are the push scheduler's logged decisions (``push_decision`` events: the action and the
probability with which the logging policy sent) plus sends that have no logged decision (an
imported log without a decision stream: action ``send``, propensity unknown). Each row carries
the ``PUSH_FEATURES`` as of the decision, the guardrail inputs, and the outcomes:

* ``opened``: the push was opened within ``OPEN_HORIZON_H`` hours of the send;
* ``starts``: workout starts attributed to the push (``request_id`` = the decision id);
* ``disabled_7d``: the user switched notifications off within 7 days after the decision;
  ``fatigue_observed`` says whether the data covers those 7 days (later rows are censored);
* ``disable_attributed``: the switch-off counted against this push by last touch (the most
  recent push the user received before switching off), so that summing it over decisions
  counts every switch-off once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.features.point_in_time import FeatureInputs
from fitpulse_orchestration.push.features import (
    DAY_S,
    HOUR_S,
    PUSH_FEATURES,
    compute_push_histories,
    epoch_seconds,
    parse_payload,
    push_features,
    push_items,
)

OPEN_HORIZON_H: Final = 4.0
FATIGUE_HORIZON_D: Final = 7.0

EXAMPLE_COLUMNS: Final = (
    "decision_id",
    "user_id",
    "item_id",
    "ts",
    "policy",
    "sent",
    "p_send",
    "propensity",
    "notifications_off",
    "beginner",
    "unsafe_item",
    "opened",
    "starts",
    "disabled_7d",
    "fatigue_observed",
    "disable_attributed",
    *PUSH_FEATURES,
)


@dataclass(frozen=True)
class PushExampleStats:
    """What went into the examples (asset metadata)."""

    decisions: int
    sends: int
    sends_without_decision: int
    opens: int
    disables: int
    users: int

    def as_dict(self) -> dict[str, int]:
        """Plain dict for metadata."""
        return dict(vars(self))


def _decisions(events: pd.DataFrame) -> pd.DataFrame:
    """Logged decisions plus sends without one."""
    logged = events[events["event_type"] == "push_decision"]
    payloads = [parse_payload(p) for p in logged["payload"]]
    decisions = pd.DataFrame(
        {
            "decision_id": logged["request_id"].fillna(logged["event_id"]).to_numpy(),
            "user_id": logged["user_id"].to_numpy(),
            "item_id": logged["item_id"].to_numpy(),
            "ts": logged["ts"].to_numpy(),
            "policy": [str(p.get("policy", "unknown")) for p in payloads],
            "sent": [p.get("action") == "send" for p in payloads],
            "p_send": [float(p.get("p_send", np.nan)) for p in payloads],
        }
    )
    sends = events[events["event_type"] == "push_sent"]
    orphan = sends[~sends["request_id"].isin(decisions["decision_id"])]
    extra = pd.DataFrame(
        {
            "decision_id": orphan["request_id"].fillna(orphan["event_id"]).to_numpy(),
            "user_id": orphan["user_id"].to_numpy(),
            "item_id": orphan["item_id"].to_numpy(),
            "ts": orphan["ts"].to_numpy(),
            "policy": "unlogged",
            "sent": True,
            "p_send": np.nan,
        }
    )
    frame = pd.concat([decisions, extra], ignore_index=True) if len(extra) else decisions
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame.sort_values(["ts", "decision_id"], kind="stable").reset_index(drop=True)


def _first_after(
    times_by_user: dict[str, np.ndarray], users: np.ndarray, at: np.ndarray, horizon_s: float
) -> np.ndarray:
    """Whether each user has an event in ``(at, at + horizon_s]``."""
    out = np.zeros(len(users), dtype=bool)
    for row, (user, t) in enumerate(zip(users, at, strict=True)):
        times = times_by_user.get(str(user))
        if times is not None:
            i = int(np.searchsorted(times, t, side="right"))
            out[row] = i < len(times) and times[i] <= t + horizon_s
    return out


def has_push_logs(events: pd.DataFrame) -> bool:
    """Whether ``events`` hold any push decision or send (what push training learns from)."""
    return bool(events["event_type"].isin(["push_decision", "push_sent"]).any())


def build_push_examples(inputs: FeatureInputs) -> tuple[pd.DataFrame, PushExampleStats]:
    """One row per logged push decision (see the module docstring) with features and outcomes.

    Raises:
        ValueError: when the events hold no push decision and no push send.
    """
    events = inputs.events
    decisions = _decisions(events)
    if decisions.empty:
        raise ValueError(
            "no push_decision or push_sent events: push examples need the push system's logs"
        )
    end = float(events["ts"].max().timestamp())
    histories = compute_push_histories(
        events, inputs.catalog, inputs.profiles, user_ids=decisions["user_id"].unique()
    )
    items = push_items(inputs.catalog)
    at = epoch_seconds(decisions["ts"])
    features = np.empty((len(decisions), len(PUSH_FEATURES)))
    off = np.zeros(len(decisions), dtype=bool)
    beginner = np.zeros(len(decisions), dtype=bool)
    unsafe = np.zeros(len(decisions), dtype=bool)
    for row, (user, item_id, t) in enumerate(
        zip(decisions["user_id"], decisions["item_id"], at, strict=True)
    ):
        history = histories[str(user)]
        item = items.get(str(item_id))
        features[row] = push_features(history, t, item)
        off[row] = history.notifications_off(t)
        beginner[row] = history.is_beginner
        unsafe[row] = True if item is None else item.unsafe_for_beginners

    by_decision = events[events["request_id"].notna()]
    opens = by_decision[by_decision["event_type"] == "push_open"]
    sent_at = dict(zip(decisions["decision_id"], at, strict=True))
    open_ok = {
        d
        for d, t in zip(opens["request_id"], epoch_seconds(opens["ts"]), strict=True)
        if d in sent_at and t - sent_at[d] <= OPEN_HORIZON_H * HOUR_S
    }
    starts = by_decision[by_decision["event_type"] == "workout_start"].groupby("request_id").size()
    disables = events[events["event_type"] == "push_disable"]
    disable_times = {
        str(u): np.sort(epoch_seconds(g["ts"])) for u, g in disables.groupby("user_id")
    }
    users = decisions["user_id"].to_numpy()
    sent = decisions["sent"].to_numpy(bool)
    frame = decisions.assign(
        propensity=np.where(sent, decisions["p_send"], 1.0 - decisions["p_send"]),
        notifications_off=off,
        beginner=beginner,
        unsafe_item=unsafe,
        opened=sent & decisions["decision_id"].isin(open_ok).to_numpy(),
        starts=decisions["decision_id"].map(starts).fillna(0).to_numpy(float) * sent,
        disabled_7d=_first_after(disable_times, users, at, FATIGUE_HORIZON_D * DAY_S),
        fatigue_observed=at + FATIGUE_HORIZON_D * DAY_S <= end,
        disable_attributed=_attribute_disables(decisions, disables),
    )
    frame[list(PUSH_FEATURES)] = features
    stats = PushExampleStats(
        decisions=int((decisions["policy"] != "unlogged").sum()),
        sends=int(sent.sum()),
        sends_without_decision=int((decisions["policy"] == "unlogged").sum()),
        opens=int(frame["opened"].sum()),
        disables=len(disables),
        users=int(decisions["user_id"].nunique()),
    )
    return frame[list(EXAMPLE_COLUMNS)].reset_index(drop=True), stats


def _attribute_disables(decisions: pd.DataFrame, disables: pd.DataFrame) -> np.ndarray:
    """1 on the last push sent to the user before each switch-off (last touch)."""
    out = np.zeros(len(decisions))
    sent = decisions[decisions["sent"]]
    positions = {
        str(u): (epoch_seconds(g["ts"]), g.index.to_numpy()) for u, g in sent.groupby("user_id")
    }
    for user, t in zip(disables["user_id"], epoch_seconds(disables["ts"]), strict=True):
        times, rows = positions.get(str(user), (None, None))
        if times is None or rows is None:
            continue
        i = int(np.searchsorted(times, t, side="right"))
        if i:
            out[rows[i - 1]] += 1.0
    return out
