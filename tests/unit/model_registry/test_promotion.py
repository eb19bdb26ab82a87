from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from audit_keys import AUDIT_KEY
from gate_samples import FAILED, PASSED
from mlflow.tracking import MlflowClient

from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.storage.audit import AuditLog
from model_registry.client import RegistryClient
from model_registry.gate import GateDecision
from model_registry.ledger import artifact_digest, evaluation_digest
from model_registry.promotion import (
    CANDIDATE,
    CHALLENGER,
    CHAMPION,
    GATE_DECISION,
    GATE_STATUS,
    GATE_SUMMARY,
    PROMOTION_PREVIOUS,
    PROMOTION_STATUS,
    REVIEW_GATE_SEEN,
    REVIEW_NOTE,
    REVIEW_REVIEWER,
    REVIEW_STATUS,
    ModelPromotion,
    PromotionError,
    format_status,
)

_MODEL_IDS = itertools.count(1)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One SQLite registry per module (creating it runs every migration, which is slow).

    The global tracking URI (and the env var MLflow mirrors it to) is restored afterwards.
    """
    root = tmp_path_factory.mktemp("mlflow-promotion")
    uri = f"sqlite:///{root}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()
            yield uri
        finally:
            mlflow.set_tracking_uri(previous)


@dataclass
class Registry:
    """One fresh registered model in the module's registry, with its workflow and audit log."""

    model: str
    uri: str
    root: Path
    promotion: ModelPromotion
    audit: AuditLog

    def new_version(self) -> str:
        """Register a new (artifact-less) version and return its number."""
        client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        source = self.root / f"source-{len(list(self.root.glob('source-*')))}"
        source.mkdir(parents=True)
        created = client.create_model_version(self.model, source=source.as_uri(), run_id=None)
        return str(created.version)

    def tags(self, version: str) -> dict[str, str]:
        return self.promotion.client.version(self.model, version).tags

    def alias(self, alias: str) -> str | None:
        return self.promotion.client.alias_version(self.model, alias)

    def actions(self) -> list[str]:
        return [e.action for e in self.audit.entries(self.model)]

    def gated(self, decision: GateDecision = PASSED) -> str:
        """A new version, marked candidate and gated with ``decision``."""
        version = self.new_version()
        self.promotion.mark_candidate(self.model, version, "training-job")
        self.promotion.record_gate(self.model, version, decision, "training-job")
        return version

    def champion(self) -> str:
        """A new version taken through gate, approval and promotion."""
        version = self.gated()
        assert self.promotion.approve(self.model, version, "alice", "ok")
        assert self.promotion.promote(self.model, version, "sensor")
        return version


@pytest.fixture
def reg(tracking_uri: str, tmp_path: Path, request: pytest.FixtureRequest) -> Registry:
    # a distinct model per test (parametrized ids can sanitize to the same text)
    model = f"m{next(_MODEL_IDS)}-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.originalname)
    MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).create_registered_model(
        model
    )
    audit = AuditLog(LocalObjectStore(tmp_path / "store"), AUDIT_KEY)
    promotion = ModelPromotion(RegistryClient(tracking_uri), audit)
    return Registry(model, tracking_uri, tmp_path / "sources", promotion, audit)


def test_mark_candidate_sets_the_candidate_alias(reg: Registry) -> None:
    v1 = reg.new_version()
    v2 = reg.new_version()

    reg.promotion.mark_candidate(reg.model, v1, "training-job")
    reg.promotion.mark_candidate(reg.model, v2, "training-job")

    assert reg.alias(CANDIDATE) == v2
    assert reg.actions() == ["registered", "registered"]
    assert reg.audit.entries(reg.model)[0].actor == "training-job"


def test_record_gate_passed_sets_challenger_and_tags(reg: Registry) -> None:
    version = reg.new_version()
    reg.promotion.mark_candidate(reg.model, version, "training-job")

    reg.promotion.record_gate(reg.model, version, PASSED, "training-job")

    tags = reg.tags(version)
    assert tags[GATE_STATUS] == "passed"
    assert tags[GATE_SUMMARY] == PASSED.summary() == "passed vs popularity"
    assert json.loads(tags[GATE_DECISION]) == PASSED.as_dict()
    assert reg.alias(CHALLENGER) == version
    stored = reg.promotion.gate_of(reg.promotion.client.version(reg.model, version))
    assert stored == PASSED
    registered, entry = reg.audit.entries(reg.model)
    assert (entry.action, entry.version, entry.actor) == ("gate_passed", version, "training-job")
    assert entry.details == {
        "decision": PASSED.as_dict(),
        "evaluation_digest": evaluation_digest(PASSED.as_dict()),
        "artifact_digest": registered.details["artifact_digest"],
    }


def test_record_gate_failed_sets_tags_but_no_challenger(reg: Registry) -> None:
    version = reg.new_version()
    reg.promotion.mark_candidate(reg.model, version, "training-job")

    reg.promotion.record_gate(reg.model, version, FAILED, "training-job")

    tags = reg.tags(version)
    assert tags[GATE_STATUS] == "failed"
    assert "beginner_safety" in tags[GATE_SUMMARY]
    assert reg.alias(CHALLENGER) is None
    assert reg.actions() == ["registered", "gate_failed"]


def test_newer_passing_version_supersedes_the_waiting_challenger(reg: Registry) -> None:
    reg.gated()
    v2 = reg.gated()
    reg.gated(FAILED)

    assert reg.alias(CHALLENGER) == v2


def test_gate_of_a_version_never_gated_is_none(reg: Registry) -> None:
    version = reg.new_version()

    assert reg.promotion.gate_of(reg.promotion.client.version(reg.model, version)) is None


@pytest.mark.parametrize("reviewer", [None, "", "  "])
def test_approve_requires_a_reviewer(reg: Registry, reviewer: str | None) -> None:
    version = reg.gated()

    with pytest.raises(ValueError, match="--reviewer"):
        reg.promotion.approve(reg.model, version, reviewer, "note")

    assert REVIEW_STATUS not in reg.tags(version)
    assert "approved" not in reg.actions()


def test_reject_requires_a_reviewer(reg: Registry) -> None:
    version = reg.gated()

    with pytest.raises(ValueError, match="--reviewer"):
        reg.promotion.reject(reg.model, version, " ", "note")


def test_approve_of_a_failed_gate_raises(reg: Registry) -> None:
    version = reg.gated(FAILED)

    with pytest.raises(PromotionError, match="gate failed"):
        reg.promotion.approve(reg.model, version, "alice", "looks fine to me")

    assert REVIEW_STATUS not in reg.tags(version)
    assert reg.actions() == ["registered", "gate_failed"]


def test_approve_of_a_never_gated_version_raises(reg: Registry) -> None:
    version = reg.new_version()
    reg.promotion.mark_candidate(reg.model, version, "training-job")

    with pytest.raises(PromotionError, match="not run"):
        reg.promotion.approve(reg.model, version, "alice", "")

    assert reg.actions() == ["registered"]


def test_approve_of_an_unknown_version_raises_lookup_error(reg: Registry) -> None:
    reg.new_version()

    with pytest.raises(LookupError, match="no version '9'"):
        reg.promotion.approve(reg.model, "9", "alice", "")


def test_approve_sets_review_tags_and_is_idempotent(reg: Registry) -> None:
    version = reg.gated()

    assert reg.promotion.approve(reg.model, version, " alice ", "ship it") is True
    assert reg.promotion.approve(reg.model, version, "bob", "again") is False

    tags = reg.tags(version)
    assert tags[REVIEW_STATUS] == "approved"
    assert tags[REVIEW_REVIEWER] == "alice"
    assert tags[REVIEW_NOTE] == "ship it"
    assert tags[REVIEW_GATE_SEEN] == PASSED.summary()
    assert reg.alias(CHALLENGER) == version
    approvals = [e for e in reg.audit.entries(reg.model) if e.action == "approved"]
    assert len(approvals) == 1
    assert (approvals[0].actor, approvals[0].note) == ("alice", "ship it")
    assert approvals[0].details == {
        "gate_seen": PASSED.summary(),
        "gate": "passed",
        "evaluation_digest": evaluation_digest(PASSED.as_dict()),
        "artifact_digest": reg.audit.entries(reg.model)[0].details["artifact_digest"],
    }


def test_approving_an_older_passed_version_makes_it_challenger_again(reg: Registry) -> None:
    v1 = reg.gated()
    reg.gated()

    assert reg.promotion.approve(reg.model, v1, "alice", "")

    assert reg.alias(CHALLENGER) == v1


def test_reject_removes_challenger_and_blocks_approval(reg: Registry) -> None:
    version = reg.gated()

    assert reg.promotion.reject(reg.model, version, "carol", "overfits") is True
    assert reg.promotion.reject(reg.model, version, "carol", "again") is False

    assert reg.alias(CHALLENGER) is None
    tags = reg.tags(version)
    assert (tags[REVIEW_STATUS], tags[REVIEW_REVIEWER]) == ("rejected", "carol")
    with pytest.raises(PromotionError, match="rejected by carol"):
        reg.promotion.approve(reg.model, version, "alice", "")
    with pytest.raises(PromotionError, match="not approved"):
        reg.promotion.promote(reg.model, version, "sensor")
    assert reg.actions() == ["registered", "gate_passed", "rejected"]


def test_reject_leaves_another_versions_challenger_alone(reg: Registry) -> None:
    v1 = reg.gated(FAILED)
    v2 = reg.gated()

    assert reg.promotion.reject(reg.model, v1, "carol", "")

    assert reg.alias(CHALLENGER) == v2


def test_reject_of_the_champion_raises(reg: Registry) -> None:
    version = reg.champion()

    with pytest.raises(PromotionError, match="roll back"):
        reg.promotion.reject(reg.model, version, "carol", "")


def test_promote_requires_a_passed_gate_and_an_approval(reg: Registry) -> None:
    failed = reg.gated(FAILED)
    passed = reg.gated()
    never = reg.new_version()
    reg.promotion.mark_candidate(reg.model, never, "training-job")

    with pytest.raises(PromotionError, match="gate failed"):
        reg.promotion.promote(reg.model, failed, "sensor")
    with pytest.raises(PromotionError, match="gate not run"):
        reg.promotion.promote(reg.model, never, "sensor")
    with pytest.raises(PromotionError, match="a reviewer must approve it first"):
        reg.promotion.promote(reg.model, passed, "sensor")

    assert reg.alias(CHAMPION) is None
    assert "promoted" not in reg.actions()


def test_first_promotion_moves_champion_and_removes_challenger(reg: Registry) -> None:
    version = reg.gated()
    reg.promotion.approve(reg.model, version, "alice", "")

    assert reg.promotion.promote(reg.model, version, "sensor") is True

    assert reg.alias(CHAMPION) == version
    assert reg.alias(CHALLENGER) is None
    tags = reg.tags(version)
    assert tags[PROMOTION_STATUS] == "champion"
    assert tags[PROMOTION_PREVIOUS] == ""
    promoted = reg.audit.entries(reg.model)[-1]
    assert (promoted.action, promoted.actor, promoted.details["previous"]) == (
        "promoted",
        "sensor",
        None,
    )
    assert (
        promoted.details["artifact_digest"]
        == reg.audit.entries(reg.model)[0].details["artifact_digest"]
    )


def test_promotion_records_and_retires_the_previous_champion(reg: Registry) -> None:
    v1 = reg.champion()
    v2 = reg.gated()
    reg.promotion.approve(reg.model, v2, "alice", "")

    assert reg.promotion.promote(reg.model, v2, "sensor") is True

    assert reg.alias(CHAMPION) == v2
    assert reg.alias(CHALLENGER) is None
    assert reg.tags(v2)[PROMOTION_PREVIOUS] == v1
    assert reg.tags(v2)[PROMOTION_STATUS] == "champion"
    assert reg.tags(v1)[PROMOTION_STATUS] == "retired"
    assert reg.audit.entries(reg.model)[-1].details["previous"] == v1


def test_promoting_the_champion_again_changes_nothing(reg: Registry) -> None:
    version = reg.champion()
    before = reg.tags(version)

    assert reg.promotion.promote(reg.model, version, "sensor") is False

    assert reg.tags(version) == before
    assert reg.actions().count("promoted") == 1


def test_pending_promotion_is_the_approved_challenger_until_promoted(reg: Registry) -> None:
    assert reg.promotion.pending_promotion(reg.model) is None
    version = reg.gated()
    assert reg.promotion.pending_promotion(reg.model) is None  # not approved yet

    reg.promotion.approve(reg.model, version, "alice", "")
    assert reg.promotion.pending_promotion(reg.model) == version

    reg.promotion.promote(reg.model, version, "sensor")
    assert reg.promotion.pending_promotion(reg.model) is None


def test_pending_promotion_ignores_an_unapproved_newer_challenger(reg: Registry) -> None:
    v1 = reg.gated()
    reg.promotion.approve(reg.model, v1, "alice", "")
    reg.gated()  # takes the challenger alias, still waiting for review

    assert reg.promotion.pending_promotion(reg.model) is None


def test_rollback_restores_the_previous_champion(reg: Registry) -> None:
    v1 = reg.champion()
    v2 = reg.champion()

    assert reg.promotion.rollback(reg.model, "oncall", "ctr dropped") == (v2, v1)

    assert reg.alias(CHAMPION) == v1
    assert reg.tags(v2)[PROMOTION_STATUS] == "rolled_back"
    assert reg.tags(v1)[PROMOTION_STATUS] == "champion"
    entry = reg.audit.entries(reg.model)[-1]
    assert (entry.action, entry.version, entry.actor, entry.note) == (
        "rolled_back",
        v2,
        "oncall",
        "ctr dropped",
    )
    assert entry.details == {"restored": v1, "from": v2}


def test_rolled_back_version_cannot_be_promoted_again(reg: Registry) -> None:
    reg.champion()
    v2 = reg.champion()
    reg.promotion.rollback(reg.model, "oncall")

    with pytest.raises(PromotionError, match="rolled back"):
        reg.promotion.promote(reg.model, v2, "sensor")


def test_rolled_back_version_cannot_be_approved_again(reg: Registry) -> None:
    # approve() documents PromotionError for a rolled-back version
    reg.champion()
    v2 = reg.champion()
    reg.promotion.rollback(reg.model, "oncall")

    with pytest.raises(PromotionError, match="rolled back"):
        reg.promotion.approve(reg.model, v2, "alice", "")


def test_rollback_walks_back_one_champion_at_a_time(reg: Registry) -> None:
    v1 = reg.champion()
    v2 = reg.champion()
    v3 = reg.champion()

    assert reg.promotion.rollback(reg.model, "oncall") == (v3, v2)
    assert reg.promotion.rollback(reg.model, "oncall") == (v2, v1)

    assert reg.alias(CHAMPION) == v1
    with pytest.raises(PromotionError, match="first champion"):
        reg.promotion.rollback(reg.model, "oncall")


def test_rollback_of_the_first_champion_raises(reg: Registry) -> None:
    version = reg.champion()

    with pytest.raises(PromotionError, match="first champion"):
        reg.promotion.rollback(reg.model, "oncall")

    assert reg.alias(CHAMPION) == version
    assert "rolled_back" not in reg.actions()


def test_rollback_without_a_champion_raises(reg: Registry) -> None:
    reg.gated()

    with pytest.raises(PromotionError, match="no champion"):
        reg.promotion.rollback(reg.model, "oncall")


def test_status_rows_show_aliases_gate_review_and_promotion(reg: Registry) -> None:
    v1 = reg.champion()
    v2 = reg.gated(FAILED)
    v3 = reg.gated()
    v4 = reg.new_version()
    reg.promotion.client.set_tags(
        reg.model,
        v3,
        {
            "eval.candidate.all.ndcg_at_10": "0.4321",
            "data.start": "2026-01-01T00:00:00+00:00",
            "data.end": "2026-01-29T00:00:00+00:00",
        },
    )

    rows = reg.promotion.status(reg.model)

    assert [r.version for r in rows] == [v4, v3, v2, v1]
    by_version = {r.version: r for r in rows}
    assert by_version[v1].aliases == (CHAMPION,)
    assert by_version[v1].review == "approved by alice"
    assert by_version[v1].promotion == "champion"
    assert by_version[v1].gate == "passed vs popularity"
    assert by_version[v2].aliases == ()
    assert by_version[v2].gate.startswith("failed vs popularity (beginner_safety")
    assert by_version[v2].review == "-"  # a failed gate is never up for review
    assert by_version[v2].promotion == "-"
    assert by_version[v3].aliases == (CANDIDATE, CHALLENGER)
    assert by_version[v3].ndcg_at_10 == "0.4321"
    assert by_version[v3].data_window == "2026-01-01..2026-01-29"
    assert (by_version[v4].gate, by_version[v4].review) == ("not run", "-")
    assert by_version[v4].data_window == "?..?"
    assert by_version[v4].ndcg_at_10 == "-"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", by_version[v4].created)


def test_format_status_lists_versions_and_aliases(reg: Registry) -> None:
    v1 = reg.champion()
    v2 = reg.gated()

    text = format_status(reg.model, reg.promotion.status(reg.model))

    lines = text.splitlines()
    assert lines[0] == reg.model
    assert lines[1].split() == [
        "version",
        "aliases",
        "created",
        "ndcg@10",
        "data",
        "review",
        "promotion",
        "gate",
    ]
    assert lines[2].split()[:2] == [v2, "candidate,challenger"]
    assert lines[3].split()[:2] == [v1, "champion"]
    assert "approved by alice" in lines[3]
    assert lines[3].endswith("passed vs popularity")
    assert len(lines) == 4


def test_format_status_without_versions(reg: Registry) -> None:
    assert reg.promotion.status(reg.model) == []
    assert format_status(reg.model, []) == f"{reg.model}: no registered versions"


def test_audit_log_holds_every_step_in_order(reg: Registry) -> None:
    v1 = reg.champion()
    v2 = reg.gated(FAILED)
    v3 = reg.gated()
    reg.promotion.reject(reg.model, v3, "carol", "no")
    v4 = reg.champion()
    reg.promotion.rollback(reg.model, "oncall", "regression")

    entries = reg.audit.entries(reg.model)

    assert [(e.action, e.version) for e in entries] == [
        ("registered", v1),
        ("gate_passed", v1),
        ("approved", v1),
        ("promoted", v1),
        ("registered", v2),
        ("gate_failed", v2),
        ("registered", v3),
        ("gate_passed", v3),
        ("rejected", v3),
        ("registered", v4),
        ("gate_passed", v4),
        ("approved", v4),
        ("promoted", v4),
        ("rolled_back", v4),
    ]
    assert [e.actor for e in entries][-3:] == ["alice", "sensor", "oncall"]
    assert all(e.model == reg.model for e in entries)


# ---- trust: the audit log decides, tags and aliases only mirror it ----------------------------


def _forge(reg: Registry, version: str, tags: dict[str, str]) -> None:
    client = MlflowClient(tracking_uri=reg.uri, registry_uri=reg.uri)
    for key, value in tags.items():
        client.set_model_version_tag(reg.model, version, key, value)


def test_forged_gate_and_review_tags_cannot_promote_a_failed_version(reg: Registry) -> None:
    version = reg.gated(FAILED)
    _forge(reg, version, {GATE_STATUS: "passed", REVIEW_STATUS: "approved"})
    MlflowClient(tracking_uri=reg.uri, registry_uri=reg.uri).set_registered_model_alias(
        reg.model, CHALLENGER, version
    )

    with pytest.raises(PromotionError, match=r"tag gate\.status='passed' but the audit log says"):
        reg.promotion.promote(reg.model, version, "sensor")

    assert reg.alias(CHAMPION) is None
    assert reg.promotion.pending_promotion(reg.model) is None
    assert reg.actions()[-1] == "tamper_detected"
    assert "gate.status" in reg.audit.entries(reg.model)[-1].note


def test_forged_gate_tag_cannot_be_approved(reg: Registry) -> None:
    version = reg.gated(FAILED)
    _forge(reg, version, {GATE_STATUS: "passed"})

    with pytest.raises(PromotionError, match="refused"):
        reg.promotion.approve(reg.model, version, "alice", "")

    assert "approved" not in reg.actions()
    assert reg.actions()[-1] == "tamper_detected"


def test_a_version_registered_outside_the_platform_is_refused(reg: Registry) -> None:
    version = reg.new_version()
    _forge(reg, version, {GATE_STATUS: "passed", REVIEW_STATUS: "approved"})

    with pytest.raises(PromotionError, match="never registered through the platform"):
        reg.promotion.promote(reg.model, version, "sensor")

    assert reg.alias(CHAMPION) is None
    assert reg.actions() == ["tamper_detected"]


def test_swapped_artifacts_are_refused_at_promotion(reg: Registry) -> None:
    version = reg.gated()
    reg.promotion.approve(reg.model, version, "alice", "")
    source = Path(
        reg.promotion.client.version(reg.model, version).model_uri.removeprefix("file://")
    )
    (source / "model.pkl").write_bytes(b"something else")

    with pytest.raises(PromotionError, match="artifacts changed since registration"):
        reg.promotion.promote(reg.model, version, "sensor")

    assert reg.alias(CHAMPION) is None
    assert reg.actions()[-1] == "tamper_detected"


def test_a_rewrite_by_an_erasure_rebinds_the_digest_and_keeps_the_champion(reg: Registry) -> None:
    version = reg.champion()
    source = Path(
        reg.promotion.client.version(reg.model, version).model_uri.removeprefix("file://")
    )
    (source / "model.pkl").write_bytes(b"the bundle without an erased member")

    digest = reg.promotion.record_rewrite(reg.model, version, "erasure", "rewritten")

    record = reg.promotion.audited(reg.model).of(version)
    assert record is not None
    assert record.artifact_digest == digest
    assert record.promotion == "champion"
    assert reg.actions()[-1] == "artifacts_rewritten"
    assert digest == artifact_digest(source)
    assert reg.promotion.integrity_findings(reg.model) == []
    assert reg.alias(CHAMPION) == version


def _edit_gate_entry(tmp_path: Path, field: str, value: str) -> None:
    """Change one field of the stored ``gate_failed`` entry behind the log's back."""
    store = LocalObjectStore(tmp_path / "store")
    (gate_key,) = [k for k in store.list_keys("audit/registry/") if k.endswith("gate_failed.json")]
    body = json.loads(store.get_bytes(gate_key))
    body[field] = value
    store.put_bytes(gate_key, json.dumps(body).encode())


def test_an_edited_audit_entry_stops_every_decision(reg: Registry, tmp_path: Path) -> None:
    version = reg.gated(FAILED)
    _edit_gate_entry(tmp_path, "action", "gate_passed")

    with pytest.raises(PromotionError, match="failed verification"):
        reg.promotion.approve(reg.model, version, "alice", "")

    assert reg.actions()[-1] == "tamper_detected"


def test_a_moved_champion_alias_is_restored_and_recorded(reg: Registry) -> None:
    v1 = reg.champion()
    v2 = reg.gated(FAILED)
    MlflowClient(tracking_uri=reg.uri, registry_uri=reg.uri).set_registered_model_alias(
        reg.model, CHAMPION, v2
    )

    restored = reg.promotion.check_aliases(reg.model, "sensor")

    assert reg.alias(CHAMPION) == v1
    assert len(restored) == 1
    assert f"pointed at version {v2}" in restored[0]
    entry = reg.audit.entries(reg.model)[-1]
    assert (entry.action, entry.details) == (
        "alias_restored",
        {"alias": CHAMPION, "found": v2, "restored": v1},
    )
    assert reg.promotion.check_aliases(reg.model, "sensor") == []


def test_an_alias_set_with_no_audited_champion_is_removed(reg: Registry) -> None:
    version = reg.gated(FAILED)
    MlflowClient(tracking_uri=reg.uri, registry_uri=reg.uri).set_registered_model_alias(
        reg.model, CHAMPION, version
    )

    reg.promotion.check_aliases(reg.model, "sensor")

    assert reg.alias(CHAMPION) is None
    assert reg.actions()[-1] == "alias_restored"


def test_the_trainer_cannot_approve_their_own_version(reg: Registry) -> None:
    version = reg.new_version()
    reg.promotion.mark_candidate(reg.model, version, "training-job", trained_by="Alice")
    reg.promotion.record_gate(reg.model, version, PASSED, "training-job")

    with pytest.raises(PromotionError, match="four eyes"):
        reg.promotion.approve(reg.model, version, "alice", "mine, looks great")

    assert reg.promotion.approve(reg.model, version, "bob", "checked") is True


@pytest.mark.parametrize("name", ["a" * 65, "alice\nbob", "<script>", "-leading-dash", "ali ce"])
def test_reviewer_names_are_validated(reg: Registry, name: str) -> None:
    version = reg.gated()

    with pytest.raises(ValueError, match="1-64 letters"):
        reg.promotion.approve(reg.model, version, name, "")

    assert "approved" not in reg.actions()


def test_a_broken_log_is_recorded_once_however_often_it_is_read(
    reg: Registry, tmp_path: Path
) -> None:
    version = reg.gated(FAILED)
    _edit_gate_entry(tmp_path, "note", "edited")

    for _ in range(3):  # e.g. three ticks of the promotion sensor
        with pytest.raises(PromotionError, match="failed verification"):
            reg.promotion.pending_promotion(reg.model)
    with pytest.raises(PromotionError, match="failed verification"):
        reg.promotion.approve(reg.model, version, "alice", "")

    assert reg.actions() == ["registered", "gate_failed", "tamper_detected"]
