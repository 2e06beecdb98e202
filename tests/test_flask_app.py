"""KilnFlask answers as Flask does: hooks, signals, sessions, errors and routing, request by request."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Blueprint, Flask, after_this_request, g, request, session, signals
from werkzeug.exceptions import NotFound

from runtime.flask_app import ROUTE_CACHE, KilnFlask


def _app(cls: type[Flask], events: list[str]) -> Flask:
    """An app with a hook of every kind, on the app and on a blueprint, each writing to EVENTS."""
    app = cls("kiln_test")
    app.secret_key = "not-a-secret"
    shop = Blueprint("shop", __name__, url_prefix="/shop")

    @shop.url_value_preprocessor
    def pull(endpoint: str | None, values: dict[str, Any] | None) -> None:
        events.append(f"url-values {endpoint} {values}")
        if values and "lang" in values:
            g.lang = values.pop("lang")

    @shop.before_request
    def shop_before() -> Any:
        events.append("shop before")
        if request.args.get("stop"):
            return "stopped by a hook", 202
        return None

    @shop.after_request
    def shop_after(response: Any) -> Any:
        events.append("shop after")
        response.headers["X-Shop"] = "1"
        return response

    @shop.teardown_request
    def shop_teardown(exc: BaseException | None) -> None:
        events.append(f"shop teardown {type(exc).__name__ if exc else None}")

    @shop.get("/<lang>/items/<int:n>")
    def item(n: int) -> Any:
        @after_this_request
        def once(response: Any) -> Any:
            events.append("after this request")
            return response
        return {"n": n, "lang": g.lang, "count": session.get("count", 0)}

    @shop.post("/count")
    def count() -> Any:
        session["count"] = session.get("count", 0) + 1
        return {"count": session["count"]}

    @shop.get("/boom")
    def boom() -> Any:
        raise ValueError("boom")

    @shop.get("/gone")
    def gone() -> Any:
        raise NotFound("no such thing")

    @app.before_request
    def app_before() -> None:
        events.append(f"app before {request.endpoint}")

    @app.after_request
    def app_after(response: Any) -> Any:
        events.append(f"app after {response.status_code}")
        return response

    @app.teardown_request
    def app_teardown(exc: BaseException | None) -> None:
        events.append(f"app teardown {type(exc).__name__ if exc else None}")

    @app.teardown_appcontext
    def appctx_teardown(exc: BaseException | None) -> None:
        events.append("appcontext teardown")

    @app.errorhandler(ValueError)
    def value_error(err: ValueError) -> Any:
        events.append("handled ValueError")
        return {"error": str(err)}, 418

    @app.route("/slash/")
    def slash() -> str:
        return "slash"

    app.register_blueprint(shop)
    return app


REQUESTS = [
    ("GET", "/shop/en/items/3"),
    ("GET", "/shop/en/items/3?stop=1"),
    ("GET", "/shop/de/items/4"),
    ("POST", "/shop/count"),
    ("GET", "/shop/boom"),
    ("GET", "/shop/gone"),
    ("GET", "/nowhere"),
    ("POST", "/shop/en/items/3"),  # 405
    ("OPTIONS", "/shop/en/items/3"),  # Flask's automatic OPTIONS answer
    ("GET", "/slash"),  # a redirect to /slash/
    ("GET", "/slash/"),
]


def _session_of(cls: type[Flask], with_signals: bool) -> list[Any]:
    events: list[str] = []
    app = _app(cls, events)
    connected: list[tuple[Any, Any]] = []
    if with_signals:
        for name in ("request_started", "request_finished", "request_tearing_down",
                     "appcontext_tearing_down", "appcontext_pushed", "appcontext_popped"):
            def receiver(sender: Any, _name: str = name, **extra: Any) -> None:
                events.append(f"signal {_name} {sorted(extra)}")
            getattr(signals, name).connect(receiver, app)
            connected.append((getattr(signals, name), receiver))
    client = app.test_client()
    seen: list[Any] = []
    try:
        for _ in range(2):  # the second time through, everything KilnFlask remembers is used
            for method, path in REQUESTS:
                events.clear()
                answer = client.open(path, method=method)
                seen.append((method, path, answer.status_code, sorted(answer.headers.items()),
                             answer.data, list(events)))
    finally:
        for signal, receiver in connected:
            signal.disconnect(receiver, app)
    return seen


@pytest.mark.parametrize("with_signals", [False, True], ids=["no-signals", "signals"])
def test_every_hook_signal_session_and_error_runs_as_in_flask(with_signals: bool) -> None:
    ours = _session_of(KilnFlask, with_signals)
    theirs = _session_of(Flask, with_signals)
    for mine, expected in zip(ours, theirs, strict=True):
        assert mine == expected


def test_the_route_memory_copies_view_arguments_and_stays_bounded() -> None:
    app = KilnFlask("kiln_test")

    @app.get("/items/<int:n>")
    def item(n: int) -> Any:
        request.view_args["n"] = -1  # type: ignore[index]  # must not reach the next request
        return {"n": n}

    client = app.test_client()
    for n in range(ROUTE_CACHE + 20):  # paths come from clients
        assert client.get(f"/items/{n % 7}").json == {"n": n % 7}
        assert client.get(f"/items/{n}").json == {"n": n}
    assert len(app._routes) <= ROUTE_CACHE


def test_a_rule_added_to_the_map_later_is_matched() -> None:
    app = KilnFlask("kiln_test")
    app.add_url_rule("/<path:anything>", "catch", lambda anything: "catch-all")
    client = app.test_client()
    assert client.get("/late").text == "catch-all"
    # Flask refuses new routes once serving; a rule put into the map directly still counts.
    from werkzeug.routing import Rule
    app.url_map.add(Rule("/late", endpoint="late"))
    app.view_functions["late"] = lambda: "late rule"
    assert client.get("/late").text == "late rule"


def test_requests_share_one_null_session_until_a_secret_key_is_set() -> None:
    app = KilnFlask("kiln_test")
    opened: list[Any] = []

    @app.get("/")
    def index() -> str:
        opened.append(session._get_current_object())  # type: ignore[attr-defined]
        return "ok"

    client = app.test_client()
    client.get("/")
    client.get("/")
    assert opened[0] is opened[1] and app.session_interface.is_null_session(opened[0])
    with pytest.raises(RuntimeError, match="secret key"):
        opened[0]["x"] = 1  # as any NullSession
    app.secret_key = "now-a-secret"
    client.get("/")
    assert not app.session_interface.is_null_session(opened[2])
