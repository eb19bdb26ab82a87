"""Provenance of a trained model: which code and which feature schema produced it."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import pandas as pd

_REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=_REPO, capture_output=True, text=True, check=True, timeout=5
    ).stdout.strip()


def code_version() -> str:
    """``git:<commit>[+dirty]`` of the checkout, else ``pkg:<installed version>``."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        try:
            return f"pkg:{metadata.version('fitpulse-orchestration')}"
        except metadata.PackageNotFoundError:
            return "unknown"
    return f"git:{commit}" + ("+dirty" if dirty else "")


def feature_schema_hash(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    """First 16 hex digits of the SHA-256 of ``name:dtype`` for ``columns`` in order.

    Two models with the same hash read the same features with the same types, so one feature
    pipeline can serve both.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the frame")
    text = "\n".join(f"{c}:{frame[c].dtype}" for c in columns)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
