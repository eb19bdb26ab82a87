from __future__ import annotations

import json
import math

import numpy as np
import pytest

from model_registry.gate import (
    CHECK_NAMES,
    GateDecision,
    GatePolicy,
    ModelScores,
    bootstrap_mean_diff,
    decide_promotion,
    decide_stage_value,
    gate_from_dict,
)

POLICY = GatePolicy(bootstrap_samples=500)
USERS = [f"u{i:02d}" for i in range(20)]
COLD_USERS = [f"c{i:02d}" for i in range(8)]
"""Every cold user of a model gets the same NDCG, so the cold slice's interval is a point."""


def scores(
    label: str,
    ndcg: dict[str, float],
    cold: float = 0.5,
    coverage: float = 0.5,
    violations: int = 0,
    latency: float | None = 10.0,
) -> ModelScores:
    return ModelScores(
        label=label,
        ndcg_by_user=ndcg,
        cold_ndcg_by_user=dict.fromkeys(COLD_USERS, cold),
        coverage=coverage,
        beginner_violations=violations,
        scoring_p99_ms=latency,
    )


def baseline(cold: float = 0.5, coverage: float = 0.5) -> ModelScores:
    """Popularity-like baseline (no latency): NDCG 0.30 .. 0.34 per user."""
    ndcg = {u: 0.30 + 0.01 * (i % 5) for i, u in enumerate(USERS)}
    return scores("popularity", ndcg, cold=cold, coverage=coverage, latency=None)


def better(
    cold: float = 0.5, coverage: float = 0.5, violations: int = 0, latency: float | None = 10.0
) -> ModelScores:
    """Every user gains between 0.16 and 0.24 NDCG over ``baseline``."""
    ndcg = {u: 0.50 + 0.02 * (i % 3) for i, u in enumerate(USERS)}
    return scores("candidate-v2", ndcg, cold, coverage, violations, latency)


def failed_names(decision: GateDecision) -> set[str]:
    return {c.name for c in decision.checks if not c.passed}


def test_clearly_better_candidate_passes_every_check() -> None:
    decision = decide_promotion(better(), baseline(), POLICY)

    assert decision.passed
    assert [c.name for c in decision.checks] == list(CHECK_NAMES)
    assert all(c.passed for c in decision.checks)
    assert decision.reasons() == []
    assert (decision.candidate, decision.baseline) == ("candidate-v2", "popularity")
    lift = decision.check("ndcg_lift")
    assert lift.value > 0.16  # the CI lower bound; every user gained at least 0.16
    assert lift.threshold == 0.0


def test_equal_models_fail_ndcg_lift_only() -> None:
    base = baseline()
    same = scores("same", dict(base.ndcg_by_user), latency=10.0)

    decision = decide_promotion(same, base, POLICY)

    assert not decision.passed
    assert failed_names(decision) == {"ndcg_lift"}
    lift = decision.check("ndcg_lift")
    assert lift.value == 0.0  # CI lower bound of an all-zero difference: not above margin 0
    assert "over 20 users" in lift.detail


def test_ndcg_margin_raises_the_bar() -> None:
    strict = GatePolicy(bootstrap_samples=500, ndcg_margin=0.5)

    decision = decide_promotion(better(), baseline(), strict)

    assert failed_names(decision) == {"ndcg_lift"}
    assert decision.check("ndcg_lift").threshold == 0.5


def test_cold_slice_regression_beyond_tolerance_fails_cold_slice_only() -> None:
    decision = decide_promotion(better(cold=0.40), baseline(cold=0.50), POLICY)

    assert failed_names(decision) == {"cold_slice"}
    check = decision.check("cold_slice")
    assert check.value == pytest.approx(-0.10)
    assert check.threshold == -0.01


def test_cold_slice_drop_within_tolerance_passes() -> None:
    policy = GatePolicy(bootstrap_samples=500, cold_ndcg_tolerance=0.25)

    decision = decide_promotion(better(cold=0.25), baseline(cold=0.5), policy)

    assert decision.passed  # a drop of exactly the tolerance is allowed


def test_coverage_drop_beyond_tolerance_fails_coverage_only() -> None:
    decision = decide_promotion(better(coverage=0.40), baseline(coverage=0.60), POLICY)

    assert failed_names(decision) == {"coverage"}
    assert decision.check("coverage").value == pytest.approx(-0.20)
    assert decision.check("coverage").threshold == -0.02


def test_coverage_gain_passes() -> None:
    decision = decide_promotion(better(coverage=0.9), baseline(coverage=0.1), POLICY)

    assert decision.check("coverage").passed


def test_any_beginner_violation_fails_beginner_safety() -> None:
    decision = decide_promotion(better(violations=1), baseline(), POLICY)

    assert failed_names(decision) == {"beginner_safety"}
    check = decision.check("beginner_safety")
    assert (check.value, check.threshold) == (1.0, 0.0)
    assert "1 unsafe items" in check.detail


def test_latency_over_budget_fails_scoring_latency() -> None:
    decision = decide_promotion(better(latency=50.5), baseline(), POLICY)

    assert failed_names(decision) == {"scoring_latency"}
    check = decision.check("scoring_latency")
    assert (check.value, check.threshold) == (50.5, 50.0)


def test_latency_at_budget_passes() -> None:
    decision = decide_promotion(better(latency=50.0), baseline(), POLICY)

    assert decision.check("scoring_latency").passed


def test_unmeasured_latency_fails_scoring_latency_with_nan_value() -> None:
    decision = decide_promotion(better(latency=None), baseline(), POLICY)

    assert failed_names(decision) == {"scoring_latency"}
    check = decision.check("scoring_latency")
    assert math.isnan(check.value)
    assert check.detail == "scoring latency was not measured"


def test_users_missing_from_one_side_count_zero() -> None:
    cand = scores("cand", {"u1": 0.5, "u2": 0.5})
    base = scores("base", {"u1": 0.5, "u2": 0.5, "u3": 0.9})

    decision = decide_promotion(cand, base, POLICY)

    lift = decision.check("ndcg_lift")
    _, low, _ = bootstrap_mean_diff(
        np.array([0.0, 0.0, -0.9]), POLICY.bootstrap_samples, POLICY.confidence, POLICY.seed
    )
    assert lift.value == low
    assert "over 3 users" in lift.detail
    assert "lift -0.3000" in lift.detail
    assert not lift.passed


def test_user_only_in_candidate_counts_zero_for_baseline() -> None:
    cand = scores("cand", {"u1": 0.4, "u2": 0.4})
    base = scores("base", {"u1": 0.4})

    lift = decide_promotion(cand, base, POLICY).check("ndcg_lift")

    assert "over 2 users" in lift.detail
    assert "NDCG@10 0.4000 vs 0.2000" in lift.detail


def test_no_users_raises() -> None:
    with pytest.raises(ValueError, match="no users"):
        decide_promotion(scores("c", {}), scores("b", {}), POLICY)


def test_bootstrap_mean_diff_is_deterministic_for_a_seed() -> None:
    diff = np.random.default_rng(7).normal(0.05, 0.2, size=40)

    first = bootstrap_mean_diff(diff, 300, 0.9, seed=3)
    again = bootstrap_mean_diff(diff, 300, 0.9, seed=3)
    other = bootstrap_mean_diff(diff, 300, 0.9, seed=4)

    assert first == again
    assert other[0] == first[0]
    assert other[1:] != first[1:]


def test_bootstrap_interval_contains_the_mean() -> None:
    diff = np.random.default_rng(7).normal(0.05, 0.2, size=40)

    mean, low, high = bootstrap_mean_diff(diff, 1000, 0.95, seed=7)

    assert mean == pytest.approx(diff.mean())
    assert low < mean < high


def test_bootstrap_wider_confidence_gives_wider_interval() -> None:
    diff = np.random.default_rng(7).normal(0.0, 0.3, size=30)

    _, low90, high90 = bootstrap_mean_diff(diff, 1000, 0.90, seed=7)
    _, low99, high99 = bootstrap_mean_diff(diff, 1000, 0.99, seed=7)

    assert low99 <= low90 < high90 <= high99


def test_bootstrap_of_constant_difference_is_that_constant() -> None:
    assert bootstrap_mean_diff(np.full(5, 0.25), 100, 0.95, seed=1) == (0.25, 0.25, 0.25)
    assert bootstrap_mean_diff(np.array([0.1]), 100, 0.95, seed=1) == pytest.approx((0.1, 0.1, 0.1))


def test_bootstrap_of_no_users_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        bootstrap_mean_diff(np.array([]), 100, 0.95, seed=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confidence": 0.5}, "confidence"),
        ({"confidence": 1.0}, "confidence"),
        ({"bootstrap_samples": 99}, "bootstrap_samples"),
        ({"cold_ndcg_tolerance": -0.01}, "tolerances"),
        ({"coverage_tolerance": -0.01}, "tolerances"),
        ({"latency_budget_ms": 0.0}, "latency_budget_ms"),
    ],
)
def test_gate_policy_rejects_invalid_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GatePolicy(**kwargs)  # type: ignore[arg-type]


def test_gate_policy_accepts_boundary_settings() -> None:
    policy = GatePolicy(bootstrap_samples=100, cold_ndcg_tolerance=0.0, coverage_tolerance=0.0)

    assert policy.bootstrap_samples == 100


def test_as_dict_round_trips_through_json() -> None:
    decision = decide_promotion(better(coverage=0.1), baseline(coverage=0.6), POLICY)

    data = json.loads(json.dumps(decision.as_dict()))
    rebuilt = gate_from_dict(data)

    assert data["passed"] is False
    assert data["candidate"] == "candidate-v2"
    assert [c["name"] for c in data["checks"]] == list(CHECK_NAMES)
    assert rebuilt == decision
    assert rebuilt.passed == decision.passed
    assert rebuilt.summary() == decision.summary()


def test_round_trip_keeps_nan_latency_value() -> None:
    decision = decide_promotion(better(latency=None), baseline(), POLICY)

    rebuilt = gate_from_dict(json.loads(json.dumps(decision.as_dict())))

    latency = rebuilt.check("scoring_latency")
    assert math.isnan(latency.value)
    assert not latency.passed
    assert latency.detail == "scoring latency was not measured"
    assert not rebuilt.passed
    for name in CHECK_NAMES[:-1]:
        assert rebuilt.check(name) == decision.check(name)
    assert rebuilt.reasons() == decision.reasons()


def test_summary_and_reasons_name_the_failed_checks() -> None:
    decision = decide_promotion(
        better(cold=0.1, violations=2), baseline(cold=0.5), GatePolicy(bootstrap_samples=100)
    )

    reasons = decision.reasons()
    assert [r.split(":", 1)[0] for r in reasons] == ["cold_slice", "beginner_safety"]
    summary = decision.summary()
    assert summary.startswith("failed vs popularity (")
    assert "cold_slice:" in summary
    assert "beginner_safety: 2 unsafe items" in summary
    assert "ndcg_lift" not in summary
    assert "coverage" not in summary


def test_summary_of_a_passed_gate_has_no_reasons() -> None:
    decision = decide_promotion(better(), baseline(), POLICY)

    assert decision.summary() == "passed vs popularity"


def test_check_of_unknown_name_raises_key_error() -> None:
    decision = decide_promotion(better(), baseline(), POLICY)

    with pytest.raises(KeyError, match="no gate check 'recall'"):
        decision.check("recall")


def test_stage_check_fails_when_the_served_order_loses_to_a_retriever() -> None:
    users = [f"u{k}" for k in range(40)]
    # The ranker hurts: it demotes what EASE ranked first for every user.
    served = {u: 0.10 + 0.01 * (k % 3) for k, u in enumerate(users)}
    retrievers = {
        "ease_only": {u: 0.30 + 0.01 * (k % 5) for k, u in enumerate(users)},
        "als_only": {u: 0.20 for u in users},
    }

    check = decide_stage_value(served, retrievers)

    assert not check.passed
    assert check.name == "served_feed_beats_retrievers"
    assert "best single retriever ease_only 0.3200" in check.detail
    assert check.value < 0


def test_stage_check_passes_a_tie_and_a_win() -> None:
    users = [f"u{k}" for k in range(40)]
    best = {u: 0.30 + 0.01 * (k % 5) for k, u in enumerate(users)}

    tie = decide_stage_value(dict(best), {"ease_only": best})
    win = decide_stage_value({u: v + 0.05 for u, v in best.items()}, {"ease_only": best})

    assert tie.passed
    assert tie.value == 0.0
    assert win.passed
    with pytest.raises(ValueError, match="no single retriever"):
        decide_stage_value(best, {})
