from __future__ import annotations

import hashlib
import hmac
import stat
import string
from pathlib import Path

import pytest

from fitpulse_orchestration.privacy.pseudonymize import (
    PSEUDONYM_PREFIX,
    Pseudonymizer,
)
from fitpulse_orchestration.storage.keys import load_or_create_key


def test_pseudonym_is_deterministic_prefixed_and_80_bits(pseudonymizer: Pseudonymizer) -> None:
    first = pseudonymizer.pseudonymize("usr_0000001")

    assert first == pseudonymizer.pseudonymize("usr_0000001")
    assert first == Pseudonymizer(b"fitpulse-test-pseudonym-key-0001").pseudonymize("usr_0000001")
    assert first.startswith(PSEUDONYM_PREFIX)
    assert len(first) == len(PSEUDONYM_PREFIX) + 20
    assert set(first[len(PSEUDONYM_PREFIX) :]) <= set(string.hexdigits.lower()[:16])
    assert "usr_0000001" not in first


def test_pseudonym_depends_on_the_key_and_the_id(pseudonymizer: Pseudonymizer) -> None:
    other_key = Pseudonymizer(b"another-key-of-sufficient-length")

    assert pseudonymizer.pseudonymize("usr_1") != other_key.pseudonymize("usr_1")
    assert pseudonymizer.pseudonymize("usr_1") != pseudonymizer.pseudonymize("usr_2")


def test_pseudonym_is_truncated_hmac_sha256_of_the_id() -> None:
    expected = hmac.new(b"k" * 16, b"u", hashlib.sha256).hexdigest()[:20]

    assert Pseudonymizer(b"k" * 16).pseudonymize("u") == f"p_{expected}"


def test_short_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Pseudonymizer(b"k" * 15)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Pseudonymizer.from_secret("short")


def test_from_secret_matches_the_encoded_key() -> None:
    secret = "a-text-secret-of-32-characters!!"

    assert Pseudonymizer.from_secret(secret).pseudonymize("u") == Pseudonymizer(
        secret.encode()
    ).pseudonymize("u")


def test_pseudonymize_many_keeps_order_and_repeats(pseudonymizer: Pseudonymizer) -> None:
    ids = ["b", "a", "b", "c", "a"]

    out = pseudonymizer.pseudonymize_many(iter(ids))

    assert out == [pseudonymizer.pseudonymize(uid) for uid in ids]
    assert out[0] == out[2]
    assert len(set(out)) == 3
    assert pseudonymizer.pseudonymize_many([]) == []


def test_load_or_create_key_creates_a_private_file_and_reuses_it(tmp_path: Path) -> None:
    path = tmp_path / "home" / "secrets" / "pseudonym.key"

    secret = load_or_create_key(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) == 64
    assert set(secret) <= set(string.hexdigits.lower()[:16])
    assert load_or_create_key(path) == secret
    assert Pseudonymizer.from_secret(secret).pseudonymize("u").startswith("p_")


def test_load_or_create_key_returns_an_existing_secret_stripped(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_text("  existing-secret-value-0123456789\n")

    assert load_or_create_key(path) == "existing-secret-value-0123456789"


def test_each_created_key_is_random(tmp_path: Path) -> None:
    assert load_or_create_key(tmp_path / "a.key") != load_or_create_key(tmp_path / "b.key")
