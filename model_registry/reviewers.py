"""Who may review: a roster of named reviewers, each with a secret key of their own.

The roster holds, per reviewer, the SHA-256 digest of their key (``NAME DIGEST`` lines, ``#``
comments): the local home's ``secrets/reviewers``, or the file ``$FITPULSE_REVIEWERS_FILE``
names in production. ``fitpulse reviewer add NAME`` prints a new key once and appends its
digest.

A review decision is authorised by an *approval code*: HMAC-SHA256, under the digest of the
reviewer's key, of the model, the version, the decision and the reviewer's name. The reviewer
computes it on their own machine (``fitpulse registry approve`` does it from
``$FITPULSE_REVIEWER_KEY``; ``fitpulse registry approval-code`` prints it for the Dagster
launchpad), so the key never travels. A code authorises exactly one decision on one version by
one person: it is safe to paste into a run's config, where anyone can read it, because it can
neither be reused for another version or decision nor forged without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROSTER_ENV: Final = "FITPULSE_REVIEWERS_FILE"
KEY_ENV: Final = "FITPULSE_REVIEWER_KEY"
DECISIONS: Final = ("approve", "reject")
_DIGEST: Final = re.compile(r"[0-9a-f]{64}")
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


class ReviewNotAuthorisedError(PermissionError):
    """The reviewer is not on the roster, or the approval code is not theirs for this decision."""


def key_digest(key: str) -> str:
    """The SHA-256 hex digest the roster stores for a reviewer's key."""
    return hashlib.sha256(key.strip().encode()).hexdigest()


def approval_code(key: str, reviewer: str, model: str, version: str, decision: str) -> str:
    """The code that authorises ``reviewer``'s ``decision`` on ``model`` ``version``."""
    message = f"{model}\n{version}\n{decision}\n{reviewer}".encode()
    return hmac.new(bytes.fromhex(key_digest(key)), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ReviewerRoster:
    """Reviewer name -> digest of their key."""

    digests: Mapping[str, str]
    source: str

    @classmethod
    def from_file(cls, path: Path) -> ReviewerRoster:
        """Parse ``NAME DIGEST`` lines; a missing file is an empty roster.

        Raises:
            ValueError: naming the line that is not ``NAME DIGEST``.
        """
        digests: dict[str, str] = {}
        if path.is_file():
            for n, raw in enumerate(path.read_text().splitlines(), start=1):
                line = raw.split("#", 1)[0].strip()
                if not line:
                    continue
                parts = line.split()
                if (
                    len(parts) != 2
                    or not _NAME.fullmatch(parts[0])
                    or not _DIGEST.fullmatch(parts[1])
                ):
                    raise ValueError(f"{path}:{n}: expected 'NAME SHA256-HEX'")
                digests[parts[0]] = parts[1]
        return cls(digests, str(path))

    def authorise(self, reviewer: str, code: str, model: str, version: str, decision: str) -> None:
        """Check that ``code`` is ``reviewer``'s for this decision.

        Raises:
            ReviewNotAuthorisedError: when the roster is empty, the reviewer is not on it, or
                the code does not match.
        """
        if not self.digests:
            raise ReviewNotAuthorisedError(
                f"no reviewer roster at {self.source}: add reviewers with `fitpulse reviewer add "
                "NAME`"
            )
        digest = self.digests.get(reviewer)
        if digest is None:
            raise ReviewNotAuthorisedError(f"{reviewer!r} is not on the reviewer roster")
        message = f"{model}\n{version}\n{decision}\n{reviewer}".encode()
        expected = hmac.new(bytes.fromhex(digest), message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, code.strip().lower()):
            raise ReviewNotAuthorisedError(
                f"the approval code is not {reviewer}'s for '{decision}' on {model} version "
                f"{version}"
            )


def roster_path(local_file: Path, env: Mapping[str, str] | None = None) -> Path:
    """``$FITPULSE_REVIEWERS_FILE`` when set, else the home's roster file."""
    value = (os.environ if env is None else env).get(ROSTER_ENV, "").strip()
    return Path(value) if value else local_file


def load_roster(local_file: Path, env: Mapping[str, str] | None = None) -> ReviewerRoster:
    """The roster of this deployment (``roster_path``)."""
    return ReviewerRoster.from_file(roster_path(local_file, env))


def add_reviewer(path: Path, name: str) -> str:
    """Append a new reviewer with a fresh key to the roster file; return the key (shown once).

    Raises:
        ValueError: for an invalid name, or one already on the roster.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"reviewer name {name[:70]!r} must match {_NAME.pattern}")
    if name in ReviewerRoster.from_file(path).digests:
        raise ValueError(f"{name!r} is already on the roster at {path}")
    key = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write(f"{name} {key_digest(key)}\n")
    return key
