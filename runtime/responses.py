"""JSON errors, the size limit and the JSON encoding every kiln response shares."""
from __future__ import annotations

import functools
import io
import json
import json.scanner
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, cast

from flask import Flask, Request, Response, current_app, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.datastructures import Headers
from werkzeug.exceptions import BadRequest, ClientDisconnected, HTTPException, RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream

from runtime.lifecycle import Current, declared_length, lifecycle, request_id

log = logging.getLogger("kiln.app")


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, plus numpy arrays and scalars (anything with tolist()) as plain JSON."""

    sort_keys = False
    ensure_ascii = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        # json.dumps with options builds a new encoder on every call, and every response is
        # one: kiln's own options (response() asks for compact separators) use ready ones.
        if not self.sort_keys and not self.ensure_ascii:
            if not kwargs:
                return _encode(obj)
            if kwargs == _COMPACT:
                return _encode_compact(obj)
        return super().dumps(obj, **kwargs)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return super().loads(s, **kwargs) if kwargs else _loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        # Flask's, with kiln's compact encoder and a response made without werkzeug's checks
        # of headers kiln writes itself (KilnResponse.json_body): about 30k instructions less.
        app = self._app
        if (self.compact is False or (self.compact is None and app.debug)
                or self.mimetype != "application/json"
                or not issubclass(app.response_class, KilnResponse)):
            return cast(Response, super().response(*args, **kwargs))
        text = self.dumps(self._prepare_response_obj(args, kwargs), **_COMPACT)
        return app.response_class.json_body(f"{text}\n".encode())

    @staticmethod
    def default(o: Any) -> Any:
        tolist = getattr(o, "tolist", None)
        if callable(tolist):
            return tolist()
        if isinstance(o, (set, frozenset)):
            return list(o)
        return DefaultJSONProvider.default(o)


def _ready_encoder(**options: Any) -> Callable[[Any], str]:
    """`json.JSONEncoder(**options).encode`, less what it works out again on every call.

    JSONEncoder.encode builds its C encoder and a float-formatting closure for every value
    it encodes, about 10k instructions; here the C encoder's settings are taken once (its
    `markers`, for circular references, stay one dict per call).
    """
    encoder = json.JSONEncoder(default=JSONProvider.default, ensure_ascii=False, **options)
    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    if make is None:  # not CPython
        return encoder.encode
    settings = (encoder.default, json.encoder.encode_basestring, None, encoder.key_separator,
                encoder.item_separator, False, False, True)

    def encode(obj: Any) -> str:
        return "".join(make({}, *settings)(obj, 0))

    return encode


_COMPACT = {"separators": (",", ":")}
_encode = _ready_encoder()
_encode_compact = _ready_encoder(**_COMPACT)
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _loads(text: str | bytes) -> Any:
    """`json.loads(text)`, scanning a body that starts with { or [ at once.

    json.loads works out the encoding of bytes and skips white space with regular
    expressions, about 14k instructions for a short body. A body that opens an object or
    array (as JSON bodies do) is UTF-8 and has no white space before it; anything else, and
    anything wrong, goes to json.loads, which raises its own error.
    """
    if isinstance(text, (bytes, bytearray)):
        if text[:1] not in (b"{", b"[") or text[1:2] == b"\x00":  # UTF-16/32 have zero bytes
            return json.loads(text)
        text = text.decode("utf-8", "surrogatepass")
    elif text[:1] not in ("{", "["):
        return json.loads(text)
    try:
        value, end = _scan(text, 0)
    except (StopIteration, ValueError):
        return json.loads(text)
    if end != len(text) and text[end:].strip(" \t\n\r"):
        return json.loads(text)  # "Extra data"
    return value


class JSONRequest(Request):
    """Flask's request, saying why a JSON body could not be parsed (Flask only does in debug).

    It also reads a body that gunicorn ends at its Content-Length in one call. gunicorn sets
    `wsgi.input_terminated`, and werkzeug then wraps the input in a LimitedStream up to
    MAX_CONTENT_LENGTH and reads it 64 KiB at a time, about 40k instructions per request,
    to stop at the limit; a Content-Length under the limit already says the body stops
    before it. The bytes, the errors (413, 400 when the connection fails) and what is left to
    read from `request.stream` (nothing) are werkzeug's; anything else goes werkzeug's way.
    """

    def get_data(self, cache: bool = True, as_text: bool = False,  # type: ignore[override]
                 parse_form_data: bool = False) -> bytes | str:
        environ = self.environ
        declared = declared_length(environ)
        limit = self.max_content_length
        if (limit is None or not environ.get("wsgi.input_terminated")
                or declared is None or declared > limit
                or "HTTP_TRANSFER_ENCODING" in environ or parse_form_data or self.shallow
                or "stream" in self.__dict__ or getattr(self, "_cached_data", None) is not None):
            return super().get_data(cache, as_text, parse_form_data)  # type: ignore[call-overload, no-any-return]
        try:
            data = environ["wsgi.input"].read()
        except (OSError, ValueError) as err:  # as LimitedStream's on_disconnect
            raise ClientDisconnected() from err
        if len(data) > limit:  # a server that ran past the Content-Length: werkzeug's cut
            stream = self.__dict__["stream"] = LimitedStream(io.BytesIO(data), limit, is_max=True)
            data = stream.read()
        if cache:
            self._cached_data = data
        return data.decode(errors="replace") if as_text else data

    @property
    def is_json(self) -> bool:
        # werkzeug parses the Content-Type header with its options; the usual one needs none.
        return (self.environ.get("CONTENT_TYPE") == "application/json"
                or super().is_json)

    def close(self) -> None:
        # werkzeug closes the files of a parsed form; without one there is nothing to close.
        if self.__dict__.get("files"):
            super().close()

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if e is None:
            return super().on_json_loading_failed(e)
        raise BadRequest(f"malformed JSON body: {e}") from e


class KilnResponse(Response):
    """Flask's response, handing a plain body to the server without copying its headers.

    werkzeug copies the headers into a new Headers object and wraps the body in a closing
    iterator for every response, about 45k instructions, to fix Location headers, bodies
    that must be empty and unknown lengths. A 2xx answer to anything but HEAD, whose body is
    a list of bytes with nothing to call on close and no Location header, needs none of it:
    the headers go as they are (with a Content-Length worked out as werkzeug would) and the
    body as a list. Anything else goes werkzeug's way.
    """

    _json_is_werkzeugs: ClassVar[bool]  # per class, set by _checked_json

    @classmethod
    def json_body(cls, body: bytes) -> KilnResponse:
        """`cls(body, mimetype="application/json")`, built without werkzeug's checks.

        werkzeug's constructor checks each header's name and value, works the content type
        out of the mimetype and the status line out of the status (about 25k instructions);
        here the two headers and the status are known. The result is the same object, as
        `_same_as_werkzeug` checks once per class before the first use.
        """
        if not cls._checked_json():
            return cls(body, mimetype="application/json")
        return cls._built_json(body)

    @classmethod
    def _built_json(cls, body: bytes) -> KilnResponse:
        response = cls.__new__(cls)
        headers = Headers()
        headers._list = [("Content-Type", "application/json"),  # type: ignore[attr-defined]
                         ("Content-Length", str(len(body)))]
        attrs = vars(response)
        attrs["headers"] = headers
        attrs["_status"] = "200 OK"
        attrs["_status_code"] = 200
        attrs["direct_passthrough"] = False
        attrs["_on_close"] = []
        attrs["response"] = [body]
        return response

    @classmethod
    def _checked_json(cls) -> bool:
        same = cls.__dict__.get("_json_is_werkzeugs")
        if same is None:
            body = b'{"checked":[1]}\n'
            same = (cls.default_status == 200 and cls.automatically_set_content_length
                    and _same_as_werkzeug(cls._built_json(body),
                                          cls(body, mimetype="application/json")))
            cls._json_is_werkzeugs = same
        return same  # type: ignore[no-any-return]

    def get_wsgi_response(self, environ: dict[str, Any]) -> tuple[Any, str, list[tuple[str, str]]]:
        body = self.response
        status = self.status_code
        if (type(body) is not list or self._on_close or self.direct_passthrough
                or not 200 <= status < 300 or status == 204
                or environ["REQUEST_METHOD"] == "HEAD"):
            return super().get_wsgi_response(environ)
        for chunk in body:
            if type(chunk) is not bytes:
                return super().get_wsgi_response(environ)
        headers = self.headers.to_wsgi_list()
        length = None
        for key, value in headers:
            name = key.lower()
            if name == "content-length":
                length = value
            elif name == "location" or name == "content-location":
                return super().get_wsgi_response(environ)
        if length is None and self.automatically_set_content_length:
            headers.append(("Content-Length", str(sum(map(len, body)))))
        return list(body), self.status, headers


def _same_as_werkzeug(ours: Response, theirs: Response) -> bool:
    """Whether two responses hold the same attributes, headers included."""
    mine, other = dict(vars(ours)), dict(vars(theirs))
    return (vars(mine.pop("headers")) == vars(other.pop("headers"))
            and type(ours.headers) is type(theirs.headers) and mine == other)


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
    app.response_class = KilnResponse
    app.json = JSONProvider(app)
    lifecycle(app).gates.append(functools.partial(_size_limit, app.config))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unhandled)
