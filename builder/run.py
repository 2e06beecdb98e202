"""`kiln run`: start a built image with the CPU, memory and GPU limits of its service's size.

The port is published on 127.0.0.1 only. In the foreground the container's logs are followed
until Ctrl-C (or SIGTERM), which stops the container (STOP_TIMEOUT seconds of grace; a second
Ctrl-C kills it) and removes it; `detach` leaves it running.
"""
from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.build import docker_client, inspect_local, local_image
from builder.dockerfile import PORT
from builder.errors import RunError
from runtime.config import SERVICE_FILE, SIZES

Echo = Callable[[str], None]
#: Where the image keeps the service folder (images/*.Dockerfile).
SERVICE_MOUNT = "/srv/service"


@dataclass(frozen=True)
class Limits:
    """What `docker run` is given for one service size."""

    size: str
    cpus: float
    memory_gb: int
    gpus: int

    @classmethod
    def of(cls, size: str) -> Limits:
        if size not in SIZES:
            raise RunError(f"size {size!r} is unknown; allowed: {', '.join(SIZES)}")
        cpus, memory, gpus = SIZES[size]
        return cls(size, cpus, memory, gpus)

    def within(self, host_cpus: int) -> Limits:
        """The same limits with CPUs capped at the engine's: it refuses more than it has."""
        return Limits(self.size, min(self.cpus, host_cpus), self.memory_gb, self.gpus)

    def container_kwargs(self) -> dict[str, Any]:
        """docker SDK arguments: nano_cpus must be an int, device requests stand for --gpus."""
        kwargs: dict[str, Any] = {"nano_cpus": int(self.cpus * 1e9),
                                  "mem_limit": f"{self.memory_gb}g"}
        if self.gpus:
            from docker.types import DeviceRequest

            kwargs["device_requests"] = [DeviceRequest(count=self.gpus, capabilities=[["gpu"]])]
        return kwargs


def resolve_image(client: Any, what: str) -> tuple[str, str]:
    """(image, size) for a service folder (its default tag) or an image name (its kiln.size label)."""
    image, _ = local_image(what)
    attrs = inspect_local(client, image, what, RunError)
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    return image, labels.get("kiln.size", "small")


def dev_kwargs(service_dir: Path, poll: bool) -> dict[str, Any]:
    """`--dev`: the folder mounted over the image's copy, served with `kiln serve --reload`."""
    command = ["kiln", "serve", SERVICE_MOUNT, "--host", "0.0.0.0", "--port", str(PORT),
               "--reload"] + (["--poll"] if poll else [])
    return {"volumes": {str(service_dir.resolve()): {"bind": SERVICE_MOUNT, "mode": "rw"}},
            "command": command}


def start(client: Any, image: str, limits: Limits, port: int | None,
          extra: dict[str, Any] | None = None, label: str = "kiln.run") -> Any:
    """Create and start the container (published on PORT of 127.0.0.1 unless None, labelled
    LABEL=image); on failure remove it, so nothing is left behind."""
    import docker.errors

    ports = {f"{PORT}/tcp": ("127.0.0.1", port)} if port is not None else {}
    try:
        container = client.containers.create(
            image, ports=ports, labels={label: image}, **limits.container_kwargs(),
            **(extra or {}))
    except docker.errors.APIError as err:
        raise RunError(f"cannot create a container of {image}: {err.explanation or err}") from err
    try:
        container.start()
    except docker.errors.APIError as err:
        container.remove(force=True)
        reason = err.explanation or str(err)
        if limits.gpus and "device driver" in str(reason):
            raise RunError(f"size {limits.size} needs a GPU, but this Docker engine has no GPU "
                           f"runtime (install nvidia-container-toolkit): {reason}") from err
        raise RunError(f"cannot start {image}: {reason}") from err
    return container


#: Seconds a container gets to shut down after Ctrl-C before the engine kills it: `docker
#: stop`'s default. The image's gunicorn would wait up to its graceful_timeout (30 s) for busy
#: workers, and the SDK's stop() waits as long as it is told to.
STOP_TIMEOUT = 10
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _handle(handler: Any) -> dict[int, Any]:
    """Set HANDLER for SIGINT and SIGTERM; return the handlers they had."""
    return {signum: signal.signal(signum, handler) for signum in _STOP_SIGNALS}


def _stop(container: Any, echo: Echo) -> None:
    """Stop the container, giving it STOP_TIMEOUT s; a second Ctrl-C (or SIGTERM) kills it now."""
    echo(f"Stopping container {container.short_id} (at most {STOP_TIMEOUT} s; "
         f"Ctrl-C again kills it)")
    try:
        container.stop(timeout=STOP_TIMEOUT)
    except KeyboardInterrupt:
        echo(f"Killing container {container.short_id}")


def follow(container: Any, echo: Echo, out: Any = None, interrupted: int = 0) -> int:
    """Print the container's logs (to OUT, stdout by default) until it exits or Ctrl-C (or
    SIGTERM); then stop and remove it. Its exit code, or INTERRUPTED after Ctrl-C.

    SIGINT gets our handler even when this process was started with it ignored: a command a
    script puts in the background (`cmd &`) inherits SIGINT ignored, and Python then leaves
    it ignored, so Ctrl-C or `kill -INT` would never reach the loop below.
    """
    out = sys.stdout if out is None else out
    previous = _handle(_interrupt)
    try:
        for chunk in container.logs(stream=True, follow=True):
            out.write(chunk.decode("utf-8", errors="replace"))
            out.flush()
        code = int(container.wait().get("StatusCode", 1))
    except KeyboardInterrupt:
        _stop(container, echo)
        code = interrupted
    finally:
        try:
            container.remove(force=True)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    return code


def run(what: str, port: int = PORT, detach: bool = False, echo: Echo = print,
        dev: bool = False, poll: bool = False) -> str:
    """Start the image of WHAT (a service folder or an image); return the container id.

    dev: WHAT must be a service folder; it is mounted into its image and reloaded on edits.
    """
    extra = None
    if dev:
        if not (Path(what) / SERVICE_FILE).is_file():
            raise RunError(f"--dev needs a service folder (with {SERVICE_FILE}), got {what!r}")
        extra = dev_kwargs(Path(what), poll)
    elif poll:
        raise RunError("--poll only works with --dev")
    client = docker_client()
    try:
        return _run(client, what, port, detach, echo, extra)
    finally:
        client.close()


def _run(client: Any, what: str, port: int, detach: bool, echo: Echo,
         extra: dict[str, Any] | None) -> str:
    image, size = resolve_image(client, what)
    limits = Limits.of(size)
    host_cpus = int(client.info().get("NCPU") or limits.cpus)
    if host_cpus < limits.cpus:
        echo(f"Size {size} asks for {limits.cpus:g} CPUs; this Docker engine has {host_cpus}: "
             f"limiting the container to {host_cpus}")
        limits = limits.within(host_cpus)
    container = start(client, image, limits, port, extra)
    gpu = f", {limits.gpus} GPU" if limits.gpus else ""
    echo(f"Serving {image} on http://127.0.0.1:{port} in container {container.short_id} "
         f"(size {size}: {limits.cpus:g} CPU, {limits.memory_gb} GB{gpu})")
    if detach:
        echo(f"Stop it with: docker stop {container.short_id}")
        return str(container.id)
    echo("Ctrl-C stops it.")
    code = follow(container, echo)
    if code != 0:
        raise RunError(f"the container stopped by itself with exit code {code}; its log is above")
    return str(container.id)
