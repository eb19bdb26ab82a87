"""Shadow mode: the challenger scores a sample of live requests; only the champion is served.

``FeedService`` hands each shadowed request's two feeds to ``ShadowLog.record``; the log keeps
one row per listed item and side (``champion`` / ``challenger``), with the request's pseudonym,
time, model version, position, score and the side's latency, and flushes them as Parquet under
``serving/shadow/date=D/`` (part of the raw zone: retention and erasure cover it).
``compare_shadow`` reads them back and compares the two lists request by request: overlap of
the lists, agreement on the top item, and the score and latency distributions of each side.
Like the served log, it re-reads the erasure list at every flush and writes no row of an
erased user.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from fitpulse_orchestration import layout
from fitpulse_orchestration.serving.feed_types import FeedResponse
from fitpulse_orchestration.serving.logs import current_erasures, write_by_day
from fitpulse_orchestration.serving.periodic import Periodic
from fitpulse_orchestration.storage import ObjectStore
from fitpulse_orchestration.storage.tables import read_parquet_prefix

log = logging.getLogger(__name__)

SIDES: Final = ("champion", "challenger")
SHADOW_COLUMNS: Final = (
    "request_id",
    "user_id",
    "as_of",
    "side",
    "model_version",
    "position",
    "item_id",
    "score",
    "latency_ms",
    "fallback",
)


def shadow_rows(served: FeedResponse, shadow: FeedResponse) -> pd.DataFrame:
    """Rows of one shadowed request: each side's items in order.

    An empty list keeps one row with a null ``item_id``, so it is counted.
    """
    frames = []
    for side, response in zip(SIDES, (served, shadow), strict=True):
        items = response.served
        n = len(items)
        frame = pd.DataFrame(
            {
                "position": np.arange(n) if n else [0],
                "item_id": items["item_id"].astype(str).to_numpy() if n else [None],
                "score": items["score"].astype(float).to_numpy() if n else [np.nan],
            }
        )
        frame.insert(0, "request_id", served.request_id)
        frame.insert(1, "user_id", served.pseudo_id)
        frame.insert(2, "as_of", served.as_of)
        frame.insert(3, "side", side)
        frame.insert(4, "model_version", response.model_version)
        frame["latency_ms"] = float(sum(response.stage_ms.values()))
        frame["fallback"] = response.fallbacks[0] if response.fallbacks else None
        frames.append(frame)
    return pd.concat(frames, ignore_index=True).loc[:, list(SHADOW_COLUMNS)]


def shadow_key(day: str, batch: str) -> str:
    """Key of one flushed batch of shadow rows."""
    return f"{layout.SHADOW_LOGS}/date={day}/{batch}.parquet"


class ShadowLog:
    """Buffers shadowed requests and flushes them to the object store (like ``ServedLog``)."""

    def __init__(self, store: ObjectStore, flush_s: float = 5.0) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._frames: list[pd.DataFrame] = []
        self._flusher = Periodic("shadow-log", flush_s, self.flush)
        self._erased: frozenset[str] = frozenset()
        self.written_rows = 0
        self.write_errors = 0

    def record(self, served: FeedResponse, shadow: FeedResponse) -> None:
        """Buffer one shadowed request (the ``on_shadow`` callback of ``FeedService``)."""
        if served.pseudo_id in self._erased:
            return
        rows = shadow_rows(served, shadow)
        with self._lock:
            self._frames.append(rows)

    def flush(self) -> None:
        """Write what is buffered; a failed write stays buffered for the next flush."""
        self._erased = current_erasures(self.store, self._erased, "shadow log")
        with self._lock:
            frames, self._frames = self._frames, []
        if not frames:
            return
        table = pd.concat(frames, ignore_index=True)
        table = table[~table["user_id"].isin(self._erased)]
        batch = f"shadow-{uuid.uuid4().hex[:12]}"
        try:
            write_by_day(self.store, table, lambda day: shadow_key(day, batch))
            self.written_rows += len(table)
        except Exception as exc:
            self.write_errors += 1
            log.warning("shadow log flush failed (will retry): %s", exc)
            with self._lock:
                self._frames[:0] = frames

    def start(self) -> None:
        """Flush every ``flush_s`` seconds in a daemon thread until ``close``."""
        self._flusher.start()

    def close(self) -> None:
        """Stop the flusher and write what is left."""
        self._flusher.stop()
        self.flush()


def read_shadow_rows(store: ObjectStore) -> pd.DataFrame:
    """Every logged shadow row (an empty frame with ``SHADOW_COLUMNS`` when none)."""
    frames = read_parquet_prefix(store, f"{layout.SHADOW_LOGS}/")
    if not frames:
        return pd.DataFrame(columns=list(SHADOW_COLUMNS))
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class ShadowComparison:
    """Champion vs challenger on the same requests.

    ``per_request``: one row per request with ``overlap`` (shared items over the longer list),
    ``same_top`` and each side's latency. ``distributions``: per side, quantiles of scores
    and latency. ``summary``: the headline numbers.
    """

    per_request: pd.DataFrame
    distributions: pd.DataFrame
    summary: dict[str, float | int | str]


QUANTILES: Final = (0.1, 0.5, 0.9, 0.99)


def compare_shadow(rows: pd.DataFrame) -> ShadowComparison:
    """Compare the two sides of every complete shadowed request in ``rows``.

    Raises:
        ValueError: when no request has both sides.
    """
    sides = rows.groupby("request_id")["side"].nunique()
    complete = sides[sides == len(SIDES)].index
    rows = rows[rows["request_id"].isin(complete)]
    if rows.empty:
        raise ValueError("no shadowed request has both a champion and a challenger list")
    records = []
    for request_id, group in rows.groupby("request_id", sort=True):
        lists = {
            side: part.sort_values("position")["item_id"].dropna().tolist()
            for side, part in group.groupby("side")
        }
        champ, chall = lists.get("champion", []), lists.get("challenger", [])
        longest = max(len(champ), len(chall))
        latency = group.groupby("side")["latency_ms"].first()
        records.append(
            {
                "request_id": request_id,
                "overlap": len(set(champ) & set(chall)) / longest if longest else 1.0,
                "same_top": bool(champ and chall and champ[0] == chall[0]),
                "champion_ms": float(latency.get("champion", np.nan)),
                "challenger_ms": float(latency.get("challenger", np.nan)),
            }
        )
    per_request = pd.DataFrame(records)
    dist = []
    for side in SIDES:
        scores = rows.loc[rows["side"] == side, "score"].dropna()
        latency = per_request[f"{side}_ms"]
        for q in QUANTILES:
            dist.append(
                {
                    "side": side,
                    "quantile": q,
                    "score": float(scores.quantile(q)) if len(scores) else np.nan,
                    "latency_ms": float(latency.quantile(q)),
                }
            )
    versions = rows.groupby("side")["model_version"].agg(lambda v: ",".join(sorted(set(v))))
    summary: dict[str, float | int | str] = {
        "requests": len(per_request),
        "mean_overlap": float(per_request["overlap"].mean()),
        "same_top_share": float(per_request["same_top"].mean()),
        "champion_p99_ms": float(per_request["champion_ms"].quantile(0.99)),
        "challenger_p99_ms": float(per_request["challenger_ms"].quantile(0.99)),
        "champion_version": str(versions.get("champion", "")),
        "challenger_version": str(versions.get("challenger", "")),
    }
    return ShadowComparison(per_request, pd.DataFrame(dist), summary)


def format_shadow_markdown(comparison: ShadowComparison) -> str:
    """The summary and distributions as Markdown."""
    s = comparison.summary
    lines = [
        f"{s['requests']} shadowed requests; champion {s['champion_version']}, "
        f"challenger {s['challenger_version']}",
        f"mean overlap {s['mean_overlap']:.3f}; same top item {s['same_top_share']:.3f}",
        "",
        "| side | quantile | score | latency ms |",
        "|---|---|---|---|",
    ]
    for row in comparison.distributions.itertuples():
        lines.append(f"| {row.side} | {row.quantile} | {row.score:.4f} | {row.latency_ms:.2f} |")
    return "\n".join(lines)
