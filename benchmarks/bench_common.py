"""Helpers every benchmark script shares: the checkout's git state, JSON-safe values, RSS peaks.

The scripts run standalone (``python benchmarks/x.py``), so their folder is on ``sys.path`` and
they import this module by name.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any


def git_state() -> dict[str, Any]:
    """Commit and locally modified files of the checkout the domain code was imported from."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
        return done.stdout if done.returncode == 0 else ""

    modified = [line[3:] for line in git("status", "--porcelain").splitlines() if line[:2] != "??"]
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or None,
        "modified_files": modified,
    }


def jsonable(value: Any) -> Any:
    """``value`` with frames as records, paths as text, numpy scalars as Python, NaN/inf as null."""
    import pandas as pd  # here: importing this module stays cheap (capacity_bench children)

    if isinstance(value, pd.DataFrame):
        return json.loads(value.to_json(orient="records"))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return jsonable(value.item())
    return value


def proc_status_kib(field: str) -> int | None:
    """``VmRSS`` or ``VmHWM`` of this process in KiB (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark (Linux >= 4.0); return whether that worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_kib() -> int:
    """The RSS high-water mark in KiB: ``VmHWM`` (reset by ``reset_peak_rss``), else rusage."""
    hwm = proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak
