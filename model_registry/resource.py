"""Dagster resources for MLflow: dagster-mlflow's tracking resource and the registry."""

import tempfile
from pathlib import Path

import dagster as dg
from dagster import Field, Noneable, StringSource
from dagster_mlflow.resources import CONFIG_SCHEMA, MlFlow

from assets.resources import ObjectStoreResource
from fitpulse_orchestration.ranking.bundle import FeedBundle, read_bundle
from model_registry.audit import AuditLog, load_audit_key
from model_registry.client import HOME_RANKER_MODEL, RegistryClient, ensure_experiment
from model_registry.erasure import RegistryEraser
from model_registry.promotion import ModelPromotion
from model_registry.reviewers import ReviewerRoster


@dg.resource(
    config_schema={
        **CONFIG_SCHEMA,
        "artifact_location": Field(
            Noneable(StringSource),
            default_value=None,
            is_required=False,
            description="Artifact root of the experiment (created if the experiment is new).",
        ),
    },
    description="dagster-mlflow's mlflow_tracking, creating the experiment with an explicit "
    "artifact location first.",
)
def mlflow_tracking_resource(init_context: dg.InitResourceContext) -> MlFlow:
    """dagster-mlflow's ``MlFlow`` resource (one MLflow run per Dagster run).

    MLflow 3.17 puts a new experiment's artifacts under ``./mlruns`` of the working directory
    unless the experiment is created with a location, which ``mlflow_tracking`` cannot do.
    """
    config = init_context.resource_config
    ensure_experiment(
        config["mlflow_tracking_uri"], config["experiment_name"], config.get("artifact_location")
    )
    return MlFlow(init_context)


class ModelRegistryResource(dg.ConfigurableResource):
    """The MLflow model registry (same backend as tracking) and its audit log."""

    tracking_uri: str
    object_store: ObjectStoreResource
    audit_key: str = ""
    """Production: the audit signing key (``dg.EnvVar("FITPULSE_AUDIT_KEY")``)."""
    audit_key_file: str = ""
    """Local: the key file, created on first use."""
    reviewers_file: str = ""
    """The reviewer roster (``model_registry.reviewers``); production: the mounted file."""
    model_cache_dir: str = ""
    """Local: the serving cache of downloaded bundles (an erasure's rewrite evicts from it)."""

    def get_client(self) -> RegistryClient:
        """A client bound to this registry."""
        return RegistryClient(self.tracking_uri)

    def get_audit_key(self) -> str:
        """The audit log's signing key, from the secret or the key file."""
        if self.audit_key:
            return self.audit_key
        if self.audit_key_file:
            return load_audit_key(Path(self.audit_key_file))
        raise ValueError("the model registry needs an audit_key or an audit_key_file")

    def get_audit(self) -> AuditLog:
        """The registry's signed audit log in the object store."""
        return AuditLog(self.object_store.get_store(), self.get_audit_key())

    def get_roster(self) -> ReviewerRoster:
        """The reviewer roster (an empty one refuses every review)."""
        if not self.reviewers_file:
            return ReviewerRoster({}, "(no reviewers_file configured)")
        return ReviewerRoster.from_file(Path(self.reviewers_file))

    def get_promotion(self) -> ModelPromotion:
        """The promotion workflow, auditing into the object store."""
        return ModelPromotion(self.get_client(), self.get_audit())

    def get_eraser(self) -> RegistryEraser:
        """The erasure's registry step: rewrites registered bundles without an erased member."""
        cache = Path(self.model_cache_dir) if self.model_cache_dir else None
        return RegistryEraser(self.get_promotion(), cache)

    def load_bundle(self, version: str, model: str = HOME_RANKER_MODEL) -> FeedBundle:
        """Download and load one version's feed bundle."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.get_client().download_bundle(model, version, Path(tmp))
            return read_bundle(folder)

    def champion_version(self, model: str = HOME_RANKER_MODEL) -> str | None:
        """The champion as the verified audit log says (not the MLflow alias), if any."""
        return self.get_promotion().audited(model).champion
