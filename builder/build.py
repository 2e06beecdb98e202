"""`kiln build`: build a service's image through the docker SDK's streaming build API.

The docker SDK speaks only the legacy builder (no BuildKit). Its stream never raises for a
failed step: an `error` chunk arrives with HTTP 200, so each chunk is checked here. `rm` and
`forcerm` remove intermediate containers, failed ones included, and the legacy builder tags
only a finished image, so a failed build leaves neither a tag nor a container.
"""
from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.context import write_context
from builder.dockerfile import BuildOptions, base_image, default_tag, run_line, target_of
from builder.errors import BuildError
from runtime.config import SERVICE_FILE, ServiceConfig, load_service
from runtime.errors import KilnError

Echo = Callable[[str], None]
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
# The legacy builder wraps a step's stderr in ANSI colour codes.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The engine's own bookkeeping between steps, not worth a line on screen.
_NOISE = re.compile(r"^\s*(---> |Running in [0-9a-f]+$|Removing intermediate container )")


@dataclass
class BuildResult:
    """A finished build."""

    tag: str
    image_id: str
    size: int
    base: str
    base_size: int | None
    seconds: float
    run_line: str
    log: list[str] = field(default_factory=list)


def docker_client() -> Any:
    """A docker SDK client for the engine of this environment (DOCKER_HOST or the local socket)."""
    try:
        import docker
    except ImportError as err:
        raise BuildError("the docker SDK is not installed: pip install docker") from err
    try:
        client = docker.from_env()
        client.ping()
    except Exception as err:  # DockerException, requests' ConnectionError, a bad DOCKER_HOST
        raise BuildError(f"cannot reach a Docker engine ({err}); start one (e.g. `sudo dockerd`) "
                         f"or set DOCKER_HOST") from err
    return client


def local_image(what: str) -> tuple[str, ServiceConfig | None]:
    """The image WHAT names: a service folder's default tag (with its config), else WHAT itself."""
    if (Path(what) / SERVICE_FILE).is_file():
        config = load_service(what)
        return default_tag(config, BuildOptions()), config
    return what, None


def inspect_local(client: Any, image: str, what: str,
                  error: type[KilnError] = BuildError) -> dict[str, Any]:
    """The engine's record of IMAGE; an ERROR when it has none (saying to build WHAT first)."""
    import docker.errors

    try:
        attrs: dict[str, Any] = client.api.inspect_image(image)
    except docker.errors.ImageNotFound as err:
        hint = f"; build it first: kiln build {what}" if image != what else ""
        raise error(f"image {image!r} not found{hint}") from err
    return attrs


def mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


class Progress:
    """Turns the build stream into lines: Step n/N always, a step's own lines unless quiet."""

    def __init__(self, echo: Echo, quiet: bool):
        self.echo = echo
        self.quiet = quiet
        self.step = "(before the first step)"
        self.step_lines: list[str] = []
        self.log: list[str] = []
        self.image_id: str | None = None

    def feed(self, chunk: dict[str, Any]) -> None:
        if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
            # One aux ID per stage in a multi-stage build: the last one is the image.
            self.image_id = chunk["aux"]["ID"]
        text = chunk.get("stream") or chunk.get("status") or ""
        for line in _ANSI.sub("", text).splitlines():
            line = line.rstrip()
            if not line:
                continue
            self.log.append(line)
            if _STEP.match(line):
                self.step, self.step_lines = line, []
                self.echo(line)
            elif not _NOISE.match(line):
                self.step_lines.append(line)
                if not self.quiet:
                    self.echo(f"  {line}")

    def failure(self, chunk: dict[str, Any]) -> BuildError:
        detail = chunk.get("errorDetail") or {}
        reason = str(detail.get("message") or chunk.get("error") or "unknown error").strip()
        self.log.append(reason)
        if self.quiet:  # the failing step's log is shown even in quiet mode
            for line in self.step_lines:
                self.echo(f"  {line}")
        self.echo(f"  {reason}")
        # pip ends a conflict with a line that only links its docs: the line above says more.
        errors = [line for line in self.step_lines if line.lstrip().startswith(("ERROR", "E:"))
                  and "ResolutionImpossible" not in line]
        cause = errors[-1].strip() if errors else (self.step_lines[-1].strip()
                                                   if self.step_lines else reason)
        if any("(constraint)" in line for line in self.step_lines):
            cause += ("; service.yaml packages conflict with the versions the kiln runtime was "
                      "tested with (kiln's images/constraints.txt)")
        if any("CERTIFICATE_VERIFY_FAILED" in line for line in self.step_lines):
            cause += ("; TLS certificates were not trusted: pass the CA bundle of your network "
                      "(proxy) with --ca-bundle FILE")
        match = _STEP.match(self.step)
        where = f"step {match.group(1)}/{match.group(2)} ({match.group(3)})" if match else self.step
        return BuildError(f"build failed at {where}: {cause}")


def _size(client: Any, image: str) -> int | None:
    try:
        return int(client.api.inspect_image(image)["Size"])
    except Exception:  # noqa: BLE001 - only informative (a base not pulled yet, say)
        return None


def build_image(config: ServiceConfig, options: BuildOptions, echo: Echo = print,
                client: Any = None) -> BuildResult:
    """Build CONFIG's service into an image tagged options.tag (or its default tag)."""
    if client is None:
        owned = docker_client()
        try:
            return build_image(config, options, echo, owned)
        finally:
            owned.close()
    tag = options.tag or default_tag(config, options)
    base = base_image(config, options)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kiln-build-") as folder:
        context = write_context(config, options, Path(folder) / "context")
        progress = Progress(echo, options.quiet)
        buildargs = {"PIP_INDEX_URL": options.index_url} if options.index_url else None
        locked = ", packages from requirements.lock" if context.lock is not None else ""
        echo(f"Building {tag} from {base} (target {target_of(config, options)}{locked})")
        stream = client.api.build(
            path=str(context.folder), tag=tag, decode=True, rm=True, forcerm=True,
            pull=False, nocache=options.no_cache, buildargs=buildargs,
            network_mode=options.network, timeout=None)
        failure = None
        for chunk in stream:
            # Read on after an error: the engine ends the stream then, and an abandoned
            # stream would keep its connection open.
            if "error" in chunk and failure is None:
                failure = progress.failure(chunk)
            elif failure is None:
                progress.feed(chunk)
        if failure is not None:
            raise failure
    if progress.image_id is None:
        raise BuildError(f"the engine finished building {tag} without naming an image")
    size = _size(client, progress.image_id) or 0
    return BuildResult(tag=tag, image_id=progress.image_id, size=size, base=base,
                       base_size=_size(client, base), seconds=time.monotonic() - began,
                       run_line=run_line(tag, config.get("size")), log=progress.log)


def build(directory: str | Path, options: BuildOptions, echo: Echo = print) -> BuildResult:
    """Check DIRECTORY's service.yaml, build its image, and print what to run."""
    config = load_service(directory)
    result = build_image(config, options, echo)
    base = f"; base {result.base} {mb(result.base_size)}" if result.base_size else ""
    echo(f"Built {result.tag} ({result.image_id[7:19]}, {mb(result.size)}{base}) "
         f"in {result.seconds:.1f} s")
    echo(f"Run it: {result.run_line}")
    return result


def write_dockerfile(directory: str | Path, options: BuildOptions, out: Path,
                     echo: Echo = print) -> Path:
    """Write the Dockerfile and its context to OUT instead of building."""
    config = load_service(directory)
    write_context(config, options, out)
    tag = options.tag or default_tag(config, options)
    args = " --build-arg PIP_INDEX_URL=..." if options.index_url else ""
    echo(f"Wrote {out / 'Dockerfile'} and its context; build it with:")
    echo(f"  docker build{args} -t {tag} {out}")
    return out

