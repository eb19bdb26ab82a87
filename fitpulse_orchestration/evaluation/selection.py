"""Which scorer serves: the ranker or a ranker-free blend, chosen on the validation split.

The validation users are cut in two halves by a seeded draw. A ranker trained on the first
half's examples and every blend weighting (``ranking.blend.weight_grid``) order the second
half's candidate pools, built by the validation models as of the validation part's start.
Every option is first scored on its order alone (a vectorised top 10); the ranker, every single
source (a weighting with one weight 1) and the ``GUARDED_FINALISTS`` best mixtures of sources
are then cut through the same guardrails that serve.

The best blend through the guardrails (a single source or a mixture) is the default scorer;
the ranker, a stage more (features, a model, its skew), serves only when it earns its place: when
it beats that blend's per-user NDCG@10 beyond noise (paired bootstrap, 95%;
``ranker_earns_its_place``). On a small validation split a ranker kept by default would serve a
feed worse than its own first stage whenever the blend is as good. The held-out part is never
looked at.

A mixture is not held to the same bar over the best single source: on the generated world a
mixture ahead on validation inside the noise went on to win on the held-out part, where the
single source that bar would serve lost to popularity; on MovieLens 100K the bar served ALS
alone, where by the mean a later home served ALS with a quarter of EASE and did better on the
test part (``benchmarks/README.md``). The choice records the best mixture's lead over the best
single source with its 95% interval.

History-less members (``ranking.blend.history_less``: new, or unknown to ALS and EASE) get
their own weights over ``COLD_SOURCES``, chosen first on the history-less judged members alone
(``DEFAULT_COLD_WEIGHTS`` when there are none); every blend option then carries them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from fitpulse_orchestration.evaluation.metrics import (
    beats_beyond_noise,
    bootstrap_interval,
    ndcg_at_k,
    sample_users,
)
from fitpulse_orchestration.features.point_in_time import FeatureInputs
from fitpulse_orchestration.features.reference import profile_attributes
from fitpulse_orchestration.ranking.blend import (
    COLD_SOURCES,
    DEFAULT_COLD_WEIGHTS,
    blend_scores,
    describe_weights,
    history_less,
    weight_grid,
)
from fitpulse_orchestration.ranking.feed import ValidationModels, build_feeds, cut_feeds
from fitpulse_orchestration.ranking.ranker import RankerArtifacts
from fitpulse_orchestration.ranking.rerank import RerankParams
from fitpulse_orchestration.retrieval.candidates import CandidateParams

GUARDED_FINALISTS = 5
"""Blend weightings (best by unguarded NDCG@10) that are also judged through the guardrails."""


@dataclass
class FeedSelection:
    """The chosen scorer, its weights and the validation table behind the choice.

    ``table``: one row per option (``option``, ``scorer``, ``weights``, ``users``,
    ``unguarded_ndcg_at_10``, ``ndcg_at_10``: through the guardrails, NaN for options that were
    not finalists), best first; every blend option orders history-less members by
    ``cold_blend_weights``. ``cold_table``: each cold weighting (``option``, ``weights``,
    ``users``, ``unguarded_ndcg_at_10`` over the history-less judged members), best first.
    """

    scorer: str
    blend_weights: dict[str, float]
    table: pd.DataFrame
    reason: str
    cold_blend_weights: dict[str, float] = field(default_factory=dict)
    cold_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    users: int = 0
    ranker_users: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def split_users(user_ids: Sequence[str], seed: int = 7) -> tuple[list[str], list[str]]:
    """Two halves of ``user_ids`` by a seeded permutation of their sorted order (A, B)."""
    users = sorted(set(user_ids))
    order = np.random.default_rng(seed).permutation(len(users))
    half = len(users) // 2
    return [users[i] for i in sorted(order[:half])], [users[i] for i in sorted(order[half:])]


def _user_ndcg(feeds: pd.DataFrame, relevance: Mapping[str, Mapping[str, int]]) -> np.ndarray:
    lists = feeds.groupby("user_id")["item_id"].agg(list).to_dict()
    return np.array([ndcg_at_k(lists.get(u, []), rel, 10) for u, rel in relevance.items()])


def _mean_ndcg(feeds: pd.DataFrame, relevance: Mapping[str, Mapping[str, int]]) -> float:
    return float(_user_ndcg(feeds, relevance).mean())


def _unguarded_ndcg(
    scored: pd.DataFrame, scores: np.ndarray, relevance: Mapping[str, Mapping[str, int]]
) -> float:
    """Mean NDCG@10 of each user's pool ordered by ``scores`` (no guardrails)."""
    order = np.lexsort((scored["item_id"].to_numpy().astype(str), -scores))
    top = scored.iloc[order][["user_id", "item_id"]].groupby("user_id", sort=False).head(10)
    return _mean_ndcg(top, relevance)


def choose_cold_weights(
    scored: pd.DataFrame, relevance: Mapping[str, Mapping[str, int]]
) -> tuple[dict[str, float], pd.DataFrame]:
    """The ``COLD_SOURCES`` weighting that orders history-less members best, and every option.

    Best: unguarded NDCG@10 over the history-less members of ``relevance``; ties go to the
    earlier in ``weight_grid`` order.
    """
    cold_users = set(scored.loc[history_less(scored), "user_id"].astype(str))
    judged = {u: rel for u, rel in relevance.items() if u in cold_users}
    pool = scored[scored["user_id"].astype(str).isin(cold_users)]
    rows = [
        {
            "option": describe_weights(weights),
            "weights": weights,
            "users": len(judged),
            "unguarded_ndcg_at_10": _unguarded_ndcg(pool, blend_scores(pool, weights), judged)
            if judged
            else np.nan,
        }
        for weights in weight_grid(4, COLD_SOURCES)
    ]
    table = pd.DataFrame(rows)
    if not judged:
        return dict(DEFAULT_COLD_WEIGHTS), table
    table = table.sort_values("unguarded_ndcg_at_10", ascending=False, kind="stable")
    return dict(table["weights"].iloc[0]), table.reset_index(drop=True)


class BlendChoice(NamedTuple):
    """The blend that serves unless the ranker earns its place, and the record of its choice."""

    chosen: pd.Series
    best_single: pd.Series
    best_mixture: pd.Series
    lead: float
    """The best mixture's mean per-user lead over the best single source."""
    lead_low: float
    lead_high: float
    """The 95% paired bootstrap interval of ``lead``."""


def choose_blend(
    table: pd.DataFrame, per_user: Mapping[str, np.ndarray], seed: int = 7
) -> BlendChoice:
    """The first blend row of ``table``, a single source or a mixture, and how they compared.

    ``table`` holds blend rows (``scorer`` "blend", ``option``, ``weights``) best first by
    NDCG@10 through the guardrails; ``per_user`` maps each judged option to its per-user
    NDCG@10.
    """
    blends = table[table["scorer"] == "blend"]
    single = blends["weights"].map(is_single_source)
    best_single, best_mixture = blends[single].iloc[0], blends[~single].iloc[0]
    lead = per_user[best_mixture["option"]] - per_user[best_single["option"]]
    low, high = bootstrap_interval(lead, np.random.default_rng(seed))
    return BlendChoice(blends.iloc[0], best_single, best_mixture, float(lead.mean()), low, high)


def is_single_source(weights: Mapping[str, float]) -> bool:
    """Whether a blend weighting puts all its weight on one source."""
    return sum(1 for w in weights.values() if w > 0) == 1


def ranker_earns_its_place(
    ranker: np.ndarray, best_blend: np.ndarray, seed: int = 7
) -> tuple[bool, float]:
    """Whether the ranker serves instead of the best blend, from paired per-user NDCG@10.

    The blend is the default: the ranker serves only when its lift over the blend is above 0
    at the lower bound of the 95% paired bootstrap interval (``beats_beyond_noise``).

    Returns:
        The verdict and that lower bound.
    """
    return beats_beyond_noise(ranker, best_blend, seed=seed)


def select_scorer(
    models: ValidationModels,
    ranker: RankerArtifacts,
    inputs: FeatureInputs,
    relevance: Mapping[str, Mapping[str, int]],
    candidate_params: CandidateParams,
    rerank_params: RerankParams,
    max_users: int = 1000,
    seed: int = 7,
) -> FeedSelection:
    """Compare ``ranker`` with every blend weighting on the users of ``relevance``.

    The best blend through the guardrails serves unless ``ranker_earns_its_place``.

    Args:
        models: the validation models (fit part only).
        ranker: a ranker trained on other users' validation examples.
        inputs: the events features may see (``TrainingSnapshot.example_inputs``).
        relevance: graded validation relevance of the users to judge on.
        candidate_params: candidate quotas.
        rerank_params: guardrails.
        max_users: at most this many users (a seeded sample) are judged.
        seed: seed of that sample.

    Raises:
        ValueError: when ``relevance`` is empty.
    """
    if not relevance:
        raise ValueError("no validation users to choose a scorer on")
    users = sample_users(relevance, max_users, seed)
    judged = {u: relevance[u] for u in users}
    frame = profile_attributes(inputs.profiles, users)
    model = models.feed_model(ranker, candidate_params, rerank_params)
    result = build_feeds(model, inputs, frame, models.as_of)
    scored = result.scored
    cold_weights, cold_table = choose_cold_weights(scored, judged)
    per_user = {"ranker": _user_ndcg(result.feeds, judged)}
    rows: list[dict[str, Any]] = [
        {
            "option": "ranker",
            "scorer": "ranker",
            "weights": {},
            "unguarded_ndcg_at_10": _unguarded_ndcg(scored, scored["score"].to_numpy(), judged),
            "ndcg_at_10": float(per_user["ranker"].mean()),
        }
    ]
    blends: list[dict[str, Any]] = [
        {
            "option": f"blend: {describe_weights(weights)}",
            "scorer": "blend",
            "weights": weights,
            "unguarded_ndcg_at_10": _unguarded_ndcg(
                scored, blend_scores(scored, weights, cold_weights), judged
            ),
            "ndcg_at_10": np.nan,
        }
        for weights in weight_grid()
    ]
    blends.sort(key=lambda row: -float(row["unguarded_ndcg_at_10"]))
    mixtures = [row for row in blends if not is_single_source(row["weights"])]
    for row in [row for row in blends if is_single_source(row["weights"])] + mixtures[
        :GUARDED_FINALISTS
    ]:
        rescored = scored.assign(score=blend_scores(scored, row["weights"], cold_weights))
        feeds, _ = cut_feeds(rescored, inputs, frame, models.as_of, rerank_params)
        per_user[row["option"]] = _user_ndcg(feeds, judged)
        row["ndcg_at_10"] = float(per_user[row["option"]].mean())
    rows.extend(blends)
    table = pd.DataFrame(rows)
    table["users"] = len(judged)
    table = table.sort_values(
        ["ndcg_at_10", "unguarded_ndcg_at_10"],
        ascending=[False, False],
        kind="stable",
        na_position="last",
    ).reset_index(drop=True)
    choice = choose_blend(table, per_user, seed)
    blend, best_single, best_mixture = choice.chosen, choice.best_single, choice.best_mixture
    ranker_ndcg = float(per_user["ranker"].mean())
    wins, low = ranker_earns_its_place(per_user["ranker"], per_user[blend["option"]], seed)
    best = table[table["scorer"] == "ranker"].iloc[0] if wins else blend
    reason = (
        f"{best['option']} serves, over {len(judged)} validation users: the ranker "
        f"(NDCG@10 {ranker_ndcg:.4f}) {'beats' if wins else 'does not beat'} the best blend "
        f"({_weights_of(blend)}, {blend['ndcg_at_10']:.4f}) beyond noise (95% CI lower bound "
        f"of its lift {low:+.4f}); the best mixture ({_weights_of(best_mixture)}, "
        f"{best_mixture['ndcg_at_10']:.4f}) against the best single source "
        f"({_weights_of(best_single)}, {best_single['ndcg_at_10']:.4f}): {choice.lead:+.4f}, "
        f"95% CI [{choice.lead_low:+.4f}, {choice.lead_high:+.4f}]; history-less members: "
        f"{describe_weights(cold_weights)} ({int(cold_table['users'].iloc[0])} judged)"
    )
    singles = {
        next(s for s, w in row.weights.items() if w > 0): float(row.unguarded_ndcg_at_10)
        for row in table[table["weights"].map(is_single_source)].itertuples()
    }
    return FeedSelection(
        scorer=str(best["scorer"]),
        # The best blend's weights are kept even when the ranker serves: the evaluation shows
        # that blend beside it.
        blend_weights=dict(blend["weights"]),
        table=table,
        reason=reason,
        cold_blend_weights=cold_weights,
        cold_table=cold_table,
        users=len(judged),
        metrics={
            "mixture_lead": choice.lead,
            "mixture_lead_ci_low": choice.lead_low,
            "mixture_lead_ci_high": choice.lead_high,
            "ranker_lift_ci_low": low,
            "ranker_ndcg_at_10": ranker_ndcg,
            "best_single_ndcg_at_10": float(best_single["ndcg_at_10"]),
            "best_mixture_ndcg_at_10": float(best_mixture["ndcg_at_10"]),
            "best_blend_ndcg_at_10": float(blend["ndcg_at_10"]),
            **{f"{s}_only_unguarded_ndcg_at_10": v for s, v in singles.items()},
        },
    )


def _weights_of(row: pd.Series) -> str:
    return str(row["option"]).removeprefix("blend: ")


def format_selection_markdown(selection: FeedSelection, top: int = 10) -> str:
    """The best ``top`` options as a Markdown table, with the verdict."""
    lines = ["| option | NDCG@10 (guardrails) | NDCG@10 (order alone) |", "|---|---|---|"]
    for row in selection.table.head(top).itertuples():
        guarded = "-" if pd.isna(row.ndcg_at_10) else f"{row.ndcg_at_10:.4f}"
        lines.append(f"| {row.option} | {guarded} | {row.unguarded_ndcg_at_10:.4f} |")
    cold = selection.cold_table
    if not cold.empty and cold["unguarded_ndcg_at_10"].notna().any():
        lines += ["", "| history-less members: weights | NDCG@10 (order alone) |", "|---|---|"]
        lines += [f"| {row.option} | {row.unguarded_ndcg_at_10:.4f} |" for row in cold.itertuples()]
    return "\n".join([*lines, "", f"chosen: {selection.reason}"])
