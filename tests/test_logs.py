"""Logs: one JSON line per request, gunicorn's lines alike, request ids on the user's log calls."""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.errors import ConfigError
from runtime.observability import logs
from runtime.serving.settings import check_setting
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

