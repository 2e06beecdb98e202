"""Servers under test as child processes: start on a free 127.0.0.1 port, wait until ready, stop."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 2.0) -> int:
    """The HTTP status of one request, or 0 when nothing answered."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (OSError, ValueError):
        return 0


@dataclass
class Process:
    """One started server: its command, its log file, and the process group we stop by PID."""

    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            # A new session makes the server the leader of its own group: stopping that group
            # reaches its workers too, and nothing else.
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env}, cwd=self.cwd,
                                         start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, url: str, timeout: float = 90.0, streak: int = 10) -> None:
        """Wait until `url` answers 200 `streak` times in a row (so every worker has loaded)."""
        deadline = time.monotonic() + timeout
        good = 0
        while good < streak:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited while starting; its log:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s; its log:\n"
                                   f"{self.tail()}")
            if http_status(url) == 200:
                good += 1
            else:
                good = 0
                time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM our server's process group, then SIGKILL it if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def children(self) -> list[int]:
        """PIDs of the server's direct children (gunicorn's or uvicorn's workers)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []
