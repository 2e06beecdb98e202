"""A Docker engine and the local stand-in base images, for the tests marked `docker`.

`docker_engine` uses the engine that answers (DOCKER_HOST or the local socket); when none
does it starts `dockerd` itself, in its own session with its log in a file, and stops that
daemon, by its PID, when the session ends. Where no engine can be had the docker tests skip,
unless CI is set: there they fail. `standin_images` builds the two stand-in bases once
(tests/infra/base-images.sh caches their rootfs tarballs in ~/.cache/kiln).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, wait_for

STANDIN_PYTHON = "kiln-standin/python:3.11-slim"
STANDIN_BARE = "kiln-standin/bare:bookworm"
#: This machine's CA bundle: pip inside a build needs it where TLS is intercepted.
CA_BUNDLE = Path(os.environ.get("KILN_TEST_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def _client(base_url: str | None = None) -> Any:
    """A docker client whose engine answers a ping, or None."""
    import docker

    def connect(**fixed: str) -> Any:
        return docker.DockerClient(base_url=base_url, **fixed) if base_url else docker.from_env(**fixed)

    # The SDK leaves its socket open when a connect fails (a ResourceWarning that fails a
    # later test under filterwarnings=error): knock on a unix socket ourselves first, and
    # probe with a fixed API version, since without one the constructor already connects.
    host = base_url or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    if host.startswith("unix://") and not _accepts(host[len("unix://"):]):
        return None
    try:
        probe = connect(version="1.24")
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        return None
    try:
        probe.ping()
    except Exception:  # noqa: BLE001
        return None
    finally:
        probe.close()
    return connect()


def _accepts(path: str) -> bool:
    """Whether something listens on the unix socket PATH."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


class Dockerd:
    """A dockerd this test session started, and stops by its PID."""

    def __init__(self, log: Path, host: str = DEFAULT_SOCKET, extra: tuple[str, ...] = ()):
        self.host = host
        self.log_path = log
        prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
        self._log = log.open("wb")
        # A session of its own (setsid): Ctrl-C on pytest must not kill it half-way.
        self.proc = subprocess.Popen([*prefix, "dockerd", "--host", host, *extra],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait(self, timeout: float = 60.0) -> Any:
        """The client once the daemon answers, or None if it died or stayed silent."""
        client = wait_for(lambda: self.proc.poll() is None and _client(self.host), timeout,
                          interval=0.25)
        return client or None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _can_start_dockerd() -> str | None:
    """Why this process cannot start dockerd, or None when it can try."""
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (tests/infra/system-deps.sh installs docker.io)"
    sudo = ["sudo", "-n", "true"]
    if os.geteuid() != 0 and subprocess.run(sudo, check=False, capture_output=True).returncode:
        return "dockerd needs root, and sudo asks for a password"
    return None


def _no_engine(reason: str) -> None:
    message = f"no Docker engine: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: the docker tests must run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A docker client on an engine that answers; started for this session when none does."""
    client = _client()
    daemon: Dockerd | None = None
    if client is None:
        why = _can_start_dockerd()
        if why is not None:
            _no_engine(why)
        daemon = Dockerd(tmp_path_factory.mktemp("dockerd") / "dockerd.log")
        client = daemon.wait()
        if client is None:
            daemon.stop()
            _no_engine(f"dockerd did not answer within 60 s; its log:\n"
                       f"{daemon.log_path.read_text(errors='replace')[-3000:]}")
        os.environ["DOCKER_HOST"] = daemon.host  # for `kiln build` subprocesses and the CLI
    try:
        yield client
    finally:
        client.close()
        if daemon is not None:
            os.environ.pop("DOCKER_HOST", None)
            daemon.stop()


@pytest.fixture(scope="session")
def standin_images(docker_engine: Any) -> tuple[str, str]:
    """(python base, bare base): built from a Debian rootfs once, then reused."""
    began = time.monotonic()
    done = subprocess.run(["bash", str(ROOT / "tests" / "infra" / "base-images.sh")],
                          check=False, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        pytest.fail(f"building the stand-in base images failed:\n{done.stdout}{done.stderr}")
    if time.monotonic() - began > 5:
        print(f"stand-in base images ready in {time.monotonic() - began:.0f} s")
    return STANDIN_PYTHON, STANDIN_BARE
