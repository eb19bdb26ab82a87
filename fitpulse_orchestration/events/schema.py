"""The event contract between the app's collector and the platform.

A landed record is one JSON object per line with these fields:

========== ======== ===========================================================
field      required meaning
========== ======== ===========================================================
event_id   always   globally unique id; re-sent records repeat it
event_type always   one of ``EVENT_TYPES``
user_id    always   the app's pseudonymous user id (re-keyed at ingestion)
ts         always   ISO-8601 timestamp with offset, when the event happened
item_id    item ev. catalog id; required for every type in ``ITEM_EVENT_TYPES``
request_id impress. feed request that produced an impression (and its engagements)
position   no       0-based slot of the impression in the feed
session_id no       app session
platform   no       ios / android / web
payload    no       event-specific object (workout duration, push action and propensity, ...)
========== ======== ===========================================================

Ids follow ``USER_ID_PATTERN`` / ``ID_PATTERN``; ``position`` is below 2**31; ``ts`` lies between
the retention horizon (``STALE_AFTER`` before the landing day) and the end of the landing hour
(plus ``FUTURE_TOLERANCE``); a line is at most ``MAX_LINE_BYTES`` of UTF-8 JSON, nested at most
``MAX_DEPTH`` deep, with finite numbers only. Anything else is quarantined with its reason
(``events.ingest``).
"""

from __future__ import annotations

import re
from typing import Any, Final

import pandas as pd
import pandera.pandas as pa
from pandas.api.types import infer_dtype

EVENT_TYPES: Final = (
    "app_open",
    "impression",
    "click",
    "workout_start",
    "workout_complete",
    "article_read",
    "video_watch",
    "push_sent",
    "push_open",
    "push_dismiss",
    "push_decision",
    "push_disable",
)
ITEM_EVENT_TYPES: Final = frozenset(EVENT_TYPES) - {"app_open", "push_disable"}
EXPOSURE_SOURCE: Final = "feed_service"
"""``payload.source`` of the impressions the feed service logs (``serving.logs``)."""
PUSH_EVENT_TYPES: Final = frozenset(
    {"push_decision", "push_sent", "push_open", "push_dismiss", "push_disable"}
)
"""The push system's events: every decision the scheduler took (``push_decision``, with the
action and its propensity in the payload), deliveries, reactions and notification opt-outs
(``push_disable``, no item). ``request_id`` of a decision, its send and reactions is the
decision id."""
ENGAGEMENT_TYPES: Final = frozenset(
    {"click", "workout_start", "workout_complete", "article_read", "video_watch"}
)
"""Meaningful interactions: a user is *cold* with fewer than 5 of these in a month."""

ENGAGEMENT_GRADE: Final = {
    "impression": 0,
    "click": 1,
    "workout_start": 2,
    "article_read": 2,
    "video_watch": 2,
    "workout_complete": 3,
}
"""Graded relevance labels for the ranker (impression 0, click 1, start 2, complete 3).

Reading an article or watching a video counts like starting a workout: the business goal is
workout starts, so non-workout consumption is not rated as highly as a completed workout.
"""

COLD_THRESHOLD: Final = 5

USER_ID_PATTERN: Final = re.compile(r"[^\W_][\w.:@-]{0,63}")
"""A user id: 1-64 letters and digits (of any script) and ``_ . : @ -``, starting with a
letter or digit: no path separators, whitespace or control characters. The feed service
accepts the same."""
ID_PATTERN: Final = re.compile(r"[^\W_][\w.:@-]{0,127}")
"""Any other id (event, item, request, session): the same characters, 1-128 of them."""
USER_ID_PATTERN_ASCII: Final = r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}"
ID_PATTERN_ASCII: Final = r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}"
"""The patterns above restricted to ASCII text, for RE2 (whose classes are ASCII): on an ASCII
string each matches exactly what its Unicode pattern matches."""

RAW_FIELDS: Final = (
    "event_id",
    "event_type",
    "user_id",
    "ts",
    "item_id",
    "request_id",
    "position",
    "session_id",
    "platform",
    "payload",
)


def _text(*checks: pa.Check, nullable: bool = False, unique: bool = False) -> pa.Column:
    """A column of str values (None where ``nullable``).

    The type is checked for the whole column at once (pandas' type inference, in C); pandera's
    own ``str`` check calls ``isinstance`` once per value, most of ingestion's validation time.
    """
    every_str = pa.Check(
        lambda s: str(infer_dtype(s, skipna=True)) in ("string", "empty"), name="str_values"
    )
    return pa.Column(object, [every_str, *checks], nullable=nullable, unique=unique)


CLEAN_EVENTS_SCHEMA = pa.DataFrameSchema(
    {
        "event_id": _text(unique=True),
        "event_type": _text(pa.Check.isin(EVENT_TYPES)),
        "user_id": _text(pa.Check.str_length(min_value=1)),
        "ts": pa.Column(pd.DatetimeTZDtype(tz="UTC")),
        "item_id": _text(nullable=True),
        "request_id": _text(nullable=True),
        "position": pa.Column("Int64", pa.Check.ge(0), nullable=True),
        "session_id": _text(nullable=True),
        "platform": _text(nullable=True),
        "payload": _text(nullable=True),
        "source_file": _text(),
        "line_no": pa.Column("int64", pa.Check.ge(1)),
    },
    checks=[
        pa.Check(
            lambda df: ~df["event_type"].isin(list(ITEM_EVENT_TYPES)) | df["item_id"].notna(),
            name="item_event_has_item_id",
        ),
    ],
    strict=True,
    name="clean_events",
)
"""Clean events as written to ``warehouse/events``; ``user_id`` is already pseudonymized."""

CLEAN_EVENT_COLUMNS: Final = tuple(CLEAN_EVENTS_SCHEMA.columns)

QUARANTINE_COLUMNS: Final = ("source_file", "line_no", "reason", "raw")


def clean_events_from_records(records: list[dict[str, Any]]) -> pd.DataFrame:
    """A validated clean-events frame from partial records (hand-written histories, replays).

    Missing fields are null; ``event_id`` defaults to ``e0000``, ``e0001``, ... by position,
    ``source_file`` to ``"records"`` and ``line_no`` to the 1-based position.
    """
    full = [
        dict.fromkeys(CLEAN_EVENT_COLUMNS)
        | {"event_id": f"e{i:04d}", "source_file": "records", "line_no": i + 1}
        | record
        for i, record in enumerate(records)
    ]
    frame = pd.DataFrame(full, columns=list(CLEAN_EVENT_COLUMNS))
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["position"] = frame["position"].astype("Int64")
    frame["line_no"] = frame["line_no"].astype("int64")
    validated: pd.DataFrame = CLEAN_EVENTS_SCHEMA.validate(frame)
    return validated


def empty_clean_events() -> pd.DataFrame:
    """An empty frame with the clean-events columns and dtypes."""
    return pd.DataFrame(
        {
            "event_id": pd.Series(dtype=str),
            "event_type": pd.Series(dtype=str),
            "user_id": pd.Series(dtype=str),
            "ts": pd.Series(dtype="datetime64[ns, UTC]"),
            "item_id": pd.Series(dtype=object),
            "request_id": pd.Series(dtype=object),
            "position": pd.Series(dtype="Int64"),
            "session_id": pd.Series(dtype=object),
            "platform": pd.Series(dtype=object),
            "payload": pd.Series(dtype=object),
            "source_file": pd.Series(dtype=str),
            "line_no": pd.Series(dtype="int64"),
        }
    )
