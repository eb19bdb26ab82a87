"""Retrieval evaluation: recall@100 and NDCG@10 of each candidate source and of the blend.

On the held-out window: each user with a click-or-deeper engagement there gets, as of the
window's start (their history, ALS row and popularity from before it), the candidates of

- ``als``: ALS neighbours only;
- ``ease``: EASE item-item neighbours of the user's engaged items only;
- ``two_tower``: two-tower neighbours only;
- ``popular``: segment popularity only (the baseline a cold user would otherwise get);
- ``blend``: the model's quotas over every source (the pool the scorer sees), ordered by the
  model's ranker-free blend (``ranking.blend``, weights chosen on validation); a model without
  blend weights merges in proportion to the user's quotas: a source's r-th candidate sorts at
  ``(r + 0.5) / quota``, so the first 100 hold each source's share of the pool.

Each list is cut at 100. Items published during the window are retrievable (the live index
adds them within minutes) but no model saw them interact. Slices: ``warm`` and ``cold`` users
(at least / fewer than ``COLD_THRESHOLD`` engaged items before the window) over all relevant
items, and ``new_items``: every user, relevance restricted to items published in the window.
Items a user engaged with before the window are neither relevant nor retrieved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.evaluation.metrics import ndcg_at_k, recall_at_k
from fitpulse_orchestration.features.point_in_time import FeatureInputs
from fitpulse_orchestration.features.reference import profile_attributes
from fitpulse_orchestration.features.training import TimeSplit, heldout_relevance
from fitpulse_orchestration.ranking.blend import blend_scores
from fitpulse_orchestration.ranking.feed import HomeFeedModel, two_tower_queries
from fitpulse_orchestration.retrieval.candidates import (
    SOURCES,
    CandidateParams,
    candidate_pools,
    retrieve_candidates,
    seen_items,
    single_source_params,
)

METHODS: Final = ("als", "ease", "two_tower", "popular", "blend")
SLICES: Final = ("warm", "cold", "new_items")
K_RECALL: Final = 100
K_NDCG: Final = 10


@dataclass
class RetrievalEvaluation:
    """The table (``method``, ``slice``, ``users``, ``recall_at_100``, ``ndcg_at_10``)."""

    table: pd.DataFrame

    def value(self, method: str, slice_name: str, metric: str) -> float:
        """One cell of the table (NaN when the slice had no users)."""
        row = self.table[(self.table["method"] == method) & (self.table["slice"] == slice_name)]
        return float(row[metric].iloc[0]) if len(row) else float("nan")


def _proportional(
    candidates: pd.DataFrame, seen: dict[str, set[str]], params: CandidateParams
) -> dict[str, list[str]]:
    """Per user, candidates merged in proportion to the user's source quotas."""
    if candidates.empty:
        return {}
    warm = params.quotas(params.cold_threshold)
    cold = params.quotas(0)
    n_seen = candidates["user_id"].map(lambda u: len(seen.get(str(u), ()))).to_numpy()
    is_warm = n_seen >= params.cold_threshold
    sources = candidates["source"].to_numpy()
    share = np.where(
        is_warm,
        [warm.get(s, 0) for s in sources],
        [cold.get(s, 0) for s in sources],
    ).clip(min=1)
    priority = {s: k for k, s in enumerate(SOURCES)}
    ordered = candidates.assign(
        _k=(candidates["retrieval_rank"].to_numpy() + 0.5) / share,
        _p=candidates["source"].map(priority).to_numpy(),
    ).sort_values(["user_id", "_k", "_p"], kind="stable")
    return {str(u): list(g["item_id"]) for u, g in ordered.groupby("user_id", sort=False)}


def _fused(
    candidates: pd.DataFrame, weights: dict[str, float], cold_weights: dict[str, float]
) -> dict[str, list[str]]:
    """Per user, the pool ordered by the model's ranker-free blend (``ranking.blend``)."""
    scores = blend_scores(candidates, weights, cold_weights)
    ordered = candidates.assign(_s=scores).sort_values(
        ["user_id", "_s", "item_id"], ascending=[True, False, True], kind="stable"
    )
    return {str(u): list(g["item_id"]) for u, g in ordered.groupby("user_id", sort=False)}


def evaluate_retrieval(
    model: HomeFeedModel, inputs: FeatureInputs, split: TimeSplit
) -> RetrievalEvaluation:
    """The retrieval table of ``model`` on the held-out window of ``split``."""
    relevance = heldout_relevance(inputs.events, split)
    inputs = FeatureInputs(
        events=split.train_events(inputs.events), catalog=inputs.catalog, profiles=inputs.profiles
    )
    seen = seen_items(inputs.events, split.eval_start)
    relevance = {
        u: {i: g for i, g in rel.items() if i not in seen.get(u, set())}
        for u, rel in relevance.items()
    }
    relevance = {u: rel for u, rel in relevance.items() if rel}
    users = profile_attributes(inputs.profiles, sorted(relevance))
    catalog = inputs.catalog
    new_items = set(
        catalog.loc[
            (catalog["published_at"] >= split.eval_start) & (catalog["published_at"] < split.end),
            "item_id",
        ].astype(str)
    )
    queries = two_tower_queries(model.two_tower, model.tt_index, inputs, users, split.eval_start)
    # One set of lookups for every method: only the quotas differ between them.
    pools = candidate_pools(
        model.als,
        model.popular,
        catalog,
        split.end,
        model.candidate_params,
        model.tt_index,
        model.ease,
    )
    lists: dict[str, dict[str, list[str]]] = {}
    for method in METHODS:
        params = (
            model.candidate_params
            if method == "blend"
            else single_source_params(model.candidate_params, method, K_RECALL)
        )
        candidates = retrieve_candidates(
            users, model.als, model.index, pools, seen, params, *queries, model.ease
        )
        if method == "blend" and model.blend_weights:
            lists[method] = _fused(candidates, model.blend_weights, model.cold_blend_weights)
        else:
            lists[method] = _proportional(candidates, seen, params)
    warm = {u for u in relevance if len(seen.get(u, ())) >= model.candidate_params.cold_threshold}
    rows = []
    for method in METHODS:
        for slice_name in SLICES:
            recalls, ndcgs = [], []
            for user, rel in relevance.items():
                if slice_name == "new_items":
                    rel = {i: g for i, g in rel.items() if i in new_items}
                elif (slice_name == "warm") != (user in warm):
                    continue
                if not rel:
                    continue
                ranked = lists[method].get(user, [])[:K_RECALL]
                recalls.append(recall_at_k(ranked, rel, K_RECALL))
                ndcgs.append(ndcg_at_k(ranked, rel, K_NDCG))
            rows.append(
                {
                    "method": method,
                    "slice": slice_name,
                    "users": len(recalls),
                    "recall_at_100": float(np.mean(recalls)) if recalls else float("nan"),
                    "ndcg_at_10": float(np.mean(ndcgs)) if ndcgs else float("nan"),
                }
            )
    return RetrievalEvaluation(pd.DataFrame(rows))


def format_retrieval_markdown(table: pd.DataFrame) -> str:
    """The table as Markdown: one row per method, recall and NDCG per slice."""
    header = "| method | " + " | ".join(f"{s} recall@100 | {s} NDCG@10" for s in SLICES) + " |"
    lines = [header, "|" + "---|" * (1 + 2 * len(SLICES))]
    for method in METHODS:
        cells = []
        for slice_name in SLICES:
            row = table[(table["method"] == method) & (table["slice"] == slice_name)].iloc[0]
            cells += [f"{row.recall_at_100:.4f}", f"{row.ndcg_at_10:.4f}"]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    users = {s: int(table.loc[table["slice"] == s, "users"].iloc[0]) for s in SLICES}
    lines.append("")
    lines.append("users: " + ", ".join(f"{s} {n}" for s, n in users.items()))
    return "\n".join(lines)
