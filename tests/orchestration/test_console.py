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
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fitpulse_orchestration.cli import app
from fitpulse_orchestration.console import (
    DEFINITIONS_MODULE,
    HOST,
    console_env,
    console_processes,
)
from fitpulse_orchestration.settings import ProjectHome

FITPULSE = str(Path(sys.executable).with_name("fitpulse"))


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

    procs = {p.name: p for p in console_processes(home, 3001, 5001)}
    env = console_env(home, {"PATH": "/usr/bin"})

    assert list(procs) == ["dagster-webserver", "dagster-daemon", "mlflow-ui"]
    web, daemon, mlflow_ui = procs.values()
    assert web.argv[1:] == ["-h", HOST, "-p", "3001", "-m", DEFINITIONS_MODULE]
    assert daemon.argv[1:] == ["run", "-m", DEFINITIONS_MODULE]
    assert mlflow_ui.argv[1:] == [
        "ui", "--backend-store-uri", home.mlflow_tracking_uri, "--host", HOST, "--port", "5001",
    ]  # fmt: skip
    assert (web.url, mlflow_ui.url, daemon.url) == (
        f"http://{HOST}:3001",
        f"http://{HOST}:5001",
        None,
    )
    assert env["DAGSTER_HOME"] == str(home.dagster)
    assert env["FITPULSE_HOME"] == str(home.root)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["PATH"] == "/usr/bin"


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


def test_a_folder_that_is_no_project_home_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ui", "--home", str(tmp_path / "nothing")])

    assert result.exit_code == 2, result.output
    assert "is not a project home (no store/ folder)" in result.output


def test_the_two_ports_must_differ(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["ui", "--home", str(tmp_path), "--dagster-port", "3005", "--mlflow-port", "3005"]
    )

    assert result.exit_code == 2
    assert "must differ" in result.output


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, int, int]]:
    home = ProjectHome(tmp_path / "home").create()
    dagster_port, mlflow_port = _free_port(), _free_port()
    ports = ["--dagster-port", str(dagster_port), "--mlflow-port", str(mlflow_port)]
    proc = subprocess.Popen(
        [FITPULSE, "ui", "--home", str(home.root), *ports, "--startup-timeout", "240"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc, home.root, dagster_port, mlflow_port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in _processes_of(home.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_ui_serves_both_uis_and_sigterm_stops_every_process(
    console: tuple[subprocess.Popen[str], Path, int, int],
) -> None:
    proc, home, dagster_port, mlflow_port = console
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
    assert len(_processes_of(home)) >= 3  # the three, and the code servers they spawned

    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)

    assert proc.returncode == 0, output + rest
    assert "SIGTERM received: stopping the console" in rest
    assert "console stopped" in rest
    assert not _listening(dagster_port)
    assert not _listening(mlflow_port)
    assert _processes_of(home) == []
