"""The HTTP face of the feed service (FastAPI): the feed endpoint, health and metrics.

- ``GET /v1/home-feed/{user_id}?n=20``: the compact feed (gzip when the client accepts it);
  ``X-Request-ID`` (echoed when the client sends a valid one) and ``X-Model-Version`` headers.
  400 for a malformed id or ``n``; 503 only when nothing at all can be served.
- ``POST /v1/push/decision`` with ``{"user_id": ..., "item_id": optional, "at": optional ISO}``:
  send or not, the item, the send time and the earliest allowed time in the user's timezone,
  the blocking guardrail or the scores; ``fallback`` labels a fail-safe "don't send".
- ``GET /healthz``: the process is up. ``GET /readyz``: 200 once the champion model and its
  index are loaded, 503 (with what is missing) before that; the feed still answers from the
  fallbacks while not ready.
- ``GET /metrics``: Prometheus text format: request and per-stage latency histograms,
  fallback and request counters, served model versions.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio.to_thread
from fastapi import FastAPI, Header, Response
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field

from fitpulse_orchestration.push.service import PushDecisionService
from fitpulse_orchestration.serving.feed_service import (
    STAGES,
    FeedService,
    InvalidRequestError,
    ServiceUnavailableError,
)
from fitpulse_orchestration.serving.loading import ModelWatcher
from fitpulse_orchestration.serving.logs import ServedLog
from fitpulse_orchestration.serving.shadow import ShadowLog


class PushDecisionRequest(BaseModel):
    """Body of ``POST /v1/push/decision``."""

    user_id: str = Field(max_length=200)
    item_id: str | None = Field(default=None, max_length=200)
    at: str | None = Field(default=None, max_length=40)


_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9_.:-]{8,64}")
_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.18, 0.3, 0.5, 1.0)


def _request_id(sent: str | None) -> str:
    """The client's ``X-Request-ID`` when it is well formed, else a new id."""
    return sent if sent and _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request = Histogram(
            "fitpulse_feed_request_seconds",
            "Home-feed request latency inside the service",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.stage = Histogram(
            "fitpulse_feed_stage_seconds",
            "Home-feed latency per pipeline stage",
            ["stage"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "fitpulse_feed_requests",
            "Home-feed requests by variant and HTTP status",
            ["variant", "status"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "fitpulse_feed_fallbacks",
            "Home-feed responses that used a fallback, by fallback",
            ["fallback"],
            registry=self.registry,
        )
        self.cold = Counter(
            "fitpulse_feed_cold_users",
            "Requests from users unknown to the online store",
            registry=self.registry,
        )
        self.model = Gauge(
            "fitpulse_model_info",
            "1 for the model version each alias is served from",
            ["alias", "version"],
            registry=self.registry,
        )
        self.push = Counter(
            "fitpulse_push_decisions",
            "Push decisions by outcome (send, the blocking guardrail, or the fallback)",
            ["outcome"],
            registry=self.registry,
        )
        self.push_latency = Histogram(
            "fitpulse_push_decision_seconds",
            "Push decision latency inside the service",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.log_errors = Gauge(
            "fitpulse_served_log_write_errors",
            "Failed flushes of exposures and served features (retried)",
            registry=self.registry,
        )


def create_app(
    service: FeedService,
    watcher: ModelWatcher | None = None,
    served_log: ServedLog | None = None,
    threads: int | None = None,
    push: PushDecisionService | None = None,
    shadow_log: ShadowLog | None = None,
) -> FastAPI:
    """The app around ``service``; the watcher and the logs run for the app's lifetime.

    ``threads`` caps the worker threads that run requests (the feed path is CPU-bound: more
    threads than cores only queue inside the interpreter). ``push`` serves
    ``POST /v1/push/decision`` (404 without it).
    """
    metrics = _Metrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if threads is not None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        if watcher is not None:
            watcher.start()
        for log_ in (served_log, shadow_log):
            if log_ is not None:
                log_.start()
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()
            for log_ in (served_log, shadow_log):
                if log_ is not None:
                    log_.close()

    app = FastAPI(title="FitPulse feed and push service", lifespan=lifespan)
    app.add_middleware(GZipMiddleware, minimum_size=500)
    for stage in STAGES:
        metrics.stage.labels(stage)

    @app.get("/v1/home-feed/{user_id}")
    def home_feed(
        user_id: str, n: str = "20", x_request_id: str | None = Header(default=None)
    ) -> Response:
        t0 = time.perf_counter()
        request_id = _request_id(x_request_id)
        try:
            if not re.fullmatch(r"\d{1,4}", n):
                raise InvalidRequestError(f"n must be a whole number, got {n[:20]!r}")
            response = service.home_feed(user_id, int(n), request_id)
        except InvalidRequestError as exc:
            metrics.requests.labels("none", "400").inc()
            return JSONResponse(
                {"error": str(exc), "request_id": request_id},
                status_code=400,
                headers={"X-Request-ID": request_id},
            )
        except ServiceUnavailableError as exc:
            metrics.requests.labels("none", "503").inc()
            return JSONResponse(
                {"error": str(exc), "request_id": request_id},
                status_code=503,
                headers={"X-Request-ID": request_id},
            )
        for stage, ms in response.stage_ms.items():
            metrics.stage.labels(stage).observe(ms / 1e3)
        for fallback in response.fallbacks:
            metrics.fallbacks.labels(fallback).inc()
        if response.cold:
            metrics.cold.inc()
        metrics.requests.labels(response.variant, "200").inc()
        metrics.request.observe(time.perf_counter() - t0)
        return JSONResponse(
            response.payload(),
            headers={"X-Request-ID": request_id, "X-Model-Version": response.model_version},
        )

    @app.post("/v1/push/decision")
    def push_decision(
        body: PushDecisionRequest, x_request_id: str | None = Header(default=None)
    ) -> Response:
        t0 = time.perf_counter()
        request_id = _request_id(x_request_id)
        headers = {"X-Request-ID": request_id}
        if push is None:
            return JSONResponse(
                {"error": "push decisions are not served here", "request_id": request_id},
                status_code=404,
                headers=headers,
            )
        try:
            decision = push.decide(body.user_id, body.item_id, body.at, request_id)
        except InvalidRequestError as exc:
            metrics.push.labels("invalid").inc()
            return JSONResponse(
                {"error": str(exc), "request_id": request_id}, status_code=400, headers=headers
            )
        outcome = "send" if decision.send else (decision.blocked_by or decision.fallback or "no")
        metrics.push.labels(outcome).inc()
        metrics.push_latency.observe(time.perf_counter() - t0)
        if decision.model_version:
            headers["X-Model-Version"] = decision.model_version
        return JSONResponse(decision.payload(), headers=headers)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        state = service.state
        body = {
            "ready": state.ready,
            "as_of": state.as_of.isoformat(),
            "catalog_items": len(state.catalog),
            "models": {
                alias: {
                    "version": m.version,
                    "loaded": m.model is not None,
                    "index": m.model is not None and m.model.index is not None,
                    "problem": m.problem,
                }
                for alias, m in state.models.items()
            },
            "reload_error": watcher.last_error if watcher is not None else None,
        }
        return JSONResponse(body, status_code=200 if state.ready else 503)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        metrics.model.clear()
        for alias, loaded in service.state.models.items():
            metrics.model.labels(alias, loaded.version).set(1.0 if loaded.model else 0.0)
        if served_log is not None:
            metrics.log_errors.set(served_log.write_errors)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
