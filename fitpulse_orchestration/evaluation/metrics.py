"""Ranking metrics over ranked item-id lists and graded relevance."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def ndcg_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """Normalised DCG with gain ``2**grade - 1``; 0 when nothing is relevant."""
    dcg = sum(
        (2.0 ** relevance.get(item, 0) - 1.0) / math.log2(pos + 2)
        for pos, item in enumerate(ranked[:k])
    )
    ideal = sorted(relevance.values(), reverse=True)[:k]
    idcg = sum((2.0**g - 1.0) / math.log2(pos + 2) for pos, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def average_precision_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """AP@k with binary relevance (grade >= 1), normalised by ``min(k, #relevant)``."""
    relevant = {item for item, grade in relevance.items() if grade >= 1}
    if not relevant:
        return 0.0
    hits = 0
    total = 0.0
    for pos, item in enumerate(ranked[:k]):
        if item in relevant:
            hits += 1
            total += hits / (pos + 1)
    return total / min(k, len(relevant))


def recall_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    """Share of relevant items (grade >= 1) found in the top ``k``."""
    relevant = {item for item, grade in relevance.items() if grade >= 1}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def intra_list_diversity(categories: Sequence[str]) -> float:
    """Share of item pairs in a list whose categories differ (0 for lists shorter than 2)."""
    n = len(categories)
    if n < 2:
        return 0.0
    counts: dict[str, int] = {}
    for c in categories:
        counts[c] = counts.get(c, 0) + 1
    same = sum(m * (m - 1) // 2 for m in counts.values())
    return 1.0 - same / (n * (n - 1) // 2)


def catalog_coverage(lists: Iterable[Sequence[str]], catalog_size: int) -> float:
    """Share of the catalog that appears in at least one list."""
    if catalog_size <= 0:
        return 0.0
    shown: set[str] = set()
    for items in lists:
        shown.update(items)
    return len(shown) / catalog_size


def bootstrap_interval(
    values: np.ndarray, rng: np.random.Generator, confidence: float = 0.95, samples: int = 1000
) -> tuple[float, float]:
    """The two-sided ``confidence`` percentile-bootstrap interval of the mean of ``values``.

    ``samples`` resamples of ``values`` with replacement, drawn from ``rng``; ``values`` must
    not be empty.
    """
    means = values[rng.integers(0, values.size, size=(samples, values.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def beats_beyond_noise(
    challenger: np.ndarray,
    default: np.ndarray,
    confidence: float = 0.95,
    samples: int = 1000,
    seed: int = 7,
) -> tuple[bool, float]:
    """Whether ``challenger`` beats ``default`` on paired per-user values beyond noise.

    A paired percentile bootstrap over users of the mean difference; the challenger wins only
    when the lower bound of the two-sided ``confidence`` interval lies above 0, so a choice made
    on a small validation split falls back to the default instead of chasing noise.

    Returns:
        The verdict and the interval's lower bound.
    """
    diff = np.asarray(challenger, dtype=float) - np.asarray(default, dtype=float)
    if diff.size == 0:
        return False, float("nan")
    low, _ = bootstrap_interval(diff, np.random.default_rng(seed), confidence, samples)
    return low > 0.0, low


def sample_users(users: Iterable[str], max_users: int, seed: int = 7) -> list[str]:
    """``users`` sorted when there are at most ``max_users``, else a seeded sample of them.

    The draw picks positions in the sorted order, so the same users and seed give the same
    sample; the sample keeps that order.
    """
    ordered = sorted(users)
    if len(ordered) <= max_users:
        return ordered
    picked = np.random.default_rng(seed).choice(len(ordered), size=max_users, replace=False)
    return [ordered[i] for i in sorted(picked)]
