"""Forked workers share the pages the app loaded before the fork (``server.prefork``)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from fitpulse_orchestration.server.prefork import WORKER_CLASS, prefork_options

MODEL_MIB = 192

# A server whose "model" is a 192 MiB array filled before the fork (dirty anonymous pages,
# as loaded weights and indexes are); every request reads all of it.
SERVER = textwrap.dedent(
    f"""
    import sys
    import numpy as np
    from fastapi import FastAPI
    from fitpulse_orchestration.server.prefork import serve_forked

    weights = np.random.default_rng(7).random({MODEL_MIB} * 2**20 // 8)
    app = FastAPI()

    @app.get("/score")
    def score() -> dict:
        return {{"sum": float(weights.sum()), "pid": __import__("os").getpid()}}

    serve_forked(app, "127.0.0.1", int(sys.argv[1]), 2)
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rollup_mib(pid: int) -> dict[str, float]:
    """``/proc/PID/smaps_rollup`` fields in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        out[name.rstrip(":")] = int(value) / 1024
    return out


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc")
def test_forked_workers_share_the_model_pages_loaded_before_the_fork(tmp_path: Path) -> None:
    port = _free_port()
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    server = subprocess.Popen(
        [sys.executable, str(script), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        pids: set[int] = set()
        # Until both workers have answered (a new connection each time, so either may accept
        # it): each has then read every page of the array.
        while len(pids) < 2:
            assert server.poll() is None, server.communicate()[0][-3000:]
            assert time.monotonic() < deadline, f"workers answering: {pids}"
            with contextlib.suppress(httpx.TransportError):
                answer = httpx.get(f"http://127.0.0.1:{port}/score", timeout=10)
                pids.add(int(answer.json()["pid"]))
        workers = [
            int(p)
            for p in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        ]
        memory = {pid: _rollup_mib(pid) for pid in workers}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        output = server.communicate(timeout=60)[0]

    assert sorted(workers) == sorted(pids)  # the master's only children are the two workers
    for pid, mib in memory.items():
        # The array is in the worker's memory, on pages it shares with the master...
        assert mib["Shared_Dirty"] >= MODEL_MIB, (pid, mib)
        # ...and not copied: a worker that loaded its own would hold 192 MiB privately.
        assert mib["Private_Dirty"] + mib["Private_Clean"] < MODEL_MIB / 2, (pid, mib)
    assert server.returncode == 0, output[-3000:]


def test_the_workers_run_the_app_on_uvicorn_after_it_loads() -> None:
    options = prefork_options("0.0.0.0", 8000, 4)

    assert options["bind"] == ["0.0.0.0:8000"]
    assert options["workers"] == 4
    assert options["worker_class"] == WORKER_CLASS == "uvicorn_worker.UvicornWorker"
    assert options["preload_app"] is True
