"""JSON errors, the size limit and the JSON encoding every kiln response shares."""
from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable, Mapping
from typing import IO, Any, TypeVar, cast

from flask import Flask, Request, Response, current_app, request
from flask.json.provider import DefaultJSONProvider
from gunicorn.http.errors import ParseException
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


#: What a server's input raises on a body the client broke (a bad chunk size, a cut-off
#: chunk, an early end): gunicorn's parser errors, gevent's OSError, a short read's ValueError.
BODY_ERRORS = (OSError, ValueError, ParseException)
#: Bytes asked of the server's input per read when the length is not known (chunked).
READ_SIZE = 64 * 1024


class JSONRequest(Request):
    """Flask's request, saying why a JSON body could not be parsed (Flask only does in debug).

    Its `stream` reads the body once, whole, when the server ends the input (gunicorn and
    gevent set `wsgi.input_terminated`): one call for a known Content-Length, where werkzeug's
    LimitedStream reads in chunks through gunicorn's Python reader and then once more to find
    the end; a chunked body up to MAX_CONTENT_LENGTH and one byte more, so that a longer one
    answers 413 (werkzeug's stream stops at the limit and hands on the body cut short). A body
    the client broke answers 400, and so does every later read of it (the capture's).
    """

    #: Why the body could not be read, raised again by every later read.
    body_error: HTTPException | None = None

    @cached_property
    def stream(self) -> IO[bytes]:
        environ = self.environ
        limit = self.max_content_length
        if self.shallow or "wsgi.input_terminated" not in environ:
            return get_input_stream(environ, max_content_length=limit)
        if self.body_error is not None:
            raise self.body_error
        try:
            return io.BytesIO(self._read_body(environ, limit))
        except HTTPException as err:
            self.body_error = err
            raise

    @staticmethod
    def _read_body(environ: dict[str, Any], limit: int | None) -> bytes:
        length = None if "HTTP_TRANSFER_ENCODING" in environ else declared_length(environ)
        if length is not None and limit is not None and length > limit:
            raise RequestEntityTooLarge()
        source = environ["wsgi.input"]
        try:
            if length is not None:
                data = source.read(length) if length else b""
                if len(data) < length:
                    raise ClientDisconnected()
                return cast(bytes, data)
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = source.read(READ_SIZE if limit is None else min(READ_SIZE,
                                                                        limit + 1 - size))
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if limit is not None and size > limit:
                    raise RequestEntityTooLarge()
                chunks.append(chunk)
        except BODY_ERRORS as err:
            raise BadRequest(f"the request body could not be read: {err}") from err

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
        answer = error(413, "request body is larger than the limit (flask MAX_CONTENT_LENGTH)")
    else:
        headers = {k: v for k, v in err.get_headers() if k.lower() != "content-type"}
        answer = error(err.code or 500, err.description or err.name, headers)
    if getattr(request, "body_error", None) is err:
        # What is left of a body read in part cannot start the connection's next request:
        # gevent's server closes on this header (gunicorn's workers close by themselves).
        answer.headers["Connection"] = "close"
    return answer


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
