"""The promotion workflow over MLflow aliases: gate, review, promote, roll back.

Aliases (MLflow's stages are deprecated):

- ``candidate``: the newest trained version;
- ``challenger``: the newest version whose gate passed, waiting for (or under) review;
- ``champion``: the version that serves.

A version's state lives in its tags (``gate.*``, ``review.*``, ``promotion.*``); every
decision is also appended to the audit log. The rules: only a gate-passed version can be
approved, only an approved gate-passed version can become champion, and approving twice or
promoting the current champion again changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Final

from model_registry.audit import AuditLog
from model_registry.client import RegisteredVersion, RegistryClient
from model_registry.gate import GateDecision, gate_from_dict

CANDIDATE: Final = "candidate"
CHALLENGER: Final = "challenger"
CHAMPION: Final = "champion"

GATE_STATUS: Final = "gate.status"
GATE_DECISION: Final = "gate.decision"
GATE_SUMMARY: Final = "gate.summary"
REVIEW_STATUS: Final = "review.status"
REVIEW_REVIEWER: Final = "review.reviewer"
REVIEW_AT: Final = "review.at"
REVIEW_NOTE: Final = "review.note"
REVIEW_GATE_SEEN: Final = "review.gate_seen"
PROMOTION_STATUS: Final = "promotion.status"
PROMOTION_PREVIOUS: Final = "promotion.previous_champion"
PROMOTION_AT: Final = "promotion.at"

MAX_TAG_CHARS: Final = 5000
"""MLflow's limit on a model-version tag value."""


class PromotionError(RuntimeError):
    """A registry action that the promotion rules forbid (the message says which rule)."""


@dataclass(frozen=True)
class VersionStatus:
    """One row of ``fitpulse registry status``."""

    version: str
    aliases: tuple[str, ...]
    created: str
    gate: str
    review: str
    promotion: str
    ndcg_at_10: str
    data_window: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _window(tags: dict[str, str]) -> str:
    return f"{tags.get('data.start', '?')[:10]}..{tags.get('data.end', '?')[:10]}"


def _require_reviewer(reviewer: str | None) -> str:
    name = (reviewer or "").strip()
    if not name:
        raise ValueError("a reviewer name is required: pass --reviewer NAME")
    return name


class ModelPromotion:
    """Gate, review, promotion and rollback of one registry, audited."""

    def __init__(self, client: RegistryClient, audit: AuditLog) -> None:
        self.client = client
        self.audit = audit

    def mark_candidate(self, model: str, version: str, actor: str) -> None:
        """Point ``candidate`` at a newly registered version."""
        self.client.set_alias(model, CANDIDATE, version)
        self.audit.append("registered", model, version, actor)

    def record_gate(self, model: str, version: str, decision: GateDecision, actor: str) -> None:
        """Store the gate's verdict on the version; a pass makes it the ``challenger``.

        A newer passing candidate supersedes an older challenger still waiting for review.
        """
        detail = json.dumps(decision.as_dict(), sort_keys=True)
        self.client.set_tags(
            model,
            version,
            {
                GATE_STATUS: "passed" if decision.passed else "failed",
                GATE_SUMMARY: decision.summary()[:MAX_TAG_CHARS],
                GATE_DECISION: detail[:MAX_TAG_CHARS],
            },
        )
        if decision.passed:
            self.client.set_alias(model, CHALLENGER, version)
        self.audit.append(
            "gate_passed" if decision.passed else "gate_failed",
            model,
            version,
            actor,
            details=decision.as_dict(),
        )

    def gate_of(self, registered: RegisteredVersion) -> GateDecision | None:
        """The gate decision stored on a version (None when the gate has not run)."""
        raw = registered.tags.get(GATE_DECISION)
        if raw is None:
            return None
        return gate_from_dict(json.loads(raw))

    def approve(self, model: str, version: str, reviewer: str | None, note: str) -> bool:
        """Approve a gate-passed version for promotion; False when it was already approved.

        Raises:
            ValueError: without a reviewer name.
            LookupError: for an unknown model or version.
            PromotionError: when the gate did not pass (or never ran), or the version was
                rejected or rolled back.
        """
        name = _require_reviewer(reviewer)
        registered = self.client.version(model, version)
        tags = registered.tags
        status = tags.get(GATE_STATUS)
        if status != "passed":
            why = tags.get(GATE_SUMMARY, "the promotion gate has not evaluated it")
            raise PromotionError(
                f"{model} version {version} cannot be approved: gate {status or 'not run'} ({why})"
            )
        if tags.get(PROMOTION_STATUS) == "rolled_back":
            raise PromotionError(f"{model} version {version} was rolled back; it stays retired")
        review = tags.get(REVIEW_STATUS)
        if review == "approved":
            return False
        if review == "rejected":
            raise PromotionError(
                f"{model} version {version} was rejected by {tags.get(REVIEW_REVIEWER)} at "
                f"{tags.get(REVIEW_AT)}; train a new candidate instead"
            )
        gate_seen = tags.get(GATE_SUMMARY, "")
        self.client.set_tags(
            model,
            version,
            {
                REVIEW_STATUS: "approved",
                REVIEW_REVIEWER: name,
                REVIEW_AT: _now(),
                REVIEW_NOTE: note[:MAX_TAG_CHARS],
                REVIEW_GATE_SEEN: gate_seen,
            },
        )
        if self.client.alias_version(model, CHALLENGER) != str(version):
            self.client.set_alias(model, CHALLENGER, version)
        self.audit.append(
            "approved", model, version, name, note, {"gate_seen": gate_seen, "gate": status}
        )
        return True

    def reject(self, model: str, version: str, reviewer: str | None, note: str) -> bool:
        """Reject a version; False when it was already rejected.

        Raises:
            ValueError: without a reviewer name.
            LookupError: for an unknown model or version.
            PromotionError: for the serving champion (roll back instead).
        """
        name = _require_reviewer(reviewer)
        registered = self.client.version(model, version)
        if CHAMPION in registered.aliases:
            raise PromotionError(
                f"{model} version {version} is the champion: roll back instead of rejecting"
            )
        if registered.tags.get(REVIEW_STATUS) == "rejected":
            return False
        gate_seen = registered.tags.get(GATE_SUMMARY, "gate not run")
        self.client.set_tags(
            model,
            version,
            {
                REVIEW_STATUS: "rejected",
                REVIEW_REVIEWER: name,
                REVIEW_AT: _now(),
                REVIEW_NOTE: note[:MAX_TAG_CHARS],
                REVIEW_GATE_SEEN: gate_seen,
            },
        )
        if self.client.alias_version(model, CHALLENGER) == str(version):
            self.client.delete_alias(model, CHALLENGER)
        self.audit.append("rejected", model, version, name, note, {"gate_seen": gate_seen})
        return True

    def pending_promotion(self, model: str) -> str | None:
        """The approved challenger waiting to become champion, if any."""
        aliases = self.client.aliases(model)
        version = aliases.get(CHALLENGER)
        if version is None or version == aliases.get(CHAMPION):
            return None
        tags = self.client.version(model, version).tags
        if tags.get(GATE_STATUS) == "passed" and tags.get(REVIEW_STATUS) == "approved":
            return version
        return None

    def promote(self, model: str, version: str, actor: str) -> bool:
        """Make ``version`` the champion; False when it already is.

        Raises:
            PromotionError: unless the version's gate passed and a reviewer approved it.
        """
        registered = self.client.version(model, version)
        tags = registered.tags
        if tags.get(GATE_STATUS) != "passed":
            raise PromotionError(
                f"{model} version {version} can never become champion: gate "
                f"{tags.get(GATE_STATUS, 'not run')}"
            )
        if tags.get(REVIEW_STATUS) != "approved":
            raise PromotionError(
                f"{model} version {version} is not approved (review: "
                f"{tags.get(REVIEW_STATUS, 'pending')}); a reviewer must approve it first"
            )
        if tags.get(PROMOTION_STATUS) == "rolled_back":
            raise PromotionError(f"{model} version {version} was rolled back; it stays retired")
        previous = self.client.alias_version(model, CHAMPION)
        if previous == str(version):
            return False
        self.client.set_alias(model, CHAMPION, version)
        self.client.set_tags(
            model,
            version,
            {
                PROMOTION_STATUS: "champion",
                PROMOTION_AT: _now(),
                PROMOTION_PREVIOUS: previous or "",
            },
        )
        if previous is not None:
            self.client.set_tags(model, previous, {PROMOTION_STATUS: "retired"})
        if self.client.alias_version(model, CHALLENGER) == str(version):
            self.client.delete_alias(model, CHALLENGER)
        self.audit.append("promoted", model, version, actor, details={"previous": previous})
        return True

    def rollback(self, model: str, actor: str, note: str = "") -> tuple[str, str]:
        """Move ``champion`` back to the champion before the current one.

        Returns:
            ``(rolled back version, restored version)``.

        Raises:
            PromotionError: when there is no champion, or it has no predecessor.
        """
        current = self.client.alias_version(model, CHAMPION)
        if current is None:
            raise PromotionError(f"{model} has no champion to roll back")
        previous = self.client.version(model, current).tags.get(PROMOTION_PREVIOUS, "")
        if not previous:
            raise PromotionError(
                f"{model} version {current} was the first champion: there is nothing to roll "
                "back to"
            )
        self.client.set_alias(model, CHAMPION, previous)
        self.client.set_tags(model, current, {PROMOTION_STATUS: "rolled_back"})
        self.client.set_tags(model, previous, {PROMOTION_STATUS: "champion", PROMOTION_AT: _now()})
        self.audit.append(
            "rolled_back", model, current, actor, note, {"restored": previous, "from": current}
        )
        return current, previous

    def status(self, model: str) -> list[VersionStatus]:
        """Every version with its aliases, gate, review and promotion state, newest first."""
        rows = []
        for v in self.client.versions(model):
            tags = v.tags
            review = tags.get(
                REVIEW_STATUS, "pending" if tags.get(GATE_STATUS) == "passed" else "-"
            )
            if tags.get(REVIEW_REVIEWER):
                review += f" by {tags[REVIEW_REVIEWER]}"
            created = dt.datetime.fromtimestamp(v.created_at_ms / 1000, dt.UTC)
            rows.append(
                VersionStatus(
                    version=v.version,
                    aliases=v.aliases,
                    created=created.isoformat(timespec="seconds"),
                    gate=tags.get(GATE_SUMMARY, "not run"),
                    review=review,
                    promotion=tags.get(PROMOTION_STATUS, "-"),
                    ndcg_at_10=tags.get("eval.candidate.all.ndcg_at_10", "-"),
                    data_window=_window(tags),
                )
            )
        return rows


def format_status(model: str, rows: list[VersionStatus]) -> str:
    """A fixed-width table of ``ModelPromotion.status`` rows."""
    if not rows:
        return f"{model}: no registered versions"
    header = ("version", "aliases", "created", "ndcg@10", "data", "review", "promotion", "gate")
    table = [
        (
            r.version,
            ",".join(r.aliases) or "-",
            r.created,
            r.ndcg_at_10,
            r.data_window,
            r.review,
            r.promotion,
            r.gate,
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table, strict=True)]
    widths[-1] = 0
    lines = [f"{model}"]
    for row in (header, *table):
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
