"""Train, recommend, monitor, and the one-command demo that runs them on a generated world."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from fitpulse_orchestration.cli._common import (
    HomeOpt,
    app,
    exit_2_on,
    home_store,
    print_status,
    promotion_for,
    run_job,
    say,
)
from fitpulse_orchestration.settings import ProjectHome
from model_registry.names import HOME_RANKER_MODEL

if TYPE_CHECKING:
    import pandas as pd

    from fitpulse_orchestration.runner import TrainingRun


def _feed_samples(home: ProjectHome) -> dict[str, Any]:
    """Feeds for a warm user, a cold user and a beginner, as of the end of the snapshot."""
    import pandas as pd

    from fitpulse_orchestration.batch import load_trained_feed
    from fitpulse_orchestration.features.point_in_time import compute_user_features
    from fitpulse_orchestration.ranking.feed import build_feeds

    snapshot, model = load_trained_feed(home_store(home))
    inputs, as_of = snapshot.inputs, snapshot.split.end
    users = inputs.profiles[["user_id", "fitness_level", "region"]]
    feats = compute_user_features(inputs, users.assign(as_of=as_of)).set_index("user_id")
    warm = feats[(feats["u_is_cold"] == 0) & (feats["fitness_level"] != "beginner")]
    cold = feats[feats["u_is_cold"] == 1]
    beginners = feats[(feats["fitness_level"] == "beginner") & (feats["u_is_cold"] == 0)]
    picks = {
        "warm user": warm["u_engaged_28d"].idxmax() if len(warm) else None,
        "cold user": cold.index[0] if len(cold) else None,
        "beginner": beginners.index[0] if len(beginners) else None,
    }
    chosen = {k: v for k, v in picks.items() if v is not None}
    result = build_feeds(model, inputs, users[users["user_id"].isin(list(chosen.values()))], as_of)
    catalog = inputs.catalog.set_index("item_id")
    out = {}
    for label, user in chosen.items():
        feed = result.feeds[result.feeds["user_id"] == user].head(10)
        rows = pd.DataFrame(
            {
                "rank": feed["rank"],
                "item": feed["item_id"],
                "title": feed["item_id"].map(catalog["title"]),
                "category": feed["category"],
                "difficulty": feed["item_id"].map(catalog["difficulty"]),
                "intensity": feed["item_id"].map(catalog["intensity"]),
                "reason": feed["reason"],
            }
        )
        out[label] = {
            "user": user,
            "level": feats.at[user, "fitness_level"],
            "engaged_28d": int(feats.at[user, "u_engaged_28d"]),
            "feed": rows,
        }
    return out


def _report(home: ProjectHome, run: TrainingRun) -> pd.DataFrame:
    from fitpulse_orchestration.evaluation.home_feed import format_table
    from fitpulse_orchestration.storage.asset_values import load_asset_value

    table: pd.DataFrame = load_asset_value(home_store(home), "home_feed_evaluation").table
    home.reports.mkdir(parents=True, exist_ok=True)
    path = home.reports / "home_feed_evaluation.json"
    snapshot = load_asset_value(home_store(home), "training_snapshot")
    payload = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "dagster_run_id": run.run_id,
        "split": snapshot.split.as_dict(),
        "failed_checks": run.failed_checks,
        "rows": table.to_dict(orient="records"),
    }
    tuning = load_asset_value(home_store(home), "retrieval_tuning")
    selection = load_asset_value(home_store(home), "feed_selection")
    payload["tuning"] = tuning.chosen()
    payload["scorer"] = {"scorer": selection.scorer, "reason": selection.reason}
    path.write_text(json.dumps(payload, indent=2, default=str))
    typer.echo(
        f"\ntuned on validation ({tuning.users} users): "
        + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float | int) else f"{k} {v}"
            for k, v in tuning.chosen().items()
        )
    )
    typer.echo(f"scorer: {selection.scorer} ({selection.reason})")
    typer.echo(f"\nHome-feed evaluation on the held-out part ({snapshot.split.describe()}):")
    typer.echo(format_table(table))
    from fitpulse_orchestration.evaluation.retrieval import format_retrieval_markdown

    retrieval = load_asset_value(home_store(home), "retrieval_evaluation")
    typer.echo("\nRetrieval on the same window (each list cut at 100):")
    typer.echo(format_retrieval_markdown(retrieval.table))
    status = "FAILED: " + ", ".join(run.failed_checks) if run.failed_checks else "passed"
    typer.echo(f"asset checks: {status}")
    say(f"wrote {path}")
    if run.gate is not None:
        typer.echo(f"\npromotion gate for version {run.version}: {run.gate.summary()}")
        for check in run.gate.checks:
            typer.echo(f"  [{'pass' if check.passed else 'FAIL'}] {check.name}: {check.detail}")
    return table


def _serving_model(home: ProjectHome, version: str | None) -> tuple[str, Any]:
    """What ``recommend`` serves: ``version`` when asked, else the audited champion's model.

    As the service resolves it: the champion of the verified audit log, each bundle checked
    against its registered digest. Returns the description and the feed model, or None for the
    labelled popularity fallback that serves while no champion is promoted.
    """
    from fitpulse_orchestration.ranking.bundle import read_bundle
    from model_registry.promotion import CHAMPION
    from model_registry.serving import ArtifactMismatchError, RegistryModelSource

    source = RegistryModelSource(
        home.mlflow_tracking_uri, home.model_cache, promotion_for(home).audit
    )
    role = f"version {version} (as asked)"
    if version is None:
        version = exit_2_on((RuntimeError,), lambda: source.version_for(CHAMPION))
        role = f"version {version} (champion)"
    if version is None:
        return "the popularity fallback: no champion is promoted", None
    path = exit_2_on((ArtifactMismatchError,), lambda: source.fetch(version))
    return f"{HOME_RANKER_MODEL} {role}", read_bundle(path).model


@app.command()
def demo(
    scale: Annotated[str, typer.Option(help="World size: tiny, demo or large.")] = "demo",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    home: HomeOpt = None,
) -> None:
    """Generate a world, ingest it, train, evaluate, register, and show sample feeds."""
    started = time.perf_counter()
    from fitpulse_orchestration.cli.data import generate

    generate(scale=scale, seed=seed, shift_days=0, home=home)
    project = ProjectHome.resolve(home)
    from fitpulse_orchestration.runner import run_monitoring, run_training

    trained = run_job(project, lambda: run_training(project, say=say))
    _report(project, trained)
    for label, sample in _feed_samples(project).items():
        typer.echo(
            f"\nSample feed, {label} {sample['user']} ({sample['level']}, "
            f"{sample['engaged_28d']} engagements in 28 days):"
        )
        typer.echo(sample["feed"].to_string(index=False))
    monitoring = run_monitoring(project, say=say)
    typer.echo("")
    demo_review(project, trained)
    typer.echo("\nModel registry:")
    print_status(project, HOME_RANKER_MODEL)
    drift = monitoring.reports.get("feature_drift_report")
    if drift is not None:
        typer.echo(f"feature drift report: {drift.html_report}")
    from fitpulse_orchestration.serving.auth import local_tokens

    local_tokens(project.api_tokens_file, project.local_token_file)
    champion = promotion_for(project).audited(HOME_RANKER_MODEL).champion
    typer.echo(
        f"serve it: `fitpulse serve --home {project.root}`, then call it with "
        f'`curl -H "Authorization: Bearer $(cat {project.local_token_file})" '
        "http://127.0.0.1:8000/v1/home-feed/USER_ID`"
        + (
            f" (champion: version {champion})"
            if champion
            else " (no champion: it answers from the labelled popularity fallback)"
        )
    )
    say(
        f"demo finished in {time.perf_counter() - started:.0f} s. Explore it with: "
        f"fitpulse ui --home {project.root}"
    )
    if trained.failed_checks or not monitoring.success:
        raise typer.Exit(code=1)


DEMO_REVIEWER: Final = "demo-reviewer"
"""The demo's stand-in reviewer: it approves what passed its gate so the demo serves a model."""


def demo_review(project: ProjectHome, trained: TrainingRun) -> None:
    """Approve and promote each gate-passed version as ``DEMO_REVIEWER`` (demo only).

    The services load only a promoted version (gate passed, approved). A real deployment has a
    person approve (``fitpulse registry approve`` or ``review_model_job``); the one-command demo
    stands in for them, says so, and records it in the audit log like any review.
    """
    from model_registry.names import PUSH_POLICY_MODEL
    from model_registry.reviewers import add_reviewer, approval_code, load_roster

    registry = promotion_for(project)
    key_file = project.root / "secrets" / "demo_reviewer_key"
    roster = load_roster(project.reviewers_file)
    if DEMO_REVIEWER not in roster.digests:
        key_file.unlink(missing_ok=True)
        key = add_reviewer(project.reviewers_file, DEMO_REVIEWER)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        roster = load_roster(project.reviewers_file)
    if not key_file.is_file():
        typer.echo(
            f"{DEMO_REVIEWER} is on the roster but its key file {key_file} is gone: nothing is "
            "approved (a reviewer approves with `fitpulse registry approve`)"
        )
        return
    key = key_file.read_text().strip()
    push = trained.push
    for model, version, passed in (
        (HOME_RANKER_MODEL, trained.version, trained.gate_passed),
        (PUSH_POLICY_MODEL, push.version if push else None, push is not None and push.gate_passed),
    ):
        if version is None:
            continue
        if not passed:
            typer.echo(
                f"{model} version {version} failed its gate: the services serve their "
                "labelled fallbacks (popularity; push: no send) until a version passes"
            )
            continue
        code = approval_code(key, DEMO_REVIEWER, model, version, "approve")
        roster.authorise(DEMO_REVIEWER, code, model, version, "approve")
        registry.approve(model, version, DEMO_REVIEWER, "fitpulse demo: its stand-in reviewer")
        registry.promote(model, version, "fitpulse demo")
        typer.echo(
            f"{model} version {version}: approved by {DEMO_REVIEWER} (the demo's stand-in; in "
            f"real use a person runs `fitpulse registry approve {model} {version} --reviewer "
            f"NAME --note TEXT`) and promoted to champion"
        )
    typer.echo(
        f"reviewer roster: {project.reviewers_file} (add yourself: `fitpulse reviewer add NAME "
        f"--home {project.root}`); demo-reviewer's key: {key_file}"
    )


@app.command()
def train(
    home: HomeOpt = None,
    holdout: Annotated[
        str,
        typer.Option(
            help="Evaluation protocol: time (the latest days), user_random (a seeded share of "
            "each user's items, the Recommenders protocol) or leave_last (each user's last "
            "item)."
        ),
    ] = "time",
    eval_days: Annotated[
        int | None,
        typer.Option(help="time: fixed days in the held-out window (default: sized by events)."),
    ] = None,
    ranker_days: Annotated[
        int | None,
        typer.Option(help="time: fixed days in the validation window (default: sized)."),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(min=1, help="Hyper-parameter search trials per retriever (default 12)."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Ingest landed days up to this date (YYYY-MM-DD) only.")
    ] = None,
    gate: Annotated[
        list[str] | None,
        typer.Option(
            help="Promotion-gate setting KEY=VALUE (repeatable), e.g. coverage_tolerance=0.03; "
            "see docs/operating.md, 'Promotion gate'."
        ),
    ] = None,
) -> None:
    """Ingest the home's landing zone and train, evaluate, register and gate a new version."""
    project = ProjectHome.resolve(home)
    try:
        last = dt.date.fromisoformat(until) if until else None
    except ValueError as exc:
        raise typer.BadParameter(
            f"{until!r} is not a YYYY-MM-DD date", param_hint="--until"
        ) from exc
    from fitpulse_orchestration.features.training import HOLDOUTS

    if holdout not in HOLDOUTS:
        raise typer.BadParameter(
            f"{holdout!r} is not one of {', '.join(HOLDOUTS)}", param_hint="--holdout"
        )
    from fitpulse_orchestration.runner import run_training

    gate_settings = _gate_options(gate)
    trained = run_job(
        project,
        lambda: run_training(
            project,
            eval_days=eval_days,
            ranker_days=ranker_days,
            until=last,
            gate=gate_settings,
            holdout=holdout,
            trials=trials,
            say=say,
        ),
    )
    _report(project, trained)
    if trained.failed_checks:
        raise typer.Exit(code=1)


def _gate_options(pairs: list[str] | None) -> dict[str, float]:
    from dataclasses import fields

    from model_registry.gate import GatePolicy

    known = [f.name for f in fields(GatePolicy)]
    out: dict[str, float] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or number != number:
            raise typer.BadParameter(f"{pair!r} is not KEY=NUMBER", param_hint="--gate")
        if key.strip() not in known:
            raise typer.BadParameter(
                f"unknown gate setting {key.strip()!r}; one of {', '.join(known)}",
                param_hint="--gate",
            )
        out[key.strip()] = int(number) if key.strip() in ("bootstrap_samples", "seed") else number
    return out


@app.command()
def recommend(
    users: Annotated[
        Path,
        typer.Option(
            exists=True, dir_okay=False, help="CSV/Parquet with a user_id column (raw ids)."
        ),
    ],
    output: Annotated[Path, typer.Option(help="Output .csv or .parquet.")],
    n: Annotated[int, typer.Option(min=1, max=100, help="Items per user.")] = 10,
    version: Annotated[
        str | None,
        typer.Option(
            help="A registered version to recommend from (offline evaluation of a candidate); "
            "default: the promoted champion, else the popularity fallback, as the service serves."
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Batch recommendations (seen items excluded) as the service would serve them."""
    from fitpulse_orchestration.batch import read_user_ids, recommend_batch, write_recommendations

    project = ProjectHome.resolve(home)
    raw_ids = read_user_ids(users)
    served, model = _serving_model(project, version)
    say(f"serving {served}")
    try:
        recs = recommend_batch(home_store(project), project, model, raw_ids, n)
    except FileNotFoundError as exc:
        typer.echo(f"error: nothing trained in this home: run `fitpulse train` ({exc})", err=True)
        raise typer.Exit(code=2) from exc
    write_recommendations(recs, output)
    say(
        f"wrote {len(recs):,} recommendations for {recs['user_id'].nunique():,} of "
        f"{len(raw_ids):,} users to {output}"
    )


@app.command()
def monitor(home: HomeOpt = None) -> None:
    """Run the monitoring job: drift reports, training-serving skew and UX monitors."""
    from fitpulse_orchestration.runner import run_monitoring

    monitoring = run_monitoring(ProjectHome.resolve(home), say=say)
    for failure in monitoring.failures:
        typer.echo(f"monitoring step {failure}", err=True)
    if not monitoring.success:
        raise typer.Exit(code=2)
