"""Keyed pseudonymization of user ids.

User ids are replaced at ingestion by ``HMAC-SHA256(key, user_id)`` truncated to 20 hex
characters (80 bits: collision-free in practice at 65M users). Without the key the mapping
cannot be reversed or recomputed; with it, a known raw id (a batch-recommendation request, an
erasure request) maps to the same pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

PSEUDONYM_PREFIX = "p_"
_MIN_KEY_BYTES = 16


class Pseudonymizer:
    """Keyed hash of raw user ids."""

    def __init__(self, key: bytes) -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise ValueError(f"pseudonymization key must be at least {_MIN_KEY_BYTES} bytes")
        self._key = key

    @classmethod
    def from_secret(cls, secret: str) -> Pseudonymizer:
        """Build from a text secret (an environment variable in production)."""
        return cls(secret.encode("utf-8"))

    def pseudonymize(self, user_id: str) -> str:
        """Return the pseudonym of one raw user id."""
        digest = hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
        return PSEUDONYM_PREFIX + digest[:20]

    def pseudonymize_many(self, user_ids: Iterable[str]) -> list[str]:
        """Return the pseudonyms of many raw ids, in order (cached per distinct id)."""
        cache: dict[str, str] = {}
        out = []
        for uid in user_ids:
            pseudo = cache.get(uid)
            if pseudo is None:
                pseudo = cache[uid] = self.pseudonymize(uid)
            out.append(pseudo)
        return out
