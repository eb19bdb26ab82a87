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
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import pandas as pd
import pyarrow as pat
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fitpulse_orchestration import layout
from fitpulse_orchestration.events import columns
from fitpulse_orchestration.events.schema import (
    CLEAN_EVENTS_SCHEMA,
    EVENT_TYPES,
    EXPOSURE_SOURCE,
    ID_PATTERN,
    ID_PATTERN_ASCII,
    ITEM_EVENT_TYPES,
    QUARANTINE_COLUMNS,
    RAW_FIELDS,
    USER_ID_PATTERN,
    USER_ID_PATTERN_ASCII,
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
CHUNK_LINES: Final = 100_000
"""Parsed records checked at a time: parsed JSON takes about 2 KB a line, typed clean rows
about a third of that (``benchmarks/ingest_bench.py``)."""
RAW_PREVIEW_BYTES: Final = 4096
"""How much of an oversized line the quarantine keeps (escaped), with its length."""


@dataclass
class IngestResult:
    """One day's clean events, quarantine and accounting.

    ``events`` follows ``CLEAN_EVENTS_SCHEMA``; ``quarantine`` has ``QUARANTINE_COLUMNS``
    (``reason`` is ``;``-joined when a record breaks several rules).
    """

    events: pd.DataFrame
    """The clean rows, or none when they went to a sink (``ingest_batches``)."""
    quarantine: pd.DataFrame
    read: int
    accepted: int
    """Rows of the clean table."""
    duplicates: int
    files: int
    reasons: dict[str, int] = field(default_factory=dict)
    erased: int = 0
    health_fields_removed: int = 0
    erased_sources: list[str] = field(default_factory=list)
    """Landed batches that still hold lines of erased users (late arrivals to purge)."""

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


_IDS: Final = columns.IdPattern(ID_PATTERN, ID_PATTERN_ASCII)
_USER_IDS: Final = columns.IdPattern(USER_ID_PATTERN, USER_ID_PATTERN_ASCII)
_ID_FIELDS: Final = {
    "event_id": _IDS,
    "user_id": _USER_IDS,
    "item_id": _IDS,
    "request_id": _IDS,
    "session_id": _IDS,
}
_REQUIRED_FIELDS: Final = ("event_id", "event_type", "user_id", "ts")


_TZ_SUFFIX = r"(?:Z|[+-]\d{2}(?::?\d{2})?)$"
_CANONICAL_TS: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})$"
)
"""The shape collectors send; Arrow parses it, and gives what pandas gives (see tests)."""


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Parse ISO-8601 strings with an explicit offset to UTC; anything else becomes NaT.

    The one parser of event timestamps: validation and the clean table use its result, so a
    value that passes validation can always be converted. pandas' ISO-8601 parser decides.
    Values in the collectors' canonical shape (``_CANONICAL_TS``) are parsed by Arrow, which
    gives what pandas gives on that shape; when Arrow refuses one of them (a 30th of
    February), pandas parses them all, as it does every other value.
    """
    column = columns.RawColumn(values)
    nanos = np.full(len(values), np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    rest = column.is_str
    strings = column.text
    if strings is not None and len(strings):
        canonical = columns.bool_mask(pc.match_substring_regex(strings, _CANONICAL_TS), False)
        if canonical.any():
            try:
                fast = pc.cast(strings.filter(pat.array(canonical)), pat.timestamp("ns", tz="UTC"))
            except pat.ArrowInvalid:
                pass
            else:
                nanos[canonical] = fast.cast(pat.int64()).to_numpy()
                rest = rest & ~canonical
    if rest.any():
        text = values[rest].astype(object)
        has_tz = text.str.contains(_TZ_SUFFIX, regex=True, na=False)
        slow = pd.to_datetime(text.where(has_tz), utc=True, errors="coerce", format="ISO8601")
        nanos[rest] = slow.astype("datetime64[ns, UTC]").array.asi8
    stamps = pd.DatetimeIndex(nanos.view("datetime64[ns]")).tz_localize("UTC")
    return pd.Series(stamps, index=values.index)


def raw_failures(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every rule of the event contract a parsed record can break, as ``{reason: failing rows}``.

    ``frame`` holds ``RAW_FIELDS`` as parsed (object columns), ``_ts`` (``parse_timestamps`` of
    ``ts``), ``_batch_end`` (end of the landing hour) and ``_oldest`` (retention horizon). Each
    rule is one vectorised expression over the whole frame; a record breaking several rules
    gets every reason.
    """
    col = {name: columns.RawColumn(frame[name]) for name in RAW_FIELDS}
    fails: dict[str, np.ndarray] = {}
    for name in _REQUIRED_FIELDS:
        fails[f"missing_field:{name}"] = col[name].null
    for name, pattern in _ID_FIELDS.items():
        c = col[name]
        fails[f"wrong_type:{name}"] = ~(c.null | c.is_str) | c.is_empty_str()
        fails[f"invalid_id:{name}"] = c.mismatches(pattern)
    event_type = col["event_type"]
    fails["wrong_type:event_type"] = ~(event_type.null | event_type.is_str)
    fails["unknown_event_type"] = ~(event_type.null | event_type.in_set(EVENT_TYPES))
    ts = col["ts"]
    parsed = frame["_ts"].notna().to_numpy()
    # A ts that is not a str is wrong_type already; one that is but does not parse is too.
    fails["wrong_type:ts"] = ~(ts.null | ts.is_str) | (ts.is_str & ~parsed)
    position = col["position"]
    fails["wrong_type:position"] = ~(position.null | position.is_int)
    fails["negative:position"] = position.int_test(lambda v: v >= 0)
    fails["out_of_range:position"] = position.int_test(lambda v: v <= MAX_POSITION)
    platform = col["platform"]
    fails["wrong_type:platform"] = ~(platform.null | platform.is_str) | platform.is_empty_str()
    payload = col["payload"]
    fails["wrong_type:payload"] = ~(payload.null | payload.is_dict())
    when = frame["_ts"]
    fails["future_timestamp:ts"] = (
        parsed & (when > frame["_batch_end"] + FUTURE_TOLERANCE).to_numpy()
    )
    fails["stale_timestamp:ts"] = parsed & (when < frame["_oldest"]).to_numpy()
    fails["missing_field:item_id"] = event_type.in_set(ITEM_EVENT_TYPES) & col["item_id"].null
    fails["missing_field:request_id"] = event_type.in_set(["impression"]) & col["request_id"].null
    fails["unknown_user:user_id"] = _unknown_user_exposure(payload)
    return fails


def _unknown_user_exposure(payload: columns.RawColumn) -> np.ndarray:
    """Impressions the feed service logged for a user it did not know.

    The service serves any well-formed id (cold start), so a caller can make up ids; their
    exposures are logged, flagged ``known_user: false``, and never become training data.
    """
    bad = np.zeros(len(payload.values), dtype=bool)
    for i in np.flatnonzero(~payload.null):
        p = payload.values[i]
        bad[i] = (
            isinstance(p, dict)
            and p.get("source") == EXPOSURE_SOURCE
            and p.get("known_user") is False
        )
    return bad


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


_INT64_BOUND: Final = 2.0**63
"""orjson reads an integer beyond 64 bits as a float, the standard library as an int."""


def _parse_line(line: bytes) -> tuple[Any, str | None]:
    """The record of one line, or why the line is quarantined.

    orjson parses. A line it refuses goes to the standard library's parser
    (``_parse_line_stdlib``), which names the reason; orjson accepts only what that parser
    accepts, and parses it to the same value except for integers beyond 64 bits (a float for
    orjson, an int for the standard library). Only ``position`` and ``payload`` keep such a
    value's type (anywhere else a number is ``wrong_type`` either way), so a line with a float
    of that size there is parsed again by the standard library. Both paths give one answer
    (``tests/unit/events/test_hostile_lines.py``).
    """
    if len(line) > MAX_LINE_BYTES:
        return None, "line_too_long"
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return _parse_line_stdlib(line)
    if type(record) is dict and _may_hold_big_int(record):
        return _parse_line_stdlib(line)
    return _checked(record, line)


def _may_hold_big_int(record: dict[str, Any]) -> bool:
    position = record.get("position")
    if type(position) is float and abs(position) >= _INT64_BOUND:
        return True
    payload = record.get("payload")
    if not isinstance(payload, dict | list):
        return False
    stack = [payload]
    while stack:
        node = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if type(child) is float:
                if abs(child) >= _INT64_BOUND:
                    return True
            elif isinstance(child, dict | list):
                stack.append(child)
    return False


def _checked(record: Any, line: bytes) -> tuple[Any, str | None]:
    if not isinstance(record, dict):
        return None, "not_an_object"
    # A record is nested no deeper than it has openers: count them before walking it.
    if line.count(b"{") + line.count(b"[") > MAX_DEPTH and _depth(record, MAX_DEPTH) > MAX_DEPTH:
        return None, "too_deep"
    return record, None


def _parse_line_stdlib(line: bytes) -> tuple[Any, str | None]:
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
    return _checked(record, line)


def ingest_batches(
    batches: Iterable[tuple[str, bytes]],
    day: dt.date,
    pseudonymizer: Pseudonymizer,
    accepted_before: Callable[[pd.Series], AbstractSet[str]] | None = None,
    erased_users: frozenset[str] = frozenset(),
    chunk_lines: int = CHUNK_LINES,
    sink: Callable[[pd.DataFrame], None] | None = None,
) -> IngestResult:
    """Parse, validate, de-duplicate and pseudonymize one day of landed batches.

    Parsed records are checked ``chunk_lines`` at a time (``CHUNK_LINES``), and each chunk's
    accepted rows are final when it settles. With a ``sink`` they go there, chunk by chunk
    (``CleanPartitionWriter``), and what a call holds beyond one chunk is the event ids it has
    seen (for de-duplication) and the quarantine; without one they are collected in
    ``IngestResult.events``.

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
        chunk_lines: parsed records checked at a time; it changes no result, only the order of
            the quarantine (each chunk's unparseable lines, then its records that break rules).
        sink: called with each chunk's accepted rows (a validated frame, never empty), in
            landing order; ``IngestResult.events`` is then empty.

    Returns:
        Clean events (first copy of each event id, in landing order), the quarantine and counts.
    """
    quarantine: list[tuple[str, int, str, str]] = []
    landed = _Files(day)
    chunk = _Chunk()
    accept = _Acceptor(accepted_before, erased_users, sink)
    read = files = 0
    for key, data in batches:
        files += 1
        lines, error = _read_lines(key, data)
        if lines is None:
            read += 1
            quarantine.append((key, 0, str(error), ""))
            continue
        file_no = landed.add(key)
        read += len(lines)
        for line_no, line in enumerate(lines, start=1):
            rec, problem = _parse_line(line)
            if problem is not None:
                quarantine.append((key, line_no, problem, _escaped(line)))
                continue
            chunk.add(rec, line, line_no, file_no)
            if len(chunk.records) >= chunk_lines:
                accept(*chunk.settle(landed, pseudonymizer, quarantine))
                chunk = _Chunk()
    accept(*chunk.settle(landed, pseudonymizer, quarantine))

    erased, erased_sources = accept.erased, accept.erased_sources
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
        accept.events(),
        quarantine_frame,
        read,
        accept.accepted,
        accept.duplicates,
        files,
        dict(reasons),
        erased=erased,
        health_fields_removed=accept.health_removed,
        erased_sources=sorted(erased_sources),
    )


class SeenIds:
    """Event ids seen so far in a call, held compactly: sorted runs of their UTF-8 bytes.

    A Python ``set`` of ids takes about 150 B an id (``benchmarks/README.md``); here an id takes
    its own length. Runs are kept per byte length (``S<length>`` arrays, so no id is padded:
    ids never hold a NUL byte), and a run is merged into the one before it once that one is no
    larger, so a length has O(log n) runs and a lookup is a binary search in each.
    """

    def __init__(self) -> None:
        self._runs: dict[int, list[np.ndarray]] = {}

    @staticmethod
    def _by_length(ids: Iterable[str]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        encoded = [i.encode("utf-8") for i in ids]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        keys = np.array(encoded, dtype=bytes) if encoded else np.array([], dtype="S1")
        groups = {int(n): np.flatnonzero(lengths == n) for n in np.unique(lengths)}
        return keys, groups

    def _hits(self, length: int, wanted: np.ndarray) -> np.ndarray:
        """Per id of ``wanted`` (``S<length>``): whether a run of its length holds it."""
        hit = np.zeros(len(wanted), dtype=bool)
        for run in self._runs.get(length, ()):
            pos = np.minimum(np.searchsorted(run, wanted), len(run) - 1)
            hit |= run[pos] == wanted
        return hit

    def contains(self, ids: Iterable[str]) -> np.ndarray:
        """Per id: whether it was seen before."""
        keys, groups = self._by_length(ids)
        found = np.zeros(len(keys), dtype=bool)
        for length, rows in groups.items():
            found[rows] = self._hits(length, keys[rows].astype(f"S{length}"))
        return found

    def update(self, ids: pd.Series) -> np.ndarray:
        """Per id: whether it was seen before, in an earlier update or earlier in ``ids``.

        The first copy of every id not seen before is remembered.
        """
        seen = ids.duplicated(keep="first").to_numpy()
        keys, groups = self._by_length(ids)
        for length, rows in groups.items():
            wanted = keys[rows].astype(f"S{length}")
            seen[rows] |= self._hits(length, wanted)
            fresh = wanted[~seen[rows]]
            if not len(fresh):
                continue
            runs = self._runs.setdefault(length, [])
            runs.append(np.sort(fresh))
            while len(runs) > 1 and len(runs[-2]) <= len(runs[-1]):
                last = runs.pop()
                runs[-1] = np.sort(np.concatenate([runs[-1], last]))
        return seen

    def __len__(self) -> int:
        return sum(len(run) for runs in self._runs.values() for run in runs)


@dataclass
class _Acceptor:
    """De-duplicates, validates and erasure-filters each settled chunk, in landing order.

    A record is a duplicate when an earlier record of the call (any chunk) had its event id
    (``SeenIds``), or when ``accepted_before`` says an earlier partition accepted it: the first
    copy is kept.
    """

    accepted_before: Callable[[pd.Series], AbstractSet[str]] | None
    erased_users: frozenset[str]
    sink: Callable[[pd.DataFrame], None] | None
    seen: SeenIds = field(default_factory=SeenIds)
    parts: list[pd.DataFrame] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    erased: int = 0
    health_removed: int = 0
    erased_sources: set[str] = field(default_factory=set)

    def __call__(self, candidates: pd.DataFrame, removed: np.ndarray) -> None:
        if not len(candidates):
            return
        ids = candidates["event_id"]
        dup = self.seen.update(ids)
        if self.accepted_before is not None:
            dup |= ids.isin(self.accepted_before(ids[~dup])).to_numpy()
        duplicates = int(dup.sum())
        self.duplicates += duplicates
        kept = ~dup
        self.health_removed += int(removed[kept].sum())
        events: pd.DataFrame = CLEAN_EVENTS_SCHEMA.validate(
            candidates.loc[kept].reset_index(drop=True) if duplicates else candidates
        )
        erased_mask = events["user_id"].isin(self.erased_users)
        erased = int(erased_mask.sum())
        if erased:
            self.erased += erased
            self.erased_sources.update(events.loc[erased_mask, "source_file"])
            events = events.loc[~erased_mask].reset_index(drop=True)
        if not len(events):
            return
        self.accepted += len(events)
        if self.sink is None:
            self.parts.append(events)
        else:
            self.sink(events)

    def events(self) -> pd.DataFrame:
        """The collected rows (none when a sink took them)."""
        if not self.parts:
            empty: pd.DataFrame = CLEAN_EVENTS_SCHEMA.validate(empty_clean_events())
            return empty
        return pd.concat(self.parts, ignore_index=True) if len(self.parts) > 1 else self.parts[0]


def validate_raw(frame: pd.DataFrame) -> dict[int, str]:
    """Return ``{row index: reason}`` for every parsed record that breaks the event contract.

    A record breaking several rules gets them all, sorted and ``;``-joined.
    """
    if frame.empty:
        return {}
    reasons: dict[int, list[str]] = {}
    for reason, failing in raw_failures(frame).items():
        for row in np.flatnonzero(failing):
            reasons.setdefault(int(frame.index[row]), []).append(reason)
    return {idx: ";".join(sorted(r)) for idx, r in sorted(reasons.items())}


def _clean_payload(payload: dict[str, Any]) -> tuple[str, int]:
    kept, removed = strip_health_fields(payload)
    return json.dumps(kept, sort_keys=True), removed


class _Files:
    """The landed files of one call: key and end of the landing hour of each readable one."""

    def __init__(self, day: dt.date) -> None:
        self.day = day
        self.keys: list[str] = []
        self.ends: list[pd.Timestamp] = []

    def add(self, key: str) -> int:
        self.keys.append(key)
        self.ends.append(_batch_end(key, self.day))
        return len(self.keys) - 1


@dataclass
class _Chunk:
    """Parsed records waiting for the contract's checks (at most ``chunk_lines`` of them)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    raw_lines: list[bytes] = field(default_factory=list)
    line_nos: list[int] = field(default_factory=list)
    file_nos: list[int] = field(default_factory=list)

    def add(self, record: dict[str, Any], line: bytes, line_no: int, file_no: int) -> None:
        self.records.append(record)
        self.raw_lines.append(line)
        self.line_nos.append(line_no)
        self.file_nos.append(file_no)

    def settle(
        self,
        files: _Files,
        pseudonymizer: Pseudonymizer,
        quarantine: list[tuple[str, int, str, str]],
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """Check the records; quarantine the failures; the rest as clean rows (not de-duplicated).

        Returns the clean rows (``CLEAN_EVENT_COLUMNS``) and the health fields removed from each.
        """
        records = self.records
        # Object columns keep each JSON value as parsed, so type errors stay visible to the rules.
        frame = pd.DataFrame(
            {
                name: np.fromiter((r.get(name) for r in records), dtype=object, count=len(records))
                for name in RAW_FIELDS
            },
            copy=False,
        )
        file_index = np.asarray(self.file_nos, dtype=np.int64)
        sources = np.asarray(files.keys, dtype=object)[file_index]
        frame["_source_file"] = pd.Series(sources, dtype=object)
        frame["_line_no"] = np.asarray(self.line_nos, dtype=np.int64)
        ends = pd.DatetimeIndex(files.ends, dtype="datetime64[ns, UTC]")
        frame["_batch_end"] = pd.Series(ends.take(file_index), dtype="datetime64[ns, UTC]")
        frame["_ts"] = parse_timestamps(frame["ts"])
        frame["_oldest"] = pd.Series(
            pd.Timestamp(files.day, tz="UTC") - STALE_AFTER,
            index=frame.index,
            dtype="datetime64[ns, UTC]",
        )
        bad_reasons = validate_raw(frame)
        for idx, reason in bad_reasons.items():
            row = (sources[idx], self.line_nos[idx], reason, self.raw_lines[idx].decode("utf-8"))
            quarantine.append(row)
        good = np.ones(len(frame), dtype=bool)
        good[list(bad_reasons)] = False  # the frame's index is its row number
        return _to_clean(frame, np.flatnonzero(good), pseudonymizer)


def _to_clean(
    frame: pd.DataFrame, rows: np.ndarray, pseudonymizer: Pseudonymizer
) -> tuple[pd.DataFrame, np.ndarray]:
    """Clean rows of the parsed records at ``rows``, and the health fields removed from each."""
    if not len(rows):
        return empty_clean_events(), np.zeros(0, dtype=np.int64)

    def column(name: str) -> np.ndarray:
        values: np.ndarray = frame[name].to_numpy(dtype=object)[rows]
        return values

    # Every value here passed the contract: ids and types are str, positions int or None.
    payload_in = column("payload")
    payload_out = np.full(len(rows), None, dtype=object)
    removed = np.zeros(len(rows), dtype=np.int64)
    for i in np.flatnonzero(~pd.isna(payload_in)):
        payload_out[i], removed[i] = _clean_payload(payload_in[i])
    out = pd.DataFrame(
        {
            "event_id": column("event_id"),
            "event_type": column("event_type"),
            "user_id": np.asarray(pseudonymizer.pseudonymize_many(column("user_id")), dtype=object),
            "ts": frame["_ts"].array.take(rows),
            "item_id": column("item_id"),
            "request_id": column("request_id"),
            "position": pd.array(column("position"), dtype="Int64"),
            "session_id": column("session_id"),
            "platform": column("platform"),
            "payload": payload_out,
            "source_file": column("_source_file"),
            "line_no": frame["_line_no"].to_numpy(dtype=np.int64)[rows],
        }
    )
    return out, removed


def ingest_day(
    store: ObjectStore,
    day: dt.date,
    pseudonymizer: Pseudonymizer,
    *,
    keys: Iterable[str] | None = None,
    erased: frozenset[str] | None = None,
    sink: Callable[[pd.DataFrame], None] | None = None,
) -> IngestResult:
    """Read every batch that landed on ``day`` from ``store`` and ingest it (nothing written).

    The batches are read one at a time; ``sink`` takes the accepted rows chunk by chunk
    (``ingest_batches``), so with a ``CleanPartitionWriter`` the day's clean rows are never
    held as a frame.

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
        sink=sink,
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


CLEAN_EVENTS_ARROW: Final = pat.schema(
    [
        ("event_id", pat.string()),
        ("event_type", pat.string()),
        ("user_id", pat.string()),
        ("ts", pat.timestamp("ns", tz="UTC")),
        ("item_id", pat.string()),
        ("request_id", pat.string()),
        ("position", pat.int64()),
        ("session_id", pat.string()),
        ("platform", pat.string()),
        ("payload", pat.string()),
        ("source_file", pat.string()),
        ("line_no", pat.int64()),
    ]
)
"""The clean partition's Arrow schema: every chunk is written with the same column types, so a
chunk whose optional column is all null does not change the file's."""


class CleanPartitionWriter:
    """A day's clean partition, written as Parquet row groups (zstd) as its chunks settle.

    A ``sink`` for ``ingest_batches``: each call appends one row group to a temporary file, so
    the partition's rows are not held in memory, not even compressed; ``put`` closes the file
    and stores it (``ObjectStore.put_file``). The temporary file is deleted by ``put``, or with
    the writer when it is dropped unput (a failed ingestion).
    """

    def __init__(self) -> None:
        self._file = tempfile.NamedTemporaryFile(prefix="fitpulse-clean-", suffix=".parquet")
        self._writer: pq.ParquetWriter | None = None

    def __call__(self, events: pd.DataFrame) -> None:
        """Append ``events`` (validated clean rows) as a row group."""
        table = pat.Table.from_pandas(events, schema=CLEAN_EVENTS_ARROW, preserve_index=False)
        if self._writer is None:
            # The first chunk's pandas metadata (Int64 positions, UTC timestamps) is the file's.
            self._writer = pq.ParquetWriter(self._file.name, table.schema, compression="zstd")
        self._writer.write_table(table)

    def put(self, store: ObjectStore, key: str) -> None:
        """Close the file (an empty partition when no chunk came) and store it under ``key``."""
        if self._writer is None:
            self(CLEAN_EVENTS_SCHEMA.validate(empty_clean_events()))
        assert self._writer is not None
        self._writer.close()
        try:
            store.put_file(key, Path(self._file.name))
        finally:
            self._file.close()


def write_ingested(
    store: ObjectStore,
    day: dt.date,
    result: IngestResult,
    clean: CleanPartitionWriter | None = None,
) -> dict[str, str]:
    """Write the day's clean and quarantine partitions (replacing earlier runs of the day).

    ``clean``: the writer ``result``'s rows were streamed to (``ingest_day(sink=clean)``);
    without it ``result.events`` are written.
    """
    events_key = layout.warehouse_key(layout.WAREHOUSE_EVENTS, day, "events")
    quarantine_key = layout.warehouse_key(layout.WAREHOUSE_QUARANTINE, day, "quarantine")
    if clean is None:
        clean = CleanPartitionWriter()
        if len(result.events):
            clean(result.events)
    clean.put(store, events_key)
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
