"""A model's registry state as its verified audit log says, and the digests entries bind to.

MLflow tags and aliases are a readable mirror that anyone with access to the tracking server
can change. What a version *is* (its artifacts, its gate verdict, its review, whether it is the
champion) is replayed here from the verified audit chain: ``audited_state`` folds the entries
in order, and ``artifact_digest`` / ``evaluation_digest`` are the digests each entry binds to.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from fitpulse_orchestration.storage.audit import AuditEntry

IGNORED_FILES: Final = frozenset({".complete"})
"""Marker files a local cache adds to a downloaded bundle; never part of its digest."""


def artifact_digest(folder: Path) -> str:
    """SHA-256 over every file under ``folder``: its relative path and its content's digest."""
    outer = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name in IGNORED_FILES:
            continue
        inner = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                inner.update(block)
        outer.update(f"{path.relative_to(folder).as_posix()}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def evaluation_digest(decision: Mapping[str, Any]) -> str:
    """SHA-256 of a gate decision's canonical JSON (the evaluation numbers it judged)."""
    text = json.dumps(decision, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class AuditedVersion:
    """One version as the audit log records it."""

    version: str
    artifact_digest: str = ""
    trained_by: str = ""
    gate: str = ""
    """``passed``, ``failed`` or empty (not run)."""
    evaluation_digest: str = ""
    review: str = ""
    """``approved``, ``rejected`` or empty (pending)."""
    reviewer: str = ""
    promotion: str = ""
    """``champion``, ``retired``, ``rolled_back`` or empty."""
    previous_champion: str = ""

    @property
    def servable(self) -> bool:
        """Gate passed, approved, and not rolled back."""
        return (
            self.gate == "passed" and self.review == "approved" and self.promotion != "rolled_back"
        )


@dataclass
class AuditedState:
    """Every audited version of one model, and where ``champion`` and ``challenger`` belong."""

    versions: dict[str, AuditedVersion] = field(default_factory=dict)
    champion: str | None = None
    challenger: str | None = None
    last_seq: int = 0

    def of(self, version: str) -> AuditedVersion | None:
        """The audited record of ``version`` (None when it was never registered)."""
        return self.versions.get(str(version))

    def alias(self, name: str) -> str | None:
        """Where alias ``name`` belongs (``champion`` or ``challenger``; others: None)."""
        return {"champion": self.champion, "challenger": self.challenger}.get(name)


def audited_state(entries: Iterable[AuditEntry]) -> AuditedState:
    """Fold a model's verified entries, oldest first, into its state."""
    state = AuditedState()
    for entry in entries:
        state.last_seq = entry.seq
        if entry.version is None:
            continue
        v = state.versions.setdefault(entry.version, AuditedVersion(entry.version))
        details = entry.details
        if entry.action == "registered":
            v.artifact_digest = str(details.get("artifact_digest", ""))
            v.trained_by = str(details.get("trained_by", ""))
        elif entry.action == "artifacts_rewritten":
            # An erasure rewrote the bundle without an erased user: the new bytes bind.
            v.artifact_digest = str(details.get("artifact_digest", ""))
        elif entry.action in ("gate_passed", "gate_failed"):
            v.gate = "passed" if entry.action == "gate_passed" else "failed"
            v.evaluation_digest = str(details.get("evaluation_digest", ""))
            if v.gate == "passed":
                state.challenger = v.version
        elif entry.action == "approved":
            v.review, v.reviewer = "approved", entry.actor
            state.challenger = v.version
        elif entry.action == "rejected":
            v.review, v.reviewer = "rejected", entry.actor
            if state.challenger == v.version:
                state.challenger = None
        elif entry.action == "promoted":
            previous = state.champion
            if previous is not None and previous in state.versions:
                state.versions[previous].promotion = "retired"
            v.promotion, v.previous_champion = "champion", previous or ""
            state.champion = v.version
            if state.challenger == v.version:
                state.challenger = None
        elif entry.action == "rolled_back":
            v.promotion = "rolled_back"
            restored = str(details.get("restored", "")) or None
            state.champion = restored
            if restored is not None and restored in state.versions:
                state.versions[restored].promotion = "champion"
    return state
