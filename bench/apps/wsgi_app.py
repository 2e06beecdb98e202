"""Contestant (d): a plain WSGI callable under gunicorn, the ceiling of the server stack.

It does the least any server of this model must do: read the body, parse the JSON, predict,
write the JSON answer. Everything a framework adds on top shows as the gap to this one.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from apps.iris import load

model = load()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["REQUEST_METHOD"] == "GET":  # bench/run's readiness check
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"status": "ok"}']
    length = int(environ.get("CONTENT_LENGTH") or 0)
    rows = json.loads(environ["wsgi.input"].read(length))["input"]
    body = json.dumps({"prediction": model.predict(rows).tolist()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
