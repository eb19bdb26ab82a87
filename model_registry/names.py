"""Registered-model and experiment names (importable without loading MLflow)."""

from typing import Final

HOME_RANKER_MODEL: Final = "fitpulse-home-ranker"
EXPERIMENT: Final = "fitpulse-home-feed"
PUSH_POLICY_MODEL: Final = "fitpulse-push-policy"
"""The push models (open and fatigue classifiers) and their policy settings, one version each."""
