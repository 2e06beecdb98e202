"""Render a service's Dockerfile from the templates in images/: a pure function of its settings.

The templates use `{{ name }}` placeholders (Dockerfiles use `$NAME` themselves). Everything a
template needs from the outside, the options of `kiln build` and service.yaml, goes through
`render_dockerfile`, so what a build runs can be read, and tested, without an engine.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from builder.errors import BuildError
from builder.lock import Lock, service_packages
from runtime.config import CUDA_IMAGES, ServiceConfig

TARGETS = ("cpu", "gpu")
PORT = 8080
#: The build context's layout, shared with builder/context.py.
KIT = "kiln-build"
CA_FILE = f"{KIT}/ca.crt"
#: Where the bundle sits in the builder stage (never in the image).
CA_PATH = "/tmp/kiln/ca.crt"
# apt package names (Debian policy) with an optional =version or /release.
_APT_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]*([=/][A-Za-z0-9+.:~_-]+)?$")
_PLACEHOLDER = re.compile(r"\{\{ *([a-z_]+) *\}\}")


@dataclass(frozen=True)
class BuildOptions:
    """What `kiln build` was asked for, beyond service.yaml."""

    target: str | None = None          # None: service.yaml target
    tag: str | None = None             # None: default_tag()
    base_image: str | None = None      # None: the target's default base
    index_url: str | None = None       # passed as a build argument to the builder stage only
    ca_bundle: Path | None = None      # copied into the builder stage only
    network: str | None = None         # network mode of the build's RUN steps (e.g. host)
    no_cache: bool = False
    quiet: bool = False


def target_of(config: ServiceConfig, options: BuildOptions) -> str:
    target = options.target or config.get("target")
    if target not in TARGETS:
        raise BuildError(f"--target: {target!r} is not allowed; allowed: {', '.join(TARGETS)}")
    return str(target)


def base_image(config: ServiceConfig, options: BuildOptions) -> str:
    """The FROM image: --base-image, else python:<python>-slim (cpu) or the CUDA image (gpu)."""
    if options.base_image:
        return options.base_image
    if target_of(config, options) == "gpu":
        return CUDA_IMAGES[config.get("cuda")]
    return f"python:{config.get('python')}-slim"


def default_tag(config: ServiceConfig, options: BuildOptions) -> str:
    """`<id>:<version>`, with `-gpu` appended for the gpu target."""
    suffix = "-gpu" if target_of(config, options) == "gpu" else ""
    return f"{config.id}:{_tag_safe(config.version)}{suffix}"


def _tag_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:120] or "latest"


def packages_digest(config: ServiceConfig) -> str:
    """sha256 of the package list, to tell images with the same packages apart from others."""
    data = json.dumps({"packages": config.get("packages"),
                       "system_packages": config.get("system_packages")}, sort_keys=True)
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


def requirements_text(config: ServiceConfig, runtime_requirements: list[str],
                      lock: Lock | None = None) -> str:
    """The builder stage's requirements file: LOCK's pins, else service.yaml packages, then the
    runtime's own requirements."""
    packages = service_packages(config)
    if lock is not None:
        return "\n".join(["# requirements.lock (kiln lock)", *lock.pins]) + "\n"
    lines = ["# service.yaml packages", *packages,
             "# the kiln runtime's own requirements", *runtime_requirements]
    return "\n".join(lines) + "\n"


def install_packages(locked: bool) -> str:
    """The builder stage's pip step: the lock's pins and nothing else, or a resolve; both under
    the constraints."""
    pip = "/opt/venv/bin/pip"
    if locked:
        # --no-deps: exactly the pins; `pip check` fails the build if the lock misses one.
        return (f"RUN {pip} install --no-deps -r /tmp/kiln/requirements.txt "
                f"-c /tmp/kiln/constraints.txt && {pip} check")
    return f"RUN {pip} install -r /tmp/kiln/requirements.txt -c /tmp/kiln/constraints.txt"


def labels(config: ServiceConfig, options: BuildOptions, runtime_version: str) -> dict[str, str]:
    """OCI and kiln.* labels of the image."""
    return {
        "org.opencontainers.image.title": config.title,
        "org.opencontainers.image.description": config.get("description"),
        "org.opencontainers.image.version": config.version,
        "org.opencontainers.image.base.name": base_image(config, options),
        "kiln.id": config.id,
        "kiln.version": config.version,
        "kiln.target": target_of(config, options),
        "kiln.size": config.get("size"),
        "kiln.packages.digest": packages_digest(config),
        "kiln.runtime.version": runtime_version,
    }


def _label_block(values: dict[str, str]) -> str:
    # JSON strings are valid Dockerfile quoted values once `$` cannot start a substitution.
    lines = [f"{key}={json.dumps(value).replace('$', chr(92) + '$')}" for key, value in values.items()]
    return "LABEL " + " \\\n      ".join(lines)


def _system_packages(config: ServiceConfig) -> str:
    packages = config.get("system_packages")
    for name in packages:
        if not _APT_NAME.match(name):
            raise BuildError(f"{config.path}: system_packages: {name!r} is not an apt package name")
    return "".join(f" {name}" for name in packages)


def _builder_settings(options: BuildOptions) -> str:
    lines = []
    if options.ca_bundle is not None:
        # pip reads PIP_CERT; other tools in a build step read the two others.
        lines += [f"COPY {CA_FILE} {CA_PATH}",
                  f"ENV PIP_CERT={CA_PATH} REQUESTS_CA_BUNDLE={CA_PATH} SSL_CERT_FILE={CA_PATH}"]
    if options.index_url:
        # An ARG, not an ENV: its value (a credential, maybe) is given at build time and is
        # recorded only in this stage's history, never in the final image's.
        lines.append("ARG PIP_INDEX_URL")
    return "\n".join(lines) if lines else "# (no index URL or CA bundle given)"


def template(target: str) -> str:
    """The Dockerfile template of a target, from the images package."""
    return files("images").joinpath(f"{target}.Dockerfile").read_text(encoding="utf-8")


def render_dockerfile(config: ServiceConfig, options: BuildOptions,
                      runtime_version: str = "0", locked: bool = False) -> str:
    """The Dockerfile that builds CONFIG's service with OPTIONS (pure: reads only the template);
    LOCKED: install the pins of its requirements.lock."""
    target = target_of(config, options)
    values = {
        "id": config.id,
        "version": config.version,
        "base": base_image(config, options),
        "python": config.get("python"),
        "system_packages": _system_packages(config),
        "builder_settings": _builder_settings(options),
        "install_packages": install_packages(locked),
        "labels": _label_block(labels(config, options, runtime_version)),
    }

    def fill(match: re.Match[str]) -> str:
        return values[match.group(1)]

    return _PLACEHOLDER.sub(fill, template(target))


def run_line(tag: str, size: str, port: int = PORT) -> str:
    """The `docker run` command for an image of `size` (service.yaml sizes)."""
    from runtime.config import SIZES

    cpus, memory, gpus = SIZES[size]
    gpu = " --gpus all" if gpus else ""
    return (f"docker run --rm -p 127.0.0.1:{port}:{PORT} --cpus {cpus:g} --memory {memory}g"
            f"{gpu} {tag}")
