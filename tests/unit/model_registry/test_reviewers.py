from __future__ import annotations

import os
from pathlib import Path

import pytest

from model_registry.reviewers import (
    ROSTER_ENV,
    ReviewerRoster,
    ReviewNotAuthorisedError,
    add_reviewer,
    approval_code,
    key_digest,
    load_roster,
)

MODEL = "fitpulse-home-ranker"


@pytest.fixture
def roster_file(tmp_path: Path) -> Path:
    return tmp_path / "secrets" / "reviewers"


def test_an_added_reviewer_authorises_with_their_code(roster_file: Path) -> None:
    key = add_reviewer(roster_file, "ada")

    roster = ReviewerRoster.from_file(roster_file)
    roster.authorise("ada", approval_code(key, "ada", MODEL, "3", "approve"), MODEL, "3", "approve")

    assert roster.digests == {"ada": key_digest(key)}
    assert key not in roster_file.read_text()
    assert os.stat(roster_file).st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("reviewer", "version", "decision", "match"),
    [
        ("grace", "3", "approve", "not grace's"),  # another reviewer's name
        ("ada", "4", "approve", "not ada's"),  # another version
        ("ada", "3", "reject", "not ada's"),  # another decision
    ],
)
def test_a_code_authorises_one_decision_on_one_version_by_one_person(
    roster_file: Path, reviewer: str, version: str, decision: str, match: str
) -> None:
    key = add_reviewer(roster_file, "ada")
    add_reviewer(roster_file, "grace")
    code = approval_code(key, "ada", MODEL, "3", "approve")

    with pytest.raises(ReviewNotAuthorisedError, match=match):
        ReviewerRoster.from_file(roster_file).authorise(reviewer, code, MODEL, version, decision)


def test_names_off_the_roster_and_an_empty_roster_are_refused(roster_file: Path) -> None:
    with pytest.raises(ReviewNotAuthorisedError, match="no reviewer roster"):
        ReviewerRoster.from_file(roster_file).authorise("ada", "00", MODEL, "1", "approve")
    add_reviewer(roster_file, "ada")

    with pytest.raises(ReviewNotAuthorisedError, match="'mallory' is not on the reviewer roster"):
        ReviewerRoster.from_file(roster_file).authorise("mallory", "00", MODEL, "1", "approve")


def test_a_reviewer_is_added_once_with_a_valid_name(roster_file: Path) -> None:
    add_reviewer(roster_file, "ada")

    with pytest.raises(ValueError, match="already on the roster"):
        add_reviewer(roster_file, "ada")
    with pytest.raises(ValueError, match="must match"):
        add_reviewer(roster_file, "x" * 65)
    assert list(ReviewerRoster.from_file(roster_file).digests) == ["ada"]


def test_a_malformed_roster_line_is_named(roster_file: Path) -> None:
    roster_file.parent.mkdir(parents=True)
    roster_file.write_text("# reviewers\nada " + "a" * 64 + "\ngrace not-a-digest\n")

    with pytest.raises(ValueError, match=r"reviewers:3: expected 'NAME SHA256-HEX'"):
        ReviewerRoster.from_file(roster_file)


def test_production_reads_the_roster_the_environment_names(
    roster_file: Path, tmp_path: Path
) -> None:
    mounted = tmp_path / "mounted-roster"
    add_reviewer(mounted, "oncall-lead")

    roster = load_roster(roster_file, env={ROSTER_ENV: str(mounted)})

    assert list(roster.digests) == ["oncall-lead"]
    assert list(load_roster(roster_file, env={}).digests) == []
