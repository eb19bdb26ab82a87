"""Off-policy value estimates and probability calibration for the push models.

* ``off_policy_value``: inverse propensity scoring (IPS) and self-normalized IPS (SNIPS) of a
  policy from decisions logged by another, with a user-level (cluster) bootstrap interval.
* ``fit_calibrator``: isotonic or Platt calibration of a classifier's scores on held-out data;
  ``expected_calibration_error`` and ``binary_metrics`` report how well probabilities match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its percentile bootstrap interval."""

    value: float
    low: float
    high: float


def _check(
    reward: np.ndarray, target_prob: np.ndarray, propensity: np.ndarray, level: float
) -> None:
    n = len(reward)
    if n == 0:
        raise ValueError("no logged decisions to evaluate")
    if not (len(target_prob) == len(propensity) == n):
        raise ValueError("reward, target_prob, propensity and clusters must have equal lengths")
    if not np.all(np.isfinite(reward)):
        raise ValueError("rewards must be finite")
    if not np.all((propensity > 0) & (propensity <= 1)):
        raise ValueError("propensities must be in (0, 1]: a logged action had probability 0")
    if not np.all((target_prob >= 0) & (target_prob <= 1)):
        raise ValueError("target_prob must be in [0, 1]")
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")


def off_policy_value(
    reward: np.ndarray,
    target_prob: np.ndarray,
    propensity: np.ndarray,
    clusters: np.ndarray,
    *,
    scale: float = 1.0,
    n_boot: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Estimate]:
    """IPS and SNIPS estimates of a policy's mean reward per logged decision, times ``scale``.

    Args:
        reward: outcome of each logged decision.
        target_prob: probability that the evaluated policy takes the logged action.
        propensity: probability with which the logging policy took it, in (0, 1].
        clusters: resampling unit of the bootstrap (user ids).
        scale: multiplies the estimates (e.g. decisions per user-week).
        n_boot: bootstrap resamples.
        level: coverage of the interval.
        seed: seed of the resampling.

    Returns:
        ``{"ips": ..., "snips": ...}``; SNIPS is NaN when no decision has weight.
    """
    r = np.asarray(reward, dtype=float)
    t = np.asarray(target_prob, dtype=float)
    p = np.asarray(propensity, dtype=float)
    if len(np.asarray(clusters)) != len(r):
        raise ValueError("reward, target_prob, propensity and clusters must have equal lengths")
    _check(r, t, p, level)
    w = t / p
    _, codes = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    k = int(codes.max()) + 1
    sum_wr = np.bincount(codes, weights=w * r, minlength=k)
    sum_w = np.bincount(codes, weights=w, minlength=k)
    count = np.bincount(codes, minlength=k).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot).astype(float)
    boot_wr, boot_w, boot_n = draws @ sum_wr, draws @ sum_w, draws @ count
    alpha = (1.0 - level) / 2.0

    def estimate(value: float, boots: np.ndarray) -> Estimate:
        boots = boots[np.isfinite(boots)]
        if not np.isfinite(value) or boots.size == 0:
            return Estimate(float("nan"), float("nan"), float("nan"))
        low, high = np.quantile(boots, [alpha, 1.0 - alpha])
        return Estimate(scale * value, scale * float(low), scale * float(high))

    total_w = float(w.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        snips_boot = boot_wr / boot_w
    return {
        "ips": estimate(float((w * r).sum()) / len(r), boot_wr / boot_n),
        "snips": estimate(
            float((w * r).sum()) / total_w if total_w > 0 else float("nan"), snips_boot
        ),
    }


def on_policy_value(
    reward: np.ndarray,
    clusters: np.ndarray,
    *,
    scale: float = 1.0,
    n_boot: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """The logged policy's own mean reward (all weights 1), with the same bootstrap."""
    r = np.asarray(reward, dtype=float)
    ones = np.ones(len(r))
    return off_policy_value(
        r, ones, ones, clusters, scale=scale, n_boot=n_boot, level=level, seed=seed
    )["ips"]


def _logit(scores: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(scores, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(clipped / (1 - clipped))


class Calibrator:
    """Maps a classifier's scores to calibrated probabilities (fitted by ``fit_calibrator``)."""

    def __init__(self, method: str, model: Any) -> None:
        self.method = method
        self._model = model

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities in [0, 1]."""
        s = np.asarray(scores, dtype=float)
        if self.method == "isotonic":
            return np.clip(np.asarray(self._model.predict(s), dtype=float), 0.0, 1.0)
        return np.asarray(self._model.predict_proba(_logit(s).reshape(-1, 1))[:, 1], dtype=float)


def fit_calibrator(scores: np.ndarray, labels: np.ndarray, method: str = "isotonic") -> Calibrator:
    """Fit an isotonic or Platt calibrator on held-out ``scores`` and 0/1 ``labels``.

    Raises:
        ValueError: for an unknown method, fewer than 2 rows or a single class.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=float)
    if method not in ("isotonic", "platt"):
        raise ValueError(f"unknown calibration method {method!r}; use 'isotonic' or 'platt'")
    if len(s) < 2 or len(s) != len(y):
        raise ValueError("calibration needs at least 2 scored rows with labels")
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs both classes in its labels")
    if method == "isotonic":
        model: Any = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        model.fit(s, y)
    else:
        model = LogisticRegression(C=1e6)
        model.fit(_logit(s).reshape(-1, 1), y.astype(int))
    return Calibrator(method, model)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """Weighted mean |observed rate - mean probability| over equal-width probability bins."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels, dtype=float)
    if len(p) == 0:
        raise ValueError("no probabilities to assess")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        mask = bins == b
        total += mask.sum() / len(p) * abs(y[mask].mean() - p[mask].mean())
    return float(total)


def binary_metrics(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict[str, float]:
    """AUC (NaN with one class), log loss, ECE, the positive rate and the mean probability."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels, dtype=float)
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    return {
        "auc": auc,
        "log_loss": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])),
        "ece": expected_calibration_error(p, y, n_bins),
        "positive_rate": float(y.mean()),
        "mean_prob": float(p.mean()),
        "n": float(len(y)),
    }
