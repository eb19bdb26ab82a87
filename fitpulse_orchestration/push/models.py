"""The push models: calibrated LightGBM classifiers of P(open) and P(fatigue) for a push.

* ``opened``: P(the push is opened within ``OPEN_HORIZON_H`` hours), over sent pushes.
* ``disabled_7d``: P(the user switches notifications off or silences the app within 7 days),
  over sent pushes whose 7 days the data covers (later ones are censored, not negatives).

Rows are split by time: the earliest ``fit_share`` of the sends train the booster, the next
``calibration_share`` fit the calibrator (isotonic by default), and the rest — a later window
the models never saw — is where AUC, log loss and expected calibration error are reported, for
the raw and the calibrated probabilities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

import lightgbm as lgb
import numpy as np
import pandas as pd

from fitpulse_orchestration.push.estimators import Calibrator, binary_metrics, fit_calibrator
from fitpulse_orchestration.push.features import CATEGORICAL_FEATURES, PUSH_FEATURES

TARGETS: Final = {"open": "opened", "fatigue": "disabled_7d"}


@dataclass(frozen=True)
class PushModelParams:
    """Hyperparameters of both push classifiers and the time split."""

    num_leaves: int = 15
    learning_rate: float = 0.05
    n_estimators: int = 150
    min_child_samples: int = 40
    fit_share: float = 0.6
    calibration_share: float = 0.2
    calibration: str = "isotonic"
    seed: int = 7

    def __post_init__(self) -> None:
        if not (0 < self.fit_share and 0 < self.calibration_share) or (
            self.fit_share + self.calibration_share >= 1
        ):
            raise ValueError("fit_share and calibration_share must be > 0 and sum below 1")


@dataclass
class PushClassifier:
    """A booster and the calibrator fitted on a later window."""

    name: str
    booster: lgb.Booster
    calibrator: Calibrator
    test_start: str = ""
    """Start of the later window the classifier was evaluated on (ISO)."""
    features: tuple[str, ...] = PUSH_FEATURES

    def predict_raw(self, features: np.ndarray) -> np.ndarray:
        """Uncalibrated booster probabilities, one per row of ``features``."""
        # One thread: a decision scores ~20 rows, and OpenMP fan-out only waits for a busy core.
        return np.asarray(self.booster.predict(np.atleast_2d(features), num_threads=1), dtype=float)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, one per row of ``features``."""
        return self.calibrator.predict(self.predict_raw(features))


@dataclass(frozen=True)
class ClassifierReport:
    """Where a classifier was trained and how it scores on the later window."""

    name: str
    target: str
    rows: dict[str, int]
    windows: dict[str, str]
    raw: dict[str, float]
    calibrated: dict[str, float]

    def flat_metrics(self) -> dict[str, float]:
        """``<name>.<split|raw|cal>.<metric>`` for MLflow and metadata."""
        out = {f"{self.name}.rows.{k}": float(v) for k, v in self.rows.items()}
        out |= {f"{self.name}.raw.{k}": v for k, v in self.raw.items()}
        out |= {f"{self.name}.cal.{k}": v for k, v in self.calibrated.items()}
        return out

    def as_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return asdict(self)


def _rows_for(examples: pd.DataFrame, name: str) -> pd.DataFrame:
    sent = examples[examples["sent"]]
    if name == "fatigue":
        sent = sent[sent["fatigue_observed"]]
    return sent.sort_values("ts", kind="stable")


def time_split(ts: pd.Series, params: PushModelParams) -> tuple[np.ndarray, np.ndarray]:
    """Boundaries (fit end, calibration end) as the time quantiles of ``ts``."""
    values = ts.sort_values().to_numpy()
    n = len(values)
    return values[int(n * params.fit_share)], values[
        int(n * (params.fit_share + params.calibration_share))
    ]


def train_push_classifier(
    examples: pd.DataFrame, name: str, params: PushModelParams
) -> tuple[PushClassifier, ClassifierReport]:
    """Train, calibrate and evaluate the ``name`` ("open" or "fatigue") classifier.

    Raises:
        ValueError: for an unknown name, or when a split lacks rows or one of the classes.
    """
    if name not in TARGETS:
        raise ValueError(f"unknown push model {name!r}; expected one of {sorted(TARGETS)}")
    target = TARGETS[name]
    rows = _rows_for(examples, name)
    if len(rows) < 30:
        raise ValueError(f"{name} model: only {len(rows)} labelled sends; need at least 30")
    fit_end, cal_end = time_split(rows["ts"], params)
    parts = {
        "fit": rows[rows["ts"] < fit_end],
        "calibration": rows[(rows["ts"] >= fit_end) & (rows["ts"] < cal_end)],
        "test": rows[rows["ts"] >= cal_end],
    }
    for part, frame in parts.items():
        if frame[target].nunique() < 2:
            raise ValueError(
                f"{name} model: the {part} window ({len(frame)} sends) has only one class of "
                f"{target!r}; generate more days or users"
            )
    x = {p: f[list(PUSH_FEATURES)].to_numpy(float) for p, f in parts.items()}
    y = {p: f[target].to_numpy(float) for p, f in parts.items()}
    dataset = lgb.Dataset(
        x["fit"],
        y["fit"],
        feature_name=list(PUSH_FEATURES),
        categorical_feature=list(CATEGORICAL_FEATURES),
        free_raw_data=False,
    )
    booster = lgb.train(
        {
            "objective": "binary",
            "num_leaves": params.num_leaves,
            "learning_rate": params.learning_rate,
            "min_child_samples": params.min_child_samples,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.9,
            "bagging_freq": 1,
            "seed": params.seed,
            "deterministic": True,
            "num_threads": 1,
            "verbosity": -1,
        },
        dataset,
        num_boost_round=params.n_estimators,
    )
    raw = {p: np.asarray(booster.predict(x[p]), dtype=float) for p in parts}
    calibrator = fit_calibrator(raw["calibration"], y["calibration"], params.calibration)
    model = PushClassifier(name, booster, calibrator, pd.Timestamp(cal_end).isoformat())
    report = ClassifierReport(
        name=name,
        target=target,
        rows={p: len(f) for p, f in parts.items()},
        windows={
            "fit_end": pd.Timestamp(fit_end).isoformat(),
            "calibration_end": pd.Timestamp(cal_end).isoformat(),
            "test_end": rows["ts"].max().isoformat(),
        },
        raw=binary_metrics(raw["test"], y["test"]),
        calibrated=binary_metrics(calibrator.predict(raw["test"]), y["test"]),
    )
    return model, report
