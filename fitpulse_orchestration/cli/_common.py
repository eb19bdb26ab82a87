"""What every ``fitpulse`` command module shares: the app, common options and helpers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from fitpulse_orchestration.settings import ProjectHome

if TYPE_CHECKING:
    from fitpulse_orchestration.server.runtime import Backends
    from fitpulse_orchestration.storage import ObjectStore
    from model_registry.promotion import ModelPromotion

T = TypeVar("T")

app = typer.Typer(
    help="FitPulse personalization platform.", no_args_is_help=True, pretty_exceptions_enable=False
)

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Project home (default $FITPULSE_HOME or ./.fitpulse)."),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(help="local or production (default $FITPULSE_PROFILE, else local)."),
]

ClockOpt = Annotated[
    str,
    typer.Option(
        help="Serving time: 'snapshot' (the online features' as_of: replays the synthetic "
        "world), 'now' (wall clock, production) or an ISO-8601 time."
    ),
]
ExperimentOpt = Annotated[
    Path | None,
    typer.Option(exists=True, dir_okay=False, help="Experiment TOML (variants and salt)."),
]


def say(message: str) -> None:
    """Print a timestamped progress line."""
    typer.echo(f"[fitpulse {time.strftime('%H:%M:%S')}] {message}")


def home_store(home: ProjectHome) -> ObjectStore:
    """The home's local object store."""
    from fitpulse_orchestration.storage import LocalObjectStore

    return LocalObjectStore(home.store)


def exit_2_on(errors: tuple[type[Exception], ...], action: Callable[[], T]) -> T:
    """Run ``action``; one of ``errors`` becomes ``error: ...`` on stderr and exit code 2."""
    try:
        return action()
    except errors as exc:
        # str() of a KeyError quotes its message.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code=2) from exc


def run_job(home: ProjectHome, action: Callable[[], T]) -> T:
    """Run a ``runner`` function: no landed data is a bad ``--home``, a failed job exit 2."""
    from fitpulse_orchestration.runner import JobFailedError, NoLandedEventsError

    try:
        return action()
    except NoLandedEventsError as exc:
        raise typer.BadParameter(str(exc), param_hint="--home") from exc
    except JobFailedError as exc:
        for failure in exc.failures:
            typer.echo(f"step {failure}", err=True)
        typer.echo(
            f"{exc.job} run {exc.run_id} failed; full logs: DAGSTER_HOME={home.dagster} "
            "dagster dev",
            err=True,
        )
        raise typer.Exit(code=2) from exc


def promotion_for(home: ProjectHome) -> ModelPromotion:
    """The promotion workflow of the home's registry and signed audit log."""
    from fitpulse_orchestration.storage.audit import AuditLog, load_audit_key
    from model_registry.client import RegistryClient
    from model_registry.promotion import ModelPromotion

    home.create()
    audit = AuditLog(home_store(home), load_audit_key(home.audit_key_file))
    return ModelPromotion(RegistryClient(home.mlflow_tracking_uri), audit)


def backend_promotion(backends: Backends) -> ModelPromotion:
    """The promotion workflow on a profile's backends (production: the audit key's secret)."""
    from fitpulse_orchestration.storage.audit import AuditLog
    from model_registry.client import RegistryClient
    from model_registry.promotion import ModelPromotion

    return ModelPromotion(
        RegistryClient(backends.tracking_uri), AuditLog(backends.store, backends.audit_key)
    )


def profile_backends_or_exit(home: Path | None, profile: str | None) -> Backends:
    """The backends of ``profile`` (default: the current one); a bad setting is a bad option."""
    from fitpulse_orchestration.server.runtime import profile_backends
    from fitpulse_orchestration.settings import current_profile

    try:
        return profile_backends(ProjectHome.resolve(home), profile or current_profile())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def print_status(home: ProjectHome, model: str) -> None:
    """Print ``model``'s audited registry status and where its audit log lies."""
    from model_registry.promotion import format_status

    promotion = promotion_for(home)
    typer.echo(format_status(model, promotion.status(model)))
    typer.echo(f"audit log: {promotion.audit.location()}")
