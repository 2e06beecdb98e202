"""The OpenAPI operations of the routes the runtime itself serves, keyed by URL rule.

runtime/openapi.py documents a rule from this table only when the app really has that rule,
so metrics and feedback appear only in services that serve them. The trailing-slash twins of
these rules answer the same and are left out of the document.
"""
from __future__ import annotations

from typing import Any

from runtime.routes import FEEDBACK, HEALTH, METRICS, PREDICT

TAG = "kiln"

ERROR: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "What went wrong."},
        "request_id": {"type": "string", "description": "The request's X-Request-ID."},
    },
    "required": ["error", "request_id"],
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


HEALTH_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "service": {"type": "string"},
        "version": {"type": "string"},
        "reason": {"type": "string", "description": "Why the service is not ready."},
    },
    "required": ["status"],
}

def _health(name: str, summary: str, ok: str, unavailable: str | None = None
            ) -> dict[str, dict[str, Any]]:
    responses = {"200": _json(ok, HEALTH_BODY)}
    if unavailable:
        responses["503"] = _json(unavailable, HEALTH_BODY)
    return {"get": {"tags": [TAG], "summary": summary, "operationId": f"kiln_health_{name}",
                    "responses": responses}}


PREDICT_BODY: dict[str, Any] = {
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

OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    PREDICT: {"post": {
        "tags": [TAG],
        "summary": "Run the service's predict()",
        "operationId": "kiln_predict",
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": PREDICT_BODY}}},
        "responses": {
            "200": {"description": "The prediction; NDJSON lines when predict() yields.",
                    "content": {
                        "application/json": {"schema": {
                            "type": "object",
                            "properties": {"prediction": {}, "request_id": {"type": "string"}},
                            "required": ["prediction", "request_id"]}},
                        "application/x-ndjson": {"schema": {"type": "string"}}}},
            "400": _error("The body is not {\"input\": ...}, or not valid base64."),
            "413": _error("The body is larger than flask MAX_CONTENT_LENGTH."),
            "415": _error("The body is not JSON."),
            "500": _error("predict() raised an exception."),
            "503": _error("load() has not finished, or failed."),
            "504": _error("predict() took longer than predict.timeout."),
        },
    }},
    f"{HEALTH}/status": _health("status", "Readiness: ok once load() has finished",
                                "Ready.", "Loading, failed to load, or shutting down."),
    f"{HEALTH}/startup": _health("startup",
                                 "Startup probe: ok once load() has finished, never flips back",
                                 "load() has finished.", "load() is still running."),
    f"{HEALTH}/live": _health("live", "Liveness: ok while the process answers", "Alive."),
    METRICS: {"get": {
        "tags": [TAG],
        "summary": "Prometheus metrics of all workers",
        "operationId": "kiln_metrics",
        "responses": {"200": {"description": "Prometheus text format.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }},
    FEEDBACK: {"post": {
        "tags": [TAG],
        "summary": "Store feedback for the request named by the Request-ID header",
        "operationId": "kiln_feedback",
        "parameters": [{"in": "header", "name": "Request-ID", "required": False,
                        "schema": {"type": "string"},
                        "description": "The X-Request-ID of the prediction this is about."}],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": {}}}},
        "responses": {"200": {"description": "Stored."},
                      "400": _error("No Request-ID, or the body is not JSON."),
                      "default": _error("Not stored.")},
    }},
}
