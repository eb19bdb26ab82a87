"""Publish -> retrievable latency of a new catalog item, stage by stage.

Drives the real path against a trained project home (``fitpulse demo`` or ``fitpulse train``):

1. a catalog file with a new item lands in ``landing/catalog/`` (a content twin of a user's best
   two-tower match, published just before serving time);
2. ``catalog_sensor`` is evaluated (one tick) and asks for a ``catalog_refresh_job`` run;
3. the run executes in process (``catalog_items`` reload + incremental ``live_item_index``);
4. the feed service's watcher polls once and swaps in the new generation and catalog;
5. the item is among the user's candidates (source ``two_tower``).

Stages 2-5 are timed; the sensor's minimum interval (30 s) and the watcher's poll interval
(10 s by default) are waits on top, so the worst case end to end is the measured sum plus both
intervals. Under ``dagster dev`` the daemon also starts a run process (a few seconds, not
measured here). Runs ``--repeats`` times (a fresh item each time) and prints every stage.

    python benchmarks/freshness_bench.py --home /tmp/fitpulse-demo
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
import pandas as pd

from fitpulse_orchestration import layout
from fitpulse_orchestration.definitions import build_definitions
from fitpulse_orchestration.features.reference import load_catalog
from fitpulse_orchestration.retrieval.live_index import read_current_meta
from fitpulse_orchestration.server.runtime import build_runtime, profile_backends
from fitpulse_orchestration.serving.feed_types import ServingConfig, StageBudgets
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage.tables import read_parquet_prefix, write_parquet

SENSOR_INTERVAL_S = 30.0
WATCHER_POLL_S = 10.0
ROOMY = ServingConfig(
    budgets=StageBudgets(
        lookup_ms=5000, retrieval_ms=5000, features_ms=5000, ranking_ms=5000, deadline_ms=20000
    )
)


def quiet(request: dg.RunRequest) -> dict[str, object]:
    """The request's run config with Dagster's console logs at WARNING."""
    return {**request.run_config, "loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def main() -> None:
    """Run the measurement and print a table of stage timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a trained project home")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    home = ProjectHome.resolve(args.home)
    defs = build_definitions(home)
    instance = dg.DagsterInstance.ephemeral()
    store = profile_backends(home, "local").store
    sensor = defs.resolve_sensor_def("catalog_sensor")
    job = defs.resolve_job_def("catalog_refresh_job")

    def tick(cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
        resources = {k: defs.resources[k] for k in ("object_store", "model_registry")}
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, resources=resources
        ) as ctx:
            result = sensor.evaluate_tick(ctx)
        return list(result.run_requests or []), result.cursor

    # Bring the live index up to date first (the first tick is a full build).
    requests, cursor = tick(None)
    started = time.perf_counter()
    for request in requests:
        job.execute_in_process(instance=instance, run_config=quiet(request))
    full_s = time.perf_counter() - started
    meta = read_current_meta(store)
    assert meta is not None, "no live index: is the home trained?"
    print(f"initial full build: {meta.items} items in {full_s:.2f} s (generation {meta.kind})")

    with tempfile.TemporaryDirectory() as cache:
        runtime = build_runtime(
            profile_backends(home, "local"), Path(cache), clock="snapshot", config=ROOMY
        )
        service, watcher = runtime.service, runtime.watcher
        catalog = load_catalog(store)
        profiles = pd.concat(read_parquet_prefix(store, f"{layout.LANDING_USERS}/"))
        user = str(profiles["user_id"].iloc[0])
        rows = []
        tag = uuid.uuid4().hex[:8]  # a rerun lands new items, never the last run's again
        for k in range(args.repeats):
            before = service.candidates(user)
            like = before.loc[before["source"] == "two_tower", "item_id"].iloc[0]
            item_id = f"pl_bench_{tag}_{k}"
            as_of = service.state.as_of
            new = catalog[catalog["item_id"] == like].assign(
                item_id=item_id,
                title="Fresh Plan",
                published_at=as_of - pd.Timedelta(minutes=1),
                status="published",
            )
            day = as_of.date()
            key = layout.landing_reference_key(
                layout.LANDING_CATALOG, day, f"items-23-bench-{tag}-{k}"
            )
            t0 = time.perf_counter()
            write_parquet(store, key, new)
            t1 = time.perf_counter()
            requests, cursor = tick(cursor)
            t2 = time.perf_counter()
            for request in requests:
                job.execute_in_process(instance=instance, run_config=quiet(request))
            t3 = time.perf_counter()
            swapped = watcher.check_once()
            t4 = time.perf_counter()
            found = service.candidates(user).set_index("item_id")
            t5 = time.perf_counter()
            source = str(found.loc[item_id, "source"]) if item_id in found.index else "missing"
            rows.append(
                {
                    "land_ms": (t1 - t0) * 1e3,
                    "sensor_ms": (t2 - t1) * 1e3,
                    "run_s": t3 - t2,
                    "swap_s": t4 - t3,
                    "retrieve_ms": (t5 - t4) * 1e3,
                    "total_s": t5 - t0,
                    "swapped": swapped,
                    "source": source,
                }
            )
        table = pd.DataFrame(rows)
        print(table.to_string(float_format=lambda v: f"{v:.2f}"))
        total = statistics.median(table["total_s"])
        print(
            f"\nmedian measured publish -> retrievable: {total:.2f} s; worst case with the "
            f"sensor interval ({SENSOR_INTERVAL_S:.0f} s) and the watcher poll "
            f"({WATCHER_POLL_S:.0f} s): {total + SENSOR_INTERVAL_S + WATCHER_POLL_S:.1f} s "
            f"(budget 600 s, target 60 s); items retrieved by two_tower: "
            f"{int((table['source'] == 'two_tower').sum())}/{len(table)}"
        )


if __name__ == "__main__":
    main()
