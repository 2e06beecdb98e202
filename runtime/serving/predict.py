"""The predict route: `{"input": X}` in, `{"prediction": ..., "request_id": ...}` out."""
from __future__ import annotations

import base64
import binascii
import copy
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app, stream_with_context

from runtime.serving import API
from runtime.serving.batching import Batcher, batch_settings, call_batch, item_of, rows_call
from runtime.serving.contract import Contract, InputError
from runtime.serving.lifecycle import current, lifecycle
from runtime.serving.responses import TAG, documented, error, error_doc
from runtime.serving.timeouts import FutureTimeout, Pool, call_bounded

log = logging.getLogger("kiln.predict")

PREDICT = f"{API}/predict"
ENDPOINT = "kiln.predict"

builtin = Blueprint("kiln", __name__)

BODY: dict[str, Any] = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "input": {
            "description": "A list calls predict(*input); any other value calls predict(input). "
                           "With predict.accepts_file, base64 strings decoded to files.",
        },
    },
    "example": {"input": [1, 2]},
}
OPERATIONS: dict[str, dict[str, Any]] = {"post": {
    "tags": [TAG],
    "summary": "Run the service's predict()",
    "operationId": "kiln_predict",
    "requestBody": {"required": True, "content": {"application/json": {"schema": BODY}}},
    "responses": {
        "200": {"description": "The prediction; NDJSON lines when predict() yields.",
                "content": {
                    "application/json": {"schema": {
                        "type": "object",
                        "properties": {"prediction": {}, "request_id": {"type": "string"}},
                        "required": ["prediction", "request_id"]}},
                    "application/x-ndjson": {"schema": {"type": "string"}}}},
        "400": error_doc("The body is not {\"input\": ...}, its input does not fit PredictInput, "
                         "or it is not valid base64."),
        "413": error_doc("The body is larger than flask MAX_CONTENT_LENGTH."),
        "415": error_doc("The body is not JSON."),
        "500": error_doc("predict() raised an exception."),
        "503": error_doc("load() has not finished, or failed."),
        "504": error_doc("predict() took longer than predict.timeout."),
    },
}}


class Predictor:
    """Calls preprocess and predict for one request, bounded by predict.timeout (runtime/serving/timeouts.py).

    The inference protocols' rows (runtime/serving/protocols.py) go through `run_rows`: one
    `predict_batch(rows)` call where the service defines it (a model's vectorised method),
    else predict once per row, all under one timeout.

    With service.yaml `predict.batch`, `batcher` gathers concurrent requests' inputs into
    predict_batch calls (runtime/serving/batching.py); `run` and `run_loaded` go through it.
    """

    def __init__(self, predict: Callable[..., Any], preprocess: Callable[..., Any] | None,
                 timeout: float, accepts_file: bool, *,
                 predict_batch: Callable[[list[Any]], Any] | None = None,
                 contract: Contract | None = None):
        self.predict = predict
        self.preprocess = preprocess
        self.timeout = timeout
        self.accepts_file = accepts_file
        self.predict_batch = predict_batch
        self.contract = contract or Contract()
        #: Gathers concurrent requests into predict_batch calls; set by `enable_batching`.
        self.batcher: Batcher | None = None
        self._rows = False  # whether the batcher's items are the model template's rows
        # A prediction that overruns its timeout keeps its thread; spare threads keep serving.
        self._pool = Pool("kiln-predict")

    def enable_batching(self, max_size: int, max_latency: float, *, rows: bool = False) -> None:
        """Gather requests into predict_batch calls of at most MAX_SIZE, waiting MAX_LATENCY s.

        ROWS: predict_batch is the model template's, over the rows of every request at once.
        """
        if self.predict_batch is None:
            return
        call = rows_call(self.predict_batch) if rows else self.predict_batch
        self.batcher = Batcher(call, max_size, max_latency, self.timeout)
        self._rows = rows

    def run(self, args: list[Any]) -> Any:
        """preprocess(*args) then predict(...); raises FutureTimeout after predict.timeout."""
        if self.batcher is not None:
            if self.preprocess is not None:
                args = _spread(call_bounded(self._pool, self.preprocess, tuple(args),
                                            self.timeout))
            if not self._rows:
                return self.batcher.submit(item_of(args))
            rows = _rows_of(args)
            if rows is not None:
                return self.batcher.submit(rows)
            # Input the batcher does not take (split orient, objects): predict alone, on the
            # arguments preprocess has already given.
            return call_bounded(self._pool, self.predict, tuple(args), self.timeout)
        return call_bounded(self._pool, self._call, (args,), self.timeout)

    def run_loaded(self, loaded: dict[str, Any]) -> Any:
        """preprocess(**loaded) then predict(...), for an input PredictInput loaded."""
        if self.batcher is not None:
            if self.preprocess is not None:
                loaded = call_bounded(self._pool, self._prepare_loaded, (loaded,), self.timeout)
            return self.batcher.submit(loaded)
        return call_bounded(self._pool, self._call_loaded, (loaded,), self.timeout)

    def _prepare_loaded(self, loaded: dict[str, Any]) -> Any:
        """What predict would get after preprocess: the dict it spreads, or the one value."""
        assert self.preprocess is not None
        return self.preprocess(**loaded)

    def run_rows(self, rows: list[Any]) -> Any:
        """One prediction per row (a list, or the array predict_batch answers).

        Rows are PredictInput's loaded fields when the service declares it, else the inputs
        as given: predict_batch(rows) when defined, else predict(row) for each row.
        """
        return call_bounded(self._pool, self._call_rows, (rows,), self.timeout)

    def _call(self, args: list[Any]) -> Any:
        if self.preprocess is not None:
            args = _spread(self.preprocess(*args))
        return self.predict(*args)

    def _call_loaded(self, loaded: dict[str, Any]) -> Any:
        if self.preprocess is not None:
            prepared = self.preprocess(**loaded)
            if isinstance(prepared, dict):
                return self.predict(**prepared)
            return self.predict(prepared)
        return self.predict(**loaded)

    def _call_rows(self, rows: list[Any]) -> Any:
        if self.predict_batch is not None:
            if self.preprocess is not None:  # predict_batch gets what predict would get
                rows = [self._prepare_loaded(row) if self.contract.input is not None
                        else item_of(_spread(self.preprocess(row))) for row in rows]
            return call_batch(self.predict_batch, rows)
        one = self._call_loaded if self.contract.input is not None else (
            lambda row: self._call([row]))
        answers = []
        for row in rows:
            answer = one(row)
            answers.append(list(answer) if isinstance(answer, Iterator) else answer)
        return answers


def _spread(prepared: Any) -> list[Any]:
    """predict's arguments from what preprocess answered: a tuple spreads, else one argument."""
    return list(prepared) if isinstance(prepared, tuple) else [prepared]


def _rows_of(args: list[Any]) -> list[Any] | None:
    """The rows predict(*ARGS) gives the model template: lists of values, or numbers as one
    row; None for anything else (split orient, objects), which goes unbatched."""
    if args and all(isinstance(a, (list, tuple)) for a in args):
        return args
    if args and all(isinstance(a, (int, float, str)) and not isinstance(a, bool) for a in args):
        return [list(args)]
    return None


def contract_of(app: Flask) -> Contract:
    """The predict contract of the service APP serves (none when its code did not import)."""
    predictor: Predictor | None = app.extensions["kiln"].predictor
    return predictor.contract if predictor is not None else Contract()


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


def operations(app: Flask) -> dict[str, dict[str, Any]]:
    """The predict route's OpenAPI operations, with PredictInput, its example and PredictOutput."""
    contract = contract_of(app)
    if contract.input is None and contract.output is None:
        return OPERATIONS
    found = copy.deepcopy(OPERATIONS)
    media = found["post"]["requestBody"]["content"]["application/json"]
    media["schema"] = contract.body_schema(BODY)
    example = contract.example()
    if example is not None:
        # Swagger UI's "Try it out" starts from the media type's example.
        media["example"] = {"input": example}
    answer = found["post"]["responses"]["200"]["content"]["application/json"]
    answer["schema"] = contract.answer_schema(answer["schema"])
    return found


@builtin.post(PREDICT)
@builtin.post(PREDICT + "/")
@documented(operations)
def predict() -> Any:
    kiln = current_app.extensions["kiln"]
    if not kiln.health.serving(wait=kiln.predictor.timeout if kiln.predictor else 0):
        return error(503, f"not ready: {kiln.health.reason()}")
    now = current()
    body = now.request.get_json()
    if not isinstance(body, dict) or "input" not in body:
        return error(400, 'body must be a JSON object with the key "input", e.g. {"input": [1, 2]}')
    value = body["input"]
    predictor: Predictor = kiln.predictor
    _arrived(now)
    if predictor.contract.input is not None:
        try:
            loaded = predictor.contract.load(value)
        except InputError as err:
            return error(400, str(err))
        return _answer(predictor, predictor.run_loaded, loaded, [], now.id)
    paths: list[str] = []
    if predictor.accepts_file:
        try:
            value = _decode_files(value, paths)
        except ValueError as err:
            _remove(paths)
            return error(400, str(err))
    args = value if isinstance(value, list) else [value]
    return _answer(predictor, predictor.run, args, paths, now.id)


def _answer(predictor: Predictor, run: Callable[[Any], Any], given: Any, paths: list[str],
            rid: str) -> Any:
    """Run predict on GIVEN and answer its prediction (a stream when it yields)."""
    try:
        result = run(given)
    except FutureTimeout:
        _remove(paths)
        return error(504, f"prediction took longer than predict.timeout ({predictor.timeout:g} s)")
    except InputError as err:  # the model template's input checks
        _remove(paths)
        return error(400, str(err))
    except BaseException:
        _remove(paths)
        raise
    if isinstance(result, Iterator):  # generators too
        return Response(stream_with_context(_stream(result, paths)),
                        mimetype="application/x-ndjson")
    if paths:
        _remove(paths)
    return current_app.json.response({"prediction": result, "request_id": rid})


ARRIVING = "kiln.batch.arriving"  # environ key: this request counts in its batcher's arriving


def _arriving(now: Any) -> None:
    batcher = getattr(current_app.extensions["kiln"].predictor, "batcher", None)
    if now.endpoint == ENDPOINT and batcher is not None:
        batcher.arrive()
        now.environ[ARRIVING] = batcher


def _arrived(now: Any, *_: Any) -> None:
    batcher = now.environ.pop(ARRIVING, None)
    if batcher is not None:
        batcher.arrived()


def init_app(app: Flask) -> None:
    """Serve the predict route; gather its requests into batches when service.yaml says so."""
    from runtime.serving.model import ModelPredictor

    service = app.extensions["kiln"]
    predictor: Predictor | None = service.predictor
    batching = batch_settings(service.config)
    if predictor is not None and batching is not None:
        if predictor.predict_batch is None:
            log.warning("predict.batch is set in service.yaml, but app/predict.py defines no "
                        "predict_batch(inputs): each request is predicted alone")
        rows = isinstance(getattr(predictor.predict, "__self__", None), ModelPredictor)
        predictor.enable_batching(*batching, rows=rows)
        hooks = lifecycle(app)
        hooks.started.insert(0, _arriving)
        hooks.finished.append(_arrived)
        hooks.aborted.append(_arrived)
    app.register_blueprint(builtin)
    lifecycle(app).mark(ENDPOINT, "predict")
