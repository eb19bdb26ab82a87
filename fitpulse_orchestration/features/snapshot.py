"""The training snapshot: exactly the data one training run sees."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fitpulse_orchestration.events.ingest import read_clean_events
from fitpulse_orchestration.features.point_in_time import FeatureInputs
from fitpulse_orchestration.features.reference import complete_catalog, complete_profiles
from fitpulse_orchestration.features.training import SplitParams, TimeSplit, compute_time_split
from fitpulse_orchestration.privacy.suppression import erased_pseudonyms
from fitpulse_orchestration.storage import ObjectStore


@dataclass
class TrainingSnapshot:
    """Clean events of every ingested day, the completed catalog and profiles, and the split."""

    inputs: FeatureInputs
    split: TimeSplit

    def train_inputs(self) -> FeatureInputs:
        """The inputs the evaluated models learn from: the held-out part removed."""
        return self._with_events(self.split.train_events(self.inputs.events))

    def fit_inputs(self) -> FeatureInputs:
        """The inputs the validation models learn from: held-out and validation removed."""
        return self._with_events(self.split.fit_events(self.inputs.events))

    def example_inputs(self) -> FeatureInputs:
        """The inputs validation examples' features see (``TimeSplit.example_events``)."""
        return self._with_events(self.split.example_events(self.inputs.events))

    def _with_events(self, events: pd.DataFrame) -> FeatureInputs:
        return FeatureInputs(
            events=events.reset_index(drop=True),
            catalog=self.inputs.catalog,
            profiles=self.inputs.profiles,
        )

    def summary(self) -> dict[str, float | str]:
        """Counts and window boundaries for metadata and tags."""
        return {
            "events": float(len(self.inputs.events)),
            "users": float(self.inputs.events["user_id"].nunique()),
            "items": float(len(self.inputs.catalog)),
            "profiled_users": float(len(self.inputs.profiles)),
            **self.split.as_dict(),
        }


def load_feature_inputs(
    store: ObjectStore, catalog: pd.DataFrame, profiles: pd.DataFrame
) -> FeatureInputs:
    """Every clean event partition with the reference data completed with defaults.

    Users on the erasure list are excluded, events and profile alike, even if a partition
    written while the erasure ran still holds them.
    """
    events = read_clean_events(store)
    erased = erased_pseudonyms(store)
    if erased:
        events = events.loc[~events["user_id"].isin(erased)].reset_index(drop=True)
        profiles = profiles.loc[~profiles["user_id"].isin(erased)].reset_index(drop=True)
    return FeatureInputs(
        events=events,
        catalog=complete_catalog(catalog, events),
        profiles=complete_profiles(profiles, events),
    )


def build_training_snapshot(
    store: ObjectStore, catalog: pd.DataFrame, profiles: pd.DataFrame, params: SplitParams
) -> TrainingSnapshot:
    """Read every clean event partition and complete the reference data with defaults."""
    inputs = load_feature_inputs(store, catalog, profiles)
    return TrainingSnapshot(inputs=inputs, split=compute_time_split(inputs.events, params))
