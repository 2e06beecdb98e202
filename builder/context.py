"""Write a service's build context: Dockerfile, .dockerignore, the runtime wheel and the service.

Layout of a context folder:

    Dockerfile
    .dockerignore
    kiln-build/system.sh          installs Python when the base has none, system_packages, user
    kiln-build/requirements.txt   the service's requirements.lock pins, or service.yaml packages
                                  + the runtime's own requirements
    kiln-build/constraints.txt    the versions CI tested (images/constraints.txt), for every build
    kiln-build/runtime/*.whl      the kiln runtime
    kiln-build/ca.crt             only with --ca-bundle; used by the builder stage only
    service/                      the service folder, without caches, tests and captures
"""
from __future__ import annotations

import fnmatch
import os
import shutil
import stat
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from builder import runtime_dist
from builder.dockerfile import CA_FILE, KIT, BuildOptions, render_dockerfile, requirements_text
from builder.errors import BuildError
from builder.lock import Lock, check_lock, constraints_text, read_lock
from runtime.config import ServiceConfig

#: Never copied from a service folder into an image.
IGNORED = ("__pycache__", "*.pyc", "*.pyo", ".git", ".hg", ".venv", "venv", ".pytest_cache",
           ".mypy_cache", ".ruff_cache", ".DS_Store", "*.swp", "*~", ".dockerignore", "tests")


@dataclass(frozen=True)
class Context:
    """A written build context."""

    folder: Path
    dockerfile: str
    runtime_version: str
    lock: Lock | None = None


def _ignored(config: ServiceConfig) -> tuple[str, ...]:
    capture = config.get("capture.dir")
    extra = (capture.strip("/"),) if config.enabled("capture") and not os.path.isabs(capture) else ()
    return IGNORED + extra


def _group_like_owner(path: Path) -> None:
    """g=u: a process with an arbitrary UID in group 0 (OpenShift) gets the owner's rights."""
    mode = path.stat().st_mode
    path.chmod(stat.S_IMODE(mode) | ((mode & 0o700) >> 3) | 0o004 | (0o001 if path.is_dir() else 0))


def copy_service(config: ServiceConfig, dest: Path) -> None:
    """Copy the service folder to DEST, leaving out IGNORED, with group permissions as the owner's."""
    patterns = _ignored(config)

    def ignore(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(config.root)
        out = set()
        for name in names:
            path = (rel / name).as_posix()
            if any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns):
                out.add(name)
        return out

    shutil.copytree(config.root, dest, ignore=ignore, symlinks=False)
    for folder, dirs, names in os.walk(dest):
        for name in [*dirs, *names]:
            _group_like_owner(Path(folder) / name)
    _group_like_owner(dest)


def dockerignore(config: ServiceConfig) -> str:
    """A .dockerignore for the context, so a rebuild elsewhere leaves the same files out."""
    lines = ["# Written by kiln build: what never goes into an image."]
    for pattern in _ignored(config):
        lines += [f"service/{pattern}", f"service/**/{pattern}"]
    return "\n".join(lines) + "\n"


def write_context(config: ServiceConfig, options: BuildOptions, dest: Path) -> Context:
    """Write the build context of CONFIG's service into DEST (which must be empty or absent)."""
    if dest.exists() and not dest.is_dir():
        raise BuildError(f"{dest}: not a folder; --dockerfile-only writes into a new or empty "
                         f"folder")
    if dest.exists() and any(dest.iterdir()):
        raise BuildError(f"{dest}: not empty; --dockerfile-only writes into a new or empty folder")
    if options.ca_bundle is not None and not Path(options.ca_bundle).is_file():
        raise BuildError(f"--ca-bundle: {options.ca_bundle}: not a file")
    version = runtime_dist.version()
    runtime_requirements = runtime_dist.requirements()
    constraints = constraints_text()
    lock = read_lock(config)
    if lock is not None:
        check_lock(lock, config, runtime_requirements, constraints)
    dockerfile = render_dockerfile(config, options, runtime_version=version,
                                   locked=lock is not None)
    kit = dest / KIT
    kit.mkdir(parents=True)
    (dest / "Dockerfile").write_text(dockerfile, encoding="utf-8")
    (dest / ".dockerignore").write_text(dockerignore(config), encoding="utf-8")
    (kit / "system.sh").write_bytes(files("images").joinpath("system.sh").read_bytes())
    (kit / "requirements.txt").write_text(
        requirements_text(config, runtime_requirements, lock), encoding="utf-8")
    (kit / "constraints.txt").write_text(constraints, encoding="utf-8")
    runtime_dist.write_wheel(kit / "runtime")
    if options.ca_bundle is not None:
        shutil.copyfile(options.ca_bundle, dest / CA_FILE)
    copy_service(config, dest / "service")
    return Context(dest, dockerfile, version, lock)
