"""Hyper-parameter search of the retrievers on the validation split (Optuna, TPE).

Each trial fits a retriever on the split's fit part and scores its top 10 (items the user
engaged with before removed) against the validation part's graded relevance: NDCG@10 over the
validation users. The held-out part is never looked at. The defaults run as the first trial,
and the best trial replaces them only when it beats them beyond noise (paired bootstrap over
the validation users, 95%): a small validation split keeps the defaults.

ALS searches ``factors``, ``regularization`` and ``alpha``; EASE searches ``l2``. Popularity
scores every half-life of ``POPULARITY_HALF_LIVES`` (a grid: one cheap parameter): the source of
every cold user must fit the log, and a week-long half-life that suits a busy app's trends ranks
a sparse log's classics at random (on ml-latest-small's new users, all-time popularity scores
NDCG@10 0.50 against 0.09 with 7 days).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
import pandas as pd

from fitpulse_orchestration.evaluation.metrics import beats_beyond_noise, ndcg_at_k, sample_users
from fitpulse_orchestration.features.reference import profile_attributes
from fitpulse_orchestration.retrieval.als import (
    AlsArtifacts,
    AlsParams,
    build_interaction_matrix,
    train_als,
)
from fitpulse_orchestration.retrieval.candidates import seen_items
from fitpulse_orchestration.retrieval.ease import EaseParams, train_ease
from fitpulse_orchestration.retrieval.popularity import (
    PopularityParams,
    compute_popular_items,
    pick_segment,
    split_segments,
)

POPULARITY_HALF_LIVES: Final[tuple[float | None, ...]] = (
    1.0,
    3.0,
    7.0,
    14.0,
    30.0,
    90.0,
    365.0,
    None,
)
"""Half-lives (days) the popularity search scores; None is all-time popularity."""


ALS_FACTORS: Final = (16, 128)
ALS_REGULARIZATION: Final = (1e-3, 1e3)
ALS_ALPHA: Final = (0.5, 50.0)
"""ALS search ranges (log-uniform). implicit's L2 term is not scaled by a user's or an item's
number of interactions, so a sparse log's best regularization can be in the tens: the range
spans the synthetic world's default (0.05) and that region."""

ALS_STARTS: Final[tuple[dict[str, float], ...]] = (
    {"factors": 32, "regularization": 50.0, "alpha": 5.0},
)
"""Points the ALS search scores right after the defaults. A random search of 12 trials over
three log ranges rarely lands on the strongly regularised ridge, where regularization and
alpha must rise together; this point starts it there. Regularization 50 with alpha 5 is where
an independent grid validation landed on both public logs (``benchmarks/public_data_bench.py``:
32 factors on ml-latest-small, 128 on ml-100k). It serves only if it wins on this log's
validation, as any trial."""


@dataclass(frozen=True)
class TuningParams:
    """Trial budget (per retriever), seed and how many validation users judge a trial."""

    n_trials: int = 12
    seed: int = 7
    max_users: int = 2000

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, got {self.n_trials}")


@dataclass
class TuningResult:
    """The chosen parameters and every trial.

    ``trials``: ``model``, ``trial``, ``params`` (dict), ``ndcg_at_10``, ``seconds``.
    ``default_ndcg``/``best_ndcg``: validation NDCG@10 of the defaults and of the choice (the
    same when no trial beat the defaults beyond noise).
    """

    als: AlsParams
    ease: EaseParams
    popularity: PopularityParams
    trials: pd.DataFrame
    default_ndcg: dict[str, float]
    best_ndcg: dict[str, float]
    users: int
    als_model: AlsArtifacts | None = None
    """ALS with the chosen parameters, fitted on the fit part before the validation part: the
    validation ALS (``ranking.feed.fit_validation_models`` takes it instead of fitting again)."""

    def summary(self) -> dict[str, float]:
        """Flat numbers for metadata and MLflow."""
        out: dict[str, float] = {"users": float(self.users), "trials": float(len(self.trials))}
        for model in self.best_ndcg:
            out[f"{model}.default_ndcg_at_10"] = self.default_ndcg[model]
            out[f"{model}.best_ndcg_at_10"] = self.best_ndcg[model]
        return out

    def chosen(self) -> dict[str, Any]:
        """The chosen parameters (for tags and params)."""
        return {
            "als.factors": self.als.factors,
            "als.regularization": self.als.regularization,
            "als.alpha": self.als.alpha,
            "ease.l2": self.ease.l2,
            "popularity.half_life_days": self.popularity.describe(),
        }


def _judged(
    relevance: Mapping[str, Mapping[str, int]], max_users: int, seed: int
) -> dict[str, Mapping[str, int]]:
    return {u: relevance[u] for u in sample_users(relevance, max_users, seed)}


def als_validation_ndcg(
    events: pd.DataFrame,
    as_of: pd.Timestamp,
    params: AlsParams,
    relevance: Mapping[str, Mapping[str, int]],
) -> np.ndarray:
    """Per-user NDCG@10 of ALS fitted on ``events`` before ``as_of`` (no row: 0), in order."""
    return _als_validation(events, as_of, params, relevance)[0]


def _als_validation(
    events: pd.DataFrame,
    as_of: pd.Timestamp,
    params: AlsParams,
    relevance: Mapping[str, Mapping[str, int]],
) -> tuple[np.ndarray, AlsArtifacts]:
    """``als_validation_ndcg`` and the fitted model."""
    als = train_als(build_interaction_matrix(events, params, before=as_of), params)
    seen = seen_items(events, as_of)
    index = {item: j for j, item in enumerate(als.item_ids)}
    scores = []
    for user, rel in relevance.items():
        row = als.user_row(user)
        if row is None:
            scores.append(0.0)
            continue
        s = als.item_factors @ als.user_factors[row]
        for item in seen.get(user, ()):
            j = index.get(item)
            if j is not None:
                s[j] = -np.inf
        top = np.argsort(-s, kind="stable")[:10]
        scores.append(ndcg_at_k(list(als.item_ids[top]), rel, 10))
    return np.array(scores), als


def ease_validation_ndcg(
    events: pd.DataFrame,
    as_of: pd.Timestamp,
    params: EaseParams,
    relevance: Mapping[str, Mapping[str, int]],
) -> np.ndarray:
    """Per-user NDCG@10 of EASE fitted on ``events`` before ``as_of``, in ``relevance`` order."""
    before = events[events["ts"] < as_of]
    ease = train_ease(before, params)
    seen = seen_items(before, as_of)
    scores = [
        ndcg_at_k(list(ease.top_items(seen.get(user, set()), 10)[0]), rel, 10)
        for user, rel in relevance.items()
    ]
    return np.array(scores)


def popularity_validation_ndcg(
    events: pd.DataFrame,
    profiles: pd.DataFrame,
    as_of: pd.Timestamp,
    params: PopularityParams,
    relevance: Mapping[str, Mapping[str, int]],
) -> np.ndarray:
    """Per-user NDCG@10 of each user's segment popularity list before ``as_of``, seen removed."""
    by_segment = split_segments(compute_popular_items(events, profiles, as_of, params))
    seen = seen_items(events, as_of)
    attrs = profile_attributes(profiles, list(relevance))
    scores = []
    for (user, rel), level, region in zip(
        relevance.items(), attrs["fitness_level"], attrs["region"], strict=True
    ):
        segment = pick_segment(by_segment, level, region, 10)
        mine = seen.get(user, set())
        items = [] if segment is None else [i for i in segment["item_id"] if i not in mine][:10]
        scores.append(ndcg_at_k(items, rel, 10))
    return np.array(scores)


def tune_popularity(
    events: pd.DataFrame,
    profiles: pd.DataFrame,
    as_of: pd.Timestamp,
    default: PopularityParams,
    relevance: Mapping[str, Mapping[str, int]],
    seed: int = 7,
) -> tuple[PopularityParams, list[dict[str, Any]], float, float]:
    """The half-life of ``POPULARITY_HALF_LIVES`` with the best validation NDCG@10.

    The default is scored first and kept unless the best beats it beyond noise (paired
    bootstrap, 95%), as for the other retrievers.

    Returns:
        The chosen parameters, one trial row per half-life, the chosen and the default NDCG@10.
    """
    grid = [default.half_life_days] + [
        h for h in POPULARITY_HALF_LIVES if h != default.half_life_days
    ]
    rows: list[dict[str, Any]] = []
    per_user = []
    for number, half_life in enumerate(grid):
        started = time.perf_counter()
        candidate = replace(default, half_life_days=half_life)
        per_user.append(popularity_validation_ndcg(events, profiles, as_of, candidate, relevance))
        rows.append(
            {
                "model": "popularity",
                "trial": number,
                "params": {"half_life_days": candidate.describe()},
                "ndcg_at_10": float(per_user[-1].mean()),
                "seconds": time.perf_counter() - started,
            }
        )
    best = max(range(len(grid)), key=lambda i: (float(per_user[i].mean()), -i))
    wins, _ = beats_beyond_noise(per_user[best], per_user[0], seed=seed)
    chosen = best if wins else 0
    return (
        replace(default, half_life_days=grid[chosen]),
        rows,
        float(per_user[chosen].mean()),
        float(per_user[0].mean()),
    )


def tune_retrievers(
    fit_events: pd.DataFrame,
    profiles: pd.DataFrame,
    as_of: pd.Timestamp,
    relevance: Mapping[str, Mapping[str, int]],
    als: AlsParams,
    ease: EaseParams,
    popularity: PopularityParams,
    params: TuningParams,
) -> TuningResult:
    """Search ALS, EASE and popularity hyper-parameters on the validation split.

    Args:
        fit_events: the fit part's events (``TimeSplit.fit_events``).
        profiles: member profiles (popularity segments).
        as_of: the validation part's start (``split.ranker_start``).
        relevance: validation relevance (``validation_relevance``).
        als: ALS defaults (iterations, event weights and seed are kept).
        ease: EASE defaults (``max_items`` is kept).
        popularity: popularity defaults (``top_n`` is kept).
        params: budget and seed.

    Raises:
        ValueError: when ``relevance`` is empty.
    """
    import optuna

    if not relevance:
        raise ValueError("no validation users to tune on")
    judged = _judged(relevance, params.max_users, params.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows: list[dict[str, Any]] = []

    def run(
        model: str,
        defaults: dict[str, Any],
        starts: Sequence[dict[str, Any]],
        suggest: Callable[[optuna.Trial], dict[str, Any]],
        score: Callable[[dict[str, Any]], tuple[np.ndarray, Any]],
    ) -> tuple[dict[str, Any], float, float, Any]:
        sampler = optuna.samplers.TPESampler(seed=params.seed)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.enqueue_trial(defaults)
        for start in starts:
            study.enqueue_trial(start)
        per_user: dict[int, np.ndarray] = {}
        # The fitted model of the defaults and of the best trial so far: one of them is chosen.
        fitted: dict[int, Any] = {}

        def objective(trial: optuna.Trial) -> float:
            started = time.perf_counter()
            chosen = suggest(trial)
            per_user[trial.number], artifact = score(chosen)
            value = float(per_user[trial.number].mean())
            best_so_far = max(per_user, key=lambda n: (per_user[n].mean(), -n))
            fitted[trial.number] = artifact
            for number in [n for n in fitted if n not in (0, best_so_far)]:
                del fitted[number]
            rows.append(
                {
                    "model": model,
                    "trial": trial.number,
                    "params": chosen,
                    "ndcg_at_10": value,
                    "seconds": time.perf_counter() - started,
                }
            )
            return value

        study.optimize(objective, n_trials=params.n_trials)
        best = study.best_trial
        wins, _ = beats_beyond_noise(per_user[best.number], per_user[0], seed=params.seed)
        chosen = best if wins else study.trials[0]
        return (
            dict(chosen.params),
            float(chosen.value or 0.0),
            float(study.trials[0].value or 0.0),
            fitted.get(chosen.number),
        )

    als_best, als_value, als_default, als_model = run(
        "als",
        {"factors": als.factors, "regularization": als.regularization, "alpha": als.alpha},
        ALS_STARTS,
        lambda t: {
            "factors": t.suggest_int("factors", *ALS_FACTORS, log=True),
            "regularization": t.suggest_float("regularization", *ALS_REGULARIZATION, log=True),
            "alpha": t.suggest_float("alpha", *ALS_ALPHA, log=True),
        },
        lambda p: _als_validation(fit_events, as_of, replace(als, **p), judged),
    )
    # EASE's fitted weights are not kept: each is a dense matrix over the head of the catalog,
    # and keeping the defaults' and the best trial's beside the one being fitted would triple
    # the search's peak memory. The validation EASE is fitted again.
    ease_best, ease_value, ease_default, _ = run(
        "ease",
        {"l2": ease.l2},
        (),
        lambda t: {"l2": t.suggest_float("l2", 1.0, 1e4, log=True)},
        lambda p: (ease_validation_ndcg(fit_events, as_of, replace(ease, **p), judged), None),
    )
    popular, popular_rows, popular_value, popular_default = tune_popularity(
        fit_events, profiles, as_of, popularity, judged, params.seed
    )
    rows.extend(popular_rows)
    return TuningResult(
        als=replace(als, **als_best),
        ease=replace(ease, **ease_best),
        popularity=popular,
        trials=pd.DataFrame(rows),
        default_ndcg={"als": als_default, "ease": ease_default, "popularity": popular_default},
        best_ndcg={"als": als_value, "ease": ease_value, "popularity": popular_value},
        users=len(judged),
        als_model=als_model,
    )


def trial_records(result: TuningResult) -> list[dict[str, Any]]:
    """One record per trial for nested tracking runs (``params`` flattened, JSON-able)."""
    return [
        {
            "name": f"{row.model}-trial-{row.trial}",
            "params": {f"{row.model}.{k}": v for k, v in dict(row.params).items()},
            "metrics": {"validation_ndcg_at_10": float(row.ndcg_at_10), "seconds": row.seconds},
        }
        for row in result.trials.itertuples()
    ]
