"""Pre-fork serving: the models load once, then gunicorn forks the workers that share them.

``fitpulse serve --processes N`` used to start N uvicorn workers by ``spawn``: each imported
the libraries and loaded every model again, so each worker added a whole copy (about 1.2 GiB
at 1M items, ``benchmarks/README.md``). Here the app, with its loaded models, is built once in
the gunicorn master; each worker is a ``fork`` of it and reads the same physical pages until
it writes to them (copy-on-write). The heap is frozen first (``gc.freeze``): a collection in a
worker would otherwise write to the header of every object it walks and copy those pages.

What each worker starts for itself: the app's lifespan (the reload watcher, the served-log
writer) runs after the fork, in the worker. Connections follow the process: the SQLite stores
and the S3 store open their own in a forked child (they check the pid), as redis-py and
MLflow's HTTP sessions do; MLflow's database engine runs without a pool under ``fitpulse
serve`` (``MLFLOW_SQLALCHEMYSTORE_POOLCLASS=NullPool``), so no pooled connection crosses the
fork. A model reload in a worker loads the new version into that worker alone, so after a
reload each worker holds its own copy until the server restarts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gunicorn.app.base import BaseApplication

from fitpulse_orchestration.serving.loading import freeze_heap

WORKER_CLASS: Final = "uvicorn_worker.UvicornWorker"
"""The gunicorn worker that runs an ASGI app on uvicorn's event loop and HTTP parser."""


class _Prefork(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
    """A gunicorn application around an app object built before the fork."""

    def __init__(self, app: Any, options: Mapping[str, Any]) -> None:
        self._app = app
        self._options = dict(options)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._app


def prefork_options(host: str, port: int, workers: int) -> dict[str, Any]:
    """The gunicorn settings of ``serve_forked`` (a function, so tests read what serves)."""
    return {
        "bind": [f"{host}:{port}"],
        "workers": workers,
        "worker_class": WORKER_CLASS,
        # The app is already built: the master holds it and every worker is forked from it.
        "preload_app": True,
        # uvicorn's keep-alive default (gunicorn's is 2 s): clients reuse connections.
        "keepalive": 5,
        # A worker that misses its heartbeat this long is killed and forked again.
        "timeout": 60,
        "graceful_timeout": 20,
        "loglevel": "warning",
        "accesslog": None,
        "errorlog": "-",
        "proc_name": "fitpulse-serve",
    }


def serve_forked(app: Any, host: str, port: int, workers: int) -> None:
    """Serve ``app`` from ``workers`` forked processes until SIGTERM or SIGINT.

    The heap is collected and frozen before the first fork. Returns when the master stops
    (SIGTERM: graceful, in-flight requests finish and each worker's lifespan closes its logs).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    freeze_heap(collect=True)
    _Prefork(app, prefork_options(host, port, workers)).run()
