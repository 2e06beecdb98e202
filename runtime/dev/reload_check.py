"""Check a service folder's edited code before a reload: import it, build the app and its spec.

The gunicorn master must never import the user's code (a HUP would then serve stale
modules), so checks run in another process. `Checker` keeps one warm interpreter
(`python -m runtime.dev.reload_check`) that has imported the runtime and its frameworks but
never the user's code; each check forks a child of it, so a check costs only the user's own
imports, and each child sees the files as they are now. Requests and answers are JSON lines
on that interpreter's stdin and stdout.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import runtime
from runtime.errors import KilnError

#: Runtime modules worth importing before any user code: frameworks cost most of a boot.
WARM_MODULES = ("runtime.app", "runtime.server", "runtime.docs.openapi", "runtime.docs.ui",
                "runtime.docs.validation", "flask.testing", "marshmallow", "yaml")
SPECS = "/docs/specs.json"


def warm_up() -> None:
    """Import the runtime's own heavy modules (never user code), skipping those not there."""
    import importlib

    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue


def check_service(root: Path) -> None:
    """Raise if the service in ROOT would not serve: service.yaml, gunicorn settings, code, spec."""
    from runtime.app import create_app, service_of
    from runtime.config import load_service
    from runtime.serving.settings import options

    config = load_service(root)
    options(config, "127.0.0.1", 8080, cpus=1)
    app = create_app(root, config)
    error = service_of(app).health.error
    if error:
        raise KilnError(error)
    _check_spec(app)


def _check_spec(app: Any) -> None:
    """Build the OpenAPI document the way /docs/specs.json serves it, when the app has docs."""
    from werkzeug.exceptions import HTTPException

    try:
        app.url_map.bind("localhost").match(SPECS, method="GET")
    except HTTPException:
        return  # docs are off, or not part of this runtime
    app.config["PROPAGATE_EXCEPTIONS"] = True  # the error itself, with the user's frame
    response = app.test_client().get(SPECS)
    if response.status_code >= 500:
        raise KilnError(f"{SPECS} answered {response.status_code}: "
                        f"{response.get_data(as_text=True)[:500]}")


def message(err: BaseException, root: Path) -> str:
    """One line for the log and the status route, naming the user's file and line."""
    from runtime.serving.loader import describe

    if isinstance(err, KilnError):
        return str(err)
    return describe(err, root)


def _run_in_child(root: Path, timeout: float) -> str | None:
    """Fork, check ROOT in the child, and return its error (None when the code is good)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        os.dup2(2, 1)  # the user's prints must not corrupt our answers on stdout
        sys.stdout = sys.stderr
        try:
            check_service(root)
            answer = None
        except BaseException as err:  # noqa: BLE001 - every failure is the answer
            try:
                answer = message(err, root)
            except BaseException:  # noqa: BLE001
                answer = f"{type(err).__name__}: {err}"
        with os.fdopen(write_end, "w") as pipe:
            pipe.write(json.dumps({"error": answer}))
        os._exit(0)
    os.close(write_end)
    data = _read_until(read_end, pid, time.monotonic() + timeout)
    os.close(read_end)
    if data is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return f"checking the edited code took longer than {timeout:g} s (an import that hangs?)"
    _, status = os.waitpid(pid, 0)
    if not data:
        return f"checking the edited code crashed (exit status {status})"
    error: str | None = json.loads(data)["error"]
    return error


def _read_until(fd: int, pid: int, deadline: float) -> bytes | None:
    """Everything the child writes to FD until it closes it; None past DEADLINE."""
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def serve_checks(requests: IO[str], answers: IO[str]) -> None:
    """The warm interpreter's loop: one JSON request line in, one JSON answer line out."""
    for line in requests:
        request = json.loads(line)
        error = _run_in_child(Path(request["root"]), float(request["timeout"]))
        answers.write(json.dumps({"error": error}) + "\n")
        answers.flush()


class Checker:
    """A warm checking interpreter, started on demand and restarted if it dies."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start the interpreter now, so its imports are done before the first save."""
        if self._proc is not None and self._proc.poll() is None:
            return
        env = dict(os.environ)
        # The runtime must import in the checker as it does here, wherever kiln is installed.
        home = str(Path(runtime.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [home, env.get("PYTHONPATH")]))
        # Two saves of one size within one second would otherwise reuse a stale .pyc.
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.dev.reload_check"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, text=True, bufsize=1)

    def check(self, root: Path) -> str | None:
        """The error that stops ROOT's code from serving, or None when it is good."""
        self.start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps({"root": str(root), "timeout": self.timeout}) + "\n")
            proc.stdin.flush()
            # The checker enforces the timeout on its child; this margin covers its own start.
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout + 60)
            line = proc.stdout.readline() if ready else ""
        except OSError:
            line = ""
        if not line:
            self.close()
            return "the code checker stopped unexpectedly; the next save tries again"
        error: str | None = json.loads(line)["error"]
        return error

    def close(self) -> None:
        """Stop the interpreter (it also stops by itself when our end of its stdin closes)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def main() -> None:
    """Entry point of the warm interpreter: import the runtime, then answer check requests."""
    sys.dont_write_bytecode = True
    # Ctrl-C reaches the whole process group; the master stops us by closing our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warm_up()
    answers = sys.stdout
    sys.stdout = sys.stderr
    serve_checks(sys.stdin, answers)


if __name__ == "__main__":
    main()
