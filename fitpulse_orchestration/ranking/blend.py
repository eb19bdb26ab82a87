"""The ranker-free scorer: a weighted reciprocal-rank fusion of the retrieval sources.

A candidate's blend score is ``sum_s w_s / (RRF_K + rank_s)`` over the sources that listed it
(``rank_s`` is its 0-based position in source ``s``'s list, ``RANK_COLUMNS``). Weights on the
simplex cover every single retriever (one weight 1) and their mixtures, so choosing weights on
the validation split also decides whether fusing sources beats the best one alone.

A member no history source (``HISTORY_SOURCES``) listed anything for is history-less (new,
or unknown to the models): weights on those sources give them nothing, so such members are
ordered by their own ``cold_weights`` over ``COLD_SOURCES``, chosen on the history-less
validation members. With ALS and EASE 50/50 and no cold weights, every such member's pool
scores 0 and its feed would be ordered by item id.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Final, TypeAlias

import numpy as np
import pandas as pd

from fitpulse_orchestration.retrieval.candidates import RANK_COLUMNS

BLEND_SOURCES: Final = ("als", "ease", "two_tower", "popular")
"""Sources the blend weighs (fresh items reach the feed through the freshness guardrail)."""
HISTORY_SOURCES: Final = ("als", "ease")
"""Sources that list items only for members with an engagement history."""
COLD_SOURCES: Final = ("two_tower", "popular")
"""Sources that list items for any member: what the cold weights weigh."""
DEFAULT_COLD_WEIGHTS: Final = {"two_tower": 0.5, "popular": 0.5}
"""Cold weights when no history-less member was there to choose them on."""
RRF_K: Final = 10.0
"""Rank offset of the fusion: how fast a source's vote decays with the item's position."""


Candidates: TypeAlias = pd.DataFrame | Mapping[str, np.ndarray]
"""Candidate rows: a frame, or its columns as arrays (the request path's)."""


def history_less(candidates: Candidates) -> np.ndarray:
    """Per candidate row: no history source listed any item for its member."""
    user_ids = np.asarray(candidates["user_id"])
    listed = np.zeros(len(user_ids), dtype=bool)
    for source in HISTORY_SOURCES:
        column = RANK_COLUMNS[source]
        if column in candidates:
            listed |= ~np.isnan(np.asarray(candidates[column], dtype=float))
    if len(user_ids) and (user_ids == user_ids[0]).all():
        # One member's rows, as a request has: no factorization.
        return np.full(len(user_ids), not listed.any())
    codes, uniques = pd.factorize(user_ids, use_na_sentinel=False)
    listed_by_user = np.bincount(codes, weights=listed, minlength=len(uniques)) > 0
    return ~listed_by_user[codes]


def blend_scores(
    candidates: Candidates,
    weights: Mapping[str, float],
    cold_weights: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Blend score of each candidate row (0 for one no weighted source listed).

    Rows of history-less members (``history_less``) are scored with ``cold_weights`` when given.

    Raises:
        ValueError: when a weight names an unknown source, or a cold weight a history source.
    """
    score = _fused(candidates, weights)
    if cold_weights:
        if set(cold_weights) - set(COLD_SOURCES):
            raise ValueError(f"cold weights weigh only {COLD_SOURCES}, got {sorted(cold_weights)}")
        cold = history_less(candidates)
        if cold.any():
            # Row by row, so the whole frame's scores cut to the cold rows: a boolean-indexed
            # copy of the frame would cost more than the scoring (per request, this is serving).
            score[cold] = _fused(candidates, cold_weights)[cold]
    return score


def _fused(candidates: Candidates, weights: Mapping[str, float]) -> np.ndarray:
    unknown = set(weights) - set(BLEND_SOURCES)
    if unknown:
        raise ValueError(f"unknown blend sources {sorted(unknown)}; one of {BLEND_SOURCES}")
    score = np.zeros(_n_rows(candidates), dtype=float)
    for source, weight in weights.items():
        column = RANK_COLUMNS[source]
        if weight == 0 or column not in candidates:
            continue
        ranks = np.asarray(candidates[column], dtype=float)
        # Rows the source did not list (NaN) add nothing.
        np.add(score, weight / (RRF_K + ranks), out=score, where=~np.isnan(ranks))
    return score


def _n_rows(candidates: Candidates) -> int:
    if isinstance(candidates, pd.DataFrame):
        return len(candidates)
    return len(next(iter(candidates.values()), ()))


def weight_grid(steps: int = 4, sources: tuple[str, ...] = BLEND_SOURCES) -> list[dict[str, float]]:
    """Every weighting of ``sources`` in multiples of ``1/steps`` that sums to 1."""
    grid = []
    for combo in itertools.product(range(steps + 1), repeat=len(sources)):
        if sum(combo) == steps:
            grid.append({s: c / steps for s, c in zip(sources, combo, strict=True)})
    return grid


def describe_weights(weights: Mapping[str, float]) -> str:
    """``als 0.50 + ease 0.50`` (zero weights left out)."""
    return " + ".join(f"{s} {w:.2f}" for s, w in weights.items() if w > 0) or "none"
