"""The erasure list: pseudonyms of erased users, which ingestion and training skip.

One object per erased user under ``privacy/erased/<pseudonym>.json`` (no append on S3, and
concurrent erasures never race on one file). It holds keyed hashes only, never a raw id.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Final

from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.storage import ObjectStore

ERASED_PREFIX: Final = "privacy/erased"


def erased_key(pseudonym: str) -> str:
    """Key of one erased user's entry."""
    return f"{ERASED_PREFIX}/{pseudonym}.json"


def add_erased(store: ObjectStore, pseudonym: str, erased_at: str) -> None:
    """Record that ``pseudonym`` was erased (idempotent)."""
    body = {"pseudonym": pseudonym, "erased_at": erased_at}
    store.put_bytes(erased_key(pseudonym), json.dumps(body).encode())


def erased_pseudonyms(store: ObjectStore) -> frozenset[str]:
    """Every erased pseudonym."""
    prefix = f"{ERASED_PREFIX}/"
    return frozenset(key[len(prefix) : -len(".json")] for key in store.iter_keys(prefix, ".json"))


def erased_raw_id(
    pseudonymizer: Pseudonymizer, erased: frozenset[str]
) -> Callable[[str | None], bool]:
    """Whether a raw user id (None: unknown) is an erased user's; each id is hashed once.

    The list holds pseudonyms only, so raw-zone records are matched by hashing their id.
    """
    cache: dict[str, bool] = {}

    def is_erased(user: str | None) -> bool:
        if user is None:
            return False
        if user not in cache:
            cache[user] = pseudonymizer.pseudonymize(user) in erased
        return cache[user]

    return is_erased
