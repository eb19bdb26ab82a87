"""The HTTP face of the feed service (FastAPI): the feed endpoint, health and metrics.

Every endpoint but ``/healthz``, ``/readyz`` and ``/metrics`` needs ``Authorization: Bearer
TOKEN`` (``serving.auth``; 401 without an accepted one). ``/docs`` and ``/openapi.json`` are off
unless enabled. Bodies over ``MAX_BODY_BYTES`` get 413, unknown fields and non-JSON values
(``NaN``, ``Infinity``) 422; every handled error is a 4xx with ``{"error": reason}``, and a 5xx
(a real fault) is counted in ``fitpulse_http_server_errors_total``.

- ``GET /v1/home-feed/{user_id}?n=20``: the compact feed (gzip when the client accepts it);
  ``X-Request-ID`` (echoed when the client sends a valid one; it is logged, never used as an
  id) and ``X-Model-Version`` headers. 400 for a malformed id or ``n``; 503 only when nothing
  at all can be served.
- ``POST /v1/push/decision`` with ``{"user_id": ..., "item_id": optional, "at": optional ISO}``:
  send or not, the item, the send time and the earliest allowed time in the user's timezone,
  the blocking guardrail or the scores; ``fallback`` labels a fail-safe "don't send". Caps and
  quiet hours run on the server's clock: ``at`` is only checked against it (422 beyond
  ``MAX_CLOCK_SKEW_S``). An ``Idempotency-Key`` header binds the decision to (user, key): a
  replay returns the original answer and never sends again.
- ``GET /healthz``: the process is up. ``GET /readyz``: 200 when the champion model loaded
  whole (model and indexes) and the online store answers; 503 otherwise, with each degraded
  component and why (``components``). The feed still answers from the labelled fallbacks while
  not ready.
- ``GET /metrics``: Prometheus text format: request and per-stage latency histograms,
  fallback and request counters, served model versions, ``fitpulse_component_up`` per
  component.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio.to_thread
import orjson
import pandas as pd
from fastapi import APIRouter, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
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
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fitpulse_orchestration.push.service import IDEMPOTENCY_KEY, PushDecisionService
from fitpulse_orchestration.serving.auth import ApiTokens
from fitpulse_orchestration.serving.feed_service import FeedService
from fitpulse_orchestration.serving.feed_types import (
    STAGES,
    InvalidRequestError,
    ServiceUnavailableError,
)
from fitpulse_orchestration.serving.loading import ModelWatcher
from fitpulse_orchestration.serving.logs import ServedLog
from fitpulse_orchestration.serving.shadow import ShadowLog

log = logging.getLogger(__name__)


class PushDecisionRequest(BaseModel):
    """Body of ``POST /v1/push/decision`` (unknown fields are refused)."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(max_length=200)
    item_id: str | None = Field(default=None, max_length=200)
    at: str | None = Field(default=None, max_length=40)


MAX_BODY_BYTES: Final = 64 * 1024
"""Largest request body accepted (413 beyond)."""
MAX_CLOCK_SKEW_S: Final = 300.0
"""How far a push request's ``at`` may lie from the server's clock (422 beyond)."""
OPEN_PATHS: Final = ("/healthz", "/readyz", "/metrics")
"""Endpoints that need no credential (probes and the scraper)."""
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9_.:-]{8,64}")
_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.18, 0.3, 0.5, 1.0)


def _client_request_id(sent: str | None) -> str | None:
    """The client's ``X-Request-ID`` when it is well formed (echoed and logged, never an id)."""
    return sent if sent and _REQUEST_ID.fullmatch(sent) else None


def _request_id(sent: str | None) -> str:
    """The client's well-formed ``X-Request-ID``, else a new id (for echo and logs)."""
    return _client_request_id(sent) or uuid.uuid4().hex


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


class BearerAuth:
    """ASGI middleware: 401 for a request to a protected path without a token it knows."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: ApiTokens,
        open_paths: frozenset[str],
        on_refused: Callable[[], None],
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.open_paths = open_paths
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass a request on with ``scope["state"]["caller"]`` set, or answer 401."""
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"authorization")
        caller = self.tokens.caller(sent.decode("latin-1") if sent is not None else None)
        if caller is None:
            self.on_refused()
            refused = _error(
                401,
                "a valid 'Authorization: Bearer TOKEN' header is required",
                {"WWW-Authenticate": 'Bearer realm="fitpulse"'},
            )
            await refused(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                await self._too_big(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        # No declared length (chunked): read up to the limit first, then replay the body.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._too_big(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_big(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Built only when refusing: a response per request cost the accepted ones too.
        await _error(413, f"request body over {self.limit} bytes")(scope, receive, send)


def _endpoint(handler: Callable[..., Response], on_loop: bool) -> Callable[..., Any]:
    """``handler`` as FastAPI is to call it: on the event loop, or in its thread pool.

    The loop's version is a coroutine with ``handler``'s name and signature (``functools.wraps``),
    so FastAPI reads the same parameters and names the same operation; the pool's is
    ``handler`` itself (a plain function).
    """
    if not on_loop:
        return handler

    @functools.wraps(handler)
    async def on_the_loop(*args: Any, **kwargs: Any) -> Response:
        return handler(*args, **kwargs)

    return on_the_loop


def _problems(exc: RequestValidationError) -> list[dict[str, Any]]:
    """What was wrong, without echoing the input (it may hold NaN or megabytes)."""
    return [
        {"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", ""))}
        for err in exc.errors()[:20]
    ]


def _clock_skew(at: str, now: float) -> float | str:
    """Seconds between ``at`` and the server's ``now``, or why ``at`` is refused."""
    try:
        stamp = pd.Timestamp(at)
    except (ValueError, OverflowError):
        return f"'at' is not an ISO timestamp: {at!r}"
    if stamp is pd.NaT or stamp.tzinfo is None:
        return "'at' needs a UTC offset, e.g. 2026-11-01T18:00:00Z"
    skew = float(stamp.timestamp()) - now
    if abs(skew) > MAX_CLOCK_SKEW_S:
        return (
            f"'at' lies {skew:+.0f} s from the server's clock; caps and quiet hours run on the "
            f"server's clock, and 'at' may differ by at most {MAX_CLOCK_SKEW_S:.0f} s"
        )
    return skew


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
        self.server_errors = Counter(
            "fitpulse_http_server_errors",
            "Requests that ended in a 5xx from an unhandled fault, by path template",
            ["path"],
            registry=self.registry,
        )
        self.unauthorized = Counter(
            "fitpulse_http_unauthorized",
            "Requests refused for a missing or unknown credential",
            registry=self.registry,
        )
        self.component = Gauge(
            "fitpulse_component_up",
            "1 when a component serves whole, 0 when it is degraded (see /readyz for why)",
            ["component"],
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
    *,
    tokens: ApiTokens,
    docs: bool = False,
) -> FastAPI:
    """The app around ``service``; the watcher and the logs run for the app's lifetime.

    ``threads`` caps the worker threads that run requests (the feed path is CPU-bound: more
    threads than cores only queue inside the interpreter); with one (``fitpulse serve``'s
    default) the feed and the push decision run on the event loop instead. ``push`` serves
    ``POST /v1/push/decision`` (404 without it). ``tokens`` are the callers' credentials;
    ``docs`` serves ``/docs`` and ``/openapi.json`` (off by default: they describe the API to
    anyone who asks).
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

    app = FastAPI(
        title="FitPulse feed and push service",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.add_middleware(GZipMiddleware, minimum_size=500)
    app.add_middleware(BodyLimit)
    # Outermost: a request without a known token is refused before anything reads its body.
    open_paths = set(OPEN_PATHS) | (
        {"/docs", "/docs/oauth2-redirect", "/openapi.json"} if docs else set()
    )
    app.add_middleware(
        BearerAuth,
        tokens=tokens,
        open_paths=frozenset(open_paths),
        on_refused=metrics.unauthorized.inc,
    )
    for stage in STAGES:
        metrics.stage.labels(stage)
    api = APIRouter(responses={401: {"description": "missing or unknown credential"}})

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": "invalid request", "problems": _problems(exc)}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def fault(request: Request, exc: Exception) -> JSONResponse:
        route = request.scope.get("route")
        metrics.server_errors.labels(getattr(route, "path", "unmatched")).inc()
        log.error("unhandled fault on %s", request.url.path, exc_info=exc)
        return _error(500, "internal error")

    def home_feed(
        user_id: str, n: str = "20", x_request_id: str | None = Header(default=None)
    ) -> Response:
        t0 = time.perf_counter()
        client_id = _client_request_id(x_request_id)
        request_id = client_id or uuid.uuid4().hex
        try:
            if not re.fullmatch(r"\d+", n):
                raise InvalidRequestError(f"n must be a whole number, got {n[:20]!r}")
            if len(n) > 4:  # beyond any feed size: refused before int() reads a long string
                raise InvalidRequestError(
                    f"n must be between 1 and {service.config.max_items}, got {n[:20]}"
                )
            response = service.home_feed(user_id, int(n), client_request_id=client_id)
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
        # orjson: the feed body is most of what a request encodes (about 10x json's speed).
        return Response(
            orjson.dumps(response.payload()),
            media_type="application/json",
            headers={
                "X-Request-ID": client_id or response.request_id,
                "X-Model-Version": response.model_version,
            },
        )

    def push_decision(
        body: PushDecisionRequest,
        x_request_id: str | None = Header(default=None),
        idempotency_key: str | None = Header(default=None, max_length=200),
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
        if idempotency_key is not None and not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            return _error(422, f"Idempotency-Key must match {IDEMPOTENCY_KEY.pattern}", headers)
        if body.at is not None:
            skew = _clock_skew(body.at, push.clock())
            if isinstance(skew, str):
                return _error(422, skew, headers)
        try:
            decision = push.decide(
                body.user_id, body.item_id, None, request_id, idempotency_key=idempotency_key
            )
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

    # With one request thread the feed and the push decision run on the event loop itself: the
    # pool would run them one at a time all the same (one token), and its hand-over cost
    # 0.3-0.4 ms of server CPU per request (``benchmarks/README.md``, "The feed on the event
    # loop"). With more threads they run in the pool; the other endpoints always do.
    on_loop = threads == 1
    api.get("/v1/home-feed/{user_id}")(_endpoint(home_feed, on_loop))
    api.post("/v1/push/decision")(_endpoint(push_decision, on_loop))
    app.include_router(api)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def components() -> dict[str, str | None]:
        """Each component's problem (None: healthy)."""
        champion = service.state.models.get("champion")
        model_problem = None
        if champion is None or champion.model is None or champion.problem:
            model_problem = champion.problem if champion else "no champion"
        elif champion.model.index is None:
            model_problem = "no item index"
        return {"champion_model": model_problem, "online_store": service.store_health()}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        state = service.state
        problems = components()
        ready = state.ready and not any(problems.values())
        body = {
            "ready": ready,
            "components": problems,
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
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        metrics.model.clear()
        for alias, loaded in service.state.models.items():
            metrics.model.labels(alias, loaded.version).set(1.0 if loaded.model else 0.0)
        for component, problem in components().items():
            metrics.component.labels(component).set(0.0 if problem else 1.0)
        if served_log is not None:
            metrics.log_errors.set(served_log.write_errors)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
