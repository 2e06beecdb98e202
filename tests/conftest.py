"""Shared fixtures: a clean environment for every test, and real kiln servers."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import SERVICES, Server

# docker_engine and standin_images, for the tests marked `docker`.
pytest_plugins = ["tests.docker_fixtures"]

PREFIXES = ("KILN_", "FLASK_", "GUNICORN_", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No KILN_*, FLASK_* or GUNICORN_* setting leaks into a test from the shell or another test."""
    for name in list(os.environ):
        if name.startswith(PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture
def service_dir() -> Callable[[str], Path]:
    """The folder of a test service under tests/services."""
    return lambda name: SERVICES / name


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `kiln serve DIR` on a free port; every server started is stopped after the test."""
    started: list[Server] = []

    def start(directory: Path | str, *extra: str, env: dict[str, str] | None = None,
              ready: bool = True) -> Server:
        path = SERVICES / directory if isinstance(directory, str) else directory
        log = tmp_path / f"server-{len(started)}.log"
        server = Server(["serve", str(path), *extra], log, env=env)
        started.append(server)
        return server.wait_ready() if ready else server.wait_live()

    yield start
    for server in started:
        server.stop()
