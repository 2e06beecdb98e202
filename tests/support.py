"""Test helpers: free ports, polling, and real kiln servers started and stopped by PID."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

STATUS_PATH = "/api/v1.0/health/status"

ROOT = Path(__file__).resolve().parent.parent
SERVICES = Path(__file__).resolve().parent / "services"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy; return it, or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 - the condition is not met yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


class Server:
    """`kiln serve` (or another kiln command) as a real process on a free 127.0.0.1 port."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None,
                 port: int | None = None, cwd: Path | None = None, module: str = "runtime.cli",
                 program: list[str] | None = None):
        """module: run `python -m MODULE` from this checkout (default: the kiln CLI);
        program: a command to run instead (e.g. an installed `kiln`), without the checkout
        on PYTHONPATH."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        if program is None:
            program = [sys.executable, "-m", module]
            full_env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
        else:
            full_env.pop("PYTHONPATH", None)
        self._log = log.open("wb")
        command = [*program, *args, "--port", str(self.port)]
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=full_env, cwd=cwd, start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def wait_live(self, timeout: float = 60.0) -> Server:
        """Wait until the server answers; fail the test with its output if it does not."""
        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError("exited")
            return self.get("/api/v1.0/health/live", timeout=2).status_code == 200

        def live_or_dead() -> bool:
            return self.proc.poll() is not None or bool(wait_for(answers, timeout=0))

        wait_for(live_or_dead, timeout)
        if self.proc.poll() is not None or not wait_for(answers, timeout=0):
            self.stop()
            pytest.fail(f"kiln server did not start (exit {self.proc.returncode}):\n{self.output()}")
        return self

    def wait_ready(self, timeout: float = 60.0) -> Server:
        self.wait_live(timeout)
        # Every worker loads on its own, so each must have answered the status route with a
        # 200 (the JSON log says which worker answered) before the server counts as ready.
        # Requests go four at a time: one at a time, a sync worker that has just answered
        # takes the next connection too, and the others may never be asked.
        def all_ready() -> bool:
            with ThreadPoolExecutor(4) as pool:
                codes = list(pool.map(lambda _: self.get(STATUS_PATH).status_code, range(20)))
            booted, ready = self._workers()
            return all(code == 200 for code in codes) and booted <= ready

        if not wait_for(all_ready, timeout):
            pytest.fail(f"kiln server never became ready:\n{self.output()}")
        return self

    def _workers(self) -> tuple[set[str], set[str]]:
        """Pids of the workers booted, and of those that answered the status route with 200.

        Both are empty with KILN_LOG_FORMAT=text, whose lines carry no pid.
        """
        booted: set[str] = set()
        ready: set[str] = set()
        for line in self.output().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            message = str(record.get("message", ""))
            if message.startswith("Booting worker with pid"):
                booted.add(message.rsplit(" ", 1)[-1])
            elif record.get("route") == STATUS_PATH and record.get("status") == 200:
                ready.add(str(record.get("pid")))
        return booted, ready

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the process group we started, then SIGKILL it if it lingers."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def serving(factory: pytest.TempPathFactory, service: str,
            env: dict[str, str]) -> Iterator[Server]:
    """`kiln serve tests/services/SERVICE` for a module-scoped fixture: yields it ready, then stops it."""
    server = Server(["serve", str(SERVICES / service)], factory.mktemp(service) / "server.log",
                    env=env)
    yield server.wait_ready()
    server.stop()


def write_service(folder: Path, service: dict[str, Any], files: dict[str, str]) -> Path:
    """A service folder: service.yaml from SERVICE, and FILES (relative path -> text)."""
    import yaml

    folder.mkdir(parents=True)
    (folder / "service.yaml").write_text(yaml.safe_dump(service))
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder
