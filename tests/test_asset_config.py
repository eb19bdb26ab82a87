"""The assets' run configuration mirrors the domain dataclasses: one default per setting."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import dagster as dg
import pytest

from assets import config
from fitpulse_orchestration.definitions import build_definitions
from fitpulse_orchestration.evaluation.tuning import TuningParams
from fitpulse_orchestration.features.training import SplitParams
from fitpulse_orchestration.monitoring.drift import DriftParams
from fitpulse_orchestration.monitoring.serving import UxThresholds
from fitpulse_orchestration.push.evaluation import PushGateConfig
from fitpulse_orchestration.push.models import PushModelParams
from fitpulse_orchestration.push.policy import PushPolicyParams
from fitpulse_orchestration.ranking.ranker import RankerParams
from fitpulse_orchestration.retrieval.als import AlsParams
from fitpulse_orchestration.retrieval.candidates import CandidateParams
from fitpulse_orchestration.retrieval.ease import EaseParams
from fitpulse_orchestration.retrieval.two_tower import TwoTowerParams
from fitpulse_orchestration.settings import ProjectHome
from model_registry.gate import GatePolicy

pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")

CONVERSIONS: list[tuple[Any, str, type]] = [
    (config.SplitConfig, "to_params", SplitParams),
    (config.AlsConfig, "to_params", AlsParams),
    (config.EaseConfig, "to_params", EaseParams),
    (config.TuningConfig, "to_params", TuningParams),
    (config.TwoTowerConfig, "to_params", TwoTowerParams),
    (config.RankerConfig, "to_params", RankerParams),
    (config.FeedConfig, "candidate_params", CandidateParams),
    (config.GateConfig, "to_policy", GatePolicy),
    (config.MonitoringConfig, "drift_params", DriftParams),
    (config.MonitoringConfig, "ux_thresholds", UxThresholds),
    (config.PushModelConfig, "to_params", PushModelParams),
    (config.PushPolicyConfig, "to_params", PushPolicyParams),
    (config.PushPolicyConfig, "to_gate", PushGateConfig),
]


@pytest.mark.parametrize(
    ("config_cls", "method", "params"), CONVERSIONS, ids=[c[2].__name__ for c in CONVERSIONS]
)
def test_a_default_config_converts_to_the_domain_default(
    config_cls: Any, method: str, params: type
) -> None:
    assert getattr(config_cls(), method)() == params()
    assert {f.name for f in fields(params)} <= set(config_cls.model_fields)


def test_a_changed_setting_reaches_the_domain() -> None:
    feed = config.FeedConfig(max_per_category=1, fresh_days=5.0)
    push = config.PushPolicyConfig(per_day=2, per_week=4, max_disable_ratio=0.5)

    assert feed.rerank_params().max_per_category == 1
    assert feed.rerank_params().fresh_days == feed.candidate_params().fresh_days == 5.0
    assert push.to_params().caps.per_day == 2
    assert push.to_gate().max_disable_ratio == 0.5


def test_the_domain_rejects_a_bad_setting_on_conversion() -> None:
    with pytest.raises(ValueError, match="per_day <= per_week"):
        config.PushPolicyConfig(per_day=5, per_week=3).to_params()


def test_descriptions_come_from_the_dataclass_docs() -> None:
    @dataclass(frozen=True)
    class Params:
        """Knobs.

        Attributes:
            alpha: the first knob, described
                over two lines.
        """

        alpha: int = 1
        beta: float = 0.5
        """The second knob."""
        gamma: dict[str, float] = field(default_factory=lambda: {"a": 1.0})

    built = config.config_fields("_Probe", config.mirrored(Params))

    assert built.model_fields["alpha"].description == "the first knob, described over two lines."
    assert built.model_fields["beta"].description == "The second knob."
    assert built.model_fields["gamma"].description is None
    assert built().gamma == {"a": 1.0}
    assert config.SplitConfig.model_fields["holdout"].description.startswith("one of")


def test_dagster_validates_training_config_built_from_the_mirrors(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    defs = build_definitions(ProjectHome(tmp_path_factory.mktemp("home")))
    job = defs.resolve_job_def("training_job")
    good = {"ops": {"training_snapshot": {"config": {"holdout": "user_random", "seed": 3}}}}
    bad = {"ops": {"training_snapshot": {"config": {"holdout": "user_random", "sead": 3}}}}

    assert dg.validate_run_config(job, good)["ops"]["training_snapshot"]["config"]["seed"] == 3
    with pytest.raises(dg.DagsterInvalidConfigError, match="sead"):
        dg.validate_run_config(job, bad)
