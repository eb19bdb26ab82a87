"""Hostile input against the HTTP service: no request makes it answer 5xx.

Schemathesis generates requests for every operation of the service's own OpenAPI document
(``app.openapi()``; ``/openapi.json`` itself is off), both fitting the schema and violating it
(``GenerationMode.NEGATIVE``), and sends them in-process through its ASGI transport. Every
response must be below 500, and every 4xx JSON body must carry a non-empty ``"error"``. The
generation is deterministic (derandomized, a fixed seed, no example database) and bounded.

Explicit cases pin what the generators reach only by chance: bodies over the 64 KiB limit
(declared, chunked, streamed in pieces), JSON with ``NaN``/``Infinity`` literals, unknown
fields, bodies that are not JSON, odd ``at`` values and the docs endpoints being off.

The module's copy of the session's trained tiny home (``trained_world``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, cast

import anyio
import httpx
import pytest
import schemathesis
from api_client import API_TOKEN, TOKENS, authed
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis import BaseSchema
from schemathesis.python.asgi import shutdown_lifespans
from starlette.types import Message, Scope

from fitpulse_orchestration.server.app import MAX_BODY_BYTES, create_app
from fitpulse_orchestration.server.runtime import ServiceRuntime, build_runtime, profile_backends
from fitpulse_orchestration.serving.feed_service import FeedService

if TYPE_CHECKING:
    from conftest import TrainedWorld

pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")

SEED = 20261101
"""The generators' seed (they are derandomized too, so every run sends the same requests)."""
MAX_EXAMPLES = 60
"""Fuzzed examples per operation (the coverage phase adds its own deterministic cases)."""
ANONYMOUS_EXAMPLES = 10
"""Fuzzed examples per protected operation sent without a credential."""
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
PUSH = "/v1/push/decision"
PROTECTED = r"^/v1/"


@pytest.fixture(scope="module")
def runtime(
    trained_world: TrainedWorld, tmp_path_factory: pytest.TempPathFactory
) -> ServiceRuntime:
    """A runtime over this module's copy of the trained home (feed models and push policy)."""
    runtime = build_runtime(
        profile_backends(trained_world.home, "local"),
        tmp_path_factory.mktemp("hostile") / "models",
        poll_s=3600.0,
    )
    assert runtime.push is not None
    return runtime


@pytest.fixture(scope="module")
def app(runtime: ServiceRuntime) -> Iterator[FastAPI]:
    """The full app (watcher, served log, push) that Schemathesis calls in-process."""
    app = create_app(
        runtime.service, runtime.watcher, runtime.served_log, push=runtime.push, tokens=TOKENS
    )
    yield app
    # Schemathesis' ASGI transport starts the app's lifespan once and keeps it running; stop it
    # here so the watcher and the served log do not outlive the module's home.
    shutdown_lifespans()


# The routes and their OpenAPI document do not depend on the service behind them, so the
# schemas are built at import (pytest collects one test per operation from them) and every
# call goes to the trained app; ``test_the_fuzzed_document_is_the_served_apps`` pins that.
# (``schemathesis.pytest.from_fixture`` would defer this, but its lazy tests touch
# ``Node._nodeid``, which pytest 9.2 no longer has.)
SPEC: Final = create_app(cast(FeedService, None), tokens=TOKENS).openapi()


def _schema(*, modes: list[schemathesis.GenerationMode], examples: int) -> BaseSchema:
    """The service's OpenAPI document as a deterministic, bounded Schemathesis schema."""
    config = schemathesis.Config(seed=SEED)
    schema = schemathesis.openapi.from_dict(copy.deepcopy(SPEC), config=config)
    schema.config.generation.update(
        modes=modes, max_examples=examples, deterministic=True, database="none"
    )
    return schema


generated = _schema(modes=list(schemathesis.GenerationMode), examples=MAX_EXAMPLES)
"""Every operation, with valid and invalid data."""
anonymous = _schema(
    modes=[schemathesis.GenerationMode.POSITIVE], examples=ANONYMOUS_EXAMPLES
).include(path_regex=PROTECTED)
"""The protected operations with valid data: without a credential they answer only 401."""


def _error_reason(status: int, content_type: str, content: bytes) -> str | None:
    """Why a 4xx body falls short (a JSON body needs a non-empty ``"error"``), else ``None``."""
    if not content_type.startswith("application/json"):
        return None
    body = json.loads(content)
    if not isinstance(body, dict) or not isinstance(body.get("error"), str) or not body["error"]:
        return f"{status} JSON body without a non-empty 'error': {content[:300]!r}"
    return None


def _check_handled(case: schemathesis.Case[Any], response: schemathesis.Response) -> None:
    where = (
        f"\n{case.as_curl_command(headers=AUTH)}\n"
        f"-> {response.status_code} {response.content[:500]!r}"
    )
    assert response.status_code < 500, f"server error{where}"
    if 400 <= response.status_code < 500:
        content_type = (response.headers.get("content-type") or [""])[0]
        problem = _error_reason(response.status_code, content_type, response.content)
        assert problem is None, f"{problem}{where}"


@pytest.mark.slow
def test_the_fuzzed_document_is_the_served_apps(app: FastAPI) -> None:
    assert app.openapi() == SPEC
    operations = {(method.upper(), path) for path, item in SPEC["paths"].items() for method in item}
    assert operations == {
        ("GET", "/v1/home-feed/{user_id}"),
        ("POST", PUSH),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    }


@pytest.mark.slow
@generated.parametrize()
def test_generated_requests_never_get_a_server_error(
    case: schemathesis.Case[Any], app: FastAPI
) -> None:
    _check_handled(case, case.call(app=app, headers=AUTH))


@pytest.mark.slow
@anonymous.parametrize()
def test_generated_requests_without_a_credential_get_401(
    case: schemathesis.Case[Any], app: FastAPI
) -> None:
    response = case.call(app=app)
    _check_handled(case, response)
    assert response.status_code == 401, case.as_curl_command()
    assert response.headers.get("www-authenticate") == ['Bearer realm="fitpulse"']


# Explicit hostile cases, on an app without watcher or logs (no lifespan to run).


@pytest.fixture(scope="module")
def client(runtime: ServiceRuntime) -> TestClient:
    return authed(create_app(runtime.service, push=runtime.push, tokens=TOKENS))


def _assert_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    reason = response.json()["error"]
    assert isinstance(reason, str)
    assert reason
    return reason


@pytest.mark.slow
def test_a_body_over_the_limit_with_content_length_gets_413(client: TestClient) -> None:
    body = json.dumps({"user_id": "u" * (MAX_BODY_BYTES + 1)}).encode()
    response = client.post(PUSH, content=body, headers={"Content-Type": "application/json"})
    assert int(response.request.headers["content-length"]) > MAX_BODY_BYTES
    assert "over" in _assert_error(response, 413)


@pytest.mark.slow
def test_a_chunked_body_over_the_limit_gets_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"user_id": "'
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            yield b"u" * 4096
        yield b'"}'

    response = client.post(PUSH, content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    _assert_error(response, 413)


@pytest.mark.slow
def test_a_body_streamed_in_pieces_is_cut_off_at_the_limit(runtime: ServiceRuntime) -> None:
    """Straight ASGI: the body arrives in many messages, and reading stops past the limit."""
    app = create_app(runtime.service, push=runtime.push, tokens=TOKENS)
    piece, pieces = 4096, 64  # 256 KiB offered in all
    received = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b"u" * piece, "more_body": received < pieces}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PUSH,
        "raw_path": PUSH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {API_TOKEN}".encode()),
        ],
        "client": ("testclient", 50000),
        "server": ("testserver", 80),
    }

    async def run() -> None:
        await app(scope, receive, send)

    anyio.run(run)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert json.loads(body)["error"]
    assert received == MAX_BODY_BYTES // piece + 1  # stopped right past the limit


@pytest.mark.slow
@pytest.mark.parametrize(
    "body",
    [
        "NaN",
        "Infinity",
        "-Infinity",
        '{"user_id": NaN}',
        '{"user_id": Infinity}',
        '{"user_id": -Infinity}',
        '{"user_id": "u1", "item_id": NaN}',
        '{"user_id": "u1", "at": Infinity}',
        '{"user_id": "u1", "extra": -Infinity}',
        '{"user_id": "u1", "nested": {"x": [NaN, Infinity]}}',
        "[NaN, Infinity, -Infinity]",
    ],
)
def test_non_finite_json_literals_get_422(client: TestClient, body: str) -> None:
    response = client.post(PUSH, content=body, headers={"Content-Type": "application/json"})
    _assert_error(response, 422)
    assert "NaN" not in response.text
    assert "Infinity" not in response.text


@pytest.mark.slow
@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "u1", "unknown": 1},
        {"user_id": "u1", "send": True},
        {"user_id": "u1", "item_id": None, "at": None, "force": "yes"},
        {"userid": "u1"},
    ],
)
def test_unknown_fields_get_422(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post(PUSH, json=body)
    _assert_error(response, 422)
    assert response.json()["problems"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"not json", "application/json"),
        (b"{", "application/json"),
        (b'{"user_id": "u1",}', "application/json"),
        (b"{'user_id': 'u1'}", "application/json"),
        (b"", "application/json"),
        (b"user_id=u1", "application/x-www-form-urlencoded"),
        (b"user_id=u1", "text/plain"),
        (b'{"user_id": "u1"}', "application/xml"),
        (b"\x00\x01\x02", "application/octet-stream"),
    ],
    ids=["text", "open-brace", "trailing-comma", "quotes", "empty", "form", "plain", "xml", "bin"],
)
def test_a_body_that_is_not_json_gets_422(
    client: TestClient, content: bytes, content_type: str
) -> None:
    response = client.post(PUSH, content=content, headers={"Content-Type": content_type})
    _assert_error(response, 422)


@pytest.mark.slow
@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\xfd", b'{"user_id": "\xff"}', b"\xef\xbb\xbf{", b'{"user_id": "\xed\xa0\x80"}'],
    ids=["bytes", "in-string", "bom", "surrogate"],
)
def test_a_body_that_is_not_utf8_gets_a_4xx(client: TestClient, content: bytes) -> None:
    response = client.post(PUSH, content=content, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "at",
    [
        "",
        "nan",
        "NaT",
        "now",
        "today",
        "2026-11-01T18:00:00",
        "2026-11-01T18:00:00+99:00",
        "2026-13-45T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59+14:00",
        "99999999999",
        "2026-11-01T18:00:00Z\x00",
        "1e400",
        "x" * 41,
    ],
    ids=lambda at: ascii(at)[1:-1][:30] or "empty",
)
def test_odd_at_values_get_422(client: TestClient, at: str) -> None:
    _assert_error(client.post(PUSH, json={"user_id": "u1", "at": at}), 422)


@pytest.mark.slow
@pytest.mark.parametrize(
    "key",
    ["", " ", "short", "k" * 129, "k" * 201, "bad key!", "ключ-ключ-ключ", "a\tbcdefghi"],
    ids=["empty", "space", "short", "129", "201", "punctuation", "utf8", "tab"],
)
def test_odd_idempotency_keys_get_4xx(client: TestClient, key: str) -> None:
    headers = {"Idempotency-Key": key.encode()}  # raw bytes: UTF-8 arrives as latin-1 text
    response = client.post(PUSH, json={"user_id": "u1"}, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect"])
def test_docs_are_off_by_default(client: TestClient, path: str) -> None:
    # Not served to a caller with a token; a caller without one learns nothing beyond 401.
    _assert_error(client.get(path), 404)
    _assert_error(client.get(path, headers={"Authorization": ""}), 401)


@pytest.mark.slow
def test_docs_serve_when_enabled(runtime: ServiceRuntime) -> None:
    client = authed(create_app(runtime.service, push=runtime.push, tokens=TOKENS, docs=True))
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
