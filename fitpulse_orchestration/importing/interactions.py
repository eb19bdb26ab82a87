"""Land an external interaction log in the collector's format.

A log of ``(user id, item id, timestamp, event type or weight)`` rows, as CSV/TSV or Parquet,
is written to the landing zone exactly as the app's collector writes it: gzipped NDJSON batches
at ``layout.landing_events_key(day, hour, batch)``, bucketed by the UTC date and hour of each
row's timestamp. Ingestion then validates, de-duplicates and pseudonymizes it like any other
batch, so a real log goes through the same pipeline as the synthetic world (the issue asks for
"a documented import path for external interaction logs"). Only interactions are needed: no
catalog, profiles or impressions.

Rows that cannot become a valid record (no user, item or timestamp; an unparseable timestamp;
an event type that is not in ``EVENT_TYPES`` after mapping; a weight that is not a number) are
not landed, because a record without a timestamp has no landing partition to be quarantined
in. They are written instead to ``landing/import_rejects/<stem>-<hash8>.csv`` with their row
number and reason, and counted, so ``rows_read == rows_landed + rows_rejected`` always holds.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.schema import EVENT_TYPES, ID_PATTERN, USER_ID_PATTERN
from fitpulse_orchestration.storage import ObjectStore

IMPORT_REJECTS: Final = layout.IMPORT_REJECTS
"""Prefix of the per-file CSVs of rows an import could not land."""

DEFAULT_GRADES: Final = ((5.0, "workout_complete"), (4.0, "workout_start"), (3.0, "click"))
"""Weight thresholds for a 1-5 rating scale; a weight below the lowest one is an impression."""

BELOW_GRADES_EVENT: Final = "impression"

PARQUET_SUFFIXES: Final = frozenset({".parquet", ".pq"})
TEXT_SUFFIXES: Final = frozenset({".csv", ".tsv", ".data", ".txt"})
TAB_SUFFIXES: Final = frozenset({".tsv", ".data"})
COMPRESSION_SUFFIXES: Final = frozenset({".gz", ".bz2", ".xz", ".zst", ".zip"})
TS_UNITS: Final = ("s", "ms")

# Epoch values whose nanosecond count overflows int64 make pandas raise instead of coercing.
_MAX_EPOCH_SECONDS: Final = 9.2e9
_UNSAFE_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class ImportOptions:
    """How the columns of an external log map onto the event contract.

    Exactly one of ``event_col`` and ``weight_col`` is used; set the other to None (``event_col``
    defaults to ``"event_type"``, so a weighted import passes ``event_col=None``).

    Attributes:
        user_col: column holding the app's raw user id (pseudonymized later, at ingestion).
        item_col: column holding the catalog item id.
        ts_col: column holding when the interaction happened.
        event_col: column holding an event type, mapped through ``event_map``.
        weight_col: column holding a numeric weight (a rating, a dwell score), turned into an
            event type through ``grades``.
        ts_unit: None to parse timestamps as ISO-8601 strings or native datetimes; ``"s"`` or
            ``"ms"`` for numeric Unix epochs. Timestamps without a timezone are taken as UTC.
        event_map: source event name -> one of ``EVENT_TYPES``; names not in it pass through.
        grades: ``(threshold, event_type)`` pairs; a weight gets the event type of the highest
            threshold it reaches, and a weight below every threshold becomes an impression.
        sep: field separator of a text file; None picks tab for ``.tsv``/``.data`` and comma
            otherwise.
        column_names: names of the columns of a text file without a header row (for instance
            MovieLens ``u.data``: ``("user_id", "item_id", "rating", "timestamp")``).
    """

    user_col: str = "user_id"
    item_col: str = "item_id"
    ts_col: str = "timestamp"
    event_col: str | None = "event_type"
    weight_col: str | None = None
    ts_unit: str | None = None
    event_map: Mapping[str, str] = field(default_factory=dict)
    grades: tuple[tuple[float, str], ...] = DEFAULT_GRADES
    sep: str | None = None
    column_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (self.event_col is None) == (self.weight_col is None):
            raise ValueError(
                "use exactly one of event_col and weight_col "
                f"(got event_col={self.event_col!r}, weight_col={self.weight_col!r}); "
                "for a weighted log pass event_col=None"
            )
        if self.ts_unit not in (None, *TS_UNITS):
            raise ValueError(f"ts_unit must be None, 's' or 'ms', not {self.ts_unit!r}")
        bad_targets = sorted({v for v in self.event_map.values() if v not in EVENT_TYPES})
        if bad_targets:
            raise ValueError(
                f"event_map targets {bad_targets} are not event types; use one of {EVENT_TYPES}"
            )
        if not self.grades:
            raise ValueError("grades must hold at least one (threshold, event_type) pair")
        for threshold, event_type in self.grades:
            if not math.isfinite(threshold):
                raise ValueError(f"grade threshold {threshold!r} is not a finite number")
            if event_type not in EVENT_TYPES:
                raise ValueError(f"grade event type {event_type!r} is not one of {EVENT_TYPES}")

    @property
    def source_columns(self) -> list[str]:
        """The mapped columns, in a stable order and without repeats."""
        mapped = (self.user_col, self.item_col, self.ts_col, self.event_col, self.weight_col)
        return list(dict.fromkeys(c for c in mapped if c is not None))


@dataclass
class ImportSummary:
    """What one import read, landed and rejected.

    Attributes:
        rows_read: data rows in the source file (a header row is not counted).
        rows_landed: rows written to the landing zone.
        rows_rejected: rows written to ``rejects_file`` instead.
        reject_reasons: reason -> rejected rows with it (a row breaking several rules counts
            once per reason, as in ingestion's quarantine).
        files_written: landing-zone keys of the event batches written, sorted.
        days: UTC dates that received events, sorted; ingest these partitions next.
        event_counts: event type -> rows landed with it.
        duplicate_rows: landed rows repeating an earlier row of the file (same user, item,
            millisecond and source event or weight); they share its event id, so ingestion
            counts them as duplicates.
        rejects_file: key of the rejects CSV, or None when every row landed.
    """

    rows_read: int
    rows_landed: int
    rows_rejected: int
    reject_reasons: dict[str, int]
    files_written: list[str]
    days: list[dt.date]
    event_counts: dict[str, int]
    duplicate_rows: int = 0
    rejects_file: str | None = None

    @property
    def balanced(self) -> bool:
        """Whether rows_read = rows_landed + rows_rejected."""
        return self.rows_read == self.rows_landed + self.rows_rejected


def import_rejects_key(name: str) -> str:
    """Key of the rejects CSV of the import named ``name`` (``<stem>-<hash8>``)."""
    return f"{IMPORT_REJECTS}/{name}.csv"


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes.pop()
    suffix = suffixes[-1] if suffixes else ""
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in TEXT_SUFFIXES:
        return suffix
    raise ValueError(
        f"cannot tell the format of {path.name!r}: expected one of "
        f"{sorted(PARQUET_SUFFIXES | TEXT_SUFFIXES)} (optionally compressed for text)"
    )


def _check_columns(path: Path, found: list[str], options: ImportOptions) -> None:
    missing = [c for c in options.source_columns if c not in found]
    if missing:
        raise ValueError(
            f"{path.name}: mapped column(s) {missing} not found; the file has columns {found}. "
            "Map them with the user/item/ts/event/weight column options"
            + (" (or name a header-less file's columns)" if options.column_names is None else "")
        )


DEFAULT_FALLBACK_ENCODING: Final = "cp1252"
"""Codec of text fields that are not UTF-8 (the usual encoding of spreadsheet exports)."""
_DECODED, _RECODED, _UNDECODABLE = 0, 1, 2


def _decode_bytes(data: bytes, fallback: str | None) -> tuple[str, int]:
    """A field's text and how it decoded: UTF-8, the fallback codec, or neither (escaped)."""
    try:
        return data.decode("utf-8"), _DECODED
    except UnicodeDecodeError:
        pass
    if fallback is not None:
        try:
            return data.decode(fallback), _RECODED
        except UnicodeDecodeError:
            pass
    return data.decode("utf-8", errors="backslashreplace"), _UNDECODABLE


def _decode_latin1_view(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Decode a frame read as Latin-1 (one char per byte) field by field.

    Returns:
        The decoded frame and, per row, whether a field decoded with neither UTF-8 nor
        ``DEFAULT_FALLBACK_ENCODING`` (such rows are rejected, not guessed).
    """
    undecodable = np.zeros(len(frame), dtype=bool)
    out = frame.copy()
    for column in frame.columns:
        values = frame[column].to_numpy(dtype=object)
        for row, value in enumerate(values):
            if isinstance(value, str) and not value.isascii():
                text, status = _decode_bytes(value.encode("latin-1"), DEFAULT_FALLBACK_ENCODING)
                values[row] = text
                undecodable[row] |= status == _UNDECODABLE
        out[column] = values
    return out, undecodable


def read_interactions(path: Path, options: ImportOptions | None = None) -> pd.DataFrame:
    """Read the mapped columns of an interaction log, values as stored.

    Args:
        path: a ``.csv``/``.tsv``/``.data``/``.txt`` file (optionally ``.gz`` etc.) or a
            ``.parquet``/``.pq`` file.
        options: column mapping; text files are read with ``options.sep`` (tab for ``.tsv`` and
            ``.data``, comma otherwise) and ``options.column_names`` when they have no header.

    Returns:
        One row per data row of the file, in file order (frame row ``i`` is data row ``i + 1``),
        holding only ``options.source_columns`` under their names in the file. Text values are
        strings, so ids keep their raw spelling (``"007"``); blanks are missing (NaN). Parquet
        columns keep their types. Text is decoded field by field, UTF-8 or else
        ``DEFAULT_FALLBACK_ENCODING`` (as ``import-catalog`` decodes, so ids match), so a file
        in another encoding never fails the read; ``frame.attrs["undecodable"]`` marks rows with
        a field neither decodes.

    Raises:
        ValueError: the format is unknown, a text file is empty, or a mapped column is absent
            (the message names the missing columns and lists those found).
    """
    options = options or ImportOptions()
    path = Path(path)
    fmt = _format_of(path)
    wanted = options.source_columns
    if fmt == "parquet":
        import pyarrow.parquet as pq

        if options.column_names is not None:
            raise ValueError("column_names is for header-less text files; Parquet names its own")
        _check_columns(path, list(pq.read_schema(path).names), options)
        frame = pd.read_parquet(path, columns=wanted)
        return frame.reset_index(drop=True)
    sep = options.sep or ("\t" if fmt in TAB_SUFFIXES else ",")
    names = list(options.column_names) if options.column_names is not None else None
    read_args: dict[str, Any] = {
        "sep": sep,
        "header": None if names is not None else "infer",
        "names": names,
        "index_col": False,
        "skipinitialspace": True,
    }
    try:
        header = pd.read_csv(path, nrows=0, encoding="latin-1", **read_args)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"{path.name} is empty: expected a header row or data rows") from exc
    found = [_decode_bytes(str(c).encode("latin-1"), DEFAULT_FALLBACK_ENCODING)[0] for c in header]
    _check_columns(path, found, options)
    positions = [found.index(c) for c in wanted] if names is None else None
    frame = pd.read_csv(
        path, usecols=positions or wanted, dtype=str, encoding="latin-1", **read_args
    )
    if positions is not None:
        frame.columns = [found[i] for i in sorted(positions)]
    decoded, undecodable = _decode_latin1_view(frame[wanted].reset_index(drop=True))
    decoded.attrs["undecodable"] = undecodable
    return decoded


def _id_text(value: Any) -> str | None:
    # Parquet stores integer ids with nulls as floats; 196.0 is the id "196".
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    return text or None


def _ids(values: pd.Series) -> pd.Series:
    out = pd.Series(None, index=values.index, dtype=object)
    present = values.notna()
    out[present] = [_id_text(v) for v in values[present]]
    return out


def misfit_ids(ids: pd.Series, pattern: re.Pattern[str]) -> pd.Series:
    """Per row: an id is present and breaks the contract's ``pattern`` (``events.schema``)."""
    fits = ids.map(lambda v: pattern.fullmatch(str(v)) is not None, na_action="ignore")
    return ids.notna() & ~fits.eq(True)


def _strip(values: pd.Series) -> pd.Series:
    return values.map(lambda v: v.strip() if isinstance(v, str) else v)


def _parse_ts(values: pd.Series, ts_unit: str | None, column: str) -> pd.Series:
    """Timestamps as ``datetime64[ns, UTC]`` floored to milliseconds; NaT where unparseable."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        ts = pd.to_datetime(values, utc=True)
    elif ts_unit is None:
        if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
            values.dtype
        ):
            raise ValueError(
                f"timestamp column {column!r} is numeric: pass ts_unit='s' or 'ms' for epochs"
            )
        ts = pd.to_datetime(_strip(values), format="ISO8601", utc=True, errors="coerce")
        present = values.notna()
        if present.any() and ts[present].isna().all():
            numbers = pd.to_numeric(_strip(values[present]), errors="coerce")
            if numbers.notna().all():
                raise ValueError(
                    f"timestamp column {column!r} holds numbers, not ISO-8601 timestamps: "
                    "pass ts_unit='s' or 'ms' for epochs"
                )
    else:
        numbers = pd.to_numeric(_strip(values), errors="coerce").astype("float64")
        seconds = numbers / (1.0 if ts_unit == "s" else 1000.0)
        in_range = np.isfinite(seconds) & (seconds.abs() < _MAX_EPOCH_SECONDS)
        ts = pd.to_datetime(numbers.where(in_range), unit=ts_unit, utc=True, errors="coerce")
    return ts.astype("datetime64[ns, UTC]").dt.floor("ms")


def _iso_ms(ts: pd.Series) -> np.ndarray:
    naive = ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[ms]")
    return np.char.add(np.datetime_as_string(naive, unit="ms").astype(str), "Z")


@dataclass
class _Prepared:
    """Landable rows and rejects of one source frame, each with its 1-based ``row_number``."""

    events: pd.DataFrame
    rejects: pd.DataFrame


def split_rejects(
    raw: pd.DataFrame, problems: dict[str, pd.Series]
) -> tuple[np.ndarray, pd.DataFrame]:
    """The rows without any problem, and the others with their reasons.

    Args:
        raw: the rows as read (frame row ``i`` is data row ``i + 1``).
        problems: reason -> boolean mask over ``raw``'s rows.

    Returns:
        A boolean mask of the landable rows, and the rejected rows with ``row_number`` and
        ``reason`` (the ``;``-joined sorted reasons) in front of their columns as read.
    """
    names = sorted(problems)
    hits = np.column_stack([problems[n].to_numpy(dtype=bool) for n in names])
    bad = np.asarray(hits.any(axis=1), dtype=bool)
    rejects = raw[bad].reset_index(drop=True)
    rejects.insert(
        0,
        "reason",
        [";".join(n for n, hit in zip(names, row, strict=True) if hit) for row in hits[bad]],
        allow_duplicates=True,
    )
    rejects.insert(0, "row_number", np.flatnonzero(bad) + 1, allow_duplicates=True)
    return ~bad, rejects


def write_rejects(store: ObjectStore, key: str, rejects: pd.DataFrame) -> dict[str, int]:
    """Write ``rejects`` (``split_rejects`` output) as CSV at ``key``, or remove a stale file.

    Returns:
        How many rejected rows carry each reason, by reason.
    """
    if len(rejects):
        buffer = io.StringIO()
        rejects.to_csv(buffer, index=False)
        store.put_bytes(key, buffer.getvalue().encode("utf-8"))
    else:
        store.delete(key)
    return dict(
        sorted(Counter(r for joined in rejects["reason"] for r in joined.split(";")).items())
    )


def _prepare(raw: pd.DataFrame, options: ImportOptions, request_prefix: str) -> _Prepared:
    """Map source columns to contract fields and split off the rows that cannot land."""
    problems: dict[str, pd.Series] = {}
    undecodable = raw.attrs.get("undecodable")
    if undecodable is not None:
        problems["undecodable_text"] = pd.Series(undecodable, index=raw.index)
    user = _ids(raw[options.user_col])
    item = _ids(raw[options.item_col])
    problems["missing_user_id"] = user.isna()
    problems["missing_item_id"] = item.isna()
    # The ingestion contract's id rules (events.schema), checked here so a bad id is a reject
    # of the import with its row, not a quarantined line later (an undecodable row is already
    # rejected for that).
    decoded = ~problems["undecodable_text"] if "undecodable_text" in problems else True
    problems["invalid_user_id"] = misfit_ids(user, USER_ID_PATTERN) & decoded
    problems["invalid_item_id"] = misfit_ids(item, ID_PATTERN) & decoded

    ts_raw = raw[options.ts_col]
    ts = _parse_ts(ts_raw, options.ts_unit, options.ts_col)
    problems["missing_timestamp"] = ts_raw.isna()
    problems["unparseable_timestamp"] = ts_raw.notna() & ts.isna()

    weight: pd.Series | None = None
    if options.weight_col is not None:
        weight_raw = raw[options.weight_col]
        weight = pd.to_numeric(_strip(weight_raw), errors="coerce").astype("float64")
        problems["missing_weight"] = weight_raw.isna()
        problems["non_numeric_weight"] = weight_raw.notna() & weight.isna()
        problems["non_finite_weight"] = weight.notna() & ~np.isfinite(weight)
        ranked = sorted(options.grades, key=lambda g: g[0], reverse=True)
        event_type = pd.Series(
            np.select(
                [(weight >= t).to_numpy() for t, _ in ranked],
                [e for _, e in ranked],
                default=BELOW_GRADES_EVENT,
            ),
            index=raw.index,
            dtype=object,
        )
        label = weight.map(lambda w: repr(float(w)))
    else:
        assert options.event_col is not None
        source_event = _ids(raw[options.event_col])
        event_type = source_event.map(lambda v: options.event_map.get(v, v), na_action="ignore")
        problems["missing_event_type"] = source_event.isna()
        problems["unknown_event_type"] = source_event.notna() & ~event_type.isin(EVENT_TYPES)
        label = source_event

    good, rejects = split_rejects(raw, problems)

    events = pd.DataFrame(
        {
            "row_number": np.flatnonzero(good) + 1,
            "event_type": event_type[good].astype(object).reset_index(drop=True),
            "user_id": user[good].reset_index(drop=True),
            "item_id": item[good].reset_index(drop=True),
            "ts": ts[good].reset_index(drop=True),
            "label": label[good].astype(object).reset_index(drop=True),
            "weight": (np.nan if weight is None else weight[good].reset_index(drop=True)),
        }
    )
    events["ts_iso"] = _iso_ms(events["ts"])
    # Ids come from what the event is, not where it sits in the file: a re-import, a re-export
    # in another order or the same rows in another file all repeat them, and ingestion counts
    # the repeats as duplicates rather than new events.
    events["event_id"] = [
        "imp-"
        + hashlib.sha1("\x1f".join(parts).encode("utf-8"), usedforsecurity=False).hexdigest()[:16]
        for parts in zip(
            events["user_id"], events["item_id"], events["ts_iso"], events["label"], strict=True
        )
    ]
    is_impression = events["event_type"] == "impression"
    events["request_id"] = None
    events.loc[is_impression, "request_id"] = [
        f"{request_prefix}-{n}" for n in events.loc[is_impression, "row_number"]
    ]
    return _Prepared(events=events, rejects=rejects)


def _records(events: pd.DataFrame, weighted: bool) -> Iterator[str]:
    columns = ("event_id", "event_type", "user_id", "item_id", "ts_iso", "request_id", "weight")
    for event_id, event_type, user_id, item_id, ts_iso, request_id, weight in zip(
        *(events[c] for c in columns), strict=True
    ):
        record: dict[str, Any] = {
            "event_id": event_id,
            "event_type": event_type,
            "user_id": user_id,
            "ts": ts_iso,
            "item_id": item_id,
        }
        if request_id is not None:
            record["request_id"] = request_id
        if weighted:
            record["payload"] = {"source": "import", "weight": float(weight)}
        yield json.dumps(record)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_stem(path: Path) -> str:
    name = path.name
    for suffix in reversed(path.suffixes):
        if suffix.lower() in COMPRESSION_SUFFIXES | PARQUET_SUFFIXES | TEXT_SUFFIXES:
            name = name[: -len(suffix)]
        else:
            break
    return _UNSAFE_NAME_CHARS.sub("-", name).strip("-.") or "file"


def import_name(path: Path) -> str:
    """The import's name, ``import-<stem>-<hash8>``, stable for the same file contents.

    ``hash8`` is the start of the SHA-1 of the file's bytes: two different files never share
    batch names (even with the same stem), and importing the same file again rewrites the same
    batches instead of adding copies. The ``import-`` prefix keeps the names apart from the
    synthetic world's ``batch-<seed>-<hh>``.
    """
    path = Path(path)
    return f"import-{_source_stem(path)}-{_file_digest(path)[:8]}"


def import_interactions(
    path: Path,
    store: ObjectStore,
    options: ImportOptions | None = None,
    batch_size: int = 50_000,
) -> ImportSummary:
    """Land an interaction log in ``store`` as the collector would, and report what happened.

    Each landable row becomes one JSON line ``{event_id, event_type, user_id, ts, item_id}``
    (plus ``request_id`` for impressions, and ``payload {"source": "import", "weight": w}`` when
    ``options.weight_col`` is used) in ``layout.landing_events_key(day, hour, name)``, where
    ``day`` and ``hour`` are the UTC date and hour of its timestamp and ``name`` is
    ``import_name(path)``, suffixed ``-partNNN`` when an hour holds more than ``batch_size``
    rows. ``user_id`` is the raw id as a string (ingestion pseudonymizes it); ``ts`` is
    ISO-8601 UTC with millisecond precision and a ``Z``. ``event_id`` is ``"imp-"`` plus 16 hex
    digits of the SHA-1 of (user, item, timestamp, source event type or weight), so importing
    the same interactions again yields ids that ingestion de-duplicates. An impression gets
    ``request_id = "<name>-<row number>"``: the contract requires one and a log has none.

    Rows that cannot land are written to ``import_rejects_key("<stem>-<hash8>")`` with
    ``row_number`` (1 = first data row), ``reason`` (``;``-joined) and their mapped columns as
    read; a stale rejects file from an earlier import of the same file is removed when there
    are none.

    Batches written by an earlier import of the same file under other options (another
    ``batch_size``, another ``ts_unit``) are not removed; their records repeat event ids, so
    ingestion counts them as duplicates.

    Args:
        path: the log; see ``read_interactions`` for the formats.
        store: the object store holding the landing zone.
        options: column mapping and event-type rules (defaults: ``user_id``, ``item_id``,
            ``timestamp``, ``event_type``; ISO-8601 timestamps).
        batch_size: most records per landed file.

    Returns:
        Counts, the keys written and the UTC days that received events.

    Raises:
        ValueError: on bad options or ``batch_size``, an unreadable format or missing columns,
            or a numeric timestamp column without ``ts_unit``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    options = options or ImportOptions()
    path = Path(path)
    raw = read_interactions(path, options)
    name = import_name(path)
    prepared = _prepare(raw, options, request_prefix=name)
    events = prepared.events

    files: list[str] = []
    hours = events["ts"].dt.floor("h")
    for hour_start, group in events.groupby(hours, sort=True):
        stamp = pd.Timestamp(hour_start)
        parts = max(1, math.ceil(len(group) / batch_size))
        for part in range(parts):
            chunk = group.iloc[part * batch_size : (part + 1) * batch_size]
            batch = name if parts == 1 else f"{name}-part{part:03d}"
            key = layout.landing_events_key(stamp.date(), stamp.hour, batch)
            lines = "\n".join(_records(chunk, options.weight_col is not None)) + "\n"
            store.put_bytes(key, gzip.compress(lines.encode("utf-8"), mtime=0))
            files.append(key)

    rejects_key = import_rejects_key(name.removeprefix("import-"))
    rejects = prepared.rejects
    reasons = write_rejects(store, rejects_key, rejects)
    return ImportSummary(
        rows_read=len(raw),
        rows_landed=len(events),
        rows_rejected=len(rejects),
        reject_reasons=reasons,
        files_written=sorted(files),
        days=sorted({pd.Timestamp(h).date() for h in hours.unique()}),
        event_counts=dict(sorted(Counter(events["event_type"]).items())),
        duplicate_rows=int(events["event_id"].duplicated().sum()),
        rejects_file=rejects_key if len(rejects) else None,
    )
