"""Off-policy estimators and calibration against cases with known answers."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from fitpulse_orchestration.push.estimators import (
    Estimate,
    binary_metrics,
    expected_calibration_error,
    fit_calibrator,
    off_policy_value,
    on_policy_value,
)

P_OPEN_SEND = 0.3
P_OPEN_SKIP = 0.1
P_LOG_SEND = 0.2


def _bandit(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logged decisions of a policy sending with probability 0.2: (sent, reward, propensity)."""
    sent = rng.random(n) < P_LOG_SEND
    reward = (rng.random(n) < np.where(sent, P_OPEN_SEND, P_OPEN_SKIP)).astype(float)
    propensity = np.where(sent, P_LOG_SEND, 1.0 - P_LOG_SEND)
    return sent, reward, propensity


def test_ips_and_snips_by_hand() -> None:
    reward = np.array([1.0, 0.0, 2.0, 1.0])
    target = np.array([1.0, 0.0, 1.0, 0.5])
    prop = np.array([0.5, 0.5, 0.25, 1.0])
    est = off_policy_value(reward, target, prop, np.array(["a", "b", "c", "d"]), n_boot=50)
    # w = 2, 0, 4, 0.5 -> sum(w r) = 2 + 0 + 8 + 0.5 = 10.5, sum(w) = 6.5, n = 4
    assert abs(est["ips"].value - 10.5 / 4) <= 1e-12
    assert abs(est["snips"].value - 10.5 / 6.5) <= 1e-12
    for e in est.values():
        assert e.low <= e.value <= e.high


def test_scale_multiplies_value_and_bounds() -> None:
    rng = np.random.default_rng(1)
    sent, reward, prop = _bandit(3_000, rng)
    users = rng.integers(0, 300, size=sent.size)
    target = sent.astype(float)
    base = off_policy_value(reward, target, prop, users, n_boot=200, seed=4)
    scaled = off_policy_value(reward, target, prop, users, scale=7.0, n_boot=200, seed=4)
    for name in ("ips", "snips"):
        b, s = base[name], scaled[name]
        assert b.low < b.high
        assert s.value == pytest.approx(7 * b.value, rel=1e-12)
        assert s.low == pytest.approx(7 * b.low, rel=1e-12)
        assert s.high == pytest.approx(7 * b.high, rel=1e-12)
    on = on_policy_value(reward, users, n_boot=200, seed=4)
    on_scaled = on_policy_value(reward, users, scale=7.0, n_boot=200, seed=4)
    assert (on_scaled.value, on_scaled.low, on_scaled.high) == pytest.approx(
        (7 * on.value, 7 * on.low, 7 * on.high), rel=1e-12
    )


def test_target_equal_to_logger_gives_the_logged_mean() -> None:
    rng = np.random.default_rng(2)
    # A stochastic logger with varying propensities; the target is the same policy, so it
    # takes each logged action with the logged propensity: every weight is 1.
    p_send = rng.uniform(0.05, 0.95, size=1_000)
    sent = rng.random(p_send.size) < p_send
    prop = np.where(sent, p_send, 1.0 - p_send)
    reward = rng.poisson(np.where(sent, 2.0, 0.5)).astype(float)
    users = rng.integers(0, 100, size=p_send.size)
    est = off_policy_value(reward, prop, prop, users, n_boot=100)
    assert abs(est["snips"].value - reward.mean()) <= 1e-12
    assert abs(est["ips"].value - reward.mean()) <= 1e-12
    logged = on_policy_value(reward, users, n_boot=100)
    assert logged == est["snips"] == est["ips"]


def test_recovers_known_values_of_always_send_and_never_send() -> None:
    rng = np.random.default_rng(3)
    sent, reward, prop = _bandit(50_000, rng)
    users = rng.integers(0, 5_000, size=sent.size)
    always = off_policy_value(reward, sent.astype(float), prop, users, n_boot=300)
    never = off_policy_value(reward, (~sent).astype(float), prop, users, n_boot=300)
    for truth, ests in ((P_OPEN_SEND, always), (P_OPEN_SKIP, never)):
        for est in ests.values():
            assert est.value == pytest.approx(truth, abs=0.01)
            assert est.low <= truth <= est.high
            assert est.high - est.low < 0.05
    # Off-policy estimates of the always-send policy are noisier than of the never-send one
    # (weights 5 on 20% of the decisions vs 1.25 on 80%).
    assert always["ips"].high - always["ips"].low > never["ips"].high - never["ips"].low


def test_clusters_widen_the_interval_of_correlated_decisions() -> None:
    rng = np.random.default_rng(6)
    # 200 users with 50 decisions each whose open rates differ by user: resampling users must
    # give a wider interval than pretending every decision is its own cluster.
    users = np.repeat(np.arange(200), 50)
    rate = rng.uniform(0.0, 0.6, size=200)[users]
    reward = (rng.random(users.size) < rate).astype(float)
    by_user = on_policy_value(reward, users, n_boot=300)
    by_row = on_policy_value(reward, np.arange(users.size), n_boot=300)
    assert by_user.value == by_row.value
    assert by_user.high - by_user.low > 2 * (by_row.high - by_row.low)
    # Cluster ids of any hashable type resample alike (codes follow first appearance).
    as_text = on_policy_value(reward, np.array([f"u{u}" for u in users], dtype=object), n_boot=300)
    assert as_text == by_user


def test_snips_interval_covers_the_truth_most_of_the_time() -> None:
    rng = np.random.default_rng(11)
    covered = 0
    for seed in range(100):
        sent, reward, prop = _bandit(2_000, rng)
        users = rng.integers(0, 400, size=sent.size)
        est = off_policy_value(reward, sent.astype(float), prop, users, n_boot=200, seed=seed)
        covered += est["snips"].low <= P_OPEN_SEND <= est["snips"].high
    assert covered >= 85


def test_snips_is_nan_when_the_target_never_agrees_with_the_log() -> None:
    est = off_policy_value(np.ones(3), np.zeros(3), np.full(3, 0.5), np.arange(3), n_boot=20)
    assert est["ips"] == Estimate(0.0, 0.0, 0.0)
    assert all(np.isnan([est["snips"].value, est["snips"].low, est["snips"].high]))


def test_off_policy_is_fast_on_100k_decisions() -> None:
    rng = np.random.default_rng(8)
    sent, reward, prop = _bandit(100_000, rng)
    users = rng.integers(0, 20_000, size=sent.size).astype(str).astype(object)
    start = time.perf_counter()
    off_policy_value(reward, sent.astype(float), prop, users, n_boot=500)
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"propensity": np.array([1.0, 0.0, 0.5])}, "propensit"),
        ({"propensity": np.array([1.0, 1.5, 0.5])}, "propensit"),
        ({"propensity": np.array([1.0, np.nan, 0.5])}, "propensit"),
        ({"target_prob": np.array([1.0, -0.1, 0.5])}, "target_prob"),
        ({"target_prob": np.array([1.0, 1.1, 0.5])}, "target_prob"),
        ({"reward": np.array([1.0, np.inf, 0.5])}, "finite"),
        ({"reward": np.array([1.0, np.nan, 0.5])}, "finite"),
        ({"clusters": np.arange(2)}, "equal lengths"),
        ({"target_prob": np.ones(2)}, "equal lengths"),
        ({"reward": np.ones((3, 1))}, "one-dimensional"),
        ({"level": 1.0}, "level"),
        ({"level": 0.0}, "level"),
        ({"n_boot": 0}, "n_boot"),
        ({"scale": 0.0}, "scale"),
    ],
)
def test_input_validation(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "reward": np.ones(3),
        "target_prob": np.ones(3),
        "propensity": np.ones(3),
        "clusters": np.arange(3),
    } | kwargs
    with pytest.raises(ValueError, match=match):
        off_policy_value(**args)  # type: ignore[arg-type]


def test_empty_log_is_an_error() -> None:
    empty = np.array([])
    with pytest.raises(ValueError, match="no logged"):
        off_policy_value(empty, empty, empty, empty)
    with pytest.raises(ValueError, match="no logged"):
        on_policy_value(empty, empty)


def test_expected_calibration_error_known_values() -> None:
    assert expected_calibration_error(np.full(4, 0.8), np.array([1, 1, 0, 0])) == pytest.approx(
        0.3, abs=1e-12
    )
    # Two bins: {0.1, 0.3} with labels {0, 1} -> |0.5 - 0.2| * 2/4; {1.0, 0.9} (1.0 is in the
    # closed last bin, not a bin of its own) with labels {0, 1} -> |0.5 - 0.95| * 2/4.
    probs = np.array([0.1, 0.3, 1.0, 0.9])
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(
        0.3 * 0.5 + 0.45 * 0.5, abs=1e-12
    )
    # Ten bins: 0.1 and 0.3 are alone in theirs -> 0.1/4 + 0.7/4, and the last bin as above.
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(
        0.1 * 0.25 + 0.7 * 0.25 + 0.45 * 0.5, abs=1e-12
    )
    rng = np.random.default_rng(5)
    p = rng.random(200_000)
    assert expected_calibration_error(p, (rng.random(p.size) < p).astype(float)) < 0.02
    with pytest.raises(ValueError, match="probs"):
        expected_calibration_error(np.array([1.2]), np.array([1]))
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error(np.array([0.2]), np.array([2]))
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(np.array([0.2]), np.array([1]), n_bins=0)


def _miscalibrated(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scores sigmoid(3x + 1) of outcomes whose true probability is sigmoid(x)."""
    x = rng.normal(size=n)
    truth = 1 / (1 + np.exp(-x))
    return 1 / (1 + np.exp(-(3 * x + 1))), (rng.random(n) < truth).astype(float)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_repairs_a_miscalibrated_score(method: str) -> None:
    rng = np.random.default_rng(9)
    fit_scores, fit_labels = _miscalibrated(20_000, rng)
    scores, labels = _miscalibrated(20_000, rng)
    calibrator = fit_calibrator(fit_scores, fit_labels, method)
    assert calibrator.method == method
    calibrated = calibrator.predict(scores)
    assert np.all((calibrated >= 0) & (calibrated <= 1))
    before = binary_metrics(scores, labels)
    after = binary_metrics(calibrated, labels)
    assert before["ece"] > 0.1
    assert after["ece"] < 0.03
    assert after["log_loss"] < before["log_loss"]
    assert after["auc"] > before["auc"] - 0.01
    assert after["mean_prob"] == pytest.approx(after["positive_rate"], abs=0.02)
    clone = pickle.loads(pickle.dumps(calibrator))
    assert clone.method == method
    assert np.array_equal(clone.predict(scores), calibrated)


def test_isotonic_clips_scores_outside_the_fitted_range() -> None:
    calibrator = fit_calibrator(np.array([0.2, 0.4, 0.6, 0.8]), np.array([0, 0, 1, 1]))
    out = calibrator.predict(np.array([-5.0, 0.0, 1.0, 9.0]))
    assert np.array_equal(out, [0.0, 0.0, 1.0, 1.0])


def test_fit_calibrator_validation() -> None:
    with pytest.raises(ValueError, match="both classes"):
        fit_calibrator(np.array([0.1, 0.2]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="unknown calibration"):
        fit_calibrator(np.array([0.1, 0.2]), np.array([0.0, 1.0]), "beta")
    with pytest.raises(ValueError, match="at least 2"):
        fit_calibrator(np.array([0.1]), np.array([1.0]))
    with pytest.raises(ValueError, match="equal lengths"):
        fit_calibrator(np.array([0.1, 0.2, 0.3]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="finite"):
        fit_calibrator(np.array([0.1, np.nan]), np.array([0.0, 1.0]))


def test_binary_metrics_by_hand() -> None:
    probs = np.array([0.0, 1.0, 0.2, 0.9])
    labels = np.array([0, 1, 0, 1])
    metrics = binary_metrics(probs, labels)
    assert metrics["auc"] == 1.0
    expected_loss = -(np.log(1 - 1e-6) + np.log(1 - 1e-6) + np.log(0.8) + np.log(0.9)) / 4
    assert metrics["log_loss"] == pytest.approx(expected_loss, rel=1e-9)
    assert metrics["positive_rate"] == 0.5
    assert metrics["mean_prob"] == pytest.approx(0.525)
    assert metrics["n"] == 4
    # A confident mistake stays finite thanks to the clipping; one class gives no AUC.
    wrong = binary_metrics(np.array([1.0, 0.0]), np.array([0, 1]))
    assert wrong["auc"] == 0.0
    assert wrong["log_loss"] == pytest.approx(-np.log(1e-6), rel=1e-6)
    single = binary_metrics(np.array([0.3, 0.6]), np.array([1, 1]))
    assert np.isnan(single["auc"])
    assert np.isfinite(single["log_loss"])
