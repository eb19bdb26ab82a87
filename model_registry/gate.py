"""The promotion policy: a pure decision over evaluation results (no MLflow, no Dagster).

A candidate is compared with a baseline on the same held-out window: the current champion, or
the popularity baseline while no champion exists. It may move on to review only if every check
passes; the decision keeps every check's value and threshold so a reviewer sees why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds of the promotion gate.

    Attributes:
        ndcg_margin: the lower bound of the bootstrap confidence interval of the mean per-user
            NDCG@10 difference (candidate - baseline) must exceed this.
        confidence: two-sided confidence level of that interval.
        bootstrap_samples: paired bootstrap resamples of the evaluated users.
        cold_ndcg_tolerance: largest allowed drop of NDCG@10 on the cold-user slice (absolute):
            the gate fails when the upper bound of the bootstrap interval of the cold users'
            mean difference lies below ``-cold_ndcg_tolerance``, i.e. when the candidate is
            worse beyond the tolerance with the policy's confidence. (The cold slice is a
            fraction of the evaluated users; a point estimate on it would fail good models on
            noise alone.)
        coverage_tolerance: largest allowed drop of catalog coverage (absolute share).
        latency_budget_ms: largest allowed p99 time to score one feed request's candidates.
        seed: seed of the bootstrap.
    """

    ndcg_margin: float = 0.0
    confidence: float = 0.95
    bootstrap_samples: int = 2000
    cold_ndcg_tolerance: float = 0.01
    coverage_tolerance: float = 0.02
    latency_budget_ms: float = 50.0
    seed: int = 7

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0.5, 1), got {self.confidence}")
        if self.bootstrap_samples < 100:
            raise ValueError("bootstrap_samples must be at least 100")
        if self.cold_ndcg_tolerance < 0 or self.coverage_tolerance < 0:
            raise ValueError("tolerances must be >= 0")
        if self.latency_budget_ms <= 0:
            raise ValueError("latency_budget_ms must be > 0")


@dataclass(frozen=True)
class ModelScores:
    """What the gate needs to know about one model on the held-out window.

    ``ndcg_by_user`` maps every evaluated user to that user's NDCG@10 (users the model gave no
    feed count with 0); ``cold_ndcg_by_user`` is the same for the cold users only.
    ``scoring_p99_ms`` is None for a baseline that does not score.
    """

    label: str
    ndcg_by_user: Mapping[str, float]
    cold_ndcg_by_user: Mapping[str, float]
    coverage: float
    beginner_violations: int
    scoring_p99_ms: float | None = None


@dataclass(frozen=True)
class GateCheck:
    """One rule of the policy with the value it saw and the threshold it applied."""

    name: str
    passed: bool
    value: float
    threshold: float
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict: ``passed`` only when every check passed.

    ``policy`` holds the ``GatePolicy`` the verdict was reached under, so a reviewer (and the
    audit log) sees which thresholds applied; ``protocol`` the evaluation protocol the scores
    were measured under (``TimeSplit.describe``).
    """

    candidate: str
    baseline: str
    checks: tuple[GateCheck, ...]
    policy: dict[str, float] = field(default_factory=dict)
    protocol: str = ""

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(c.passed for c in self.checks)

    def reasons(self) -> list[str]:
        """Details of the failed checks (empty when the gate passed)."""
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]

    def check(self, name: str) -> GateCheck:
        """The check called ``name``."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no gate check {name!r}; checks: {[c.name for c in self.checks]}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (for tags, metadata and the audit log)."""
        return {
            "passed": self.passed,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "checks": [asdict(c) for c in self.checks],
            "policy": dict(self.policy),
            "protocol": self.protocol,
        }

    def summary(self) -> str:
        """One line: verdict, baseline and failed checks."""
        verdict = "passed" if self.passed else "failed"
        failed = "; ".join(self.reasons())
        protocol = f" [{self.protocol}]" if self.protocol else ""
        return f"{verdict} vs {self.baseline}{protocol}" + (f" ({failed})" if failed else "")


CHECK_NAMES = ("ndcg_lift", "cold_slice", "coverage", "beginner_safety", "scoring_latency")


def describe_rule(name: str, policy: GatePolicy) -> str:
    """What check ``name`` measures and the threshold ``policy`` gives it, in one paragraph.

    It ends with ``Threshold: value OP T``, where ``value`` and ``T`` are the ``GateCheck``'s
    ``value`` and ``threshold`` that ``decide_promotion`` records under ``policy``.

    Raises:
        KeyError: for a name that is not one of ``CHECK_NAMES``.
    """
    pct = round(policy.confidence * 100)
    cold, cover = policy.cold_ndcg_tolerance, policy.coverage_tolerance
    rules = {
        "ndcg_lift": (
            f"NDCG@10 lift over the baseline (the champion, or popularity while there is none): "
            f"the lower bound of the {pct}% paired bootstrap interval of the per-user difference "
            f"must exceed ndcg_margin. Threshold: value > {policy.ndcg_margin:g}."
        ),
        "cold_slice": (
            f"Cold users' NDCG@10 may not drop by more than cold_ndcg_tolerance ({cold:g}): the "
            f"upper bound of the {pct}% bootstrap interval of their difference must not lie "
            f"below {-cold:g}. Threshold: value >= {-cold:g}."
        ),
        "coverage": (
            f"Catalog coverage (candidate minus baseline) may drop at most coverage_tolerance "
            f"({cover:g}). Threshold: value >= {-cover:g}."
        ),
        "beginner_safety": (
            "Unsafe (advanced, high-intensity or unknown) items in beginners' feeds. "
            "Threshold: value == 0."
        ),
        "scoring_latency": (
            f"p99 time in ms to score one feed request's candidates, within latency_budget_ms. "
            f"Threshold: value <= {policy.latency_budget_ms:g}."
        ),
    }
    if name not in rules:
        raise KeyError(f"no gate check {name!r}; checks: {list(CHECK_NAMES)}")
    return rules[name]


def bootstrap_mean_diff(
    diff: np.ndarray, samples: int, confidence: float, seed: int
) -> tuple[float, float, float]:
    """Mean of ``diff`` (per-user paired differences) and its percentile bootstrap interval.

    Returns:
        ``(mean, low, high)``; all three are the plain mean when there is one user or none
        vary.
    """
    if diff.size == 0:
        raise ValueError("no users to compare: the held-out window is empty")
    mean = float(diff.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(samples, diff.size))
    means = diff[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, float(low), float(high)


def _paired(
    candidate: Mapping[str, float], baseline: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Both models' values over the union of their users (a missing user counts 0)."""
    users = sorted(set(candidate) | set(baseline))
    return (
        np.array([candidate.get(u, 0.0) for u in users], dtype=float),
        np.array([baseline.get(u, 0.0) for u in users], dtype=float),
    )


def decide_promotion(
    candidate: ModelScores, baseline: ModelScores, policy: GatePolicy
) -> GateDecision:
    """Apply every rule of ``policy`` to ``candidate`` against ``baseline``.

    The NDCG comparison is paired: both models are scored on the same users (the union of
    both maps; a user missing from one counts 0 there), and users are resampled together.

    Raises:
        ValueError: when there is no user to compare on.
    """
    cand, base = _paired(candidate.ndcg_by_user, baseline.ndcg_by_user)
    users = cand.size
    mean, low, high = bootstrap_mean_diff(
        cand - base, policy.bootstrap_samples, policy.confidence, policy.seed
    )
    pct = round(policy.confidence * 100)
    cold_cand, cold_base = _paired(candidate.cold_ndcg_by_user, baseline.cold_ndcg_by_user)
    if cold_cand.size:
        cold_mean, _, cold_high = bootstrap_mean_diff(
            cold_cand - cold_base, policy.bootstrap_samples, policy.confidence, policy.seed
        )
        cold_check = GateCheck(
            "cold_slice",
            cold_high >= -policy.cold_ndcg_tolerance,
            cold_high,
            -policy.cold_ndcg_tolerance,
            f"cold-user NDCG@10 {cold_cand.mean():.4f} vs {cold_base.mean():.4f} over "
            f"{cold_cand.size} users; difference {cold_mean:+.4f}, {pct}% CI upper bound "
            f"{cold_high:+.4f} must not lie below {-policy.cold_ndcg_tolerance:+.4f}",
        )
    else:
        cold_check = GateCheck(
            "cold_slice", True, 0.0, -policy.cold_ndcg_tolerance, "no cold users evaluated"
        )
    checks = [
        GateCheck(
            "ndcg_lift",
            low > policy.ndcg_margin,
            low,
            policy.ndcg_margin,
            f"NDCG@10 {cand.mean():.4f} vs {base.mean():.4f} over {users} users; "
            f"lift {mean:+.4f}, {pct}% CI [{low:+.4f}, {high:+.4f}] must lie above "
            f"{policy.ndcg_margin:+.4f}",
        ),
        cold_check,
        GateCheck(
            "coverage",
            candidate.coverage >= baseline.coverage - policy.coverage_tolerance,
            candidate.coverage - baseline.coverage,
            -policy.coverage_tolerance,
            f"catalog coverage {candidate.coverage:.4f} vs {baseline.coverage:.4f} "
            f"(may drop at most {policy.coverage_tolerance:.4f})",
        ),
        GateCheck(
            "beginner_safety",
            candidate.beginner_violations == 0,
            float(candidate.beginner_violations),
            0.0,
            f"{candidate.beginner_violations} unsafe items in beginners' feeds (must be 0)",
        ),
    ]
    latency = candidate.scoring_p99_ms
    checks.append(
        GateCheck(
            "scoring_latency",
            latency is not None and latency <= policy.latency_budget_ms,
            float("nan") if latency is None else latency,
            policy.latency_budget_ms,
            "scoring latency was not measured"
            if latency is None
            else f"p99 scoring time {latency:.2f} ms per request "
            f"(budget {policy.latency_budget_ms:.0f} ms)",
        )
    )
    return GateDecision(
        candidate=candidate.label,
        baseline=baseline.label,
        checks=tuple(checks),
        policy={k: float(v) for k, v in asdict(policy).items()},
    )


def gate_from_dict(data: Mapping[str, Any]) -> GateDecision:
    """Rebuild a decision from ``GateDecision.as_dict`` output."""
    checks = tuple(GateCheck(**c) for c in data["checks"])
    return GateDecision(
        candidate=data["candidate"],
        baseline=data["baseline"],
        checks=checks,
        policy=dict(data.get("policy", {})),
        protocol=str(data.get("protocol", "")),
    )


def decide_stage_value(
    served: Mapping[str, float],
    retrievers: Mapping[str, Mapping[str, float]],
    confidence: float = 0.95,
    samples: int = 2000,
    seed: int = 7,
) -> GateCheck:
    """Does the served order earn its place over the best single retriever?

    ``served`` and each of ``retrievers`` map every evaluated user to NDCG@10. The best
    retriever is the one with the highest mean; the check fails when the upper bound of the
    paired bootstrap interval of (served - best) lies below 0, i.e. when the multi-stage feed
    loses to one of its own stages beyond sampling noise.

    Raises:
        ValueError: when ``retrievers`` is empty or there is no user.
    """
    if not retrievers:
        raise ValueError("no single retriever to compare the served feed with")
    means = {
        name: float(np.mean(list(scores.values()))) if scores else 0.0
        for name, scores in retrievers.items()
    }
    best = max(sorted(means), key=lambda name: means[name])
    cand, base = _paired(served, retrievers[best])
    mean, low, high = bootstrap_mean_diff(cand - base, samples, confidence, seed)
    pct = round(confidence * 100)
    return GateCheck(
        "served_feed_beats_retrievers",
        high >= 0.0,
        high,
        0.0,
        f"served NDCG@10 {cand.mean():.4f} vs best single retriever {best} {base.mean():.4f} "
        f"over {cand.size} users; lift {mean:+.4f}, {pct}% CI [{low:+.4f}, {high:+.4f}] "
        "must not lie below 0",
    )
