"""``fitpulse``: generate a world, import logs, train, serve, review and operate.

One module per command group; ``fitpulse_orchestration.runner`` runs the Dagster jobs the
commands start. Heavy libraries (Dagster, MLflow, LightGBM) are imported inside the commands
that need them, so ``fitpulse --help`` stays fast.
"""

from __future__ import annotations

import logging
import os
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# Dagster marks dagster-mlflow's resource and hook as beta; the warning is noise for CLI users.
warnings.filterwarnings("ignore", message=".*is currently in beta.*")

# Each module registers its commands on ``app``, in the order ``fitpulse --help`` lists them.
# isort: off
from fitpulse_orchestration.cli import pipeline  # noqa: E402
from fitpulse_orchestration.cli import data  # noqa: E402
from fitpulse_orchestration.cli import serving  # noqa: E402
from fitpulse_orchestration.cli import console  # noqa: E402
from fitpulse_orchestration.cli import experiments  # noqa: E402
from fitpulse_orchestration.cli import registry  # noqa: E402
from fitpulse_orchestration.cli import access  # noqa: E402
from fitpulse_orchestration.cli import rollout  # noqa: E402
from fitpulse_orchestration.cli import privacy  # noqa: E402

# isort: on
from fitpulse_orchestration.cli._common import app  # noqa: E402

__all__ = [
    "access",
    "app",
    "console",
    "data",
    "experiments",
    "main",
    "pipeline",
    "privacy",
    "registry",
    "rollout",
    "serving",
]


def main() -> None:
    """Console entry point."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    app()
