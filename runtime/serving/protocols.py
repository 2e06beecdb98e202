"""The open inference protocols over predict: Open Inference Protocol v2 (REST) and KServe v1.

The service's id is the model's name and its version the model's one version. Rows (v2: the
input tensors' rows along the first dimension; v1: the instances) are inputs, one prediction
each, all through the service's `Predictor` (runtime/serving/predict.py) under one
predict.timeout: `predict_batch(rows)` where defined (the model template's vectorised method),
else predict once per row. With PredictInput, v2 input tensors by name are its fields and each
row is loaded by it. Protocol clients (tritonclient) send no Content-Type: the bodies are read
as JSON whatever the header, and the body check lets them through (`x-kiln-any-content-type`).
These routes share predict's lifecycle: request ids, logs, metrics, auth (marked as predict,
the health ones as health) and capture.
"""
from __future__ import annotations

from typing import Any, cast

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import MethodNotAllowed

from runtime import __version__
from runtime.serving.contract import Contract, InputError
from runtime.serving.lifecycle import lifecycle
from runtime.serving.predict import Predictor, contract_of
from runtime.serving.responses import ANY_CONTENT_TYPE, TAG, documented, error, error_doc, json_doc
from runtime.serving.tensors import (
    DATATYPES,
    MAX_DIMS,
    TensorError,
    output_tensors,
    request_tensors,
    rows_of,
    split_binary,
)
from runtime.serving.timeouts import FutureTimeout

V2 = "/v2"
V2_MODEL = f"{V2}/models/<model_name>"
V2_VERSION = f"{V2_MODEL}/versions/<model_version>"
V1_MODEL = "/v1/models/<model_name>"
#: Triton's binary tensor data extension: the JSON header's length in bytes.
BINARY_HEADER = "Inference-Header-Content-Length"

routes = Blueprint("kiln_protocols", __name__)
#: Endpoints that run predict: auth treats them as predict, capture keeps them.
PREDICT_ENDPOINTS = tuple(f"{routes.name}.{name}" for name in
                          ("v2_infer", "v2_infer_version", "v1_predict"))
HEALTH_ENDPOINTS = (f"{routes.name}.v2_live", f"{routes.name}.v2_ready")
#: The metadata and model readiness routes: as predict for auth, not captured.
MODEL_ENDPOINTS = tuple(f"{routes.name}.{name}" for name in
                        ("v2_server", "v2_model", "v2_model_version", "v2_model_ready",
                         "v2_model_ready_version", "v1_model"))

TENSOR: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "shape": {"type": "array", "minItems": 1, "maxItems": MAX_DIMS,
                  "items": {"type": "integer", "minimum": 0},
                  "description": "Sizes of the dimensions; the first is the number of rows."},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "parameters": {"type": "object"},
        "data": {"type": "array", "items": {},
                 "description": "The values, flat in row-major order or nested."},
    },
}
INFER_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "minItems": 1, "items": TENSOR},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}}}},
    },
}
INFER_RESPONSE: dict[str, Any] = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": TENSOR},
    },
}
TENSOR_METADATA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                   "shape": {"type": "array", "items": {"type": "integer"}}},
}
MODEL_METADATA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": TENSOR_METADATA},
        "outputs": {"type": "array", "items": TENSOR_METADATA},
    },
}
READY: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"},
                   "live": {"type": "boolean"}, "error": {"type": "string"}},
}
V1_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["instances"],
    "properties": {"instances": {"type": "array", "items": {},
                                 "description": "The inputs, one prediction each."}},
}
V1_RESPONSE: dict[str, Any] = {
    "type": "object",
    "properties": {"predictions": {"type": "array", "items": {}}},
}
NOT_FOUND = error_doc("No model of this name (the service's id) or version.")
NOT_READY = error_doc("load() has not finished, or failed.")
BAD = error_doc("The body is not a request of this protocol, or its inputs do not fit.")
FAILED = error_doc("predict() raised an exception.")
TIMEOUT = error_doc("predict() took longer than predict.timeout.")


def _service() -> Any:
    return current_app.extensions["kiln"]


def _parameters(app: Flask, version: bool = False) -> list[dict[str, Any]]:
    config = app.extensions["kiln"].config
    found = [{"in": "path", "name": "model_name", "required": True,
              "schema": {"type": "string", "enum": [config.id]}, "example": config.id,
              "description": "The service's id."}]
    if version:
        found.append({"in": "path", "name": "model_version", "required": True,
                      "schema": {"type": "string", "enum": [config.version]},
                      "example": config.version, "description": "The service's version."})
    return found


def _get(summary: str, name: str, schema: dict[str, Any], *responses: tuple[str, Any],
         parameters: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    operation: dict[str, Any] = {"tags": [TAG], "summary": summary, "operationId": name,
                                 "responses": {"200": json_doc("OK.", schema), **dict(responses)}}
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


def _tensor_example(contract: Contract) -> list[dict[str, Any]]:
    """v2 input tensors of one row, from PredictInput's field examples (or a row of two numbers)."""
    example = contract.example()
    if contract.input is None or example is None:
        return [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]
    found = []
    for meta in contract.input_tensors():
        value = example.get(meta["name"])
        shape = [1]
        inner = value
        while isinstance(inner, list) and len(shape) < len(meta["shape"]):
            shape.append(len(inner))
            inner = inner[0] if inner else None
        if value is not None and not isinstance(inner, (dict, list)):
            found.append({"name": meta["name"], "shape": shape, "datatype": meta["datatype"],
                          "data": value if isinstance(value, list) else [value]})
    return found


def _infer_operations(app: Flask, version: bool) -> dict[str, dict[str, Any]]:
    contract = contract_of(app)
    body = {"required": True, ANY_CONTENT_TYPE: True, "content": {"application/json": {
        "schema": INFER_REQUEST, "example": {"inputs": _tensor_example(contract)}}},
        "description": "Any Content-Type (protocol clients send none). Triton's binary "
                       "tensor data extension is read too (Inference-Header-Content-Length)."}
    return {"post": {
        "tags": [TAG],
        "summary": "Open Inference Protocol v2: infer" + (" (a version)" if version else ""),
        "description": "With PredictInput, input tensors by name are its fields; otherwise "
                       "one input tensor whose rows (first dimension) are the inputs. One "
                       "prediction per row, as output tensors.",
        "operationId": "kiln_v2_infer" + ("_version" if version else ""),
        "parameters": _parameters(app, version),
        "requestBody": body,
        "responses": {"200": json_doc("The predictions as output tensors.", INFER_RESPONSE),
                      "400": BAD, "404": NOT_FOUND, "500": FAILED, "503": NOT_READY,
                      "504": TIMEOUT},
    }}


def _v1_operations(app: Flask) -> dict[str, dict[str, Any]]:
    contract = contract_of(app)
    example = contract.example() if contract.input is not None else None
    instances = [example] if example is not None else [[1, 2]]
    return {"post": {
        "tags": [TAG],
        "summary": "KServe v1: predict",
        "description": "Each instance is an input (with PredictInput, an object of its "
                       "fields); one prediction each.",
        "operationId": "kiln_v1_predict",
        "parameters": _parameters(app),
        "requestBody": {"required": True, ANY_CONTENT_TYPE: True, "content": {
            "application/json": {"schema": V1_REQUEST, "example": {"instances": instances}}}},
        "responses": {"200": json_doc("One prediction per instance.", V1_RESPONSE),
                      "400": BAD, "404": NOT_FOUND, "500": FAILED, "503": NOT_READY,
                      "504": TIMEOUT},
    }}


def _json(status: int, body: dict[str, Any]) -> Response:
    response = cast(Response, current_app.json.response(body))
    response.status_code = status
    return response


def _unknown(model_name: str, model_version: str | None) -> Response | None:
    """404 for a model name or version this service is not."""
    config = _service().config
    if model_name != config.id:
        return error(404, f"unknown model {model_name!r}: this service serves {config.id!r}")
    if model_version is not None and model_version != config.version:
        return error(404, f"unknown version {model_version!r} of model {config.id!r}: it has "
                          f"{config.version!r}")
    return None


def _unready() -> Response | None:
    kiln = _service()
    if kiln.predictor is None or not kiln.health.serving(wait=kiln.predictor.timeout):
        return error(503, f"not ready: {kiln.health.reason() or 'no predict'}")
    return None


def _predict(rows: list[Any]) -> Any:
    """One prediction per row through the service's Predictor, or the error response."""
    predictor: Predictor = _service().predictor
    contract = predictor.contract
    try:
        if contract.input is not None:
            rows = [contract.load(row, f"row {i}: input") for i, row in enumerate(rows)]
        return predictor.run_rows(rows)
    except InputError as err:
        return error(400, str(err))
    except FutureTimeout:
        return error(504, f"prediction took longer than predict.timeout "
                          f"({predictor.timeout:g} s)")


@routes.get(f"{V2}/health/live")
@documented(_get("Open Inference Protocol v2: liveness", "kiln_v2_live", READY))
def v2_live() -> Any:
    return {"live": True}


@routes.get(f"{V2}/health/ready")
@documented(_get("Open Inference Protocol v2: readiness", "kiln_v2_ready", READY,
                 ("503", NOT_READY)))
def v2_ready() -> Any:
    health = _service().health
    if not health.ready:
        return _json(503, {"ready": False, "error": f"not ready: {health.reason()}"})
    return {"ready": True}


@routes.get(V2)
@documented(_get("Open Inference Protocol v2: server metadata", "kiln_v2_server", {
    "type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                     "extensions": {"type": "array",
                                                    "items": {"type": "string"}}}}))
def v2_server() -> Any:
    return {"name": "kiln", "version": __version__, "extensions": []}


def _metadata_operations(app: Flask, version: bool) -> dict[str, dict[str, Any]]:
    return _get("Open Inference Protocol v2: model metadata", "kiln_v2_model"
                + ("_version" if version else ""), MODEL_METADATA, ("404", NOT_FOUND),
                parameters=_parameters(app, version))


def _ready_operations(app: Flask, version: bool) -> dict[str, dict[str, Any]]:
    return _get("Open Inference Protocol v2: model readiness", "kiln_v2_model_ready"
                + ("_version" if version else ""), READY, ("404", NOT_FOUND),
                ("503", NOT_READY), parameters=_parameters(app, version))


@routes.get(V2_MODEL)
@documented(lambda app: _metadata_operations(app, version=False))
def v2_model(model_name: str) -> Any:
    return _metadata(model_name, None)


@routes.get(V2_VERSION)
@documented(lambda app: _metadata_operations(app, version=True))
def v2_model_version(model_name: str, model_version: str) -> Any:
    return _metadata(model_name, model_version)


def _metadata(model_name: str, model_version: str | None) -> Any:
    unknown = _unknown(model_name, model_version)
    if unknown is not None:
        return unknown
    config = _service().config
    contract = contract_of(current_app)
    return {"name": config.id, "versions": [config.version], "platform": "kiln",
            "inputs": contract.input_tensors(), "outputs": contract.output_tensors()}


@routes.get(f"{V2_MODEL}/ready")
@documented(lambda app: _ready_operations(app, version=False))
def v2_model_ready(model_name: str) -> Any:
    return _model_ready(model_name)


@routes.get(f"{V2_VERSION}/ready")
@documented(lambda app: _ready_operations(app, version=True))
def v2_model_ready_version(model_name: str, model_version: str) -> Any:
    return _model_ready(model_name, model_version)


def _model_ready(model_name: str, model_version: str | None = None) -> Any:
    unknown = _unknown(model_name, model_version)
    if unknown is not None:
        return unknown
    kiln = _service()
    if not kiln.health.ready:
        return _json(503, {"name": kiln.config.id, "ready": False,
                           "error": f"not ready: {kiln.health.reason()}"})
    return {"name": kiln.config.id, "ready": True}


@routes.post(f"{V2_MODEL}/infer")
@documented(lambda app: _infer_operations(app, version=False))
def v2_infer(model_name: str) -> Any:
    return _infer(model_name, None)


@routes.post(f"{V2_VERSION}/infer")
@documented(lambda app: _infer_operations(app, version=True))
def v2_infer_version(model_name: str, model_version: str) -> Any:
    return _infer(model_name, model_version)


def _infer(model_name: str, model_version: str | None) -> Any:
    problem = _unknown(model_name, model_version) or _unready()
    if problem is not None:
        return problem
    kiln = _service()
    contract: Contract = kiln.predictor.contract
    try:
        header = request.headers.get(BINARY_HEADER)
        if header is not None:
            body, binary = split_binary(request.get_data(), header)
        else:
            body, binary = request.get_json(force=True), b""
        tensors = request_tensors(body, binary)
        rows = rows_of(tensors, named=contract.input is not None or len(tensors) > 1)
        wanted = _wanted(body)
    except TensorError as err:
        return error(400, str(err))
    predictions = _predict(rows)
    if isinstance(predictions, Response):
        return predictions
    outputs = output_tensors(predictions, contract.output_names())
    if wanted is not None:
        by_name = {o["name"]: o for o in outputs}
        unknown = [name for name in wanted if name not in by_name]
        if unknown:
            return error(400, f"unknown output {', '.join(unknown)}; the outputs are "
                              f"{', '.join(by_name)}")
        outputs = [by_name[name] for name in wanted]
    answer = {"model_name": kiln.config.id, "model_version": kiln.config.version,
              "outputs": outputs}
    if isinstance(body.get("id"), str):
        answer["id"] = body["id"]
    return answer


def _wanted(body: dict[str, Any]) -> list[str] | None:
    """The output names a v2 request asks for, None for all."""
    outputs = body.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise TensorError('"outputs" must be a list of {"name": ...}')
    return [o["name"] for o in outputs]


@routes.get(V1_MODEL)
@documented(lambda app: _get("KServe v1: model readiness", "kiln_v1_model", READY,
                             ("404", NOT_FOUND), ("503", NOT_READY),
                             parameters=_parameters(app)))
def v1_model(model_name: str) -> Any:
    if model_name.endswith(":predict"):  # the predict route asked with GET (ids have no ':')
        raise MethodNotAllowed(valid_methods=["POST"])
    return _model_ready(model_name)


@routes.post(f"{V1_MODEL}:predict")
@documented(_v1_operations)
def v1_predict(model_name: str) -> Any:
    problem = _unknown(model_name, None) or _unready()
    if problem is not None:
        return problem
    body = request.get_json(force=True)
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        return error(400, 'body must be a JSON object {"instances": [...]}, one input each')
    predictions = _predict(body["instances"])
    if isinstance(predictions, Response):
        return predictions
    return {"predictions": predictions}


def init_app(app: Flask) -> None:
    """Serve the v2 and v1 protocol routes beside predict."""
    app.register_blueprint(routes)
    hooks = lifecycle(app)
    for endpoint in HEALTH_ENDPOINTS:
        hooks.mark(endpoint, "health")
    for endpoint in (*PREDICT_ENDPOINTS, *MODEL_ENDPOINTS):
        hooks.mark(endpoint, "predict")
