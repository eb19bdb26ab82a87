"""Per-core throughput of feature computation and ingestion, for the capacity plan.

Measures, on synthetic data in the warehouse shape:

1. DuckDB feature aggregations reading hourly Parquet files directly (``read_parquet``):
   per-user 7d/28d features, per-item features, user x category engagement shares, and the
   incremental daily rollup (user x day x type, item x day counts), each with DuckDB
   ``threads=1`` and ``threads=2``, in a fresh child process per setting (clean peak RSS);
2. the same per-user features in pandas (groupby) at the smallest size, checked against
   DuckDB's output;
3. ``ingest_batches`` (the project's ingestion: JSON parsing, the contract checks,
   de-duplication, pseudonymization) on landed NDJSON.gz batches, in a child process, plus
   writing the clean partition as Parquet;

then extrapolates to the production volume (1.3 billion impressions a day by default). Every
measured number and every assumption is printed with its label; ``--out`` writes them as JSON.
Nothing is asserted about timings.

    .venv/bin/python benchmarks/capacity_bench.py                      # 2M and 8M rows
    .venv/bin/python benchmarks/capacity_bench.py --rows 500000 --ingest-rows 50000
"""

from __future__ import annotations

import os

# Before numpy is imported: nested OpenBLAS threads would only oversubscribe the cores.
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import datetime as dt
import gzip
import itertools
import json
import math
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bench_common import peak_rss_kib, proc_status_kib, reset_peak_rss

# The generator's event mix (shares of all events). Impressions dominate; engagements are
# drawn from impressions (a click is on a shown item, a start on a clicked one, ...).
EVENT_MIX = {
    "impression": 0.85,
    "click": 0.05,
    "app_open": 0.04,
    "workout_start": 0.03,
    "workout_complete": 0.02,
    "article_read": 0.01,
}
ENGAGEMENTS = ("click", "workout_start", "workout_complete", "article_read", "video_watch")
USER_ZIPF = 0.6  # user activity ~ 1 / rank**0.6: heavy users, but no single user dominates
ITEM_ZIPF = 1.0  # item popularity ~ 1 / rank
FEED_SIZE = (4, 16)  # impressions per feed request, uniform in [4, 16]
CATEGORIES = (
    "strength", "cardio", "yoga", "hiit", "running",
    "mobility", "meditation", "nutrition", "cycling", "pilates", "dance",
)  # fmt: skip
PLATFORMS = np.array(["ios", "android", "web"])
PLATFORM_SHARE = (0.55, 0.40, 0.05)
# Device clock offsets of landed timestamps (minutes): the collector sends local time with offset.
OFFSETS_MIN = (0, 60, -300, -480, 330, 540, 120, -180)
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
INGEST_DAY = dt.date(2026, 11, 20)
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000

QUERIES = ("user features", "item features", "user x category", "daily rollup")
FEATURE_QUERIES = ("user features", "item features", "user x category")


# --------------------------------------------------------------------------- generation


def _zipf_sampler(rng: np.random.Generator, n: int, s: float) -> tuple[np.ndarray, np.ndarray]:
    """CDF of a 1/rank**s law over n ids, and a random rank -> id permutation."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return cdf, rng.permutation(n)


def _draw(rng: np.random.Generator, sampler: tuple[np.ndarray, np.ndarray], size: int) -> Any:
    cdf, perm = sampler
    ranks = np.minimum(np.searchsorted(cdf, rng.random(size)), len(cdf) - 1)
    return perm[ranks]


def _counts(n: int) -> dict[str, int]:
    counts = {k: round(v * n) for k, v in EVENT_MIX.items() if k != "impression"}
    counts["impression"] = n - sum(counts.values())
    return counts


def generate_events(
    rng: np.random.Generator, n: int, n_users: int, n_items: int, start_ms: int, span_ms: int
) -> dict[str, np.ndarray]:
    """``n`` events as integer columns, sorted by time (strings are built per file later).

    Feed requests of 4-16 impressions go to Zipf-popular users and items; clicks are drawn
    from impressions, workout starts and article reads from clicks, completes from starts
    (same user, item, request and position, a little later); app opens stand alone.
    """
    counts = _counts(n)
    users = _zipf_sampler(rng, n_users, USER_ZIPF)
    items = _zipf_sampler(rng, n_items, ITEM_ZIPF)
    n_imp = counts["impression"]
    sizes = rng.integers(FEED_SIZE[0], FEED_SIZE[1] + 1, size=n_imp // FEED_SIZE[0] + 1)
    ends = np.cumsum(sizes)
    n_req = int(np.searchsorted(ends, n_imp) + 1)
    sizes = sizes[:n_req]
    sizes[-1] -= int(ends[n_req - 1] - n_imp)
    req = np.repeat(np.arange(n_req, dtype=np.int64), sizes)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.arange(n_imp, dtype=np.int64) - first[req]
    req_user = _draw(rng, users, n_req)
    req_ts = start_ms + rng.integers(0, span_ms - 60_000, size=n_req)
    # 2-4 feed requests per app session.
    req_session = np.cumsum(rng.random(n_req) < 0.35)

    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("etype", "user", "item", "request", "position", "session", "ts")
    }

    def add(etype: int, user: Any, item: Any, request: Any, pos: Any, session: Any, ts: Any):
        cols["etype"].append(np.full(len(ts), etype, dtype=np.int8))
        cols["user"].append(user)
        cols["item"].append(item)
        cols["request"].append(request)
        cols["position"].append(pos)
        cols["session"].append(session)
        cols["ts"].append(ts)

    imp_ts = req_ts[req] + position * 150
    imp = (req_user[req], _draw(rng, items, n_imp), req, position, req_session[req], imp_ts)
    add(0, *imp)
    types = list(EVENT_MIX)

    def follow(parent: tuple, k: int, delay_ms: float) -> tuple:
        pick = np.sort(rng.choice(len(parent[0]), size=k, replace=False))
        ts = parent[5][pick] + rng.exponential(delay_ms, size=k).astype(np.int64) + 1
        return (*(col[pick] for col in parent[:5]), ts)

    clicks = follow(imp, counts["click"], 8_000)
    add(types.index("click"), *clicks)
    starts = follow(clicks, counts["workout_start"], 30_000)
    add(types.index("workout_start"), *starts)
    add(types.index("workout_complete"), *follow(starts, counts["workout_complete"], 1_500_000))
    add(types.index("article_read"), *follow(clicks, counts["article_read"], 20_000))
    n_open = counts["app_open"]
    none = np.full(n_open, -1, dtype=np.int64)
    open_ts = start_ms + rng.integers(0, span_ms, size=n_open)
    add(types.index("app_open"), _draw(rng, users, n_open), none, none, none, none, open_ts)

    out = {k: np.concatenate(v) for k, v in cols.items()}
    out["ts"] = np.minimum(out["ts"], start_ms + span_ms - 1)
    order = np.argsort(out["ts"], kind="stable")
    out = {k: v[order] for k, v in out.items()}
    out["etype_names"] = np.array(types)
    return out


def _ids(prefix: str, values: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded ``values`` as a string array (null where value < 0)."""
    text = pc.utf8_lpad(pa.array(np.maximum(values, 0)).cast(pa.string()), width, "0")
    joined = pc.binary_join_element_wise(prefix, text, "")
    return pc.if_else(pa.array(values < 0), pa.nulls(len(values), pa.string()), joined)


_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def _hex_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random 128-bit ids as 32 hex digits (bytes), like UUIDs without dashes."""
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16)
    return _HEX[raw].view("S32").ravel()


def _hex_array(rng: np.random.Generator, n: int) -> pa.Array:
    return pa.array(_hex_ids(rng, n)).cast(pa.string())


def _vocab(rng: np.random.Generator, n: int) -> pa.Array:
    """Pseudonymized user ids: ``p_`` + 20 hex digits, like the clean table's."""
    raw = rng.bytes(10 * n)
    return pa.array(["p_" + raw[i : i + 10].hex() for i in range(0, 10 * n, 10)])


def write_warehouse(
    rng: np.random.Generator, ev: dict[str, np.ndarray], n_users: int, n_items: int, root: Path
) -> dict[str, Any]:
    """One zstd Parquet file per simulated hour with the clean-events columns, + a catalog."""
    root.mkdir(parents=True)
    users = _vocab(rng, n_users)
    requests = _hex_array(rng, int(ev["request"].max()) + 1)
    platform_of_user = rng.choice(len(PLATFORMS), size=n_users, p=PLATFORM_SHARE)
    etype_names = pa.array(ev["etype_names"])
    ts = ev["ts"]
    first_hour = int(ts[0] // MS_PER_HOUR)
    bounds = np.searchsorted(
        ts, np.arange(first_hour, int(ts[-1] // MS_PER_HOUR) + 2) * MS_PER_HOUR
    )
    complete = list(EVENT_MIX).index("workout_complete")
    files = 0
    for h, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if hi <= lo:
            continue
        sl = slice(lo, hi)
        user, etype, pos, req = (ev[k][sl] for k in ("user", "etype", "position", "request"))
        hour_start = dt.datetime.fromtimestamp((first_hour + h) * 3600, tz=dt.UTC)
        source = (
            f"landing/events/date={hour_start.date().isoformat()}/hour={hour_start.hour:02d}/"
            "batch-0001.ndjson.gz"
        )
        n = int(hi - lo)
        seconds = pa.array(rng.integers(5, 60, size=n) * 60).cast(pa.string())
        payload = pc.if_else(
            pa.array(etype == complete),
            pc.binary_join_element_wise('{"seconds": ', seconds, "}", ""),
            pa.nulls(n, pa.string()),
        )
        table = pa.table(
            {
                "event_id": _hex_array(rng, n),
                "event_type": etype_names.take(pa.array(etype.astype(np.int32))),
                "user_id": users.take(pa.array(user)),
                "ts": pa.array(ts[sl].astype("datetime64[ms]").astype("datetime64[ns]")).cast(
                    pa.timestamp("ns", tz="UTC")
                ),
                "item_id": _ids("it_", ev["item"][sl], 7),
                "request_id": requests.take(pa.array(req, mask=req < 0)),
                "position": pa.array(pos, mask=pos < 0),
                "session_id": _ids("s_", ev["session"][sl], 10),
                "platform": pa.array(PLATFORMS[platform_of_user[user]]),
                "payload": payload,
                "source_file": pa.array([source] * n),
                "line_no": pa.array(np.arange(1, n + 1, dtype=np.int64)),
            }
        )
        pq.write_table(table, root / f"events-{hour_start:%Y-%m-%dT%H}.parquet", compression="zstd")
        files += 1
    catalog = pa.table(
        {
            "item_id": _ids("it_", np.arange(n_items, dtype=np.int64), 7),
            "category": pa.array(np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), n_items)]),
        }
    )
    pq.write_table(catalog, root.parent / "catalog.parquet")
    return {"files": files, "parquet_bytes": sum(p.stat().st_size for p in root.glob("*.parquet"))}


# --------------------------------------------------------------------------- DuckDB


def _sql(events: str, catalog: str, out: Path, as_of_ms: int, window_days: int) -> dict[str, str]:
    as_of = dt.datetime.fromtimestamp(as_of_ms / 1000, tz=dt.UTC)
    t = f"TIMESTAMPTZ '{as_of:%Y-%m-%d %H:%M:%S}+00'"
    w7 = f"{t} - INTERVAL 7 DAY"
    wn = f"{t} - INTERVAL {window_days} DAY"
    eng = "event_type IN (" + ", ".join(f"'{e}'" for e in ENGAGEMENTS) + ")"
    src = f"read_parquet('{events}')"
    window = f"ts >= {wn} AND ts < {t}"
    return {
        "user features": f"""
COPY (
  SELECT user_id,
    count(*) FILTER (WHERE {eng} AND ts >= {w7}) AS u_engaged_7d,
    count(*) FILTER (WHERE {eng}) AS u_engaged_28d,
    count(*) FILTER (WHERE event_type = 'workout_complete') AS u_completes_28d,
    count(*) FILTER (WHERE event_type = 'impression' AND ts >= {w7}) AS u_impressions_7d,
    count(*) FILTER (WHERE event_type = 'impression') AS u_impressions_28d,
    count(*) FILTER (WHERE event_type = 'click') AS u_clicks_28d,
    (count(*) FILTER (WHERE event_type = 'click') + 1.0)
      / (count(*) FILTER (WHERE event_type = 'impression') + 20.0) AS u_ctr_28d,
    count(*) FILTER (WHERE event_type = 'app_open') AS u_app_opens_28d,
    count(DISTINCT CAST(ts AS DATE)) AS u_active_days_28d,
    max(ts) FILTER (WHERE {eng}) AS u_last_engaged
  FROM {src} WHERE {window}
  GROUP BY user_id
) TO '{out / "user_features.parquet"}' (FORMAT parquet, COMPRESSION zstd)""",
        "item features": f"""
COPY (
  SELECT item_id,
    count(*) FILTER (WHERE event_type = 'impression' AND ts >= {w7}) AS i_impressions_7d,
    count(*) FILTER (WHERE {eng} AND ts >= {w7}) AS i_engaged_7d,
    count(*) FILTER (WHERE {eng}) AS i_engaged_28d,
    count(*) FILTER (WHERE event_type = 'workout_complete') AS i_completes_28d,
    (count(*) FILTER (WHERE {eng} AND ts >= {w7}) + 1.0)
      / (count(*) FILTER (WHERE event_type = 'impression' AND ts >= {w7}) + 20.0) AS i_ctr_7d
  FROM {src} WHERE {window} AND item_id IS NOT NULL
  GROUP BY item_id
) TO '{out / "item_features.parquet"}' (FORMAT parquet, COMPRESSION zstd)""",
        "user x category": f"""
COPY (
  WITH uc AS (
    SELECT e.user_id, coalesce(c.category, 'unknown') AS category, count(*) AS n
    FROM {src} e LEFT JOIN read_parquet('{catalog}') c USING (item_id)
    WHERE {window} AND {eng}
    GROUP BY ALL
  )
  SELECT user_id, category, n, n / sum(n) OVER (PARTITION BY user_id) AS x_category_share
  FROM uc
) TO '{out / "user_category.parquet"}' (FORMAT parquet, COMPRESSION zstd)""",
        # The incremental alternative: each event is aggregated once, into per-day counters
        # from which the 7d/28d features are sums over 7 or 28 small rows.
        "daily rollup": f"""
COPY (
  SELECT user_id, CAST(ts AS DATE) AS day, event_type, count(*) AS n, max(ts) AS last_ts
  FROM {src} GROUP BY ALL
) TO '{out / "user_day_type.parquet"}' (FORMAT parquet, COMPRESSION zstd);
COPY (
  SELECT item_id, CAST(ts AS DATE) AS day,
    count(*) FILTER (WHERE event_type = 'impression') AS impressions,
    count(*) FILTER (WHERE {eng}) AS engaged
  FROM {src} WHERE item_id IS NOT NULL GROUP BY ALL
) TO '{out / "item_day.parquet"}' (FORMAT parquet, COMPRESSION zstd)""",
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_duckdb(spec: dict[str, Any]) -> dict[str, Any]:
    """Run every query ``repeat`` times on ``threads`` threads; one fresh process per call."""
    import duckdb

    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET threads = {int(spec['threads'])}")
    con.execute("SET TimeZone = 'UTC'")
    sql = _sql(spec["events"], spec["catalog"], out, spec["as_of_ms"], spec["window_days"])
    results: dict[str, Any] = {"duckdb": duckdb.__version__}
    for name in QUERIES:
        runs = []
        for _ in range(int(spec["repeat"])):
            base = proc_status_kib("VmRSS")
            reset = reset_peak_rss()
            cpu0, t0 = _cpu(), time.perf_counter()
            con.execute(sql[name])
            wall = time.perf_counter() - t0
            runs.append(
                {
                    "wall_s": wall,
                    "cpu_s": _cpu() - cpu0,
                    "rss_before_kib": base,
                    "peak_rss_kib": peak_rss_kib(),
                    "peak_reset": reset,
                }
            )
        results[name] = runs
    results["output_rows"] = {
        stem: con.execute(f"SELECT count(*) FROM read_parquet('{out / stem}.parquet')").fetchone()[
            0
        ]
        for stem in ("user_features", "item_features", "user_category", "user_day_type")
    }
    con.close()
    return results


def run_child(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- pandas


def pandas_user_features(events_dir: Path, as_of_ms: int, window_days: int) -> dict[str, Any]:
    """The ``user features`` query in pandas (one thread), written as zstd Parquet."""
    import pandas as pd

    files = sorted(events_dir.glob("*.parquet"))
    base = proc_status_kib("VmRSS")
    reset = reset_peak_rss()
    t0 = time.perf_counter()
    cpu0 = _cpu()
    table = pq.read_table(files, columns=["user_id", "event_type", "ts"], use_threads=False)
    df = table.to_pandas(use_threads=False)
    t_read = time.perf_counter() - t0
    as_of = pd.Timestamp(as_of_ms, unit="ms", tz="UTC")
    df = df[(df["ts"] >= as_of - pd.Timedelta(days=window_days)) & (df["ts"] < as_of)]
    etype = df["event_type"]
    eng = etype.isin(ENGAGEMENTS)
    w7 = df["ts"] >= as_of - pd.Timedelta(days=7)
    flags = pd.DataFrame(
        {
            "u_engaged_7d": eng & w7,
            "u_engaged_28d": eng,
            "u_completes_28d": etype == "workout_complete",
            "u_impressions_7d": (etype == "impression") & w7,
            "u_impressions_28d": etype == "impression",
            "u_clicks_28d": etype == "click",
            "u_app_opens_28d": etype == "app_open",
        }
    )
    user = df["user_id"]
    agg = flags.groupby(user, sort=False).sum()
    agg["u_ctr_28d"] = (agg["u_clicks_28d"] + 1.0) / (agg["u_impressions_28d"] + 20.0)
    days = pd.DataFrame({"user_id": user, "day": df["ts"].dt.floor("D")}).drop_duplicates()
    agg["u_active_days_28d"] = days["user_id"].value_counts()
    agg["u_last_engaged"] = df["ts"][eng].groupby(user[eng], sort=False).max()
    agg = agg.reset_index()
    t_agg = time.perf_counter() - t0 - t_read
    out = events_dir.parent / "pandas_user_features.parquet"
    agg.to_parquet(out, index=False, compression="zstd")
    wall = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    return {
        "frame": agg,
        "read_s": t_read,
        "aggregate_s": t_agg,
        "write_s": wall - t_read - t_agg,
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_before_kib": base,
        "peak_rss_kib": peak_rss_kib(),
        "peak_reset": reset,
    }


def compare_user_features(pandas_frame: Any, duckdb_file: Path) -> dict[str, Any]:
    """Whether pandas and DuckDB agree on every user's counts (a correctness check)."""
    import pandas as pd

    ddb = pd.read_parquet(duckdb_file)
    cols = [
        "u_engaged_7d",
        "u_engaged_28d",
        "u_completes_28d",
        "u_impressions_7d",
        "u_impressions_28d",
        "u_clicks_28d",
        "u_app_opens_28d",
        "u_active_days_28d",
    ]
    left = pandas_frame.set_index("user_id")[cols].astype("int64").sort_index()
    right = ddb.set_index("user_id")[cols].astype("int64").sort_index()
    same_users = left.index.equals(right.index)
    same = bool(same_users and (left.to_numpy() == right.to_numpy()).all())
    last_p = pandas_frame.set_index("user_id")["u_last_engaged"].sort_index()
    last_d = pd.to_datetime(ddb.set_index("user_id")["u_last_engaged"], utc=True).sort_index()
    same_last = bool(same_users and last_p.astype("int64").equals(last_d.astype("int64")))
    return {"users": len(left), "counts_match": same, "last_engaged_match": same_last}


# --------------------------------------------------------------------------- ingestion


def write_landing(
    rng: np.random.Generator, n: int, root: Path, batch_lines: int, day: dt.date
) -> dict[str, Any]:
    """``n`` valid landed records of one day as hourly NDJSON.gz batches under ``root``."""
    from fitpulse_orchestration import layout

    n_users = max(100, n // 80)
    n_items = min(50_000, max(100, n // 20))
    start_ms = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp() * 1000)
    ev = generate_events(rng, n, n_users, n_items, start_ms, MS_PER_DAY)
    names = ev["etype_names"]
    offsets = np.array(OFFSETS_MIN)[rng.integers(0, len(OFFSETS_MIN), size=n_users)]
    platform_of_user = PLATFORMS[rng.choice(len(PLATFORMS), size=n_users, p=PLATFORM_SHARE)]
    off = offsets[ev["user"]]
    local = (ev["ts"] + off * 60_000).astype("datetime64[ms]")
    sign = np.where(off < 0, "-", "+")
    suffix = [
        f"{s}{abs(int(m)) // 60:02d}:{abs(int(m)) % 60:02d}" for s, m in zip(sign, off, strict=True)
    ]
    ts_text = np.char.add(np.datetime_as_string(local, unit="ms"), np.array(suffix))
    hours = ((ev["ts"] - start_ms) // MS_PER_HOUR).astype(int)
    seconds = rng.integers(5, 60, size=n) * 60
    event_ids = _hex_ids(rng, n)
    request_ids = _hex_ids(rng, int(ev["request"].max()) + 1)
    lines_by_hour: dict[int, list[str]] = {}
    for i in range(n):
        etype = str(names[ev["etype"][i]])
        rec: dict[str, Any] = {
            "event_id": event_ids[i].decode(),
            "event_type": etype,
            "user_id": f"u{int(ev['user'][i]):08d}",
            "ts": str(ts_text[i]),
        }
        if ev["item"][i] >= 0:
            rec["item_id"] = f"it_{int(ev['item'][i]):07d}"
            rec["request_id"] = request_ids[ev["request"][i]].decode()
            rec["position"] = int(ev["position"][i])
            rec["session_id"] = f"s_{int(ev['session'][i]):010d}"
        rec["platform"] = str(platform_of_user[ev["user"][i]])
        if etype == "workout_complete":
            rec["payload"] = {"seconds": int(seconds[i])}
        lines_by_hour.setdefault(int(hours[i]), []).append(json.dumps(rec))
    files = 0
    size = 0
    for hour, lines in sorted(lines_by_hour.items()):
        for b in range(0, len(lines), batch_lines):
            key = layout.landing_events_key(day, hour, f"batch-{b // batch_lines:04d}")
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            data = gzip.compress(("\n".join(lines[b : b + batch_lines]) + "\n").encode())
            path.write_bytes(data)
            files += 1
            size += len(data)
    return {"lines": n, "files": files, "gzip_bytes": size}


def child_ingest(spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``ingest_batches`` on every landed batch under ``root`` (one process)."""
    import pandas as pd

    from fitpulse_orchestration.events.ingest import ingest_batches
    from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer

    root = Path(spec["root"])
    batches = [
        (path.relative_to(root).as_posix(), path.read_bytes())
        for path in sorted(root.rglob("*.ndjson.gz"))
    ]
    day = dt.date.fromisoformat(spec["day"])
    pseudonymizer = Pseudonymizer.from_secret("x" * 32)
    base = proc_status_kib("VmRSS")
    reset = reset_peak_rss()
    cpu0, t0 = _cpu(), time.perf_counter()
    result = ingest_batches(batches, day, pseudonymizer)
    wall = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    peak = peak_rss_kib()
    cpu1, t1 = _cpu(), time.perf_counter()
    result.events.to_parquet(root / "clean.parquet", index=False, compression="zstd")
    result.quarantine.to_parquet(root / "quarantine.parquet", index=False, compression="zstd")
    write = time.perf_counter() - t1
    # What ingest_day carries between days: the previous day's accepted event ids as a
    # frozenset of fresh str objects (object sizes, allocator overhead not included).
    seen = frozenset(pd.read_parquet(root / "clean.parquet", columns=["event_id"])["event_id"])
    seen_bytes = sys.getsizeof(seen) + sum(sys.getsizeof(x) for x in seen)
    return {
        "seen_ids_bytes_per_id": seen_bytes / max(1, len(seen)),
        "wall_s": wall,
        "cpu_s": cpu,
        "write_s": write,
        "write_cpu_s": _cpu() - cpu1,
        "rss_before_kib": base,
        "peak_rss_kib": peak,
        "peak_reset": reset,
        "read": result.read,
        "accepted": result.accepted,
        "quarantined": result.quarantined,
        "duplicates": result.duplicates,
        "balanced": result.balanced,
        "reasons": result.reasons,
        "files": result.files,
        "clean_parquet_bytes": (root / "clean.parquet").stat().st_size,
        "pandas": pd.__version__,
    }


# --------------------------------------------------------------------------- report


def _fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def summarise_duckdb(rows: int, runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Median wall/CPU and rates of each query at each thread count."""
    out: dict[str, Any] = {}
    for name in (*QUERIES, "features (3 queries)"):
        per: dict[str, Any] = {}
        for threads, res in runs.items():
            names = FEATURE_QUERIES if name == "features (3 queries)" else (name,)
            walls = [sum(res[q][i]["wall_s"] for q in names) for i in range(len(res[names[0]]))]
            cpus = [sum(res[q][i]["cpu_s"] for q in names) for i in range(len(res[names[0]]))]
            peak = max(r["peak_rss_kib"] for q in names for r in res[q])
            base = min(r["rss_before_kib"] or 0 for q in names for r in res[q])
            wall = statistics.median(walls)
            per[str(threads)] = {
                "wall_s": wall,
                "wall_min_s": min(walls),
                "cpu_s": statistics.median(cpus),
                "rows_per_s": rows / wall,
                "rows_per_s_per_core": rows / wall / threads,
                "rows_per_cpu_s": rows / statistics.median(cpus),
                "peak_rss_kib": peak,
                "rss_before_kib": base,
            }
        if "1" in per and "2" in per:
            per["scaling_2_vs_1"] = per["1"]["wall_s"] / per["2"]["wall_s"]
        out[name] = per
    return out


def extrapolate(args: argparse.Namespace, measured: dict[str, Any]) -> dict[str, Any]:
    """Core-hours a day and workers per hourly partition at the production volume."""
    impression_share = measured["impression_share"]
    events_day = args.impressions_per_day / impression_share
    hour_avg = events_day / 24
    hour_peak = hour_avg * args.peak_factor
    window_s = args.window_min * 60
    largest = measured["duckdb"][str(max(measured["duckdb"], key=int))]
    ingest_rate = measured["ingest"]["lines_per_s"]
    ingest_total_rate = measured["ingest"]["lines_per_s_with_write"]

    def cores(rate: float, rows: float) -> int:
        return math.ceil(rows / (rate * window_s))

    rollup1 = largest["daily rollup"]["1"]["rows_per_s"]
    feat1 = largest["features (3 queries)"]["1"]["rows_per_s"]
    out: dict[str, Any] = {
        "assumptions": {
            "impressions_per_day": args.impressions_per_day,
            "impression_share_of_events": impression_share,
            "dau": args.dau,
            "peak_hour_factor": args.peak_factor,
            "window_min": args.window_min,
            "feature_window_days": args.window_days,
        },
        "derived": {
            "events_per_day": events_day,
            "events_per_dau_per_day": events_day / args.dau,
            "events_per_hour_avg": hour_avg,
            "events_per_hour_peak": hour_peak,
            "parquet_gb_per_day": events_day * measured["parquet_bytes_per_event"] / 1e9,
            "parquet_gb_per_peak_hour": hour_peak * measured["parquet_bytes_per_event"] / 1e9,
            "read_mb_per_s_peak_hour": hour_peak
            * measured["parquet_bytes_per_event"]
            / 1e6
            / window_s,
            "landed_gzip_gb_per_day": events_day * measured["ingest"]["gzip_bytes_per_line"] / 1e9,
            "ingest_core_hours_per_day": events_day / ingest_total_rate / 3600,
            "ingest_only_core_hours_per_day": events_day / ingest_rate / 3600,
            "rollup_core_hours_per_day": events_day / rollup1 / 3600,
            "features_rescan_core_hours_per_day": args.window_days * events_day / feat1 / 3600,
            "ingest_cores_peak_hour": cores(ingest_total_rate, hour_peak),
            "rollup_cores_peak_hour": cores(rollup1, hour_peak),
            "rollup_2thread_workers_peak_hour": cores(
                largest["daily rollup"]["2"]["rows_per_s"], hour_peak
            )
            if "2" in largest["daily rollup"]
            else None,
            "ingest_gib_per_peak_hour_one_call": hour_peak
            * measured["ingest"]["peak_rss_bytes_per_line"]
            / 2**30,
            "ingest_lines_per_4gib_call": 4 * 2**30 / measured["ingest"]["peak_rss_bytes_per_line"],
            "seen_ids_gib_per_day": events_day
            * measured["ingest"]["seen_ids_bytes_per_id"]
            / 2**30,
        },
    }
    return out


def report(meta: dict[str, Any], measured: dict[str, Any], extra: dict[str, Any]) -> str:
    lines = [
        "FitPulse capacity benchmark (MEASURED on this machine unless marked ASSUMPTION/DERIVED)",
        f"machine: {meta['cpus']} CPUs, {meta['mem_gib']:.1f} GiB, {meta['platform']}, "
        f"Python {meta['python']}, DuckDB {meta['duckdb']}, pandas {meta['pandas']}, "
        f"pyarrow {meta['pyarrow']}; load average {meta['load_start']} -> {meta['load_end']}",
        f"data: {meta['days']} days of events, one zstd Parquet file per hour; users = rows / "
        f"{meta['rows_per_user']}, {meta['items']:,} items (Zipf s={USER_ZIPF} users, "
        f"s={ITEM_ZIPF} items); local files (page cache), not S3",
        "mix: " + ", ".join(f"{k} {v:.0%}" for k, v in EVENT_MIX.items()),
        "",
    ]
    for rows, gen in measured["generation"].items():
        lines.append(
            f"generated {int(rows):,} rows, {gen['users']:,} users, {gen['files']} files, "
            f"{gen['parquet_bytes'] / 2**20:,.1f} MiB Parquet "
            f"({gen['parquet_bytes'] / int(rows):.1f} B/event) in {gen['seconds']:.1f} s"
        )
    lines += [
        "",
        "DuckDB, read_parquet over the hourly files -> zstd Parquet output; median (and min) of "
        f"{meta['repeat']} rounds, thread counts alternated, each run in a fresh process; "
        "rows = input events",
        "| rows | query | threads | seconds | min | rows/s | rows/s per core | cpu/wall | "
        "peak RSS | 2t vs 1t |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rows, summary in measured["duckdb"].items():
        for name, per in summary.items():
            for threads in ("1", "2"):
                if threads not in per:
                    continue
                r = per[threads]
                scaling = per.get("scaling_2_vs_1")
                lines.append(
                    f"| {int(rows):,} | {name} | {threads} | {r['wall_s']:.3f} | "
                    f"{r['wall_min_s']:.3f} | "
                    f"{_fmt(r['rows_per_s'])} | {_fmt(r['rows_per_s_per_core'])} | "
                    f"{r['cpu_s'] / r['wall_s']:.2f} | {_mib(r['peak_rss_kib'])} | "
                    + (f"{scaling:.2f}x |" if threads == "2" and scaling else " |")
                )
    for rows, out_rows in measured["duckdb_output_rows"].items():
        lines.append(
            f"output rows at {int(rows):,}: "
            + ", ".join(f"{k} {v:,}" for k, v in out_rows.items())
            + f" (same at every thread count: {measured['duckdb_output_rows_same'][rows]})"
        )
    pd_res = measured.get("pandas")
    if pd_res:
        lines += [
            "",
            f"pandas per-user features at {pd_res['rows']:,} rows (one thread): read "
            f"{pd_res['read_s']:.2f} s + groupby {pd_res['aggregate_s']:.2f} s + write "
            f"{pd_res['write_s']:.2f} s = {pd_res['wall_s']:.2f} s "
            f"({_fmt(pd_res['rows'] / pd_res['wall_s'])} rows/s), peak RSS "
            f"{_mib(pd_res['peak_rss_kib'])}",
            f"DuckDB 1 thread, same query: {pd_res['duckdb_1t_s']:.3f} s -> DuckDB is "
            f"{pd_res['speedup_1t']:.1f}x faster on one core ({pd_res['speedup_1t_agg_only']:.1f}x "
            "against pandas' groupby alone, read and write excluded); results match: "
            f"counts {pd_res['check']['counts_match']}, last engagement "
            f"{pd_res['check']['last_engaged_match']} ({pd_res['check']['users']:,} users)",
        ]
    ing = measured["ingest"]
    lines += [
        "",
        f"ingest_batches, one process: {ing['lines']:,} lines in {ing['files']} NDJSON.gz "
        f"batches ({ing['gzip_bytes_per_line']:.0f} B/line gzipped), 24 hourly folders of "
        f"{meta['ingest_day']}",
        f"  parse + validate + dedupe + pseudonymize: {ing['wall_s']:.2f} s, "
        f"{_fmt(ing['lines_per_s'])} lines/s, cpu/wall {ing['cpu_s'] / ing['wall_s']:.2f}, "
        f"peak RSS {_mib(ing['peak_rss_kib'])} (+{ing['peak_rss_bytes_per_line']:,.0f} B per "
        "line over the batches in memory)",
        f"  + writing clean Parquet: {ing['write_s']:.2f} s -> "
        f"{_fmt(ing['lines_per_s_with_write'])} lines/s end to end",
        f"  accepted {ing['accepted']:,} / read {ing['read']:,}, quarantined "
        f"{ing['quarantined']:,}, duplicates {ing['duplicates']:,}, balanced {ing['balanced']}",
        f"  the day's accepted event ids as a Python set (how ingest_day held its 30-day "
        "window before accepted_among read it one partition at a time): "
        f"{ing['seen_ids_bytes_per_id']:.0f} B per id",
    ]
    a, d = extra["assumptions"], extra["derived"]
    largest = max(measured["duckdb"], key=int)
    lines += [
        "",
        "Extrapolation",
        f"  ASSUMPTION  {a['impressions_per_day']:,.0f} impressions/day, {a['dau']:,.0f} DAU",
        f"  ASSUMPTION  impressions are {a['impression_share_of_events']:.1%} of events "
        "(the generator's mix above)",
        f"  ASSUMPTION  peak hour = {a['peak_hour_factor']}x the average hour; an hourly "
        f"partition must finish in {a['window_min']} min; features over {a['feature_window_days']}"
        " days",
        f"  ASSUMPTION  per-core rates measured here hold per core in production (DuckDB rates "
        f"from {int(largest):,} rows, 1 thread; local files, not S3)",
        f"  DERIVED     {d['events_per_day']:,.0f} events/day ({d['events_per_dau_per_day']:.0f}"
        f" per DAU), {d['events_per_hour_avg']:,.0f} per average hour, "
        f"{d['events_per_hour_peak']:,.0f} in the peak hour",
        f"  DERIVED     warehouse Parquet {d['parquet_gb_per_day']:,.1f} GB/day "
        f"({d['parquet_gb_per_peak_hour']:,.1f} GB in the peak hour, "
        f"{d['read_mb_per_s_peak_hour']:,.1f} MB/s to read it in the window); landed NDJSON.gz "
        f"{d['landed_gzip_gb_per_day']:,.1f} GB/day",
        f"  DERIVED     ingestion: {d['ingest_core_hours_per_day']:,.0f} core-hours/day "
        f"({d['ingest_only_core_hours_per_day']:,.0f} without the Parquet write); peak hour "
        f"in {a['window_min']} min: {d['ingest_cores_peak_hour']:,} single-core workers",
        f"  DERIVED     ingestion memory: one ingest_batches call over the peak hour would "
        f"peak at ~{d['ingest_gib_per_peak_hour_one_call']:,.0f} GiB; 4 GiB holds about "
        f"{d['ingest_lines_per_4gib_call']:,.0f} lines per call; a day's event ids "
        f"held as a set would take {d['seen_ids_gib_per_day']:,.0f} GiB",
        f"  DERIVED     features, incremental (daily rollup, each event once): "
        f"{d['rollup_core_hours_per_day']:,.1f} core-hours/day; peak hour in "
        f"{a['window_min']} min: {d['rollup_cores_peak_hour']} core(s) at 1 thread, "
        f"{d['rollup_2thread_workers_peak_hour']} 2-thread worker(s)",
        f"  DERIVED     features, full rescan of {a['feature_window_days']} days every day "
        f"(3 queries): {d['features_rescan_core_hours_per_day']:,.1f} core-hours/day",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="2000000,8000000", help="warehouse sizes, comma list")
    parser.add_argument("--days", type=int, default=7, help="days of events (one file per hour)")
    parser.add_argument("--rows-per-user", type=int, default=100, help="users = rows / this")
    parser.add_argument("--items", type=int, default=50_000, help="catalog size")
    parser.add_argument("--threads", default="1,2", help="DuckDB thread counts, comma list")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of each query (median)")
    parser.add_argument("--ingest-rows", type=int, default=200_000, help="landed lines ingested")
    parser.add_argument("--batch-lines", type=int, default=5_000, help="lines per NDJSON.gz batch")
    parser.add_argument("--impressions-per-day", type=float, default=1.3e9)
    parser.add_argument("--dau", type=float, default=18e6)
    parser.add_argument("--peak-factor", type=float, default=1.5, help="peak hour / mean hour")
    parser.add_argument("--window-min", type=float, default=15, help="minutes per hourly run")
    parser.add_argument("--window-days", type=int, default=28, help="feature window (days)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="write every number as JSON")
    parser.add_argument("--workdir", type=Path, help="kept if given (must be empty or absent)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, spec = args.child[0], json.loads(args.child[1])
        result = child_duckdb(spec) if kind == "duckdb" else child_ingest(spec)
        print(json.dumps(result))
        return

    import duckdb
    import pandas as pd

    t_start = time.perf_counter()
    sizes = [int(float(s)) for s in args.rows.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        if any(args.workdir.iterdir()):
            parser.error(f"--workdir {args.workdir} is not empty")
        work = args.workdir
    else:
        work = Path(tempfile.mkdtemp(prefix="fitpulse-capacity-"))
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "mem_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pandas": pd.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "days": args.days,
        "rows_per_user": args.rows_per_user,
        "items": args.items,
        "repeat": args.repeat,
        "ingest_day": INGEST_DAY.isoformat(),
        "args": {k: str(v) for k, v in vars(args).items() if k != "child"},
    }
    measured: dict[str, Any] = {
        "generation": {},
        "duckdb": {},
        "duckdb_raw": {},
        "duckdb_output_rows": {},
        "duckdb_output_rows_same": {},
    }
    span_ms = args.days * MS_PER_DAY
    start_ms = int(START.timestamp() * 1000)
    as_of_ms = start_ms + span_ms
    try:
        for rows in sorted(sizes):
            rng = np.random.default_rng([args.seed, rows])
            n_users = max(1_000, rows // args.rows_per_user)
            n_items = min(args.items, max(100, rows // 20))
            print(f"generating {rows:,} events ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            ev = generate_events(rng, rows, n_users, n_items, start_ms, span_ms)
            impression_share = float(np.mean(ev["etype"] == 0))
            root = work / f"rows-{rows}"
            info = write_warehouse(rng, ev, n_users, n_items, root / "events")
            del ev
            info.update(
                seconds=time.perf_counter() - t0,
                users=n_users,
                items=n_items,
                impression_share=impression_share,
            )
            measured["generation"][str(rows)] = info
            # Rounds alternate the thread counts (1, 2, then 2, 1, ...), each run in a fresh
            # process: drift in the shared machine's speed hits both settings alike.
            raw: dict[int, Any] = {t: {q: [] for q in QUERIES} for t in thread_counts}
            out_rows: dict[int, Any] = {}
            for r in range(args.repeat):
                for threads in thread_counts if r % 2 == 0 else thread_counts[::-1]:
                    print(
                        f"DuckDB {rows:,} rows, {threads} thread(s), round {r + 1}/{args.repeat}",
                        file=sys.stderr,
                        flush=True,
                    )
                    res = run_child(
                        "duckdb",
                        {
                            "events": str(root / "events" / "*.parquet"),
                            "catalog": str(root / "catalog.parquet"),
                            "out": str(root / f"out-{threads}t"),
                            "threads": threads,
                            "repeat": 1,
                            "as_of_ms": as_of_ms,
                            "window_days": args.window_days,
                        },
                    )
                    out_rows[threads] = res["output_rows"]
                    for q in QUERIES:
                        raw[threads][q].extend(res[q])
            measured["duckdb_raw"][str(rows)] = raw
            measured["duckdb_output_rows"][str(rows)] = out_rows[thread_counts[0]]
            measured["duckdb_output_rows_same"][str(rows)] = all(
                v == out_rows[thread_counts[0]] for v in out_rows.values()
            )
            measured["duckdb"][str(rows)] = summarise_duckdb(rows, raw)
            if rows == min(sizes):
                print("pandas comparison ...", file=sys.stderr, flush=True)
                res = pandas_user_features(root / "events", as_of_ms, args.window_days)
                frame = res.pop("frame")
                first = root / f"out-{thread_counts[0]}t" / "user_features.parquet"
                res["check"] = compare_user_features(frame, first)
                del frame
                one = measured["duckdb"][str(rows)]["user features"].get("1")
                if one:
                    res["duckdb_1t_s"] = one["wall_s"]
                    res["speedup_1t"] = res["wall_s"] / one["wall_s"]
                    res["speedup_1t_agg_only"] = res["aggregate_s"] / one["wall_s"]
                res["rows"] = rows
                measured["pandas"] = res
            if not args.workdir:
                shutil.rmtree(root)

        largest = str(max(sizes))
        measured["impression_share"] = measured["generation"][largest]["impression_share"]
        measured["parquet_bytes_per_event"] = measured["generation"][largest][
            "parquet_bytes"
        ] / max(sizes)

        print(f"landing {args.ingest_rows:,} lines ...", file=sys.stderr, flush=True)
        landing = work / "landing-store"
        land = write_landing(
            np.random.default_rng([args.seed, 0]),
            args.ingest_rows,
            landing,
            args.batch_lines,
            INGEST_DAY,
        )
        print("ingest_batches ...", file=sys.stderr, flush=True)
        ing = run_child("ingest", {"root": str(landing), "day": INGEST_DAY.isoformat()})
        ing.pop("pandas")
        ing.update(
            lines=land["lines"],
            gzip_bytes=land["gzip_bytes"],
            gzip_bytes_per_line=land["gzip_bytes"] / land["lines"],
            lines_per_s=land["lines"] / ing["wall_s"],
            lines_per_s_with_write=land["lines"] / (ing["wall_s"] + ing["write_s"]),
            peak_rss_bytes_per_line=(ing["peak_rss_kib"] - (ing["rss_before_kib"] or 0))
            * 1024
            / land["lines"],
            accepted_equals_lines=ing["accepted"] == land["lines"],
        )
        measured["ingest"] = ing
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    meta["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta["wall_s"] = time.perf_counter() - t_start
    extra = extrapolate(args, measured)
    print(report(meta, measured, extra))
    print(f"\ntotal wall time {meta['wall_s']:.1f} s")
    if args.out:
        args.out.write_text(
            json.dumps({"meta": meta, "measured": measured, "extrapolation": extra}, indent=2)
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
