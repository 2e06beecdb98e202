"""Logs: one line per request, gunicorn's own lines and the user's `logging` calls, all alike.

Every line is one JSON object (`KILN_LOG_FORMAT=text` for people) with the time, level, logger,
message, the worker's pid and, inside a request, its request id. The id lives in a context
variable (runtime/lifecycle.py) that predict's pool threads inherit (runtime/bounded.py copies
the context), so a `logging.getLogger(__name__).info(...)` in user code carries it without any
effort.

gunicorn applies `logconfig(...)` through its `logconfig_dict` setting, in the master before
the workers fork, so its own error log and every worker share one handler and one format.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response
from gunicorn.glogging import Logger as GunicornLoggerBase

from runtime.errors import ConfigError
from runtime.lifecycle import Current, current_id, lifecycle, process_id
from runtime.responses import JSONProvider

FORMATS = ("json", "text")
ACCESS_LOGGER = "kiln.access"

access_log = logging.getLogger(ACCESS_LOGGER)


def log_format(env: Mapping[str, str] | None = None) -> str:
    """KILN_LOG_FORMAT: json (the default) or text; anything else is a ConfigError."""
    value = (os.environ if env is None else env).get("KILN_LOG_FORMAT", "").strip().lower()
    if value and value not in FORMATS:
        raise ConfigError(f"KILN_LOG_FORMAT: {value!r} is not allowed; allowed: {', '.join(FORMATS)}")
    return value or "json"


class RequestIdFilter(logging.Filter):
    """Give every record a `request_id` attribute (None outside a request), for any formatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_id()
        return True


_second: tuple[int, str] = (0, "")
# One encoder for every line: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False, default=lambda o: _loggable(o)).encode
_string = json.encoder.encode_basestring  # a str as JSON, non-ASCII kept (ensure_ascii=False)


def _loggable(o: Any) -> Any:
    """What the responses would send for `o` (numpy arrays as lists), else its str()."""
    try:
        return JSONProvider.default(o)
    except TypeError:
        return str(o)


def _timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds; the part up to the second is reused within a second."""
    global _second
    seconds = int(created)
    if _second[0] != seconds:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_second[1]}.{int((created - seconds) * 1000):03d}Z"


def _json(value: Any) -> str:
    """One JSON value: strings, whole numbers, finite floats and None directly, else _encode.

    The encoder's set-up costs more than the value for the short strings of a log line, so
    each line is joined from its values instead of encoding a dict.
    """
    kind = type(value)
    if kind is str:
        return _string(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    if value is None:
        return "null"
    return _encode(value)


def _dropping_json(method: Any) -> Any:
    """dict's `method`, which also drops AccessFields' written JSON (the fields change)."""
    def changed(self: AccessFields, *args: Any, **kwargs: Any) -> Any:
        self.json = None
        return method(self, *args, **kwargs)

    return changed


class AccessFields(dict):  # type: ignore[type-arg]
    """An access record's fields, with their JSON written once by the code that knows them.

    JSONFormatter uses `json` as it stands; a change to the fields through their own methods
    (a user's filter, say) drops it, and the fields are then written one by one like any others.
    """

    __slots__ = ("json",)
    json: str | None

    __init__ = _dropping_json(dict.__init__)
    __setitem__ = _dropping_json(dict.__setitem__)
    __delitem__ = _dropping_json(dict.__delitem__)
    __ior__ = _dropping_json(dict.__ior__)
    update = _dropping_json(dict.update)
    pop = _dropping_json(dict.pop)
    popitem = _dropping_json(dict.popitem)
    setdefault = _dropping_json(dict.setdefault)
    clear = _dropping_json(dict.clear)


def _head(created: float, level: str, logger: str, message: str, pid: Any, rid: Any) -> str:
    """The keys every JSON line starts with, up to the request id (the closing brace is not here)."""
    return (f'{{"time": "{_timestamp(created)}", "level": {_string(level)}, '
            f'"logger": {_string(logger)}, "message": {_string(message)}, '
            f'"pid": {pid if type(pid) is int else _json(pid)}, '
            f'"request_id": {_string(rid) if type(rid) is str else _json(rid)}')


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, pid, request_id, fields."""

    def format(self, record: logging.LogRecord) -> str:
        # Strings (most values) are escaped in place: a call of _json per value costs more.
        line = _head(record.created, record.levelname, record.name, record.getMessage(),
                     record.process, getattr(record, "request_id", None) or current_id())
        fields = getattr(record, "kiln", None)
        if fields:  # kiln's own extra fields (the access log's): never one of the keys above
            if type(fields) is AccessFields and getattr(fields, "json", None) is not None:
                line += ", " + fields.json  # type: ignore[operator]
            else:
                line += ", " + ", ".join(
                    f"{_string(str(k))}: {_string(v) if type(v) is str else _json(v)}"
                    for k, v in fields.items())
        if record.exc_info:
            line += f', "exception": {_json(self.formatException(record.exc_info))}'
        elif record.exc_text:
            line += f', "exception": {_json(record.exc_text)}'
        if record.stack_info:
            line += f', "stack": {_json(self.formatStack(record.stack_info))}'
        return line + "}"


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request id] message`, with a traceback under it when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None) or current_id()
        record.rid = f" [{rid}]" if rid else ""
        return super().formatMessage(record)


def logconfig(fmt: str = "json") -> dict[str, Any]:
    """The `logging.config.dictConfig` dict kiln gives gunicorn (setting `logconfig_dict`)."""
    formatter = JSONFormatter if fmt == "json" else TextFormatter
    handler = {"class": "logging.StreamHandler", "stream": sys.stdout, "formatter": "kiln",
               "filters": ["request_id"]}
    own = {"level": "INFO", "handlers": ["kiln"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"kiln": {"()": formatter}},
        "handlers": {"kiln": handler},
        "root": {"level": "INFO", "handlers": ["kiln"]},
        # gunicorn's loggers do not propagate; give them the same handler.
        "loggers": {"gunicorn.error": own, "gunicorn.access": own},
    }


class GunicornLogger(GunicornLoggerBase):  # type: ignore[misc]
    """gunicorn's logger, writing its access lines only when `accesslog` asks for them.

    gunicorn turns its access log on whenever `logconfig_dict` is set; kiln's own line per
    request (logger kiln.access) already says more, with the route rule and the request id.
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)


def gunicorn_settings(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The gunicorn settings that give the server kiln's log format (users cannot set them)."""
    return {"logconfig_dict": logconfig(log_format(env)), "logger_class": GunicornLogger}


#: The attributes every access record shares, taken from one real LogRecord per process.
_template: dict[str, Any] | None = None


def _forget_template() -> None:
    global _template
    _template = None


os.register_at_fork(after_in_child=_forget_template)  # its pid and process name are the parent's


def access_record(message: str, fields: dict[str, Any]) -> logging.LogRecord:
    """A kiln.access record, as `access_log.makeRecord` would make it, at a third of the cost.

    LogRecord.__init__ works out the same file, module, process and thread names for every
    request; here they come from a template made once per process, and only the time, the
    thread and the message are new. A record factory set by someone else (OpenTelemetry's
    logging instrumentation, say) is honoured: its records are made the usual way.
    """
    global _template
    if logging.getLogRecordFactory() is not logging.LogRecord:
        return access_log.makeRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, message, (), None,
                                     extra={"kiln": fields})
    if _template is None:
        _template = vars(logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, "", (),
                                           None)).copy()
    record = logging.LogRecord.__new__(logging.LogRecord)
    attrs = vars(record)
    attrs.update(_template)
    now = time.time()
    attrs["msg"] = message
    attrs["kiln"] = fields
    attrs["created"] = now
    attrs["msecs"] = (now - int(now)) * 1000 // 1
    attrs["relativeCreated"] = _template["relativeCreated"] + (now - _template["created"]) * 1000
    if logging.logThreads:
        attrs["thread"] = threading.get_ident()
        attrs["threadName"] = threading.current_thread().name
    return record


def access_fields(method: str, route: str, status: int, duration_ms: float,
                  client: str | None) -> AccessFields:
    """The access line's fields, their JSON written here at once (values of known types)."""
    rounded = round(float(duration_ms), 3)
    fields = AccessFields(method=method, route=route, status=status, duration_ms=rounded,
                          client=client)
    fields.json = access_json(method, route, status, duration_ms, client)
    return fields


def access_json(method: str, route: str, status: int, duration_ms: float,
                client: str | None) -> str:
    """The access fields as JSON members, as JSONFormatter writes them."""
    return (f'"method": {_string(method)}, "route": {_string(route)}, '
            f'"status": {int(status):d}, "duration_ms": {float.__repr__(round(float(duration_ms), 3))}, '
            f'"client": {_string(client) if type(client) is str else _json(client)}')


def own_handler() -> logging.StreamHandler | None:  # type: ignore[type-arg]
    """kiln's handler when an access record would reach it and nothing else, as logconfig() sets up.

    Then the line can be written at once: the record, Logger.handle, the handler's filter and
    format calls would give the same bytes (about 40k instructions per request). Anything
    changed (a handler, a filter, a formatter, a record factory, a level, propagation) and
    the record goes through logging as usual.
    """
    root = logging.root
    if access_log.filters or logging.getLogRecordFactory() is not logging.LogRecord:
        return None
    node: Any = access_log
    while node is not root:  # the loggers a record propagates through, as callHandlers walks
        if node.handlers or not node.propagate:
            return None
        node = node.parent
    handlers = root.handlers
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    filters = handler.filters
    if (type(handler) is not logging.StreamHandler or type(handler.formatter) is not JSONFormatter
            or handler.level > logging.INFO or len(filters) != 1
            or type(filters[0]) is not RequestIdFilter):
        return None
    return handler


def access_line(message: str, rid: str, fields_json: str, created: float) -> str:
    """The JSON line JSONFormatter writes for an access record, from its parts."""
    pid = process_id() if logging.logProcesses else None
    return f"{_head(created, 'INFO', ACCESS_LOGGER, message, pid, rid)}, {fields_json}}}"


def _finished(current: Current, response: Response) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    duration = current.seconds() * 1000
    status = response.status_code
    method, route = current.method, current.route
    client = current.request.remote_addr
    message = f"{method} {route} {status} {duration:.1f}ms"
    handler = own_handler()
    if handler is None:
        # handle() a ready record: info() would also walk the stack to find the caller.
        access_log.handle(_record(message, method, route, status, duration, client))
        return
    line = access_line(message, current.id, access_json(method, route, status, duration, client),
                       time.time())
    try:
        with handler.lock:  # type: ignore[union-attr]
            handler.stream.write(line + handler.terminator)
            handler.stream.flush()
    except RecursionError:
        raise
    except Exception:  # noqa: BLE001 - as StreamHandler.emit: said on stderr, the request goes on
        handler.handleError(_record(message, method, route, status, duration, client))


def _record(message: str, method: str, route: str, status: int, duration_ms: float,
            client: str | None) -> logging.LogRecord:
    return access_record(message, access_fields(method, route, status, duration_ms, client))


def init_app(app: Flask, service: Any = None) -> None:
    """Log each answered request on `kiln.access` (runtime/lifecycle.py times it)."""
    lifecycle(app).finished.append(_finished)
