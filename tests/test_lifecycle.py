"""The request's lifecycle: kiln's one before, after and teardown hook around the user's own."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, Response, request
from flask.views import MethodView
from werkzeug.test import EnvironBuilder

from runtime import lifecycle
from runtime.flask_app import SYNC_CACHE, KilnFlask
from runtime.testing import make_app
from tests.support import SERVICES
from tests.test_metrics import total


class Escaped(BaseException):
    """An error no handler catches (gunicorn would answer 500)."""


def test_user_hooks_see_the_request_id_and_cannot_drop_the_header() -> None:
    app = make_app(SERVICES / "observed")
    seen: dict[str, Any] = {}

    @app.before_request
    def user_before() -> None:
        seen["before"] = lifecycle.request_id()

    @app.after_request
    def user_after(response: Response) -> Response:
        seen["after"] = lifecycle.request_id()
        response.headers.pop(lifecycle.REQUEST_ID_HEADER, None)
        return response

    answer = app.test_client().get("/items/3", headers={"X-Request-ID": "given-1"})
    assert answer.status_code == 200
    assert seen == {"before": "given-1", "after": "given-1"}
    assert answer.headers[lifecycle.REQUEST_ID_HEADER] == "given-1"
    assert lifecycle.current_id() is None  # torn down with the request


def test_a_body_over_the_limit_is_refused_counted_and_has_an_id() -> None:
    app = make_app(SERVICES / "observed")
    app.config["MAX_CONTENT_LENGTH"] = 100
    client = app.test_client()
    before = total(client.get("/metrics").text, "kiln_http_requests_total", status="4xx",
                   route="/api/v1.0/predict")
    answer = client.post("/api/v1.0/predict", json={"input": "x" * 200})
    assert answer.status_code == 413
    assert "bytes is larger than the limit of 100 bytes" in answer.json["error"]
    assert answer.json["request_id"] == answer.headers[lifecycle.REQUEST_ID_HEADER]
    text = client.get("/metrics").text
    assert total(text, "kiln_http_requests_total", status="4xx",
                 route="/api/v1.0/predict") == before + 1


def test_an_error_no_handler_catches_is_counted_as_500_and_leaves_nothing_in_flight() -> None:
    app = make_app(SERVICES / "observed")

    def explode() -> Any:
        raise Escaped

    app.add_url_rule("/explode", "explode", explode)
    client = app.test_client()
    before = total(client.get("/metrics").text, "kiln_http_requests_total", route="/explode")
    with pytest.raises(Escaped):
        client.get("/explode")
    text = client.get("/metrics").text
    assert total(text, "kiln_http_requests_total", route="/explode", status="5xx") == before + 1
    assert total(text, "kiln_http_requests_in_progress") == 0


def test_ensure_sync_remembers_plain_functions_and_still_wraps_coroutines() -> None:
    app = KilnFlask("kiln_test")

    def plain() -> str:
        return "ok"

    async def coroutine() -> str:
        return "ok"

    assert app.ensure_sync(plain) is plain
    assert app.ensure_sync(plain) is plain
    try:
        wrapped = app.ensure_sync(coroutine)
    except RuntimeError as err:  # Flask without its async extra says so; it is not skipped
        assert "async" in str(err)
    else:
        assert wrapped is not coroutine


def test_ensure_sync_keeps_a_bounded_memory_of_views() -> None:
    app = KilnFlask("kiln_test")

    class Item(MethodView):
        def get(self) -> str:
            return request.path

    app.add_url_rule("/item", view_func=Item.as_view("item"))
    client = app.test_client()
    for _ in range(SYNC_CACHE + 50):  # every request hands over a new bound method
        assert client.get("/item").text == "/item"
    assert len(app._sync) <= SYNC_CACHE


ENVIRONS = [
    {},
    {"HTTP_HOST": "Example.COM:8080"},
    {"HTTP_HOST": "example.com:80"},
    {"HTTP_HOST": "bücher.example"},  # IDNA
    {"HTTP_HOST": "[::1]:5000", "QUERY_STRING": "a=1&b=%C3%A9"},
    {"wsgi.url_scheme": "https", "HTTP_HOST": "secure.example:443"},
    {"SCRIPT_NAME": "/prefix", "PATH_INFO": "/items/3"},
    {"SCRIPT_NAME": "", "PATH_INFO": ""},
    {"PATH_INFO": "/caf\xc3\xa9"},  # UTF-8 bytes as WSGI's latin-1 string
    {"HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade"},
    {"REQUEST_METHOD": "POST", "HTTP_HOST": "EXAMPLE.com"},
]


@pytest.mark.parametrize("extra", ENVIRONS, ids=lambda e: ",".join(e) or "default")
@pytest.mark.parametrize("config", [{}, {"SERVER_NAME": "example.com:8080"},
                                    {"TRUSTED_HOSTS": ["example.com"]}],
                         ids=["default", "server-name", "trusted-hosts"])
def test_url_adapter_is_the_one_flask_makes(extra: dict[str, str], config: dict[str, Any]) -> None:
    from flask import Flask

    app = KilnFlask("kiln_test")
    app.config.update(config)
    app.add_url_rule("/items/<int:n>", "item", lambda n: str(n))
    for _ in range(2):  # the first request fills the host cache, the second reads it
        environ = {**EnvironBuilder(path="/items/3").get_environ(), **extra}
        ours, theirs = app.request_class(environ), app.request_class(dict(environ))
        try:
            expected = Flask.create_url_adapter(app, theirs)
        except Exception as err:  # noqa: BLE001 - a host Flask refuses is refused alike
            with pytest.raises(type(err)):
                app.create_url_adapter(ours)
            continue
        adapter = app.create_url_adapter(ours)
        assert adapter is not None and expected is not None
        assert {k: v for k, v in vars(adapter).items() if k != "routes"} == vars(expected)
        assert ours.host == theirs.host


def test_url_adapter_remembers_a_bounded_number_of_hosts() -> None:
    from runtime.flask_app import HOST_CACHE

    app = KilnFlask("kiln_test")
    app.add_url_rule("/", "root", lambda: request.host)
    client = app.test_client()
    for n in range(HOST_CACHE + 10):  # Host headers come from clients
        assert client.get("/", headers={"Host": f"host-{n}.example"}).text == f"host-{n}.example"
    assert len(app._hosts) <= HOST_CACHE


def _answer(response_class: type, kind: str, method: str) -> tuple[Any, ...]:
    """What a WSGI server gets from a response of KIND: status, headers, body, closes seen."""
    from flask import Flask, stream_with_context

    app = Flask("kiln_test")
    app.response_class = response_class
    closed: list[str] = []

    @app.route("/r", methods=["GET", "HEAD", "POST"])
    def view() -> Any:
        if kind == "json":
            return {"prediction": [1, 2]}
        if kind == "created":
            return {"id": 1}, 201, {"Location": "/items/ü"}
        if kind == "empty":
            return "", 204
        if kind == "stream":
            return app.response_class(stream_with_context(iter(["a", "b"])))
        if kind == "on-close":
            answer = app.response_class("text")
            answer.call_on_close(lambda: closed.append("closed"))
            return answer
        if kind == "given-length":
            return "abc", 200, {"Content-Length": "3", "X-Other": "1"}
        return "missing", 404

    environ = EnvironBuilder(path="/r", method=method).get_environ()
    started: list[Any] = []
    with app.app_context():
        iterable = app.wsgi_app(environ, lambda status, headers, exc=None: started.append(
            (status, headers)))
        body = b"".join(iterable)
        getattr(iterable, "close", lambda: None)()
    return started[0][0], started[0][1], body, closed


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
@pytest.mark.parametrize("kind", ["json", "created", "empty", "stream", "on-close",
                                  "given-length", "missing"])
def test_responses_reach_the_server_as_werkzeug_sends_them(kind: str, method: str) -> None:
    from flask import Response as FlaskResponse

    from runtime.responses import KilnResponse

    assert _answer(KilnResponse, kind, method) == _answer(FlaskResponse, kind, method)


class _Broken:
    def read(self, *args: Any) -> bytes:
        raise OSError("connection reset")

    readinto = read


def _read_body(request_class: type, extra: dict[str, Any], body: bytes) -> tuple[Any, ...]:
    """What get_data gives under a gunicorn-like environ, then what is left on request.stream."""
    import io

    app = Flask("kiln_test")
    app.config["MAX_CONTENT_LENGTH"] = 64
    environ = {**EnvironBuilder(path="/", method="POST", data=body).get_environ(),
               "wsgi.input_terminated": True, **extra}
    environ["wsgi.input"] = _Broken() if extra.get("broken") else io.BytesIO(body)
    with app.test_request_context(environ_overrides=environ):
        request = request_class(environ)
        seen: list[Any] = []
        for step in (request.get_data, lambda: request.get_data(as_text=True),
                     lambda: request.stream.read(), lambda: request.get_json(silent=True)):
            try:
                seen.append(step())
            except Exception as err:  # noqa: BLE001 - the error is what is compared
                seen.append(type(err).__name__)
        return tuple(seen)


@pytest.mark.parametrize(("extra", "body"), [
    ({}, b'{"input": [1, 2]}'),
    ({}, b""),
    ({"CONTENT_LENGTH": "100"}, b"x" * 100),  # over MAX_CONTENT_LENGTH: 413 from the header
    ({"CONTENT_LENGTH": "20"}, b"short"),  # the server ends the input early
    ({"CONTENT_LENGTH": "5"}, b"x" * 70),  # a server that ends it late: cut at the limit
    ({"broken": True}, b"abc"),
    ({"CONTENT_LENGTH": " 9"}, b"123456789"),
    ({"CONTENT_LENGTH": "9" * 30}, b"123"),
    ({"HTTP_TRANSFER_ENCODING": "chunked"}, b"abc"),
], ids=["json", "empty", "over-limit", "ends-early", "ends-late", "broken", "odd-length",
        "huge-length", "chunked"])
def test_a_terminated_body_reads_as_werkzeug_reads_it(extra: dict[str, Any], body: bytes) -> None:
    from flask import Request

    from runtime.responses import JSONRequest

    assert _read_body(JSONRequest, extra, body) == _read_body(Request, extra, body)


@pytest.mark.parametrize("present", [
    [], [("Content-Type", "application/json")], [("x-request-id", "old")],
    [("X-Request-ID", "a"), ("Other", "1"), ("X-REQUEST-ID", "b")],
])
def test_the_request_id_header_is_set_as_werkzeug_sets_it(present: list[tuple[str, str]]) -> None:
    from werkzeug.datastructures import Headers

    ours, theirs = Headers(present), Headers(present)
    lifecycle._set_header(ours, "X-Request-ID", "rid-1")
    theirs["X-Request-ID"] = "rid-1"
    assert ours.to_wsgi_list() == theirs.to_wsgi_list()
