"""Take trained versions through the platform so the services will load them.

The services serve only the audited champion: a version whose gate passed, that a reviewer
approved and that was promoted. The tiny test worlds are too small for the gate to pass on
every run (its lift interval spans zero), so where the real gate failed a passing verdict
(``gate_samples.PASSED``) is recorded in its place, through the same audited workflow, by the
actor ``test-gate``. Then ``test-reviewer`` approves and the promotion runs.
"""

from __future__ import annotations

from gate_samples import PASSED

from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.storage.audit import AuditLog, load_audit_key
from model_registry.client import RegistryClient
from model_registry.names import HOME_RANKER_MODEL, PUSH_POLICY_MODEL
from model_registry.promotion import ModelPromotion


def registry_workflow(home: ProjectHome) -> ModelPromotion:
    """The home's audited promotion workflow."""
    return ModelPromotion(
        RegistryClient(home.mlflow_tracking_uri),
        AuditLog(LocalObjectStore(home.store), load_audit_key(home.audit_key_file)),
    )


def make_champion(home: ProjectHome, version: str, model: str = HOME_RANKER_MODEL) -> None:
    """Gate (a passing verdict where the real one failed), approve and promote ``version``."""
    promotion = registry_workflow(home)
    record = promotion.audited(model).of(version)
    if record is None or record.gate != "passed":
        promotion.record_gate(model, version, PASSED, "test-gate")
    promotion.approve(model, version, "test-reviewer", "serving test setup")
    promotion.promote(model, version, "test")


def make_first_champions(home: ProjectHome) -> None:
    """Version 1 of the feed model and of the push policy (when one is registered)."""
    make_champion(home, "1")
    if RegistryClient(home.mlflow_tracking_uri).latest(PUSH_POLICY_MODEL) is not None:
        make_champion(home, "1", PUSH_POLICY_MODEL)
