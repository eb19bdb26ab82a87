"""The synthetic world's experiments: served traffic, A/B analysis, closed-loop simulations."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated

import typer

from fitpulse_orchestration.cli._common import (
    ExperimentOpt,
    HomeOpt,
    app,
    exit_2_on,
    home_store,
    run_job,
    say,
)
from fitpulse_orchestration.cli.rollout import print_rollout
from fitpulse_orchestration.cli.serving import serving_runtime
from fitpulse_orchestration.settings import ProjectHome


@app.command()
def traffic(
    requests: Annotated[int, typer.Option(min=1, help="Users served (one feed each).")] = 1000,
    experiment: ExperimentOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the user sample and the responses.")] = 7,
    home: HomeOpt = None,
) -> None:
    """Serve feeds to the synthetic world's users in process; land exposures and responses."""
    import pandas as pd

    from fitpulse_orchestration.serving.traffic import (
        exposures_frame,
        serve_traffic,
        world_user_ids,
    )
    from fitpulse_orchestration.world.respond import (
        load_latent,
        simulate_feed_responses,
        write_landing_events,
    )

    project = ProjectHome.resolve(home)
    store = home_store(project)
    runtime = serving_runtime(home, "local", "snapshot", experiment, poll_s=10.0)
    try:
        users = world_user_ids(store, requests, seed)
        latent = load_latent(store)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--home") from exc
    responses, summary = serve_traffic(runtime.service, users)
    runtime.served_log.close()
    say(
        f"served {summary.requests:,} feeds ({summary.exposures:,} exposures) by variant "
        f"{summary.by_variant}; fallbacks {summary.fallbacks or 'none'}"
    )
    batch = simulate_feed_responses(latent, exposures_frame(responses), seed)
    keys = write_landing_events(store, batch.events, f"world-response-{seed}")
    counts = pd.Series([e["event_type"] for e in batch.events]).value_counts().to_dict()
    say(
        f"the world responded with {len(batch.events):,} events {counts} in {len(keys)} "
        f"landing batches (unknown users {batch.unknown_users}, items {batch.unknown_items})"
    )
    say(f"next: fitpulse analyze-experiment --home {project.root}")


@app.command("analyze-experiment")
def analyze_experiment_cmd(
    experiment: Annotated[str, typer.Option(help="Experiment name (from its TOML).")] = (
        "ranker-ab"
    ),
    control: Annotated[str, typer.Option(help="The control variant.")] = "control",
    home: HomeOpt = None,
) -> None:
    """Ingest landed events, then materialize experiment_analysis and print its table."""
    from fitpulse_orchestration.runner import run_experiment_analysis

    project = ProjectHome.resolve(home)
    meta = run_job(project, lambda: run_experiment_analysis(project, experiment, control, say=say))
    summary = meta["summary"]
    typer.echo(meta["readable"])
    typer.echo(
        f"users {summary['users']:,}; excluded: {summary['mixed_users']} in several "
        f"variants, {summary['malformed_exposures']} malformed exposures"
    )


@app.command("simulate-ab")
def simulate_ab_cmd(
    days: Annotated[
        int, typer.Option(min=8, help="Simulated days (7-day retention needs 8+).")
    ] = 14,
    arms: Annotated[
        str,
        typer.Option(
            help="Comma-separated arms: champion, challenger, popularity, push-daily, harmful."
        ),
    ] = "champion,popularity,push-daily",
    users_per_arm: Annotated[
        int, typer.Option(min=10, help="Weekly-active users per arm (disjoint samples).")
    ] = 400,
    seed: Annotated[int, typer.Option(help="Seed of the samples and every user's draws.")] = 7,
    home: HomeOpt = None,
) -> None:
    """Closed-loop A/B in the synthetic world: each arm's users live with its feed and pushes.

    Prints each arm's 7-day retention, workout starts, pushes and disables per user-week (95%
    bootstrap intervals), beginner-safety violations, coverage and latency, then the launch
    targets; saves the table and the plots under reports/simulated_ab/.
    """
    from fitpulse_orchestration.server.runtime import profile_backends
    from fitpulse_orchestration.serving.feed_types import ServiceUnavailableError
    from fitpulse_orchestration.simulation.ab import (
        SimulationSettings,
        prepare_simulation,
        save_report,
        simulate_ab,
    )
    from fitpulse_orchestration.simulation.report import format_table
    from model_registry.serving import registry_sources

    project = ProjectHome.resolve(home)
    backends = profile_backends(project, "local")
    names = tuple(a.strip() for a in arms.split(",") if a.strip())
    started = time.perf_counter()
    try:
        settings = SimulationSettings(arms=names, days=days, users_per_arm=users_per_arm, seed=seed)
        feed_source, push_source = registry_sources(
            backends.tracking_uri, project.model_cache, backends.store, backends.audit_key
        )
        with prepare_simulation(
            backends.store,
            backends.online,
            backends.pseudonymizer,
            feed_source,
            push_source,
            settings.aliases,
        ) as env:
            result = simulate_ab(env, settings)
    except (ValueError, FileNotFoundError, ServiceUnavailableError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    say(
        f"simulated {days} days from {result.start.date()} for {len(names)} arms x "
        f"{users_per_arm} users in {time.perf_counter() - started:.0f} s "
        f"(models {result.model_versions})"
    )
    typer.echo(format_table(result.table))
    for target in result.targets:
        typer.echo(f"{'PASS' if target.passed else 'FAIL'}  {target.name}: {target.detail}")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for name, key in save_report(backends.store, result, stamp).items():
        say(f"{name}: {backends.store.uri(key)}")


@app.command("simulate-rollout")
def simulate_rollout_cmd(
    config: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Rollout TOML.")],
    challenger: Annotated[
        str,
        typer.Option(
            help="registry: the challenger alias; missing-feature: the champion with a ranker "
            "that wants a feature serving lacks (a rollback rehearsal)."
        ),
    ] = "registry",
    users: Annotated[int, typer.Option(min=10, help="Weekly-active users in the rollout.")] = 800,
    days_per_step: Annotated[int, typer.Option(min=1, help="Simulated days per step.")] = 2,
    kill_on_day: Annotated[
        int | None, typer.Option(help="Pull the kill switch at the end of this day.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample and the users' draws.")] = 7,
    home: HomeOpt = None,
) -> None:
    """Rehearse a canary rollout in the closed-loop simulation.

    Its state and audit go under simulations/, apart from real rollouts.
    """
    from fitpulse_orchestration.server.runtime import profile_backends
    from fitpulse_orchestration.serving.feed_types import ServiceUnavailableError
    from fitpulse_orchestration.serving.rollout import RolloutController, load_rollout_config
    from fitpulse_orchestration.simulation.ab import prepare_simulation
    from fitpulse_orchestration.simulation.canary import (
        missing_feature_challenger,
        simulate_rollout,
    )
    from model_registry.serving import registry_sources

    if challenger not in ("registry", "missing-feature"):
        raise typer.BadParameter("use registry or missing-feature", param_hint="--challenger")
    project = ProjectHome.resolve(home)
    backends = profile_backends(project, "local")
    parsed = exit_2_on((ValueError,), lambda: load_rollout_config(config))
    controller = RolloutController(backends.store, backends.audit_key, namespace="simulations/")
    days = days_per_step * len(parsed.steps)
    try:
        feed, push = registry_sources(
            backends.tracking_uri, project.model_cache, backends.store, backends.audit_key
        )
        aliases = ("champion", "challenger") if challenger == "registry" else ("champion",)
        with prepare_simulation(
            backends.store, backends.online, backends.pseudonymizer, feed, push, aliases
        ) as env:
            models = env.service.state.models
            if challenger == "registry":
                loaded = models.get("challenger")
                if loaded is None or loaded.model is None:
                    raise ValueError("no loadable challenger alias in the registry")
                if loaded.version != parsed.challenger_version:
                    raise ValueError(
                        f"the challenger alias is version {loaded.version}, the rollout names "
                        f"version {parsed.challenger_version}"
                    )
            else:
                loaded = missing_feature_challenger(models["champion"], parsed.challenger_version)
            result = simulate_rollout(
                env, controller, parsed, loaded, users, days, days_per_step, seed,
                "simulate-rollout", kill_on_day,
            )  # fmt: skip
    except (ValueError, FileNotFoundError, ServiceUnavailableError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    for day, review in result.reviews:
        say(
            f"day {day}: {review.action} at {review.share:.0%} (canary {review.canary.requests} "
            f"requests, control {review.control.requests})"
            + (f": {'; '.join(review.breaches)}" if review.breaches else "")
        )
    by_day = result.run.requests.groupby("day")["variant"].value_counts().unstack(fill_value=0)
    typer.echo(by_day.to_string())
    print_rollout(controller, parsed.name)
