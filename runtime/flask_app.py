"""KilnFlask: Flask, less what it works out again on every request.

Every request of a Flask app goes through the same layers: a URL adapter bound to the host,
the URL map's matcher, a null session, the hooks of the request's blueprints, signals and the
`request` proxy. Each is a few microseconds, together more than kiln's own features. KilnFlask
keeps what does not change between requests and reads the request context directly; anything
unusual goes the way Flask goes, and tests/test_flask_app.py compares the two ways.
"""
from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from itertools import chain
from typing import Any

from flask import Flask, Request, Response, signals
from flask.ctx import _sentinel as _SENTINEL
from flask.globals import _cv_request
from flask.sessions import NullSession, SecureCookieSessionInterface
from werkzeug.routing import MapAdapter

#: How many views and hooks KilnFlask remembers as plain functions.
SYNC_CACHE = 1024
#: How many Host headers KilnFlask remembers the URL adapter's server name for.
HOST_CACHE = 64
#: How many (path, method) pairs KilnFlask remembers the matching rule for.
ROUTE_CACHE = 256


class Sessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions; without a secret key, one null session serves every request.

    Flask makes a NullSession for each request of an app without SECRET_KEY (about 10k
    instructions); a NullSession refuses every change, so one is as good as many.
    """

    _null: NullSession | None = None

    def open_session(self, app: Flask, request: Request) -> Any:
        if not app.secret_key:
            return self.make_null_session(app)
        return super().open_session(app, request)

    def make_null_session(self, app: Flask) -> NullSession:
        if self._null is None:
            self._null = self.null_session_class()
        return self._null


class KilnFlask(Flask):
    """Flask, remembering what it works out again on every request.

    - Flask's `ensure_sync` asks `inspect.iscoroutinefunction` of every hook and view on every
      request, a few microseconds each. The answer is kept per function object, for at most
      SYNC_CACHE of them: a MethodView hands over a new bound method on every request.
    - `create_url_adapter` reads the host twice and IDNA-encodes it (werkzeug's
      `bind_to_environ`), about 30k instructions per request. The adapter's host part is kept
      per Host header (at most HOST_CACHE of them); the path, method and query are the
      request's own. Anything unusual (SERVER_NAME, trusted hosts, host or
      subdomain matching, an Upgrade header) goes the way Flask goes.
    - The adapter remembers which rule each path and method matched (`_Adapter`), and
      requests share one null session (`Sessions`).
    - The dispatch methods below are Flask 3.1's, reading the request context from its
      context variable rather than through the `request` and `request_ctx` proxies (five
      lookups of a few microseconds each) and sending a signal only when it has receivers.
    """

    session_interface = Sessions()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sync: dict[Callable[..., Any], bool] = {}
        # (scheme, Host header, SERVER_NAME, SERVER_PORT) -> (request.host, adapter's server name)
        self._hosts: dict[tuple[Any, ...], tuple[str, str]] = {}
        # (path, method, websocket, subdomain, return_rule) -> what werkzeug's match returned
        self._routes: dict[tuple[Any, ...], tuple[Any, dict[str, Any]]] = {}

    def create_url_adapter(self, request: Request | None) -> MapAdapter | None:
        if (request is None or request.trusted_hosts is not None
                or self.config["SERVER_NAME"] is not None
                or self.config.get("TRUSTED_HOSTS") is not None
                or self.url_map.host_matching or self.subdomain_matching
                or "HTTP_UPGRADE" in request.environ):  # a websocket upgrade changes the scheme
            return super().create_url_adapter(request)
        environ = request.environ
        key = (environ["wsgi.url_scheme"], environ.get("HTTP_HOST"), environ.get("SERVER_NAME"),
               environ.get("SERVER_PORT"))
        known = self._hosts.get(key)
        if known is None:
            adapter = super().create_url_adapter(request)
            if adapter is not None:
                if len(self._hosts) >= HOST_CACHE:
                    self._hosts.clear()  # Host headers come from clients: keep a few
                self._hosts[key] = (request.host, adapter.server_name)
            return adapter
        request.host = known[0]  # type: ignore[misc]  # as Flask 3.1 does, from the same header
        # The arguments werkzeug's Map.bind would pass, once the host part is known.
        script_name = _wsgi_str(environ.get("SCRIPT_NAME"))
        path_info = _wsgi_str(environ.get("PATH_INFO"))
        adapter = _Adapter(self.url_map, known[1], "/" if script_name is None else script_name,
                           self.url_map.default_subdomain or "", key[0],
                           "/" if path_info is None else path_info, environ["REQUEST_METHOD"],
                           _wsgi_str(environ.get("QUERY_STRING")))
        adapter.routes = self._routes
        return adapter

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            if self._sync[func]:
                return func
        except (KeyError, TypeError):  # not seen yet, or unhashable
            plain = not inspect.iscoroutinefunction(func)
            if len(self._sync) < SYNC_CACHE:
                try:
                    self._sync[func] = plain
                except TypeError:
                    pass
            if plain:
                return func
        return super().ensure_sync(func)

    # -- Flask 3.1's dispatch, without the proxies and the signals nobody listens to --------

    def full_dispatch_request(self) -> Response:
        self._got_first_request = True
        try:
            if signals.request_started.receivers:
                signals.request_started.send(self, _async_wrapper=self.ensure_sync)
            rv = self.preprocess_request()
            if rv is None:
                rv = self.dispatch_request()
        except Exception as e:  # noqa: BLE001 - as Flask: handled, or raised again, there
            rv = self.handle_user_exception(e)
        return self.finalize_request(rv)

    def finalize_request(self, rv: Any, from_error_handler: bool = False) -> Response:
        response = self.make_response(rv)
        try:
            response = self.process_response(response)
            if signals.request_finished.receivers:
                signals.request_finished.send(self, _async_wrapper=self.ensure_sync,
                                              response=response)
        except Exception:
            if not from_error_handler:
                raise
            self.logger.exception(
                "Request finalizing failed with an error while handling an error")
        return response

    def preprocess_request(self) -> Any:
        req = _cv_request.get().request
        names = (None, *reversed(req.blueprints))
        for name in names:
            if name in self.url_value_preprocessors:
                for url_func in self.url_value_preprocessors[name]:
                    url_func(req.endpoint, req.view_args)
        for name in names:
            if name in self.before_request_funcs:
                for before_func in self.before_request_funcs[name]:
                    rv = self.ensure_sync(before_func)()
                    if rv is not None:
                        return rv
        return None

    def dispatch_request(self) -> Any:
        req = _cv_request.get().request
        if req.routing_exception is not None:
            self.raise_routing_exception(req)
        rule = req.url_rule
        if getattr(rule, "provide_automatic_options", False) and req.method == "OPTIONS":
            return self.make_default_options_response()
        return self.ensure_sync(self.view_functions[rule.endpoint])(  # type: ignore[union-attr]
            **req.view_args)  # type: ignore[arg-type]

    def process_response(self, response: Response) -> Response:
        ctx = _cv_request.get()
        for func in ctx._after_request_functions:
            response = self.ensure_sync(func)(response)
        for name in chain(ctx.request.blueprints, (None,)):
            if name in self.after_request_funcs:
                for func in reversed(self.after_request_funcs[name]):
                    response = self.ensure_sync(func)(response)
        if not self.session_interface.is_null_session(ctx._session):
            self.session_interface.save_session(self, ctx._session, response)  # type: ignore[arg-type]
        return response

    def do_teardown_request(self, exc: BaseException | None = _SENTINEL) -> None:  # type: ignore[assignment]
        if exc is _SENTINEL:
            exc = sys.exc_info()[1]
        for name in chain(_cv_request.get().request.blueprints, (None,)):
            if name in self.teardown_request_funcs:
                for func in reversed(self.teardown_request_funcs[name]):
                    self.ensure_sync(func)(exc)
        if signals.request_tearing_down.receivers:
            signals.request_tearing_down.send(self, _async_wrapper=self.ensure_sync, exc=exc)

    def do_teardown_appcontext(self, exc: BaseException | None = _SENTINEL) -> None:  # type: ignore[assignment]
        if exc is _SENTINEL:
            exc = sys.exc_info()[1]
        for func in reversed(self.teardown_appcontext_funcs):
            self.ensure_sync(func)(exc)
        if signals.appcontext_tearing_down.receivers:
            signals.appcontext_tearing_down.send(self, _async_wrapper=self.ensure_sync, exc=exc)


class _Adapter(MapAdapter):
    """werkzeug's URL adapter, remembering the rule each (path, method) matched.

    werkzeug's matcher walks its state machine for every request, about 30k instructions;
    the rules do not change once requests are served (Flask refuses new routes then, and a
    rule added to the map anyway empties the memory). Only matches are kept: a redirect, a
    404 or a 405 is raised by werkzeug every time. The view arguments are copied for each
    request.
    """

    routes: dict[tuple[Any, ...], tuple[Any, dict[str, Any]]]

    def match(self, path_info: str | None = None, method: str | None = None,  # type: ignore[override]
              return_rule: bool = False, query_args: Any = None,
              websocket: bool | None = None) -> tuple[Any, dict[str, Any]]:
        if path_info is not None or method is not None or websocket is not None:
            return super().match(path_info, method, return_rule,  # type: ignore[call-overload, no-any-return]
                                 query_args, websocket)
        routes = self.routes
        if getattr(self.map, "_remap", True):  # rules added since the last match
            routes.clear()
        key = (self.path_info, self.default_method, self.websocket, self.subdomain, return_rule)
        known = routes.get(key)
        if known is not None:
            return known[0], dict(known[1])
        found = super().match(None, None, return_rule, query_args)  # type: ignore[call-overload]
        if len(routes) >= ROUTE_CACHE:
            routes.clear()  # paths come from clients: keep a few
        routes[key] = (found[0], dict(found[1]))
        return found


def _wsgi_str(value: str | None) -> str | None:
    """A WSGI environ string as werkzeug decodes it (latin-1 bytes read as UTF-8)."""
    if value is None or value.isascii():
        return value
    return value.encode("latin1").decode(errors="replace")
