"""Local secrets: a random key created once in the home (mode 0600) and read back after."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_key(path: Path) -> str:
    """Return the secret stored at ``path``, creating a random one (mode 0600) if absent.

    The embedded (local) profile keeps its key in the project home; production passes the
    secret through an environment variable instead.
    """
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    # Created with mode 0600 from the start: the key is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret
