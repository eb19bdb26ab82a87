"""The erasure list: pseudonyms of erased users, which ingestion and training skip.

One object per erased user under ``privacy/erased/<pseudonym>.json`` (no append on S3, and
concurrent erasures never race on one file). It holds keyed hashes only, never a raw id.
"""

from __future__ import annotations

import json
from typing import Final

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
