"""Logs: one JSON line per request, gunicorn's lines alike, request ids on the user's log calls."""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime import logs
from runtime.errors import ConfigError
from runtime.server import check_setting
from tests.support import SERVICES, Server, wait_for


def _record(message: str = "hello %s", args: tuple[object, ...] = ("you",),
            **attrs: object) -> logging.LogRecord:
    record = logging.LogRecord("user.module", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(attrs)
    return record


@pytest.mark.parametrize(("value", "expected"), [
    ("", "json"), ("json", "json"), ("JSON", "json"), ("text", "text"), (" text ", "text"),
])
def test_log_format_reads_kiln_log_format(value: str, expected: str) -> None:
    assert logs.log_format({"KILN_LOG_FORMAT": value}) == expected


def test_log_format_refuses_unknown_values() -> None:
    with pytest.raises(ConfigError, match=r"^KILN_LOG_FORMAT: 'xml' is not allowed; allowed: json, text$"):
        logs.log_format({"KILN_LOG_FORMAT": "xml"})


def test_json_formatter_writes_one_object_with_the_request_id() -> None:
    line = logs.JSONFormatter().format(_record(request_id="rid-1", kiln={"status": 200}))
    out = json.loads(line)
    assert out["message"] == "hello you"
    assert out["request_id"] == "rid-1"
    assert out["logger"] == "user.module"
    assert out["level"] == "INFO"
    assert out["status"] == 200
    assert out["time"].endswith("Z") and len(out["time"]) == len("2026-01-01T00:00:00.000Z")


class _Array:
    """Anything with tolist(), as numpy arrays have."""

    def tolist(self) -> list[int]:
        return [1, 2]


@pytest.mark.parametrize(("message", "attrs"), [
    ('quote " backslash \\ new\nline tab\t', {}),
    ("unicode é ✓ and a \u2028 separator", {"request_id": "rid-ü"}),
    ("plain", {"request_id": None, "process": None}),
    ("fields", {"kiln": {"method": "POST", "route": '/a/"<int:x>"', "status": 200,
                         "duration_ms": 1.5, "client": None, "rows": [1, 2.5, None],
                         "nested": {"k": True}, "array": _Array(), "huge": float("inf")}}),
    ("odd ids", {"request_id": 42, "levelname": "LEVEL ✓"}),
])
def test_json_formatter_writes_what_json_dumps_would(message: str, attrs: dict[str, object]) -> None:
    record = _record(message, (), **attrs)
    expected = {"time": None, "level": record.levelname, "logger": "user.module",
                "message": message, "pid": record.process,
                "request_id": attrs.get("request_id"), **dict(attrs.get("kiln") or {})}
    if "array" in expected:
        expected["array"] = [1, 2]
    line = logs.JSONFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    out["time"] = None
    assert json.dumps(out, sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_access_records_are_what_make_record_would_make() -> None:
    fields = {"method": "GET", "route": "/r", "status": 200, "duration_ms": 1.0, "client": None}
    made = logs.access_log.makeRecord(logs.ACCESS_LOGGER, logging.INFO, logs.__file__, 0, "m",
                                      (), None, extra={"kiln": fields})
    fast = logs.access_record("m", fields)
    assert vars(fast).keys() == vars(made).keys()
    for name in ("name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module",
                 "process", "processName", "thread", "threadName", "kiln", "exc_info"):
        assert getattr(fast, name) == getattr(made, name), name
    assert abs(fast.created - made.created) < 5
    assert abs(fast.relativeCreated - made.relativeCreated) < 5000
    assert fast.msecs == int((fast.created - int(fast.created)) * 1000)
    assert fast.getMessage() == "m"


def test_access_records_come_from_a_record_factory_someone_set() -> None:
    class Traced(logging.LogRecord):
        trace_id = "t-1"

    logging.setLogRecordFactory(Traced)
    try:
        record = logs.access_record("m", {"status": 200})
    finally:
        logging.setLogRecordFactory(logging.LogRecord)
    assert isinstance(record, Traced) and record.kiln == {"status": 200}


def test_json_formatter_keeps_a_traceback_inside_the_line() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = _record(exc_info=sys.exc_info())
    line = logs.JSONFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: broken" in json.loads(line)["exception"]


def test_text_formatter_shows_the_request_id() -> None:
    line = logs.TextFormatter().format(_record(request_id="rid-2"))
    assert line.endswith("INFO user.module [rid-2] hello you")


def test_request_id_filter_reads_the_current_request() -> None:
    record = _record()
    logs.RequestIdFilter().filter(record)
    assert record.request_id is None


@pytest.mark.parametrize("key", ["logconfig", "logconfig_dict", "logconfig_json", "logger_class"])
def test_logging_settings_are_not_for_users(key: str) -> None:
    with pytest.raises(ConfigError, match=f"^service.yaml: gunicorn.{key}: may not be set here: "
                                          "kiln logs JSON lines"):
        check_setting(key, "x", "service.yaml")


def _lines(server: Server) -> list[str]:
    return [line for line in server.output().splitlines() if line.strip()]


def test_every_line_is_json_and_user_log_calls_carry_the_request_id(
        serve: Callable[..., Server]) -> None:
    server = serve("observed")
    assert server.post("/log", json={"say": "from a route"},
                       headers={"X-Request-ID": "log-route-1"}).status_code == 200
    assert server.post("/api/v1.0/predict", json={"input": 21},
                       headers={"X-Request-ID": "log-predict-1"}).status_code == 200
    assert server.get("/items/7", headers={"X-Request-ID": "log-item-7"}).status_code == 200

    def seen() -> list[dict[str, object]] | None:
        parsed = [json.loads(line) for line in _lines(server)]
        ids = {entry.get("request_id") for entry in parsed if entry["logger"] == "kiln.access"}
        return parsed if {"log-route-1", "log-predict-1", "log-item-7"} <= ids else None

    assert wait_for(seen, timeout=10), server.output()
    server.stop()
    entries = [json.loads(line) for line in _lines(server)]  # every line, also at shutdown
    by = {(e["logger"], e["request_id"]): e for e in entries}
    assert by["observed.routes", "log-route-1"]["message"] == "user route says from a route"
    # predict() runs in a pool thread, and still logs with its request's id.
    assert by["observed.predict", "log-predict-1"]["message"] == "predicting 21"
    access = by["kiln.access", "log-item-7"]
    assert access["method"] == "GET"
    assert access["route"] == "/items/<int:item_id>"
    assert access["status"] == 200
    assert isinstance(access["duration_ms"], float)
    assert access["client"] == "127.0.0.1"
    assert any(e["logger"] == "gunicorn.error" and str(e["message"]).startswith("Starting gunicorn")
               for e in entries)
    # One line per request: gunicorn's own access log stays off.
    assert not [e for e in entries if e["logger"] == "gunicorn.access"]


def test_text_format_for_people(serve: Callable[..., Server]) -> None:
    server = serve("observed", env={"KILN_LOG_FORMAT": "text"})
    server.post("/log", json={"say": "plain"}, headers={"X-Request-ID": "text-1"})
    line = wait_for(lambda: next((x for x in _lines(server) if "user route says plain" in x), None),
                    timeout=10)
    assert line is not None, server.output()
    assert " INFO observed.routes [text-1] user route says plain" in line
    assert not line.startswith("{")


def test_a_bad_log_format_stops_serve(tmp_path: Path) -> None:
    server = Server(["serve", str(SERVICES / "observed")], tmp_path / "out.log",
                    env={"KILN_LOG_FORMAT": "xml"})
    assert server.proc.wait(30) == 1
    server.stop()
    assert "Error: KILN_LOG_FORMAT: 'xml' is not allowed; allowed: json, text" in server.output()


@pytest.mark.parametrize(("method", "route", "status", "duration", "client"), [
    ("POST", "/api/v1.0/predict", 200, 1.23456, "127.0.0.1"),
    ("GET", "/items/<int:n>", 404, 0.0, None),
    ("PATCH", '/odd "route" \\ ✓', 500, 12345.6789, "::1"),
    ("GET", "/r", 200, 1.0, b"10.0.0.1"),  # a server that breaks WSGI's str rule
])
def test_access_fields_write_what_the_formatter_would(method: str, route: str, status: int,
                                                     duration: float, client: Any) -> None:
    fields = logs.access_fields(method, route, status, duration, client)
    assert fields == {"method": method, "route": route, "status": status,
                      "duration_ms": round(duration, 3), "client": client}
    fast = logs.JSONFormatter().format(logs.access_record("m", fields))
    slow = logs.JSONFormatter().format(logs.access_record("m", dict(fields)))
    assert fields.json is not None and fast.split('"pid"')[1] == slow.split('"pid"')[1]


def test_access_fields_changed_by_a_filter_are_written_as_they_are_now() -> None:
    fields = logs.access_fields("GET", "/r", 200, 1.0, None)
    fields["status"] = 201
    fields.update(extra="x")
    out = json.loads(logs.JSONFormatter().format(logs.access_record("m", fields)))
    assert fields.json is None and out["status"] == 201 and out["extra"] == "x"
    again = logs.access_fields("GET", "/r", 200, 1.0, None)
    again.__init__(status=500)  # type: ignore[misc]
    assert json.loads(logs.JSONFormatter().format(logs.access_record("m", again)))["status"] == 500


def _kiln_logging(stream: Any) -> None:
    import logging.config

    config = logs.logconfig("json")
    config["handlers"]["kiln"]["stream"] = stream
    logging.config.dictConfig(config)


def test_the_access_line_is_written_as_logging_would_write_it() -> None:
    import io
    import time

    created = time.time()
    fields = logs.access_fields("POST", '/odd "route" ✓', 201, 12.3456, "::1")
    record = logs.access_record("POST /r 201 12.3ms", fields)
    record.created = created
    record.request_id = "rid-1"
    direct = logs.access_line("POST /r 201 12.3ms", "rid-1", fields.json or "", created)
    assert direct == logs.JSONFormatter().format(record)
    stream = io.StringIO()
    _kiln_logging(stream)
    try:
        assert logs.own_handler() is logging.root.handlers[0]
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})


@pytest.mark.parametrize("change", ["handler", "logger filter", "handler filter", "formatter",
                                    "record factory", "no propagation", "level", "kiln logger"])
def test_any_change_to_logging_sends_access_records_through_logging(change: str) -> None:
    import io
    import logging.config

    _kiln_logging(io.StringIO())
    factory = logging.getLogRecordFactory()
    handler = logging.root.handlers[0]
    try:
        assert logs.own_handler() is handler
        if change == "handler":
            logs.access_log.addHandler(logging.NullHandler())
        elif change == "logger filter":
            logs.access_log.addFilter(lambda record: True)
        elif change == "handler filter":
            handler.addFilter(lambda record: True)
        elif change == "formatter":
            handler.setFormatter(logs.TextFormatter())
        elif change == "record factory":
            logging.setLogRecordFactory(lambda *a, **k: logging.LogRecord(*a, **k))
        elif change == "no propagation":
            logs.access_log.propagate = False
        elif change == "level":
            handler.setLevel(logging.WARNING)
        else:
            assert logs.own_handler() is handler  # a logger between, on its own, changes nothing
            logging.getLogger("kiln").addHandler(logging.NullHandler())
        assert logs.own_handler() is None
    finally:
        logging.getLogger("kiln").handlers.clear()
        logging.setLogRecordFactory(factory)
        logs.access_log.handlers.clear()
        logs.access_log.filters.clear()
        logs.access_log.propagate = True
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})


def test_requests_log_the_same_line_either_way(tmp_path: Path) -> None:
    import io

    from runtime.testing import client

    lines = []
    for direct in (True, False):
        stream = io.StringIO()
        _kiln_logging(stream)
        try:
            if not direct:
                logging.root.handlers[0].addFilter(lambda record: True)
            client(SERVICES / "basic").get("/api/v1.0/health/live", headers={"X-Request-ID": "r-1"})
        finally:
            logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
        line = json.loads([x for x in stream.getvalue().splitlines() if "kiln.access" in x][-1])
        line["time"] = line["duration_ms"] = line["message"] = None
        lines.append(line)
    assert lines[0] == lines[1] and lines[0]["request_id"] == "r-1"
