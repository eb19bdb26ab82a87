"""The ranker-free scorer: a weighted reciprocal-rank fusion of the retrieval sources.

A candidate's blend score is ``sum_s w_s / (RRF_K + rank_s)`` over the sources that listed it
(``rank_s`` is its 0-based position in source ``s``'s list, ``RANK_COLUMNS``). Weights on the
simplex cover every single retriever (one weight 1) and their mixtures, so choosing weights on
the validation split also decides whether fusing sources beats the best one alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.retrieval.candidates import RANK_COLUMNS

BLEND_SOURCES: Final = ("als", "ease", "two_tower", "popular")
"""Sources the blend weighs (fresh items reach the feed through the freshness guardrail)."""
RRF_K: Final = 10.0
"""Rank offset of the fusion: how fast a source's vote decays with the item's position."""


def blend_scores(candidates: pd.DataFrame, weights: Mapping[str, float]) -> np.ndarray:
    """Blend score of each candidate row (0 for one no weighted source listed).

    Raises:
        ValueError: when a weight names an unknown source.
    """
    unknown = set(weights) - set(BLEND_SOURCES)
    if unknown:
        raise ValueError(f"unknown blend sources {sorted(unknown)}; one of {BLEND_SOURCES}")
    score = np.zeros(len(candidates), dtype=float)
    for source, weight in weights.items():
        column = RANK_COLUMNS[source]
        if weight == 0 or column not in candidates.columns:
            continue
        ranks = candidates[column].to_numpy(dtype=float)
        score += np.where(np.isnan(ranks), 0.0, weight / (RRF_K + np.nan_to_num(ranks)))
    return score


def weight_grid(steps: int = 4) -> list[dict[str, float]]:
    """Every weighting of ``BLEND_SOURCES`` in multiples of ``1/steps`` that sums to 1."""
    grid = []
    for combo in itertools.product(range(steps + 1), repeat=len(BLEND_SOURCES)):
        if sum(combo) == steps:
            grid.append({s: c / steps for s, c in zip(BLEND_SOURCES, combo, strict=True)})
    return grid


def describe_weights(weights: Mapping[str, float]) -> str:
    """``als 0.50 + ease 0.50`` (zero weights left out)."""
    return " + ".join(f"{s} {w:.2f}" for s, w in weights.items() if w > 0) or "none"
