"""``fitpulse reviewer`` and ``fitpulse token``: reviewers' keys and callers' tokens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from fitpulse_orchestration.cli._common import (
    HomeOpt,
    app,
    say,
)
from fitpulse_orchestration.settings import ProjectHome


def _print_new_secret(
    issue: Callable[[Path, str], str], target: Path, name: str, done: str
) -> None:
    """Create NAME's secret with ``issue`` (its digest goes to ``target``); print it once."""
    try:
        secret = issue(target, name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="NAME") from exc
    say(f"{done}; the secret (shown once):")
    typer.echo(secret)


reviewer_app = typer.Typer(
    help="The reviewer roster: who may approve or reject a model version.", no_args_is_help=True
)
app.add_typer(reviewer_app, name="reviewer")


@reviewer_app.command("add")
def reviewer_add(
    name: Annotated[str, typer.Argument(help="The reviewer's name (letters, digits, _.@-).")],
    file: Annotated[
        Path | None,
        typer.Option(
            help="Roster file to append to (default: the home's secrets/reviewers; in "
            "production the file FITPULSE_REVIEWERS_FILE names)."
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Add NAME to the roster: print their key once, append its digest.

    The reviewer keeps the key (e.g. in FITPULSE_REVIEWER_KEY) and approves with `fitpulse
    registry approve`, or prints a launchpad code with `fitpulse registry approval-code`.
    Remove a reviewer by deleting their line.
    """
    from model_registry.reviewers import add_reviewer, roster_path

    target = file or roster_path(ProjectHome.resolve(home).reviewers_file)
    _print_new_secret(add_reviewer, target, name, f"added {name} to the reviewer roster {target}")


token_app = typer.Typer(
    help="Caller tokens of the feed service (only their SHA-256 digests are stored).",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")


@token_app.command("issue")
def token_issue(
    name: Annotated[str, typer.Argument(help="The caller's name (letters, digits, _.@-).")],
    file: Annotated[
        Path | None,
        typer.Option(
            help="Token digest file to append to (default: the home's secrets/api_tokens; in "
            "production the file FITPULSE_API_TOKENS_FILE names)."
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Create a token for NAME: print it once, append its digest to the token file.

    Rotation: issue a new token, move the caller over, then delete the old line from the file
    (the service reads the file at start; restart or roll the workers).
    """
    from fitpulse_orchestration.serving.auth import issue_token

    target = file or ProjectHome.resolve(home).api_tokens_file
    _print_new_secret(
        issue_token, target, name, f"appended the digest of {name}'s token to {target}"
    )
