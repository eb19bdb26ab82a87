"""A project home's registry for tests: versions registered through the platform, no training.

Each version's "artifacts" are an empty folder: what the audited workflow, the sensors and the
registry jobs need (a registered version, its digest, its gate) without training a model.
"""

from __future__ import annotations

import itertools

from mlflow.tracking import MlflowClient

from assets.resources import ModelRegistryResource, ObjectStoreResource
from fitpulse_orchestration.settings import ProjectHome
from model_registry.gate import GateDecision
from model_registry.promotion import ModelPromotion


class RegistryHome:
    """The home's MLflow registry, its Dagster resource and helpers that register versions."""

    def __init__(self, home: ProjectHome, prefix: str) -> None:
        self.home = home
        self.uri = home.mlflow_tracking_uri
        self.mlflow = MlflowClient(self.uri, registry_uri=self.uri)
        self.resource = ModelRegistryResource(
            tracking_uri=self.uri,
            object_store=ObjectStoreResource(kind="local", root=str(home.store)),
            audit_key_file=str(home.audit_key_file),
            reviewers_file=str(home.reviewers_file),
        )
        self.promotion: ModelPromotion = self.resource.get_promotion()
        self._prefix = prefix
        self._models = itertools.count(1)
        self._sources = itertools.count(1)

    def new_model(self) -> str:
        """A new registered model (named ``<prefix>-<n>``) without versions."""
        name = f"{self._prefix}-{next(self._models)}"
        self.mlflow.create_registered_model(name)
        return name

    def registered(self, model: str) -> str:
        """A new version of ``model``, registered through the platform (no gate yet)."""
        source = self.home.root / "sources" / f"v{next(self._sources)}"
        source.mkdir(parents=True)
        version = str(self.mlflow.create_model_version(model, source.as_uri(), run_id=None).version)
        self.promotion.mark_candidate(model, version, "test")
        return version

    def add_version(self, model: str, decision: GateDecision) -> str:
        """A new registered version of ``model`` whose gate decided ``decision``."""
        version = self.registered(model)
        self.promotion.record_gate(model, version, decision, "test")
        return version
