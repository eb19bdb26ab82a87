"""Run configuration of the assets: each class mirrors one or more frozen domain dataclasses.

The fields, their types, defaults and Launchpad descriptions are read from the dataclasses
(``mirrored``), so the domain is the single source of every setting; a class adds only what no
dataclass holds. ``to_params`` and its siblings convert back, failing loudly on a field the
config lacks.
"""

import ast
import inspect
import re
import textwrap
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields
from typing import Any

import dagster as dg
import pydantic

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

_RERANK = RerankParams()


def field_docs(cls: type) -> dict[str, str]:
    """Each field's description: its ``Attributes:`` entry, else the string literal below it."""
    docs: dict[str, str] = {}
    text = inspect.getdoc(cls) or ""
    if "Attributes:" in text:
        section = text.split("Attributes:", 1)[1]
        for match in re.finditer(r"^ {4}(\w+): (.*(?:\n {8}.*)*)", section, re.M):
            docs[match.group(1)] = " ".join(match.group(2).split())
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    assert isinstance(body, ast.ClassDef)
    for node, after in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs.setdefault(node.target.id, " ".join(after.value.value.split()))
    return docs


def mirrored(
    params: type, only: Iterable[str] | None = None, skip: Iterable[str] = ()
) -> dict[str, Any]:
    """Pydantic field definitions of ``params``' fields (``only`` those, none of ``skip``)."""
    hints = typing.get_type_hints(params)
    docs = field_docs(params)
    wanted = None if only is None else set(only)
    out: dict[str, Any] = {}
    for f in fields(params):
        if (wanted is not None and f.name not in wanted) or f.name in skip:
            continue
        kind = hints[f.name]
        if f.default is not MISSING:
            default = f.default
        else:
            assert f.default_factory is not MISSING, f"{params.__name__}.{f.name} has no default"
            default = f.default_factory()
        if typing.get_origin(kind) is Mapping:
            key, value = typing.get_args(kind)
            kind, default = dict[key, value], dict(default)  # type: ignore[valid-type]
        out[f.name] = (kind, pydantic.Field(default=default, description=docs.get(f.name)))
    return out


def config_fields(name: str, *sources: dict[str, Any]) -> Any:
    """A ``dg.Config`` base holding the fields of ``sources`` (later ones win a clash)."""
    merged: dict[str, Any] = {}
    for source in sources:
        merged.update(source)
    return pydantic.create_model(name, __base__=dg.Config, **merged)


def _convert(config: dg.Config, cls: type) -> Any:
    return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


_SplitFields: Any = config_fields("_SplitFields", mirrored(SplitParams))


class SplitConfig(_SplitFields):
    """The evaluation protocol: how the held-out and validation parts are cut."""

    def to_params(self) -> SplitParams:
        """The domain dataclass."""
        return _convert(self, SplitParams)  # type: ignore[no-any-return]


_AlsFields: Any = config_fields("_AlsFields", mirrored(AlsParams))


class AlsConfig(_AlsFields):
    """ALS hyper-parameters and event weights."""

    def to_params(self) -> AlsParams:
        """The domain dataclass."""
        return _convert(self, AlsParams)  # type: ignore[no-any-return]


_EaseFields: Any = config_fields("_EaseFields", mirrored(EaseParams))


class EaseConfig(_EaseFields):
    """EASE defaults: the search starts from ``l2``; ``max_items`` bounds its memory."""

    def to_params(self) -> EaseParams:
        """The domain dataclass."""
        return _convert(self, EaseParams)  # type: ignore[no-any-return]


_TuningFields: Any = config_fields("_TuningFields", mirrored(TuningParams))


class TuningConfig(_TuningFields):
    """The hyper-parameter search: trials per retriever, seed, judged users, starting points."""

    als: AlsConfig = AlsConfig()
    ease: EaseConfig = EaseConfig()

    def to_params(self) -> TuningParams:
        """The domain dataclass."""
        return _convert(self, TuningParams)  # type: ignore[no-any-return]


_TwoTowerFields: Any = config_fields("_TwoTowerFields", mirrored(TwoTowerParams))


class TwoTowerConfig(_TwoTowerFields):
    """Two-tower architecture and training settings (see ``retrieval.two_tower``)."""

    def to_params(self) -> TwoTowerParams:
        """The domain dataclass."""
        return _convert(self, TwoTowerParams)  # type: ignore[no-any-return]


_RankerFields: Any = config_fields("_RankerFields", mirrored(RankerParams))


class RankerConfig(_RankerFields):
    """LambdaRank hyper-parameters."""

    def to_params(self) -> RankerParams:
        """The domain dataclass."""
        return _convert(self, RankerParams)  # type: ignore[no-any-return]


_FEED_RERANK = ("max_per_category", "fresh_slot", "recent_days")
"""Guardrail settings a training run may change (the feed size stays the domain's)."""


_FeedFields: Any = config_fields(
    "_FeedFields", mirrored(CandidateParams), mirrored(RerankParams, only=_FEED_RERANK)
)


class FeedConfig(_FeedFields):
    """Candidate quotas and re-ranking guardrails used when building feeds.

    ``fresh_days`` is the candidates' and the guardrails' freshness window alike.
    """

    def candidate_params(self) -> CandidateParams:
        """Candidate quotas."""
        return _convert(self, CandidateParams)  # type: ignore[no-any-return]

    def rerank_params(self) -> RerankParams:
        """Guardrail settings (feed size from the domain defaults)."""
        return RerankParams(
            n=_RERANK.n,
            max_per_category=self.max_per_category,
            fresh_days=self.fresh_days,
            fresh_slot=self.fresh_slot,
            recent_days=self.recent_days,
        )


_GateFields: Any = config_fields("_GateFields", mirrored(GatePolicy))


class GateConfig(_GateFields):
    """Thresholds of the promotion gate (see ``model_registry.gate.GatePolicy``)."""

    def to_policy(self) -> GatePolicy:
        """The domain dataclass."""
        return _convert(self, GatePolicy)  # type: ignore[no-any-return]


_MonitoringFields: Any = config_fields(
    "_MonitoringFields", mirrored(DriftParams), mirrored(UxThresholds)
)


class MonitoringConfig(_MonitoringFields):
    """Windows, sample sizes and thresholds of the monitoring assets and their checks."""

    days: int = pydantic.Field(RECENT_DAYS, description="Days of served feeds the monitors read.")
    max_requests: int = pydantic.Field(
        MAX_REQUESTS, description="At most this many served feed requests are replayed."
    )
    max_skew_rate: float = pydantic.Field(
        0.05, description="Largest share of mismatched features the skew check accepts."
    )

    def drift_params(self) -> DriftParams:
        """Evidently drift settings."""
        return _convert(self, DriftParams)  # type: ignore[no-any-return]

    def ux_thresholds(self) -> UxThresholds:
        """The UX monitors' limits."""
        return _convert(self, UxThresholds)  # type: ignore[no-any-return]


class ExperimentAnalysisConfig(dg.Config):
    """Which experiment to analyse, its control variant and the outcome horizon."""

    experiment: str = "ranker-ab"
    control: str = "control"
    horizon_days: float = 7.0
    n_boot: int = 1000


_PushModelFields: Any = config_fields("_PushModelFields", mirrored(PushModelParams))


class PushModelConfig(_PushModelFields):
    """Hyper-parameters of the push classifiers and their time split."""

    def to_params(self) -> PushModelParams:
        """The domain dataclass."""
        return _convert(self, PushModelParams)  # type: ignore[no-any-return]


_PushPolicyFields: Any = config_fields(
    "_PushPolicyFields", mirrored(PushPolicyParams), mirrored(PushGateConfig)
)


class PushPolicyConfig(_PushPolicyFields):
    """The push policy's score and guardrails, and the limits its evaluation is gated on."""

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
