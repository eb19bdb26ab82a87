from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fitpulse_orchestration.serving.auth import (
    TOKEN_HASHES_ENV,
    TOKENS_FILE_ENV,
    ApiTokens,
    hash_token,
    issue_token,
    local_tokens,
    tokens_from_env,
)

OLD = "old-token-0123456789abcdef"
NEW = "new-token-0123456789abcdef"


def test_a_token_is_known_by_its_digest_only() -> None:
    tokens = ApiTokens.of({"app": NEW})

    assert NEW not in repr(tokens.digests)
    assert tokens.caller(f"Bearer {NEW}") == "app"
    assert tokens.caller(f"  Bearer {NEW}  ") == "app"
    for refused in (None, "", NEW, f"Basic {NEW}", f"Bearer {OLD}", "Bearer ", f"bearer {NEW}"):
        assert tokens.caller(refused) is None, refused


def test_two_tokens_at_once_rotate_without_downtime(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(
        f"# rotated 2026-12-06\napp {hash_token(OLD)}\n\napp-next {hash_token(NEW)}  # new\n"
    )

    both = ApiTokens.parse_file(path)
    path.write_text(f"app-next {hash_token(NEW)}\n")
    after = ApiTokens.parse_file(path)

    assert (both.caller(f"Bearer {OLD}"), both.caller(f"Bearer {NEW}")) == ("app", "app-next")
    assert (after.caller(f"Bearer {OLD}"), after.caller(f"Bearer {NEW}")) == (None, "app-next")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("app", "expected 'NAME SHA256-HEX'"),
        ("app nothex", "SHA-256 hex digest"),
        (f"bad/name {'a' * 64}", "caller name"),
        (f"app {'a' * 64} extra", "expected 'NAME SHA256-HEX'"),
    ],
)
def test_malformed_token_files_name_the_line_not_the_secret(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# header\n{text}\n")

    with pytest.raises(ValueError, match=problem) as err:
        ApiTokens.parse_file(path)

    assert f"{path}:2" in str(err.value)


def test_the_environment_configures_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"app {hash_token(OLD)}\n")
    env = {TOKENS_FILE_ENV: str(path), TOKEN_HASHES_ENV: f"ops={hash_token(NEW)}"}

    tokens = tokens_from_env(env)

    assert tokens is not None
    assert tokens.caller(f"Bearer {OLD}") == "app"
    assert tokens.caller(f"Bearer {NEW}") == "ops"
    assert tokens_from_env({}) is None
    with pytest.raises(ValueError, match="NAME=SHA256-HEX"):
        tokens_from_env({TOKEN_HASHES_ENV: "no-equals-sign"})
    path.write_text("# every token revoked\n")
    with pytest.raises(ValueError, match="accept no token"):
        tokens_from_env({TOKENS_FILE_ENV: str(path)})


def test_issued_and_local_tokens_are_private_files(tmp_path: Path) -> None:
    tokens_file, token_file = tmp_path / "s" / "api_tokens", tmp_path / "s" / "local_api_token"

    tokens, created = local_tokens(tokens_file, token_file)
    again, created_again = local_tokens(tokens_file, token_file)
    extra = issue_token(tokens_file, "dashboard")

    local = token_file.read_text().strip()
    assert (created, created_again) == (True, False)
    assert tokens.caller(f"Bearer {local}") == "local"
    assert again.digests == tokens.digests
    assert ApiTokens.parse_file(tokens_file).caller(f"Bearer {extra}") == "dashboard"
    assert local not in tokens_file.read_text()
    for path in (tokens_file, token_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="caller name"):
        issue_token(tokens_file, "two words")
