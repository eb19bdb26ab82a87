"""The operator console of one project home: Dagster's webserver and daemon, MLflow's UI, reports.

``fitpulse ui`` starts the three processes on loopback (the console has no login of its own),
waits until the two web UIs answer, and stops all of them together. Each process runs in a
session of its own, so stopping it signals its whole process group: Dagster's code servers and
MLflow's workers go with their parent instead of being respawned or orphaned.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fitpulse_orchestration import layout
from fitpulse_orchestration.settings import DEFINITIONS_MODULE, ProjectHome

HOST = "127.0.0.1"
"""The console listens on loopback only: it has no authentication of its own."""
DEFAULT_REPORTS_PORT = 3100
"""Where the report server listens unless ``fitpulse ui --reports-port`` says otherwise."""
REPORTS_URL_ENV = "FITPULSE_REPORTS_URL"
"""The report server's address, as the console tells the runs it launches (report links)."""


DAGSTER_URL_ENV = "FITPULSE_DAGSTER_URL"
"""The Dagster UI's address, as the console tells the runs it launches (run links in MLflow)."""
DEFAULT_DAGSTER_PORT = 3000
"""Where the Dagster UI listens unless ``fitpulse ui --dagster-port`` says otherwise."""
MLFLOW_URL_ENV = "FITPULSE_MLFLOW_URL"
"""The MLflow UI's address, as the console tells the runs it launches (version links)."""
DEFAULT_MLFLOW_PORT = 5000
"""Where the MLflow UI listens unless ``fitpulse ui --mlflow-port`` says otherwise."""


def default_dagster_url() -> str:
    """The Dagster UI's address under the default port."""
    return f"http://{HOST}:{DEFAULT_DAGSTER_PORT}"


def default_mlflow_url() -> str:
    """The MLflow UI's address under the default port."""
    return f"http://{HOST}:{DEFAULT_MLFLOW_PORT}"


def default_reports_url() -> str:
    """The report server's address under the default port."""
    return f"http://{HOST}:{DEFAULT_REPORTS_PORT}"


class ConsoleError(RuntimeError):
    """The console cannot start or stopped on its own.

    A port is taken, the home is not a project home, or a process exited or never answered.
    """


@dataclass(frozen=True)
class ConsoleProcess:
    """One process of the console: its name, command line and the URL it answers on."""

    name: str
    argv: list[str]
    url: str | None = None
    """Where its UI answers (None: a process without a web UI, the daemon)."""
    health: str | None = None
    """The URL polled until it answers 200 (None: nothing to poll)."""


def _script(name: str) -> str:
    """The console script ``name`` of the running interpreter's environment."""
    return str(Path(sys.executable).with_name(name))


def console_processes(
    home: ProjectHome, dagster_port: int, mlflow_port: int, reports_port: int
) -> list[ConsoleProcess]:
    """The webserver, the daemon, the MLflow UI and the report server of ``home``, in order.

    The report server serves the store's ``reports/`` folder only (drift reports, plots): the
    rest of the store holds member data.
    """
    dagster_url = f"http://{HOST}:{dagster_port}"
    mlflow_url = f"http://{HOST}:{mlflow_port}"
    reports_url = f"http://{HOST}:{reports_port}"
    location = ["-m", DEFINITIONS_MODULE]
    webserver = [_script("dagster-webserver"), "-h", HOST, "-p", str(dagster_port), *location]
    daemon = [_script("dagster-daemon"), "run", *location]
    mlflow_ui = [_script("mlflow"), "ui", "--backend-store-uri", home.mlflow_tracking_uri]
    reports = [sys.executable, "-m", "http.server", str(reports_port), "--bind", HOST]
    return [
        ConsoleProcess("dagster-webserver", webserver, dagster_url, f"{dagster_url}/server_info"),
        ConsoleProcess("dagster-daemon", daemon),
        ConsoleProcess(
            "mlflow-ui",
            [*mlflow_ui, "--host", HOST, "--port", str(mlflow_port)],
            mlflow_url,
            f"{mlflow_url}/health",
        ),
        ConsoleProcess(
            "reports",
            [*reports, "--directory", str(reports_dir(home))],
            reports_url,
            f"{reports_url}/",
        ),
    ]


def reports_dir(home: ProjectHome) -> Path:
    """The folder the report server serves: the local store's ``reports/`` prefix."""
    return home.store / layout.REPORTS


def console_env(
    home: ProjectHome,
    reports_url: str,
    mlflow_url: str,
    base: Mapping[str, str] | None = None,
    dagster_url: str | None = None,
) -> dict[str, str]:
    """The environment of every console process.

    The home's Dagster instance and project, and where reports, MLflow and Dagster are served
    (for the links of the runs the console launches).
    """
    env = dict(os.environ if base is None else base)
    env["DAGSTER_HOME"] = str(home.dagster)
    env["FITPULSE_HOME"] = str(home.root)
    env[REPORTS_URL_ENV] = reports_url
    env[MLFLOW_URL_ENV] = mlflow_url
    env[DAGSTER_URL_ENV] = dagster_url or default_dagster_url()
    env.setdefault("OMP_NUM_THREADS", "1")
    # MLflow's server job runner (GenAI evaluation jobs, seven worker processes) has no use
    # here.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def port_is_free(port: int) -> bool:
    """Whether nothing listens on ``HOST:port`` (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Console:
    """The running console: start, wait until it answers, watch, stop."""

    home: ProjectHome
    processes: list[ConsoleProcess]
    log_dir: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> None:
        """Start every process (each in a session of its own), logging to ``log_dir``.

        Raises:
            ConsoleError: when the home is not a project home, a port is taken, the Dagster
                storage cannot be prepared or a process cannot start.
        """
        if not self.home.store.is_dir():
            raise ConsoleError(f"{self.home.root} is not a project home (no store/ folder)")
        for proc in self.processes:
            port = int(proc.url.rsplit(":", 1)[1]) if proc.url else None
            if port is not None and not port_is_free(port):
                raise ConsoleError(f"port {port} for {proc.name} is taken; choose another")
        self.home.create()
        reports_dir(self.home).mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        urls = {p.name: p.url for p in self.processes}
        env = console_env(
            self.home,
            urls.get("reports") or default_reports_url(),
            urls.get("mlflow-ui") or default_mlflow_url(),
            dagster_url=urls.get("dagster-webserver"),
        )
        self._prepare_instance(env)
        for proc in self.processes:
            with (self.log_dir / f"{proc.name}.log").open("ab") as log:
                try:
                    self.running[proc.name] = subprocess.Popen(
                        proc.argv,
                        env=env,
                        cwd=self.home.root,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                except OSError as exc:
                    raise ConsoleError(f"{proc.name} could not start: {exc}") from exc

    def _prepare_instance(self, env: Mapping[str, str]) -> None:
        """Create (or migrate) the home's Dagster storage before any process opens it.

        On a new home the webserver and the daemon would otherwise both create the SQLite
        tables at once, and the loser exits ("table alembic_version already exists").

        Raises:
            ConsoleError: when ``dagster instance migrate`` fails.
        """
        log_path = self.log_dir / "dagster-instance.log"
        with log_path.open("ab") as log:
            try:
                done = subprocess.run(
                    [_script("dagster"), "instance", "migrate"],
                    env=dict(env),
                    cwd=self.home.root,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=300,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ConsoleError(f"the Dagster instance could not be prepared: {exc}") from exc
        if done.returncode != 0:
            raise ConsoleError(
                f"the Dagster instance under {self.home.dagster} could not be prepared "
                f"(dagster instance migrate exited {done.returncode}); see {log_path}"
            )

    def exited(self) -> dict[str, int]:
        """Processes that have exited, with their exit codes."""
        codes = {name: p.poll() for name, p in self.running.items()}
        return {name: code for name, code in codes.items() if code is not None}

    def wait_ready(self, timeout_s: float) -> None:
        """Return once every web UI answers 200.

        Raises:
            ConsoleError: when a process exits first or ``timeout_s`` passes.
        """
        deadline = time.monotonic() + timeout_s
        pending = [p for p in self.processes if p.health is not None]
        while pending:
            gone = self.exited()
            if gone:
                name, code = next(iter(gone.items()))
                raise ConsoleError(
                    f"{name} exited with code {code} while starting; see "
                    f"{self.log_dir / (name + '.log')}"
                )
            pending = [p for p in pending if not _answers(str(p.health))]
            if pending and time.monotonic() > deadline:
                names = ", ".join(p.name for p in pending)
                raise ConsoleError(f"{names} did not answer within {timeout_s:.0f} s")
            if pending:
                time.sleep(0.5)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every process group, then SIGKILL what is left after ``grace_s``."""
        for proc in self.running.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.running.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left in a group (the leader, or a child it spawned) is killed.
        for proc in self.running.values():
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the process group ``proc`` leads (gone already: nothing to do)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
