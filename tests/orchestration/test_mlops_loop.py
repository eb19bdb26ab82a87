"""The MLOps loop end to end, in process, on a tiny world with a shift in its last days.

Ingest the days before the shift, train version 1 (gated against popularity), approve it from
the review job, let the promotion sensor make it champion; ingest the shift, monitor, let the
drift sensor request one retrain, train version 2 (gated against the champion), approve it,
promote it, roll back. Every step must be in the audit log. One module-scoped run is shared.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from conftest import fix_pseudonym_key

from fitpulse_orchestration.console import default_reports_url
from fitpulse_orchestration.definitions import build_definitions
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.storage.asset_values import load_asset_value
from fitpulse_orchestration.storage.audit import AuditLog, load_audit_key
from fitpulse_orchestration.world.generator import generate_world
from fitpulse_orchestration.world.params import ShiftParams, world_params
from model_registry.client import HOME_RANKER_MODEL, RegistryClient
from model_registry.promotion import (
    CHALLENGER,
    CHAMPION,
    ModelPromotion,
    PromotionError,
)
from model_registry.reviewers import add_reviewer, approval_code

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::dagster.BetaWarning")]

SHIFT_DAYS = 4
SPLIT = {"eval_days": 3, "ranker_days": 4}
GATE = {"confidence": 0.8, "cold_ndcg_tolerance": 0.08}
"""The tiny world's held-out window has ~85 users: at 95% the interval of version 1's lift
over popularity (+0.055) reaches down to about 0 and flips with run-to-run noise. This test is
about the loop's mechanics (the gate's statistics have their unit tests), so it runs the policy
at 80%, as an operator would configure it from the launchpad. The cold slice has 24 users, on
whom popularity scores NDCG@10 0.094 and version 1 between 0.033 and 0.049 from run to run
(ALS and the candidate sources built on it are not bit-reproducible): the default tolerance
of 0.01 fails version 1 in some runs and not others, so the test allows 0.08."""
PERMISSIVE_GATE = {"ndcg_margin": -1.0, "cold_ndcg_tolerance": 1.0, "coverage_tolerance": 1.0}
"""The retrained version's gate, as an operator could set it from the launchpad: whether version
2 beats version 1 on ~85 users is noise, and this module tests what the loop does with a passed
gate (approval, promotion, rollback), so every run takes that path. A failed gate's refusal is
tested in ``tests/unit/model_registry/test_promotion.py``."""


@dataclass
class Loop:
    """Everything the module's run produced, in order."""

    home: ProjectHome
    defs: dg.Definitions
    instance: dg.DagsterInstance
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def promotion(self) -> ModelPromotion:
        return ModelPromotion(
            RegistryClient(self.home.mlflow_tracking_uri),
            AuditLog(LocalObjectStore(self.home.store), load_audit_key(self.home.audit_key_file)),
        )

    def job(self, name: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(name).execute_in_process(
            instance=self.instance, raise_on_error=False, **kwargs
        )

    def train(self, gate: dict[str, float] = GATE, **kwargs: Any) -> dg.ExecuteInProcessResult:
        return self.job(
            "training_job",
            run_config={
                "ops": {
                    "training_snapshot": {"config": SPLIT},
                    "promotion_gate": {"config": gate},
                }
            },
            **kwargs,
        )

    def tick(self, sensor_name: str, cursor: str | None) -> Any:
        sensor = self.defs.resolve_sensor_def(sensor_name)
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            definitions=self.defs,
            resources={"model_registry": self.defs.resources["model_registry"]},
        ) as ctx:
            return sensor.evaluate_tick(ctx)

    def alias(self, name: str) -> str | None:
        return RegistryClient(self.home.mlflow_tracking_uri).alias_version(HOME_RANKER_MODEL, name)


def _drift(result: dg.ExecuteInProcessResult, node: str = "feature_drift_report") -> dict[str, Any]:
    (mat,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in mat.metadata.items()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Loop:
    root = tmp_path_factory.mktemp("loop")
    home = ProjectHome(root / "home").create()
    # A fixed key, so every run is the same run. Not the other modules' key: under that one the
    # retrained candidate (the blend validation chose) scores NDCG@10 0.0422 on the shifted
    # held-out window against guarded popularity's 0.0489, candidate_beats_popularity blocks it
    # and no version 2 exists, while this module tests what the loop does with one. Under this
    # key it scores 0.0570 against 0.0489. In both the ranker scored more on the shifted window
    # (0.0703, 0.0741) after losing or tying on validation: docs/pipeline.md, "after a shift".
    fix_pseudonym_key(home, "1005" * 16)
    store = LocalObjectStore(home.store)
    params = world_params("tiny", days=18, shift=ShiftParams(days=SHIFT_DAYS))
    summary = generate_world(params, store)
    shift_start = params.end_date - dt.timedelta(days=SHIFT_DAYS - 1)
    before = [d.isoformat() for d in summary.landed_days if d < shift_start]
    after = [d.isoformat() for d in summary.landed_days if d >= shift_start]
    defs = build_definitions(home, "local", before[0])
    loop = Loop(home, defs, dg.DagsterInstance.ephemeral())
    r = loop.results
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        r["ingest_before"] = [loop.job("ingestion_job", partition_key=d) for d in before]
        r["train_1"] = loop.train()
        r["gate_1"] = load_asset_value(store, "promotion_gate")
        ada = add_reviewer(home.reviewers_file, "ada")
        r["review_1"] = loop.job(
            "review_model_job",
            run_config={
                "ops": {
                    "review_model_version": {
                        "config": {
                            "version": 1,
                            "decision": "approve",
                            "reviewer": "ada",
                            "approval_code": approval_code(
                                ada, "ada", HOME_RANKER_MODEL, "1", "approve"
                            ),
                            "note": "first model, beats popularity",
                        }
                    }
                }
            },
        )
        r["promote_tick_1"] = loop.tick("promote_champion_job_on_approval", None)
        r["promote_tick_1_again"] = loop.tick(
            "promote_champion_job_on_approval", r["promote_tick_1"].cursor
        )
        (request,) = r["promote_tick_1"].run_requests
        r["promote_1"] = loop.job("promote_champion_job", run_config=request.run_config)
        r["promote_tick_1_after"] = loop.tick("promote_champion_job_on_approval", None)
        r["champion_after_1"] = loop.alias(CHAMPION)

        r["monitor_before"] = loop.job("monitoring_job")
        r["drift_tick_before"] = loop.tick("training_job_on_drift", None)

        r["ingest_after"] = [loop.job("ingestion_job", partition_key=d) for d in after]
        r["monitor_after"] = loop.job("monitoring_job")
        r["drift_tick_after"] = loop.tick("training_job_on_drift", r["drift_tick_before"].cursor)
        r["drift_tick_repeat"] = loop.tick("training_job_on_drift", r["drift_tick_after"].cursor)
        r["monitor_again"] = loop.job("monitoring_job")
        r["drift_tick_same_episode"] = loop.tick(
            "training_job_on_drift", r["drift_tick_repeat"].cursor
        )
        (retrain,) = r["drift_tick_after"].run_requests
        r["train_2"] = loop.train(gate=PERMISSIVE_GATE, tags=retrain.tags)
        r["gate_2"] = load_asset_value(store, "promotion_gate")
        loop.promotion.approve(HOME_RANKER_MODEL, "2", "grace", "retrained on the shift")
        r["promote_tick_2"] = loop.tick(
            "promote_champion_job_on_approval", r["promote_tick_1"].cursor
        )
        (request,) = r["promote_tick_2"].run_requests
        r["promote_2"] = loop.job("promote_champion_job", run_config=request.run_config)
        r["champion_after_2"] = loop.alias(CHAMPION)
        r["rollback"] = loop.job(
            "rollback_champion_job",
            run_config={
                "ops": {
                    "rollback_champion": {
                        "config": {"operator": "oncall", "note": "feed CTR dropped"}
                    }
                }
            },
        )
        r["champion_after_rollback"] = loop.alias(CHAMPION)
        # Someone moves the champion alias in MLflow's UI to version 2.
        r["integrity_clean"] = loop.job("registry_integrity_job")
        r["champion_before_tamper"] = loop.alias(CHAMPION)
        RegistryClient(home.mlflow_tracking_uri).set_alias(HOME_RANKER_MODEL, CHAMPION, "2")
        r["tamper_tick"] = loop.tick("promote_champion_job_on_approval", None)
        r["champion_after_tamper"] = loop.alias(CHAMPION)
        r["integrity_after_tamper"] = loop.job("registry_integrity_job")
    return loop


def test_every_run_succeeds(loop: Loop) -> None:
    r = loop.results
    runs = [*r["ingest_before"], *r["ingest_after"], r["train_1"], r["train_2"], r["review_1"]]
    runs += [r["promote_1"], r["monitor_before"], r["monitor_after"], r["monitor_again"]]
    assert all(run.success for run in runs)


def test_first_version_is_gated_against_popularity_and_passes(loop: Loop) -> None:
    gate = loop.results["gate_1"]

    assert gate.baseline.startswith("popularity")
    assert gate.passed, gate.summary()


def test_approval_leads_to_exactly_one_promotion(loop: Loop) -> None:
    r = loop.results

    assert len(r["promote_tick_1"].run_requests) == 1
    assert r["promote_tick_1"].run_requests[0].run_key == f"promote:{HOME_RANKER_MODEL}:1"
    assert r["promote_tick_1_again"].run_requests == []
    assert r["promote_tick_1_after"].run_requests == []
    assert r["champion_after_1"] == "1"


def test_no_drift_before_the_shift(loop: Loop) -> None:
    r = loop.results
    before = _drift(r["monitor_before"])

    assert before["dataset_drift"] is False, before["drifted_columns"]
    assert before["reference_version"] == "1"
    assert r["drift_tick_before"].run_requests == []


def test_predictions_drift_only_after_the_shift(loop: Loop) -> None:
    r = loop.results

    # Right after training, monitoring replays the very traffic the reference was taken on.
    assert _drift(r["monitor_before"], "prediction_drift_report")["drift_share"] == 0.0
    assert _drift(r["monitor_after"], "prediction_drift_report")["dataset_drift"] is True


def test_drift_over_time_plots_every_report_so_far(loop: Loop) -> None:
    r = loop.results
    runs = [r["monitor_before"], r["monitor_after"], r["monitor_again"]]
    shares = [_drift(run)["drift_share"] for run in runs]
    latest = _drift(r["monitor_again"])

    assert [point["drift_share"] for point in latest["drift_history"]] == shares
    assert [point["drift"] for point in latest["drift_history"]] == [
        _drift(run)["dataset_drift"] for run in runs
    ]
    assert Path(latest["drift_over_time"]).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert (
        latest["drift_over_time_image"] == f"![drift_over_time]({latest['drift_over_time_link']})"
    )


def test_skew_and_ux_monitors_run_their_checks(loop: Loop) -> None:
    before, after = _checks(loop.results["monitor_before"]), _checks(loop.results["monitor_after"])

    expected = {
        "skew_within_threshold",
        "empty_feed_rate",
        "fallback_rate",
        "beginner_violations_served",
        "notification_load",
    }
    assert set(before) == set(after) == expected
    assert before["beginner_violations_served"]
    assert after["beginner_violations_served"]
    (ux,) = loop.results["monitor_after"].asset_materializations_for_node("ux_monitors")
    (ux_before,) = loop.results["monitor_before"].asset_materializations_for_node("ux_monitors")
    # The shift's new users are unknown to version 1's ALS: more feeds fall back to popularity.
    assert ux.metadata["fallback_rate"].value > ux_before.metadata["fallback_rate"].value


def test_the_shift_is_detected_and_triggers_one_retrain(loop: Loop) -> None:
    r = loop.results
    after = _drift(r["monitor_after"])

    assert after["dataset_drift"] is True
    assert Path(after["html_report"]).is_file()
    assert Path(after["json_report"]).is_file()
    # The link the console's report server answers: the same file under the store's reports/.
    served = Path(after["html_report"]).relative_to(loop.home.store / "reports")
    assert after["html_report_link"] == f"{default_reports_url()}/{served.as_posix()}"
    assert len(r["drift_tick_after"].run_requests) == 1
    assert r["drift_tick_repeat"].run_requests == []
    assert _drift(r["monitor_again"])["dataset_drift"] is True
    assert r["drift_tick_same_episode"].run_requests == []
    assert r["train_2"].dagster_run.tags["fitpulse/trigger"] == "feature_drift"


def test_second_version_is_gated_against_the_champion(loop: Loop) -> None:
    gate = loop.results["gate_2"]

    assert gate.baseline == "champion (version 1)"
    assert {c.name for c in gate.checks} == {
        "ndcg_lift",
        "cold_slice",
        "coverage",
        "beginner_safety",
        "scoring_latency",
    }


def test_promotion_then_rollback_restores_the_previous_champion(loop: Loop) -> None:
    r = loop.results

    assert r["gate_2"].passed
    assert r["promote_2"].success
    assert r["champion_after_2"] == "2"
    assert r["rollback"].success
    assert r["champion_after_rollback"] == "1"
    assert loop.alias(CHALLENGER) is None
    with pytest.raises(PromotionError, match="rolled back"):
        loop.promotion.promote(HOME_RANKER_MODEL, "2", "someone")


def test_audit_log_holds_every_step(loop: Loop) -> None:
    entries = loop.promotion.audit.entries(HOME_RANKER_MODEL)
    steps = [(e.action, e.version) for e in entries]

    expected = [
        ("registered", "1"),
        ("gate_passed", "1"),
        ("approved", "1"),
        ("promoted", "1"),
        ("registered", "2"),
        ("gate_passed", "2"),
        ("approved", "2"),
        ("promoted", "2"),
        ("rolled_back", "2"),
    ]
    # The module ends by moving the champion alias to version 2 outside the platform.
    expected += [("alias_restored", "2")]
    assert steps == expected
    assert loop.promotion.audit.verify(HOME_RANKER_MODEL) == entries
    approved = next(e for e in entries if e.action == "approved")
    assert approved.actor == "ada"
    assert approved.note == "first model, beats popularity"
    assert approved.details["gate_seen"].startswith("passed vs popularity")


def test_a_champion_alias_moved_outside_the_platform_is_restored_and_alerted(loop: Loop) -> None:
    r = loop.results

    assert r["champion_before_tamper"] == "1"
    assert _checks(r["integrity_clean"]) == {"registry_audit_intact": True}
    assert r["champion_after_tamper"] == "1"
    assert [q.job_name for q in r["tamper_tick"].run_requests] == ["registry_integrity_job"]
    assert _checks(r["integrity_after_tamper"]) == {"registry_audit_intact": False}
    actions = [e.action for e in loop.promotion.audit.verify(HOME_RANKER_MODEL)]
    assert actions[-1] == "alias_restored"
