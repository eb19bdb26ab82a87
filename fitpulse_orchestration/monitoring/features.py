"""Feature frames that drift monitoring compares: training reference versus recent traffic.

Both sides come from the same code path: ranker features (``attach_features``) of logged feed
impressions, each as of its own timestamp. The reference is a sample of the champion's training
frame, stored with the registered version; the current side is the same computation over the
most recent days of ingested events.
"""

from __future__ import annotations

from typing import Final

import pandas as pd

from fitpulse_orchestration.features.point_in_time import (
    FeatureInputs,
    attach_features,
    feature_columns,
)
from fitpulse_orchestration.ranking.bundle import REFERENCE_ROWS, sample_rows

CATEGORICAL_FEATURES: Final = (
    "u_level",
    "u_is_cold",
    "i_type",
    "i_category",
    "i_difficulty",
    "i_intensity",
    "x_item_engaged_before",
)
"""Features whose values are codes, compared as categories rather than as numbers."""


def drift_columns() -> tuple[list[str], list[str]]:
    """``(numerical, categorical)`` features that drift reports cover.

    The ALS score is left out: it belongs to one model's factors, so it shifts with every
    retrain without the traffic changing (prediction drift covers the model's outputs).
    """
    cols = feature_columns(include_als=False)
    categorical = [c for c in cols if c in CATEGORICAL_FEATURES]
    numerical = [c for c in cols if c not in CATEGORICAL_FEATURES]
    return numerical, categorical


def reference_feature_sample(training_frame: pd.DataFrame, seed: int = 7) -> pd.DataFrame:
    """The drift columns of at most ``REFERENCE_ROWS`` training examples."""
    numerical, categorical = drift_columns()
    return sample_rows(training_frame[[*numerical, *categorical]], REFERENCE_ROWS, seed)


def impression_features(
    inputs: FeatureInputs,
    start: pd.Timestamp,
    end: pd.Timestamp,
    max_rows: int = REFERENCE_ROWS,
    seed: int = 7,
) -> pd.DataFrame:
    """Drift columns of logged impressions with ``start <= ts < end``, as of each impression.

    At most ``max_rows`` impressions are sampled (seeded) before features are computed.

    Raises:
        ValueError: when the window holds no impression.
    """
    ev = inputs.events
    imp = ev[(ev["event_type"] == "impression") & (ev["ts"] >= start) & (ev["ts"] < end)]
    if imp.empty:
        raise ValueError(
            f"no impressions between {start.isoformat()} and {end.isoformat()} to monitor"
        )
    spine = sample_rows(
        imp[["user_id", "item_id", "ts"]].rename(columns={"ts": "as_of"}), max_rows, seed
    )
    numerical, categorical = drift_columns()
    return attach_features(inputs, spine)[[*numerical, *categorical]]
