"""Hand-made gate verdicts shared by the registry tests: one that passes, one that fails."""

from __future__ import annotations

from model_registry.gate import GateDecision, GatePolicy, ModelScores, decide_promotion

POLICY = GatePolicy(bootstrap_samples=100)
USERS = [f"u{i}" for i in range(10)]


def scores(label: str, ndcg: float, violations: int = 0) -> ModelScores:
    """Ten users around ``ndcg``, two cold users at 0.3, coverage 0.5, 5 ms p99."""
    return ModelScores(
        label=label,
        ndcg_by_user={u: ndcg + 0.01 * (i % 3) for i, u in enumerate(USERS)},
        cold_ndcg_by_user={"c0": 0.3, "c1": 0.3},
        coverage=0.5,
        beginner_violations=violations,
        scoring_p99_ms=5.0,
    )


PASSED: GateDecision = decide_promotion(scores("candidate", 0.6), scores("popularity", 0.3), POLICY)
FAILED: GateDecision = decide_promotion(
    scores("candidate", 0.6, violations=3), scores("popularity", 0.3), POLICY
)
"""Fails ``beginner_safety`` only."""
