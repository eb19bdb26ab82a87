"""Home-feed serving latency: in process, under threads, with a 1M-item index, and over HTTP.

Measures the online feed service (``fitpulse_orchestration.serving``) on a trained project home:

1. In process: ``FeedService.home_feed`` for ``--requests`` requests after a warm-up, first
   sequentially (latency percentiles, the mean of every stage of ``response.stage_ms``, the
   fallbacks seen, per-core throughput = 1000 / mean ms), then from a thread pool of 1, 2 and 4
   threads (they share the GIL: the real throughput and latencies are printed).
2. The same with a synthetic ``--index-items`` item HNSW index swapped into the loaded model,
   with the catalog, the online item features and the ALS item factors extended to match, so
   the synthetic items are published and servable (see ``LARGE_CATALOG_NOTE``). The index is
   cached under ``<home>/bench/serve/`` so a rerun does not rebuild it.
3. Over HTTP: the app of ``server.app.create_app`` under uvicorn in a subprocess, driven by
   ``--http-clients`` concurrent keep-alive clients (httpx) for ``--http-seconds`` each.
4. A capacity estimate for ``--target-qps`` at the p99 target, with its assumptions printed.

Requests go to the app's raw user ids (``<home>/store/landing/users``) mixed with a share of
ids the platform has never seen (``--cold-share``). The served log (exposures and sampled served
features) is recorded as in production but written to a temporary store, never to the home's
landing zone, where the next ``fitpulse train`` would ingest the benchmark's impressions.

Every number printed (and written with ``--json-out``) is measured in this run; nothing is
asserted.

    .venv/bin/python benchmarks/serve_bench.py                      # demo home, 1M items
    .venv/bin/python benchmarks/serve_bench.py --scale tiny --index-items 200000 --requests 300
"""

from __future__ import annotations

import os

# Before numpy is imported: the request path is single-threaded by design (LightGBM
# num_threads=1); nested OpenBLAS threads would only oversubscribe the cores.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import argparse
import contextlib
import datetime as dt
import gc
import gzip
import hashlib
import itertools
import json
import math
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_common import git_state, jsonable

from fitpulse_orchestration.features.reference import publish_time_known
from fitpulse_orchestration.retrieval.als import AlsArtifacts
from fitpulse_orchestration.retrieval.index import IndexParams, ItemIndex, build_item_index
from fitpulse_orchestration.serving.feed_service import FeedService
from fitpulse_orchestration.serving.feed_state import LoadedModel, prepare_state
from fitpulse_orchestration.serving.feed_types import STAGES
from fitpulse_orchestration.serving.loading import freeze_heap
from fitpulse_orchestration.serving.logs import ServedLog
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.storage.online_store import SQLiteOnlineStore

HOME_MARKER = ".serve-bench-home"
UNKNOWN_PREFIX = "bench_unknown_"
SYNTHETIC_PREFIX = "syn_"
# Synthetic items are published this much earlier than the item they copy, so they are never
# "fresh" (the fresh pool stays the real one) but are all published at the serving time.
SYNTHETIC_AGE_DAYS = 30
LARGE_CATALOG_NOTE = (
    "synthetic items: ids syn_0000000.. ; ALS vectors drawn from a Gaussian fitted to the real "
    "ALS item factors (mean and full covariance); each one copies the catalog row of a random "
    f"published real item (published {SYNTHETIC_AGE_DAYS} days earlier, so none is fresh) and "
    "that item's online features (i_age_days + "
    f"{SYNTHETIC_AGE_DAYS}); the ALS item factors are extended with the synthetic vectors (so "
    "als_score is computed for them). Serving state rebuilt with prepare_state over the "
    "extended catalog; online store: a copy of the home's with the extended item table. "
    "Nothing in the home is modified except the cache folder."
)
ENV_HOME = "FITPULSE_SERVE_BENCH_HOME"
ENV_LARGE = "FITPULSE_SERVE_BENCH_LARGE"
ENV_LOG = "FITPULSE_SERVE_BENCH_LOG"
ENV_THREADS = "FITPULSE_SERVE_BENCH_THREADS"
BENCH_TOKEN = "serve-bench-token-0123456789"
"""The benchmark server's one caller token (the service needs one on every feed call)."""
AUTH = {"Authorization": f"Bearer {BENCH_TOKEN}"}


def say(message: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[serve-bench {stamp}] {message}", file=sys.stderr, flush=True)


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size now (Linux ``/proc``; NaN elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def memory_mib(pid: int) -> dict[str, float]:
    """RSS, PSS and private memory of a process (``/proc/PID/smaps_rollup``; NaN elsewhere).

    PSS splits each shared page between the processes that map it, so the PSS of a process tree
    sums to what the machine holds for it; private memory is what the process alone holds.
    """
    fields: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        return {"rss": float("nan"), "pss": float("nan"), "private": float("nan")}
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {
        "rss": fields.get("Rss", 0) / 1024,
        "pss": fields.get("Pss", 0) / 1024,
        "private": private / 1024,
    }


def tree_memory(root: int) -> list[dict[str, Any]]:
    """``memory_mib`` of ``root`` and each of its descendants, largest RSS first."""
    rows = [{"pid": pid, **memory_mib(pid)} for pid in _tree_pids(root)]
    return sorted(rows, key=lambda row: -row["rss"])


def prepare_home(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The trained home to serve from: ``--home``, else a reused or new demo home."""
    if args.home is not None:
        home = args.home.expanduser().resolve()
        if not (home / "store").is_dir():
            raise SystemExit(f"--home {home}: no store/ folder (not a trained project home)")
        return home, {"source": "given"}
    home = (
        Path(tempfile.gettempdir()) / "fitpulse-serve-bench" / f"home-{args.scale}-seed{args.seed}"
    )
    marker = home / HOME_MARKER
    if marker.exists() and not args.fresh_home:
        info = json.loads(marker.read_text())
        return home, {"source": "reused", **info}
    shutil.rmtree(home, ignore_errors=True)
    home.parent.mkdir(parents=True, exist_ok=True)
    log_path = home.parent / f"{home.name}.demo.log"
    cmd = [*_fitpulse_command(), "demo", "--scale", args.scale, "--seed", str(args.seed)]
    cmd += ["--home", str(home)]
    say(f"creating the home: {' '.join(cmd)} (log: {log_path})")
    started = time.perf_counter()
    with log_path.open("w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"`fitpulse demo` failed (exit {done.returncode}):\n{tail}")
    # Exit 1 is a failed quality or monitoring check: the version is still registered and
    # servable, which is all this benchmark needs.
    info = {
        "scale": args.scale,
        "seed": args.seed,
        "demo_exit_code": done.returncode,
        "demo_seconds": round(seconds, 1),
        "command": " ".join(cmd),
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    marker.write_text(json.dumps(info, indent=2) + "\n")
    return home, {"source": "created", **info}


def _fitpulse_command() -> list[str]:
    script = Path(sys.executable).with_name("fitpulse")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from fitpulse_orchestration.cli import main; main()"]


def known_user_ids(home: Path) -> np.ndarray:
    """Raw app user ids of every landed user file, sorted and unique."""
    files = sorted((home / "store" / "landing" / "users").rglob("*.parquet"))
    if not files:
        raise SystemExit(f"no landed users under {home / 'store/landing/users'}")
    ids = pd.concat([pd.read_parquet(f, columns=["user_id"]) for f in files])["user_id"]
    return np.sort(ids.dropna().astype(str).unique())


def request_users(known: np.ndarray, n: int, cold_share: float, seed: int) -> list[str]:
    """``n`` request ids: known ids drawn with replacement, a ``cold_share`` of unknown ids."""
    rng = np.random.default_rng(seed)
    unknown = rng.random(n) < cold_share
    picks = rng.choice(known, size=n)
    return [
        f"{UNKNOWN_PREFIX}{k:07d}" if is_unknown else str(user)
        for k, (user, is_unknown) in enumerate(zip(picks, unknown, strict=True))
    ]


def load_service(home: Path, log_root: Path) -> tuple[FeedService, ServedLog]:
    """The service ``fitpulse serve`` would build, its served log redirected to ``log_root``."""
    from fitpulse_orchestration.server.runtime import build_runtime, profile_backends

    project = ProjectHome(home)
    runtime = build_runtime(profile_backends(project, "local"), project.model_cache)
    service = runtime.service
    champion = service.state.models["champion"]
    if champion.model is None:
        # The service loads only a promoted champion; timing the fallback would mislead.
        raise SystemExit(
            f"no champion to serve in {home} ({champion.problem}): approve and promote a "
            "version whose gate passed (`fitpulse registry approve` / `promote`), or use a "
            "`fitpulse demo` home, whose stand-in reviewer does it"
        )
    served_log = ServedLog(
        LocalObjectStore(log_root), feature_share=service.config.feature_log_share
    )
    service.on_served = served_log.record
    return service, served_log


def model_facts(service: FeedService) -> dict[str, Any]:
    state = service.state
    champion = state.models["champion"]
    model = champion.model
    facts: dict[str, Any] = {
        "version": champion.version,
        "problem": champion.problem,
        "as_of": state.as_of.isoformat(),
        "catalog_items": len(state.catalog),
        "ready": state.ready,
    }
    if model is not None:
        facts.update(
            als_dim=int(model.als.item_factors.shape[1]),
            als_items=len(model.als.item_ids),
            als_users=len(model.als.user_ids),
            index_kind=model.index.kind if model.index is not None else None,
            index_items=len(model.index) if model.index is not None else 0,
        )
    return facts


@dataclass
class Sample:
    """What one request left behind (the response itself is dropped: it holds frames)."""

    ms: float
    stage_ms: dict[str, float] = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()
    cold: bool = False
    ranked: bool = False
    has_als: bool | None = None
    """Whether the feed holds an ALS item; read for the sampled (``keep_payload``) feeds only."""
    error: str | None = None
    payload: dict[str, Any] | None = None


def _call(service: FeedService, user: str, keep_payload: bool) -> Sample:
    t0 = time.perf_counter()
    try:
        response = service.home_feed(user)
    except Exception as exc:  # counted and reported: the run goes on
        return Sample((time.perf_counter() - t0) * 1e3, error=type(exc).__name__)
    ms = (time.perf_counter() - t0) * 1e3
    # The served rows are a frame built on first read: by the served log's writer for the
    # sampled share of feeds, never for the rest. Reading them for every feed would add their
    # cost to the process CPU per feed, so only the sampled feeds are read here.
    has_als = None
    if keep_payload:
        served = response.served
        has_als = "source" in served and bool((served["source"] == "als").any())
    return Sample(
        ms,
        stage_ms=response.stage_ms,
        fallbacks=tuple(response.fallbacks),
        cold=response.cold,
        ranked=response.ranked,
        has_als=has_als,
        payload=response.payload() if keep_payload else None,
    )


def drive(service: FeedService, users: Sequence[str], threads: int) -> dict[str, Any]:
    """Serve ``users`` sequentially (``threads`` 0) or from a pool of ``threads`` threads."""
    slots = max(threads, 1)
    samples: list[list[Sample]] = [[] for _ in range(slots)]

    def work(slot: int) -> None:
        out = samples[slot]
        for k, user in enumerate(users[slot::slots]):
            out.append(_call(service, user, keep_payload=k < 50))

    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    if threads == 0:
        work(0)
    else:
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(work, s) for s in range(slots)]:
                future.result()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return summarize_samples([s for chunk in samples for s in chunk], wall, cpu, threads)


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    if not len(ms):
        return dict.fromkeys(("p50", "p95", "p99", "max", "mean"), float("nan"))
    arr = np.asarray(ms, dtype=float)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
    }


def summarize_samples(
    samples: list[Sample], wall: float, cpu: float, threads: int
) -> dict[str, Any]:
    ok = [s for s in samples if s.error is None]
    stages: dict[str, Any] = {}
    for stage in (*STAGES, "other"):
        if stage == "other":
            values = [s.ms - sum(s.stage_ms.values()) for s in ok]
        else:
            values = [s.stage_ms[stage] for s in ok if stage in s.stage_ms]
        stages[stage] = {"ran": len(values), **latency_summary(values)}
    payloads = [json.dumps(s.payload).encode() for s in ok if s.payload is not None]
    n = len(samples)
    return {
        "threads": threads,
        "requests": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "throughput_rps": n / wall if wall else float("nan"),
        "cpu_ms_per_request": 1e3 * cpu / n if n else float("nan"),
        "latency_ms": latency_summary([s.ms for s in ok]),
        "stages_ms": stages,
        "errors": dict(Counter(s.error for s in samples if s.error is not None)),
        "fallbacks": dict(Counter(f for s in ok for f in s.fallbacks)),
        "cold_share": sum(s.cold for s in ok) / len(ok) if ok else float("nan"),
        "ranked_share": sum(s.ranked for s in ok) / len(ok) if ok else float("nan"),
        "als_share": (
            sum(bool(s.has_als) for s in read) / len(read)
            if (read := [s for s in ok if s.has_als is not None])
            else float("nan")
        ),
        "als_share_of": len([s for s in ok if s.has_als is not None]),
        "payload_bytes_raw": statistics.fmean(len(p) for p in payloads) if payloads else 0.0,
        "payload_bytes_gzip": statistics.fmean(len(gzip.compress(p)) for p in payloads)
        if payloads
        else 0.0,
    }


def bench_in_process(
    label: str,
    service: FeedService,
    users: list[str],
    warmup: list[str],
    pool_threads: Sequence[int],
) -> dict[str, Any]:
    """Warm up, then one sequential run and one run per pool size over the same users."""
    say(f"{label}: warm-up {len(warmup)} requests")
    for user in warmup:
        _call(service, user, keep_payload=False)
    runs = []
    for threads in (0, *pool_threads):
        mode = "sequential" if threads == 0 else f"{threads}-thread pool"
        say(f"{label}: {len(users)} requests, {mode}")
        runs.append(drive(service, users, threads))
    sequential = runs[0]
    return {
        "runs": runs,
        "per_core_rps": 1e3 / sequential["latency_ms"]["mean"],
        "per_core_rps_cpu": 1e3 / sequential["cpu_ms_per_request"],
    }


@dataclass
class LargeCatalog:
    """A cached synthetic extension of the served model: index, vectors and catalog copies.

    ``index`` holds the real ALS items first, then ``syn_ids`` (rows of ``syn_vectors``);
    ``templates[k]`` is the real item whose catalog row and features ``syn_ids[k]`` copies.
    """

    folder: Path
    index: ItemIndex
    syn_ids: np.ndarray
    syn_vectors: np.ndarray
    templates: np.ndarray
    online_path: Path
    meta: dict[str, Any]


def large_folder(home: Path, model: Any, n_items: int, seed: int, params: IndexParams) -> Path:
    """Cache folder of one synthetic extension (keyed by the real factors and the settings)."""
    als = model.als
    digest = hashlib.blake2b(digest_size=6)
    digest.update(np.ascontiguousarray(als.item_factors).tobytes())
    digest.update("\n".join(map(str, als.item_ids)).encode())
    key = (
        f"items{n_items}-d{als.item_factors.shape[1]}-s{seed}-m{params.hnsw_m}"
        f"-efc{params.hnsw_ef_construction}-{digest.hexdigest()}"
    )
    return home / "bench" / "serve" / key


def _synthetic_vectors(factors: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    mean = factors.astype(np.float64).mean(axis=0)
    cov = np.cov(factors.astype(np.float64), rowvar=False)
    out = np.empty((n, factors.shape[1]), dtype=np.float32)
    for start in range(0, n, 200_000):
        stop = min(n, start + 200_000)
        out[start:stop] = rng.multivariate_normal(mean, cov, size=stop - start)
    return out


def _template_pool(catalog: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Real catalog rows a synthetic item may copy: published (known time) before ``as_of``."""
    frame = catalog.drop_duplicates("item_id", keep="last")
    frame = frame[publish_time_known(frame) & (frame["published_at"] < as_of)]
    return frame.sort_values("item_id").reset_index(drop=True)


def build_large(
    folder: Path,
    service: FeedService,
    n_items: int,
    seed: int,
    params: IndexParams,
) -> dict[str, Any]:
    """Build and write the synthetic extension to ``folder``; return the build facts."""
    state = service.state
    model = state.models["champion"].model
    if model is None:
        raise SystemExit("no champion model to extend")
    als = model.als
    n_real = len(als.item_ids)
    n_syn = n_items - n_real
    rng = np.random.default_rng(seed)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    facts: dict[str, Any] = {"n_items": n_items, "n_real": n_real, "n_synthetic": n_syn}

    t0 = time.perf_counter()
    syn_vectors = _synthetic_vectors(als.item_factors, n_syn, rng)
    syn_ids = np.array([f"{SYNTHETIC_PREFIX}{k:07d}" for k in range(n_syn)])
    pool = _template_pool(state.catalog.source, state.as_of)
    templates = pool["item_id"].astype(str).to_numpy()[rng.integers(0, len(pool), n_syn)]
    facts["generate_s"] = time.perf_counter() - t0

    say(f"building a {n_items:,}-item index ({n_real:,} real + {n_syn:,} synthetic) ...")
    all_ids = np.concatenate([np.asarray(als.item_ids).astype(str), syn_ids])
    all_vectors = np.vstack([als.item_factors.astype(np.float32), syn_vectors])
    rss0 = rss_mib()
    t0 = time.perf_counter()
    index = build_item_index(all_ids, all_vectors, params)
    facts["index_build_s"] = time.perf_counter() - t0
    facts["index_build_rss_delta_mib"] = rss_mib() - rss0
    say(f"index built in {facts['index_build_s']:.1f} s ({index.kind})")
    import faiss

    faiss.write_index(index._index, str(tmp / "index.faiss"))
    del index, all_vectors
    np.save(tmp / "syn_vectors.npy", syn_vectors)
    np.save(tmp / "syn_ids.npy", syn_ids.astype(str))
    np.save(tmp / "templates.npy", templates.astype(str))

    say("extending the online item features ...")
    t0 = time.perf_counter()
    source = sqlite3.connect(f"file:{service.store.path}?mode=ro", uri=True)  # type: ignore[attr-defined]
    target = sqlite3.connect(tmp / "online.sqlite")
    with contextlib.closing(source), contextlib.closing(target):
        source.backup(target)
    online = SQLiteOnlineStore(tmp / "online.sqlite")
    meta = online.meta("item")
    if meta is None:
        raise SystemExit("the home's online store has no item features")
    everything = online.lookup("item", _all_item_ids(online))
    by_id = everything.set_index("item_id")
    has = np.isin(templates, by_id.index.to_numpy())
    syn = by_id.loc[templates[has]].reset_index(drop=True)
    if "i_age_days" in syn:
        syn["i_age_days"] += SYNTHETIC_AGE_DAYS
    syn.insert(0, "item_id", syn_ids[has])
    online.materialize(
        "item",
        pd.concat([everything, syn], ignore_index=True),
        meta.features,
        pd.Timestamp(meta.as_of),
    )
    facts["online_extend_s"] = time.perf_counter() - t0
    facts["synthetic_with_features"] = int(has.sum())
    facts["built"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    facts["index_params"] = {
        "hnsw_m": params.hnsw_m,
        "hnsw_ef_construction": params.hnsw_ef_construction,
        "hnsw_ef_search": params.hnsw_ef_search,
        "exact_threshold": params.exact_threshold,
    }
    (tmp / "meta.json").write_text(json.dumps(facts, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    gc.collect()
    return facts


def _all_item_ids(online: SQLiteOnlineStore) -> list[str]:
    with contextlib.closing(sqlite3.connect(online.path)) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM features WHERE kind = 'item'")]


def open_large(folder: Path, model: Any, params: IndexParams) -> LargeCatalog:
    """Read a cached extension written by ``build_large``."""
    import faiss

    meta = json.loads((folder / "meta.json").read_text())
    # faiss stubs type read_index as the Index base class; this one is an IndexIDMap2.
    raw: Any = faiss.read_index(str(folder / "index.faiss"))
    syn_ids = np.load(folder / "syn_ids.npy")
    item_ids = np.concatenate([np.asarray(model.als.item_ids).astype(str), syn_ids])
    faiss_ids = faiss.vector_to_array(raw.id_map)
    if len(faiss_ids) != len(item_ids):
        raise SystemExit(f"{folder}: index and ids disagree; delete the folder to rebuild")
    kind = "hnsw" if len(item_ids) > params.exact_threshold else "flat"
    if kind == "hnsw":
        hnsw_index: Any = faiss.downcast_index(raw.index)
        hnsw_index.hnsw.efSearch = params.hnsw_ef_search
    id_map = dict(zip(faiss_ids.tolist(), item_ids.tolist(), strict=True))
    index = ItemIndex(raw, id_map, kind, int(raw.d))
    return LargeCatalog(
        folder=folder,
        index=index,
        syn_ids=syn_ids,
        syn_vectors=np.load(folder / "syn_vectors.npy"),
        templates=np.load(folder / "templates.npy"),
        online_path=folder / "online.sqlite",
        meta=meta,
    )


def index_memory(index: ItemIndex) -> dict[str, float]:
    """Bytes the FAISS structures hold: vectors, HNSW links and levels, the id map."""
    import faiss

    raw = index._index
    n, dim = int(raw.ntotal), int(raw.d)
    out = {"vectors_bytes": float(n * dim * 4), "faiss_id_map_bytes": float(n * 8)}
    if index.kind == "hnsw":
        hnsw_index: Any = faiss.downcast_index(raw.index)
        hnsw = hnsw_index.hnsw
        out["hnsw_links_bytes"] = float(
            hnsw.neighbors.size() * 4 + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8
        )
    else:
        out["hnsw_links_bytes"] = 0.0
    out["faiss_total_bytes"] = sum(out.values())
    return out


def extend_als(als: AlsArtifacts, syn_ids: np.ndarray, syn_vectors: np.ndarray) -> AlsArtifacts:
    """ALS artifacts whose item side also holds the synthetic items (ids kept sorted)."""
    ids = np.concatenate([np.asarray(als.item_ids).astype(str), syn_ids])
    vectors = np.vstack([als.item_factors, syn_vectors.astype(als.item_factors.dtype)])
    order = np.argsort(ids, kind="stable")
    return replace(als, item_ids=ids[order], item_factors=vectors[order])


def extend_catalog(
    catalog: pd.DataFrame, as_of: pd.Timestamp, syn_ids: np.ndarray, templates: np.ndarray
) -> pd.DataFrame:
    """The real catalog plus one copied row per synthetic item."""
    pool = _template_pool(catalog, as_of).set_index("item_id")
    rows = pool.loc[templates].reset_index(drop=True)
    rows.insert(0, "item_id", syn_ids)
    rows["published_at"] = rows["published_at"] - pd.Timedelta(days=SYNTHETIC_AGE_DAYS)
    return pd.concat([catalog, rows[catalog.columns]], ignore_index=True)


def large_service(base: FeedService, large: LargeCatalog) -> FeedService:
    """A service over the extended model, catalog and online store (same config and log)."""
    state = base.state
    loaded = state.models["champion"]
    if loaded.model is None:
        raise SystemExit("no champion model to extend")
    model = replace(
        loaded.model,
        als=extend_als(loaded.model.als, large.syn_ids, large.syn_vectors),
        index=large.index,
    )
    catalog = extend_catalog(state.catalog.source, state.as_of, large.syn_ids, large.templates)
    big_state = prepare_state(
        {"champion": LoadedModel(loaded.version, model)},
        catalog,
        state.popular,
        state.as_of,
        live=state.live,
    )
    service = FeedService(
        big_state,
        SQLiteOnlineStore(large.online_path),
        base.pseudonymizer,
        base.config,
        base.experiment,
        on_served=base.on_served,
    )
    # As the service does after every load: the state's objects leave the GC's reach.
    freeze_heap(collect=True)
    return service


def create_bench_app() -> Any:
    """Uvicorn app factory of the benchmark server (settings from ``FITPULSE_SERVE_BENCH_*``).

    The app of ``fitpulse serve``, with the served log written under ``$FITPULSE_SERVE_BENCH_LOG``
    and, when ``$FITPULSE_SERVE_BENCH_LARGE`` names a cache folder, the synthetic index swapped in.
    """
    from fitpulse_orchestration.server.app import create_app
    from fitpulse_orchestration.serving.auth import ApiTokens

    service, served_log = load_service(Path(os.environ[ENV_HOME]), Path(os.environ[ENV_LOG]))
    large = os.environ.get(ENV_LARGE)
    if large:
        model = service.state.models["champion"].model
        service = large_service(
            service, open_large(Path(large), model, IndexParams(large_kind="hnsw"))
        )
    return create_app(
        service,
        None,
        served_log,
        threads=int(os.environ[ENV_THREADS]),
        tokens=ApiTokens.of({"bench": BENCH_TOKEN}),
    )


def serve_prefork(port: int, workers: int) -> None:
    """The benchmark app served as ``fitpulse serve`` serves: built once, workers forked."""
    from fitpulse_orchestration.server.prefork import serve_forked

    serve_forked(create_bench_app(), "127.0.0.1", port, workers)


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tree_pids(root: int) -> list[int]:
    """``root`` and its descendants (from ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of ``root`` and its descendants so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def scrape_metrics(client: Any) -> dict[str, float]:
    """Sums and counts of the service's request and stage histograms (one worker's)."""
    text = client.get("/metrics").text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith(("fitpulse_feed_request_seconds_", "fitpulse_feed_stage_seconds_")) and (
            "_sum" in name or "_count" in name
        ):
            out[name] = float(value)
    return out


@contextlib.contextmanager
def bench_server(
    home: Path,
    large: Path | None,
    workers: int,
    threads: int,
    workdir: Path,
    timeout_s: float,
    kind: str = "prefork",
    cpus: Sequence[int] | None = None,
) -> Iterator[dict[str, Any]]:
    """Start the server in a subprocess, wait for ``/readyz``, always stop it on exit.

    ``kind``: ``prefork``, as ``fitpulse serve`` runs it (the app loads once, gunicorn forks
    the workers: ``serve_prefork``); ``spawn``, uvicorn's ``--workers`` (each worker a new
    interpreter that loads its own models), what ``fitpulse serve`` ran before. ``cpus``: the
    server (and every worker it forks) runs on these cores only (``taskset``).
    """
    import httpx

    port = _free_port()
    log_dir = workdir / f"served-log-http-w{workers}"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # as `fitpulse serve` sets it for its workers
        ENV_HOME: str(home),
        ENV_LOG: str(log_dir),
        ENV_THREADS: str(threads),
        ENV_LARGE: str(large) if large is not None else "",
    }
    bench_dir = str(Path(__file__).resolve().parent)
    if kind == "prefork":
        cmd = [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {bench_dir!r}); import serve_bench; "
            f"serve_bench.serve_prefork({port}, {workers})",
        ]
    elif kind == "spawn":
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "serve_bench:create_bench_app",
            "--factory",
            "--app-dir",
            bench_dir,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    else:
        raise ValueError(f"unknown server kind {kind!r}")
    if cpus:
        cmd = ["taskset", "--cpu-list", ",".join(map(str, cpus)), *cmd]
    log_path = workdir / f"{kind}-w{workers}.log"
    say(f"starting: {' '.join(cmd)} (log: {log_path})")
    started = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=5.0) as client:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(
                        f"the {kind} server exited with {proc.returncode}:\n"
                        f"{log_path.read_text()[-3000:]}"
                    )
                if time.perf_counter() - started > timeout_s:
                    raise SystemExit(
                        f"the {kind} server not ready after {timeout_s:.0f} s (log {log_path})"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/readyz").status_code == 200:
                        break
                time.sleep(0.5)
        ready_s = time.perf_counter() - started
        say(f"server ready in {ready_s:.1f} s")
        yield {
            "pid": proc.pid,
            "base_url": base,
            "ready_s": ready_s,
            "command": " ".join(cmd),
            "log": str(log_path),
        }
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (it is its own session), SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def http_level(
    base_url: str,
    server_pid: int,
    users: list[str],
    clients: int,
    seconds: float,
    max_requests: int | None,
    scrape: bool,
) -> dict[str, Any]:
    """``clients`` keep-alive clients in threads, each sending requests back to back."""
    import httpx

    shared: dict[str, float] = {}
    counter = itertools.count()
    results: list[list[tuple[float, int, int, int]]] = [[] for _ in range(clients)]
    errors: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    ends: list[float] = []
    lock = threading.Lock()

    def begin() -> None:
        shared["cpu_server"] = tree_cpu_s(server_pid)
        shared["cpu_client"] = time.process_time()
        shared["start"] = time.perf_counter()

    barrier = threading.Barrier(clients, action=begin)

    def client_loop(slot: int) -> None:
        mine = users[slot::clients] or users
        out = results[slot]
        with httpx.Client(
            base_url=base_url, timeout=30.0, headers={"Accept-Encoding": "gzip", **AUTH}
        ) as client:
            for user in mine[:3]:
                client.get(f"/v1/home-feed/{user}")
            barrier.wait()
            deadline = shared["start"] + seconds
            for user in itertools.cycle(mine):
                if time.perf_counter() >= deadline:
                    break
                if max_requests is not None and next(counter) >= max_requests:
                    break
                t0 = time.perf_counter()
                try:
                    response = client.get(f"/v1/home-feed/{user}")
                    body = response.content
                except httpx.HTTPError as exc:
                    with lock:
                        errors[type(exc).__name__] += 1
                    continue
                ms = (time.perf_counter() - t0) * 1e3
                out.append((ms, response.status_code, response.num_bytes_downloaded, len(body)))
                if response.status_code != 200:
                    with lock:
                        errors[f"HTTP {response.status_code}"] += 1
                    continue
                used = json.loads(body).get("fallbacks") or []
                if used:
                    with lock:
                        fallbacks.update(used)
        with lock:
            ends.append(time.perf_counter())

    metrics_before: dict[str, float] = {}
    if scrape:
        with httpx.Client(base_url=base_url) as client:
            metrics_before = scrape_metrics(client)
    threads = [threading.Thread(target=client_loop, args=(s,)) for s in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = max(ends) - shared["start"]
    server_cpu = tree_cpu_s(server_pid) - shared["cpu_server"]
    client_cpu = time.process_time() - shared["cpu_client"]
    rows = [r for chunk in results for r in chunk]
    ok = [r for r in rows if r[1] == 200]
    n = len(rows) + sum(v for k, v in errors.items() if not k.startswith("HTTP"))
    out: dict[str, Any] = {
        "clients": clients,
        "requests": n,
        "ok": len(ok),
        "wall_s": wall,
        "throughput_rps": len(ok) / wall if wall else float("nan"),
        "latency_ms": latency_summary([r[0] for r in ok]),
        "errors": dict(errors),
        "fallbacks": dict(fallbacks),
        "wire_bytes_mean": statistics.fmean(r[2] for r in ok) if ok else 0.0,
        "server_cpu_s": server_cpu,
        "server_cpu_ms_per_request": 1e3 * server_cpu / len(ok) if ok else float("nan"),
        "client_cpu_s": client_cpu,
        "server_rss_mib": sum(rss_mib(p) for p in _tree_pids(server_pid)),
    }
    if scrape:
        with httpx.Client(base_url=base_url) as client:
            after = scrape_metrics(client)
        delta = {k: after.get(k, 0.0) - metrics_before.get(k, 0.0) for k in after}
        count = delta.get("fitpulse_feed_request_seconds_count", 0.0)
        out["in_service_mean_ms"] = (
            1e3 * delta.get("fitpulse_feed_request_seconds_sum", 0.0) / count
            if count
            else float("nan")
        )
        out["in_service_stage_mean_ms"] = {
            stage: 1e3
            * delta.get(f'fitpulse_feed_stage_seconds_sum{{stage="{stage}"}}', 0.0)
            / max(delta.get(f'fitpulse_feed_stage_seconds_count{{stage="{stage}"}}', 0.0), 1.0)
            for stage in STAGES
        }
    return out


def http_open_loop(
    base_url: str,
    server_pid: int,
    users: list[str],
    rate: float,
    seconds: float,
    seed: int,
    senders: int = 32,
) -> dict[str, Any]:
    """Requests at Poisson arrival times of ``rate`` per second (an open loop).

    Latency counts from the scheduled send time, so a request that waited for a free sender
    (the service fell behind) is not hidden (no coordinated omission).
    """
    import httpx

    rng = np.random.default_rng(seed)
    offsets = np.cumsum(rng.exponential(1.0 / rate, size=int(rate * seconds * 1.5) + 10))
    offsets = offsets[offsets < seconds]
    counter = itertools.count()
    rows: list[tuple[float, int]] = []
    errors: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    lock = threading.Lock()
    shared: dict[str, float] = {}

    def begin() -> None:
        shared["cpu0"] = tree_cpu_s(server_pid)
        shared["start"] = time.perf_counter() + 0.2

    # Every sender opens its connection first; the schedule starts once all have.
    barrier = threading.Barrier(senders, action=begin)

    def sender(slot: int) -> None:
        with httpx.Client(
            base_url=base_url, timeout=30.0, headers={"Accept-Encoding": "gzip", **AUTH}
        ) as client:
            client.get(f"/v1/home-feed/{users[slot % len(users)]}")
            barrier.wait()
            while (k := next(counter)) < len(offsets):
                due = shared["start"] + offsets[k]
                time.sleep(max(0.0, due - time.perf_counter()))
                try:
                    response = client.get(f"/v1/home-feed/{users[k % len(users)]}")
                    body = response.content
                except httpx.HTTPError as exc:
                    with lock:
                        errors[type(exc).__name__] += 1
                    continue
                ms = (time.perf_counter() - due) * 1e3
                with lock:
                    rows.append((ms, response.status_code))
                    if response.status_code != 200:
                        errors[f"HTTP {response.status_code}"] += 1
                    else:
                        fallbacks.update(json.loads(body).get("fallbacks") or [])

    threads = [threading.Thread(target=sender, args=(s,)) for s in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - shared["start"]
    ok = [ms for ms, status in rows if status == 200]
    return {
        "target_rps": rate,
        "scheduled": len(offsets),
        "ok": len(ok),
        "achieved_rps": len(ok) / wall if wall else float("nan"),
        "latency_ms": latency_summary(ok),
        "errors": dict(errors),
        "fallbacks": dict(fallbacks),
        "server_cpu_s": tree_cpu_s(server_pid) - shared["cpu0"],
        "wall_s": wall,
    }


def payload_sizes(base_url: str, users: list[str], n: int = 50) -> dict[str, float]:
    """Mean body bytes on the wire without and with gzip (headers not counted)."""
    import httpx

    sizes: dict[str, list[int]] = {"identity": [], "gzip": []}
    with httpx.Client(base_url=base_url, timeout=30.0, headers=AUTH) as client:
        for user in users[:n]:
            for encoding, values in sizes.items():
                r = client.get(f"/v1/home-feed/{user}", headers={"Accept-Encoding": encoding})
                if r.status_code == 200:
                    r.read()
                    values.append(r.num_bytes_downloaded)
    return {
        "raw_bytes": statistics.fmean(sizes["identity"]) if sizes["identity"] else 0.0,
        "gzip_bytes": statistics.fmean(sizes["gzip"]) if sizes["gzip"] else 0.0,
    }


def bench_http(
    home: Path,
    large: Path | None,
    users: list[str],
    args: argparse.Namespace,
    workdir: Path,
) -> list[dict[str, Any]]:
    out = []
    with pinned(args.client_cpus):
        for kind, workers in itertools.product(args.http_servers, args.http_workers):
            out.append(_bench_one_server(home, large, users, args, workdir, kind, workers))
    return out


@contextlib.contextmanager
def pinned(cpus: Sequence[int] | None) -> Iterator[None]:
    """Run this thread (and the client threads it starts) on ``cpus`` only, then restore."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _bench_one_server(
    home: Path,
    large: Path | None,
    users: list[str],
    args: argparse.Namespace,
    workdir: Path,
    kind: str,
    workers: int,
) -> dict[str, Any]:
    with bench_server(
        home,
        large,
        workers,
        args.http_threads,
        workdir,
        args.http_startup_timeout,
        kind,
        args.server_cpus,
    ) as server:
        result: dict[str, Any] = {
            "server": kind,
            "workers": workers,
            "threads": args.http_threads,
            "index": "large" if large is not None else "trained",
            **{k: server[k] for k in ("ready_s", "command")},
            "idle_rss_mib": sum(rss_mib(p) for p in _tree_pids(server["pid"])),
            "payload": payload_sizes(server["base_url"], users),
            "levels": [],
        }
        for clients in args.http_clients:
            say(f"HTTP ({kind}): {workers} worker(s), {clients} clients, {args.http_seconds:.0f} s")
            result["levels"].append(
                http_level(
                    server["base_url"],
                    server["pid"],
                    users,
                    clients,
                    args.http_seconds,
                    args.http_max_requests,
                    scrape=workers == 1,
                )
            )
        # After the levels: every worker has loaded its models and served requests.
        result["memory"] = tree_memory(server["pid"])
        best_rps = max(level["throughput_rps"] for level in result["levels"])
        rate = args.utilization * best_rps
        say(f"HTTP: {workers} worker(s), open loop at {rate:.1f} req/s, {args.http_seconds:.0f} s")
        result["open_loop"] = http_open_loop(
            server["base_url"], server["pid"], users, rate, args.http_seconds, args.seed
        )
        result["open_loop"]["share_of_best_closed_loop"] = args.utilization
        return result


def capacity(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Cores needed for the target QPS from the measured per-core throughputs."""
    u = args.utilization

    def cores(per_core: float) -> int:
        return math.ceil(args.target_qps / (per_core * u)) if per_core > 0 else -1

    out: dict[str, Any] = {
        "target_qps": args.target_qps,
        "utilization": u,
        "target_p99_ms": args.target_p99_ms,
        "in_process_target_p99_ms": args.in_process_p99_ms,
        "max_degraded_share": args.max_degraded_share,
    }
    key = "large" if "large" in results else "trained"
    inproc = results["large"]["bench"] if key == "large" else results["trained"]
    seq = inproc["runs"][0]
    out["in_process"] = {
        "index": key,
        "per_core_rps": inproc["per_core_rps"],
        "cores": cores(inproc["per_core_rps"]),
        "p99_ms": seq["latency_ms"]["p99"],
        "meets_in_process_p99": seq["latency_ms"]["p99"] <= args.in_process_p99_ms,
    }
    if results.get("http"):
        # A level whose feeds were cut by the request deadline looks fast but serves degraded
        # (unranked) feeds: plan from the levels that served (almost) every feed fully.
        levels = [
            {
                "workers": server["workers"],
                "clients": level["clients"],
                "index": server["index"],
                "per_core_rps": 1e3 / level["server_cpu_ms_per_request"],
                "p99_ms": level["latency_ms"]["p99"],
                "throughput_rps": level["throughput_rps"],
                "degraded_share": level["fallbacks"].get("deadline_exceeded", 0)
                / max(level["ok"], 1),
            }
            for server in results["http"]
            for level in server["levels"]
            if level["ok"]
        ]
        healthy = [x for x in levels if x["degraded_share"] <= args.max_degraded_share]
        best = max(healthy or levels, key=lambda x: x["per_core_rps"], default=None)
        if best is not None:
            best["cores"] = cores(best["per_core_rps"])
            best["meets_p99"] = best["p99_ms"] <= args.target_p99_ms
            server = next(x for x in results["http"] if x["workers"] == best["workers"])
            if "open_loop" in server:
                loop = server["open_loop"]
                best["open_loop_rps"] = loop["achieved_rps"]
                best["open_loop_p99_ms"] = loop["latency_ms"]["p99"]
                best["open_loop_meets_p99"] = loop["latency_ms"]["p99"] <= args.target_p99_ms
            out["http"] = best
    return out


def _fmt_lat(lat: dict[str, float]) -> str:
    return "".join(f"{lat[k]:>8.1f}" for k in ("p50", "p95", "p99", "max", "mean"))


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def format_in_process(title: str, block: dict[str, Any]) -> list[str]:
    lines = [
        title,
        f"  {'mode':<18}{'req/s':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'mean':>8}"
        f"{'cpu ms/req':>12}  errors",
    ]
    for run in block["runs"]:
        mode = "sequential" if run["threads"] == 0 else f"{run['threads']}-thread pool"
        lines.append(
            f"  {mode:<18}{run['throughput_rps']:>8.1f}{_fmt_lat(run['latency_ms'])}"
            f"{run['cpu_ms_per_request']:>12.2f}  {_fmt_counts(run['errors'])}"
        )
    seq = block["runs"][0]
    lines.append(
        "  cpu ms/req = process CPU / requests: above the mean latency when other threads "
        "(served-log flusher, idle OpenMP workers spinning) burn CPU beside the request"
    )
    lines.append("  stages, sequential run (ms; 'other' = request minus the stages: catalog")
    lines.append("  lookups, payload, served-log record):")
    lines.append(f"    {'stage':<12}{'ran':>7}{'mean':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}")
    for stage, s in seq["stages_ms"].items():
        lines.append(
            f"    {stage:<12}{s['ran']:>7}{s['mean']:>8.2f}{s['p50']:>8.2f}{s['p95']:>8.2f}"
            f"{s['p99']:>8.2f}{s['max']:>8.2f}"
        )
    lines += [
        f"  fallbacks (sequential): {_fmt_counts(seq['fallbacks'])}; cold responses "
        f"{seq['cold_share']:.0%}; ranked {seq['ranked_share']:.0%}; feeds with ALS items "
        f"{seq['als_share']:.0%} (of the first {seq.get('als_share_of', 0)} feeds)",
        f"  per-core throughput: 1000 / mean {seq['latency_ms']['mean']:.2f} ms = "
        f"{block['per_core_rps']:.1f} req/s (process CPU: {block['per_core_rps_cpu']:.1f} req/s)",
        f"  payload (n=20): {seq['payload_bytes_raw']:,.0f} B JSON, "
        f"{seq['payload_bytes_gzip']:,.0f} B gzip",
    ]
    return lines


def format_memory(rows: list[dict[str, Any]]) -> list[str]:
    """The server's processes after the levels: each one's RSS, PSS and private memory."""
    if not rows:
        return []
    lines = [
        f"  memory after the levels: {len(rows)} process(es), RSS sum "
        f"{sum(r['rss'] for r in rows):,.0f} MiB, PSS sum {sum(r['pss'] for r in rows):,.0f} MiB "
        "(what the machine holds for them)"
    ]
    lines += [
        f"    pid {r['pid']}: RSS {r['rss']:,.0f} MiB, PSS {r['pss']:,.0f} MiB, private "
        f"{r['private']:,.0f} MiB"
        for r in rows
    ]
    return lines


def format_memory_by_server(servers: list[dict[str, Any]]) -> list[str]:
    """Machine memory (PSS sum) by server kind and worker count, and what a worker adds."""
    rows = [s for s in servers if s.get("memory")]
    if not rows:
        return []
    lines = [
        "",
        "Memory by server (PSS summed over the server's processes, after the levels):",
        f"  {'server':>8}{'workers':>8}{'machine MiB':>13}{'private MiB, min-max':>21}"
        f"{'added per worker MiB':>22}",
    ]
    for kind in dict.fromkeys(s.get("server", "spawn") for s in rows):
        mine = sorted(
            (s for s in rows if s.get("server", "spawn") == kind), key=lambda s: s["workers"]
        )
        previous: tuple[int, float] | None = None
        for server in mine:
            pss = sum(r["pss"] for r in server["memory"])
            private = [r["private"] for r in server["memory"]]
            added = (
                f"{(pss - previous[1]) / (server['workers'] - previous[0]):,.0f}"
                if previous is not None and server["workers"] > previous[0]
                else "-"
            )
            lines.append(
                f"  {kind:>8}{server['workers']:>8}{pss:>13,.0f}"
                f"{min(private):>10,.0f}-{max(private):<10,.0f}{added:>22}"
            )
            previous = (server["workers"], pss)
    return lines


def format_report(meta: dict[str, Any], results: dict[str, Any]) -> str:
    home = meta["home"]
    model = results["model"]
    lines = [
        f"FitPulse serving benchmark ({meta['started']})",
        f"command: {meta['command']}",
        f"machine: {meta['cpu_count']} cores, {meta['platform']}, Python {meta['python']}; "
        f"load average at start {meta['loadavg_start']}, at end {meta['loadavg_end']}",
        f"code: commit {meta['git']['commit']}, {len(meta['git']['modified_files'])} tracked "
        "files modified in the working tree",
        f"home: {home['path']} ({home['source']}"
        + (f" by `{home['command']}` in {home['demo_seconds']} s" if "command" in home else "")
        + ")",
        f"model: version {model['version']}, ALS dim {model.get('als_dim')}, "
        f"{model.get('als_items', 0):,} ALS items, {model.get('als_users', 0):,} ALS users, index "
        f"{model.get('index_kind')} ({model.get('index_items', 0):,} items); catalog "
        f"{model['catalog_items']:,} items; serving as of {model['as_of']}",
        f"requests: {meta['requests']} per run after {meta['warmup']} warm-up; "
        f"{meta['known_users']:,} known raw ids (landing/users), {meta['cold_share']:.0%} of "
        f"requests for unknown ids ({UNKNOWN_PREFIX}*), n=20, seed {meta['seed']}",
        "HTTP cores: "
        + (
            f"server on {meta['server_cpus']}, load generator on {meta['client_cpus']}"
            if meta.get("server_cpus") or meta.get("client_cpus")
            else "not pinned (server and load generator share every core)"
        ),
        "",
    ]
    lines += format_in_process(
        f"In process, trained index ({model.get('index_kind')}, "
        f"{model.get('index_items', 0):,} items):",
        results["trained"],
    )
    if "large" in results:
        large = results["large"]
        mem = large["memory"]
        build = large["build"]
        lines += [
            "",
            f"Large index: {large['index_items']:,} items ({large['index_kind']}, dim "
            f"{large['dim']}), {'built now' if large['built_now'] else 'read from the cache'}: "
            f"{large['folder']}",
            "  " + LARGE_CATALOG_NOTE,
            f"  build: generate {build.get('generate_s', float('nan')):.1f} s, index "
            f"{build['index_build_s']:.1f} s (build_item_index, HNSW M="
            f"{build['index_params']['hnsw_m']} efConstruction="
            f"{build['index_params']['hnsw_ef_construction']}, efSearch="
            f"{build['index_params']['hnsw_ef_search']}), online features "
            f"{build['online_extend_s']:.1f} s"
            + ("" if large["built_now"] else f" (built {build['built']})"),
            f"  load: index {large['index_load_s']:.1f} s, serving state "
            f"{large['state_build_s']:.1f} s; catalog {large['catalog_items']:,} items",
            f"  memory: vectors {mem['vectors_bytes'] / 2**20:,.0f} MiB + HNSW links "
            f"{mem['hnsw_links_bytes'] / 2**20:,.0f} MiB + FAISS id map "
            f"{mem['faiss_id_map_bytes'] / 2**20:,.0f} MiB = "
            f"{mem['faiss_total_bytes'] / 2**20:,.0f} MiB in FAISS; RSS +"
            f"{large['rss_index_mib']:,.0f} MiB reading the index (with the Python id map and "
            f"vectors), +{large['rss_state_mib']:,.0f} MiB for the extended ALS, catalog, "
            f"online store and pools; process RSS {large['rss_after_mib']:,.0f} MiB",
            "",
        ]
        lines += format_in_process(
            f"In process, large index ({large['index_items']:,} items):", large["bench"]
        )
    for server in results.get("http", []):
        lines += [
            "",
            f"HTTP: {server.get('server', 'spawn')} server, {server['workers']} worker "
            f"process(es) x {server['threads']} "
            f"request threads, {server['index']} index; ready in {server['ready_s']:.1f} s; "
            f"idle RSS {server['idle_rss_mib']:,.0f} MiB",
            *format_memory(server.get("memory", [])),
            f"  server: {server['command']}",
            "  client: httpx keep-alive clients in threads of this process ("
            + (
                f"on cores {meta['client_cpus']}"
                if meta.get("client_cpus")
                else "on the same cores as the server"
            )
            + "); gzip accepted",
            f"  payload (n=20): {server['payload']['raw_bytes']:,.0f} B raw, "
            f"{server['payload']['gzip_bytes']:,.0f} B gzip (body bytes on the wire)",
            f"  {'clients':>7}{'requests':>9}{'req/s':>8}{'p50':>8}{'p95':>8}{'p99':>8}"
            f"{'max':>8}{'mean':>8}{'srv cpu ms':>11}{'srv util':>9}{'cli cpu':>8}"
            f"{'in-svc ms':>10}  errors / fallbacks",
        ]
        for level in server["levels"]:
            util = level["server_cpu_s"] / (level["wall_s"] * server["workers"])
            in_svc = level.get("in_service_mean_ms", float("nan"))
            lines.append(
                f"  {level['clients']:>7}{level['requests']:>9}{level['throughput_rps']:>8.1f}"
                f"{_fmt_lat(level['latency_ms'])}{level['server_cpu_ms_per_request']:>11.2f}"
                f"{util:>9.0%}{level['client_cpu_s'] / level['wall_s']:>8.2f}{in_svc:>10.2f}"
                f"  {_fmt_counts(level['errors'])} / {_fmt_counts(level['fallbacks'])}"
            )
        lines.append(
            "  srv cpu ms = server process CPU per answered request (/proc, every thread: "
            "event loop, request threads, served-log flusher, OpenMP); srv util = server CPU / "
            "(wall x workers), above 100% when those threads run beside the request thread; "
            "cli cpu = cores the load generator used; in-svc ms = mean of the service's own "
            "request histogram (1 worker only)"
        )
        loop = server.get("open_loop")
        if loop is not None:
            lines.append(
                f"  open loop (Poisson arrivals, {loop['share_of_best_closed_loop']:.0%} of the "
                f"best closed-loop req/s; latency from the scheduled send time): target "
                f"{loop['target_rps']:.1f} req/s, achieved {loop['achieved_rps']:.1f}; "
                f"p50/p95/p99/max/mean{_fmt_lat(loop['latency_ms'])} ms; server CPU "
                f"{loop['server_cpu_s'] / (loop['wall_s'] * server['workers']):.0%}; errors "
                f"{_fmt_counts(loop['errors'])}; fallbacks {_fmt_counts(loop['fallbacks'])}"
            )
    lines += format_memory_by_server(results.get("http", []))
    cap = results["capacity"]
    ip = cap["in_process"]
    lines += [
        "",
        f"Capacity estimate for {cap['target_qps']:,} QPS (assumptions: one single-threaded "
        f"worker process per core, planned at {cap['utilization']:.0%} CPU utilization, no "
        "batching across requests, every request a full home feed):",
        f"  in process ({ip['index']} index): {ip['per_core_rps']:.1f} req/s per core -> "
        f"{ip['cores']:,} cores (= worker processes); sequential p99 {ip['p99_ms']:.1f} ms "
        f"{'meets' if ip['meets_in_process_p99'] else 'MISSES'} the "
        f"{cap['in_process_target_p99_ms']:.0f} ms in-process target",
    ]
    if "http" in cap:
        h = cap["http"]
        lines.append(
            f"  HTTP ({h['index']} index, {h['workers']} worker(s), {h['clients']} clients): "
            f"{h['per_core_rps']:.1f} req/s per server core (server CPU per request) -> "
            f"{h['cores']:,} cores; p99 at that load (closed loop, {h['clients']} clients) "
            f"{h['p99_ms']:.1f} ms "
            f"{'meets' if h['meets_p99'] else 'MISSES'} the {cap['target_p99_ms']:.0f} ms target "
            f"with {h['degraded_share']:.1%} of feeds cut by the deadline (levels above "
            f"{cap['max_degraded_share']:.0%} cut are not used for planning; network, TLS and "
            "load balancer not included)"
        )
        if "open_loop_p99_ms" in h:
            lines.append(
                f"  HTTP open loop at {cap['utilization']:.0%} of that server's best closed-loop "
                f"throughput ({h['open_loop_rps']:.1f} req/s achieved): p99 "
                f"{h['open_loop_p99_ms']:.1f} ms "
                f"{'meets' if h['open_loop_meets_p99'] else 'MISSES'} the "
                f"{cap['target_p99_ms']:.0f} ms target: the p99 to plan with at that utilization"
            )
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def run_large(
    home: Path, service: FeedService, args: argparse.Namespace
) -> tuple[dict[str, Any], FeedService, Path]:
    """Build or read the large index and the service over it."""
    model = service.state.models["champion"].model
    params = IndexParams(large_kind="hnsw")
    folder = large_folder(home, model, args.index_items, args.seed, params)
    built_now = not (folder / "meta.json").exists()
    if built_now:
        build_large(folder, service, args.index_items, args.seed, params)
    else:
        say(f"reading the cached large index from {folder}")
    gc.collect()
    rss0 = rss_mib()
    t0 = time.perf_counter()
    large = open_large(folder, model, params)
    index_load_s = time.perf_counter() - t0
    rss1 = rss_mib()
    t0 = time.perf_counter()
    big = large_service(service, large)
    state_build_s = time.perf_counter() - t0
    gc.collect()
    rss2 = rss_mib()
    facts = {
        "folder": str(folder),
        "built_now": built_now,
        "build": large.meta,
        "index_items": len(large.index),
        "index_kind": large.index.kind,
        "dim": large.index.dim,
        "catalog_items": len(big.state.catalog),
        "memory": index_memory(large.index),
        "index_load_s": index_load_s,
        "state_build_s": state_build_s,
        "rss_index_mib": rss1 - rss0,
        "rss_state_mib": rss2 - rss1,
        "rss_after_mib": rss2,
    }
    return facts, big, folder


SERVER_KINDS = ("prefork", "spawn")


def _server_kinds(text: str) -> list[str]:
    """``--http-servers``: known kinds only, refused before any index is built."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(SERVER_KINDS))
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"server kinds are {', '.join(SERVER_KINDS)}: {text!r}")
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="trained project home (default: a demo home)")
    parser.add_argument("--scale", default="demo", help="world scale of a created demo home")
    parser.add_argument("--seed", type=int, default=7, help="world, request and synthetic seed")
    parser.add_argument(
        "--fresh-home", action="store_true", help="rebuild the default demo home even if present"
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per in-process run")
    parser.add_argument("--warmup", type=int, default=100, help="untimed requests first")
    parser.add_argument("--cold-share", type=float, default=0.2, help="share of unknown user ids")
    parser.add_argument(
        "--threads", type=_ints, default=[1, 2, 4], help="in-process pool sizes (comma list)"
    )
    parser.add_argument(
        "--index-items", type=int, default=1_000_000, help="large index size (0: skip)"
    )
    parser.add_argument("--http-workers", type=_ints, default=[1], help="worker processes")
    parser.add_argument(
        "--http-servers",
        type=_server_kinds,
        default=["prefork"],
        help="server kinds, comma-separated: prefork (as `fitpulse serve`: load, then fork the "
        "workers) and spawn (uvicorn --workers: each worker loads its own models)",
    )
    parser.add_argument(
        "--http-threads", type=int, default=2, help="request threads per worker (as serve)"
    )
    parser.add_argument("--http-clients", type=_ints, default=[1, 4, 16], help="client counts")
    parser.add_argument("--http-seconds", type=float, default=20.0, help="seconds per level")
    parser.add_argument("--http-max-requests", type=int, help="stop a level after this many")
    parser.add_argument(
        "--http-index",
        choices=["large", "trained", "none"],
        default="large",
        help="index the HTTP server serves (none: skip HTTP)",
    )
    parser.add_argument("--http-startup-timeout", type=float, default=900.0)
    parser.add_argument(
        "--server-cpus",
        type=_ints,
        help="cores the HTTP server and its workers run on (taskset), e.g. 0; with "
        "--client-cpus, the load generator does not compete with the server",
    )
    parser.add_argument(
        "--client-cpus", type=_ints, help="cores the HTTP load generator runs on, e.g. 1"
    )
    parser.add_argument("--target-qps", type=int, default=120_000)
    parser.add_argument("--target-p99-ms", type=float, default=180.0)
    parser.add_argument("--in-process-p99-ms", type=float, default=30.0)
    parser.add_argument("--utilization", type=float, default=0.6, help="planned CPU utilization")
    parser.add_argument(
        "--max-degraded-share",
        type=float,
        default=0.01,
        help="HTTP levels with more deadline_exceeded feeds are not used for the capacity plan",
    )
    parser.add_argument("--json-out", type=Path, help="write every number as JSON here")
    args = parser.parse_args(argv)
    if args.requests < 1 or not 0.0 <= args.cold_share <= 1.0 or not 0 < args.utilization <= 1:
        parser.error("--requests >= 1, 0 <= --cold-share <= 1 and 0 < --utilization <= 1")
    allowed = os.sched_getaffinity(0)
    for name in ("server_cpus", "client_cpus"):
        if not set(getattr(args, name) or ()) <= allowed:
            parser.error(f"--{name.replace('_', '-')}: cores must be among {sorted(allowed)}")

    meta: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "git": git_state(),
        "requests": args.requests,
        "warmup": args.warmup,
        "cold_share": args.cold_share,
        "seed": args.seed,
        "server_cpus": args.server_cpus,
        "client_cpus": args.client_cpus,
    }
    home, home_info = prepare_home(args)
    meta["home"] = {"path": str(home), **home_info}
    known = known_user_ids(home)
    meta["known_users"] = len(known)
    users = request_users(known, args.requests, args.cold_share, args.seed)
    warmup = request_users(known, args.warmup, args.cold_share, args.seed + 1)

    workdir = Path(tempfile.mkdtemp(prefix="fitpulse-serve-bench-"))
    results: dict[str, Any] = {}
    served_log: ServedLog | None = None
    try:
        say(f"loading the service from {home}")
        service, served_log = load_service(home, workdir / "served-log")
        served_log.start()
        results["model"] = model_facts(service)
        if service.state.models["champion"].model is None:
            raise SystemExit(f"no model to serve: {service.state.models['champion'].problem}")
        results["trained"] = bench_in_process("trained index", service, users, warmup, args.threads)

        large_folder_path: Path | None = None
        model = service.state.models["champion"].model
        if args.index_items > 0:
            if args.index_items <= len(model.als.item_ids):
                parser.error(f"--index-items must exceed the {len(model.als.item_ids)} real items")
            facts, big, large_folder_path = run_large(home, service, args)
            facts["bench"] = bench_in_process("large index", big, users, warmup, args.threads)
            results["large"] = facts
            del big
            gc.collect()
        served_log.close()
        results["served_log"] = {
            "exposures_written": served_log.written_exposures,
            "feature_rows_written": served_log.written_feature_rows,
            "write_errors": served_log.write_errors,
        }
        served_log = None

        if args.http_index != "none":
            large_for_http = large_folder_path if args.http_index == "large" else None
            results["http"] = bench_http(home, large_for_http, users, args, workdir)
        results["capacity"] = capacity(results, args)
    finally:
        if served_log is not None:
            served_log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]

    print(format_report(meta, results))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(jsonable({"meta": meta, **results}), indent=2) + "\n")
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
