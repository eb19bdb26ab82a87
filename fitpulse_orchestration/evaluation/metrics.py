"""Ranking metrics over ranked item-id lists and graded relevance."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence


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
