"""A request's life in kiln: one before, one after and one teardown hook run all of kiln's work.

Request ids, timing, the size limit, auth, body validation, the access log, metrics and
capture each need a word at the start or the end of every request. Registered as separate
Flask hooks they cost more than the work itself: Flask checks each hook for a coroutine on
every call, and each `request.x` or `g.x` goes through a context-local proxy. So the app has
one `Lifecycle`, and the modules hand it plain functions of the request's `Current`:

- `started(current)`: observers (metrics' in-flight gauge); all run, before any gate;
- `gates(current)`: checks that may answer early (413, 401, 400, 415), in order; the first
  response stops the rest and the view;
- `finished(current, response)`: observers of the answer (access log, metrics, capture);
- `aborted(current)`: an error escaped every handler and no response went through Flask
  (gunicorn answers 500): observers that count every request hear of it here.

The `Current` lives in a context variable for the request, so logging calls in user code
(and predict's pool threads, which copy the context) see the request id.
"""
from __future__ import annotations

import contextvars
import os
import re
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, Response, request
from werkzeug.datastructures import Headers

REQUEST_ID_HEADER = "X-Request-ID"
#: The route label of a request that matched no route (404, 405): raw paths never become labels.
UNMATCHED = "<unmatched>"
KEY = "kiln_lifecycle"
_GOOD_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class Current:
    """The request being answered, as kiln's hooks see it: taken once, read by all."""

    __slots__ = ("answered", "endpoint", "id", "length", "method", "request", "route", "start")

    def __init__(self, req: Request):
        self.request = req
        self.start = time.perf_counter()
        given = req.environ.get("HTTP_X_REQUEST_ID")
        # New ids are 32 random hex digits: os.urandom(16).hex() costs a fifth of uuid4().hex.
        self.id: str = given if given and _GOOD_ID.fullmatch(given) else os.urandom(16).hex()
        rule = req.url_rule
        self.route: str = rule.rule if rule is not None else UNMATCHED
        self.endpoint: str | None = rule.endpoint if rule is not None else None
        self.method: str = req.method
        self.length = declared_length(req.environ)
        self.answered = False

    def seconds(self) -> float:
        """Seconds since the request started."""
        return time.perf_counter() - self.start


def declared_length(environ: dict[str, Any]) -> int | None:
    """The body's Content-Length, None when absent or malformed.

    Read from the environ: werkzeug's content_length and headers.get raise and catch a
    KeyError for each header that is absent, on every request.
    """
    try:
        return max(0, int(environ["CONTENT_LENGTH"]))
    except (KeyError, ValueError):
        return None


_pid = os.getpid()


def process_id() -> int:
    """This process's pid, as an at-fork hook last saw it: no system call per request."""
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


_current: contextvars.ContextVar[Current | None] = contextvars.ContextVar("kiln_request",
                                                                          default=None)


def current() -> Current:
    """The request being answered (taken now if kiln's hook has not run for it yet)."""
    found = _current.get()
    if found is None or found.request is not request._get_current_object():  # type: ignore[attr-defined]
        found = Current(request._get_current_object())  # type: ignore[attr-defined]
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

    def before(self) -> Response | None:
        found = Current(request._get_current_object())  # type: ignore[attr-defined]
        _current.set(found)
        for observer in self.started:
            observer(found)
        for gate in self.gates:
            answer = gate(found)
            if answer is not None:
                return answer
        return None

    def after(self, response: Response) -> Response:
        found = _current.get() or current()  # set by before(), which runs first of all
        found.answered = True
        _set_header(response.headers, REQUEST_ID_HEADER, found.id)
        for observer in self.finished:
            observer(found, response)
        return response

    def teardown(self, exc: BaseException | None) -> None:
        found = _current.get()
        # set, not reset(token): a streamed response may tear down in another context.
        _current.set(None)
        if found is not None and not found.answered:
            for observer in self.aborted:
                observer(found)


def _set_header(headers: Headers, name: str, value: str) -> None:
    """`headers[name] = value` for a value known to be a clean str (no line breaks).

    werkzeug checks the value with a regular expression and replaces the header in two
    passes, about 9k instructions; a header not there yet is appended at once.
    """
    items = headers._list if type(headers) is Headers else None  # type: ignore[attr-defined]
    if items is not None and type(value) is str:
        lowered = name.lower()
        for key, _ in items:
            if key.lower() == lowered:
                break
        else:
            items.append((name, value))
            return
    headers[name] = value


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

