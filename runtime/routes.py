"""The routes every service has: predict and the three health routes."""
from __future__ import annotations

import base64
import binascii
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app, stream_with_context

from runtime.bounded import FutureTimeout, Pool, call_bounded
from runtime.lifecycle import current
from runtime.responses import error

# The paths of every route the runtime serves, here once for all its modules.
API = "/api/v1.0"
PREDICT = f"{API}/predict"
HEALTH = f"{API}/health"
FEEDBACK = f"{API}/feedback"
METRICS = "/metrics"
DOCS = "/docs"

builtin = Blueprint("kiln", __name__)


class Predictor:
    """Calls preprocess and predict for one request, bounded by predict.timeout (runtime/bounded.py)."""

    def __init__(self, predict: Callable[..., Any], preprocess: Callable[..., Any] | None,
                 timeout: float, accepts_file: bool):
        self.predict = predict
        self.preprocess = preprocess
        self.timeout = timeout
        self.accepts_file = accepts_file
        # A prediction that overruns its timeout keeps its thread; spare threads keep serving.
        self._pool = Pool("kiln-predict")

    def run(self, args: list[Any]) -> Any:
        """preprocess(*args) then predict(...); raises FutureTimeout after predict.timeout."""
        return call_bounded(self._pool, self._call, (args,), self.timeout)

    def _call(self, args: list[Any]) -> Any:
        if self.preprocess is not None:
            prepared = self.preprocess(*args)
            args = list(prepared) if isinstance(prepared, tuple) else [prepared]
        return self.predict(*args)


def _decode_files(value: Any, paths: list[str]) -> Any:
    """Write each base64 string of the input to a temporary file; return the paths instead."""
    if isinstance(value, list):
        return [_decode_files(v, paths) for v in value]
    if not isinstance(value, str):
        raise ValueError(  # noqa: TRY004 - answered as a 400 by the caller
            "with predict.accepts_file, input must be a base64 string or a list of them")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"input is not valid base64: {err}") from err
    handle, path = tempfile.mkstemp(prefix="kiln-input-")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    paths.append(path)
    return path


def _remove(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _stream(items: Iterator[Any], paths: list[str]) -> Iterator[str]:
    dumps = current_app.json.dumps
    try:
        for item in items:
            yield dumps(item) + "\n"
    finally:
        _remove(paths)


@builtin.post(PREDICT)
@builtin.post(PREDICT + "/")
def predict() -> Any:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    kiln = app.extensions["kiln"]
    if not kiln.health.ready:
        return error(503, f"not ready: {kiln.health.reason()}")
    now = current()
    body = now.request.get_json()
    if not isinstance(body, dict) or "input" not in body:
        return error(400, 'body must be a JSON object with the key "input", e.g. {"input": [1, 2]}')
    value = body["input"]
    predictor: Predictor = kiln.predictor
    paths: list[str] = []
    if predictor.accepts_file:
        try:
            value = _decode_files(value, paths)
        except ValueError as err:
            _remove(paths)
            return error(400, str(err))
    args = value if isinstance(value, list) else [value]
    try:
        result = predictor.run(args)
    except FutureTimeout:
        _remove(paths)
        return error(504, f"prediction took longer than predict.timeout ({predictor.timeout:g} s)")
    except BaseException:
        _remove(paths)
        raise
    if isinstance(result, Iterator):  # generators too
        return Response(stream_with_context(_stream(result, paths)),
                        mimetype="application/x-ndjson")
    if paths:
        _remove(paths)
    return app.json.response({"prediction": result, "request_id": now.id})


def _health_body(ok: bool, **extra: Any) -> dict[str, Any]:
    kiln = current_app.extensions["kiln"]
    body = {"status": "ok" if ok else "unavailable", "service": kiln.config.id,
            "version": kiln.config.version, **extra}
    if not ok:
        body["reason"] = kiln.health.reason()
    return body


@builtin.get(f"{HEALTH}/status")
@builtin.get(f"{HEALTH}/status/")
def status() -> Any:
    kiln = current_app.extensions["kiln"]
    ok = kiln.health.ready
    extra = {"gpu": kiln.gpu(), **kiln.status_extra()}
    return _health_body(ok, **extra), 200 if ok else 503


@builtin.get(f"{HEALTH}/startup")
@builtin.get(f"{HEALTH}/startup/")
def startup() -> Any:
    finished = current_app.extensions["kiln"].health.finished.is_set()
    return _health_body(finished, started=finished), 200 if finished else 503


@builtin.get(f"{HEALTH}/live")
@builtin.get(f"{HEALTH}/live/")
def live() -> Any:
    return {"status": "ok"}


def init_app(app: Flask) -> None:
    app.register_blueprint(builtin)
