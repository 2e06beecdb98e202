"""Request/response capture and the feedback route, for feedback loops on a served model.

Opt-in: a `capture:` section in service.yaml, or KILN_CAPTURE_DIR. Each answered call of
predict or of a user route becomes one JSON line under
`<dir>/<service id>/<version>/year=YYYY/month=MM/day=DD/requests-<host>-<pid>-<n>.jsonl`.
Every process appends to files of its own with one write() per line under a lock, so
workers and threads never interleave or lose lines; a file is rotated once it passes
KILN_CAPTURE_MAX_BYTES. Credentials (Authorization, cookies, AWS signature headers) are never
written. `POST /api/v1.0/feedback` appends feedback lines beside the requests, for `kiln export`.
`kiln batch` captures each row as a predict call, with the run's `batch_id` (`batch_record`).
"""
from __future__ import annotations

import base64
import json
import mmap
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, request

from runtime.config import ServiceConfig
from runtime.errors import ConfigError
from runtime.serving import API
from runtime.serving.lifecycle import UNMATCHED, Current, lifecycle
from runtime.serving.loader import BLUEPRINT
from runtime.serving.predict import ENDPOINT as PREDICT_ENDPOINT
from runtime.serving.predict import PREDICT as PREDICT_ROUTE
from runtime.serving.protocols import PREDICT_ENDPOINTS as PROTOCOL_ENDPOINTS
from runtime.serving.responses import TAG, JSONProvider, documented, error, error_doc

FEEDBACK = f"{API}/feedback"
FEEDBACK_ENDPOINT = "kiln_feedback"
#: Endpoints whose calls are captured: predict, its inference protocol twins (v2 infer, KServe
#: v1 predict), and the service's own routes.
CAPTURED = (PREDICT_ENDPOINT, *PROTOCOL_ENDPOINTS)
#: Statuses whose request bodies are never kept: the caller was not let in.
REFUSED = frozenset((401, 403, 413))
#: How much of a streamed answer a capture line keeps.
MAX_STREAM_BYTES = 1024 * 1024
USER_BLUEPRINT = BLUEPRINT + "."
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: How far back feedback looks for the request it names.
LOOKBACK_DAYS = 7
SECRET_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie", "set-cookie",
                            "x-api-key", "x-auth-token"))
SECRET_PREFIXES = ("x-amz-",)
SECRET_PARAMS = frozenset(("token", "access_token", "api_key", "apikey", "password", "secret",
                           "signature", "sig"))


@dataclass(frozen=True)
class CaptureSettings:
    """Where and what to capture: ROOT is <dir>/<service id>/<version>."""

    root: Path
    bodies: bool
    max_bytes: int


def capture_settings(config: ServiceConfig, env: Mapping[str, str] | None = None,
                     ) -> CaptureSettings | None:
    """Capture settings: KILN_CAPTURE_DIR over service.yaml `capture.dir`; None when off."""
    env = os.environ if env is None else env
    given = env.get("KILN_CAPTURE_DIR", "")
    if not given and not config.enabled("capture"):
        return None
    base = Path(given or config.get("capture.dir")).expanduser()
    if not base.is_absolute():
        base = config.root / base
    raw = env.get("KILN_CAPTURE_MAX_BYTES", "")
    try:
        max_bytes = int(raw) if raw else DEFAULT_MAX_BYTES
    except ValueError:
        max_bytes = 0
    if max_bytes <= 0:
        raise ConfigError(f"KILN_CAPTURE_MAX_BYTES: {raw!r} must be a positive number of bytes")
    return CaptureSettings(base / config.id / config.version, config.get("capture.bodies"),
                           max_bytes)


def day_dir(root: Path, day: date) -> Path:
    """The folder of one UTC day's captures (Hive-style partitions, read by Spark and Athena)."""
    return root / f"year={day:%Y}" / f"month={day:%m}" / f"day={day:%d}"


def now() -> datetime:
    return datetime.now(timezone.utc)


def dumps(record: Mapping[str, Any]) -> bytes:
    """One compact JSON line; the first key is request_id, which `Capture.known` relies on."""
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False,
                      default=JSONProvider.default)
    return (text + "\n").encode("utf-8")


class JsonlWriter:
    """Appends lines to files of this process only, rotated by day and by size."""

    def __init__(self, root: Path, kind: str, max_bytes: int):
        self.root = root
        self.kind = kind
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._key: tuple[int, date] | None = None
        self._seq = 0
        self._size = 0
        self.path: Path | None = None

    def write(self, data: bytes, when: datetime) -> None:
        """Append DATA (whole lines) with one write() call, so no line is split or lost."""
        with self._lock:
            key = (os.getpid(), when.date())
            if self._fd is None or key != self._key:
                self._open(key, seq=0)
            elif self._size and self._size + len(data) > self.max_bytes:
                self._open(key, seq=self._seq + 1)
            assert self._fd is not None
            view = memoryview(data)
            while view:  # a regular file takes it all at once; a full disk raises
                view = view[os.write(self._fd, view):]
            self._size += len(data)

    def _open(self, key: tuple[int, date], seq: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        folder = day_dir(self.root, key[1])
        folder.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().replace("-", "_") or "host"
        while True:
            path = folder / f"{self.kind}-{host}-{key[0]}-{seq:04d}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            size = os.fstat(fd).st_size
            if size < self.max_bytes:
                break
            os.close(fd)  # a file of an earlier run with the same pid, already full
            seq += 1
        self._fd, self._key, self._seq, self._size, self.path = fd, key, seq, size, path


_writers: dict[tuple[Path, str], JsonlWriter] = {}
_writers_lock = threading.Lock()


def writer(root: Path, kind: str, max_bytes: int) -> JsonlWriter:
    """The process's one writer for ROOT and KIND, shared by the apps a hot reload builds."""
    with _writers_lock:
        found = _writers.get((root, kind))
        if found is None or found.max_bytes != max_bytes:
            found = _writers[root, kind] = JsonlWriter(root, kind, max_bytes)
        return found


def clean_headers(headers: Any) -> dict[str, str]:
    """Headers without credentials: Authorization, cookies, X-Amz-* signatures, API keys."""
    return {name: value for name, value in headers.items()
            if name.lower() not in SECRET_HEADERS and not name.lower().startswith(SECRET_PREFIXES)}


def clean_query(args: Any) -> dict[str, Any]:
    """Query parameters without credentials (presigned X-Amz-* parameters, tokens)."""
    return {name: args.getlist(name) if len(args.getlist(name)) > 1 else args.get(name)
            for name in args
            if name.lower() not in SECRET_PARAMS and not name.lower().startswith(SECRET_PREFIXES)}


def body(data: bytes, is_json: bool) -> dict[str, Any]:
    """A body as {"json": value}, else {"text": str}, else {"base64": str}; {} when empty."""
    if not data:
        return {}
    if is_json:
        try:
            return {"json": json.loads(data)}
        except ValueError:
            pass
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def batch_record(rid: str, batch_id: str, service: str, version: str, given: Any,
                 answer: dict[str, Any], status: int, seconds: float, bodies: bool,
                 ) -> dict[str, Any]:
    """The capture line of one row of `kiln batch`: a predict call's, with its `batch_id`.

    GIVEN is the row as `{"input": ...}` would carry it; ANSWER the body predict would answer.
    """
    out: dict[str, Any] = {
        "request_id": rid, "time": now().isoformat(timespec="milliseconds"),
        "service": service, "version": version, "method": "POST", "route": PREDICT_ROUTE,
        "path": PREDICT_ROUTE, "status": status, "duration_ms": round(seconds * 1000, 3),
        "client": None, "batch_id": batch_id,
        "request": {"headers": {}}, "response": {"headers": {}},
    }
    if bodies:
        out["request"]["json"] = {"input": given}
        out["response"]["json"] = answer
    return out


class Capture:
    """The capture of one service in this process: request lines, feedback lines, lookups."""

    def __init__(self, settings: CaptureSettings, service: str, version: str):
        self.settings = settings
        self.service = service
        self.version = version
        self.requests = writer(settings.root, "requests", settings.max_bytes)
        self.feedback = writer(settings.root, "feedback", settings.max_bytes)
        # Ids this process captured lately: feedback on them needs no file scan.
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._recent_lock = threading.Lock()

    def record(self, current: Current, response: Response) -> dict[str, Any]:
        """The capture line for the current request and its response."""
        request = current.request
        out: dict[str, Any] = {
            "request_id": current.id,
            "time": now().isoformat(timespec="milliseconds"),
            "service": self.service, "version": self.version,
            "method": current.method,
            "route": current.route if current.route != UNMATCHED else None,
            "path": request.path, "status": response.status_code,
            "duration_ms": round(current.seconds() * 1000, 3), "client": request.remote_addr,
        }
        req: dict[str, Any] = {"headers": clean_headers(request.headers)}
        if request.args:
            req["query"] = clean_query(request.args)
        resp: dict[str, Any] = {"headers": clean_headers(response.headers)}
        if self.settings.bodies:
            # 413: answered without reading the body; a body the client broke is not read again.
            if (response.status_code not in REFUSED
                    and getattr(request, "body_error", None) is None):
                # Protocol clients send JSON with no Content-Type.
                req.update(body(request.get_data(cache=True),
                                request.is_json or current.endpoint in PROTOCOL_ENDPOINTS))
            if response.is_streamed or response.direct_passthrough:
                resp["streamed"] = True  # the body is added as it streams: see `streamed`
            else:
                resp.update(body(response.get_data(), response.is_json))
        out["request"], out["response"] = req, resp
        return out

    def streamed(self, record: dict[str, Any], chunks: Iterable[Any]) -> Iterator[Any]:
        """Pass a streamed answer's chunks on, and write RECORD with them once it has ended.

        At most MAX_STREAM_BYTES of the answer are kept (`truncated` says when more went out);
        a stream the client left early is written with what was sent.
        """
        kept: list[bytes] = []
        size = 0
        try:
            for chunk in chunks:
                data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                if size < MAX_STREAM_BYTES:
                    kept.append(data[:MAX_STREAM_BYTES - size])
                size += len(data)
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()
            text = b"".join(kept).decode("utf-8", "replace")
            record["response"]["text"] = text
            if size > MAX_STREAM_BYTES:
                record["response"]["truncated"] = True
            self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        self.requests.write(dumps(record), now())
        with self._recent_lock:
            self._recent[record["request_id"]] = None
            if len(self._recent) > 10000:
                self._recent.popitem(last=False)

    def known(self, rid: str, today: date | None = None) -> bool:
        """Whether a request with id RID was captured in the last LOOKBACK_DAYS days, by any worker."""
        with self._recent_lock:
            if rid in self._recent:
                return True
        needle = b'{"request_id":' + json.dumps(rid, ensure_ascii=False).encode() + b","
        today = today or now().date()
        for back in range(LOOKBACK_DAYS + 1):
            folder = day_dir(self.settings.root, today - timedelta(days=back))
            if folder.is_dir() and any(_holds_line(p, needle) for p in sorted(
                    folder.glob("requests-*.jsonl"), key=_mtime, reverse=True)):
                return True
        return False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _holds_line(path: Path, start: bytes) -> bool:
    """Whether a line of PATH starts with START (a nested object may hold the same bytes)."""
    try:
        with path.open("rb") as file:
            if os.fstat(file.fileno()).st_size == 0:
                return False
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                at = data.find(start)
                while at != -1:
                    if at == 0 or data[at - 1] == 0x0A:
                        return True
                    at = data.find(start, at + 1)
    except OSError:
        return False
    return False


def _capture() -> Capture | None:
    return current_app.extensions.get("kiln_capture")  # type: ignore[no-any-return]


def _captured(endpoint: str | None) -> bool:
    return endpoint is not None and (endpoint in CAPTURED or endpoint.startswith(USER_BLUEPRINT))


def _finished(current: Current, response: Response) -> None:
    capture = _capture()
    if capture is None or not _captured(current.endpoint):
        return
    record = capture.record(current, response)
    if record["response"].get("streamed"):
        response.response = capture.streamed(record, response.response)
    else:
        capture.write(record)


@documented({"post": {
    "tags": [TAG],
    "summary": "Store feedback for the request named by the Request-ID header",
    "operationId": "kiln_feedback",
    "parameters": [{"in": "header", "name": "Request-ID", "required": False,
                    "schema": {"type": "string"},
                    "description": "The X-Request-ID of the prediction this is about."}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
    "responses": {"200": {"description": "Stored."},
                  "400": error_doc("No Request-ID, or the body is not JSON."),
                  "default": error_doc("Not stored.")},
}})
def feedback() -> Any:
    """Store any JSON as the feedback on the request named by the Request-ID header."""
    capture = _capture()
    if capture is None:
        return error(400, "feedback needs request capture: add a `capture:` section to "
                          "service.yaml or set KILN_CAPTURE_DIR")
    rid = request.headers.get("Request-ID") or request.headers.get("X-Request-ID")
    if not rid:
        return error(400, "missing Request-ID header: send the X-Request-ID of the response "
                          "you give feedback on")
    value = request.get_json()
    if not capture.known(rid):
        return error(400, f"unknown request id {rid!r}: no request with this id was captured "
                          f"in the last {LOOKBACK_DAYS} days")
    when = now()
    capture.feedback.write(dumps({"request_id": rid, "time": when.isoformat(timespec="milliseconds"),
                                  "feedback": value}), when)
    return {"registered": True, "request_id": rid}


def init_app(app: Flask, service: Any) -> None:
    """Serve the feedback route; capture requests when service.yaml or KILN_CAPTURE_DIR asks."""
    settings = capture_settings(service.config)
    capture = Capture(settings, service.config.id, service.config.version) if settings else None
    app.extensions["kiln_capture"] = capture
    app.add_url_rule(FEEDBACK, FEEDBACK_ENDPOINT, feedback, methods=["POST"])
    app.add_url_rule(FEEDBACK + "/", FEEDBACK_ENDPOINT, feedback, methods=["POST"])
    if capture is not None:
        lifecycle(app).finished.append(_finished)


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of one capture file (a torn last line of a crashed worker is skipped)."""
    with path.open("rb") as file:
        for line in file:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value
