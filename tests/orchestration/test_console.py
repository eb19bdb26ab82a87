"""``fitpulse ui``: the operator console starts on loopback and stops as one, leaving nothing.

The end-to-end test starts the real command in its own process on an empty project home and
stops it with SIGTERM, as a terminal or a service manager would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assets.reports import report_metadata, report_url
from fitpulse_orchestration.cli import app
from fitpulse_orchestration.console import (
    DAGSTER_URL_ENV,
    DEFINITIONS_MODULE,
    HOST,
    MLFLOW_URL_ENV,
    REPORTS_URL_ENV,
    Console,
    ConsoleError,
    console_env,
    console_processes,
    default_reports_url,
)
from fitpulse_orchestration.settings import ProjectHome
from fitpulse_orchestration.storage import LocalObjectStore

FITPULSE = str(Path(sys.executable).with_name("fitpulse"))
REPORT_KEY = "reports/feature_drift/20261102T000000Z.html"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((HOST, port)) == 0


def _processes_of(home: Path) -> list[int]:
    """Pids of live processes whose environment names ``home`` as FITPULSE_HOME."""
    marker = f"FITPULSE_HOME={home}\0".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if marker in environ.read_bytes():
                pids.append(int(environ.parent.name))
    return pids


def test_every_process_serves_the_home_on_loopback(tmp_path: Path) -> None:
    home = ProjectHome(tmp_path)

    procs = {p.name: p for p in console_processes(home, 3001, 5001, 3101)}
    env = console_env(
        home,
        "http://127.0.0.1:3101",
        "http://127.0.0.1:5001",
        {"PATH": "/usr/bin"},
        dagster_url="http://127.0.0.1:3001",
    )

    assert list(procs) == ["dagster-webserver", "dagster-daemon", "mlflow-ui", "reports"]
    web, daemon, mlflow_ui, reports = procs.values()
    assert web.argv[1:] == ["-h", HOST, "-p", "3001", "-m", DEFINITIONS_MODULE]
    assert daemon.argv[1:] == ["run", "-m", DEFINITIONS_MODULE]
    assert mlflow_ui.argv[1:] == [
        "ui", "--backend-store-uri", home.mlflow_tracking_uri, "--host", HOST, "--port", "5001",
    ]  # fmt: skip
    # Only the store's reports/ folder is served: the rest of the store holds member data.
    assert reports.argv[1:] == [
        "-m", "http.server", "3101", "--bind", HOST, "--directory", str(home.store / "reports"),
    ]  # fmt: skip
    assert (web.url, mlflow_ui.url) == (f"http://{HOST}:3001", f"http://{HOST}:5001")
    assert reports.url == f"http://{HOST}:3101"
    assert daemon.url is None
    assert env["DAGSTER_HOME"] == str(home.dagster)
    assert env["FITPULSE_HOME"] == str(home.root)
    assert env[REPORTS_URL_ENV] == "http://127.0.0.1:3101"
    assert env[MLFLOW_URL_ENV] == "http://127.0.0.1:5001"
    assert env[DAGSTER_URL_ENV] == "http://127.0.0.1:3001"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["PATH"] == "/usr/bin"


def test_a_report_links_to_the_console_that_serves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    key = "reports/feature_drift/20261102T000000Z.html"

    monkeypatch.delenv(REPORTS_URL_ENV, raising=False)
    by_default = report_metadata(store, key, "html_report")
    monkeypatch.setenv(REPORTS_URL_ENV, "http://127.0.0.1:3999/")
    under_the_console = report_url(key)

    assert by_default["html_report"].value == store.uri(key)
    assert by_default["html_report_link"].value == (
        f"{default_reports_url()}/feature_drift/20261102T000000Z.html"
    )
    assert under_the_console == "http://127.0.0.1:3999/feature_drift/20261102T000000Z.html"
    with pytest.raises(ValueError, match="not a report key"):
        report_url("landing/events/date=2026-11-01/batch.ndjson.gz")


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    ProjectHome(tmp_path).create()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = CliRunner().invoke(
            app, ["ui", "--home", str(tmp_path), "--dagster-port", str(port)]
        )

    assert result.exit_code == 2, result.output
    assert f"port {port} for dagster-webserver is taken" in result.output
    assert not (tmp_path / "reports" / "console").exists()


def test_nothing_starts_when_the_dagster_storage_cannot_be_prepared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = ProjectHome(tmp_path / "home").create()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    failing = bin_dir / "dagster"
    failing.write_text("#!/bin/sh\necho 'cannot migrate' >&2\nexit 3\n")
    failing.chmod(0o755)
    monkeypatch.setattr("fitpulse_orchestration.console._script", lambda name: str(bin_dir / name))
    ports = (_free_port(), _free_port(), _free_port())
    console = Console(home, console_processes(home, *ports), tmp_path / "logs")

    with pytest.raises(ConsoleError, match="dagster instance migrate exited 3"):
        console.start()

    assert console.running == {}
    assert "cannot migrate" in (tmp_path / "logs" / "dagster-instance.log").read_text()


def test_a_folder_that_is_no_project_home_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ui", "--home", str(tmp_path / "nothing")])

    assert result.exit_code == 2, result.output
    assert "is not a project home (no store/ folder)" in result.output


def test_the_two_ports_must_differ(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["ui", "--home", str(tmp_path), "--reports-port", "3005", "--mlflow-port", "3005"]
    )

    assert result.exit_code == 2
    assert "must differ" in result.output


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, int, int, int]]:
    home = ProjectHome(tmp_path / "home").create()
    LocalObjectStore(home.store).put_bytes(REPORT_KEY, b"<html>drift</html>")
    dagster_port, mlflow_port, reports_port = _free_port(), _free_port(), _free_port()
    ports = ["--dagster-port", str(dagster_port), "--mlflow-port", str(mlflow_port)]
    ports += ["--reports-port", str(reports_port)]
    proc = subprocess.Popen(
        [FITPULSE, "ui", "--home", str(home.root), *ports, "--startup-timeout", "240"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc, home.root, dagster_port, mlflow_port, reports_port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in _processes_of(home.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_ui_serves_the_uis_and_reports_and_sigterm_stops_every_process(
    console: tuple[subprocess.Popen[str], Path, int, int, int],
) -> None:
    proc, home, dagster_port, mlflow_port, reports_port = console
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "is up; Ctrl-C stops it" in line:
            break
    output = "".join(lines)
    assert "is up" in output, output

    for url in (f"http://{HOST}:{dagster_port}/server_info", f"http://{HOST}:{mlflow_port}/health"):
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
    report = f"http://{HOST}:{reports_port}/{REPORT_KEY.removeprefix('reports/')}"
    with urllib.request.urlopen(report, timeout=10) as response:
        assert response.read() == b"<html>drift</html>"
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(f"http://{HOST}:{reports_port}/../landing/", timeout=10)
    assert len(_processes_of(home)) >= 4  # the four, and the code servers they spawned

    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)

    assert proc.returncode == 0, output + rest
    assert "SIGTERM received: stopping the console" in rest
    assert "console stopped" in rest
    assert not _listening(dagster_port)
    assert not _listening(mlflow_port)
    assert not _listening(reports_port)
    assert _processes_of(home) == []
