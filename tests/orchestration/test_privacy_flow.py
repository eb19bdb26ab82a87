"""Privacy end to end on a demo run: nothing outside the raw zone holds raw ids or health fields.

One module-scoped ``fitpulse demo --scale tiny`` runs in its own process (its stdout and stderr
are the log lines; it is the suite's one run of the demo command, so its output is checked
here too). Then an erasure request goes through the CLI, the sensor and ``erasure_job``, and
``retention_job`` sweeps the expired days with its check. The scan reads every file of the
project home outside the raw zone — MLflow's database (params, metrics, tags) and artifacts,
Dagster's run and event storage and compute logs, the asset values and feature tables, the
online store, reports — decompressing Parquet, gzip, zip and SQLite first, and fails on any
raw user id (``usr_NNNNNNN``) or health field name.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from conftest import fix_pseudonym_key

from fitpulse_orchestration.definitions import build_definitions
from fitpulse_orchestration.privacy.erasure import DERIVED_VALUE_DAYS
from fitpulse_orchestration.privacy.health import HEALTH_FIELDS
from fitpulse_orchestration.privacy.pseudonymize import Pseudonymizer
from fitpulse_orchestration.privacy.retention import RetentionPolicy, load_user_regions
from fitpulse_orchestration.privacy.suppression import erased_pseudonyms
from fitpulse_orchestration.privacy.traces import file_texts, find_traces
from fitpulse_orchestration.ranking.bundle import read_feed_model
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore, read_parquet
from fitpulse_orchestration.storage.asset_values import load_asset_value
from fitpulse_orchestration.storage.audit import AuditLog, load_audit_key
from fitpulse_orchestration.storage.keys import load_or_create_key
from fitpulse_orchestration.storage.online_store import SQLiteOnlineStore
from model_registry.serving import RegistryModelSource

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::dagster.BetaWarning")]

FITPULSE = str(Path(sys.executable).with_name("fitpulse"))
RAW_ID = re.compile(r"usr_\d{7}")
_FIELDS = "|".join(sorted(HEALTH_FIELDS, key=len, reverse=True))
HEALTH = re.compile(r"\b(" + _FIELDS + r")\b")
# In the raw bytes of a binary file (compressed Parquet pages, SQLite pages) a three-letter
# field name such as "hrv" turns up between any two non-letters by chance, more often the
# larger the file: there only a quoted name (a JSON key, a schema entry) counts.
HEALTH_QUOTED = re.compile(r"[\"'](" + _FIELDS + r")[\"']")
RAW_ZONE = ("store/landing", "store/warehouse/quarantine", "store/world", "store/privacy")
"""The raw zone (landing, quarantine, pending requests) and the simulator's ground truth."""


def _scan(files: list[Path], root: Path) -> dict[str, list[str]]:
    """``{relative path: findings}`` of files holding a raw id or a health field."""
    found: dict[str, list[str]] = {}
    for path in files:
        hits: set[str] = set()
        with path.open("rb") as fh:
            head = fh.read(16)
        binary = head[:4] == b"PAR1" or head == b"SQLite format 3\x00"
        for position, text in enumerate(file_texts(path)):
            hits.update(RAW_ID.findall(text)[:3])
            # A binary file's first text is its decoded content; the rest are its raw bytes.
            health = HEALTH_QUOTED if binary and position > 0 else HEALTH
            hits.update(health.findall(text)[:3])
        if hits:
            found[str(path.relative_to(root))] = sorted(hits)
    return found


@dataclass
class PrivacyRun:
    """The demo home after the demo, one erasure and one retention sweep."""

    home: ProjectHome
    store: LocalObjectStore
    pseudonymizer: Pseudonymizer
    logs: str
    demo_stdout: str
    erased_user: str
    erasure: dg.ExecuteInProcessResult
    retention: dg.ExecuteInProcessResult
    sweep_as_of: dt.datetime
    restricted_before: int
    traces_before: dict[str, list[str]]
    """Files holding the erased user's raw id or pseudonym before the erasure."""
    traces_after: dict[str, list[str]]
    """The same, after ``erasure_job``."""
    expiry: dg.ExecuteInProcessResult
    """``retention_job`` again, past the erasure's deadline for derived values."""
    traces_expired: dict[str, list[str]]
    """The same, after ``expiry``."""


def _restricted_clean_rows(run_home: ProjectHome, pseudo: Pseudonymizer, last: dt.date) -> int:
    store = LocalObjectStore(run_home.store)
    regions = load_user_regions(store, pseudo).by_pseudonym
    policy = RetentionPolicy()
    count = 0
    for key in store.list_keys("warehouse/events/"):
        if dt.date.fromisoformat(key.split("date=")[1][:10]) > last:
            continue
        users = read_parquet(store, key)["user_id"]
        count += int(
            users.map(lambda u: regions.get(u) in policy.regions or u not in regions).sum()
        )
    return count


@pytest.fixture(scope="module")
def privacy_run(tmp_path_factory: pytest.TempPathFactory) -> PrivacyRun:
    root = tmp_path_factory.mktemp("privacy_home")
    fix_pseudonym_key(ProjectHome(root))
    demo = subprocess.run(
        [FITPULSE, "demo", "--scale", "tiny", "--home", str(root)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=root,
    )
    logs = demo.stdout + demo.stderr
    assert demo.returncode == 0, logs[-4000:]
    home = ProjectHome(root)
    store = LocalObjectStore(home.store)
    pseudo = Pseudonymizer.from_secret(load_or_create_key(home.pseudonym_key_file))
    # A member the registered feed bundle knows (ALS factors): the first such raw id landed.
    served = load_asset_value(store, "served_home_feed_model")
    known = set(served.als.user_ids)  # type: ignore[attr-defined]
    landed = "".join(
        gzip.decompress(store.get_bytes(k)).decode() for k in store.list_keys("landing/events/")
    )
    erased_user = next(u for u in RAW_ID.findall(landed) if pseudo.pseudonymize(u) in known)
    needles = [erased_user, pseudo.pseudonymize(erased_user)]
    traces_before = find_traces(home.root, needles)
    request = subprocess.run(
        [FITPULSE, "privacy", "request-erasure", erased_user, "--home", str(root),
         "--requested-by", "ticket-42"],
        capture_output=True, text=True, timeout=120, cwd=root,
    )  # fmt: skip
    assert request.returncode == 0, request.stdout + request.stderr
    logs += request.stdout + request.stderr
    defs = build_definitions(home)
    instance = dg.DagsterInstance.ephemeral()
    sensor = defs.resolve_sensor_def("erasure_job_on_request")
    context = dg.build_sensor_context(
        instance=instance,
        definitions=defs,
        resources={"object_store": defs.resources["object_store"]},
    )
    tick = sensor(context)
    assert len(tick.run_requests) == 1
    erasure = defs.resolve_job_def("erasure_job").execute_in_process(instance=instance)
    traces_after = find_traces(home.root, needles)
    # The tiny world lands 2026-10-19..2026-11-01: as of 2026-11-24 the days up to 10-26 expire.
    as_of = dt.datetime(2026, 11, 24, 0, 15, tzinfo=dt.UTC)
    last = RetentionPolicy().last_expired_day(as_of)
    before = _restricted_clean_rows(home, pseudo, last)
    retention = defs.resolve_job_def("retention_job").execute_in_process(
        instance=instance,
        run_config={"ops": {"raw_event_retention": {"config": {"as_of": as_of.isoformat()}}}},
    )
    # One day past the erasure's deadline for derived values (the erasure ran on the wall clock).
    due = dt.datetime.now(dt.UTC) + dt.timedelta(days=DERIVED_VALUE_DAYS, hours=1)
    expiry = defs.resolve_job_def("retention_job").execute_in_process(
        instance=instance,
        run_config={
            "ops": {
                "raw_event_retention": {"config": {"as_of": as_of.isoformat()}},
                "erased_member_expiry": {"config": {"as_of": due.isoformat()}},
            }
        },
    )
    traces_expired = find_traces(home.root, needles)
    return PrivacyRun(
        home=home,
        store=store,
        pseudonymizer=pseudo,
        logs=logs,
        demo_stdout=demo.stdout,
        erased_user=erased_user,
        erasure=erasure,
        retention=retention,
        sweep_as_of=as_of,
        restricted_before=before,
        traces_before=traces_before,
        traces_after=traces_after,
        expiry=expiry,
        traces_expired=traces_expired,
    )


def test_demo_ends_with_registry_status_and_drift_report(privacy_run: PrivacyRun) -> None:
    # The CLI's demo (run once, here, in its own process) prints the registry and the report.
    stdout = privacy_run.demo_stdout
    tail = stdout[stdout.index("Model registry:") :]
    report_lines = [line for line in tail.splitlines() if line.startswith("feature drift report:")]

    assert "fitpulse-home-ranker" in tail
    assert "candidate" in tail
    assert len(report_lines) == 1
    report = Path(report_lines[0].split(": ", 1)[1])
    assert report.is_file()
    assert report.suffix == ".html"
    assert report.is_relative_to(privacy_run.home.root)


def test_scanner_finds_raw_ids_and_health_fields_in_the_raw_zone(privacy_run: PrivacyRun) -> None:
    # Positive control: the same scan sees what the landing zone legitimately holds.
    landing = sorted((privacy_run.home.store / "landing" / "events").rglob("*.gz"))

    found = _scan(landing, privacy_run.home.root)

    assert found, "the scanner must find raw ids in landed batches"
    assert any(h in HEALTH_FIELDS for hits in found.values() for h in hits)


def test_no_raw_id_or_health_field_outside_the_raw_zone(privacy_run: PrivacyRun) -> None:
    root = privacy_run.home.root
    files = [
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(p.is_relative_to(root / zone) for zone in RAW_ZONE)
        and not p.is_relative_to(root / "secrets")
    ]
    mlflow_artifacts = [p for p in files if p.is_relative_to(privacy_run.home.mlflow_artifacts)]
    dagster_files = [p for p in files if p.is_relative_to(privacy_run.home.dagster)]

    found = _scan(files, root)

    assert len(mlflow_artifacts) > 10, "the demo logged artifacts to scan"
    assert any(p.name.endswith(".db") for p in dagster_files), "Dagster's storage was scanned"
    assert found == {}


def test_demo_logs_hold_no_raw_id_or_health_field(privacy_run: PrivacyRun) -> None:
    assert "demo finished" in privacy_run.logs
    assert RAW_ID.findall(privacy_run.logs) == []
    assert HEALTH.findall(privacy_run.logs) == []


def test_erasure_job_removed_the_user_everywhere(privacy_run: PrivacyRun) -> None:
    store = privacy_run.store
    pseudonym = privacy_run.pseudonymizer.pseudonymize(privacy_run.erased_user)
    (output,) = [e for e in privacy_run.erasure.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = {k: v.value for k, v in output.event_specific_data.metadata.items()}
    landed = "".join(
        gzip.decompress(store.get_bytes(k)).decode() for k in store.list_keys("landing/events/")
    )
    clean = pd.concat(
        [read_parquet(store, k) for k in store.list_keys("warehouse/events/")], ignore_index=True
    )
    audits = [json.loads(store.get_bytes(k)) for k in store.list_keys("audit/privacy/")]

    assert privacy_run.erasure.success
    assert metadata["erased"] == 1
    assert metadata["rejected"] == 0
    assert json.dumps(privacy_run.erased_user) not in landed
    assert pseudonym not in set(clean["user_id"])
    assert pseudonym in erased_pseudonyms(store)
    assert store.list_keys("privacy/requests/") == []
    (audit,) = audits
    assert audit["pseudonym"] == pseudonym
    assert audit["requested_by"] == "ticket-42"
    assert sum(audit["records_deleted"].values()) > 0
    assert audit["online_rows"] >= 1
    online = SQLiteOnlineStore(privacy_run.home.online_store)
    assert online.lookup("user", [pseudonym]).empty


KEEPERS = ("store/privacy/erased/", "store/audit/privacy/")
"""What keeps an erased member out holds their pseudonym by design: the erasure list and the
privacy audit (no raw id in either)."""
GROUND_TRUTH = "store/world/"
"""The simulator's latent state of each synthetic member (a generated world only; no platform
code reads it to serve, and production homes have none)."""


def _kinds(traces: dict[str, list[str]]) -> set[str]:
    """Where traces are: a folder per kind of holder."""
    roots = (*KEEPERS, GROUND_TRUTH, "store/assets/", "store/landing/", "store/warehouse/")
    return {next((r for r in roots if path.startswith(r)), path) for path in traces}


def test_erasure_scan_finds_the_member_everywhere_before(privacy_run: PrivacyRun) -> None:
    # Positive control: the scan sees the raw id and the pseudonym where they legitimately are.
    before = privacy_run.traces_before
    raw, pseudonym = (
        privacy_run.erased_user,
        privacy_run.pseudonymizer.pseudonymize(privacy_run.erased_user),
    )
    bundles = [p for p in before if p.startswith("mlflow/") and "feed_bundle" in p]

    assert any(raw in hits for p, hits in before.items() if p.startswith("store/landing/"))
    assert any(pseudonym in hits for p, hits in before.items() if p.startswith("store/warehouse/"))
    assert any(p.startswith("online/") for p in before)
    assert any(p.startswith("store/assets/") for p in before)
    assert bundles


def test_erasure_leaves_nothing_but_the_erasure_list_and_its_audit(
    privacy_run: PrivacyRun,
) -> None:
    after, expired = privacy_run.traces_after, privacy_run.traces_expired
    (check,) = [
        c
        for c in privacy_run.expiry.get_asset_check_evaluations()
        if c.asset_key.path == ["erased_member_expiry"]
    ]
    (expiry,) = privacy_run.expiry.asset_materializations_for_node("erased_member_expiry")
    meta = {k: v.value for k, v in expiry.metadata.items()}
    audit = privacy_run.store.list_keys("audit/registry/fitpulse-home-ranker/")

    # Right after the erasure only derived values, rebuilt by training, may still hold it...
    assert _kinds(after) == {*KEEPERS, GROUND_TRUTH, "store/assets/"}
    assert any(key.endswith("-artifacts_rewritten.json") for key in audit)
    # ...and past their deadline nothing but what keeps the member out does.
    assert _kinds(expired) == {*KEEPERS, GROUND_TRUTH}
    assert sorted(meta["values_expired"]) == sorted(
        p.removeprefix("store/") for p in after if p.startswith("store/assets/")
    )
    assert check.passed
    assert check.check_name == "no_overdue_erased_member"


def test_a_rewritten_bundle_still_serves_under_its_new_digest(privacy_run: PrivacyRun) -> None:
    home = privacy_run.home
    source = RegistryModelSource(
        home.mlflow_tracking_uri,
        home.root / "fresh_cache",
        AuditLog(privacy_run.store, load_audit_key(home.audit_key_file)),
    )

    model = read_feed_model(source.fetch("1"))

    pseudonym = privacy_run.pseudonymizer.pseudonymize(privacy_run.erased_user)
    assert model.als.user_row(pseudonym) is None
    assert len(model.als.user_ids) > 0


def test_retention_job_sweeps_and_its_check_proves_it(privacy_run: PrivacyRun) -> None:
    result = privacy_run.retention
    (check,) = [
        c
        for c in result.get_asset_check_evaluations()
        if c.asset_key.path == ["raw_event_retention"]
    ]
    (materialization,) = result.asset_materializations_for_node("raw_event_retention")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    last = RetentionPolicy().last_expired_day(privacy_run.sweep_as_of)

    assert result.success
    assert check.check_name == "no_expired_raw_events"
    assert check.passed
    assert privacy_run.restricted_before > 0
    assert meta["zones"]["clean"]["records_deleted"] == privacy_run.restricted_before
    assert _restricted_clean_rows(privacy_run.home, privacy_run.pseudonymizer, last) == 0
    # Other regions' expired records and every non-expired record stay.
    assert meta["zones"]["clean"]["records_kept"] > 0


def test_cli_erase_is_immediate_and_rejects_a_blank_id(privacy_run: PrivacyRun) -> None:
    # Runs last in this module: it erases a second user from the shared home.
    store = privacy_run.store
    landed = sorted(
        set(
            RAW_ID.findall(
                "".join(
                    gzip.decompress(store.get_bytes(k)).decode()
                    for k in store.list_keys("landing/events/")
                )
            )
        )
        - {privacy_run.erased_user}
    )
    user = landed[0]
    home = str(privacy_run.home.root)

    erased = subprocess.run(
        [FITPULSE, "privacy", "erase", user, "--home", home, "--requested-by", "ticket-43"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    blank = subprocess.run(
        [FITPULSE, "privacy", "erase", " ", "--home", home],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert erased.returncode == 0, erased.stdout + erased.stderr
    assert privacy_run.pseudonymizer.pseudonymize(user) in erased.stdout
    assert user not in erased.stdout
    remaining = "".join(
        gzip.decompress(store.get_bytes(k)).decode() for k in store.list_keys("landing/events/")
    )
    assert json.dumps(user) not in remaining
    audits = [json.loads(store.get_bytes(k)) for k in store.list_keys("audit/privacy/")]
    assert [a["requested_by"] for a in audits] == ["ticket-42", "ticket-43"]
    assert blank.returncode == 2
    assert "error: erasure needs a non-empty user id" in blank.stderr


def test_erasure_sensor_skips_without_requests_and_keys_by_requests(tmp_path: Path) -> None:
    from fitpulse_orchestration.privacy.erasure import request_erasure

    home = ProjectHome(tmp_path).create()
    defs = build_definitions(home)
    sensor = defs.resolve_sensor_def("erasure_job_on_request")

    def tick() -> dg.SensorResult | dg.SkipReason:
        context = dg.build_sensor_context(
            instance=dg.DagsterInstance.ephemeral(),
            definitions=defs,
            resources={"object_store": defs.resources["object_store"]},
        )
        return sensor(context)

    idle = tick()
    request_erasure(LocalObjectStore(home.store), "usr_0000001", "ticket-1")
    first, again = tick(), tick()
    request_erasure(LocalObjectStore(home.store), "usr_0000002", "ticket-2")
    more = tick()

    assert isinstance(idle, dg.SkipReason)
    assert [r.run_key for r in first.run_requests] == [r.run_key for r in again.run_requests]
    assert first.run_requests[0].run_key != more.run_requests[0].run_key
    assert "usr_" not in first.run_requests[0].run_key
