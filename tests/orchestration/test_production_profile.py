"""The production profile end to end: PostgreSQL, Redis and S3 (moto's HTTP server).

The same code location runs with ``FITPULSE_PROFILE=production`` and nothing else changed:
Dagster's runs and event log in PostgreSQL (``deploy/dagster.yaml``), MLflow tracking and
registry in PostgreSQL with artifacts in S3, the object store in S3 and the online store and
push counters in Redis. Ingestion and training run through ``dagster job execute``, in their own
processes, the way a run launcher starts them (the earlier ingestion days are ingested by the
domain functions directly, to keep the suite's time). Each test database object lives in its
own PostgreSQL schema, dropped at the end. Skips, with the reason, where PostgreSQL or Redis is
not reachable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pytest
import redis
from mlflow.tracking import MlflowClient

from fitpulse_orchestration.events.ingest import ingest_day, write_ingested
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.settings import PRODUCTION_ENV, ProjectHome
from fitpulse_orchestration.storage import S3ObjectStore
from fitpulse_orchestration.storage.online_store import RedisOnlineStore
from fitpulse_orchestration.world.generator import generate_world
from fitpulse_orchestration.world.params import world_params
from model_registry.client import EXPERIMENT, HOME_RANKER_MODEL

if TYPE_CHECKING:
    from conftest import S3Endpoint

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::dagster.BetaWarning")]

REPO = Path(__file__).resolve().parents[2]
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the stack ships psycopg2.
PG_SQLALCHEMY = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
REDIS_DB_URL = "redis://127.0.0.1:6379/13"
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def _schema_url(schema: str) -> str:
    return f"{PG_SQLALCHEMY}?options=-csearch_path%3D{schema}"


@pytest.fixture(scope="module")
def pg_schemas() -> Iterator[dict[str, str]]:
    """Two fresh schemas in database ``test`` (Dagster, MLflow), dropped afterwards."""
    import psycopg2

    try:
        conn = psycopg2.connect(PG_SERVER, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at 127.0.0.1:5432 (database test): {exc}")
    conn.autocommit = True
    suffix = uuid.uuid4().hex[:10]
    schemas = {kind: f"fitpulse_{kind}_{suffix}" for kind in ("dagster", "mlflow")}
    with conn.cursor() as cur:
        for name in schemas.values():
            cur.execute(f"CREATE SCHEMA {name}")
    try:
        yield schemas
    finally:
        with conn.cursor() as cur:
            for name in schemas.values():
                cur.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        conn.close()


@dataclass
class ProductionRun:
    """What the module's production-profile run left behind."""

    env: dict[str, str]
    schemas: dict[str, str]
    store: S3ObjectStore
    endpoint: S3Endpoint
    prefix: str
    home: ProjectHome
    instance: dg.DagsterInstance
    days: list[str]
    cli_outputs: dict[str, str]


def _dagster(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DAGSTER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=480
    )


@pytest.fixture(scope="module")
def production(
    pg_schemas: dict[str, str],
    s3_endpoint: S3Endpoint,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProductionRun]:
    try:
        redis.Redis.from_url(REDIS_DB_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis server on 127.0.0.1:6379 (the production online store): {exc}")
    root = tmp_path_factory.mktemp("production")
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    prefix = f"production/{uuid.uuid4().hex[:8]}"
    settings = {
        "FITPULSE_PROFILE": "production",
        "FITPULSE_HOME": str(root / "home"),
        "FITPULSE_PARTITION_START": "2026-10-19",
        "DAGSTER_HOME": str(dagster_home),
        "FITPULSE_DAGSTER_PG_URL": _schema_url(pg_schemas["dagster"]),
        "FITPULSE_S3_BUCKET": s3_endpoint.bucket,
        "FITPULSE_S3_PREFIX": f"{prefix}/store",
        "FITPULSE_S3_ENDPOINT_URL": s3_endpoint.endpoint_url,
        "FITPULSE_REDIS_URL": REDIS_DB_URL,
        # Fixed, as the tiny worlds' key: pseudonyms order the users that training's seeded
        # draws run over, so a random key made the run's verdicts differ from run to run.
        "FITPULSE_PSEUDONYM_SECRET": "production-test-secret-" + "5eed" * 8,
        "FITPULSE_AUDIT_KEY": "production-test-audit-key-" + uuid.uuid4().hex,
        "FITPULSE_REVIEWERS_FILE": str(root / "reviewers"),
        "MLFLOW_TRACKING_URI": _schema_url(pg_schemas["mlflow"]),
        "FITPULSE_MLFLOW_ARTIFACTS": f"s3://{s3_endpoint.bucket}/{prefix}/mlflow",
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": s3_endpoint.region_name,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "OPENBLAS_NUM_THREADS": "1",
    }
    assert set(PRODUCTION_ENV) <= set(settings)
    env = {**os.environ, **settings}
    workdir = root / "cwd"
    workdir.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in settings.items():
            mp.setenv(name, value)
        mp.chdir(workdir)
        store = S3ObjectStore(
            s3_endpoint.bucket, f"{prefix}/store", endpoint_url=s3_endpoint.endpoint_url
        )
        summary = generate_world(world_params("tiny"), store)
        days = [d.isoformat() for d in summary.landed_days]
        instance = dg.DagsterInstance.get()
        # The earlier days through the domain functions (the suite's time budget); the last day
        # and training through Dagster on this instance.
        pseudo = Pseudonymizer.from_secret(settings["FITPULSE_PSEUDONYM_SECRET"])
        for day in summary.landed_days[:-1]:
            write_ingested(store, day, ingest_day(store, day, pseudo))
        outputs = {}
        last = _dagster(
            [
                "job", "execute", "-m", "fitpulse_orchestration.definitions",
                "-j", "ingestion_job", "--tags", json.dumps({"dagster/partition": days[-1]}),
            ],
            env,
            workdir,
        )  # fmt: skip
        outputs["ingestion"] = last.stdout + last.stderr
        assert last.returncode == 0, outputs["ingestion"][-4000:]
        training = _dagster(
            ["job", "execute", "-m", "fitpulse_orchestration.definitions", "-j", "training_job"],
            env,
            workdir,
        )
        outputs["training"] = training.stdout + training.stderr
        assert training.returncode == 0, outputs["training"][-4000:]
        yield ProductionRun(
            env=env,
            schemas=pg_schemas,
            store=store,
            endpoint=s3_endpoint,
            prefix=prefix,
            home=ProjectHome.resolve(),
            instance=instance,
            days=days,
            cli_outputs=outputs,
        )
        instance.dispose()
    redis.Redis.from_url(REDIS_DB_URL).flushdb()


def test_runs_and_event_log_live_in_postgres(production: ProductionRun) -> None:
    import psycopg2

    runs = production.instance.get_runs()
    by_job: dict[str, list[dg.DagsterRun]] = {}
    for run in runs:
        by_job.setdefault(run.job_name, []).append(run)

    assert len(by_job["ingestion_job"]) == 1
    assert len(by_job["training_job"]) == 1
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert by_job["training_job"][0].tags["fitpulse/stage"] == "training"
    with psycopg2.connect(PG_SERVER) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {production.schemas['dagster']}.runs")
        (count,) = cur.fetchone()
    assert count == len(runs)


def test_cli_ingestion_ran_in_its_own_process_through_postgres(
    production: ProductionRun,
) -> None:
    (run,) = [
        r
        for r in production.instance.get_runs(dg.RunsFilter(job_name="ingestion_job"))
        if r.tags.get("dagster/partition") == production.days[-1]
    ]
    logs = production.instance.all_logs(run.run_id)
    # The executor's closing engine event names the process that ran the steps: the
    # `dagster job execute` process, whose events reached this one through PostgreSQL.
    (finished,) = [
        e.dagster_event
        for e in logs
        if e.dagster_event
        and e.dagster_event.event_type_value == "ENGINE_EVENT"
        and "Finished steps in process" in (e.dagster_event.message or "")
    ]
    pid = finished.engine_event_data.metadata["pid"].value
    assert pid != os.getpid()
    assert [
        e.dagster_event.step_key
        for e in logs
        if e.dagster_event and e.dagster_event.is_step_success
    ] == ["raw_events"]
    assert run.status == dg.DagsterRunStatus.SUCCESS


def test_mlflow_registry_in_postgres_with_artifacts_in_s3(production: ProductionRun) -> None:
    client = MlflowClient(production.env["MLFLOW_TRACKING_URI"])

    versions = client.search_model_versions(f"name='{HOME_RANKER_MODEL}'")
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    # One run per training; the tuning's trials are nested runs under it.
    (run,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]

    assert [str(v.version) for v in versions] == ["1"]
    assert run.info.artifact_uri.startswith(production.env["FITPULSE_MLFLOW_ARTIFACTS"])
    listed = production.endpoint.client.list_objects_v2(
        Bucket=production.endpoint.bucket, Prefix=f"{production.prefix}/mlflow/"
    )
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert any(k.endswith("home_feed.pkl") or "bundle" in k for k in keys), keys[:20]


def test_data_online_store_and_nothing_local(production: ProductionRun) -> None:
    store = production.store
    warehouse = store.list_keys("warehouse/events/")
    online = RedisOnlineStore(REDIS_DB_URL)

    assert len(warehouse) == len(production.days)
    assert store.exists("assets/home_feed_model.pkl")
    assert online.meta("user") is not None
    assert online.meta("user").rows > 0
    # Nothing of the embedded profile was created: no SQLite, no local store.
    assert not (production.home.root / "mlflow" / "mlflow.db").exists()
    assert not (production.home.store / "warehouse").exists()
    assert not production.home.online_store.exists()
