"""The request's lifecycle: kiln's one before, after and teardown hook around the user's own."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Response

from runtime.serving import lifecycle
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


@pytest.mark.parametrize(("headers", "expected"), [
    ({"X-Request-ID": "given-1"}, "given-1"),
    ({"Request-ID": "odahu-7"}, "odahu-7"),
    ({"X-Request-ID": "x-wins", "Request-ID": "odahu-7"}, "x-wins"),
    ({"X-Request-ID": "bad id with spaces", "Request-ID": "odahu-8"}, "odahu-8"),
])
def test_the_callers_request_id_comes_from_x_request_id_or_request_id(
        headers: dict[str, str], expected: str) -> None:
    answer = make_app(SERVICES / "observed").test_client().get("/items/3", headers=headers)
    assert answer.headers[lifecycle.REQUEST_ID_HEADER] == expected


def test_an_insane_request_id_is_replaced_by_a_new_one() -> None:
    answer = make_app(SERVICES / "observed").test_client().get(
        "/items/3", headers={"X-Request-ID": "a" * 500})
    assert len(answer.headers[lifecycle.REQUEST_ID_HEADER]) == 32


@pytest.mark.parametrize(("rule", "label"), [
    ("/api/v1.0/predict", "/api/v1.0/predict"), ("/api/v1.0/predict/", "/api/v1.0/predict"),
    ("/", "/"), ("/items/<int:item_id>/", "/items/<int:item_id>"),
])
def test_route_labels_do_not_split_on_a_trailing_slash(rule: str, label: str) -> None:
    assert lifecycle.route_label(rule) == label


def test_a_failing_observer_is_logged_once_and_changes_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(SERVICES / "observed")
    hooks = lifecycle.lifecycle(app)
    calls: list[str] = []

    def broken(current: lifecycle.Current, response: Response) -> None:
        calls.append(current.id)
        raise OSError(28, "No space left on device")

    client = app.test_client()
    before = total(client.get("/metrics").text, "kiln_http_requests_total",
                   route="/api/v1.0/predict", status="2xx")
    hooks.finished.insert(0, broken)
    answer = client.post("/api/v1.0/predict", json={"input": 21},
                         headers={"X-Request-ID": "full-disk"})
    assert answer.status_code == 200
    assert answer.json["prediction"] == {"double": 42}
    assert calls == ["full-disk"]
    hooks.finished.remove(broken)
    failures = [r for r in caplog.records if r.name == "kiln.lifecycle"]
    assert len(failures) == 1 and "full-disk" in failures[0].getMessage()
    assert getattr(failures[0], "request_id", None) == "full-disk"
    text = client.get("/metrics").text
    assert total(text, "kiln_http_requests_total", route="/api/v1.0/predict",
                 status="2xx") == before + 1
    assert total(text, "kiln_http_requests_in_progress") == 0


def test_each_request_gets_its_own_converted_url_values() -> None:
    from werkzeug.routing import BaseConverter

    converted: list[str] = []

    class Letters(BaseConverter):
        def to_python(self, value: str) -> list[str]:
            converted.append(value)
            return list(value)

    app = make_app(SERVICES / "observed")
    app.url_map.converters["letters"] = Letters

    @app.get("/spell/<letters:word>")
    def spell(word: list[str]) -> Any:
        seen = list(word)
        word.append("!")  # a view that changes its argument must not change the next request's
        return {"seen": seen}

    client = app.test_client()
    answers = [client.get("/spell/abc").json["seen"] for _ in range(3)]
    assert answers == [["a", "b", "c"]] * 3
    assert converted == ["abc"] * 3
