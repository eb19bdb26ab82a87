"""Offline evaluation of the home feed against baselines on the held-out window."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.evaluation.metrics import (
    average_precision_at_k,
    catalog_coverage,
    intra_list_diversity,
    ndcg_at_k,
    recall_at_k,
    sample_users,
)
from fitpulse_orchestration.features.point_in_time import FeatureInputs, compute_user_features
from fitpulse_orchestration.features.reference import (
    UNKNOWN,
    treated_as_beginner,
    unsafe_for_beginners,
)
from fitpulse_orchestration.features.training import TimeSplit, heldout_relevance
from fitpulse_orchestration.ranking.blend import BLEND_SOURCES, blend_scores
from fitpulse_orchestration.ranking.feed import (
    FeedResult,
    HomeFeedModel,
    attach_guardrail_attributes,
    build_feeds,
    cut_feeds,
    model_scores,
    two_tower_queries,
)
from fitpulse_orchestration.ranking.ranker import score_candidates
from fitpulse_orchestration.retrieval.als import AlsArtifacts
from fitpulse_orchestration.retrieval.candidates import (
    candidate_pools,
    retrieve_candidates,
    seen_items,
    single_source_params,
)
from fitpulse_orchestration.retrieval.index import ItemIndex
from fitpulse_orchestration.retrieval.popularity import pick_segment, split_segments

METRICS: Final = (
    "recall_at_100",
    "ndcg_at_10",
    "map_at_10",
    "coverage",
    "intra_list_diversity",
    "beginner_safety_violations",
)
MODELS: Final = (
    "candidate",
    "ranker",
    "blend",
    "candidate_unguarded",
    "als_only",
    "ease_only",
    "two_tower_only",
    "popularity",
    "popularity_guarded",
)
"""Rows of the table. ``candidate`` is the feed as it serves (the chosen scorer, guardrails);
``ranker`` and ``blend`` are the same pool ordered by the LightGBM ranker and by the ranker-free
blend, both through the guardrails (one of them is the candidate); ``candidate_unguarded`` is the
served order without guardrails (what the guardrails cost is the difference); the ``*_only`` rows
and ``popularity`` are single retrievers' raw lists (no guardrails); ``popularity_guarded`` is
the popularity list cut through the same guardrails as the candidate: what serving popularity
to everyone would give, the baseline the candidate must beat like with like."""
SINGLE_RETRIEVERS: Final = ("als_only", "ease_only", "two_tower_only", "popularity")
"""Single-stage baselines the served feed must not lose to (``served_feed_beats_retrievers``)."""
CHAMPION: Final = "champion"
"""Model name of the serving champion when it is evaluated next to the candidate."""
FEED_SIZE: Final = 20
SLICES: Final = ("all", "cold")


@dataclass(frozen=True)
class RankedLists:
    """What one model produced for one user: a retrieval list (up to 100) and the feed."""

    retrieval: list[str]
    feed: list[str]


@dataclass
class HomeFeedEvaluation:
    """The evaluation of one training run.

    ``table``: one row per (model, slice) (``evaluate_models``) plus ``scoring_p50_ms`` and
    ``scoring_p99_ms`` for the models that run the ranker. ``per_user``: ``model``, ``user_id``,
    ``cold`` and ``ndcg_at_10`` of every evaluated user (the promotion gate's bootstrap input).
    ``feeds``: the candidate's feeds and scored pools of the evaluated users. ``protocol``: the
    split it was
    measured under (``TimeSplit.describe``); ``scorer``: the candidate's scorer.
    """

    table: pd.DataFrame
    per_user: pd.DataFrame
    feeds: FeedResult
    protocol: str = ""
    scorer: str = "ranker"
    heldout_users: int = 0
    """Users with an engagement in the held-out part (``table`` holds a sample of them when
    there are more than ``EVAL_MAX_USERS``)."""


@dataclass(frozen=True)
class EvaluationContext:
    """Facts about users and items that metrics need.

    ``cold_users`` had fewer than 5 engagements in the 28 days before the held-out window;
    ``unsafe_items`` are advanced/high-intensity/unknown items (never for beginners).
    """

    relevance: Mapping[str, Mapping[str, int]]
    cold_users: frozenset[str]
    beginners: frozenset[str]
    unsafe_items: frozenset[str]
    item_category: Mapping[str, str]
    catalog_size: int


def evaluate_models(
    lists: Mapping[str, Mapping[str, RankedLists]], ctx: EvaluationContext
) -> pd.DataFrame:
    """One row per (model, slice) with every metric in ``METRICS`` and the user count.

    ``ndcg_at_10_ci95`` is the half-width of the normal 95% interval of NDCG@10's mean over
    the slice's users: how far the row could move with other users of the same population.

    Users without a list for a model count with an empty list (0 for ranking metrics), so all
    models are compared on the same users: everyone with an engagement in the held-out window.
    Coverage is over the catalog; safety violations count unsafe items in beginners' feeds.
    """
    users = sorted(ctx.relevance)
    rows = []
    for model, per_user in lists.items():
        for slice_name in SLICES:
            slice_users = [u for u in users if slice_name == "all" or u in ctx.cold_users]
            if not slice_users:
                continue
            empty = RankedLists([], [])
            got = [per_user.get(u, empty) for u in slice_users]
            rel = [ctx.relevance[u] for u in slice_users]
            ndcg = np.array([ndcg_at_k(g.feed, r, 10) for g, r in zip(got, rel, strict=True)])
            rows.append(
                {
                    "model": model,
                    "slice": slice_name,
                    "users": len(slice_users),
                    "recall_at_100": float(
                        np.mean(
                            [
                                recall_at_k(g.retrieval, r, 100)
                                for g, r in zip(got, rel, strict=True)
                            ]
                        )
                    ),
                    "ndcg_at_10": float(ndcg.mean()),
                    "map_at_10": float(
                        np.mean(
                            [
                                average_precision_at_k(g.feed, r, 10)
                                for g, r in zip(got, rel, strict=True)
                            ]
                        )
                    ),
                    "coverage": catalog_coverage([g.feed for g in got], ctx.catalog_size),
                    "intra_list_diversity": float(
                        np.mean(
                            [
                                intra_list_diversity(
                                    [ctx.item_category.get(i, "unknown") for i in g.feed]
                                )
                                for g in got
                            ]
                        )
                    ),
                    "beginner_safety_violations": int(
                        sum(
                            sum(item in ctx.unsafe_items for item in g.feed)
                            for u, g in zip(slice_users, got, strict=True)
                            if u in ctx.beginners
                        )
                    ),
                    "ndcg_at_10_ci95": _half_width(ndcg),
                }
            )
    return pd.DataFrame(rows, columns=["model", "slice", "users", *METRICS, "ndcg_at_10_ci95"])


def _half_width(values: np.ndarray) -> float:
    """Half-width of the normal 95% interval of the mean of ``values`` (0 for one value)."""
    if len(values) < 2:
        return 0.0
    return float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))


def per_user_ndcg(
    lists: Mapping[str, Mapping[str, RankedLists]], ctx: EvaluationContext, k: int = 10
) -> pd.DataFrame:
    """NDCG@k of every evaluated user for every model (missing lists count as empty).

    Returns:
        ``model``, ``user_id``, ``cold`` (bool), ``ndcg_at_10``; one row per model x user.
    """
    users = sorted(ctx.relevance)
    empty = RankedLists([], [])
    rows = [
        (model, u, u in ctx.cold_users, ndcg_at_k(per_user.get(u, empty).feed, ctx.relevance[u], k))
        for model, per_user in lists.items()
        for u in users
    ]
    return pd.DataFrame(rows, columns=["model", "user_id", "cold", "ndcg_at_10"])


def measure_scoring_latency(
    model: HomeFeedModel, scored: pd.DataFrame, max_requests: int = 200
) -> tuple[float, float]:
    """p50 and p99 wall time (ms) of scoring one request's candidate pool in one call.

    Each user's pool in ``scored`` (rows with every ranker feature) stands for one feed
    request, scored by the model's own scorer (``model_scores``); up to ``max_requests`` pools
    are timed, after one untimed warm-up call.

    Raises:
        ValueError: when ``scored`` is empty.
    """
    if scored.empty:
        raise ValueError("no scored candidates to time")
    pools = [pool for _, pool in scored.groupby("user_id", sort=True)][:max_requests]
    model_scores(model, pools[0])
    times = []
    for pool in pools:
        t0 = time.perf_counter()
        model_scores(model, pool)
        times.append((time.perf_counter() - t0) * 1000.0)
    p50, p99 = np.quantile(np.array(times), [0.5, 0.99])
    return float(p50), float(p99)


def metric(table: pd.DataFrame, model: str, name: str, slice_name: str = "all") -> float:
    """Look one number up in an evaluation table."""
    row = table[(table["model"] == model) & (table["slice"] == slice_name)]
    if row.empty:
        raise KeyError(f"no row for model={model!r} slice={slice_name!r}")
    return float(row.iloc[0][name])


def format_table(table: pd.DataFrame) -> str:
    """A fixed-width text rendering of the evaluation table."""
    shown = table.copy()
    for col in METRICS:
        if col != "beginner_safety_violations":
            shown[col] = shown[col].map(lambda v: f"{v:.4f}")
    for col in ("scoring_p50_ms", "scoring_p99_ms"):
        if col in shown:
            shown[col] = shown[col].map(lambda v: "-" if pd.isna(v) else f"{v:.2f}")
    return shown.to_string(index=False)


def format_markdown(table: pd.DataFrame) -> str:
    """The evaluation table as a Markdown table (for the Dagster UI)."""
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    lines = [header, rule]
    for row in table.itertuples(index=False):
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _als_lists(
    als: AlsArtifacts,
    index: ItemIndex | None,
    users: list[str],
    seen: dict[str, set[str]],
    k: int,
) -> dict[str, RankedLists]:
    rows = [als.user_row(u) for u in users]
    known = [(u, r) for u, r in zip(users, rows, strict=True) if r is not None]
    if not known or index is None or not len(index):
        return {}
    max_seen = max(len(seen.get(u, ())) for u, _ in known)
    items, _ = index.search(als.user_factors[[r for _, r in known]], k + max_seen)
    out = {}
    for (u, _), row in zip(known, items, strict=True):
        mine = seen.get(u, set())
        ranked = [i for i in row if i and i not in mine][:k]
        out[u] = RankedLists(ranked, ranked[:FEED_SIZE])
    return out


def _popularity_lists(
    popular: pd.DataFrame, users: pd.DataFrame, seen: dict[str, set[str]], k: int
) -> dict[str, RankedLists]:
    by_segment = split_segments(popular)
    out = {}
    for u, level, region in zip(
        users["user_id"], users["fitness_level"], users["region"], strict=True
    ):
        seg = pick_segment(by_segment, level, region, k)
        items = [] if seg is None else list(seg["item_id"])
        mine = seen.get(u, set())
        ranked = [i for i in items if i not in mine][:k]
        out[u] = RankedLists(ranked, ranked[:FEED_SIZE])
    return out


def _candidate_lists(result: FeedResult) -> dict[str, RankedLists]:
    return _pool_lists(result.scored, result.feeds)


def _pool_lists(scored: pd.DataFrame, feeds: pd.DataFrame) -> dict[str, RankedLists]:
    out: dict[str, RankedLists] = {}
    pools = scored.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True])
    by_user = feeds.groupby("user_id")["item_id"].agg(list).to_dict()
    for u, pool in pools.groupby("user_id", sort=False):
        out[str(u)] = RankedLists(list(pool["item_id"].head(100)), by_user.get(u, []))
    return out


def _unguarded_lists(scored: pd.DataFrame) -> dict[str, RankedLists]:
    out: dict[str, RankedLists] = {}
    pools = scored.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True])
    for u, pool in pools.groupby("user_id", sort=False):
        ranked = list(pool["item_id"].head(100))
        out[str(u)] = RankedLists(ranked, ranked[:FEED_SIZE])
    return out


def _single_source_lists(
    model: HomeFeedModel,
    inputs: FeatureInputs,
    users: pd.DataFrame,
    seen: dict[str, set[str]],
    as_of: pd.Timestamp,
    source: str,
) -> dict[str, RankedLists]:
    """One retriever's raw top 100 over the live catalog (seen items removed)."""
    params = single_source_params(model.candidate_params, source, 100)
    queries = (
        two_tower_queries(model.two_tower, model.tt_index, inputs, users, as_of)
        if source == "two_tower"
        else (None, None)
    )
    pools = candidate_pools(
        model.als, model.popular, inputs.catalog, as_of, params, model.tt_index, model.ease
    )
    candidates = retrieve_candidates(
        users, model.als, model.index, pools, seen, params, *queries, model.ease
    )
    out = {}
    for u, group in candidates.groupby("user_id", sort=False):
        ranked = list(group.sort_values("retrieval_rank", kind="stable")["item_id"])
        out[str(u)] = RankedLists(ranked, ranked[:FEED_SIZE])
    return out


EVAL_MAX_USERS: Final = 20_000
"""At most this many held-out users are evaluated (a seeded sample above it)."""
EVAL_BATCH_USERS: Final = 2_000
"""Users whose feeds are built in one call."""


def evaluate_home_feed(
    model: HomeFeedModel,
    inputs: FeatureInputs,
    split: TimeSplit,
    champion: HomeFeedModel | None = None,
    oracle: Mapping[str, list[str]] | None = None,
    max_users: int = EVAL_MAX_USERS,
    batch_users: int = EVAL_BATCH_USERS,
) -> HomeFeedEvaluation:
    """Evaluate the candidate pipeline, its stages, the champion (if any) and the baselines.

    Every model serves, as of ``split.eval_start``, each user with an engagement in the
    held-out part (a seeded sample of ``max_users`` of them when there are more), seeing only
    the events the split lets models learn from (``split.train_events``); relevance is that
    user's deepest engagement grade per item. Feeds are built for ``batch_users`` users at a
    time, so the scored pools in memory are one batch's (a user's feed depends on that user
    alone). The champion serves with its own artifacts but today's events and catalog, as it
    would in production. ``oracle`` (a synthetic world's true preference order per user) is cut
    through the same guardrails as the candidate and reported as the ``oracle`` row: the
    ceiling.
    """
    if max_users < 1 or batch_users < 1:
        raise ValueError("max_users and batch_users must be at least 1")
    heldout = heldout_relevance(inputs.events, split)
    if not heldout:
        raise ValueError("the held-out part has no engagements to evaluate against")
    user_ids = sample_users(heldout, max_users)
    relevance = {u: heldout[u] for u in user_ids}
    as_of = split.eval_start
    inputs = FeatureInputs(
        events=split.train_events(inputs.events).reset_index(drop=True),
        catalog=inputs.catalog,
        profiles=inputs.profiles,
    )
    profiles = inputs.profiles.set_index("user_id")
    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "fitness_level": [profiles["fitness_level"].get(u, UNKNOWN) for u in user_ids],
            "region": [profiles["region"].get(u, UNKNOWN) for u in user_ids],
        }
    )
    seen = seen_items(inputs.events, as_of)
    lists: dict[str, dict[str, RankedLists]] = {}
    latency: dict[str, tuple[float, float]] = {}
    results: list[FeedResult] = []
    for start in range(0, len(users), batch_users):
        batch = users.iloc[start : start + batch_users].reset_index(drop=True)
        # Scoring latency is timed on the first batch's pools (up to 200 of them) alone.
        result, batch_lists, batch_latency = _evaluate_batch(
            model, inputs, batch, seen, as_of, champion, oracle, time_scoring=not start
        )
        results.append(result)
        for name, per_user in batch_lists.items():
            lists.setdefault(name, {}).update(per_user)
        latency.update(batch_latency)
    engaged = compute_user_features(inputs, users.assign(as_of=as_of))
    cold = frozenset(engaged.loc[engaged["u_is_cold"] > 0, "user_id"])
    ctx = EvaluationContext(
        relevance=relevance,
        cold_users=cold,
        beginners=frozenset(users.loc[users["fitness_level"].map(treated_as_beginner), "user_id"]),
        unsafe_items=frozenset(inputs.catalog.loc[unsafe_for_beginners(inputs.catalog), "item_id"]),
        item_category=inputs.catalog.set_index("item_id")["category"].to_dict(),
        catalog_size=int((inputs.catalog["published_at"] < as_of).sum()),
    )
    table = evaluate_models(lists, ctx)
    table["scoring_p50_ms"] = table["model"].map({m: v[0] for m, v in latency.items()})
    table["scoring_p99_ms"] = table["model"].map({m: v[1] for m, v in latency.items()})
    guardrails: dict[str, int] = {}
    for result in results:
        for rule, count in result.guardrails.items():
            guardrails[rule] = guardrails.get(rule, 0) + count
    return HomeFeedEvaluation(
        table=table,
        per_user=per_user_ndcg(lists, ctx),
        feeds=FeedResult(
            feeds=pd.concat([r.feeds for r in results], ignore_index=True),
            scored=pd.concat([r.scored for r in results], ignore_index=True),
            guardrails=guardrails,
        ),
        protocol=split.describe(),
        scorer=model.scorer,
        heldout_users=len(heldout),
    )


def _evaluate_batch(
    model: HomeFeedModel,
    inputs: FeatureInputs,
    users: pd.DataFrame,
    seen: dict[str, set[str]],
    as_of: pd.Timestamp,
    champion: HomeFeedModel | None,
    oracle: Mapping[str, list[str]] | None,
    time_scoring: bool,
) -> tuple[FeedResult, dict[str, dict[str, RankedLists]], dict[str, tuple[float, float]]]:
    """Every model's lists for one batch of users and the candidate's feeds.

    With ``time_scoring``, also the scoring latency of the candidate (and the champion).
    """
    user_ids = users["user_id"].tolist()
    result = build_feeds(model, inputs, users, as_of)
    lists = {"candidate": _candidate_lists(result)}
    latency = {"candidate": measure_scoring_latency(model, result.scored)} if time_scoring else {}
    # A model built without a choice of weights (tests, old settings) is shown with equal ones.
    weights = model.blend_weights or {s: 1.0 / len(BLEND_SOURCES) for s in BLEND_SOURCES}
    # The served scorer's scores are already in the pool; only the other one is computed.
    alternatives = {
        "ranker": result.scored["score"].to_numpy()
        if model.scorer == "ranker"
        else score_candidates(model.ranker, result.scored),
        "blend": result.scored["score"].to_numpy()
        if model.scorer == "blend"
        else blend_scores(result.scored, weights, model.cold_blend_weights),
    }
    for scorer, scores in alternatives.items():
        rescored = result.scored.assign(score=scores)
        feeds, _ = cut_feeds(rescored, inputs, users, as_of, model.rerank_params)
        lists[scorer] = _pool_lists(rescored, feeds)
    lists["candidate_unguarded"] = _unguarded_lists(result.scored)
    if champion is not None:
        champion_result = build_feeds(champion, inputs, users, as_of)
        lists[CHAMPION] = _candidate_lists(champion_result)
        if time_scoring:
            latency[CHAMPION] = measure_scoring_latency(champion, champion_result.scored)
    if oracle is not None:
        unseen = {
            str(u): [i for i in oracle.get(str(u), []) if i not in seen.get(str(u), set())][:300]
            for u in user_ids
        }
        # The oracle's own top 300 (not the retrieval pool): the ceiling of the whole pipeline.
        lists["oracle"] = _guarded_lists(unseen, "oracle", inputs, users, as_of, model)
    lists["als_only"] = _als_lists(model.als, model.index, user_ids, seen, 100)
    lists["ease_only"] = (
        _single_source_lists(model, inputs, users, seen, as_of, "ease") if model.ease else {}
    )
    lists["two_tower_only"] = (
        _single_source_lists(model, inputs, users, seen, as_of, "two_tower")
        if model.two_tower is not None
        else {}
    )
    lists["popularity"] = _popularity_lists(model.popular, users, seen, 100)
    lists["popularity_guarded"] = _guarded_lists(
        {
            u: ranked.retrieval
            for u, ranked in _popularity_lists(model.popular, users, seen, 300).items()
        },
        "popular",
        inputs,
        users,
        as_of,
        model,
    )
    return result, lists, latency


def _guarded_lists(
    ranked: Mapping[str, list[str]],
    source: str,
    inputs: FeatureInputs,
    users: pd.DataFrame,
    as_of: pd.Timestamp,
    model: HomeFeedModel,
) -> dict[str, RankedLists]:
    """Each user's ``ranked`` list (best first) as a pool cut through the candidate's guardrails."""
    rows = [
        (str(user), item, -float(pos))
        for user in users["user_id"]
        for pos, item in enumerate(ranked.get(str(user), []))
    ]
    pool = pd.DataFrame(rows, columns=["user_id", "item_id", "score"]).assign(source=source)
    pool = attach_guardrail_attributes(pool, inputs.catalog)
    feeds, _ = cut_feeds(pool, inputs, users, as_of, model.rerank_params)
    return _pool_lists(pool, feeds)
