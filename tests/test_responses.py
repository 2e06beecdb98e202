"""kiln's JSON: Flask's provider plus numpy values, errors that say why, the user's default."""
from __future__ import annotations

import datetime
import decimal
from typing import Any

import pytest
from flask import Flask

from runtime.serving import responses
from runtime.testing import make_app
from tests.support import SERVICES


class Vector:
    """Stands for a numpy array: anything with tolist()."""

    def tolist(self) -> list[int]:
        return [1, 2, 3]


@pytest.mark.parametrize(("value", "expected"), [
    (Vector(), "[1,2,3]"),
    ({1, 2} and frozenset([5]), "[5]"),
    (decimal.Decimal("1.5"), '"1.5"'),
    (datetime.date(2026, 12, 1), '"Tue, 01 Dec 2026 00:00:00 GMT"'),
])
def test_json_provider_writes_numpy_like_values_and_what_flask_writes(value: Any,
                                                                       expected: str) -> None:
    app = Flask("t")
    responses.init_app(app)
    with app.app_context():
        assert app.json.dumps(value, separators=(",", ":")) == expected


def test_a_default_the_user_sets_on_app_json_is_honoured() -> None:
    class Money:
        cents = 250

    app = make_app(SERVICES / "observed")
    app.json.default = lambda o: f"{o.cents / 100:.2f} EUR" if isinstance(o, Money) else (
        responses.JSONProvider.default(o))

    @app.get("/money")
    def money() -> Any:
        return {"price": Money(), "v": Vector()}

    answer = app.test_client().get("/money")
    assert answer.status_code == 200
    assert answer.json == {"price": "2.50 EUR", "v": [1, 2, 3]}


def test_malformed_json_is_a_400_that_says_why() -> None:
    answer = make_app(SERVICES / "observed").test_client().post(
        "/api/v1.0/predict", data=b'{"input": [1,', content_type="application/json")
    assert answer.status_code == 400
    assert answer.json["error"].startswith("malformed JSON body: ")
    assert answer.json["request_id"] == answer.headers["X-Request-ID"]


@pytest.mark.parametrize(("extra", "body"), [
    ({}, b'{"input": [1, 2]}'),
    ({}, b""),
    ({"wsgi.input_terminated": True}, b'{"input": [1, 2]}'),
    ({"wsgi.input_terminated": True}, b""),
    ({"wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"}, b'{"a": 1}'),
    ({"wsgi.input_terminated": True}, "x" * 70000),
])
def test_a_body_reads_as_werkzeug_reads_it(extra: dict[str, Any], body: Any) -> None:
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    data = body.encode() if isinstance(body, str) else body

    def read(request_class: type[Request]) -> tuple[bytes, Any, bytes]:
        environ = {**EnvironBuilder(method="POST", data=data,
                                    content_type="application/json").get_environ(), **extra}
        request = request_class(environ)
        request.max_content_length = 1024 * 1024
        got = request.get_data()
        return got, request.get_json(silent=True), request.stream.read()

    assert read(responses.JSONRequest) == read(Request)


def test_a_body_cut_short_is_a_client_disconnect() -> None:
    from io import BytesIO

    from werkzeug.exceptions import ClientDisconnected
    from werkzeug.test import EnvironBuilder

    environ = {**EnvironBuilder(method="POST", data=b'{"input": 1}').get_environ(),
               "wsgi.input_terminated": True, "wsgi.input": BytesIO(b'{"in')}
    with pytest.raises(ClientDisconnected):
        responses.JSONRequest(environ).get_data()


def test_a_chunked_body_over_the_limit_is_refused_not_cut_short() -> None:
    from io import BytesIO

    from werkzeug.exceptions import BadRequest, RequestEntityTooLarge
    from werkzeug.test import EnvironBuilder

    def request(body: bytes, stream: Any = None) -> Any:
        environ = {**EnvironBuilder(method="POST", data=body).get_environ(),
                   "wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked",
                   "wsgi.input": stream or BytesIO(body)}
        environ.pop("CONTENT_LENGTH", None)
        made = responses.JSONRequest(environ)
        made.max_content_length = 10
        return made

    assert request(b"0123456789").get_data() == b"0123456789"  # exactly the limit
    over = request(b"0123456789x")
    with pytest.raises(RequestEntityTooLarge):
        over.get_data()
    with pytest.raises(RequestEntityTooLarge):  # again, not what was left of the body
        over.get_data()

    class Broken(BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError("Non-hex data")

    broken = request(b"", Broken())
    with pytest.raises(BadRequest, match="the request body could not be read: Non-hex data"):
        broken.get_json(force=True)
    assert broken.body_error is not None
