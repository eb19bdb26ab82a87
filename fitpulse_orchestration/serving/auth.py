"""Who may call the service: bearer tokens, stored only as SHA-256 digests.

Every endpoint except ``/healthz``, ``/readyz`` and ``/metrics`` needs ``Authorization: Bearer
TOKEN``. The service never holds a plaintext token: it holds the digests of the tokens it
accepts, each with the caller's name, so several tokens are valid at once (issue the new one,
move callers over, then delete the old line: rotation without downtime).

Where the digests come from:

- ``FITPULSE_API_TOKENS_FILE``: a file of ``NAME SHA256-HEX`` lines (``#`` starts a comment);
- ``FITPULSE_API_TOKEN_HASHES``: ``NAME=SHA256-HEX`` pairs separated by commas (both may be
  set; the union is accepted);
- the local profile, when neither is set: the home's ``secrets/api_tokens`` file. ``fitpulse
  serve`` (and the demo) create it with one ``local`` token, whose plaintext is kept beside it in
  ``secrets/local_api_token`` (mode 0600) for the operator's own calls.

The production profile refuses to start without a token source. ``fitpulse token issue NAME``
prints a new token once and appends its digest to the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

TOKENS_FILE_ENV: Final = "FITPULSE_API_TOKENS_FILE"
TOKEN_HASHES_ENV: Final = "FITPULSE_API_TOKEN_HASHES"
LOCAL_CALLER: Final = "local"
_NAME: Final = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_DIGEST: Final = re.compile(r"[0-9a-f]{64}")
_BEARER: Final = re.compile(r"Bearer ([A-Za-z0-9_\-.~+/]{16,256}=*)")


def hash_token(token: str) -> str:
    """The SHA-256 hex digest a token is stored as."""
    return hashlib.sha256(token.encode()).hexdigest()


def _entry(name: str, digest: str, where: str) -> tuple[str, str]:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{where}: caller name {name[:70]!r} must match {_NAME.pattern}")
    digest = digest.lower()
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"{where}: expected a SHA-256 hex digest (64 hex characters)")
    return digest, name


@dataclass(frozen=True)
class ApiTokens:
    """The accepted token digests, each mapped to its caller's name."""

    digests: Mapping[str, str]

    @classmethod
    def of(cls, tokens: Mapping[str, str]) -> ApiTokens:
        """From plaintext tokens by caller name (tests and tools)."""
        return cls({hash_token(token): name for name, token in tokens.items()})

    @classmethod
    def parse_file(cls, path: Path) -> ApiTokens:
        """``NAME SHA256-HEX`` lines; blank lines and ``#`` comments are skipped.

        Raises:
            ValueError: for a malformed line (its number is named, never its content).
        """
        digests: dict[str, str] = {}
        for number, raw in enumerate(path.read_text().splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: expected 'NAME SHA256-HEX'")
            digest, name = _entry(parts[0], parts[1], f"{path}:{number}")
            digests[digest] = name
        return cls(digests)

    @classmethod
    def parse_env(cls, value: str) -> ApiTokens:
        """``NAME=SHA256-HEX`` pairs separated by commas.

        Raises:
            ValueError: for a malformed pair.
        """
        digests: dict[str, str] = {}
        for number, pair in enumerate(filter(None, (p.strip() for p in value.split(","))), 1):
            name, sep, digest = pair.partition("=")
            if not sep:
                raise ValueError(f"{TOKEN_HASHES_ENV} entry {number}: expected NAME=SHA256-HEX")
            key, caller = _entry(name.strip(), digest.strip(), f"{TOKEN_HASHES_ENV} entry {number}")
            digests[key] = caller
        return cls(digests)

    def caller(self, authorization: str | None) -> str | None:
        """The caller's name for an ``Authorization`` header value, None when not accepted."""
        if not authorization:
            return None
        match = _BEARER.fullmatch(authorization.strip())
        if match is None:
            return None
        presented = hash_token(match.group(1))
        for digest, name in self.digests.items():
            if secrets.compare_digest(presented, digest):
                return name
        return None


def tokens_from_env(environ: Mapping[str, str] | None = None) -> ApiTokens | None:
    """The tokens the environment configures, None when it configures none.

    Raises:
        ValueError: for a malformed source, or one that accepts no token at all.
    """
    env = os.environ if environ is None else environ
    digests: dict[str, str] = {}
    if env.get(TOKENS_FILE_ENV):
        digests.update(ApiTokens.parse_file(Path(env[TOKENS_FILE_ENV])).digests)
    if env.get(TOKEN_HASHES_ENV):
        digests.update(ApiTokens.parse_env(env[TOKEN_HASHES_ENV]).digests)
    if not env.get(TOKENS_FILE_ENV) and not env.get(TOKEN_HASHES_ENV):
        return None
    if not digests:
        raise ValueError(f"{TOKENS_FILE_ENV} / {TOKEN_HASHES_ENV} accept no token")
    return ApiTokens(digests)


def _write_private(path: Path, text: str, append: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "a" if append else "w") as fh:
        fh.write(text)


def issue_token(tokens_file: Path, name: str) -> str:
    """A new random token for ``name``: its digest is appended to ``tokens_file``.

    Returns:
        The plaintext token (shown once; only its digest is stored).

    Raises:
        ValueError: for a bad name.
    """
    token = secrets.token_urlsafe(32)
    digest, caller = _entry(name, hash_token(token), "token name")
    _write_private(tokens_file, f"{caller} {digest}\n", append=True)
    return token


def local_tokens(tokens_file: Path, token_file: Path) -> tuple[ApiTokens, bool]:
    """The local profile's tokens, creating the ``local`` caller's token on first use.

    Returns:
        The tokens and whether the local token was created now.
    """
    created = False
    if not tokens_file.exists() or not token_file.exists():
        # A token removed from an existing file stays revoked; only a missing pair is made.
        _write_private(token_file, issue_token(tokens_file, LOCAL_CALLER) + "\n")
        created = True
    return ApiTokens.parse_file(tokens_file), created
