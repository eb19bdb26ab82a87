"""Off-policy value estimates and probability calibration for the push models.

Off-policy evaluation (a contextual bandit with two actions per decision: send or skip):

* ``off_policy_value``: inverse propensity scoring (IPS) and self-normalized IPS (SNIPS) of a
  target policy from decisions logged by another. With ``w = target_prob / propensity`` per
  logged decision, ``IPS = sum(w * r) / n`` (unbiased when every propensity is right and
  positive) and ``SNIPS = sum(w * r) / sum(w)`` (slightly biased, much lower variance, and
  exactly the logged mean when the target is the logging policy).
* ``on_policy_value``: the logged policy's own mean reward, through the same code (all weights 1).

Intervals are percentile bootstraps over *clusters* (users): one user's decisions are
correlated, so resampling decisions would understate the variance. Each estimator is a ratio of
sums, so a resample needs only the per-cluster sums of ``w * r``, ``w`` and the decision count:
the bootstrap draws cluster indices in chunks and sums those three columns, which is fast for
100K decisions and 500 resamples whatever the number of rows per user.

Calibration (held-out scores of a classifier to probabilities):

* ``fit_calibrator``: isotonic regression or Platt scaling (a logistic regression on the logit of
  the score); the returned ``Calibrator`` pickles.
* ``expected_calibration_error`` and ``binary_metrics`` report how well probabilities match the
  observed rates (ECE, log loss) and how well they rank (AUC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

ESTIMATORS: Final = ("ips", "snips")
CALIBRATION_METHODS: Final = ("isotonic", "platt")
_BOOT_CHUNK_CELLS: Final = 4_000_000
"""Resampled cluster indices drawn at once (32 MB of int64): bounds memory for 100K+ users."""
_LOGIT_CLIP: Final = 1e-6
"""Scores are clipped to ``[_LOGIT_CLIP, 1 - _LOGIT_CLIP]`` before Platt's logit."""
_LOG_LOSS_CLIP: Final = 1e-6
"""Probabilities are clipped to ``[_LOG_LOSS_CLIP, 1 - _LOG_LOSS_CLIP]`` in ``log_loss``."""
_PLATT_C: Final = 1e6
"""Inverse regularization of Platt scaling: practically none, yet finite on separable data."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its percentile bootstrap interval.

    Attributes:
        value: the estimate on the whole sample.
        low: lower end of the interval (NaN when ``value`` is NaN).
        high: upper end of the interval (NaN when ``value`` is NaN).
    """

    value: float
    low: float
    high: float


_NAN_ESTIMATE: Final = Estimate(float("nan"), float("nan"), float("nan"))


def _vector(name: str, values: Any) -> np.ndarray:
    """``values`` as a 1-D float array; ValueError when it is not one-dimensional."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _check_bootstrap(scale: float, n_boot: int, level: float) -> None:
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _cluster_codes(clusters: Any, n: int) -> tuple[np.ndarray, int]:
    """Integer codes ``0..k-1`` of ``clusters`` (any hashable values) and ``k``.

    Missing values (None, NaN) form one cluster of their own rather than being dropped.
    """
    values = np.asarray(clusters)
    if values.ndim != 1:
        raise ValueError(f"clusters must be one-dimensional, got shape {values.shape}")
    if len(values) != n:
        raise ValueError(
            "reward, target_prob, propensity and clusters must have equal lengths, "
            f"got {n} rewards and {len(values)} clusters"
        )
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64), len(uniques)


def _bootstrap_sums(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Column sums of ``values`` (clusters x m) over ``n_boot`` resamples of its rows.

    Each resample draws as many clusters as there are, with replacement. Returns n_boot x m.
    """
    n_clusters, m = values.shape
    sums = np.empty((n_boot, m))
    columns = [np.ascontiguousarray(values[:, j]) for j in range(m)]
    chunk = max(1, _BOOT_CHUNK_CELLS // n_clusters)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        idx = rng.integers(0, n_clusters, size=(stop - start, n_clusters))
        for j, column in enumerate(columns):
            sums[start:stop, j] = column[idx].sum(axis=1)
    return sums


def _interval(value: float, replicates: np.ndarray, scale: float, level: float) -> Estimate:
    """``value`` and the percentile interval of its finite ``replicates``, all times ``scale``.

    Replicates that are not finite (a SNIPS resample without any weight) are left out.
    """
    finite = replicates[np.isfinite(replicates)]
    if not np.isfinite(value) or finite.size == 0:
        return _NAN_ESTIMATE
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return Estimate(scale * value, scale * float(low), scale * float(high))


def _weighted_estimates(
    reward: np.ndarray,
    weight: np.ndarray,
    clusters: Any,
    scale: float,
    n_boot: int,
    level: float,
    seed: int,
) -> dict[str, Estimate]:
    """IPS and SNIPS of validated rewards and importance weights, with cluster bootstraps."""
    codes, n_clusters = _cluster_codes(clusters, len(reward))
    weighted = weight * reward
    total_wr = float(weighted.sum())
    total_w = float(weight.sum())
    ips = total_wr / len(reward)
    snips = total_wr / total_w if total_w > 0 else float("nan")

    per_cluster = np.column_stack(
        [
            np.bincount(codes, weights=weighted, minlength=n_clusters),
            np.bincount(codes, weights=weight, minlength=n_clusters),
            np.bincount(codes, minlength=n_clusters).astype(float),
        ]
    )
    boot = _bootstrap_sums(per_cluster, n_boot, np.random.default_rng(seed))
    boot_wr, boot_w, boot_n = boot[:, 0], boot[:, 1], boot[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        boot_snips = np.where(boot_w > 0, boot_wr / boot_w, np.nan)
    return {
        "ips": _interval(ips, boot_wr / boot_n, scale, level),
        "snips": _interval(snips, boot_snips, scale, level),
    }


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
        reward: outcome of each logged decision (finite).
        target_prob: probability that the evaluated policy takes the *logged* action, in
            [0, 1] (0 or 1 for a deterministic policy: whether it agrees with the log).
        propensity: probability with which the logging policy took the logged action, in
            (0, 1].
        clusters: resampling unit of the bootstrap (user ids), one per decision, of any
            hashable values; missing ids form one cluster.
        scale: positive factor applied to the estimates and their intervals (e.g. decisions
            per user-week, to turn a per-decision value into a per-user-week one).
        n_boot: bootstrap resamples.
        level: coverage of the percentile intervals, in (0, 1).
        seed: seed of the resampling; equal inputs and seed give equal intervals.

    Returns:
        ``{"ips": ..., "snips": ...}``. SNIPS, its interval included, is NaN when no logged
        decision has a positive weight (the target never takes a logged action); its interval
        then leaves out the resamples without weight.

    Raises:
        ValueError: on empty or unequal-length inputs, a propensity outside (0, 1], a
            target probability outside [0, 1], a reward that is not finite, or invalid
            ``scale``, ``n_boot`` or ``level``.
    """
    r = _vector("reward", reward)
    t = _vector("target_prob", target_prob)
    p = _vector("propensity", propensity)
    n = len(r)
    if not len(t) == len(p) == n:
        raise ValueError(
            "reward, target_prob, propensity and clusters must have equal lengths, "
            f"got {n}, {len(t)} and {len(p)}"
        )
    if n == 0:
        raise ValueError("no logged decisions to evaluate")
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards must be finite")
    if not np.all((p > 0) & (p <= 1)):
        raise ValueError(
            "propensities must be in (0, 1]: a logged action cannot have probability 0"
        )
    if not np.all((t >= 0) & (t <= 1)):
        raise ValueError("target_prob must be in [0, 1]")
    _check_bootstrap(scale, n_boot, level)
    return _weighted_estimates(r, t / p, clusters, scale, n_boot, level, seed)


def on_policy_value(
    reward: np.ndarray,
    clusters: np.ndarray,
    *,
    scale: float = 1.0,
    n_boot: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """The logged policy's own mean reward, times ``scale``, with the same cluster bootstrap.

    This is ``off_policy_value`` with every weight 1 (IPS and SNIPS coincide), so its interval
    is comparable with the off-policy ones.

    Args:
        reward: outcome of each logged decision (finite).
        clusters: resampling unit of the bootstrap (user ids), one per decision.
        scale: positive factor applied to the estimate and its interval.
        n_boot: bootstrap resamples.
        level: coverage of the percentile interval, in (0, 1).
        seed: seed of the resampling.

    Returns:
        The mean reward and its interval.

    Raises:
        ValueError: as ``off_policy_value``.
    """
    r = _vector("reward", reward)
    ones = np.ones(len(r))
    return off_policy_value(
        r, ones, ones, clusters, scale=scale, n_boot=n_boot, level=level, seed=seed
    )["ips"]


def _logit(scores: np.ndarray) -> np.ndarray:
    """Logit of ``scores`` clipped to ``[_LOGIT_CLIP, 1 - _LOGIT_CLIP]``, as one column."""
    clipped = np.clip(scores, _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
    return np.log(clipped / (1.0 - clipped)).reshape(-1, 1)


def _binary_labels(labels: Any, n: int) -> np.ndarray:
    """``labels`` as a float array of 0 and 1 with ``n`` entries; ValueError otherwise."""
    y = _vector("labels", labels)
    if len(y) != n:
        raise ValueError(f"scores/probs and labels must have equal lengths, got {n} and {len(y)}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    return y


class Calibrator:
    """Maps a classifier's scores to calibrated probabilities (fitted by ``fit_calibrator``).

    Attributes:
        method: ``"isotonic"`` or ``"platt"``.
    """

    def __init__(self, method: str, model: Any) -> None:
        if method not in CALIBRATION_METHODS:
            raise ValueError(
                f"unknown calibration method {method!r}; use one of {CALIBRATION_METHODS}"
            )
        self.method = method
        self._model = model

    def __repr__(self) -> str:
        return f"Calibrator(method={self.method!r})"

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``scores``.

        Args:
            scores: the classifier's raw scores, on the scale the calibrator was fitted on.

        Returns:
            One probability in [0, 1] per score. Isotonic calibration maps scores outside the
            fitted range to the probability at the nearest end.
        """
        s = _vector("scores", scores)
        if self.method == "isotonic":
            out = np.asarray(self._model.predict(s), dtype=float)
        else:
            out = np.asarray(self._model.predict_proba(_logit(s))[:, 1], dtype=float)
        return np.clip(out, 0.0, 1.0)


def fit_calibrator(scores: np.ndarray, labels: np.ndarray, method: str = "isotonic") -> Calibrator:
    """Fit an isotonic or Platt calibrator on held-out ``scores`` and 0/1 ``labels``.

    Args:
        scores: the classifier's scores on data it was not trained on (finite; for Platt
            scaling probabilities, whose clipped logit is the feature).
        labels: the observed outcomes, 0 or 1.
        method: ``"isotonic"`` (a monotone step function, ``IsotonicRegression`` with
            ``out_of_bounds="clip"``) or ``"platt"`` (a logistic regression on
            ``logit(clip(scores))``).

    Returns:
        The fitted calibrator.

    Raises:
        ValueError: for an unknown method, fewer than 2 rows, unequal lengths, scores that are
            not finite, labels other than 0/1, or labels of a single class.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; use one of {CALIBRATION_METHODS}")
    s = _vector("scores", scores)
    y = _binary_labels(labels, len(s))
    if len(s) < 2:
        raise ValueError(f"calibration needs at least 2 scored rows, got {len(s)}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs both classes in its labels")
    model: Any
    if method == "isotonic":
        model = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        model.fit(s, y)
    else:
        model = LogisticRegression(C=_PLATT_C)
        model.fit(_logit(s), y.astype(int))
    return Calibrator(method, model)


def _probabilities(probs: Any) -> np.ndarray:
    p = _vector("probs", probs)
    if len(p) == 0:
        raise ValueError("no probabilities to assess")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("probs must be in [0, 1]")
    return p


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins.

    The bins split [0, 1] into ``n_bins`` intervals ``[i / n_bins, (i + 1) / n_bins)``, the last
    one closed. ECE is the sum over non-empty bins of ``(bin count / n) * |mean(label) -
    mean(prob)|``.

    Args:
        probs: predicted probabilities, in [0, 1].
        labels: observed outcomes, 0 or 1.
        n_bins: number of bins (at least 1).

    Returns:
        The ECE, in [0, 1].

    Raises:
        ValueError: on empty or unequal-length inputs, probabilities outside [0, 1], labels
            other than 0/1, or ``n_bins`` below 1.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    p = _probabilities(probs)
    y = _binary_labels(labels, len(p))
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(
        np.bincount(bins, weights=y, minlength=n_bins)
        - np.bincount(bins, weights=p, minlength=n_bins)
    )
    # |mean(y) - mean(p)| * count / n == |sum(y) - sum(p)| / n in each bin.
    return float(gap[count > 0].sum() / len(p))


def binary_metrics(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict[str, float]:
    """Ranking and calibration metrics of predicted probabilities.

    Args:
        probs: predicted probabilities, in [0, 1].
        labels: observed outcomes, 0 or 1.
        n_bins: bins of the ECE.

    Returns:
        ``auc`` (ROC AUC; NaN when the labels have one class), ``log_loss`` (probabilities
        clipped to ``[1e-6, 1 - 1e-6]``, so finite even for confident mistakes), ``ece``,
        ``positive_rate`` (mean label), ``mean_prob`` and ``n`` (rows, as a float).

    Raises:
        ValueError: as ``expected_calibration_error``.
    """
    p = _probabilities(probs)
    y = _binary_labels(labels, len(p))
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    clipped = np.clip(p, _LOG_LOSS_CLIP, 1.0 - _LOG_LOSS_CLIP)
    return {
        "auc": auc,
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "ece": expected_calibration_error(p, y, n_bins),
        "positive_rate": float(y.mean()),
        "mean_prob": float(p.mean()),
        "n": float(len(y)),
    }
