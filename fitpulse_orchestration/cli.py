"""``fitpulse``: generate a world, import logs, train, and produce batch recommendations.

Heavy libraries (Dagster, MLflow, LightGBM) are imported inside the commands that need them, so
``fitpulse --help`` stays fast.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from fitpulse_orchestration.settings import ProjectHome
from model_registry.names import HOME_RANKER_MODEL

if TYPE_CHECKING:
    import dagster as dg
    import pandas as pd

    from fitpulse_orchestration.storage import ObjectStore

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# Dagster marks dagster-mlflow's resource and hook as beta; the warning is noise for CLI users.
warnings.filterwarnings("ignore", message=".*is currently in beta.*")

app = typer.Typer(
    help="FitPulse personalization platform.", no_args_is_help=True, pretty_exceptions_enable=False
)

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Project home (default $FITPULSE_HOME or ./.fitpulse)."),
]


def _say(message: str) -> None:
    typer.echo(f"[fitpulse {time.strftime('%H:%M:%S')}] {message}")


def _store(home: ProjectHome) -> ObjectStore:
    from fitpulse_orchestration.storage import LocalObjectStore

    return LocalObjectStore(home.store)


def _quiet_run_config() -> dict[str, Any]:
    return {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _instance(home: ProjectHome) -> dg.DagsterInstance:
    import dagster as dg

    return dg.DagsterInstance.from_config(str(home.dagster))


def ingest_landed(
    home: ProjectHome, until: dt.date | None = None
) -> tuple[Any, Any, list[dt.date], dict[str, int]]:
    """Ingest every landed day (up to ``until``) in date order.

    Returns:
        The definitions, the Dagster instance, the ingested days and the record totals.
    """
    from fitpulse_orchestration import layout
    from fitpulse_orchestration.definitions import DEFAULT_PARTITION_START, build_definitions

    home.create()
    store = _store(home)
    days = layout.landed_dates(store.list_keys(f"{layout.LANDING_EVENTS}/"))
    if until is not None:
        days = [d for d in days if d <= until]
    if not days:
        raise typer.BadParameter(
            f"no landed events under {store.uri(layout.LANDING_EVENTS)}: run `fitpulse demo` "
            "or `fitpulse import-interactions` first",
            param_hint="--home",
        )
    start = min(days[0].isoformat(), DEFAULT_PARTITION_START)
    defs = build_definitions(home, "local", start)
    instance = _instance(home)
    ingestion = defs.resolve_job_def("ingestion_job")
    totals = {"read": 0, "accepted": 0, "quarantined": 0, "duplicates": 0}
    _say(f"ingesting {len(days)} landed days ({days[0]} .. {days[-1]})")
    for day in days:
        result = ingestion.execute_in_process(
            instance=instance, partition_key=day.isoformat(), run_config=_quiet_run_config()
        )
        meta = result.get_asset_materialization_events()[0].materialization.metadata
        counts = {k: int(meta[k].value) for k in totals}  # type: ignore[arg-type]
        for key, value in counts.items():
            totals[key] += value
        _say(
            f"  {day}: read {counts['read']:>7,}  accepted {counts['accepted']:>7,}  "
            f"quarantined {counts['quarantined']:>5,}  duplicates {counts['duplicates']:>5,}"
        )
    return defs, instance, days, totals


def run_training(
    home: ProjectHome,
    eval_days: int | None = None,
    ranker_days: int | None = None,
    until: dt.date | None = None,
    gate: dict[str, float] | None = None,
    holdout: str = "time",
    trials: int | None = None,
) -> dict[str, Any]:
    """Ingest landed days (up to ``until``) in date order, then train; return run facts.

    ``holdout`` is the evaluation protocol (``SplitParams``); ``eval_days``/``ranker_days``
    fix the ``time`` protocol's windows (None: sized by events); ``trials`` is the
    hyper-parameter search's budget per retriever (None: the default).
    """
    defs, instance, days, totals = ingest_landed(home, until)
    store = _store(home)
    _say(
        "training: snapshot -> tuning -> ALS + EASE + two-tower + FAISS + popularity -> ranker "
        "-> scorer choice -> evaluation -> refit -> registry -> promotion gate"
    )
    started = time.perf_counter()
    run_config = _quiet_run_config()
    split = {"holdout": holdout, "eval_days": eval_days, "ranker_days": ranker_days}
    run_config["ops"] = {
        "training_snapshot": {"config": split},
        "promotion_gate": {"config": gate or {}},
    }
    if trials is not None:
        run_config["ops"]["retrieval_tuning"] = {"config": {"n_trials": trials}}
    result = defs.resolve_job_def("training_job").execute_in_process(
        instance=instance, run_config=run_config, raise_on_error=False
    )
    stages = _stage_durations(instance, result.run_id)
    for name, seconds in stages.items():
        _say(f"  {name:<24} {seconds:6.1f} s")
    # A failed promotion gate keeps a version from review; it is not a training failure.
    failed_check_events = [
        e
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and not e.asset_check_evaluation_data.passed  # type: ignore[union-attr]
        and e.asset_check_evaluation_data.asset_key.path[-1] != "promotion_gate"  # type: ignore[union-attr]
    ]
    failed_checks = [
        e.asset_check_evaluation_data.check_name  # type: ignore[union-attr]
        for e in failed_check_events
    ]
    # A blocking check that fails also fails its own step; only other failures are errors.
    check_steps = {e.step_key for e in failed_check_events}
    failures = [e for e in result.all_events if e.is_step_failure]
    if not result.success and any(e.step_key not in check_steps for e in failures):
        for event in failures:
            typer.echo(f"step {event.step_key} failed: {_root_error(event)}", err=True)
        typer.echo(
            f"training run {result.run_id} failed; full logs: DAGSTER_HOME={home.dagster} "
            "dagster dev",
            err=True,
        )
        raise typer.Exit(code=2)
    outcome = "finished" if result.success else "stopped by failed blocking checks"
    _say(f"training {outcome} in {time.perf_counter() - started:.1f} s (run {result.run_id})")
    gate = version = push = None
    if result.success:
        from fitpulse_orchestration.push.examples import has_push_logs
        from fitpulse_orchestration.storage.asset_values import load_asset_value

        gate = load_asset_value(store, "promotion_gate")
        version = load_asset_value(store, "registered_home_ranker").version
        snapshot = load_asset_value(store, "training_snapshot")
        if has_push_logs(snapshot.inputs.events):
            push = _run_push_training(defs, instance, store)
        else:
            _say(
                "push: skipped, the data holds no push_decision or push_sent events (an "
                "imported log carries no push system logs to learn from)"
            )
    return {
        "days": days,
        "totals": totals,
        "stages": stages,
        "run_id": result.run_id,
        "failed_checks": failed_checks,
        "gate": gate,
        "version": version,
        "push": push,
    }


def _run_push_training(
    defs: dg.Definitions, instance: dg.DagsterInstance, store: Any
) -> dict[str, Any]:
    """Train, evaluate and register the push policy from the snapshot just trained on."""
    from fitpulse_orchestration.storage.asset_values import load_asset_value

    _say("push: examples -> open + fatigue models -> off-policy evaluation -> registry")
    started = time.perf_counter()
    result = defs.resolve_job_def("push_training_job").execute_in_process(
        instance=instance, run_config=_quiet_run_config(), raise_on_error=False
    )
    failures = [e for e in result.all_events if e.is_step_failure]
    if failures:
        for event in failures:
            typer.echo(f"push step {event.step_key} failed: {_root_error(event)}", err=True)
        raise typer.Exit(code=2)
    evaluation = load_asset_value(store, "push_policy_evaluation")
    version = load_asset_value(store, "registered_push_policy").version
    _say(f"push finished in {time.perf_counter() - started:.1f} s: version {version}")
    for line in evaluation.readable().splitlines():
        _say(f"  {line}")
    return {"version": version, "gate_passed": evaluation.gate_passed}


def _root_error(event: Any) -> str:
    """The innermost error message of a step-failure event (the user's, not Dagster's)."""
    error = event.step_failure_data.error
    while error is not None and error.cause is not None:
        error = error.cause
    return str(error.message.strip()) if error is not None else "unknown error"


def _stage_durations(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    starts: dict[str, float] = {}
    out: dict[str, float] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = record.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            out[event.step_key] = record.timestamp - starts.get(event.step_key, record.timestamp)
    return out


def _feed_samples(home: ProjectHome) -> dict[str, Any]:
    """Feeds for a warm user, a cold user and a beginner, as of the end of the snapshot."""
    import pandas as pd

    from fitpulse_orchestration.batch import load_trained_feed
    from fitpulse_orchestration.features.point_in_time import compute_user_features
    from fitpulse_orchestration.ranking.feed import build_feeds

    snapshot, model = load_trained_feed(_store(home))
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


def _report(home: ProjectHome, facts: dict[str, Any]) -> pd.DataFrame:
    from fitpulse_orchestration.evaluation.home_feed import format_table
    from fitpulse_orchestration.storage.asset_values import load_asset_value

    table: pd.DataFrame = load_asset_value(_store(home), "home_feed_evaluation").table
    home.reports.mkdir(parents=True, exist_ok=True)
    path = home.reports / "home_feed_evaluation.json"
    snapshot = load_asset_value(_store(home), "training_snapshot")
    payload = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "dagster_run_id": facts["run_id"],
        "split": snapshot.split.as_dict(),
        "failed_checks": facts["failed_checks"],
        "rows": table.to_dict(orient="records"),
    }
    tuning = load_asset_value(_store(home), "retrieval_tuning")
    selection = load_asset_value(_store(home), "feed_selection")
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

    retrieval = load_asset_value(_store(home), "retrieval_evaluation")
    typer.echo("\nRetrieval on the same window (each list cut at 100):")
    typer.echo(format_retrieval_markdown(retrieval.table))
    status = "FAILED: " + ", ".join(facts["failed_checks"]) if facts["failed_checks"] else "passed"
    typer.echo(f"asset checks: {status}")
    _say(f"wrote {path}")
    if facts["gate"] is not None:
        typer.echo(f"\npromotion gate for version {facts['version']}: {facts['gate'].summary()}")
        for check in facts["gate"].checks:
            typer.echo(f"  [{'pass' if check.passed else 'FAIL'}] {check.name}: {check.detail}")
    return table


def _registry(home: ProjectHome) -> Any:
    from fitpulse_orchestration.storage.audit import AuditLog, load_audit_key
    from model_registry.client import RegistryClient
    from model_registry.promotion import ModelPromotion

    home.create()
    audit = AuditLog(_store(home), load_audit_key(home.audit_key_file))
    return ModelPromotion(RegistryClient(home.mlflow_tracking_uri), audit)


def _backend_registry(backends: Any) -> Any:
    """The promotion workflow on a profile's backends (production: the audit key's secret)."""
    from fitpulse_orchestration.storage.audit import AuditLog
    from model_registry.client import RegistryClient
    from model_registry.promotion import ModelPromotion

    return ModelPromotion(
        RegistryClient(backends.tracking_uri), AuditLog(backends.store, backends.audit_key)
    )


def _print_status(home: ProjectHome, model: str) -> None:
    from model_registry.promotion import format_status

    promotion = _registry(home)
    typer.echo(format_status(model, promotion.status(model)))
    typer.echo(f"audit log: {promotion.audit.location()}")


def _serving_model(home: ProjectHome, version: str | None) -> tuple[str, Any]:
    """What ``recommend`` serves: ``version`` when asked, else the audited champion's model.

    As the service resolves it: the champion of the verified audit log, each bundle checked
    against its registered digest. Returns the description and the feed model, or None for the
    labelled popularity fallback that serves while no champion is promoted.
    """
    from fitpulse_orchestration.ranking.bundle import read_bundle
    from model_registry.promotion import CHAMPION
    from model_registry.serving import ArtifactMismatchError, RegistryModelSource

    source = RegistryModelSource(home.mlflow_tracking_uri, home.model_cache, _registry(home).audit)
    role = f"version {version} (as asked)"
    if version is None:
        version = _exit_2_on((RuntimeError,), lambda: source.version_for(CHAMPION))
        role = f"version {version} (champion)"
    if version is None:
        return "the popularity fallback: no champion is promoted", None
    path = _exit_2_on((ArtifactMismatchError,), lambda: source.fetch(version))
    return f"{HOME_RANKER_MODEL} {role}", read_bundle(path).model


def run_monitoring(home: ProjectHome) -> dict[str, Any]:
    """Run the monitoring job on the local profile; return its reports' facts."""
    from fitpulse_orchestration.definitions import DEFAULT_PARTITION_START, build_definitions

    defs = build_definitions(home, "local", DEFAULT_PARTITION_START)
    _say("monitoring: drift of features and predictions, skew and UX monitors")
    result = defs.resolve_job_def("monitoring_job").execute_in_process(
        instance=_instance(home), run_config=_quiet_run_config(), raise_on_error=False
    )
    facts: dict[str, Any] = {"run_id": result.run_id, "success": result.success, "reports": {}}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        if mat.asset_key.path[-1] == "served_feed_log":
            facts["served_log_source"] = mat.metadata["source"].value
        if mat.asset_key.path[-1] == "training_serving_skew":
            facts["worst_skew"] = mat.metadata["worst_mismatch_rate"].value
        if mat.asset_key.path[-1] in ("feature_drift_report", "prediction_drift_report"):
            facts["reports"][mat.asset_key.path[-1]] = {
                k: mat.metadata[k].value
                for k in ("dataset_drift", "drift_share", "reference_version", "html_report")
            }
    facts["checks"] = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    failures = [e for e in result.all_events if e.is_step_failure]
    for event in failures:
        error = event.step_failure_data.error  # type: ignore[union-attr]
        message = error.message.strip() if error is not None else "unknown error"
        typer.echo(f"monitoring step {event.step_key} failed: {message}", err=True)
    for name, report in facts["reports"].items():
        verdict = "DRIFT" if report["dataset_drift"] else "no drift"
        _say(
            f"  {name}: {verdict} (share of drifted columns {report['drift_share']:.2f}, "
            f"reference version {report['reference_version']}) -> {report['html_report']}"
        )
    failed = sorted(k for k, ok in facts["checks"].items() if not ok)
    _say(f"  monitoring checks: {'FAILED: ' + ', '.join(failed) if failed else 'all passed'}")
    return facts


@app.command()
def generate(
    scale: Annotated[str, typer.Option(help="World size: tiny, demo or large.")] = "demo",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    shift_days: Annotated[
        int,
        typer.Option(
            help="Shift the last N days: an influx of beginners and a new trending category "
            "(0: no shift)."
        ),
    ] = 0,
    home: HomeOpt = None,
) -> None:
    """Generate a synthetic FitPulse world into the home's landing zone (replacing data there)."""
    from fitpulse_orchestration import layout
    from fitpulse_orchestration.world.generator import ShiftParams, generate_world, world_params

    project = ProjectHome.resolve(home).create()
    store = _store(project)
    for prefix in ("landing/", "warehouse/", f"{layout.ASSETS}/"):
        store.delete_prefix(prefix)
    shift = ShiftParams(days=shift_days) if shift_days else None
    params = world_params(scale, seed=seed, shift=shift)
    _say(
        f"generating the {scale!r} world (seed {seed}): {params.n_users:,} users, "
        f"{params.n_items:,} items + {params.new_items_per_day}/day, {params.days} days"
    )
    summary = generate_world(params, store)
    _say(
        f"landed {summary.records_written:,} records ({summary.n_valid_events:,} valid events, "
        f"bad: {summary.bad_records}) over {len(summary.landed_days)} days; "
        f"cold users {summary.cold_user_share:.0%}"
    )
    if summary.shift_summary:
        shift_info = summary.shift_summary
        _say(
            f"shift from {shift_info['start_date']}: {shift_info['shift_users']} new users "
            f"({shift_info['shift_beginner_share']:.0%} beginners), "
            f"{shift_info['trending_items']} items of the new '{shift_info['trending_category']}' "
            f"category; train on the days before it with `fitpulse train --until "
            f"{params.shift_start - dt.timedelta(days=1) if params.shift_start else ''}`"
        )


@app.command()
def demo(
    scale: Annotated[str, typer.Option(help="World size: tiny, demo or large.")] = "demo",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    home: HomeOpt = None,
) -> None:
    """Generate a world, ingest it, train, evaluate, register, and show sample feeds."""
    started = time.perf_counter()
    generate(scale=scale, seed=seed, shift_days=0, home=home)
    project = ProjectHome.resolve(home)
    facts = run_training(project)
    _report(project, facts)
    for label, sample in _feed_samples(project).items():
        typer.echo(
            f"\nSample feed, {label} {sample['user']} ({sample['level']}, "
            f"{sample['engaged_28d']} engagements in 28 days):"
        )
        typer.echo(sample["feed"].to_string(index=False))
    monitoring = run_monitoring(project)
    typer.echo("")
    _demo_review(project, facts)
    typer.echo("\nModel registry:")
    _print_status(project, HOME_RANKER_MODEL)
    drift = monitoring["reports"].get("feature_drift_report")
    if drift is not None:
        typer.echo(f"feature drift report: {drift['html_report']}")
    from fitpulse_orchestration.serving.auth import local_tokens

    local_tokens(project.api_tokens_file, project.local_token_file)
    champion = _registry(project).audited(HOME_RANKER_MODEL).champion
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
    _say(
        f"demo finished in {time.perf_counter() - started:.0f} s. Explore it with: "
        f"DAGSTER_HOME={project.dagster} FITPULSE_HOME={project.root} dagster dev"
    )
    if facts["failed_checks"] or not monitoring["success"]:
        raise typer.Exit(code=1)


DEMO_REVIEWER: Final = "demo-reviewer"
"""The demo's stand-in reviewer: it approves what passed its gate so the demo serves a model."""


def _demo_review(project: ProjectHome, facts: dict[str, Any]) -> None:
    """Approve and promote each gate-passed version as ``DEMO_REVIEWER`` (demo only).

    The services load only a promoted version (gate passed, approved). A real deployment has a
    person approve (``fitpulse registry approve`` or ``review_model_job``); the one-command demo
    stands in for them, says so, and records it in the audit log like any review.
    """
    from model_registry.names import PUSH_POLICY_MODEL
    from model_registry.reviewers import add_reviewer, approval_code, load_roster

    registry = _registry(project)
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
    push = facts.get("push") or {}
    for model, version, passed in (
        (HOME_RANKER_MODEL, facts["version"], facts["gate"] is not None and facts["gate"].passed),
        (PUSH_POLICY_MODEL, push.get("version"), bool(push.get("gate_passed"))),
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
            "see README 'Promotion gate'."
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
    facts = run_training(
        project,
        eval_days=eval_days,
        ranker_days=ranker_days,
        until=last,
        gate=_gate_options(gate),
        holdout=holdout,
        trials=trials,
    )
    _report(project, facts)
    if facts["failed_checks"]:
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


@app.command("import-interactions")
def import_interactions_cmd(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV/TSV or Parquet.")],
    home: HomeOpt = None,
    user_col: Annotated[str, typer.Option(help="Column holding user ids.")] = "user_id",
    item_col: Annotated[str, typer.Option(help="Column holding item ids.")] = "item_id",
    ts_col: Annotated[str, typer.Option(help="Column holding timestamps.")] = "timestamp",
    event_col: Annotated[
        str | None, typer.Option(help="Column of event types (omit with --weight-col).")
    ] = None,
    weight_col: Annotated[
        str | None, typer.Option(help="Numeric weight/rating column mapped by --grades.")
    ] = None,
    grades: Annotated[
        str,
        typer.Option(
            help="Weight thresholds, e.g. '5:workout_complete,4:workout_start,"
            "3:click'; below the lowest: impression."
        ),
    ] = "5:workout_complete,4:workout_start,3:click",
    event_map: Annotated[
        str,
        typer.Option(help="Rename source event types, e.g. 'play:click,finish:workout_complete'."),
    ] = "",
    ts_unit: Annotated[
        str | None, typer.Option(help="Epoch unit of numeric timestamps: s or ms.")
    ] = None,
    sep: Annotated[str | None, typer.Option(help="CSV separator (default: by extension).")] = None,
    no_header: Annotated[
        bool,
        typer.Option(
            help="The text file has no header; columns are named by "
            "--user-col,--item-col,(--event-col|--weight-col),--ts-col."
        ),
    ] = False,
) -> None:
    """Land an external interaction log in the collector's format for the same pipeline."""
    from fitpulse_orchestration.events.importer import ImportOptions, import_interactions

    if (event_col is None) == (weight_col is None):
        raise typer.BadParameter("give exactly one of --event-col or --weight-col")
    mapped = dict(pair.split(":", 1) for pair in event_map.split(",") if pair)
    grade_pairs = tuple(
        (float(t), e) for t, e in (pair.split(":", 1) for pair in grades.split(",") if pair)
    )
    middle = event_col or weight_col
    options = ImportOptions(
        user_col=user_col,
        item_col=item_col,
        ts_col=ts_col,
        event_col=event_col,
        weight_col=weight_col,
        ts_unit=ts_unit,
        event_map=mapped,
        grades=grade_pairs,
        sep=sep,
        column_names=(user_col, item_col, str(middle), ts_col) if no_header else None,
    )
    project = ProjectHome.resolve(home).create()
    summary = import_interactions(file, _store(project), options)
    _say(
        f"read {summary.rows_read:,} rows: landed {summary.rows_landed:,}, rejected "
        f"{summary.rows_rejected:,} {summary.reject_reasons or ''} over {len(summary.days)} days"
    )
    _say(f"events: {summary.event_counts}")
    if summary.rejects_file:
        _say(f"rejected rows with reasons: {summary.rejects_file}")
    _say(f"next: fitpulse train --home {project.root}")


@app.command("import-catalog")
def import_catalog_cmd(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV/TSV or Parquet.")],
    home: HomeOpt = None,
    id_col: Annotated[
        str, typer.Option(help="Column of item ids (as import-interactions lands them).")
    ] = "item_id",
    title_col: Annotated[
        str, typer.Option(help="Column of titles; '' uses the item id.")
    ] = "title",
    type_col: Annotated[
        str | None, typer.Option(help="Column of item types (needs --published-col).")
    ] = None,
    item_type: Annotated[
        str | None, typer.Option(help="Type of items without one (needs --published-col).")
    ] = None,
    category_col: Annotated[
        str | None, typer.Option(help="Column of categories (blank: the first genre).")
    ] = None,
    genres_col: Annotated[
        str | None,
        typer.Option(help="Column of genres, e.g. 'Action|Comedy': category and tags."),
    ] = None,
    genre_sep: Annotated[str, typer.Option(help="Separator of the genres.")] = "|",
    difficulty_col: Annotated[
        str | None, typer.Option(help="Column of beginner/intermediate/advanced.")
    ] = None,
    intensity_col: Annotated[str | None, typer.Option(help="Column of low/medium/high.")] = None,
    difficulty: Annotated[
        str,
        typer.Option(
            help="Declared difficulty of items without one. Items of unknown difficulty or "
            "intensity are never shown to beginners or users of unknown level."
        ),
    ] = "unknown",
    intensity: Annotated[
        str, typer.Option(help="Declared intensity of items without one.")
    ] = "unknown",
    published_col: Annotated[
        str | None,
        typer.Option(help="Column of publish times (default: unknown, never 'fresh')."),
    ] = None,
    published_unit: Annotated[
        str | None, typer.Option(help="Epoch unit of numeric publish times: s or ms.")
    ] = None,
    sep: Annotated[str | None, typer.Option(help="CSV separator (default: by extension).")] = None,
    fallback_encoding: Annotated[
        str,
        typer.Option(help="Codec of fields that are not UTF-8; 'none' rejects their rows."),
    ] = "cp1252",
    landing_day: Annotated[
        str | None,
        typer.Option(help="Landing day YYYY-MM-DD (later days win per item; default: derived)."),
    ] = None,
) -> None:
    """Land an item-metadata file (e.g. MovieLens movies.csv) as a catalog file."""
    from fitpulse_orchestration.events.catalog_import import CatalogImportOptions, import_catalog

    try:
        options = CatalogImportOptions(
            id_col=id_col,
            title_col=title_col or None,
            type_col=type_col,
            item_type=item_type,
            category_col=category_col,
            genres_col=genres_col,
            genre_sep=genre_sep,
            difficulty_col=difficulty_col,
            intensity_col=intensity_col,
            difficulty=difficulty.strip().lower(),
            intensity=intensity.strip().lower(),
            published_col=published_col,
            published_unit=published_unit,
            sep=sep,
            fallback_encoding=None if fallback_encoding.lower() == "none" else fallback_encoding,
            landing_day=dt.date.fromisoformat(landing_day) if landing_day else None,
        )
        project = ProjectHome.resolve(home).create()
        summary = import_catalog(file, _store(project), options)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    reasons = f" {summary.reject_reasons}" if summary.reject_reasons else ""
    _say(
        f"read {summary.rows_read:,} items: landed {summary.rows_landed:,}, rejected "
        f"{summary.rows_rejected:,}{reasons}"
    )
    if summary.catalog_file:
        _say(f"catalog file: {summary.catalog_file}")
    if summary.recoded_rows:
        _say(f"{summary.recoded_rows:,} rows were not UTF-8 and were read as {fallback_encoding}")
    if not summary.publish_times_known:
        _say("publish times unknown: items are available from the first event, never fresh")
    _say(f"{summary.beginner_safe:,} of {summary.rows_landed:,} items may be shown to beginners")
    if summary.rejects_file:
        _say(f"rejected rows with reasons: {summary.rejects_file}")


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
    _say(f"serving {served}")
    try:
        recs = recommend_batch(_store(project), project, model, raw_ids, n)
    except FileNotFoundError as exc:
        typer.echo(f"error: nothing trained in this home: run `fitpulse train` ({exc})", err=True)
        raise typer.Exit(code=2) from exc
    write_recommendations(recs, output)
    _say(
        f"wrote {len(recs):,} recommendations for {recs['user_id'].nunique():,} of "
        f"{len(raw_ids):,} users to {output}"
    )


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
ProfileOpt = Annotated[
    str | None,
    typer.Option(help="local or production (default $FITPULSE_PROFILE, else local)."),
]


def _runtime(
    home: Path | None,
    profile: str | None,
    clock: str,
    experiment: Path | None,
    poll_s: float,
    shadow_share: float = 0.0,
    rollout: str | None = None,
) -> Any:
    from fitpulse_orchestration.serving.feed_service import ServiceUnavailableError
    from fitpulse_orchestration.serving.runtime import build_runtime, profile_backends
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
        int, typer.Option(min=1, help="Worker processes (one per core; each loads the models).")
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
    # at one thread, so the variable is set before anything loads them, here or in a spawned
    # worker (a library's own setter reaches only the calling thread, not the request thread).
    # Without it the server spent 26-32 ms of CPU per request, with it 14.3-14.5 ms
    # (benchmarks/serve_bench.py, 2026-11-25).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn

    from fitpulse_orchestration.serving.runtime import SERVE_ENV, service_tokens
    from fitpulse_orchestration.settings import current_profile

    # Fail here, with a readable message, rather than inside a worker process.
    project = ProjectHome.resolve(home)
    try:
        tokens, created = service_tokens(project, profile or current_profile())
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--profile") from exc
    if created:
        _say(f"created the local caller token: {project.local_token_file} (mode 0600)")
    _say(
        f"{len(tokens.digests)} caller token(s) accepted; send 'Authorization: Bearer TOKEN'"
        + (
            f" (yours: $(cat {project.local_token_file}))"
            if project.local_token_file.exists()
            else ""
        )
    )
    runtime = _runtime(home, profile, clock, experiment, poll_s, shadow_share, rollout)
    state = runtime.service.state
    for alias, loaded in state.models.items():
        _say(
            f"{alias}: version {loaded.version}"
            + (f" (degraded: {loaded.problem})" if loaded.problem else "")
        )
    _say(
        f"serving as of {state.as_of.isoformat()} with {processes} process(es) x {threads} "
        f"thread(s) on http://{host}:{port}/v1/home-feed/USER_ID"
    )
    del runtime
    options = {
        "home": str(ProjectHome.resolve(home).root),
        "profile": profile or current_profile(),
        "clock": clock,
        "experiment": str(experiment.resolve()) if experiment else "",
        "poll_s": str(poll_s),
        "threads": str(threads),
        "shadow_share": str(shadow_share),
        "rollout": rollout or "",
        "docs": "1" if docs else "",
    }
    for key, value in options.items():
        os.environ[SERVE_ENV[key]] = value
    logging.getLogger("fitpulse_orchestration").setLevel(logging.INFO)
    uvicorn.run(
        "fitpulse_orchestration.serving.runtime:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=processes,
        log_level="warning",
    )


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
    store = _store(project)
    runtime = _runtime(home, "local", "snapshot", experiment, poll_s=10.0)
    try:
        users = world_user_ids(store, requests, seed)
        latent = load_latent(store)
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--home") from exc
    responses, summary = serve_traffic(runtime.service, users)
    runtime.served_log.close()
    _say(
        f"served {summary.requests:,} feeds ({summary.exposures:,} exposures) by variant "
        f"{summary.by_variant}; fallbacks {summary.fallbacks or 'none'}"
    )
    batch = simulate_feed_responses(latent, exposures_frame(responses), seed)
    keys = write_landing_events(store, batch.events, f"world-response-{seed}")
    counts = pd.Series([e["event_type"] for e in batch.events]).value_counts().to_dict()
    _say(
        f"the world responded with {len(batch.events):,} events {counts} in {len(keys)} "
        f"landing batches (unknown users {batch.unknown_users}, items {batch.unknown_items})"
    )
    _say(f"next: fitpulse analyze-experiment --home {project.root}")


@app.command("analyze-experiment")
def analyze_experiment_cmd(
    experiment: Annotated[str, typer.Option(help="Experiment name (from its TOML).")] = (
        "ranker-ab"
    ),
    control: Annotated[str, typer.Option(help="The control variant.")] = "control",
    home: HomeOpt = None,
) -> None:
    """Ingest landed events, then materialize experiment_analysis and print its table."""
    project = ProjectHome.resolve(home)
    defs, instance, _, _ = ingest_landed(project)
    run_config = _quiet_run_config()
    run_config["ops"] = {
        "experiment_analysis": {"config": {"experiment": experiment, "control": control}}
    }
    result = defs.resolve_job_def("experiment_analysis_job").execute_in_process(
        instance=instance, run_config=run_config, raise_on_error=False
    )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                typer.echo(f"experiment analysis failed: {_root_error(event)}", err=True)
        raise typer.Exit(code=2)
    (materialization,) = result.asset_materializations_for_node("experiment_analysis")
    summary = materialization.metadata["summary"].value
    typer.echo(materialization.metadata["readable"].value)  # type: ignore[union-attr]
    typer.echo(
        f"users {summary['users']:,}; excluded: {summary['mixed_users']} in several "  # type: ignore[index]
        f"variants, {summary['malformed_exposures']} malformed exposures"  # type: ignore[index]
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
    from fitpulse_orchestration.serving.feed_service import ServiceUnavailableError
    from fitpulse_orchestration.serving.runtime import profile_backends
    from fitpulse_orchestration.simulation.ab import (
        SimulationSettings,
        prepare_simulation,
        registry_sources,
        save_report,
        simulate_ab,
    )
    from fitpulse_orchestration.simulation.report import format_table

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
    _say(
        f"simulated {days} days from {result.start.date()} for {len(names)} arms x "
        f"{users_per_arm} users in {time.perf_counter() - started:.0f} s "
        f"(models {result.model_versions})"
    )
    typer.echo(format_table(result.table))
    for target in result.targets:
        typer.echo(f"{'PASS' if target.passed else 'FAIL'}  {target.name}: {target.detail}")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for name, key in save_report(backends.store, result, stamp).items():
        _say(f"{name}: {backends.store.uri(key)}")


registry_app = typer.Typer(
    help="Review, promote, roll back and inspect registered models.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")
ModelArg = Annotated[str, typer.Argument(help=f"Registered model, e.g. {HOME_RANKER_MODEL}.")]
ReviewerOpt = Annotated[str | None, typer.Option(help="Who decides (required).")]
NoteOpt = Annotated[str, typer.Option(help="Why: what the reviewer looked at.")]


def _exit_2_on(errors: tuple[type[Exception], ...], action: Any) -> Any:
    """Run ``action``; one of ``errors`` becomes ``error: ...`` on stderr and exit code 2."""
    try:
        return action()
    except errors as exc:
        # str() of a KeyError quotes its message.
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code=2) from exc


def _registry_action(action: Any) -> Any:
    from model_registry.promotion import PromotionError

    return _exit_2_on((PromotionError, LookupError, ValueError), action)


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
    _exit_2_on(
        (ReviewNotAuthorisedError,),
        lambda: roster.authorise(reviewer or "", code, model, version, decision),
    )
    promotion = _registry(project)
    act = promotion.approve if decision == "approve" else promotion.reject
    changed = _registry_action(lambda: act(model, version, reviewer, note))
    verb = "approved" if decision == "approve" else "rejected"
    _say(
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
    promotion = _registry(project)
    changed = _registry_action(lambda: promotion.promote(model, version, "fitpulse-cli"))
    _say(
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
    promotion = _registry(project)
    operator = by or getpass.getuser()
    current, restored = _registry_action(lambda: promotion.rollback(model, operator, note))
    _say(f"{model}: rolled back version {current}; champion is version {restored} again")


@registry_app.command()
def status(
    model: Annotated[str, typer.Argument(help="Registered model.")] = HOME_RANKER_MODEL,
    home: HomeOpt = None,
) -> None:
    """Versions with their aliases, gate verdicts, reviews and promotion state."""
    _print_status(ProjectHome.resolve(home), model)


@app.command()
def monitor(home: HomeOpt = None) -> None:
    """Run the monitoring job: drift reports, training-serving skew and UX monitors."""
    facts = run_monitoring(ProjectHome.resolve(home))
    if not facts["success"]:
        raise typer.Exit(code=2)


privacy_app = typer.Typer(
    help="Erase a user's data on request, or file the request for erasure_job.",
    no_args_is_help=True,
)
app.add_typer(privacy_app, name="privacy")
UserArg = Annotated[str, typer.Argument(help="The app's user id (as its events carry it).")]
RequesterOpt = Annotated[
    str, typer.Option("--requested-by", help="Who asked (ticket or operator), for the audit.")
]


def _privacy_backends(home: Path | None, profile: str | None) -> Any:
    from fitpulse_orchestration.serving.runtime import profile_backends
    from fitpulse_orchestration.settings import current_profile

    try:
        return profile_backends(ProjectHome.resolve(home), profile or current_profile())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@privacy_app.command()
def erase(
    user_id: UserArg,
    requested_by: RequesterOpt = "cli",
    home: HomeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Erase USER_ID now: raw events, quarantine, profile, online features, push counters.

    The user also joins the erasure list, so ingestion and the next training snapshot skip
    them. The audit record under audit/privacy/ keeps only the keyed hash (pseudonym).
    """
    from fitpulse_orchestration.privacy.erasure import erase_user
    from model_registry.erasure import RegistryEraser

    backends = _privacy_backends(home, profile)
    eraser = RegistryEraser(_backend_registry(backends), ProjectHome.resolve(home).model_cache)
    report = _exit_2_on(
        (ValueError,),
        lambda: erase_user(
            backends.store,
            backends.pseudonymizer,
            user_id,
            backends.online,
            backends.caps,
            requested_by,
            bundles=eraser.forget,
        ),
    )
    deleted = {zone: c.records_deleted for zone, c in report.zones.items()}
    _say(f"erased pseudonym {report.pseudonym}: {report.records_deleted} records {deleted}")
    _say(f"online rows {report.online_rows}, push records {report.push_records}")
    if report.bundles_rewritten:
        versions = ", ".join(report.bundles_rewritten)
        _say(f"registered feed bundles rewritten without the member: version {versions}")
    _say(f"audit: {backends.store.uri(report.audit_key)}")


@privacy_app.command("request-erasure")
def request_erasure_cmd(
    user_id: UserArg,
    requested_by: RequesterOpt = "cli",
    home: HomeOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """File an erasure request; erasure_job (sensor erasure_job_on_request) processes it."""
    from fitpulse_orchestration.privacy.erasure import request_erasure

    backends = _privacy_backends(home, profile)
    key = _exit_2_on((ValueError,), lambda: request_erasure(backends.store, user_id, requested_by))
    _say(f"filed {backends.store.uri(key)}")


rollout_app = typer.Typer(
    help="Canary rollouts of the challenger: start, inspect, kill (serve with --rollout).",
    no_args_is_help=True,
)
app.add_typer(rollout_app, name="rollout")
RolloutArg = Annotated[str, typer.Argument(help="The rollout's name (from its TOML).")]
ActorOpt = Annotated[str, typer.Option("--by", help="Who acts (for the audit).")]


def _rollouts(home: Path | None, profile: str | None) -> Any:
    from fitpulse_orchestration.serving.rollout import RolloutController

    backends = _privacy_backends(home, profile)
    return RolloutController(backends.store, backends.audit_key)


def _print_rollout(controller: Any, name: str) -> None:
    state = _exit_2_on((KeyError,), lambda: controller.state(name))
    steps = " -> ".join(f"{s:.0%}" for s in state.config.steps)
    _say(
        f"rollout {name}: challenger version {state.config.challenger_version}, {state.status}, "
        f"{state.share:.0%} on the challenger (steps {steps}; step since {state.step_started_at})"
    )
    if state.reason:
        _say(f"  reason: {state.reason}")
    for entry in controller.history(name):
        _say(
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
    parsed = _exit_2_on((ValueError,), lambda: load_rollout_config(config))
    registry = _backend_registry(_privacy_backends(home, profile))
    # The audited challenger (what serving's canary share will load), not the MLflow alias.
    alias = _exit_2_on((PromotionError,), lambda: registry.audited(HOME_RANKER_MODEL).challenger)
    if alias != parsed.challenger_version:
        typer.echo(
            f"error: the challenger of {HOME_RANKER_MODEL} is {alias or 'nothing'}, "
            f"the rollout names version {parsed.challenger_version} (a version becomes the "
            "challenger by passing the promotion gate)",
            err=True,
        )
        raise typer.Exit(code=2)
    _exit_2_on((ValueError,), lambda: controller.start(parsed, by))
    _print_rollout(controller, parsed.name)


@rollout_app.command("status")
def rollout_status(name: RolloutArg, home: HomeOpt = None, profile: ProfileOpt = None) -> None:
    """The rollout's state and its audited history."""
    _print_rollout(_rollouts(home, profile), name)


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
    _exit_2_on((KeyError, ValueError), lambda: controller.kill(name, by, reason))
    _print_rollout(controller, name)


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
    from fitpulse_orchestration.serving.feed_service import ServiceUnavailableError
    from fitpulse_orchestration.serving.rollout import RolloutController, load_rollout_config
    from fitpulse_orchestration.serving.runtime import profile_backends
    from fitpulse_orchestration.simulation.ab import prepare_simulation, registry_sources
    from fitpulse_orchestration.simulation.canary import (
        missing_feature_challenger,
        simulate_rollout,
    )

    if challenger not in ("registry", "missing-feature"):
        raise typer.BadParameter("use registry or missing-feature", param_hint="--challenger")
    project = ProjectHome.resolve(home)
    backends = profile_backends(project, "local")
    parsed = _exit_2_on((ValueError,), lambda: load_rollout_config(config))
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
        _say(
            f"day {day}: {review.action} at {review.share:.0%} (canary {review.canary.requests} "
            f"requests, control {review.control.requests})"
            + (f": {'; '.join(review.breaches)}" if review.breaches else "")
        )
    by_day = result.run.requests.groupby("day")["variant"].value_counts().unstack(fill_value=0)
    typer.echo(by_day.to_string())
    _print_rollout(controller, parsed.name)


def main() -> None:
    """Console entry point."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    app()


if __name__ == "__main__":
    main()


def _print_new_secret(
    issue: Callable[[Path, str], str], target: Path, name: str, done: str
) -> None:
    """Create NAME's secret with ``issue`` (its digest goes to ``target``); print it once."""
    try:
        secret = issue(target, name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="NAME") from exc
    _say(f"{done}; the secret (shown once):")
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
