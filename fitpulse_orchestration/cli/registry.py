"""``fitpulse registry``: review, promote, roll back and inspect registered models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from fitpulse_orchestration.cli._common import (
    HomeOpt,
    app,
    exit_2_on,
    print_status,
    promotion_for,
    say,
)
from fitpulse_orchestration.settings import ProjectHome
from model_registry.names import HOME_RANKER_MODEL

registry_app = typer.Typer(
    help="Review, promote, roll back and inspect registered models.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")
ModelArg = Annotated[str, typer.Argument(help=f"Registered model, e.g. {HOME_RANKER_MODEL}.")]
ReviewerOpt = Annotated[str | None, typer.Option(help="Who decides (required).")]
NoteOpt = Annotated[str, typer.Option(help="Why: what the reviewer looked at.")]


def _registry_action(action: Any) -> Any:
    from model_registry.promotion import PromotionError

    return exit_2_on((PromotionError, LookupError, ValueError), action)


def _reviewer_code(reviewer: str | None, model: str, version: str, decision: str) -> str:
    """The approval code of ``reviewer``'s decision, from the key in ``$FITPULSE_REVIEWER_KEY``."""
    from model_registry.reviewers import KEY_ENV, approval_code

    key = os.environ.get(KEY_ENV, "").strip()
    if not reviewer or not key:
        typer.echo(
            f"error: pass --reviewer NAME and set {KEY_ENV} to that reviewer's key (from "
            "`fitpulse reviewer add NAME`)",
            err=True,
        )
        raise typer.Exit(code=2)
    return approval_code(key, reviewer, model, version, decision)


def _review(
    decision: str, model: str, version: str, reviewer: str | None, note: str, home: Path | None
) -> None:
    from model_registry.reviewers import ReviewNotAuthorisedError, load_roster

    project = ProjectHome.resolve(home)
    code = _reviewer_code(reviewer, model, version, decision)
    roster = load_roster(project.reviewers_file)
    exit_2_on(
        (ReviewNotAuthorisedError,),
        lambda: roster.authorise(reviewer or "", code, model, version, decision),
    )
    promotion = promotion_for(project)
    act = promotion.approve if decision == "approve" else promotion.reject
    changed = _registry_action(lambda: act(model, version, reviewer, note))
    verb = "approved" if decision == "approve" else "rejected"
    say(
        f"{model} version {version} {verb} by {reviewer}"
        if changed
        else f"{model} version {version} was already {verb}; nothing changed"
    )


@registry_app.command()
def approve(
    model: ModelArg,
    version: Annotated[str, typer.Argument(help="Version number.")],
    reviewer: ReviewerOpt = None,
    note: NoteOpt = "",
    home: HomeOpt = None,
) -> None:
    """Approve a gate-passed version; the promotion sensor then makes it champion."""
    _review("approve", model, version, reviewer, note, home)


@registry_app.command()
def reject(
    model: ModelArg,
    version: Annotated[str, typer.Argument(help="Version number.")],
    reviewer: ReviewerOpt = None,
    note: NoteOpt = "",
    home: HomeOpt = None,
) -> None:
    """Reject a version: it loses the challenger alias and can never be approved."""
    _review("reject", model, version, reviewer, note, home)


@registry_app.command("approval-code")
def approval_code_command(
    model: ModelArg,
    version: Annotated[str, typer.Argument(help="Version number.")],
    reviewer: ReviewerOpt = None,
    decision: Annotated[str, typer.Option(help="approve or reject.")] = "approve",
) -> None:
    """Print the code that authorises one review in the Dagster launchpad (review_model_job).

    Computed here from $FITPULSE_REVIEWER_KEY: the key never leaves this machine, and the code
    is good for this one decision on this one version by this reviewer only.
    """
    from model_registry.reviewers import DECISIONS

    if decision not in DECISIONS:
        raise typer.BadParameter(f"use one of {DECISIONS}", param_hint="--decision")
    typer.echo(_reviewer_code(reviewer, model, version, decision))


@registry_app.command()
def promote(
    model: ModelArg,
    version: Annotated[str, typer.Argument(help="Approved version to make champion.")],
    home: HomeOpt = None,
) -> None:
    """Make an approved version champion now (what the promotion sensor does)."""
    project = ProjectHome.resolve(home)
    promotion = promotion_for(project)
    changed = _registry_action(lambda: promotion.promote(model, version, "fitpulse-cli"))
    say(
        f"{model} champion is now version {version}"
        if changed
        else f"{model} version {version} already is the champion"
    )


@registry_app.command()
def rollback(
    model: ModelArg,
    by: Annotated[
        str | None, typer.Option("--by", help="Who rolls back (default: the OS user).")
    ] = None,
    note: NoteOpt = "",
    home: HomeOpt = None,
) -> None:
    """Move the champion alias back to the previous champion."""
    import getpass

    project = ProjectHome.resolve(home)
    promotion = promotion_for(project)
    operator = by or getpass.getuser()
    current, restored = _registry_action(lambda: promotion.rollback(model, operator, note))
    say(f"{model}: rolled back version {current}; champion is version {restored} again")


@registry_app.command()
def status(
    model: Annotated[str, typer.Argument(help="Registered model.")] = HOME_RANKER_MODEL,
    home: HomeOpt = None,
) -> None:
    """Versions with their aliases, gate verdicts, reviews and promotion state."""
    print_status(ProjectHome.resolve(home), model)
