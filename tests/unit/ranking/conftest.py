"""Fixtures of the ranking tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def training_frame(
    ranking_frame: pd.DataFrame,
    ranking_groups: Callable[[np.random.Generator, int, int], pd.DataFrame],
    rng: np.random.Generator,
) -> pd.DataFrame:
    """40 queries x 8 candidates drawn like ``ranking_frame``: enough to train a ranker on."""
    return pd.concat([ranking_frame, ranking_groups(rng, 10, 30)], ignore_index=True)
