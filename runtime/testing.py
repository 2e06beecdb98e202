"""Helpers for a service's own tests: the app with load() done, and its Flask test client."""
from __future__ import annotations

from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from runtime.app import create_app, service_of


def make_app(root: str | Path) -> Flask:
    """The service's app, with load() run here, before the first request."""
    app = create_app(root)
    app.testing = True
    service_of(app).health.start(background=False)
    return app


def client(root: str | Path) -> FlaskClient:
    """A Flask test client for the service in ROOT: `client(".").post("/api/v1.0/predict", ...)`."""
    return make_app(root).test_client()
