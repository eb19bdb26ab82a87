"""Push decision latency: ``PushDecisionService.decide`` in process, on a trained home.

Builds (or reuses) the trained demo home of ``serve_bench.py`` (``fitpulse demo``, cached under
``<tmp>/fitpulse-serve-bench/home-<scale>-seed<seed>``; ``fitpulse demo`` also trains and
registers the push policy and materializes the online push state), loads the runtime
``fitpulse serve`` would build (``build_runtime(profile_backends(home, "local"), ...)``) and
times ``runtime.push.decide`` sequentially in three passes, each after ``--warmup`` untimed
calls:

1. ``retrieved``: ``decide(user)`` -- the candidates come from the feed's retrieval;
2. ``item``: ``decide(user, item_id=<random catalog item>)`` -- the caller's candidate;
3. ``forced-send``: as 1, with the registered policy's threshold replaced by -1e9 (swapped in
   with ``swap_policy``), so every decision that passes the guardrails reaches the cap store's
   atomic reservation (a SQLite ``BEGIN IMMEDIATE`` write): the first one per user and day
   sends, the next ones are blocked by ``daily_cap``.

Every decision uses ``at=None``: the snapshot clock (the end of the trained snapshot), so all
requests share one decision time. Requests go to the app's raw user ids of the landing zone
(as ``serve_bench.py`` picks them) mixed with ``--cold-share`` ids never seen.

The home is not modified: the cap store the service writes to is a copy of the home's
``online/push_caps.sqlite`` (seeded cap counters), a fresh copy for every pass (and its
warm-up), in a temporary folder removed at the end. Nothing is asserted; every number printed
is measured in this run.

    .venv/bin/python benchmarks/push_bench.py                          # demo home, 3000 requests
    .venv/bin/python benchmarks/push_bench.py --scale tiny --requests 500
"""

from __future__ import annotations

import os

# Before numpy is imported (as serve_bench.py): the request path is single-threaded.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import argparse
import dataclasses
import gc
import platform
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_bench import known_user_ids, prepare_home, request_users

import fitpulse_orchestration.push.service as push_service_module
from fitpulse_orchestration.push.caps import SQLitePushCapStore
from fitpulse_orchestration.push.service import (
    LoadedPushPolicy,
    PushDecision,
    PushDecisionService,
)
from fitpulse_orchestration.server.runtime import (
    ServiceRuntime,
    build_runtime,
    profile_backends,
)
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.storage.asset_values import load_asset_value

TARGET_P99_MS = 10.0
FORCED_THRESHOLD = -1e9


def say(message: str) -> None:
    print(f"[push-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class StageTimer:
    """Wall time of the steps ``decide`` is made of, by wrapping them (about 1 us per step).

    Wrapped: the online store's ``lookup_records`` (push history), the cap store's
    ``send_times`` (cap read) and ``try_reserve`` (reservation), the service's ``_candidates``
    (retrieval), and the service module's ``push_features`` (the user's row, for the guardrails)
    and ``push_feature_matrix`` (the candidates' rows) as features, ``expected_values`` (the two
    models) and the catalog's ``attributes`` (the pushed item's title).
    """

    STAGES = (
        "history_lookup",
        "cap_read",
        "candidates",
        "features",
        "scoring",
        "title",
        "reserve",
    )

    def __init__(self) -> None:
        self.current: dict[str, float] = {}

    def wrap(self, owner: Any, attr: str, stage: str) -> None:
        inner = getattr(owner, attr)
        current = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent = (time.perf_counter() - t0) * 1e3
                current.current[stage] = current.current.get(stage, 0.0) + spent

        setattr(owner, attr, timed)

    def install(self, push: PushDecisionService) -> None:
        self.wrap(push.feed.store, "lookup_records", "history_lookup")
        self.wrap(push, "_candidates", "candidates")
        self.wrap(push_service_module, "push_features", "features")
        if hasattr(push_service_module, "push_feature_matrix"):  # absent before 14d59d6
            self.wrap(push_service_module, "push_feature_matrix", "features")
        self.wrap(push_service_module, "expected_values", "scoring")
        self.wrap(push.feed.state.catalog, "attributes", "title")

    def install_caps(self, caps: SQLitePushCapStore) -> SQLitePushCapStore:
        self.wrap(caps, "send_times", "cap_read")
        self.wrap(caps, "try_reserve", "reserve")
        return caps

    def take(self) -> dict[str, float]:
        out, self.current = self.current, {}
        return out


def outcome(decision: PushDecision) -> str:
    """``send``, ``fallback=<why>`` or ``blocked_by=<guardrail>`` (None: not sent, no label)."""
    if decision.send:
        return "send"
    if decision.fallback is not None:
        return f"fallback={decision.fallback}"
    return f"blocked_by={decision.blocked_by}"


class CapCopies:
    """Fresh copies of the home's cap store, so the benchmark never writes the home's."""

    def __init__(self, source: Path, folder: Path, timer: StageTimer | None) -> None:
        self.source = source
        self.folder = folder
        self.timer = timer
        self.made = 0

    def fresh(self) -> SQLitePushCapStore:
        self.made += 1
        target = self.folder / f"push_caps-{self.made}.sqlite"
        if self.source.exists():
            # The backup API copies a consistent image, WAL content included.
            src = sqlite3.connect(f"file:{self.source}?mode=ro", uri=True)
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
        store = SQLitePushCapStore(target)
        return self.timer.install_caps(store) if self.timer is not None else store


def cap_rows(store: SQLitePushCapStore) -> int:
    conn = sqlite3.connect(store.path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM push_sends").fetchone()[0])
    finally:
        conn.close()


def run_pass(
    push: PushDecisionService,
    caps: CapCopies,
    call: Callable[[int], PushDecision],
    warmup: int,
    n: int,
) -> dict[str, Any]:
    """``warmup`` untimed then ``n`` timed calls of ``call(k)``, each phase on a fresh cap copy."""
    push.caps = caps.fresh()
    for k in range(warmup):
        call(n + k)  # other requests than the timed ones
    push.caps = caps.fresh()
    rows_before = cap_rows(push.caps)
    ms = np.empty(n)
    inner = np.empty(n)
    outcomes: list[str] = []
    stages: list[dict[str, float]] = []
    errors: Counter[str] = Counter()
    if caps.timer is not None:
        caps.timer.take()
    gc.collect()
    t_start = time.perf_counter()
    for k in range(n):
        t0 = time.perf_counter()
        try:
            decision = call(k)
        except Exception as exc:  # counted and reported: the run goes on
            ms[k] = (time.perf_counter() - t0) * 1e3
            inner[k] = np.nan
            outcomes.append(f"error={type(exc).__name__}")
            errors[f"{type(exc).__name__}: {exc}"] += 1
        else:
            ms[k] = (time.perf_counter() - t0) * 1e3
            inner[k] = decision.timings_ms.get("total", np.nan)
            outcomes.append(outcome(decision))
        if caps.timer is not None:
            stages.append(caps.timer.take())
    wall = time.perf_counter() - t_start
    return {
        "ms": ms,
        "inner_ms": inner,
        "outcomes": outcomes,
        "stages": stages,
        "errors": errors,
        "wall_s": wall,
        "cap_rows_written": cap_rows(push.caps) - rows_before,
    }


def percentiles(ms: np.ndarray) -> dict[str, float]:
    return {
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
    }


def report_pass(name: str, result: dict[str, Any]) -> None:
    ms = result["ms"]
    n = len(ms)
    p = percentiles(ms)
    print(f"\n== pass {name}: {n} decisions, {result['wall_s']:.2f} s wall")
    print(
        f"latency ms   p50 {p['p50']:.3f}   p95 {p['p95']:.3f}   p99 {p['p99']:.3f}   "
        f"max {p['max']:.3f}   mean {p['mean']:.3f}   ({n / result['wall_s']:.0f} decisions/s)"
    )
    inner = result["inner_ms"][~np.isnan(result["inner_ms"])]
    if len(inner):
        print(f"timings_ms['total'] (inside decide)   mean {inner.mean():.3f}")
    print(
        f"p99 / {TARGET_P99_MS:g} ms target = {p['p99'] / TARGET_P99_MS:.3f}"
        f"   ({'within' if p['p99'] <= TARGET_P99_MS else 'OVER'} target)"
    )
    print(f"cap reservations written: {result['cap_rows_written']}")
    outcomes = np.array(result["outcomes"])
    print(f"{'outcome':<34}{'share':>8}{'count':>7}{'p50 ms':>9}{'p99 ms':>9}")
    for label, count in Counter(result["outcomes"]).most_common():
        sub = ms[outcomes == label]
        print(
            f"{label:<34}{count / n:>8.1%}{count:>7}"
            f"{np.percentile(sub, 50):>9.3f}{np.percentile(sub, 99):>9.3f}"
        )
    if result["stages"]:
        print_stages(ms, outcomes, result["stages"])
    for message, count in result["errors"].most_common(5):
        print(f"  error x{count}: {message[:200]}")


def print_stages(ms: np.ndarray, outcomes: np.ndarray, stages: list[dict[str, float]]) -> None:
    """Mean ms per step over all decisions, and over the sends and the known-user blocks."""
    groups = {
        "all": np.ones(len(ms), dtype=bool),
        "send": outcomes == "send",
        "blocked (known user)": np.array(
            [o.startswith("blocked_by=") and o != "blocked_by=unknown_user" for o in outcomes]
        ),
    }
    groups = {name: mask for name, mask in groups.items() if mask.any()}
    print("mean ms per step (0 where a decision skipped it):")
    heads = [f"{name} ({int(mask.sum())})" for name, mask in groups.items()]
    print(f"{'step':<18}" + "".join(f"{head:>28}" for head in heads))
    frame = pd.DataFrame(stages, columns=list(StageTimer.STAGES)).fillna(0.0).to_numpy()
    for col, stage in enumerate(StageTimer.STAGES):
        print(f"{stage:<18}" + "".join(f"{frame[m, col].mean():>28.3f}" for m in groups.values()))
    rest = ms - frame.sum(axis=1)
    print(f"{'rest of decide':<18}" + "".join(f"{rest[m].mean():>28.3f}" for m in groups.values()))


def print_evaluation(home: Path) -> None:
    store = LocalObjectStore(home / "store")
    try:
        evaluation = load_asset_value(store, "push_policy_evaluation")
    except Exception as exc:
        print(f"\n(no push_policy_evaluation asset value: {type(exc).__name__}: {exc})")
        return
    print("\n== push policy off-policy evaluation (per user-week; push_policy_evaluation)")
    print(evaluation.readable())
    print("\nfatigue-weight sweep:")
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(evaluation.sweep.round(4).to_string(index=False))
    print("\nwindow:")
    for key, value in evaluation.window.items():
        print(f"  {key}: {round(value, 4) if isinstance(value, float) else value}")
    if evaluation.blocked_by:
        print(f"new policy blocked by (logged decisions): {evaluation.blocked_by}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="trained project home (default: a demo home)")
    parser.add_argument("--scale", default="demo", choices=["tiny", "demo"])
    parser.add_argument("--seed", type=int, default=7, help="world and request seed")
    parser.add_argument(
        "--fresh-home",
        action="store_true",
        help="rebuild the cached demo home (e.g. one made before the push policy existed)",
    )
    parser.add_argument("--requests", type=int, default=3000, help="timed decisions per pass")
    parser.add_argument("--warmup", type=int, default=200, help="untimed decisions per pass")
    parser.add_argument("--cold-share", type=float, default=0.2, help="share of unknown user ids")
    parser.add_argument(
        "--no-stages", action="store_true", help="do not wrap the steps of decide to time them"
    )
    args = parser.parse_args(argv)

    home, info = prepare_home(args)
    say(f"home {home} ({info.get('source')})")
    project = ProjectHome(home)
    with tempfile.TemporaryDirectory(prefix="push-bench-") as tmp:
        timer = None if args.no_stages else StageTimer()
        caps = CapCopies(project.online_store.with_name("push_caps.sqlite"), Path(tmp), timer)
        backends = dataclasses.replace(profile_backends(project, "local"), caps=caps.fresh())
        started = time.perf_counter()
        runtime: ServiceRuntime = build_runtime(backends, project.model_cache)
        load_s = time.perf_counter() - started
        push = runtime.push
        if push is None:
            raise SystemExit("build_runtime returned no push service")
        if timer is not None:
            timer.install(push)
        loaded = push.policy
        if loaded.bundle is None:
            raise SystemExit(
                f"no push policy loaded ({loaded.problem}); the service loads only a promoted "
                "policy (approve and promote one whose gate passed), and a home cached before "
                "the push policy existed needs --fresh-home"
            )
        state = runtime.service.state
        params = loaded.bundle.params
        known = known_user_ids(home)
        total = args.requests + args.warmup
        users = request_users(known, total, args.cold_share, args.seed)
        catalog_ids = state.catalog.source["item_id"].astype(str).to_numpy()
        rng = np.random.default_rng(args.seed + 1)
        items = [str(i) for i in rng.choice(catalog_ids, size=total)]

        print("== push decision benchmark")
        print(
            f"python {platform.python_version()} on {platform.machine()}, "
            f"{os.cpu_count()} cores; OPENBLAS_NUM_THREADS=1; load average "
            f"{os.getloadavg()[0]:.2f} (1 min) at the start"
        )
        print(f"home: {home} ({info.get('source')}, scale {args.scale}, seed {args.seed})")
        print(
            f"runtime built in {load_s:.1f} s; push policy version {loaded.version}; "
            f"feed champion {state.models['champion'].version}; clock snapshot, "
            f"as_of {state.as_of.isoformat()}"
        )
        print(
            f"policy params: threshold {params.threshold}, fatigue_weight "
            f"{params.fatigue_weight}, caps {params.per_day}/day {params.per_week}/week, quiet "
            f"{params.quiet_start_hour}-{params.quiet_end_hour} h, app-open cool-down "
            f"{params.app_open_cooldown_h} h"
        )
        cold = sum(u.startswith("bench_unknown_") for u in users[: args.requests])
        print(
            f"requests: {args.requests} timed + {args.warmup} warm-up per pass; "
            f"{len(known)} known app user ids, {cold / args.requests:.1%} unknown ids in the "
            f"timed requests; {len(catalog_ids)} catalog items; at=None (snapshot clock)"
        )
        print(
            f"cap store: fresh copies of {caps.source} "
            f"({'present' if caps.source.exists() else 'MISSING: empty stores'}) under {tmp}"
        )

        say("pass 1: retrieved candidates")
        retrieved = run_pass(
            push, caps, lambda k: push.decide(users[k]), args.warmup, args.requests
        )
        report_pass("retrieved (item_id=None)", retrieved)

        say("pass 2: the caller's candidate item")
        given = run_pass(
            push,
            caps,
            lambda k: push.decide(users[k], item_id=items[k]),
            args.warmup,
            args.requests,
        )
        report_pass("item (item_id=random catalog item)", given)

        say("pass 3: threshold -1e9 (reservations)")
        forced = dataclasses.replace(
            loaded.bundle, params=dataclasses.replace(params, threshold=FORCED_THRESHOLD)
        )
        push.swap_policy(LoadedPushPolicy(loaded.version, forced))
        try:
            sends = run_pass(
                push, caps, lambda k: push.decide(users[k]), args.warmup, args.requests
            )
        finally:
            push.swap_policy(loaded)
        report_pass(f"forced-send (threshold {FORCED_THRESHOLD:g}, item_id=None)", sends)

        print(f"\nload average {os.getloadavg()[0]:.2f} (1 min) at the end of the passes")
        print(
            "steps timed by wrapping them" if timer is not None else "steps not timed (--no-stages)"
        )
        print_evaluation(home)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
