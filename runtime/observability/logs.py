"""Logs: one line per request, gunicorn's own lines and the user's `logging` calls, all alike.

Every line is one JSON object (`KILN_LOG_FORMAT=text` for people) with the time, level, logger,
message, the worker's pid and, inside a request, its request id. The id lives in a context
variable (runtime/serving/lifecycle.py) that predict's pool threads inherit (runtime/serving/timeouts.py copies
the context), so a `logging.getLogger(__name__).info(...)` in user code carries it without any
effort.

gunicorn applies `logconfig(...)` through its `logconfig_dict` setting, in the master before
the workers fork, so its own error log and every worker share one handler and one format.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response
from gunicorn.glogging import Logger as GunicornLoggerBase

from runtime.errors import ConfigError
from runtime.serving.lifecycle import Current, current_id, lifecycle
from runtime.serving.responses import JSONProvider

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


#: The keys every JSON line starts with; a record's `kiln` fields never replace them.
BASE_KEYS = frozenset(("time", "level", "logger", "message", "pid", "request_id"))


def _loggable(o: Any) -> Any:
    """What the responses would send for `o` (numpy arrays as lists), else its str()."""
    try:
        return JSONProvider.default(o)
    except TypeError:
        return str(o)


_second: tuple[int, str] = (0, "")


def _timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds; the part up to the second is reused within a second."""
    global _second
    seconds = int(created)
    if _second[0] != seconds:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_second[1]}.{int((created - seconds) * 1000):03d}Z"


# One encoder for every line: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False, default=_loggable).encode


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, pid, request_id, fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record.created), "level": record.levelname,
            "logger": record.name, "message": record.getMessage(), "pid": record.process,
            "request_id": getattr(record, "request_id", None) or current_id(),
        }
        fields = getattr(record, "kiln", None)
        if isinstance(fields, Mapping):  # kiln's own extra fields (the access line's)
            if fields.keys().isdisjoint(BASE_KEYS):
                line.update(fields)
            else:
                line.update((str(k), v) for k, v in fields.items() if k not in BASE_KEYS)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _encode(line)


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


def access_fields(method: str, route: str, status: int, duration_ms: float,
                  client: str | None) -> dict[str, Any]:
    """The access line's own fields."""
    return {"method": method, "route": route, "status": int(status),
            "duration_ms": round(float(duration_ms), 3), "client": client}


def _finished(current: Current, response: Response) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    duration = current.seconds() * 1000
    status = response.status_code
    # One record, handed to logging as info() would hand it, less info()'s walk up the stack
    # for the caller's file and line: an access line names its route instead.
    record = access_log.makeRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 0, "%s %s %d %.1fms",
        (current.method, current.route, status, duration), None,
        extra={"kiln": access_fields(current.method, current.route, status, duration,
                                     current.request.remote_addr), "request_id": current.id})
    access_log.handle(record)


def init_app(app: Flask, service: Any = None) -> None:
    """Log each answered request on `kiln.access` (runtime/serving/lifecycle.py times it)."""
    lifecycle(app).finished.append(_finished)
