"""``fitpulse ui``: the operator console of a home, started and stopped as one."""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Annotated

import typer

from fitpulse_orchestration.cli._common import HomeOpt, app, say
from fitpulse_orchestration.console import (
    DEFAULT_DAGSTER_PORT,
    DEFAULT_MLFLOW_PORT,
    DEFAULT_REPORTS_PORT,
)
from fitpulse_orchestration.settings import ProjectHome


class _Stop(Exception):
    """SIGTERM or SIGINT arrived."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


@app.command()
def ui(
    home: HomeOpt = None,
    dagster_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Dagster UI port.")
    ] = DEFAULT_DAGSTER_PORT,
    mlflow_port: Annotated[
        int, typer.Option(min=1, max=65535, help="MLflow UI port.")
    ] = DEFAULT_MLFLOW_PORT,
    reports_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Report server port (drift reports, plots).")
    ] = DEFAULT_REPORTS_PORT,
    startup_timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds to wait for the UIs to answer.")
    ] = 180.0,
) -> None:
    """Start the operator console on loopback: Dagster UI and daemon, MLflow UI, reports.

    Ctrl-C or SIGTERM stops every process of it (and theirs). The processes' output goes to
    ``<home>/reports/console/``.
    """
    from fitpulse_orchestration.console import Console, ConsoleError, console_processes

    project = ProjectHome.resolve(home)
    if len({dagster_port, mlflow_port, reports_port}) < 3:
        raise typer.BadParameter("--dagster-port, --mlflow-port and --reports-port must differ")
    console = Console(
        project,
        console_processes(project, dagster_port, mlflow_port, reports_port),
        project.reports / "console",
    )
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        try:
            console.start()
            say("starting the console (the Dagster UI loads the code location first) ...")
            console.wait_ready(startup_timeout)
        except ConsoleError as exc:
            typer.echo(f"error: {exc}", err=True)
            code = 2 if not console.running else 1
            return
        for proc in console.processes:
            where = proc.url or "(no UI)"
            typer.echo(f"  {proc.name:<18} {where:<24} pid {console.running[proc.name].pid}")
        say(f"console of {project.root} is up; Ctrl-C stops it")
        while True:
            gone = console.exited()
            if gone:
                name, status = next(iter(gone.items()))
                typer.echo(f"error: {name} exited with code {status}; stopping the rest", err=True)
                code = 1
                return
            time.sleep(0.5)
    except _Stop as stop:
        say(f"{stop} received: stopping the console")
    finally:
        console.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if console.running:
            say("console stopped")
        if code:
            raise typer.Exit(code)
