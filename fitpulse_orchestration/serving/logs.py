"""What the service writes about the feeds it served: exposures and sampled served features.

- **Exposures** are ``impression`` events in the collector's landing format (one JSON object per
  line, gzip, hourly batches under ``landing/events/date=D/hour=H/``), so ingestion reads them
  like any app event and served impressions flow back into training. Each carries the
  service's own request id (event ids derive from it; a client's ``X-Request-ID`` is kept as
  ``client_request_id`` only) and position, and a payload with the experiment, variant, model
  version, fallback and ``known_user``: false for an id the online store does not know, whose
  exposures ingestion quarantines as ``unknown_user:user_id`` (made-up ids never train).
- **Served features**: for a sampled share of requests (a hash of the request id, so replicas
  agree), one row per served item in the served-log format of
  ``monitoring.serving`` (keys, score, source, every ranker feature as served), as Parquet
  under ``serving/features/date=D/``. Monitoring compares them with the offline recomputation
  (training-serving skew). User ids there are pseudonymized, like every table past ingestion.

A request only queues its feed; a background thread serializes the queued feeds every
``absorb_s`` seconds and writes what it serialized every ``flush_s`` seconds (and on
``close``); a failed write is retried at the next flush and counted, never raised into a
request. Serializing often keeps a worker's memory down: a queued feed of the feature sample
holds its whole request (candidates, features) until it is serialized, and in a forked worker
every object alive at once can land on a page shared with the server that forked it, which
is then copied (``benchmarks/fork_memory_bench.py``).

Nothing is written for an erased user: every flush re-reads the erasure list
(``privacy.suppression``) and drops the buffered exposures and feature rows of the pseudonyms
on it, and ``record`` skips them as soon as the list is known (``skipped_erased`` counts the
exposures left out).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import itertools
import json
import logging
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson
import pandas as pd

from fitpulse_orchestration import layout
from fitpulse_orchestration.events.schema import EXPOSURE_SOURCE
from fitpulse_orchestration.privacy.suppression import erased_pseudonyms
from fitpulse_orchestration.serving.feed_types import FeedResponse, sampled
from fitpulse_orchestration.serving.periodic import Periodic
from fitpulse_orchestration.storage import ObjectStore, write_parquet

log = logging.getLogger(__name__)

SERVED_FEATURES: Final = layout.SERVED_FEATURES
EXPOSURE_GZIP_LEVEL: Final = 6
"""zlib's default level for the exposure batches, not ``gzip.compress``'s 9: on the demo home's
feeds (7.0 KB of JSON lines each) level 9 took 0.164 ms of the writer thread's CPU per feed and
level 6 0.033 ms, for 299 bytes against 238 (``benchmarks/README.md``, "The served log's
writer thread, per feed")."""


def current_erasures(store: ObjectStore, last: frozenset[str], log_name: str) -> frozenset[str]:
    """The erasure list as it is now; ``last`` when it cannot be read (it stays in force)."""
    try:
        return erased_pseudonyms(store)
    except Exception as exc:
        log.warning("%s: erasure list unreadable (keeping the last one): %s", log_name, exc)
        return last


def served_features_key(day: str, batch: str) -> str:
    """Key of one flushed batch of served-feature rows."""
    return f"{SERVED_FEATURES}/date={day}/{batch}.parquet"


def exposure_records(response: FeedResponse) -> list[dict[str, Any]]:
    """Landing records of one served feed: an impression per item, in feed order."""
    row = _exposure_row(response)
    return _records(row, _as_of(row))


ExposureRow = tuple[
    int,
    str,
    str,
    str,
    str,
    str | None,
    str,
    str,
    str | None,
    bool,
    str | None,
    tuple[str, ...],
]
"""What a feed's exposures need, as a tuple of strings, numbers and ``None``: ``as_of`` (ns since
the epoch, and its zone), ``request_id``, ``user_id``, the pseudonym, experiment, variant, model
version, fallback, known user, client request id and the item ids. Such a tuple leaves the
garbage collector's tracking, which a queued response (its items, pool and closures) does not."""


def _exposure_row(response: FeedResponse) -> ExposureRow:
    return (
        response.as_of.value,
        "" if response.as_of.tz is None else str(response.as_of.tz),
        response.request_id,
        response.user_id,
        response.pseudo_id,
        response.experiment,
        response.variant,
        response.model_version,
        response.fallbacks[0] if response.fallbacks else None,
        not response.cold,
        response.client_request_id,
        tuple(item.id for item in response.items),
    )


def _as_of(row: ExposureRow) -> pd.Timestamp:
    return pd.Timestamp(row[0], tz=row[1] or None)


def _records(row: ExposureRow, as_of: pd.Timestamp) -> list[dict[str, Any]]:
    (_, _, request_id, user_id, _, experiment, variant, version, fallback, known, client, items) = (
        row
    )
    ts = as_of.isoformat()
    payload = {
        "source": EXPOSURE_SOURCE,
        "experiment": experiment,
        "variant": variant,
        "model_version": version,
        "fallback": fallback,
        "known_user": known,
    }
    extra = {"client_request_id": client} if client else {}
    return [
        {
            "event_id": f"{request_id}-{pos}",
            "event_type": "impression",
            "user_id": user_id,
            "ts": ts,
            "item_id": item,
            "request_id": request_id,
            "position": pos,
            "payload": payload,
            **extra,
        }
        for pos, item in enumerate(items)
    ]


def _line(record: dict[str, Any]) -> bytes:
    """One exposure record as a JSON line.

    orjson, because the writer thread shares the GIL with the request thread (json.dumps took
    0.07 ms of it per 20-item feed). orjson refuses a string that is not valid UTF-8 (a lone
    surrogate); json escapes it, so such a record is still written (ingestion then judges it)
    instead of stopping the writer thread.
    """
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError:
        return json.dumps(record, separators=(",", ":")).encode()


def write_by_day(store: ObjectStore, table: pd.DataFrame, key: Callable[[str], str]) -> None:
    """Write ``table`` as one Parquet object per UTC day of its ``as_of``, at ``key(day)``."""
    days = pd.to_datetime(table["as_of"], utc=True).dt.date.astype(str)
    for day, part in table.groupby(days.to_numpy()):
        write_parquet(store, key(str(day)), part.reset_index(drop=True))


@dataclass(frozen=True)
class ServedFeatureRows:
    """One sampled feed's served-log rows, as columns.

    They are built into a frame with the other feeds of their write (``served_feature_frame``),
    not one frame per feed. ``keys`` and ``tail`` are per-feed values that repeat over its rows
    (``keys`` first, then the served columns in ``body``, then ``tail``, as the table's columns).
    """

    keys: dict[str, Any]
    body: dict[str, np.ndarray]
    tail: dict[str, Any]

    @property
    def rows(self) -> int:
        """The feed's rows in the table (an empty feed keeps one)."""
        return len(next(iter(self.body.values())))

    @property
    def user_id(self) -> str:
        """The feed's pseudonymized user."""
        return str(self.keys["user_id"])


def served_feature_rows(response: FeedResponse) -> ServedFeatureRows:
    """The served log rows (``monitoring.serving`` format) of one response, as columns.

    ``ranked`` says whether the features were used (a fallback that skipped ranking has none);
    an empty feed keeps one row with a null ``item_id``, so it is counted.
    """
    served = response.served_columns
    body = (
        {name: values for name, values in served.items() if name not in _NOT_SERVED_COLUMNS}
        if len(next(iter(served.values()), ()))
        else {"item_id": np.array([None], dtype=object)}
    )
    keys = {
        "request_id": response.request_id,
        "user_id": response.pseudo_id,
        "fitness_level": response.fitness_level,
        "as_of": response.as_of,
    }
    tail = {
        "model_version": response.model_version,
        "variant": response.variant,
        "ranked": response.ranked,
        "fallback": response.fallbacks[0] if response.fallbacks else None,
        "latency_ms": float(sum(response.stage_ms.values())),
    }
    return ServedFeatureRows(keys, body, tail)


def served_feature_frame(feeds: Sequence[ServedFeatureRows]) -> pd.DataFrame:
    """The served-log table of ``feeds``, their rows in order.

    What concatenating one frame per feed would give (``pd.concat`` of ``pd.DataFrame({**keys,
    **body, **tail})``), built from whole columns: consecutive feeds with the same served columns
    make one frame. A frame per feed took the writer thread, which shares the GIL with the
    request thread, about 1-2.5 ms per sampled feed (``benchmarks/README.md``).
    """
    frames = []
    for _, run in itertools.groupby(feeds, key=lambda feed: tuple(feed.body)):
        group = list(run)
        counts = [feed.rows for feed in group]
        first = group[0]
        columns: dict[str, Any] = {
            name: _repeated([feed.keys[name] for feed in group], counts) for name in first.keys
        }
        columns |= {
            name: np.concatenate([feed.body[name] for feed in group]) for name in first.body
        }
        columns |= {
            name: _repeated([feed.tail[name] for feed in group], counts) for name in first.tail
        }
        frames.append(pd.DataFrame(columns))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _repeated(values: list[Any], counts: list[int]) -> pd.Series:
    """Each feed's value over its rows, typed as the first value broadcast over rows is.

    A column of timestamps so keeps their unit, where a list of them would become nanoseconds.
    """
    dtype = pd.DataFrame({"value": values[0]}, index=[0])["value"].dtype
    return pd.Series(values, dtype=dtype).repeat(counts).reset_index(drop=True)


_NOT_SERVED_COLUMNS: Final = frozenset(
    {"request_id", "user_id", "fitness_level", "as_of", "retrieval_score", "retrieval_rank"}
)
"""Columns of the served rows the log leaves out (the keys are the response's own)."""


class ServedLog:
    """Buffers exposures and sampled served features and flushes them to the object store."""

    def __init__(
        self,
        store: ObjectStore,
        feature_share: float = 0.1,
        flush_s: float = 5.0,
        absorb_s: float = 0.5,
    ) -> None:
        self.store = store
        self.feature_share = feature_share
        self.flush_s = flush_s
        self.absorb_s = min(absorb_s, flush_s)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        # Feeds served since the last flush, serialized by the flusher (deque appends and pops
        # are atomic: request threads append while the flusher drains).
        # A sampled feed keeps its response (its feature rows are built from it), the others
        # only their ``ExposureRow``.
        self._pending: deque[tuple[ExposureRow, FeedResponse | None]] = deque()
        # Exposure lines, serialized by the writer thread (``_absorb``) and grouped by landing
        # hour, so the write itself only compresses and puts. Each line keeps its user's
        # pseudonym beside it, for the erasure list.
        self._exposures: dict[tuple[str, int], list[tuple[str, bytes]]] = defaultdict(list)
        self._features: list[ServedFeatureRows] = []
        self._erased: frozenset[str] = frozenset()
        self._flusher = Periodic("served-log", self.absorb_s, self._tick)
        self._last_write = time.monotonic()
        self.written_exposures = 0
        self.written_feature_rows = 0
        self.write_errors = 0
        self.skipped_erased = 0

    def is_erased(self, pseudo_id: str) -> bool:
        """Whether the user is on the erasure list as of the last flush (for the push path)."""
        return pseudo_id in self._erased

    def record(self, response: FeedResponse) -> None:
        """Queue one served feed (an ``on_served`` callback of ``FeedService``).

        Only a tuple is queued in the request: the exposures and the sampled feature rows are
        serialized by the flusher thread, at the next flush.
        """
        if response.pseudo_id in self._erased:
            self.skipped_erased += len(response.items)
            return
        keep = response if sampled(response.request_id, self.feature_share) else None
        self._pending.append((_exposure_row(response), keep))

    def _absorb(self, row: ExposureRow, response: FeedResponse | None) -> None:
        """Serialize one queued feed into the buffers a flush writes."""
        as_of = _as_of(row)
        utc = as_of.tz_convert("UTC")
        hour_key = (utc.date().isoformat(), utc.hour)
        lines = [_line(rec) for rec in _records(row, as_of)]
        features = None if response is None else served_feature_rows(response)
        pseudo_id = row[4]
        with self._lock:
            self._exposures[hour_key].extend((pseudo_id, line) for line in lines)
            if features is not None:
                self._features.append(features)

    def flush(self) -> None:
        """Write everything buffered; what fails to write stays buffered for the next flush."""
        with self._flush_lock:
            self._absorb_pending()
            self._write()

    def _tick(self) -> None:
        """The writer thread's call: serialize the queued feeds, write every ``flush_s``."""
        with self._flush_lock:
            self._absorb_pending()
            if time.monotonic() - self._last_write >= self.flush_s:
                self._write()

    def _absorb_pending(self) -> None:
        while self._pending:
            self._absorb(*self._pending.popleft())
            # Hand the GIL over after each feed: a request thread waiting for it (after a FAISS
            # search or a numpy call released it) would otherwise wait out the interpreter's
            # switch interval (5 ms) behind this loop, several times per request.
            time.sleep(0)

    def _write(self) -> None:
        self._last_write = time.monotonic()
        self._erased = current_erasures(self.store, self._erased, "served log")
        with self._lock:
            buffered, self._exposures = self._exposures, defaultdict(list)
            features, self._features = self._features, []
        exposures: dict[tuple[str, int], list[tuple[str, bytes]]] = {}
        for hour_key, pairs in buffered.items():
            kept = [(pseudo, line) for pseudo, line in pairs if pseudo not in self._erased]
            self.skipped_erased += len(pairs) - len(kept)
            if kept:
                exposures[hour_key] = kept
        if self._erased:
            features = [f for f in features if f.user_id not in self._erased]
        batch = f"serve-{uuid.uuid4().hex[:12]}"
        try:
            while exposures:
                (day, hour), pairs = next(iter(exposures.items()))
                key = layout.landing_events_key(dt.date.fromisoformat(day), hour, batch)
                body = b"".join(line + b"\n" for _, line in pairs)
                self.store.put_bytes(key, gzip.compress(body, compresslevel=EXPOSURE_GZIP_LEVEL))
                self.written_exposures += len(pairs)
                del exposures[(day, hour)]
            if features:
                self._write_features(features, batch)
                self.written_feature_rows += sum(f.rows for f in features)
                features = []
        except Exception as exc:
            self.write_errors += 1
            log.warning("served log flush failed (will retry): %s", exc)
            with self._lock:
                for hour_key, pairs in exposures.items():
                    self._exposures[hour_key][:0] = pairs
                self._features = features + self._features

    def _write_features(self, feeds: list[ServedFeatureRows], batch: str) -> None:
        write_by_day(
            self.store, served_feature_frame(feeds), lambda day: served_features_key(day, batch)
        )

    def start(self) -> None:
        """Serialize every ``absorb_s`` and write every ``flush_s`` seconds until ``close``."""
        self._flusher.start()

    def close(self) -> None:
        """Stop the writer thread and write what is left."""
        self._flusher.stop()
        self.flush()


def read_served_features(
    store: ObjectStore, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """Logged served-feature rows with ``start <= as_of <= end`` (empty frame when none)."""
    frames = []
    for key in store.iter_keys(f"{SERVED_FEATURES}/", ".parquet"):
        day = pd.Timestamp(layout.date_of_key(key).isoformat(), tz="UTC")
        if day + pd.Timedelta(days=1) <= start or day > end:
            continue
        frames.append(pd.read_parquet(io.BytesIO(store.get_bytes(key))))
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    as_of = pd.to_datetime(table["as_of"], utc=True)
    return table[(as_of >= start) & (as_of <= end)].reset_index(drop=True)
