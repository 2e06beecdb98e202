"""Serve a freshly scaffolded service with the installed kiln, and check it as a user would.

Run with the interpreter of the environment under test: `.venv-3.12/bin/python
tests/infra/smoke.py`. It scaffolds a service with that environment's `kiln new-service`,
serves it with `kiln serve` on a free 127.0.0.1 port, waits (bounded) for the status route,
predicts `[2, 5]` (the custom template's predict() sums its arguments: 7), fetches the docs
and their OpenAPI document, and stops the server by its PID. It prints one line: ok with what
it saw, or FAILED with the reason (after the tail of the server's log) and exits 1. Only the
standard library, so that it needs nothing beyond kiln itself.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

READY_WITHIN_S = 60.0
STOP_WITHIN_S = 20.0
HTTP_TIMEOUT_S = 10.0
SERVICE = "smoke"

# Loopback only: no proxy from the environment may route these requests elsewhere.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SmokeError(Exception):
    """Raised when the service does not behave as a user expects; the message is the reason."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(url: str, body: Any = None) -> tuple[int, str, bytes]:
    """GET URL, or POST BODY as JSON; return the status, the content type and the body."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with OPENER.open(req, timeout=HTTP_TIMEOUT_S) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def clean_env() -> dict[str, str]:
    """This process's environment without settings that would change what kiln serves."""
    prefixes = ("KILN_", "FLASK_", "GUNICORN_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def scaffold(kiln: str, parent: Path) -> Path:
    """`kiln new-service SERVICE --no-input -o PARENT`; return the service folder."""
    done = subprocess.run([kiln, "new-service", SERVICE, "--no-input", "-o", str(parent)],
                          cwd=parent, env=clean_env(), capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise SmokeError(f"kiln new-service exited {done.returncode}: {done.stderr.strip()}")
    service = parent / SERVICE
    if not (service / "service.yaml").is_file():
        raise SmokeError(f"kiln new-service wrote no {service / 'service.yaml'}")
    return service


def wait_ready(server: subprocess.Popen[bytes], base: str) -> float:
    """Poll the status route until it answers 200; return the seconds it took."""
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < READY_WITHIN_S:
        if server.poll() is not None:
            raise SmokeError(f"kiln serve exited {server.returncode} before it was ready")
        try:
            status, _, body = request(f"{base}/api/v1.0/health/status")
        except OSError as err:
            last = f"{type(err).__name__}: {err}"
        else:
            if status == 200:
                return time.monotonic() - start
            last = f"{status} {body[:200]!r}"
        time.sleep(0.1)
    raise SmokeError(f"/api/v1.0/health/status not 200 within {READY_WITHIN_S:.0f} s (last: {last})")


def check(base: str) -> None:
    """Predict 2 + 5, then the Swagger page and the OpenAPI document."""
    status, _, body = request(f"{base}/api/v1.0/predict", {"input": [2, 5]})
    if status != 200:
        raise SmokeError(f"POST /api/v1.0/predict answered {status}: {body[:300]!r}")
    prediction = json.loads(body).get("prediction")
    if prediction != 7:
        raise SmokeError(f"POST /api/v1.0/predict {{'input': [2, 5]}} predicted {prediction!r}, not 7")

    status, _, body = request(f"{base}/docs/specs.json")
    if status != 200:
        raise SmokeError(f"GET /docs/specs.json answered {status}: {body[:300]!r}")
    spec = json.loads(body)
    if "/api/v1.0/predict" not in spec.get("paths", {}):
        raise SmokeError(f"/docs/specs.json has no /api/v1.0/predict; paths: {sorted(spec.get('paths', {}))}")

    status, content_type, body = request(f"{base}/docs/")
    if status != 200 or not content_type.startswith("text/html"):
        raise SmokeError(f"GET /docs/ answered {status} {content_type!r}: {body[:300]!r}")


def stop(server: subprocess.Popen[bytes]) -> float:
    """SIGTERM the server by its PID and wait for it; return the seconds it took to exit."""
    start = time.monotonic()
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        # Its own session: the group is the server and its workers, nothing else.
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        raise SmokeError(f"kiln serve did not stop within {STOP_WITHIN_S:.0f} s of SIGTERM") from None
    return time.monotonic() - start


def tail(path: Path, lines: int = 40) -> str:
    """The last LINES lines of the server's log."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def smoke(work: Path) -> str:
    """Run the whole check in the folder WORK; return what was seen, or raise SmokeError."""
    kiln = str(Path(sys.executable).parent / "kiln")
    if not os.access(kiln, os.X_OK):
        raise SmokeError(f"no kiln command beside {sys.executable}")
    service = scaffold(kiln, work)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = work / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [kiln, "serve", str(service), "--host", "127.0.0.1", "--port", str(port)],
            cwd=work, env=clean_env(), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ready = wait_ready(server, base)
        check(base)
    except BaseException:
        try:
            stop(server)
        finally:
            print(tail(log_path), file=sys.stderr)
        raise
    try:
        stopped = stop(server)
    except SmokeError:
        print(tail(log_path), file=sys.stderr)
        raise
    return (f"ready in {ready:.1f} s, predict [2, 5] -> 7, /docs/ and /docs/specs.json 200, "
            f"stopped in {stopped:.1f} s")


def main() -> int:
    label = f"smoke: Python {platform.python_version()}"
    work = Path(tempfile.mkdtemp(prefix="kiln-smoke-"))
    try:
        seen = smoke(work)
    except SmokeError as err:
        print(f"{label}: FAILED: {err}", flush=True)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{label}: ok: {seen}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
