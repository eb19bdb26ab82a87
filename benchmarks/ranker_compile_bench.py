"""The ranker on the request path: LightGBM against treelite (GTIL and compiled) and lleaves.

Loads the champion feed bundle of a trained home, takes the ranker's LightGBM booster and
scores feature batches the size of one feed request's candidate pool (``--batch`` rows, drawn
from the home's ``ranker_training_frame``), one batch per call on one thread, as the service
does. For each engine it prints the mean and p99 microseconds per batch, the ratio to LightGBM
and the largest absolute score difference from LightGBM over every row, then the compile time.

    .venv/bin/pip install -e ".[bench]"     # treelite and tl2cgen, for the comparison
    .venv/bin/python benchmarks/ranker_compile_bench.py --home .fitpulse --batches 2000

Every number is measured in this run; nothing is asserted.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fitpulse_orchestration.ranking.bundle import read_bundle
from fitpulse_orchestration.ranking.compiled import CompiledRanker
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.storage.asset_values import load_asset_value
from fitpulse_orchestration.storage.audit import AuditLog, load_audit_key
from model_registry.promotion import CHAMPION
from model_registry.serving import RegistryModelSource


def champion_ranker(home: ProjectHome, cache: Path):
    audit = AuditLog(LocalObjectStore(home.store), load_audit_key(home.audit_key_file))
    source = RegistryModelSource(home.mlflow_tracking_uri, cache, audit)
    version = source.version_for(CHAMPION)
    if version is None:
        sys.exit("no champion in this home: run `fitpulse demo` first")
    model = read_bundle(source.fetch(version)).model
    return version, model.ranker


def timed(predict: Callable[[np.ndarray], np.ndarray], batches: list[np.ndarray]) -> list[float]:
    out = []
    for batch in batches:
        t0 = time.perf_counter()
        predict(batch)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="trained project home")
    parser.add_argument("--batch", type=int, default=300, help="rows per call (one request)")
    parser.add_argument("--batches", type=int, default=2000, help="timed calls per engine")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    home = ProjectHome(args.home.resolve())
    work = Path(tempfile.mkdtemp(prefix="ranker-bench-"))
    version, ranker = champion_ranker(home, work / "models")
    booster = ranker.model.booster_
    frame = load_asset_value(LocalObjectStore(home.store), "ranker_training_frame")
    x_all = frame[ranker.feature_names].to_numpy(dtype=np.float32)
    rng = np.random.default_rng(args.seed)
    batches = [x_all[rng.integers(0, len(x_all), size=args.batch)] for _ in range(args.batches)]
    print(
        f"champion version {version}: {booster.num_trees()} trees, "
        f"{len(ranker.feature_names)} features; {args.batches} calls of {args.batch} rows "
        f"drawn from {len(x_all):,} ranker_training_frame rows"
    )

    engines: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {}
    engines["lightgbm"] = (lambda x: booster.predict(x, num_threads=1), 0.0)

    try:
        import tl2cgen
        import treelite
    except ImportError:
        print("treelite and tl2cgen are not installed: pip install -e '.[bench]' to compare them")
    else:
        t0 = time.perf_counter()
        tl_model = treelite.frontend.from_lightgbm(booster)
        engines["treelite GTIL"] = (
            lambda x: treelite.gtil.predict(tl_model, x, nthread=1).reshape(-1),
            time.perf_counter() - t0,
        )
        t0 = time.perf_counter()
        lib = work / "ranker.so"
        tl2cgen.export_lib(tl_model, toolchain="gcc", libpath=str(lib), params={"quantize": 1})
        predictor = tl2cgen.Predictor(str(lib), nthread=1)
        engines["treelite compiled (tl2cgen, gcc)"] = (
            lambda x: predictor.predict(tl2cgen.DMatrix(x, dtype="float32")).reshape(-1),
            time.perf_counter() - t0,
        )

    t0 = time.perf_counter()
    compiled = CompiledRanker(ranker)  # what serving uses: lleaves
    engines["lleaves (serving's CompiledRanker)"] = (
        lambda x: compiled._model.predict(x, n_jobs=1),
        time.perf_counter() - t0,
    )

    reference = np.concatenate([booster.predict(b, num_threads=1) for b in batches])
    base = None
    print("\n| engine | mean µs/call | p99 µs/call | vs LightGBM | max abs diff | build s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (predict, build_s) in engines.items():
        for b in batches[:50]:
            predict(b)  # warm-up
        times = timed(predict, batches)
        scores = np.concatenate([np.asarray(predict(b), dtype=np.float64) for b in batches])
        mean = statistics.fmean(times)
        p99 = float(np.percentile(times, 99))
        base = base or mean
        diff = float(np.max(np.abs(scores - reference)))
        print(
            f"| {name} | {mean:,.1f} | {p99:,.1f} | {base / mean:.2f}x | {diff:.2e} | "
            f"{build_s:.2f} |"
        )


if __name__ == "__main__":
    main()
