"""A request's life in kiln: one before, one after and one teardown hook run all of kiln's work.

Request ids, timing, the size limit, auth, body validation, the access log, metrics and
capture each need a word at the start or the end of every request. The app has one
`Lifecycle`, and the modules hand it plain functions of the request's `Current`:

- `started(current)`: observers (metrics' in-flight gauge); all run, before any gate;
- `gates(current)`: checks that may answer early (413, 401, 400, 415), in order; the first
  response stops the rest and the view;
- `finished(current, response)`: observers of the answer (access log, metrics, capture);
- `aborted(current)`: an error escaped every handler and no response went through Flask
  (gunicorn answers 500): observers that count every request hear of it here.

Observers are isolated: one that raises (a full disk under capture, say) is logged once with
the request id and neither changes the response nor stops the others, and each runs once per
request. The `Current` lives in a context variable for the request, so logging calls in user
code (and predict's pool threads, which copy the context) see the request id.
"""
from __future__ import annotations

import contextvars
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, Response, current_app, request

log = logging.getLogger("kiln.lifecycle")

REQUEST_ID_HEADER = "X-Request-ID"
VERSION_HEADER = "X-Kiln-Version"
#: Headers a caller's request id is taken from, first found wins (ODAHU sends Request-ID).
CALLER_ID_KEYS = ("HTTP_X_REQUEST_ID", "HTTP_REQUEST_ID")
#: The route label of a request that matched no route (404, 405): raw paths never become labels.
UNMATCHED = "<unmatched>"
KEY = "kiln_lifecycle"
_GOOD_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class Current:
    """The request being answered, as kiln's hooks see it: taken once, read by all."""

    __slots__ = ("answered", "endpoint", "environ", "id", "kind", "length", "method", "request",
                 "route", "start")

    def __init__(self, req: Request, kinds: dict[str, str] | None = None):
        self.request = req
        self.environ = req.environ
        self.start = time.perf_counter()
        self.id: str = caller_id(req.environ) or os.urandom(16).hex()
        rule = req.url_rule
        self.route: str = route_label(rule.rule) if rule is not None else UNMATCHED
        self.endpoint: str | None = rule.endpoint if rule is not None else None
        #: What the route is to kiln ("health", "docs", "metrics", "predict"); None for user routes.
        self.kind: str | None = (kinds or {}).get(self.endpoint or "")
        self.method: str = req.method
        self.length = declared_length(req.environ)
        self.answered = False

    def seconds(self) -> float:
        """Seconds since the request started."""
        return time.perf_counter() - self.start


def caller_id(environ: dict[str, Any]) -> str | None:
    """The caller's request id (X-Request-ID, else Request-ID) when it is a sane one."""
    for key in CALLER_ID_KEYS:
        given = environ.get(key)
        if given and _GOOD_ID.fullmatch(given):
            return str(given)
    return None


def route_label(rule: str) -> str:
    """A URL rule as metrics and logs name it: `/predict/` and `/predict` are one route."""
    return rule.rstrip("/") or "/"


def declared_length(environ: dict[str, Any]) -> int | None:
    """The body's Content-Length, None when absent or malformed."""
    try:
        return max(0, int(environ["CONTENT_LENGTH"]))
    except (KeyError, ValueError):
        return None


_current: contextvars.ContextVar[Current | None] = contextvars.ContextVar("kiln_request",
                                                                          default=None)


def current() -> Current:
    """The request being answered (taken now if kiln's hook has not run for it yet)."""
    found = _current.get()
    if found is None or found.environ is not request.environ:
        found = Current(request)
        _current.set(found)
    return found


def current_id() -> str | None:
    """The id of the request being answered in this context; None outside a request."""
    found = _current.get()
    return found.id if found is not None else None


def request_id() -> str:
    """The current request's id: the caller's X-Request-ID when sane, else a new one."""
    return current().id


class Lifecycle:
    """The per-request functions of one app, run by its three Flask hooks."""

    def __init__(self) -> None:
        self.started: list[Callable[[Current], None]] = []
        self.gates: list[Callable[[Current], Response | None]] = []
        self.finished: list[Callable[[Current, Response], None]] = []
        self.aborted: list[Callable[[Current], None]] = []
        #: endpoint -> what it is to kiln ("health", "docs", "metrics", ...), see `mark`.
        self.kinds: dict[str, str] = {}

    def mark(self, endpoint: str, kind: str) -> None:
        """Say what an endpoint is to kiln; auth, logs and metrics read it from `Current.kind`."""
        self.kinds[endpoint] = kind

    def before(self) -> Response | None:
        found = Current(request, self.kinds)
        _current.set(found)
        for observer in self.started:
            _observe(observer, found)
        for gate in self.gates:
            answer = gate(found)
            if answer is not None:
                return answer
        return None

    def after(self, response: Response) -> Response:
        found = _current.get() or current()  # set by before(), which runs first of all
        response.headers[REQUEST_ID_HEADER] = found.id
        kiln = current_app.extensions.get("kiln")  # which version answered, during a canary
        if kiln is not None:
            response.headers[VERSION_HEADER] = kiln.config.version
        if found.answered:  # the error path of a failed after-request function: heard already
            return response
        found.answered = True
        for observer in self.finished:
            _observe(observer, found, response)
        return response

    def teardown(self, exc: BaseException | None) -> None:
        found = _current.get()
        # set, not reset(token): a streamed response may tear down in another context.
        _current.set(None)
        if found is not None and not found.answered:
            found.answered = True
            for observer in self.aborted:
                _observe(observer, found)


def _observe(observer: Callable[..., None], found: Current, *args: Any) -> None:
    """Run one observer; its failure is logged with the request id and goes no further."""
    try:
        observer(found, *args)
    except Exception:
        log.exception("%s failed for %s %s [request_id=%s]",
                      getattr(observer, "__qualname__", observer), found.method, found.route,
                      found.id, extra={"request_id": found.id})


def lifecycle(app: Flask) -> Lifecycle:
    """The app's Lifecycle, made and hooked into Flask on first use.

    Its before hook runs first of all before_request functions and its after hook last of
    all after_request functions (Flask runs those in reverse), so the user's own hooks see
    the request id and cannot skip the access log or the X-Request-ID header.
    """
    found: Lifecycle | None = app.extensions.get(KEY)
    if found is None:
        found = app.extensions[KEY] = Lifecycle()
        app.before_request_funcs.setdefault(None, []).insert(0, found.before)
        app.after_request_funcs.setdefault(None, []).insert(0, found.after)
        app.teardown_request(found.teardown)
    return found
