"""Readable automation (issue 24 section 5): what an operator sees in the Dagster UI.

Every sensor, schedule and asset check says what it does; gate and UX checks state their
thresholds; every sensor tick logs what it saw and what it decided; the registry jobs' configs
scaffold to something the launchpad accepts and their runs are tagged with what they acted on.

One project home (one SQLite MLflow registry) serves the module; versions are registered
straight from a directory, no training.
"""

import logging
import operator
import re
from collections.abc import Callable, Iterator
from typing import Any, Literal

import dagster as dg
import numpy as np
import pandas as pd
import pydantic
import pytest
import yaml  # type: ignore[import-untyped]
from gate_samples import scores
from registry_setup import RegistryHome

from assets.config import GateConfig, MonitoringConfig, PushPolicyConfig
from assets.monitoring import UX_CHECKS
from assets.registry import promotion_gate
from assets.registry_status import (
    REGISTRY_MODELS,
    REGISTRY_STATUS,
    mlflow_version_url,
    registry_status_metadata,
)
from fitpulse_orchestration.definitions import build_definitions
from fitpulse_orchestration.evaluation.home_feed import HomeFeedEvaluation
from fitpulse_orchestration.settings import ProjectHome
from jobs import registry_integrity_job
from jobs.registry import (
    PromoteConfig,
    ReviewConfig,
    RollbackConfig,
    promote_champion_job,
    review_model_job,
    rollback_champion_job,
)
from jobs.tags import (
    ACTOR_TAG,
    DECISION_TAG,
    MODEL_TAG,
    OPERATOR_TAG,
    RESTORED_VERSION_TAG,
    REVIEWER_TAG,
    VERSION_TAG,
)
from model_registry.client import RegisteredVersion
from model_registry.gate import CHECK_NAMES, GateDecision, decide_promotion
from model_registry.promotion import CHAMPION, REVIEW_STATUS
from model_registry.reviewers import add_reviewer, approval_code
from sensors import build_promotion_sensor, describe_decision

pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")

THRESHOLD = re.compile(r"Threshold: (\w+) (>=|<=|==|>) (-?[0-9.e+-]+)\.")
"""The closing clause of a gate or monitor check's description."""
COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
}


class Registry(RegistryHome):
    """The module's registry, with reviewer ``ada`` on its roster."""

    def __init__(self, home: ProjectHome) -> None:
        super().__init__(home, "readable-model")
        self.ada_key = add_reviewer(home.reviewers_file, "ada")

    def gate_passed(self, model: str) -> str:
        return self.add_version(model, _decision(0.6, 0))

    def code(self, model: str, version: str, decision: str = "approve") -> str:
        return approval_code(self.ada_key, "ada", model, version, decision)

    def review_config(self, model: str, version: str) -> dict[str, Any]:
        """``review_model_job``'s config: ada approves ``version``."""
        return {
            "version": int(version),
            "reviewer": "ada",
            "approval_code": self.code(model, version),
            "model": model,
        }


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """One home per module: creating the SQLite registry runs every MLflow migration."""
    return Registry(ProjectHome(tmp_path_factory.mktemp("readable")).create())


@pytest.fixture(scope="module")
def defs(registry: Registry) -> dg.Definitions:
    return build_definitions(registry.home)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _decision(ndcg: float, violations: int) -> GateDecision:
    """The gate under GateConfig's defaults: candidate at ``ndcg`` vs popularity at 0.3."""
    candidate = scores("candidate", ndcg, violations=violations)
    return decide_promotion(candidate, scores("popularity", 0.3), GateConfig().to_policy())


def _check_descriptions(defs: dg.Definitions) -> dict[tuple[str, str], str | None]:
    graph = defs.resolve_asset_graph()
    return {
        (key.asset_key.to_user_string(), key.name): graph.get_check_spec(key).description
        for key in graph.asset_check_keys
    }


def _threshold(description: str) -> tuple[str, str, float]:
    match = THRESHOLD.search(description)
    assert match is not None, description
    return match.group(1), match.group(2), float(match.group(3))


# -- descriptions ------------------------------------------------------------------------------


def test_every_sensor_and_schedule_has_a_description(defs: dg.Definitions) -> None:
    repo = defs.get_repository_def()
    described = {s.name: s.description for s in [*repo.sensor_defs, *repo.schedule_defs]}

    assert len(described) == 10
    assert [name for name, text in described.items() if not (text or "").strip()] == []


def test_every_asset_check_has_a_description(defs: dg.Definitions) -> None:
    descriptions = _check_descriptions(defs)

    assert {("promotion_gate", n) for n in CHECK_NAMES} <= set(descriptions)
    assert {("ux_monitors", n) for n in UX_CHECKS} <= set(descriptions)
    assert [key for key, text in descriptions.items() if not (text or "").strip()] == []


def test_gate_check_descriptions_state_the_default_threshold(defs: dg.Definitions) -> None:
    descriptions = _check_descriptions(defs)
    passed, failed = _decision(0.6, 0), _decision(0.6, 3)

    for name in CHECK_NAMES:
        description = descriptions[("promotion_gate", name)] or ""
        subject, op, threshold = _threshold(description)
        assert subject == "value"
        for decision in (passed, failed):
            check = decision.check(name)
            # The number is the one the gate applies, and the stated comparison is its verdict.
            assert threshold == pytest.approx(check.threshold), name
            assert COMPARE[op](check.value, check.threshold) == check.passed, name
    assert not failed.check("beginner_safety").passed
    assert "Threshold: value <= 50." in (descriptions[("promotion_gate", "scoring_latency")] or "")
    assert "Threshold: value >= -0.01." in (descriptions[("promotion_gate", "cold_slice")] or "")


def test_push_gate_check_descriptions_state_the_default_threshold(defs: dg.Definitions) -> None:
    descriptions = _check_descriptions(defs)
    gate = PushPolicyConfig().to_gate()
    pushes = descriptions[("push_policy_evaluation", "pushes_per_user_week")] or ""
    disables = descriptions[("push_policy_evaluation", "disables_per_user_week")] or ""

    assert _threshold(pushes) == ("value", "<=", gate.max_pushes_per_user_week)
    # Relative to the logged policy's estimate: the result's threshold holds the product.
    assert disables.endswith(f"Threshold: value <= {gate.max_disable_ratio:g} x logged.")


def test_monitor_check_descriptions_state_the_default_threshold(defs: dg.Definitions) -> None:
    descriptions = _check_descriptions(defs)
    limits = MonitoringConfig().ux_thresholds()
    expected = {
        "empty_feed_rate": limits.max_empty_feed_rate,
        "fallback_rate": limits.max_fallback_rate,
        "beginner_violations_served": limits.max_beginner_violations,
        "notification_load": limits.max_notifications_per_user_week_p95,
    }

    assert set(expected) == set(UX_CHECKS)
    for name, limit in expected.items():
        assert _threshold(descriptions[("ux_monitors", name)] or "") == ("value", "<=", limit)
    skew = descriptions[("training_serving_skew", "skew_within_threshold")] or ""
    assert _threshold(skew) == ("worst_mismatch_rate", "<=", MonitoringConfig().max_skew_rate)


# -- the gate's check results ------------------------------------------------------------------


def _evaluation(users: int = 10) -> HomeFeedEvaluation:
    """A candidate clearly above popularity on ``users`` users, two of them cold."""
    rows = [
        {"model": model, "user_id": f"u{i}", "cold": i < 2, "ndcg_at_10": ndcg + 0.01 * (i % 3)}
        for model, ndcg in (("candidate", 0.6), ("popularity_guarded", 0.3))
        for i in range(users)
    ]
    table = pd.DataFrame(
        [
            {
                "model": "candidate",
                "slice": "all",
                "coverage": 0.5,
                "beginner_safety_violations": 0,
                "scoring_p99_ms": 5.0,
            },
            {
                "model": "popularity_guarded",
                "slice": "all",
                "coverage": 0.5,
                "beginner_safety_violations": 0,
                "scoring_p99_ms": np.nan,
            },
        ]
    )
    # The gate reads the table and the per-user scores only, never the feeds.
    return HomeFeedEvaluation(table=table, per_user=pd.DataFrame(rows), feeds=None, protocol="t")


def test_gate_check_results_carry_value_threshold_and_rule(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.registered(model)
    registered = RegisteredVersion(name=model, version=version, run_id="", model_uri="", tags={})
    config = GateConfig(latency_budget_ms=4.0)

    events = list(
        promotion_gate(
            config=config,
            registered_home_ranker=registered,
            home_feed_evaluation=_evaluation(),
            model_registry=registry.resource,
        )
    )

    results = {e.check_name: e for e in events if isinstance(e, dg.AssetCheckResult)}
    assert set(results) == set(CHECK_NAMES)
    latency = results["scoring_latency"]
    assert not latency.passed
    assert latency.metadata["value"].value == pytest.approx(5.0)
    # The threshold applied is the run's config, and the rule text says so too.
    assert latency.metadata["threshold"].value == pytest.approx(4.0)
    assert "Threshold: value <= 4." in str(latency.metadata["rule"].value)
    for name, result in results.items():
        assert {"value", "threshold", "rule", "baseline", "detail"} <= set(result.metadata), name
        _, op, threshold = _threshold(str(result.metadata["rule"].value))
        value = float(result.metadata["value"].value)
        assert threshold == pytest.approx(result.metadata["threshold"].value), name
        assert COMPARE[op](value, threshold) == result.passed, name
    assert [name for name, r in results.items() if not r.passed] == ["scoring_latency"]


def _gate_output(registry: Registry, latency_budget_ms: float) -> tuple[str, dg.Output[Any]]:
    model = registry.new_model()
    version = registry.registered(model)
    registered = RegisteredVersion(name=model, version=version, run_id="", model_uri="", tags={})
    events = promotion_gate(
        config=GateConfig(latency_budget_ms=latency_budget_ms),
        registered_home_ranker=registered,
        home_feed_evaluation=_evaluation(),
        model_registry=registry.resource,
    )
    (output,) = [e for e in events if isinstance(e, dg.Output)]
    return version, output


def test_a_passed_gates_next_step_is_the_review_launchpad_config(registry: Registry) -> None:
    version, passed = _gate_output(registry, latency_budget_ms=1e6)
    _, failed = _gate_output(registry, latency_budget_ms=4.0)

    text = str(passed.metadata["next_step"].value)
    (block,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
    run_config = yaml.safe_load(block)
    assert passed.value.passed
    assert "launch **review_model_job** from the Launchpad" in text
    assert dg.validate_run_config(review_model_job, run_config)
    assert run_config["ops"]["review_model_version"]["config"]["version"] == int(version)
    assert failed.metadata["next_step"].value == (
        "none: a failed candidate can never become champion"
    )


# -- sensor decisions --------------------------------------------------------------------------


class Lines(logging.Handler):
    """Keeps every message logged on the sensor context's logger."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _tick(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    cursor: str | None = None,
) -> tuple["dg.SensorExecutionData", list[str]]:
    lines = Lines()
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        context.log.addHandler(lines)
        data = sensor.evaluate_tick(context)
    return data, lines.messages


@pytest.mark.parametrize(
    ("sensor_name", "reason"),
    [
        ("ingestion_job_on_landing", "no landing day is new or changed"),
        ("training_job_on_drift", "no new drift report"),
        (
            "promote_champion_job_on_approval",
            "fitpulse-home-ranker: no approved challenger waiting",
        ),
        ("catalog_sensor", "no new catalog files"),
        ("erasure_job_on_request", "no pending erasure requests"),
        ("canary_rollout_sensor", "no canary rollout is running"),
    ],
)
def test_an_idle_tick_logs_what_it_saw_and_why_it_skipped(
    defs: dg.Definitions, instance: dg.DagsterInstance, sensor_name: str, reason: str
) -> None:
    sensor = defs.resolve_sensor_def(sensor_name)
    resources = {key: defs.resources[key] for key in ("object_store", "model_registry")}

    data, messages = _tick(sensor, instance, resources)

    assert data.run_requests == []
    assert data.skip_message == reason
    decisions = [m for m in messages if m.startswith("saw ")]
    assert len(decisions) == 1, messages
    assert decisions[0].endswith(f"; skipped because {reason}")


def test_a_promotion_tick_logs_the_run_it_requested(
    registry: Registry, instance: dg.DagsterInstance
) -> None:
    model = registry.new_model()
    version = registry.gate_passed(model)
    assert registry.promotion.approve(model, version, "ada", "fine")
    sensor = build_promotion_sensor(promote_champion_job, registry_integrity_job, model=model)

    data, messages = _tick(sensor, instance, {"model_registry": registry.resource})

    (request,) = data.run_requests
    assert request.run_config["ops"]["promote_champion"]["config"]["version"] == int(version)
    assert (
        f"saw {model}: aliases as audited, approved challenger {version}, last requested "
        f"promotion none; run requested for promote_champion_job (run key "
        f"promote:{model}:{version})"
    ) in messages


def test_a_decision_names_a_few_requests_and_counts_the_rest() -> None:
    requests = [dg.RunRequest(run_key=f"d{i}", partition_key=f"2026-01-0{i}") for i in range(1, 8)]

    line = describe_decision("7 days", dg.SensorResult(run_requests=requests), "ingestion_job")

    assert line.startswith(
        "saw 7 days; runs requested for ingestion_job partition 2026-01-01 (run key d1); "
    )
    assert line.endswith("ingestion_job partition 2026-01-05 (run key d5) and 2 more")


# -- the registry jobs' configs ----------------------------------------------------------------


def _scaffold(config_type: Any) -> Any:
    """What the launchpad's "Scaffold missing config" writes for a config type.

    A transcription of dagster-webserver 1.13.27's scaffold (the UI bundle's switch over
    ``EnumConfigType``, ``ScalarUnionConfigType`` and the rest): required fields only; an enum
    becomes its values joined by ``|``; a scalar its zero value.
    """
    # ConfigTypeKind is not exported by dagster: compare its member names.
    kind = config_type.kind.name
    if kind == "SELECTOR":
        return "<selector>"
    if kind in ("STRICT_SHAPE", "SHAPE", "PERMISSIVE_SHAPE"):
        return {
            name: _scaffold(field.config_type)
            for name, field in config_type.fields.items()
            if field.is_required
        }
    if kind == "ENUM":
        return "|".join(v.config_value for v in config_type.enum_values)
    if kind == "SCALAR_UNION":
        return _scaffold(config_type.scalar_type)
    if kind == "NONEABLE":
        return _scaffold(config_type.inner_type)
    if kind == "ARRAY":
        return []
    if kind == "MAP":
        return {}
    if kind == "ANY":
        return "AnyType"
    return {"String": "", "Int": 0, "Float": 0.0, "Bool": True}[config_type.given_name]


def _scaffolded_run_config(job: dg.JobDefinition, op: str) -> dict[str, Any]:
    schema = job.graph.node_named(op).definition.config_schema.as_field().config_type
    return {"ops": {op: {"config": _scaffold(schema)}}}


@pytest.mark.parametrize(
    ("job", "op"),
    [
        (review_model_job, "review_model_version"),
        (promote_champion_job, "promote_champion"),
        (rollback_champion_job, "rollback_champion"),
    ],
)
def test_the_launchpad_scaffold_is_a_valid_config(job: dg.JobDefinition, op: str) -> None:
    run_config = _scaffolded_run_config(job, op)

    assert dg.validate_run_config(job, run_config)
    assert "|" not in str(run_config)


class RequiredDecision(dg.Config):
    """``ReviewConfig.decision`` as it was: a Literal without a default."""

    decision: Literal["approve", "reject"]


@dg.op
def decide(config: RequiredDecision) -> None:
    del config


@dg.job
def decide_job() -> None:
    decide()


def test_a_required_literal_would_scaffold_to_an_invalid_value() -> None:
    """Why ``decision`` has a default: the scaffold of a required Literal is rejected."""
    run_config = _scaffolded_run_config(decide_job, "decide")

    assert run_config == {"ops": {"decide": {"config": {"decision": "approve|reject"}}}}
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(decide_job, run_config)


def test_every_registry_config_field_is_described() -> None:
    for config in (ReviewConfig, PromoteConfig, RollbackConfig):
        undescribed = [n for n, f in config.model_fields.items() if not f.description]
        assert undescribed == [], config.__name__


@pytest.mark.parametrize("version", [0, -1, "1", 1.5, "three"])
def test_a_version_must_be_a_positive_int(version: object) -> None:
    fields = {"reviewer": "ada", "approval_code": "x"}

    with pytest.raises(pydantic.ValidationError):
        ReviewConfig(version=version, **fields)  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError):
        PromoteConfig(version=version)  # type: ignore[arg-type]
    assert ReviewConfig(version=3, **fields).decision == "approve"


@pytest.mark.parametrize("version", ["1", 1.5])
def test_the_launchpad_refuses_a_version_that_is_not_an_int(version: object) -> None:
    config = {"version": version, "reviewer": "ada", "approval_code": "x"}

    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(
            review_model_job, {"ops": {"review_model_version": {"config": config}}}
        )


def test_a_review_of_version_zero_fails_before_it_reaches_the_registry(
    registry: Registry, instance: dg.DagsterInstance
) -> None:
    config = {"version": 0, "reviewer": "ada", "approval_code": "x"}

    result = review_model_job.execute_in_process(
        run_config={"ops": {"review_model_version": {"config": config}}},
        resources={"model_registry": registry.resource},
        instance=instance,
        raise_on_error=False,
    )

    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    assert VERSION_TAG not in run.tags


# -- the registry jobs' run tags ---------------------------------------------------------------


def _run(
    job: dg.JobDefinition,
    op: str,
    config: dict[str, Any],
    registry: Registry,
    instance: dg.DagsterInstance,
) -> tuple[dg.ExecuteInProcessResult, dict[str, str]]:
    result = job.execute_in_process(
        run_config={"ops": {op: {"config": config}}},
        resources={"model_registry": registry.resource},
        instance=instance,
        raise_on_error=False,
    )
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return result, dict(run.tags)


def test_a_review_run_is_tagged_and_records_a_fresh_registry_status(
    registry: Registry, instance: dg.DagsterInstance
) -> None:
    model = registry.new_model()
    version = registry.gate_passed(model)
    config = registry.review_config(model, version)

    result, tags = _run(review_model_job, "review_model_version", config, registry, instance)

    (status,) = result.asset_materializations_for_node("review_model_version")
    assert result.success
    assert registry.promotion.client.version(model, version).tags[REVIEW_STATUS] == "approved"
    # The run records a fresh registry_status (every governed model, and what waits).
    assert status.asset_key == REGISTRY_STATUS
    assert {f"{m} versions" for m in REGISTRY_MODELS} <= set(status.metadata)
    assert "waiting" in status.metadata
    assert {k: tags[k] for k in (MODEL_TAG, VERSION_TAG, DECISION_TAG, REVIEWER_TAG)} == {
        MODEL_TAG: model,
        VERSION_TAG: version,
        DECISION_TAG: "approve",
        REVIEWER_TAG: "ada",
    }


def test_a_refused_review_run_is_tagged_too(
    registry: Registry, instance: dg.DagsterInstance
) -> None:
    model = registry.new_model()
    version = registry.gate_passed(model)
    config = {
        "version": int(version),
        "decision": "reject",
        "reviewer": "ada",
        # A code for approving: useless for a rejection.
        "approval_code": registry.code(model, version, "approve"),
        "model": model,
    }

    result, tags = _run(review_model_job, "review_model_version", config, registry, instance)

    assert not result.success
    assert REVIEW_STATUS not in registry.promotion.client.version(model, version).tags
    assert (tags[VERSION_TAG], tags[DECISION_TAG], tags[REVIEWER_TAG]) == (version, "reject", "ada")


def test_promote_and_rollback_runs_are_tagged(
    registry: Registry, instance: dg.DagsterInstance
) -> None:
    model = registry.new_model()
    promoted: list[dict[str, str]] = []
    versions = []
    for _ in range(2):
        version = registry.gate_passed(model)
        assert registry.promotion.approve(model, version, "ada", "fine")
        config = {"version": int(version), "model": model}
        result, tags = _run(promote_champion_job, "promote_champion", config, registry, instance)
        assert result.success
        promoted.append(tags)
        versions.append(version)
    first, second = versions

    result, rollback = _run(
        rollback_champion_job,
        "rollback_champion",
        {"operator": "oncall", "note": "drill", "model": model},
        registry,
        instance,
    )

    assert result.success
    assert registry.promotion.client.alias_version(model, CHAMPION) == first
    assert [(t[MODEL_TAG], t[VERSION_TAG], t[ACTOR_TAG]) for t in promoted] == [
        (model, first, "promote_champion_job"),
        (model, second, "promote_champion_job"),
    ]
    assert (rollback[OPERATOR_TAG], rollback[VERSION_TAG], rollback[RESTORED_VERSION_TAG]) == (
        "oncall",
        second,
        first,
    )


def test_the_sensor_run_config_is_a_valid_promote_config(registry: Registry) -> None:
    model = registry.new_model()
    version = registry.gate_passed(model)
    assert registry.promotion.approve(model, version, "ada", "fine")
    sensor = build_promotion_sensor(promote_champion_job, registry_integrity_job, model=model)
    with dg.build_sensor_context(resources={"model_registry": registry.resource}) as context:
        (request,) = sensor.evaluate_tick(context).run_requests

    assert dg.validate_run_config(promote_champion_job, request.run_config)
    assert request.tags[VERSION_TAG] == version


# -- registry status ---------------------------------------------------------------------------


def test_registry_status_shows_the_champion_and_what_waits_for_a_person(
    registry: Registry,
) -> None:
    model = registry.new_model()
    reviewed = registry.gate_passed(model)
    waiting = registry.gate_passed(model)
    failed = registry.registered(model)
    registry.promotion.record_gate(model, failed, _decision(0.6, 3), "test")
    registry.promotion.approve(model, reviewed, "ada", "beats popularity")

    before = registry_status_metadata(registry.promotion, [model])
    registry.promotion.promote(model, reviewed, "test")
    after = registry_status_metadata(registry.promotion, [model])

    assert before[f"{model} champion"].value == "none"
    assert str(before["waiting"].value).splitlines() == [
        f"- {model} version {waiting}: review (gate passed; launch review_model_job)",
        f"- {model} version {reviewed}: promotion (approved; promote_champion_job_on_approval "
        "or promote_champion_job)",
    ]
    assert after[f"{model} champion"].value == reviewed
    assert after[f"{model} champion page"].value == mlflow_version_url(model, reviewed)
    assert after["waiting_count"].value == 1
    table = str(after[f"{model} versions"].value)
    assert f"| [{reviewed}]({mlflow_version_url(model, reviewed)}) | champion" in table
    assert len(table.splitlines()) == 2 + 3
