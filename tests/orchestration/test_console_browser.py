"""A browser drives the operator console as an operator would (issue 24 §7).

``fitpulse ui`` runs on a tiny trained home (version 1 champion, a monitoring run, version 2
registered and gate-passed, reviewer ``ada`` on the roster). Debian's chromium, driven by
Playwright, loads the asset graph, finds the CLI's training run on its job's page and
re-executes one of its ingestion runs from the run's page, opens the drift report from the
asset's metadata link and sees the drift-over-time plot beside it, fills the review Launchpad
for version 2 and launches it, then watches ``registry_status`` until the promotion sensor has
made version 2 the champion.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from conftest import TINY_START, TrainedWorld
from dagster._core.storage.dagster_run import RunsFilter
from gate_samples import PASSED
from playwright.sync_api import Browser, Page, expect, sync_playwright
from serving_setup import register_copy, registry_workflow

from fitpulse_orchestration.console import HOST, REPORTS_URL_ENV
from fitpulse_orchestration.runner import dagster_instance, root_error, run_monitoring
from fitpulse_orchestration.settings import DEFINITIONS_MODULE
from model_registry.names import HOME_RANKER_MODEL
from model_registry.reviewers import add_reviewer, approval_code

CHROMIUM = Path("/usr/bin/chromium")
FITPULSE = str(Path(sys.executable).with_name("fitpulse"))
JOBS = f"/locations/{DEFINITIONS_MODULE}/jobs"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="no /usr/bin/chromium: install Debian's chromium (`apt-get install -y chromium`, "
        "as .ci/run does) to run the browser test",
    ),
    pytest.mark.filterwarnings("ignore::dagster.BetaWarning"),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Console:
    """The running console's addresses and what the home holds for the review."""

    dagster: str
    reports: str
    instance: dg.DagsterInstance
    training_run_id: str
    version: str
    approval_code: str


@pytest.fixture(scope="module")
def console(trained_world: TrainedWorld) -> Iterator[Console]:
    home = trained_world.home
    dagster_port, mlflow_port, reports_port = _free_port(), _free_port(), _free_port()
    reports = f"http://{HOST}:{reports_port}"
    # The drift reports' links name the report server of the console that will serve them.
    with pytest.MonkeyPatch.context() as env:
        env.setenv(REPORTS_URL_ENV, reports)
        monitoring = run_monitoring(home)
    assert monitoring.success, monitoring.failures
    version = register_copy(home, "1")
    # A passing verdict (the tiny world's own gate fails: too few held-out users for a lift).
    registry_workflow(home).record_gate(HOME_RANKER_MODEL, version, PASSED, "test-gate")
    key = add_reviewer(home.reviewers_file, "ada")
    code = approval_code(key, "ada", HOME_RANKER_MODEL, version, "approve")

    ports = ["--dagster-port", str(dagster_port), "--mlflow-port", str(mlflow_port)]
    proc = subprocess.Popen(
        [FITPULSE, "ui", "--home", str(home.root), *ports, "--reports-port", str(reports_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "is up; Ctrl-C stops it" in line:
                break
        assert "is up" in "".join(lines), "".join(lines)
        yield Console(
            dagster=f"http://{HOST}:{dagster_port}",
            reports=reports,
            instance=dagster_instance(home),
            training_run_id=trained_world.run.run_id,
            version=version,
            approval_code=code,
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(60_000)
    yield context.new_page()
    context.close()


def _open(page: Page, url: str) -> None:
    """Go to ``url`` (the home's ``dagster.yaml`` turns Dagster's first-visit dialog off)."""
    page.goto(url)


def test_the_asset_graph_shows_every_group(console: Console, page: Page) -> None:
    _open(page, f"{console.dagster}/asset-groups")

    for group in ("ingestion", "retrieval", "ranking", "evaluation", "registry", "monitoring"):
        expect(page.get_by_text(group, exact=True).first).to_be_visible()


def test_the_clis_training_run_is_on_its_jobs_page(console: Console, page: Page) -> None:
    _open(page, f"{console.dagster}{JOBS}/training_job/runs")

    expect(page.get_by_text(console.training_run_id[:8]).first).to_be_visible()


def test_a_cli_run_re_executes_from_its_run_page(console: Console, page: Page) -> None:
    (first_day,) = console.instance.get_runs(
        RunsFilter(job_name="ingestion_job", tags={"dagster/partition": TINY_START.isoformat()})
    )
    _open(page, f"{console.dagster}/runs/{first_day.run_id}")
    page.get_by_role("button", name="Re-execute all").click()

    page.wait_for_url(lambda url: "/runs/" in url and first_day.run_id not in url)
    run_id = page.url.rstrip("/").split("/")[-1]
    _wait_for_success(console.instance, run_id)
    again = console.instance.get_run_by_id(run_id)
    assert again is not None
    assert again.parent_run_id == first_day.run_id
    assert again.tags["dagster/partition"] == TINY_START.isoformat()


def test_the_drift_reports_link_opens_the_report(console: Console, page: Page) -> None:
    _open(page, f"{console.dagster}/assets/feature_drift_report")
    link = page.locator(f'a[href^="{console.reports}/feature_drift/"]').first
    expect(link).to_be_visible()

    with page.context.expect_page() as opened:
        link.click()
    report = opened.value
    report.wait_for_load_state()

    assert report.url.startswith(f"{console.reports}/feature_drift/")
    assert report.url.endswith(".html")
    # Evidently's page renders the drift table: a drifted feature's row is on screen.
    expect(report.get_by_text("u_engaged_7d").first).to_be_visible()


def test_the_drift_over_time_plot_shows_on_the_asset_page(console: Console, page: Page) -> None:
    _open(page, f"{console.dagster}/assets/feature_drift_report")
    image = page.locator(f'img[src^="{console.reports}/feature_drift/"]').first
    expect(image).to_be_visible()

    # Loaded from the report server, not a broken-image placeholder.
    assert image.evaluate("img => img.complete && img.naturalWidth") > 0


def test_a_review_from_the_launchpad_makes_the_version_champion(
    console: Console, page: Page
) -> None:
    _open(page, f"{console.dagster}{JOBS}/review_model_job/playground")
    config = (
        "ops:\n"
        "  review_model_version:\n"
        "    config:\n"
        f"      version: {console.version}\n"
        "      reviewer: ada\n"
        f"      approval_code: {console.approval_code}\n"
        "      note: approved from the browser\n"
    )
    editor = page.locator(".CodeMirror").first
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(config)
    page.get_by_role("button", name="Launch Run").click()

    # The launched run's page; the review then succeeds through the daemon's run queue.
    page.wait_for_url("**/runs/**")
    run_id = page.url.rstrip("/").split("/")[-1]
    _wait_for_success(console.instance, run_id)
    review = console.instance.get_run_by_id(run_id)
    assert review is not None
    assert review.job_name == "review_model_job"

    # The promotion sensor (every 30 s) promotes the approved version; registry_status says so.
    champion = page.get_by_role("row").filter(
        has=page.get_by_role("cell", name=f"{HOME_RANKER_MODEL} champion", exact=True)
    )
    deadline = time.monotonic() + 240
    while True:
        _open(page, f"{console.dagster}/assets/registry_status")
        with contextlib.suppress(AssertionError):
            expect(champion.get_by_role("cell").last).to_have_text(console.version, timeout=5_000)
            break
        assert time.monotonic() < deadline, "registry_status never showed the new champion"
        time.sleep(5)


def _wait_for_success(instance: dg.DagsterInstance, run_id: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            errors = [
                root_error(r.dagster_event)
                for r in instance.all_logs(run_id)
                if r.dagster_event is not None and r.dagster_event.is_step_failure
            ]
            assert run.is_success, f"run {run_id} ended {run.status.value}: {errors}"
            return
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")
