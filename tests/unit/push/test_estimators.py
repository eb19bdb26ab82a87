"""Off-policy estimators and calibration against cases with known answers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fitpulse_orchestration.push.estimators import (
    binary_metrics,
    expected_calibration_error,
    fit_calibrator,
    off_policy_value,
    on_policy_value,
)


def test_ips_and_snips_by_hand() -> None:
    reward = np.array([1.0, 0.0, 2.0, 1.0])
    target = np.array([1.0, 0.0, 1.0, 1.0])
    prop = np.array([0.5, 0.5, 0.25, 1.0])
    est = off_policy_value(reward, target, prop, np.array(["a", "b", "c", "d"]), n_boot=50)
    # weights 2, 0, 4, 1 -> sum(w r) = 2 + 8 + 1 = 11
    assert est["ips"].value == pytest.approx(11 / 4, abs=1e-12)
    assert est["snips"].value == pytest.approx(11 / 7, abs=1e-12)
    scaled = off_policy_value(reward, target, prop, np.arange(4), scale=7.0, n_boot=50)
    assert scaled["ips"].value == pytest.approx(7 * 11 / 4)
    assert scaled["ips"].low == pytest.approx(7 * est["ips"].low)


def _bandit(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    send = rng.random(n) < 0.2
    reward = np.where(send, rng.random(n) < 0.3, rng.random(n) < 0.1).astype(float)
    prop = np.where(send, 0.2, 0.8)
    return send, reward, prop


def test_recovers_known_values_of_always_send_and_never_send() -> None:
    rng = np.random.default_rng(3)
    send, reward, prop = _bandit(50_000, rng)
    users = rng.integers(0, 5_000, size=send.size)
    always = off_policy_value(reward, send.astype(float), prop, users, n_boot=300)
    never = off_policy_value(reward, (~send).astype(float), prop, users, n_boot=300)
    # Within about 3 standard errors (the 95% interval is about 4 wide): one draw may fall
    # just outside its own 95% interval; the coverage test checks the rate.
    for truth, ests in ((0.3, always), (0.1, never)):
        for est in ests.values():
            assert est.value == pytest.approx(truth, abs=0.01)
            assert abs(est.value - truth) <= 0.75 * (est.high - est.low)
    logged = on_policy_value(reward, users, n_boot=100)
    assert logged.value == pytest.approx(reward.mean(), abs=1e-12)


def test_snips_interval_covers_the_truth_most_of_the_time() -> None:
    rng = np.random.default_rng(11)
    covered = 0
    for seed in range(100):
        send, reward, prop = _bandit(2_000, rng)
        est = off_policy_value(
            reward, send.astype(float), prop, np.arange(send.size), n_boot=200, seed=seed
        )["snips"]
        covered += est.low <= 0.3 <= est.high
    assert covered >= 85


def test_input_validation() -> None:
    ones = np.ones(3)
    with pytest.raises(ValueError, match="propensit"):
        off_policy_value(ones, ones, np.array([1.0, 0.0, 0.5]), np.arange(3))
    with pytest.raises(ValueError, match="equal lengths"):
        off_policy_value(ones, ones, ones, np.arange(2))
    with pytest.raises(ValueError, match="no logged"):
        off_policy_value(np.array([]), np.array([]), np.array([]), np.array([]))


def test_expected_calibration_error_known_values() -> None:
    assert expected_calibration_error(np.full(4, 0.8), np.array([1, 1, 0, 0])) == pytest.approx(0.3)
    rng = np.random.default_rng(5)
    p = rng.random(200_000)
    assert expected_calibration_error(p, (rng.random(p.size) < p).astype(float)) < 0.02


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_repairs_a_miscalibrated_score(method: str) -> None:
    rng = np.random.default_rng(9)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=n)
        truth = 1 / (1 + np.exp(-x))
        return 1 / (1 + np.exp(-(3 * x + 1))), (rng.random(n) < truth).astype(float)

    fit_scores, fit_labels = sample(20_000)
    scores, labels = sample(20_000)
    calibrator = fit_calibrator(fit_scores, fit_labels, method)
    before = binary_metrics(scores, labels)
    after = binary_metrics(calibrator.predict(scores), labels)
    assert after["ece"] < before["ece"] / 3
    assert after["log_loss"] < before["log_loss"]
    assert after["auc"] > before["auc"] - 0.01
    clone = pickle.loads(pickle.dumps(calibrator))
    assert np.array_equal(clone.predict(scores[:100]), calibrator.predict(scores[:100]))


def test_calibrator_and_metrics_edge_cases() -> None:
    with pytest.raises(ValueError, match="both classes"):
        fit_calibrator(np.array([0.1, 0.2]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="unknown calibration"):
        fit_calibrator(np.array([0.1, 0.2]), np.array([0.0, 1.0]), "beta")
    metrics = binary_metrics(np.array([0.0, 1.0, 0.2, 0.9]), np.array([0, 1, 0, 1]))
    assert metrics["auc"] == 1.0
    assert np.isfinite(metrics["log_loss"])
