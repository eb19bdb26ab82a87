"""Validate one day of landed collector batches into clean events and a quarantine.

Row accounting always balances: every line read ends up in exactly one of *accepted*,
*quarantined* (with a reason, its source file and line), *duplicates* (a re-sent event id
whose first copy was accepted) or *erased* (an event of a user on the erasure list, see
``privacy.erasure``).

Health fields (``privacy.health.is_health_field``: any spelling of a health measurement) are
removed from payloads here: they stay in the landing zone and never reach the clean warehouse.

Every physical line counts (lines are split on newline bytes only) and each is judged alone: a
line too long, not UTF-8, nested too deep, not JSON, with a non-finite number, an id outside
the contract, a number out of its column's range, or a timestamp beyond the future bound or
older than the retention horizon is quarantined with its reason, escaped text and line number;
the rest of its file is kept. De-duplication covers the retention window.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.schema import (
    CLEAN_EVENT_COLUMNS,
    CLEAN_EVENTS_SCHEMA,
    EVENT_TYPES,
    EXPOSURE_SOURCE,
    ID_PATTERN,
    ITEM_EVENT_TYPES,
    QUARANTINE_COLUMNS,
    RAW_FIELDS,
    USER_ID_PATTERN,
    empty_clean_events,
)
from fitpulse_orchestration.privacy.health import strip_health_fields
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.privacy.raw_zone import line_user
from fitpulse_orchestration.privacy.suppression import erased_pseudonyms, erased_raw_id
from fitpulse_orchestration.storage import ObjectStore, read_parquet, write_parquet

FUTURE_TOLERANCE: Final = pd.Timedelta(minutes=10)
"""Clock skew allowed between a device's timestamp and the end of the batch's landing hour."""
STALE_AFTER: Final = pd.Timedelta(days=30)
"""How late an event may land: older than this before its landing day is ``stale_timestamp``
(the raw-event retention horizon; a phone offline for weeks still gets its events in)."""
MAX_LINE_BYTES: Final = 64 * 1024
"""Longest landed line; a longer one is quarantined as ``line_too_long``."""
MAX_DEPTH: Final = 16
"""Deepest nesting of a record (the record itself is depth 1); deeper is ``too_deep``."""
MAX_POSITION: Final = 2**31 - 1
"""Largest feed position (an int32 column)."""
RAW_PREVIEW_BYTES: Final = 4096
"""How much of an oversized line the quarantine keeps (escaped), with its length."""


@dataclass
class IngestResult:
    """One day's clean events, quarantine and accounting.

    ``events`` follows ``CLEAN_EVENTS_SCHEMA``; ``quarantine`` has ``QUARANTINE_COLUMNS``
    (``reason`` is ``;``-joined when a record breaks several rules).
    """

    events: pd.DataFrame
    quarantine: pd.DataFrame
    read: int
    duplicates: int
    files: int
    reasons: dict[str, int] = field(default_factory=dict)
    erased: int = 0
    health_fields_removed: int = 0
    erased_sources: list[str] = field(default_factory=list)
    """Landed batches that still hold lines of erased users (late arrivals to purge)."""

    @property
    def accepted(self) -> int:
        """Rows written to the clean table."""
        return len(self.events)

    @property
    def quarantined(self) -> int:
        """Rows written to the quarantine table."""
        return len(self.quarantine)

    @property
    def balanced(self) -> bool:
        """Whether read = accepted + quarantined + duplicates + erased."""
        return self.read == self.accepted + self.quarantined + self.duplicates + self.erased

    @property
    def quarantine_rate(self) -> float:
        """Quarantined share of the records read (0 when nothing was read)."""
        return self.quarantined / self.read if self.read else 0.0


def _is_nonempty_str(value: Any) -> bool:
    return value is None or (isinstance(value, str) and len(value) > 0)


def _id_column(pattern: re.Pattern[str], nullable: bool) -> pa.Column:
    """An id column: a non-empty string (``wrong_type``) matching ``pattern`` (``invalid_id``)."""

    def fits(value: Any) -> bool:
        # Non-strings and "" are ``wrong_type`` already; don't count them twice.
        return not isinstance(value, str) or not value or pattern.fullmatch(value) is not None

    checks = [_element(_is_nonempty_str, "wrong_type"), _element(fits, "invalid_id")]
    return pa.Column(object, checks, nullable=nullable)


def _position_ok(value: Any) -> bool:
    return not _is_int(value) or value is None or value <= MAX_POSITION


def _is_int(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


_TZ_SUFFIX = r"(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Parse ISO-8601 strings with an explicit offset to UTC; anything else becomes NaT.

    The one parser of event timestamps: validation and the clean table use its result, so a
    value that passes validation can always be converted.
    """
    is_str = values.map(lambda v: isinstance(v, str))
    text = values.where(is_str).astype(object)
    has_tz = text.str.contains(_TZ_SUFFIX, regex=True, na=False)
    parsed = pd.to_datetime(text.where(has_tz), utc=True, errors="coerce", format="ISO8601")
    return parsed.astype("datetime64[ns, UTC]")


def _is_object(value: Any) -> bool:
    return value is None or isinstance(value, dict)


def _element(check: Any, name: str) -> pa.Check:
    return pa.Check(check, element_wise=True, name=name, ignore_na=False)


def _future_ok(df: pd.DataFrame) -> pd.Series:
    return df["_ts"].isna() | (df["_ts"] <= df["_batch_end"] + FUTURE_TOLERANCE)


def _not_stale(df: pd.DataFrame) -> pd.Series:
    return df["_ts"].isna() | (df["_ts"] >= df["_oldest"])


def _ts_parses(df: pd.DataFrame) -> pd.Series:
    # Non-strings are already "wrong_type:ts" through the column check; don't count them twice.
    return df["ts"].isna() | ~df["ts"].map(lambda v: isinstance(v, str)) | df["_ts"].notna()


def _known_user_exposure(df: pd.DataFrame) -> pd.Series:
    """False for an impression the feed service logged for a user it did not know.

    The service serves any well-formed id (cold start), so a caller can make up ids; their
    exposures are logged, flagged ``known_user: false``, and never become training data.
    """
    return ~df["payload"].map(
        lambda p: (
            isinstance(p, dict)
            and p.get("source") == EXPOSURE_SOURCE
            and p.get("known_user") is False
        )
    )


def _needs(column: str, event_types: Iterable[str]) -> Any:
    types = list(event_types)

    def check(df: pd.DataFrame) -> pd.Series:
        return ~df["event_type"].isin(types) | df[column].notna()

    return check


RAW_SCHEMA: Final = pa.DataFrameSchema(
    {
        "event_id": _id_column(ID_PATTERN, nullable=False),
        "event_type": pa.Column(
            object,
            [
                _element(lambda v: v is None or isinstance(v, str), "wrong_type"),
                _element(lambda v: v is None or v in EVENT_TYPES, "unknown_event_type"),
            ],
            nullable=False,
        ),
        "user_id": _id_column(USER_ID_PATTERN, nullable=False),
        "ts": pa.Column(
            object,
            _element(lambda v: v is None or isinstance(v, str), "wrong_type"),
            nullable=False,
        ),
        "item_id": _id_column(ID_PATTERN, nullable=True),
        "request_id": _id_column(ID_PATTERN, nullable=True),
        "position": pa.Column(
            object,
            [
                _element(_is_int, "wrong_type"),
                _element(lambda v: not _is_int(v) or v is None or v >= 0, "negative"),
                _element(_position_ok, "out_of_range"),
            ],
            nullable=True,
        ),
        "session_id": _id_column(ID_PATTERN, nullable=True),
        "platform": pa.Column(object, _element(_is_nonempty_str, "wrong_type"), nullable=True),
        "payload": pa.Column(object, _element(_is_object, "wrong_type"), nullable=True),
        "_batch_end": pa.Column(pd.DatetimeTZDtype(tz="UTC")),
        "_ts": pa.Column(pd.DatetimeTZDtype(tz="UTC"), nullable=True),
        "_oldest": pa.Column(pd.DatetimeTZDtype(tz="UTC")),
    },
    checks=[
        pa.Check(_ts_parses, name="wrong_type:ts"),
        pa.Check(_future_ok, name="future_timestamp:ts"),
        pa.Check(_not_stale, name="stale_timestamp:ts"),
        pa.Check(_needs("item_id", ITEM_EVENT_TYPES), name="missing_field:item_id"),
        pa.Check(_needs("request_id", ["impression"]), name="missing_field:request_id"),
        pa.Check(_known_user_exposure, name="unknown_user:user_id"),
    ],
    name="raw_events",
)
"""Landed records as parsed from JSON, before any type coercion (columns are objects)."""


def _reason(column: Any, check: str) -> str:
    """Map a pandera failure to a stable quarantine reason such as ``missing_field:ts``."""
    if check == "not_nullable":
        return f"missing_field:{column}"
    if check == "unknown_event_type":
        return "unknown_event_type"
    if ":" in check or column is None or column == "raw_events":
        return check
    return f"{check}:{column}"


def _batch_end(key: str, day: dt.date) -> pd.Timestamp:
    hour = layout.hour_of_key(key)
    end = pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=24 if hour is None else hour + 1)
    return end


def _read_lines(key: str, data: bytes) -> tuple[list[bytes] | None, str | None]:
    """The file's physical lines (split on newline bytes only; a final newline ends the last line).

    Only the container is checked here (a broken gzip stream is ``unreadable_file``); each line
    is decoded and parsed on its own (``_parse_line``), so one bad line costs only itself.
    """
    try:
        raw = gzip.decompress(data) if key.endswith(".gz") else data
    except (OSError, EOFError, zlib.error) as exc:
        return None, f"unreadable_file:{type(exc).__name__}"
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines], None


def _escaped(line: bytes) -> str:
    """``line`` as text for the quarantine: invalid UTF-8 escaped, oversized lines cut."""
    if len(line) > MAX_LINE_BYTES:
        head = line[:RAW_PREVIEW_BYTES].decode("utf-8", "backslashreplace")
        return f"{head}... [{len(line)} bytes]"
    return line.decode("utf-8", "backslashreplace")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value (1 for a flat object), counted up to ``limit + 1``."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _parse_line(line: bytes) -> tuple[Any, str | None]:
    """The record of one line, or why the line is quarantined."""
    if len(line) > MAX_LINE_BYTES:
        return None, "line_too_long"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not_utf8"
    if not text.strip():
        return None, "empty_record"
    try:
        record = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        return None, "too_deep"
    except ValueError as exc:  # JSONDecodeError is a ValueError too
        if str(exc).startswith("non-finite number"):
            return None, "non_finite_number"
        return None, "malformed_json"
    if not isinstance(record, dict):
        return None, "not_an_object"
    if _depth(record, MAX_DEPTH) > MAX_DEPTH:
        return None, "too_deep"
    return record, None


def ingest_batches(
    batches: Iterable[tuple[str, bytes]],
    day: dt.date,
    pseudonymizer: Pseudonymizer,
    accepted_before: Callable[[pd.Series], AbstractSet[str]] | None = None,
    erased_users: frozenset[str] = frozenset(),
) -> IngestResult:
    """Parse, validate, de-duplicate and pseudonymize one day of landed batches.

    Args:
        batches: ``(object key, file bytes)`` of each landed batch, in landing order. Keys carry
            ``hour=HH``; a record whose timestamp is after the end of its hour (plus
            ``FUTURE_TOLERANCE``) is quarantined as ``future_timestamp``.
        day: the landing date of the partition.
        pseudonymizer: keyed hash that replaces user ids.
        accepted_before: which of the given event ids earlier partitions already accepted
            (a re-send can cross midnight); records repeating them count as duplicates. None:
            no earlier partition.
        erased_users: pseudonyms on the erasure list; their valid events count as ``erased``
            and are not written.

    Returns:
        Clean events (first copy of each event id, in landing order), the quarantine and counts.
    """
    records: list[dict[str, Any]] = []
    raw_lines: list[str] = []
    quarantine: list[tuple[str, int, str, str]] = []
    read = files = 0
    for key, data in batches:
        files += 1
        lines, error = _read_lines(key, data)
        if lines is None:
            read += 1
            quarantine.append((key, 0, str(error), ""))
            continue
        end = _batch_end(key, day)
        for line_no, line in enumerate(lines, start=1):
            read += 1
            rec, problem = _parse_line(line)
            if problem is not None:
                quarantine.append((key, line_no, problem, _escaped(line)))
                continue
            row = {name: rec.get(name) for name in RAW_FIELDS}
            row["_batch_end"] = end
            row["_source_file"] = key
            row["_line_no"] = line_no
            records.append(row)
            raw_lines.append(line.decode("utf-8"))

    # Object columns keep each JSON value as parsed, so type errors stay visible to the schema.
    frame = pd.DataFrame(
        {
            name: pd.Series([rec[name] for rec in records], dtype=object)
            for name in (*RAW_FIELDS, "_source_file", "_line_no")
        }
    )
    frame["_batch_end"] = pd.to_datetime(
        pd.Series([rec["_batch_end"] for rec in records], dtype=object), utc=True
    )
    frame["_ts"] = parse_timestamps(frame["ts"])
    frame["_oldest"] = pd.Series(
        pd.Timestamp(day, tz="UTC") - STALE_AFTER, index=frame.index, dtype="datetime64[ns, UTC]"
    )
    bad_reasons = validate_raw(frame)
    for idx, reason in bad_reasons.items():
        quarantine.append(
            (frame.at[idx, "_source_file"], int(frame.at[idx, "_line_no"]), reason, raw_lines[idx])
        )
    good = frame.drop(index=list(bad_reasons))
    dup_mask = good["event_id"].duplicated(keep="first")
    if accepted_before is not None and len(good):
        dup_mask |= good["event_id"].isin(accepted_before(good.loc[~dup_mask, "event_id"]))
    duplicates = int(dup_mask.sum())
    events, health_removed = _to_clean(good[~dup_mask], pseudonymizer)
    erased_mask = events["user_id"].isin(erased_users)
    erased = int(erased_mask.sum())
    erased_sources = set(events.loc[erased_mask, "source_file"])
    if erased:
        events = events.loc[~erased_mask].reset_index(drop=True)
    if erased_users:
        # A rejected record of an erased user is not kept in quarantine either.
        is_erased = erased_raw_id(pseudonymizer, erased_users)
        rejected = [is_erased(line_user(row[3])) for row in quarantine]
        erased += sum(rejected)
        erased_sources |= {row[0] for row, gone in zip(quarantine, rejected, strict=True) if gone}
        quarantine = [row for row, gone in zip(quarantine, rejected, strict=True) if not gone]
    quarantine_frame = pd.DataFrame(quarantine, columns=list(QUARANTINE_COLUMNS))
    quarantine_frame["line_no"] = quarantine_frame["line_no"].astype("int64")
    reasons = Counter(r for rs in quarantine_frame["reason"] for r in rs.split(";"))
    return IngestResult(
        events,
        quarantine_frame,
        read,
        duplicates,
        files,
        dict(reasons),
        erased=erased,
        health_fields_removed=health_removed,
        erased_sources=sorted(erased_sources),
    )


def validate_raw(frame: pd.DataFrame) -> dict[int, str]:
    """Return ``{row index: reason}`` for every parsed record that breaks ``RAW_SCHEMA``."""
    if frame.empty:
        return {}
    try:
        RAW_SCHEMA.validate(frame, lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases
        rows = cases[cases["index"].notna()]
        unplaced = cases[cases["index"].isna()]
        if not unplaced.empty:
            raise ValueError(
                "raw schema failed at table level (not row level): "
                + "; ".join(
                    f"{c}:{k}" for c, k in zip(unplaced["column"], unplaced["check"], strict=True)
                )
            ) from err
        reasons: dict[int, set[str]] = {}
        for column, check, index in zip(rows["column"], rows["check"], rows["index"], strict=True):
            reasons.setdefault(int(index), set()).add(_reason(column, str(check)))
        return {idx: ";".join(sorted(r)) for idx, r in sorted(reasons.items())}
    return {}


def _clean_payload(payload: dict[str, Any] | None) -> tuple[str | None, int]:
    if payload is None:
        return None, 0
    kept, removed = strip_health_fields(payload)
    return json.dumps(kept, sort_keys=True), removed


def _to_clean(frame: pd.DataFrame, pseudonymizer: Pseudonymizer) -> tuple[pd.DataFrame, int]:
    """Clean events and the number of health fields removed from their payloads."""
    if frame.empty:
        return empty_clean_events(), 0
    payloads = [_clean_payload(p) for p in frame["payload"]]
    out = pd.DataFrame(
        {
            "event_id": frame["event_id"].astype(str),
            "event_type": frame["event_type"].astype(str),
            "user_id": pseudonymizer.pseudonymize_many(frame["user_id"].astype(str)),
            "ts": frame["_ts"],
            "item_id": frame["item_id"].astype(object),
            "request_id": frame["request_id"].astype(object),
            "position": pd.array(frame["position"].tolist(), dtype="Int64"),
            "session_id": frame["session_id"].astype(object),
            "platform": frame["platform"].astype(object),
            "payload": [text for text, _ in payloads],
            "source_file": frame["_source_file"].astype(str),
            "line_no": frame["_line_no"].astype("int64"),
        }
    ).reset_index(drop=True)
    out["ts"] = out["ts"].astype("datetime64[ns, UTC]")
    for col in ("item_id", "request_id", "session_id", "platform"):
        out[col] = out[col].where(out[col].notna(), None)
    validated: pd.DataFrame = CLEAN_EVENTS_SCHEMA.validate(out[list(CLEAN_EVENT_COLUMNS)])
    return validated, sum(removed for _, removed in payloads)


def ingest_day(
    store: ObjectStore,
    day: dt.date,
    pseudonymizer: Pseudonymizer,
    *,
    keys: Iterable[str] | None = None,
    erased: frozenset[str] | None = None,
) -> IngestResult:
    """Read every batch that landed on ``day`` from ``store`` and ingest it (nothing written).

    Event ids accepted in the clean partitions of the ``STALE_AFTER`` days before ``day`` count
    as seen: a re-send is a duplicate for as long as its event could land at all (older events
    are ``stale_timestamp``). Partitions should therefore be ingested in date order (the daily
    schedule does); a backfill run out of order can miss such a re-send. Users on the erasure
    list are skipped (counted as ``erased``).

    ``keys`` (the day's landing keys) and ``erased`` (the erasure list) are read from ``store``
    when not given; a caller that has already read them (to fingerprint what it ingests) passes
    them, so the run ingests exactly what it recorded.
    """
    if keys is None:
        keys = store.iter_keys(layout.landing_events_prefix(day))
    start = day - STALE_AFTER.to_pytimedelta()
    return ingest_batches(
        ((key, store.get_bytes(key)) for key in keys),
        day,
        pseudonymizer,
        lambda ids: accepted_among(store, start, day, ids),
        erased_pseudonyms(store) if erased is None else erased,
    )


def accepted_among(store: ObjectStore, start: dt.date, end: dt.date, ids: pd.Series) -> set[str]:
    """Which of ``ids`` the clean partitions dated ``start`` (inclusive) to ``end`` accepted.

    A semi-join, one partition's ``event_id`` column at a time: the memory is the candidates
    and one day's ids, not the ids of the whole window (about 175 GiB as a set at full scale).
    """
    wanted = pd.Index(ids.unique())
    found: set[str] = set()
    for offset in range((end - start).days):
        key = layout.warehouse_key(
            layout.WAREHOUSE_EVENTS, start + dt.timedelta(days=offset), "events"
        )
        if store.exists(key):
            earlier = read_parquet(store, key, columns=["event_id"])["event_id"]
            found.update(earlier[earlier.isin(wanted)])
    return found


def write_ingested(store: ObjectStore, day: dt.date, result: IngestResult) -> dict[str, str]:
    """Write the day's clean and quarantine partitions (replacing earlier runs of the day)."""
    events_key = layout.warehouse_key(layout.WAREHOUSE_EVENTS, day, "events")
    quarantine_key = layout.warehouse_key(layout.WAREHOUSE_QUARANTINE, day, "quarantine")
    write_parquet(store, events_key, result.events)
    write_parquet(store, quarantine_key, result.quarantine)
    return {"events": store.uri(events_key), "quarantine": store.uri(quarantine_key)}


def read_clean_events(store: ObjectStore, days: Iterable[dt.date] | None = None) -> pd.DataFrame:
    """Concatenate clean event partitions (all of them, or the given days), sorted by time."""
    keys = store.list_keys(f"{layout.WAREHOUSE_EVENTS}/")
    wanted = None if days is None else set(days)
    frames = [
        read_parquet(store, key)
        for key in keys
        if key.endswith(".parquet") and (wanted is None or layout.date_of_key(key) in wanted)
    ]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return empty_clean_events()
    events = pd.concat(frames, ignore_index=True)
    order = np.argsort(events["ts"].to_numpy(), kind="stable")
    return events.iloc[order].reset_index(drop=True)
