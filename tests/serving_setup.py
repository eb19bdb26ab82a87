"""Take trained versions through the platform so the services will load them.

The services serve only the audited champion: a version whose gate passed, that a reviewer
approved and that was promoted. The tiny test worlds are too small for the gate to pass on
every run (its lift interval spans zero), so where the real gate failed a passing verdict
(``gate_samples.PASSED``) is recorded in its place, through the same audited workflow, by the
actor ``test-gate``. Then ``test-reviewer`` approves and the promotion runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
from gate_samples import PASSED

from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore
from fitpulse_orchestration.storage.audit import AuditLog, load_audit_key
from model_registry.client import BUNDLE_TAG, RegistryClient, register_lightgbm
from model_registry.names import EXPERIMENT, HOME_RANKER_MODEL, PUSH_POLICY_MODEL
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


GOVERNANCE_TAG_PREFIXES = ("gate.", "review.", "promotion.", "audit.")
"""Version tags the audited workflow sets (``model_registry.promotion``), not the training."""


def register_copy(home: ProjectHome, version: str, model: str = HOME_RANKER_MODEL) -> str:
    """Register ``version``'s booster and feed bundle again as a new version; return its number.

    What a retraining on the same data registers, without the training: the same model under
    the next number, logged in a run of the home's experiment by ``register_lightgbm`` and
    marked candidate by the audited workflow (so serving will load it once promoted).
    """
    tracking_uri = home.mlflow_tracking_uri
    source = next(v for v in RegistryClient(tracking_uri).versions(model) if v.version == version)
    mlflow.set_tracking_uri(tracking_uri)
    booster = mlflow.lightgbm.load_model(source.model_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, "the home has no training experiment"
    # The training's tags only: the bundle's location is the copy's own, and the governance
    # tags (gate, review, promotion, digest) belong to version ``version``'s history.
    tags = {
        k: v
        for k, v in source.tags.items()
        if k != BUNDLE_TAG and not k.startswith(GOVERNANCE_TAG_PREFIXES)
    }
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(mlflow.artifacts.download_artifacts(source.tags[BUNDLE_TAG], dst_path=tmp))
        files = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()}
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        copy = register_lightgbm(booster, model, tags, files)
    registry_workflow(home).mark_candidate(model, copy.version, "test-copy")
    return copy.version
