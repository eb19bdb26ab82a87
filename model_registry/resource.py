"""Dagster resources for MLflow: dagster-mlflow's tracking resource and the registry."""

import dagster as dg
from dagster import Field, Noneable, StringSource
from dagster_mlflow.resources import CONFIG_SCHEMA, MlFlow

from model_registry.client import RegistryClient, ensure_experiment


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
    """The MLflow model registry (same backend as tracking)."""

    tracking_uri: str

    def get_client(self) -> RegistryClient:
        """A client bound to this registry."""
        return RegistryClient(self.tracking_uri)
