"""A test client that sends the credential the test apps accept."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from fitpulse_orchestration.serving.auth import ApiTokens

API_TOKEN = "fitpulse-test-token-0123456789"
TOKENS = ApiTokens.of({"tests": API_TOKEN})
"""What ``create_app(..., tokens=TOKENS)`` accepts: the ``tests`` caller's token."""


def authed(app: FastAPI) -> TestClient:
    """A client of ``app`` that sends ``Authorization: Bearer API_TOKEN`` on every request."""
    return TestClient(app, headers={"Authorization": f"Bearer {API_TOKEN}"})
