"""Registered-model and experiment names (importable without loading MLflow)."""

from typing import Final

HOME_RANKER_MODEL: Final = "fitpulse-home-ranker"
EXPERIMENT: Final = "fitpulse-home-feed"
