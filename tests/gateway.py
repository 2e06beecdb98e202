"""A stand-in for the kiln gateway: one service under /user-services/invoke/<id>, for real.

`python -m tests.gateway DIR --port N` serves DIR's app under gunicorn behind werkzeug's
DispatcherMiddleware, which moves the prefix from PATH_INFO to SCRIPT_NAME but keeps the raw
URI, as a gateway that forwards the full path does. Health routes also answer at the root so
tests.support.Server can tell when it is ready; every other root path is 404.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from werkzeug.middleware.dispatcher import DispatcherMiddleware

from runtime.config import load_service
from runtime.sdk import GATEWAY_PREFIX
from runtime.server import ServiceApplication
from runtime.serving.settings import options

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _root(service: WSGIApp) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith("/api/v1.0/health/"):
            return service(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"error": "not under the gateway prefix"}']

    return app


class GatewayApplication(ServiceApplication):
    """The service app mounted under the gateway prefix of its id."""

    def load(self) -> Any:
        app = super().load()
        prefix = f"{GATEWAY_PREFIX}/{app.extensions['kiln'].config.id}"
        gateway = DispatcherMiddleware(_root(app), {prefix: app})
        # The runtime's post_worker_init hook starts load() through the app's extensions.
        gateway.extensions = app.extensions  # type: ignore[attr-defined]
        return gateway


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    root = args.directory.resolve()
    settings = options(load_service(root), "127.0.0.1", args.port)
    GatewayApplication(root, settings).run()


if __name__ == "__main__":
    main()
