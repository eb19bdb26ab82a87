"""Serve home feeds over HTTP."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fitpulse_orchestration.cli._common import (
    ClockOpt,
    ExperimentOpt,
    HomeOpt,
    ProfileOpt,
    app,
    say,
)
from fitpulse_orchestration.settings import ProjectHome

if TYPE_CHECKING:
    from fitpulse_orchestration.server.runtime import ServiceRuntime


def serving_runtime(
    home: Path | None,
    profile: str | None,
    clock: str,
    experiment: Path | None,
    poll_s: float,
    shadow_share: float = 0.0,
    rollout: str | None = None,
) -> ServiceRuntime:
    """The service runtime of a home and profile; a bad setting is a bad option."""
    from fitpulse_orchestration.server.runtime import build_runtime, profile_backends
    from fitpulse_orchestration.serving.feed_types import ServiceUnavailableError
    from fitpulse_orchestration.settings import current_profile

    project = ProjectHome.resolve(home)
    try:
        backends = profile_backends(project, profile or current_profile(), serving=True)
        return build_runtime(
            backends,
            project.model_cache,
            clock=clock,
            experiment_file=experiment,
            poll_s=poll_s,
            shadow_share=shadow_share,
            rollout=rollout,
        )
    except (ValueError, ServiceUnavailableError) as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    clock: ClockOpt = "snapshot",
    experiment: ExperimentOpt = None,
    poll_s: Annotated[float, typer.Option(help="Seconds between registry alias checks.")] = 10.0,
    processes: Annotated[
        int,
        typer.Option(min=1, help="Worker processes (one per core), forked after the models load."),
    ] = 1,
    threads: Annotated[
        int,
        typer.Option(
            min=1, help="Request threads per process (the feed path is CPU-bound: keep it low)."
        ),
    ] = 1,
    shadow_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of champion requests the challenger alias also scores in shadow "
            "(logged under serving/shadow/, never served; shadow_comparison compares them).",
        ),
    ] = 0.0,
    rollout: Annotated[
        str | None,
        typer.Option(
            help="Follow this canary rollout's traffic split (`fitpulse rollout start`); a "
            "rollback or `fitpulse rollout kill` reaches the service within --poll-s."
        ),
    ] = None,
    docs: Annotated[
        bool, typer.Option(help="Serve /docs and /openapi.json (off: they describe the API).")
    ] = False,
    profile: ProfileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Serve home feeds over HTTP from the champion model (reloaded when the alias moves).

    Every endpoint but /healthz, /readyz and /metrics needs 'Authorization: Bearer TOKEN'.
    """
    # One single-threaded worker per core: the OpenMP pools of FAISS and LightGBM must start
    # at one thread, so the variable is set before anything loads them (a library's own setter
    # reaches only the calling thread, not the request thread; and an OpenMP pool started
    # before a fork does not work in the forked worker).
    # Without it the server spent 26-32 ms of CPU per request, with it 14.3-14.5 ms
    # (benchmarks/serve_bench.py, 2026-11-25).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # MLflow keeps one SQLAlchemy engine per database for the process, pool and all: forked
    # workers would share its pooled connections (the same sockets or SQLite handles). Without
    # a pool each registry read opens its own connection (a poll every --poll-s per worker).
    os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    from fitpulse_orchestration.server.app import create_app
    from fitpulse_orchestration.server.prefork import serve_forked
    from fitpulse_orchestration.server.runtime import service_tokens
    from fitpulse_orchestration.settings import current_profile

    # Fail here, with a readable message, rather than inside a worker process.
    project = ProjectHome.resolve(home)
    try:
        tokens, created = service_tokens(project, profile or current_profile())
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--profile") from exc
    if created:
        say(f"created the local caller token: {project.local_token_file} (mode 0600)")
    say(
        f"{len(tokens.digests)} caller token(s) accepted; send 'Authorization: Bearer TOKEN'"
        + (
            f" (yours: $(cat {project.local_token_file}))"
            if project.local_token_file.exists()
            else ""
        )
    )
    _check_port(host, port)
    # The models load once, here; every worker is forked from this process and shares them
    # (server.prefork). The watcher and the logs start in each worker, with the app.
    runtime = serving_runtime(home, profile, clock, experiment, poll_s, shadow_share, rollout)
    as_of = _say_what_serves(runtime)
    served = create_app(
        runtime.service,
        runtime.watcher,
        runtime.served_log,
        threads=threads,
        push=runtime.push,
        shadow_log=runtime.shadow_log,
        tokens=tokens,
        docs=docs,
    )
    say(
        f"serving as of {as_of} with {processes} process(es) x {threads} "
        f"thread(s) on http://{host}:{port}/v1/home-feed/USER_ID"
    )
    logging.getLogger("fitpulse_orchestration").setLevel(logging.INFO)
    serve_forked(served, host, port, processes)


def _check_port(host: str, port: int) -> None:
    """Refuse a host and port this process cannot bind, before any model loads."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            # As gunicorn binds: a port left in TIME_WAIT by a stopped server is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {exc}") from exc


def _say_what_serves(runtime: ServiceRuntime) -> str:
    """Print each alias's loaded version (and why it is degraded); the state's as-of time.

    A function, so that nothing of ``runtime`` outlives the check in the caller's frame.
    """
    state = runtime.service.state
    for alias, loaded in state.models.items():
        say(
            f"{alias}: version {loaded.version}"
            + (f" (degraded: {loaded.problem})" if loaded.problem else "")
        )
    return state.as_of.isoformat()
