"""kiln's JSON and response fast paths give what json, Flask and werkzeug give, errors included."""
from __future__ import annotations

import io
import json
import math
from typing import Any

import pytest
from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider
from werkzeug.test import EnvironBuilder

from runtime import responses
from runtime.responses import JSONProvider, JSONRequest, KilnResponse


class _Array:
    def tolist(self) -> list[int]:
        return [1, 2]


def _outcome(func: Any, *args: Any) -> Any:
    try:
        return ("ok", func(*args))
    except Exception as err:  # noqa: BLE001 - the error is what is compared
        return ("error", type(err), str(err))


BODIES: list[Any] = [
    b'{"input": [[5.1, 3.5, 1.4, 0.2]]}', '{"input": [1, 2]}', b"[1, 2, 3]", b"[]", b"{}",
    b'{"a": 1}  \n\t', b'{"a": 1} x', b'{"a": 1}{"b": 2}', b'{"a": }', b'{"a": 1', b"",
    b"   {}", b"1", b'"text"', b"null", b'{"a": NaN, "b": Infinity}', b'{"\xc3\xa9": "\xe2\x9c\x93"}',
    b'{"bad utf-8": "\xff"}', '{"é": 1}'.encode("utf-16"), '{"x": 1}'.encode("utf-16-le"),
    '{"x": 1}'.encode("utf-32"), b'\xef\xbb\xbf{"bom": 1}', "\ufeff{}", bytearray(b'{"b": [1]}'),
    b'{"big": 123456789012345678901234567890, "f": 1e400}', b'{"a": "\\ud800"}',
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_json_bodies_load_as_json_loads_loads_them(body: Any) -> None:
    assert _outcome(responses._loads, body) == _outcome(json.loads, body)


VALUES: list[Any] = [
    {"prediction": [0, 1], "request_id": "abc"}, [1, 2.5, None, True, "é ✓ \u2028"], "text", 3,
    math.nan, math.inf, {"array": _Array(), "set": {1}}, {1: "int key", None: "none key"},
    [[[]]], {"nested": {"deep": [{"x": -0.0}]}},
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
@pytest.mark.parametrize("options", [{}, {"separators": (",", ":")}], ids=["default", "compact"])
def test_ready_encoders_write_what_json_encoder_writes(value: Any, options: dict[str, Any]) -> None:
    expected = json.JSONEncoder(default=JSONProvider.default, ensure_ascii=False, **options)
    assert _outcome(responses._ready_encoder(**options), value) == _outcome(expected.encode, value)


def test_a_circular_value_is_refused_as_json_refuses_it() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference detected"):
        responses._encode(loop)


def test_json_body_builds_the_response_werkzeug_builds() -> None:
    body = b'{"prediction":[1]}\n'
    ours, theirs = KilnResponse.json_body(body), KilnResponse(body, mimetype="application/json")
    assert KilnResponse._json_is_werkzeugs is True
    assert responses._same_as_werkzeug(ours, theirs)
    assert ours.headers is not theirs.headers and ours._on_close is not theirs._on_close


def test_json_body_of_a_class_that_changes_the_defaults_goes_werkzeugs_way() -> None:
    class Quiet(KilnResponse):
        automatically_set_content_length = False

    answer = Quiet.json_body(b"{}\n")
    assert "Content-Length" not in answer.headers and Quiet._json_is_werkzeugs is False


def _answer(provider: type, debug: bool, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    app = Flask("kiln_test")
    app.response_class = KilnResponse
    app.json_provider_class = provider
    app.json = provider(app)
    app.debug = debug
    with app.app_context():
        answer: Response = app.json.response(*args, **kwargs)
        return type(answer), answer.status, sorted(answer.headers.items()), answer.get_data()


@pytest.mark.parametrize("debug", [False, True], ids=["compact", "debug"])
@pytest.mark.parametrize(("args", "kwargs"), [
    (({"prediction": [1, 2], "request_id": "r"},), {}), ((), {"a": 1}), ((1, 2), {}), ((), {}),
    (("é",), {}),
])
def test_json_responses_are_flasks_with_kilns_encoder(debug: bool, args: tuple[Any, ...],
                                                      kwargs: dict[str, Any]) -> None:
    class FlaskWithKilnEncoding(DefaultJSONProvider):
        sort_keys = False
        ensure_ascii = False
        default = staticmethod(JSONProvider.default)

    assert (_answer(JSONProvider, debug, *args, **kwargs)
            == _answer(FlaskWithKilnEncoding, debug, *args, **kwargs))


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "Application/JSON",
    "application/problem+json", "text/plain", "", None, "application/jsonx",
])
def test_is_json_is_werkzeugs(content_type: str | None) -> None:
    from flask import Request

    environ = EnvironBuilder(method="POST", data=b"{}").get_environ()
    environ.pop("CONTENT_TYPE", None)
    if content_type is not None:
        environ["CONTENT_TYPE"] = content_type
    assert JSONRequest(environ).is_json == Request(environ).is_json


def test_close_still_closes_the_files_of_a_parsed_form() -> None:
    environ = EnvironBuilder(method="POST", data={"f": (io.BytesIO(b"data"), "f.txt")}).get_environ()
    request = JSONRequest(environ)
    upload = request.files["f"]
    request.close()
    assert upload.stream.closed
    JSONRequest(EnvironBuilder().get_environ()).close()  # nothing parsed: nothing to close
