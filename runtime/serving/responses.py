"""JSON errors, the size limit and the JSON encoding every kiln response shares."""
from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable, Mapping
from typing import IO, Any, TypeVar, cast

from flask import Flask, Request, Response, current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest, ClientDisconnected, HTTPException, RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import get_input_stream

from runtime.serving.lifecycle import Current, declared_length, lifecycle, request_id

log = logging.getLogger("kiln.app")


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, plus numpy arrays and scalars (anything with tolist()) as plain JSON.

    A `default` the user sets on `app.json` is honoured, as Flask honours it.
    """

    sort_keys = False
    ensure_ascii = False

    @staticmethod
    def default(o: Any) -> Any:
        tolist = getattr(o, "tolist", None)
        if callable(tolist):
            return tolist()
        if isinstance(o, (set, frozenset)):
            return list(o)
        return DefaultJSONProvider.default(o)


class JSONRequest(Request):
    """Flask's request, saying why a JSON body could not be parsed (Flask only does in debug).

    Its `stream` reads a body of known length in one call when the server ends the input at
    the Content-Length (gunicorn sets `wsgi.input_terminated`): werkzeug's LimitedStream reads
    it in chunks, each through gunicorn's Python reader, then once more to find its end.
    """

    @cached_property
    def stream(self) -> IO[bytes]:
        environ = self.environ
        length = declared_length(environ)
        limit = self.max_content_length
        if (self.shallow or length is None or "wsgi.input_terminated" not in environ
                or "HTTP_TRANSFER_ENCODING" in environ
                or (limit is not None and length > limit)):
            return get_input_stream(environ, max_content_length=limit)
        try:
            data = environ["wsgi.input"].read(length) if length else b""
        except (OSError, ValueError) as err:  # as LimitedStream's on_disconnect
            raise ClientDisconnected() from err
        if len(data) < length:
            raise ClientDisconnected()
        return io.BytesIO(data)

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if e is None:
            return super().on_json_loading_failed(e)
        raise BadRequest(f"malformed JSON body: {e}") from e


#: The OpenAPI schema of every kiln error body.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "What went wrong."},
        "request_id": {"type": "string", "description": "The request's X-Request-ID."},
    },
    "required": ["error", "request_id"],
}
#: The OpenAPI tag of the routes kiln serves itself.
TAG = "kiln"
#: The view attribute holding a built-in route's OpenAPI operations (runtime/docs/openapi.py).
OPERATIONS_ATTR = "kiln_openapi"
#: A requestBody extension: the body check (runtime/docs/validation.py) reads its JSON whatever
#: the Content-Type (the inference protocols' clients send none) and leaves any other to the view.
ANY_CONTENT_TYPE = "x-kiln-any-content-type"
V = TypeVar("V", bound=Callable[..., Any])


#: A built-in view's operations by method, or a function of the app that makes them (for
#: operations that depend on the service: its PredictInput, its id).
Operations = dict[str, dict[str, Any]] | Callable[[Flask], dict[str, dict[str, Any]]]


def documented(operations: Operations) -> Callable[[V], V]:
    """Give a built-in view its OpenAPI operations by method, as a user's docstring would."""
    def mark(view: V) -> V:
        setattr(view, OPERATIONS_ATTR, operations)
        return view

    return mark


def error_doc(description: str) -> dict[str, Any]:
    """An OpenAPI response whose body is a kiln error."""
    return json_doc(description, ERROR_SCHEMA)


def json_doc(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI response with a JSON body of SCHEMA."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A JSON error response `{"error", "request_id"}`."""
    response = cast(Response, current_app.json.response({"error": message,
                                                           "request_id": request_id()}))
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def _size_limit(config: Mapping[str, Any], current: Current) -> Response | None:
    limit = config.get("MAX_CONTENT_LENGTH")
    length = current.length
    if limit is not None and length is not None and length > limit:
        # Answer from the header alone, before anything reads the body.
        return error(413, f"request body of {length} bytes is larger than the limit of "
                          f"{limit} bytes (flask MAX_CONTENT_LENGTH)")
    return None


def _http_error(err: HTTPException) -> Response:
    if isinstance(err, RequestEntityTooLarge):  # a chunked body read past the limit
        return error(413, "request body is larger than the limit (flask MAX_CONTENT_LENGTH)")
    headers = {k: v for k, v in err.get_headers() if k.lower() != "content-type"}
    return error(err.code or 500, err.description or err.name, headers)


def _unhandled(err: Exception) -> Response:
    log.exception("unhandled error in %s %s [request_id=%s]", request.method, request.path,
                  request_id())
    # The traceback is in the log under this request id; the caller learns no internals.
    return error(500, "internal error: the service's log has the details under this request id")


def init_app(app: Flask) -> None:
    """Give every error a JSON body with the request id, and refuse bodies over the limit."""
    app.json_provider_class = JSONProvider
    app.request_class = JSONRequest
    app.json = JSONProvider(app)
    lifecycle(app).gates.append(functools.partial(_size_limit, app.config))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unhandled)
