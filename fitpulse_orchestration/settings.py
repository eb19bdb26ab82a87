"""Where a FitPulse project home keeps its state (the embedded, local profile).

A home directory (default ``.fitpulse`` in the working directory, or ``FITPULSE_HOME``) holds::

    store/      object store root: landing zone, warehouse, persisted asset values
    dagster/    Dagster instance (SQLite run, event-log and schedule storage; dagster.yaml)
    mlflow/     MLflow tracking and registry (SQLite) and its artifacts
    online/     the online feature store (SQLite)
    serving/    model bundles the feed service downloaded
    reports/    evaluation tables written by the CLI
    secrets/    the pseudonymization key of this home (created on first use, mode 0600)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".fitpulse"

DEFINITIONS_MODULE = "fitpulse_orchestration.definitions"
"""The code location ``workspace.yaml`` and ``fitpulse ui`` load (named after the module)."""
PROFILES = ("local", "production")

PRODUCTION_ENV = (
    "FITPULSE_S3_BUCKET",
    "FITPULSE_S3_PREFIX",
    "FITPULSE_S3_ENDPOINT_URL",
    "FITPULSE_REDIS_URL",
    "FITPULSE_PSEUDONYM_SECRET",
    "FITPULSE_AUDIT_KEY",
    "FITPULSE_REVIEWERS_FILE",
    "MLFLOW_TRACKING_URI",
    "FITPULSE_MLFLOW_ARTIFACTS",
)
"""What the ``production`` profile reads from its environment (resolved when a run starts).

``FITPULSE_S3_ENDPOINT_URL`` is empty on AWS and names the endpoint of any other S3 service;
MLflow reaches the same endpoint through its own ``MLFLOW_S3_ENDPOINT_URL``. Credentials come
from boto3's default chain (instance role, or ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``).
``MLFLOW_TRACKING_URI`` is a PostgreSQL URL (tracking and registry); ``FITPULSE_MLFLOW_ARTIFACTS``
an ``s3://bucket/prefix`` artifact root. ``FITPULSE_PSEUDONYM_SECRET`` is the keyed-hash secret
(docs/operating.md, "Rotating the pseudonymization key"); ``FITPULSE_AUDIT_KEY`` signs the
registry's audit log (``storage.audit``). The Dagster instance itself reads
``FITPULSE_DAGSTER_PG_URL`` through ``deploy/dagster.yaml``.
"""


@dataclass(frozen=True)
class ProjectHome:
    """Paths inside one project home."""

    root: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> ProjectHome:
        """Use ``home``, else ``$FITPULSE_HOME``, else ``./.fitpulse`` (made absolute)."""
        chosen = home or os.environ.get("FITPULSE_HOME") or DEFAULT_HOME
        return cls(Path(chosen).expanduser().resolve())

    @property
    def store(self) -> Path:
        """Object store root."""
        return self.root / "store"

    @property
    def dagster(self) -> Path:
        """Dagster instance directory (use as ``DAGSTER_HOME``)."""
        return self.root / "dagster"

    @property
    def mlflow_tracking_uri(self) -> str:
        """SQLite tracking and registry database."""
        return f"sqlite:///{self.root / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        """Artifact root of MLflow experiments."""
        return self.root / "mlflow" / "artifacts"

    @property
    def online_store(self) -> Path:
        """SQLite file of the online feature store (the embedded default)."""
        return self.root / "online" / "features.sqlite"

    @property
    def model_cache(self) -> Path:
        """Registered model bundles the feed service downloaded."""
        return self.root / "serving" / "models"

    @property
    def reports(self) -> Path:
        """Reports written by the CLI."""
        return self.root / "reports"

    @property
    def pseudonym_key_file(self) -> Path:
        """Pseudonymization secret of this home."""
        return self.root / "secrets" / "pseudonym.key"

    @property
    def audit_key_file(self) -> Path:
        """Signing key of this home's registry audit log (``storage.audit``)."""
        return self.root / "secrets" / "audit.key"

    @property
    def reviewers_file(self) -> Path:
        """The reviewer roster: names and key digests (``model_registry.reviewers``)."""
        return self.root / "secrets" / "reviewers"

    @property
    def api_tokens_file(self) -> Path:
        """Digests of the bearer tokens the local service accepts (``serving.auth``)."""
        return self.root / "secrets" / "api_tokens"

    @property
    def local_token_file(self) -> Path:
        """Plaintext of the local operator's own token (mode 0600)."""
        return self.root / "secrets" / "local_api_token"

    def create(self) -> ProjectHome:
        """Create the directories and the local Dagster instance's settings (idempotent).

        An existing ``dagster/dagster.yaml`` is the operator's and is left as it is.
        """
        for path in (self.store, self.dagster, self.mlflow_artifacts, self.reports):
            path.mkdir(parents=True, exist_ok=True)
        instance_yaml = self.dagster / "dagster.yaml"
        if not instance_yaml.exists():
            instance_yaml.write_text(LOCAL_DAGSTER_YAML)
        return self


LOCAL_DAGSTER_YAML = """\
# The local profile's Dagster instance: SQLite storage in this folder (Dagster's default).
# A platform for health data sends no usage telemetry, as deploy/dagster.yaml in production;
# and the operator console opens without Dagster's newsletter dialog.
telemetry:
  enabled: false
nux:
  enabled: false
"""


def current_profile() -> str:
    """``$FITPULSE_PROFILE`` (``local`` when unset); raises on an unknown profile."""
    profile = os.environ.get("FITPULSE_PROFILE", "local")
    if profile not in PROFILES:
        raise ValueError(f"FITPULSE_PROFILE={profile!r}; expected one of {PROFILES}")
    return profile
