"""The promotion workflow over MLflow aliases: gate, review, promote, roll back.

Aliases (MLflow's stages are deprecated):

- ``candidate``: the newest trained version;
- ``challenger``: the newest version whose gate passed, waiting for (or under) review;
- ``champion``: the version that serves.

A version's state lives in the signed, hash-chained audit log (``storage.audit``) and is
mirrored to its tags (``gate.*``, ``review.*``, ``promotion.*``) for people to read. The rules:
only a gate-passed version can be approved, by someone other than whoever trained it; only an
approved gate-passed version whose artifacts still match their registered digest can become
champion; approving twice or promoting the current champion again changes nothing. A forged
tag, a moved alias or a swapped artifact is refused and recorded.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fitpulse_orchestration.storage.audit import AuditIntegrityError, AuditLog
from model_registry.client import RegisteredVersion, RegistryClient
from model_registry.gate import GateDecision, gate_from_dict
from model_registry.ledger import (
    AuditedState,
    AuditedVersion,
    artifact_digest,
    audited_state,
    evaluation_digest,
)

log = logging.getLogger(__name__)

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
ARTIFACT_DIGEST: Final = "audit.artifact_digest"
ALERT_ACTIONS: Final = frozenset({"tamper_detected", "alias_restored"})
"""Audit actions an operator must look at."""
INTEGRITY_WINDOW: Final = dt.timedelta(days=7)
"""How long a caught tamper keeps the registry's integrity check failing."""
REGISTRY_ACTOR: Final = "registry"
"""The actor of entries the registry writes itself (tamper detection)."""

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


PERSON: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
"""A reviewer's or operator's name: 1-64 letters, digits, ``_ . @ -``, starting alnum."""


def valid_person(name: str | None, what: str = "reviewer") -> str:
    """``name`` stripped, when it is a valid person name.

    Raises:
        ValueError: when it is blank, too long or has characters outside ``PERSON``.
    """
    text = (name or "").strip()
    if not text:
        raise ValueError(f"a {what} name is required: pass --{what} NAME")
    if not PERSON.fullmatch(text):
        raise ValueError(
            f"{what} name {text[:70]!r} must be 1-64 letters, digits or _ . @ - "
            "(starting with a letter or digit)"
        )
    return text


def training_identity() -> str:
    """Who trains: the operating-system account running the registration step.

    Not a run tag: anyone who launches a run can set tags, so a tag would let the trainer name
    someone else and approve their own model. The account is what the platform can vouch for
    (the CLI user locally; the run launcher's service account in production, which then may
    not approve anything).
    """
    return getpass.getuser()


class ModelPromotion:
    """Gate, review, promotion and rollback of one registry, decided from the audit log.

    Every rule reads the model's *verified* audit chain (``ledger.audited_state``), never the
    MLflow tags, which are written as a mirror. A broken chain, a mirror that disagrees with
    the chain, or artifacts whose digest differs from the one registered are refused with a
    ``PromotionError`` and recorded as a ``tamper_detected`` entry.
    """

    def __init__(self, client: RegistryClient, audit: AuditLog) -> None:
        self.client = client
        self.audit = audit

    # ---- the verified state ---------------------------------------------------------------

    def audited(self, model: str) -> AuditedState:
        """``model``'s state replayed from its verified audit chain.

        Raises:
            PromotionError: when the chain fails verification (recorded in the log).
        """
        try:
            return audited_state(self.audit.verify(model))
        except AuditIntegrityError as exc:
            self._tamper(model, None, f"audit chain failed verification: {exc}")
            raise PromotionError(
                f"the audit log of {model} failed verification ({exc}); no registry decision "
                "is taken until it is repaired"
            ) from exc

    def _tamper(self, model: str, version: str | None, what: str) -> None:
        """Log and record a tamper, once: a sensor ticking on a broken log adds no repeats."""
        log.error("registry tamper detected on %s version %s: %s", model, version, what)
        head = self.audit.head(model)
        if head is not None and (head.action, head.version, head.note) == (
            "tamper_detected",
            version,
            what,
        ):
            return
        self.audit.append("tamper_detected", model, version, REGISTRY_ACTOR, what)

    def _refuse(self, model: str, version: str, what: str) -> PromotionError:
        self._tamper(model, version, what)
        return PromotionError(f"{model} version {version} refused: {what}")

    def _check_mirror(self, model: str, registered: RegisteredVersion, v: AuditedVersion) -> None:
        """Raise (and record) when the version's tags say something its audit record does not."""
        tags = registered.tags
        mirrored = {
            GATE_STATUS: v.gate,
            REVIEW_STATUS: v.review,
            PROMOTION_STATUS: v.promotion,
        }
        wrong = [
            f"tag {key}={tags.get(key, '')!r} but the audit log says {audited or 'nothing'!r}"
            for key, audited in mirrored.items()
            if tags.get(key, "") != audited
        ]
        if wrong:
            raise self._refuse(model, registered.version, "; ".join(wrong))

    def _require(
        self, model: str, version: str
    ) -> tuple[RegisteredVersion, AuditedVersion, AuditedState]:
        """The version, its audited record and the model's audited state (one verification)."""
        registered = self.client.version(model, version)
        state = self.audited(model)
        v = state.of(registered.version)
        if v is None:
            raise self._refuse(
                model, registered.version, "it was never registered through the platform"
            )
        self._check_mirror(model, registered, v)
        return registered, v, state

    def _digest_now(self, model: str, version: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            return artifact_digest(self.client.download_artifacts(model, version, Path(tmp)))

    # ---- the workflow ---------------------------------------------------------------------

    def mark_candidate(self, model: str, version: str, actor: str, trained_by: str = "") -> None:
        """Record a newly registered version with its artifact digest; point ``candidate`` at it.

        ``trained_by``: who launched the training (that identity may not approve it).
        """
        digest = self._digest_now(model, version)
        self.client.set_alias(model, CANDIDATE, version)
        self.client.set_tags(model, version, {ARTIFACT_DIGEST: digest})
        self.audit.append(
            "registered",
            model,
            version,
            actor,
            details={"artifact_digest": digest, "trained_by": trained_by},
        )

    def record_rewrite(self, model: str, version: str, actor: str, note: str) -> str:
        """Bind a registered version to its rewritten artifacts (an erasure); return the digest.

        The version keeps its gate, review and promotion: only data of erased users left it.

        Raises:
            PromotionError: when the version was never registered through the platform.
        """
        v = self.audited(model).of(version)
        if v is None:
            raise self._refuse(model, version, "it was never registered through the platform")
        digest = self._digest_now(model, version)
        self.client.set_tags(model, version, {ARTIFACT_DIGEST: digest})
        self.audit.append(
            "artifacts_rewritten",
            model,
            version,
            actor,
            note,
            details={"artifact_digest": digest, "previous_digest": v.artifact_digest},
        )
        return digest

    def record_gate(self, model: str, version: str, decision: GateDecision, actor: str) -> None:
        """Store the gate's verdict on the version; a pass makes it the ``challenger``.

        A newer passing candidate supersedes an older challenger still waiting for review.

        Raises:
            PromotionError: when the version was never registered through the platform.
        """
        v = self.audited(model).of(version)
        if v is None:
            raise self._refuse(model, version, "it was never registered through the platform")
        detail = decision.as_dict()
        text = json.dumps(detail, sort_keys=True)
        self.client.set_tags(
            model,
            version,
            {
                GATE_STATUS: "passed" if decision.passed else "failed",
                GATE_SUMMARY: decision.summary()[:MAX_TAG_CHARS],
                GATE_DECISION: text[:MAX_TAG_CHARS],
            },
        )
        if decision.passed:
            self.client.set_alias(model, CHALLENGER, version)
        self.audit.append(
            "gate_passed" if decision.passed else "gate_failed",
            model,
            version,
            actor,
            details={
                "decision": detail,
                "evaluation_digest": evaluation_digest(detail),
                "artifact_digest": v.artifact_digest,
            },
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
            ValueError: without a valid reviewer name.
            LookupError: for an unknown model or version.
            PromotionError: when the gate did not pass (or never ran), the version was
                rejected or rolled back, the reviewer trained it, or the registry was tampered
                with.
        """
        name = valid_person(reviewer)
        registered, v, _ = self._require(model, version)
        if v.gate != "passed":
            why = registered.tags.get(GATE_SUMMARY, "the promotion gate has not evaluated it")
            raise PromotionError(
                f"{model} version {version} cannot be approved: gate {v.gate or 'not run'} ({why})"
            )
        if v.promotion == "rolled_back":
            raise PromotionError(f"{model} version {version} was rolled back; it stays retired")
        if v.review == "approved":
            return False
        if v.review == "rejected":
            raise PromotionError(
                f"{model} version {version} was rejected by {v.reviewer}; train a new candidate "
                "instead"
            )
        if v.trained_by and name.casefold() == v.trained_by.casefold():
            raise PromotionError(
                f"{model} version {version} was trained by {v.trained_by}: another reviewer "
                "must approve it (four eyes)"
            )
        gate_seen = registered.tags.get(GATE_SUMMARY, "")
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
            "approved",
            model,
            version,
            name,
            note,
            {
                "gate_seen": gate_seen,
                "gate": v.gate,
                "evaluation_digest": v.evaluation_digest,
                "artifact_digest": v.artifact_digest,
            },
        )
        return True

    def reject(self, model: str, version: str, reviewer: str | None, note: str) -> bool:
        """Reject a version; False when it was already rejected.

        Raises:
            ValueError: without a valid reviewer name.
            LookupError: for an unknown model or version.
            PromotionError: for the serving champion (roll back instead), or a tampered
                registry.
        """
        name = valid_person(reviewer)
        registered, v, state = self._require(model, version)
        if state.champion == registered.version:
            raise PromotionError(
                f"{model} version {version} is the champion: roll back instead of rejecting"
            )
        if v.review == "rejected":
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
        """The approved challenger waiting to become champion, as the audit log says."""
        state = self.audited(model)
        version = state.challenger
        if version is None or version == state.champion:
            return None
        v = state.of(version)
        return version if v is not None and v.servable else None

    def promote(self, model: str, version: str, actor: str) -> bool:
        """Make ``version`` the champion; False when it already is.

        Raises:
            PromotionError: unless the audit log shows the version's gate passed and a
                reviewer approved it, its tags agree and its artifacts are the registered ones.
        """
        registered, v, state = self._require(model, version)
        if v.gate != "passed":
            raise PromotionError(
                f"{model} version {version} can never become champion: gate {v.gate or 'not run'}"
            )
        if v.review != "approved":
            raise PromotionError(
                f"{model} version {version} is not approved (review: {v.review or 'pending'}); "
                "a reviewer must approve it first"
            )
        if v.promotion == "rolled_back":
            raise PromotionError(f"{model} version {version} was rolled back; it stays retired")
        previous = state.champion
        if previous == registered.version:
            return False
        digest = self._digest_now(model, version)
        if digest != v.artifact_digest:
            raise self._refuse(
                model,
                version,
                f"its artifacts changed since registration (digest {digest[:12]}, registered "
                f"{v.artifact_digest[:12]})",
            )
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
        self.audit.append(
            "promoted",
            model,
            version,
            actor,
            details={"previous": previous, "artifact_digest": digest},
        )
        return True

    def rollback(self, model: str, actor: str, note: str = "") -> tuple[str, str]:
        """Move ``champion`` back to the champion before the current one.

        Returns:
            ``(rolled back version, restored version)``.

        Raises:
            PromotionError: when there is no champion, or it has no predecessor.
        """
        state = self.audited(model)
        current = state.champion
        if current is None:
            raise PromotionError(f"{model} has no champion to roll back")
        record = state.of(current)
        previous = record.previous_champion if record is not None else ""
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

    def integrity_findings(self, model: str, window: dt.timedelta = INTEGRITY_WINDOW) -> list[str]:
        """What is wrong with ``model``'s registry now, or was caught within ``window``.

        A broken audit chain; ``tamper_detected`` and ``alias_restored`` entries newer than
        ``window``; an alias that points elsewhere than the audit log says. Read-only.
        """
        try:
            entries = self.audit.verify(model)
        except AuditIntegrityError as exc:
            return [f"audit chain failed verification: {exc}"]
        since = dt.datetime.now(dt.UTC) - window
        findings = [
            f"{e.at} {e.action} (version {e.version}, by {e.actor}): {e.note}"
            for e in entries
            if e.action in ALERT_ACTIONS and dt.datetime.fromisoformat(e.at) >= since
        ]
        state = audited_state(entries)
        found = self.client.aliases(model)
        for alias in (CHAMPION, CHALLENGER):
            if found.get(alias) != state.alias(alias):
                findings.append(
                    f"alias {alias} points at {found.get(alias)}; the audit log says "
                    f"{state.alias(alias)}"
                )
        return findings

    def check_aliases(self, model: str, actor: str) -> list[str]:
        """Put ``champion`` and ``challenger`` back where the audit log says they belong.

        An alias moved outside the platform (MLflow's UI, a script) is restored, and the move is
        recorded as ``alias_restored``.

        Returns:
            One line per restored alias (empty when every alias was in place).
        """
        state = self.audited(model)
        found = self.client.aliases(model)
        restored = []
        for alias in (CHAMPION, CHALLENGER):
            expected, actual = state.alias(alias), found.get(alias)
            if expected == actual:
                continue
            if expected is None:
                self.client.delete_alias(model, alias)
            else:
                self.client.set_alias(model, alias, expected)
            line = (
                f"{model}: alias {alias} pointed at version {actual} outside the platform; "
                f"restored to {expected or 'none'} as the audit log records"
            )
            log.error(line)
            self.audit.append(
                "alias_restored",
                model,
                actual,
                actor,
                line,
                {"alias": alias, "found": actual, "restored": expected},
            )
            restored.append(line)
        return restored

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
