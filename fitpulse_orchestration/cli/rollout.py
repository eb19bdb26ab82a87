"""``fitpulse rollout``: start, inspect and kill canary rollouts of the challenger."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fitpulse_orchestration.cli._common import (
    HomeOpt,
    ProfileOpt,
    app,
    backend_promotion,
    exit_2_on,
    profile_backends_or_exit,
    say,
)
from model_registry.names import HOME_RANKER_MODEL

if TYPE_CHECKING:
    from fitpulse_orchestration.serving.rollout import RolloutController


rollout_app = typer.Typer(
    help="Canary rollouts of the challenger: start, inspect, kill (serve with --rollout).",
    no_args_is_help=True,
)
app.add_typer(rollout_app, name="rollout")
RolloutArg = Annotated[str, typer.Argument(help="The rollout's name (from its TOML).")]
ActorOpt = Annotated[str, typer.Option("--by", help="Who acts (for the audit).")]


def _rollouts(home: Path | None, profile: str | None) -> RolloutController:
    from fitpulse_orchestration.serving.rollout import RolloutController

    backends = profile_backends_or_exit(home, profile)
    return RolloutController(backends.store, backends.audit_key)


def print_rollout(controller: RolloutController, name: str) -> None:
    """Print the rollout's state and its audited history (an unknown name: exit 2)."""
    state = exit_2_on((KeyError,), lambda: controller.state(name))
    steps = " -> ".join(f"{s:.0%}" for s in state.config.steps)
    say(
        f"rollout {name}: challenger version {state.config.challenger_version}, {state.status}, "
        f"{state.share:.0%} on the challenger (steps {steps}; step since {state.step_started_at})"
    )
    if state.reason:
        say(f"  reason: {state.reason}")
    for entry in controller.history(name):
        say(
            f"  {entry.at} {entry.action} by {entry.actor}{': ' + entry.note if entry.note else ''}"
        )


@rollout_app.command("start")
def rollout_start(
    config: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Rollout TOML.")],
    by: ActorOpt = "cli",
    home: HomeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Start a rollout at its first step; canary_rollout_sensor reviews it hourly."""
    from fitpulse_orchestration.serving.rollout import load_rollout_config
    from model_registry.promotion import PromotionError

    controller = _rollouts(home, profile)
    parsed = exit_2_on((ValueError,), lambda: load_rollout_config(config))
    registry = backend_promotion(profile_backends_or_exit(home, profile))
    # The audited challenger (what serving's canary share will load), not the MLflow alias.
    alias = exit_2_on((PromotionError,), lambda: registry.audited(HOME_RANKER_MODEL).challenger)
    if alias != parsed.challenger_version:
        typer.echo(
            f"error: the challenger of {HOME_RANKER_MODEL} is {alias or 'nothing'}, "
            f"the rollout names version {parsed.challenger_version} (a version becomes the "
            "challenger by passing the promotion gate)",
            err=True,
        )
        raise typer.Exit(code=2)
    exit_2_on((ValueError,), lambda: controller.start(parsed, by))
    print_rollout(controller, parsed.name)


@rollout_app.command("status")
def rollout_status(name: RolloutArg, home: HomeOpt = None, profile: ProfileOpt = None) -> None:
    """The rollout's state and its audited history."""
    print_rollout(_rollouts(home, profile), name)


@rollout_app.command("kill")
def rollout_kill(
    name: RolloutArg,
    reason: Annotated[str, typer.Option(help="Why (required, audited).")],
    by: ActorOpt = "cli",
    home: HomeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """The kill switch: everyone back on the champion at the services' next poll."""
    controller = _rollouts(home, profile)
    exit_2_on((KeyError, ValueError), lambda: controller.kill(name, by, reason))
    print_rollout(controller, name)
