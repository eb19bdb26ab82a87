"""Run configuration of the assets: each class mirrors a frozen domain dataclass.

Defaults are read from the dataclass so the domain stays the single source of truth.
"""

from dataclasses import fields
from typing import Any

import dagster as dg

from fitpulse_orchestration.evaluation.tuning import TuningParams
from fitpulse_orchestration.features.training import SplitParams
from fitpulse_orchestration.monitoring.drift import DriftParams
from fitpulse_orchestration.monitoring.serving import MAX_REQUESTS, RECENT_DAYS, UxThresholds
from fitpulse_orchestration.push.evaluation import PushGateConfig
from fitpulse_orchestration.push.models import PushModelParams
from fitpulse_orchestration.push.policy import PushPolicyParams
from fitpulse_orchestration.ranking.ranker import RankerParams
from fitpulse_orchestration.ranking.rerank import RerankParams
from fitpulse_orchestration.retrieval.als import AlsParams
from fitpulse_orchestration.retrieval.candidates import CandidateParams
from fitpulse_orchestration.retrieval.ease import EaseParams
from fitpulse_orchestration.retrieval.two_tower import TwoTowerParams
from fitpulse_orchestration.simulation.ab import SimulationSettings
from model_registry.gate import GatePolicy

_ALS = AlsParams()
_TWO_TOWER = TwoTowerParams()
_RANKER = RankerParams()
_SPLIT = SplitParams()
_EASE = EaseParams()
_TUNING = TuningParams()
_CANDIDATES = CandidateParams()
_RERANK = RerankParams()


def _convert(config: dg.Config, cls: type) -> Any:
    return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


class SplitConfig(dg.Config):
    """The evaluation protocol: how the held-out and validation parts are cut."""

    holdout: str = _SPLIT.holdout
    """time (latest days), user_random (a share of each user's items, the Recommenders
    protocol) or leave_last (each user's last item)."""
    eval_days: int | None = _SPLIT.eval_days
    ranker_days: int | None = _SPLIT.ranker_days
    heldout_share: float = _SPLIT.heldout_share
    min_heldout_users: int = _SPLIT.min_heldout_users
    seed: int = _SPLIT.seed

    def to_params(self) -> SplitParams:
        """The domain dataclass."""
        return _convert(self, SplitParams)  # type: ignore[no-any-return]


class AlsConfig(dg.Config):
    """ALS hyper-parameters and event weights."""

    factors: int = _ALS.factors
    regularization: float = _ALS.regularization
    iterations: int = _ALS.iterations
    alpha: float = _ALS.alpha
    random_state: int = _ALS.random_state
    weight_complete: float = _ALS.weight_complete
    weight_start: float = _ALS.weight_start
    weight_click: float = _ALS.weight_click
    weight_impression: float = _ALS.weight_impression

    def to_params(self) -> AlsParams:
        """The domain dataclass."""
        return _convert(self, AlsParams)  # type: ignore[no-any-return]


class EaseConfig(dg.Config):
    """EASE defaults: the search starts from ``l2``; ``max_items`` bounds its memory."""

    l2: float = _EASE.l2
    max_items: int = _EASE.max_items

    def to_params(self) -> EaseParams:
        """The domain dataclass."""
        return _convert(self, EaseParams)  # type: ignore[no-any-return]


class TuningConfig(dg.Config):
    """The hyper-parameter search: trials per retriever, seed, judged users, starting points."""

    n_trials: int = _TUNING.n_trials
    seed: int = _TUNING.seed
    max_users: int = _TUNING.max_users
    als: AlsConfig = AlsConfig()
    ease: EaseConfig = EaseConfig()

    def to_params(self) -> TuningParams:
        """The domain dataclass."""
        return TuningParams(n_trials=self.n_trials, seed=self.seed, max_users=self.max_users)


class TwoTowerConfig(dg.Config):
    """Two-tower architecture and training settings (see ``retrieval.two_tower``)."""

    dim: int = _TWO_TOWER.dim
    hidden: int = _TWO_TOWER.hidden
    temperature: float = _TWO_TOWER.temperature
    logq_weight: float = _TWO_TOWER.logq_weight
    popularity_weight: float = _TWO_TOWER.popularity_weight
    epochs: int = _TWO_TOWER.epochs
    batch_size: int = _TWO_TOWER.batch_size
    learning_rate: float = _TWO_TOWER.learning_rate
    weight_decay: float = _TWO_TOWER.weight_decay
    max_examples: int = _TWO_TOWER.max_examples
    valid_fraction: float = _TWO_TOWER.valid_fraction
    random_state: int = _TWO_TOWER.random_state
    num_threads: int = _TWO_TOWER.num_threads

    def to_params(self) -> TwoTowerParams:
        """The domain dataclass."""
        return _convert(self, TwoTowerParams)  # type: ignore[no-any-return]


class RankerConfig(dg.Config):
    """LambdaRank hyper-parameters."""

    num_leaves: int = _RANKER.num_leaves
    learning_rate: float = _RANKER.learning_rate
    n_estimators: int = _RANKER.n_estimators
    min_child_samples: int = _RANKER.min_child_samples
    subsample: float = _RANKER.subsample
    colsample_bytree: float = _RANKER.colsample_bytree
    early_stopping_rounds: int = _RANKER.early_stopping_rounds
    valid_fraction: float = _RANKER.valid_fraction
    random_state: int = _RANKER.random_state
    num_threads: int = _RANKER.num_threads

    def to_params(self) -> RankerParams:
        """The domain dataclass."""
        return _convert(self, RankerParams)  # type: ignore[no-any-return]


class FeedConfig(dg.Config):
    """Candidate quotas and re-ranking guardrails used when building feeds."""

    n_als: int = _CANDIDATES.n_als
    n_ease: int = _CANDIDATES.n_ease
    n_two_tower: int = _CANDIDATES.n_two_tower
    n_popular: int = _CANDIDATES.n_popular
    n_fresh: int = _CANDIDATES.n_fresh
    cold_n_two_tower: int = _CANDIDATES.cold_n_two_tower
    cold_n_popular: int = _CANDIDATES.cold_n_popular
    cold_threshold: int = _CANDIDATES.cold_threshold
    fresh_days: float = _CANDIDATES.fresh_days
    max_per_category: int = _RERANK.max_per_category
    fresh_slot: int = _RERANK.fresh_slot
    recent_days: float = _RERANK.recent_days

    def candidate_params(self) -> CandidateParams:
        """Candidate quotas."""
        return _convert(self, CandidateParams)  # type: ignore[no-any-return]

    def rerank_params(self) -> RerankParams:
        """Guardrail settings (feed size and freshness window from the domain defaults)."""
        return RerankParams(
            n=_RERANK.n,
            max_per_category=self.max_per_category,
            fresh_days=self.fresh_days,
            fresh_slot=self.fresh_slot,
            recent_days=self.recent_days,
        )


_GATE = GatePolicy()


class GateConfig(dg.Config):
    """Thresholds of the promotion gate (see ``model_registry.gate.GatePolicy``)."""

    ndcg_margin: float = _GATE.ndcg_margin
    confidence: float = _GATE.confidence
    bootstrap_samples: int = _GATE.bootstrap_samples
    cold_ndcg_tolerance: float = _GATE.cold_ndcg_tolerance
    coverage_tolerance: float = _GATE.coverage_tolerance
    latency_budget_ms: float = _GATE.latency_budget_ms
    seed: int = _GATE.seed

    def to_policy(self) -> GatePolicy:
        """The domain dataclass."""
        return _convert(self, GatePolicy)  # type: ignore[no-any-return]


_DRIFT = DriftParams()
_UX = UxThresholds()


class MonitoringConfig(dg.Config):
    """Windows, sample sizes and thresholds of the monitoring assets and their checks."""

    days: int = RECENT_DAYS
    max_requests: int = MAX_REQUESTS
    max_rows: int = _DRIFT.max_rows
    drift_share: float = _DRIFT.drift_share
    max_skew_rate: float = 0.05
    max_empty_feed_rate: float = _UX.max_empty_feed_rate
    max_fallback_rate: float = _UX.max_fallback_rate
    max_beginner_violations: int = _UX.max_beginner_violations
    max_notifications_per_user_week_p95: float = _UX.max_notifications_per_user_week_p95

    def drift_params(self) -> DriftParams:
        """Evidently drift settings."""
        return DriftParams(drift_share=self.drift_share, max_rows=self.max_rows)

    def ux_thresholds(self) -> UxThresholds:
        """The UX monitors' limits."""
        return _convert(self, UxThresholds)  # type: ignore[no-any-return]


class ExperimentAnalysisConfig(dg.Config):
    """Which experiment to analyse, its control variant and the outcome horizon."""

    experiment: str = "ranker-ab"
    control: str = "control"
    horizon_days: float = 7.0
    n_boot: int = 1000


_PUSH_MODEL = PushModelParams()
_PUSH_POLICY = PushPolicyParams()
_PUSH_GATE = PushGateConfig()


class PushModelConfig(dg.Config):
    """Hyper-parameters of the push classifiers and their time split."""

    num_leaves: int = _PUSH_MODEL.num_leaves
    learning_rate: float = _PUSH_MODEL.learning_rate
    n_estimators: int = _PUSH_MODEL.n_estimators
    min_child_samples: int = _PUSH_MODEL.min_child_samples
    fit_share: float = _PUSH_MODEL.fit_share
    calibration_share: float = _PUSH_MODEL.calibration_share
    calibration: str = _PUSH_MODEL.calibration
    seed: int = _PUSH_MODEL.seed

    def to_params(self) -> PushModelParams:
        """The domain dataclass."""
        return _convert(self, PushModelParams)  # type: ignore[no-any-return]


class PushPolicyConfig(dg.Config):
    """The push policy's score and guardrails, and the limits its evaluation is gated on."""

    fatigue_weight: float = _PUSH_POLICY.fatigue_weight
    threshold: float = _PUSH_POLICY.threshold
    per_day: int = _PUSH_POLICY.per_day
    per_week: int = _PUSH_POLICY.per_week
    quiet_start_hour: int = _PUSH_POLICY.quiet_start_hour
    quiet_end_hour: int = _PUSH_POLICY.quiet_end_hour
    app_open_cooldown_h: float = _PUSH_POLICY.app_open_cooldown_h
    content_value: dict[str, float] = dict(_PUSH_POLICY.content_value)  # noqa: RUF012
    max_pushes_per_user_week: float = _PUSH_GATE.max_pushes_per_user_week
    max_disable_ratio: float = _PUSH_GATE.max_disable_ratio

    def to_params(self) -> PushPolicyParams:
        """The policy's domain dataclass."""
        return _convert(self, PushPolicyParams)  # type: ignore[no-any-return]

    def to_gate(self) -> PushGateConfig:
        """The evaluation gate's domain dataclass."""
        return _convert(self, PushGateConfig)  # type: ignore[no-any-return]


_SIMULATION = SimulationSettings()


class SimulatedAbConfig(dg.Config):
    """Arms, length, sample size and seed of the closed-loop A/B (``SimulationSettings``)."""

    arms: str = ",".join(_SIMULATION.arms)
    """Comma-separated arms, as ``fitpulse simulate-ab --arms``."""
    days: int = _SIMULATION.days
    users_per_arm: int = _SIMULATION.users_per_arm
    seed: int = _SIMULATION.seed
    n_boot: int = _SIMULATION.n_boot

    def to_settings(self) -> SimulationSettings:
        """The domain settings (validated there)."""
        return SimulationSettings(
            arms=tuple(a.strip() for a in self.arms.split(",") if a.strip()),
            days=self.days,
            users_per_arm=self.users_per_arm,
            seed=self.seed,
            n_boot=self.n_boot,
        )


class CanaryReviewConfig(dg.Config):
    """Which rollout to review (``serving.rollout``)."""

    rollout: str
