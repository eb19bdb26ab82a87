"""The ranker compiled to native code for the request path, with LightGBM as the reference.

``CompiledRanker`` hands the LightGBM booster (the trees it predicts with: the best iteration
when early stopping found one) to lleaves, which compiles every tree into one native function
through LLVM. It scores the same float32 feature matrix as ``ranker.score_candidates``, with
the same results to floating-point rounding (``PARITY_TOLERANCE``).

Why lleaves: on the project's ranker (100 trees, 27 features) and 300-row batches, one call
per request on one thread, ``benchmarks/ranker_compile_bench.py`` measured LightGBM at 1,009
µs, treelite's interpreter (GTIL) at 2,292 µs, treelite compiled with tl2cgen and gcc at 381
µs, and lleaves at 205 µs, with differences from LightGBM of at most 1.3e-15. lleaves needs no
C toolchain on the serving machine (LLVM ships in the llvmlite wheel) and compiles in about
half a second per version.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Final

import lleaves
import numpy as np
import pandas as pd

from fitpulse_orchestration.features.point_in_time import as_float_matrix
from fitpulse_orchestration.ranking.ranker import RankerArtifacts

PARITY_TOLERANCE: Final = 1e-6
"""Largest absolute difference from LightGBM's score that the parity tests accept."""


class CompiledRanker:
    """A ``RankerArtifacts``' trees compiled by lleaves; ``score`` is ``score_candidates``."""

    def __init__(self, ranker: RankerArtifacts) -> None:
        self.feature_names = list(ranker.feature_names)
        booster = ranker.model.booster_
        with tempfile.TemporaryDirectory(prefix="fitpulse-ranker-") as tmp:
            path = Path(tmp) / "ranker.txt"
            booster.save_model(str(path), num_iteration=ranker.model.best_iteration_ or None)
            self._model = lleaves.Model(model_file=str(path))
            self._model.compile()
        self.trees = int(self._model.num_trees())

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Score every row of ``frame`` (its ``feature_names`` columns) on this thread."""
        if frame.empty:
            return np.zeros(0, dtype=np.float64)
        scores = self._model.predict(as_float_matrix(frame, self.feature_names), n_jobs=1)
        return np.asarray(scores, dtype=np.float64)
