"""Write images/constraints.txt: the versions of the runtime's dependencies that CI tested.

Every `kiln build` installs with `pip install -c` this file, and `kiln lock` resolves against
it. Run this with the Python of the venv the tests passed in (`make test` makes .venv):

    .venv/bin/python -m builder.refresh_constraints [--ca-bundle FILE] [--index-url URL]
    .venv/bin/python -m builder.refresh_constraints --check    # exit 1 when it is out of date

It walks the runtime's requirements (setup.cfg install_requires without the host-only ones,
see builder/runtime_dist.py) and their requirements, as installed in this venv: the versions
CI tested. Then pip resolves them for every Python that service.yaml allows (an interpreter of
each is needed: pythonX.Y on PATH or pyenv's). Where a tested version does not install on one
of them (a release that dropped Python 3.10, say), that Python gets what pip picks for it
instead, pinned under a `python_version` marker; so do the packages only it needs.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import platform
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from builder import runtime_dist
from builder.lock import LockOptions, constraint_pins, find_python, pip_command, pip_env, resolve
from runtime.config import PYTHON_VERSIONS
from runtime.errors import KilnError

HEADER = """\
# The versions of the kiln runtime's dependencies that CI tested. Every `kiln build` installs
# with `pip install -c` this file, and `kiln lock` resolves against it.
# Written by `python -m builder.refresh_constraints` from the test venv (Python {python});
# do not edit by hand. A line with a python_version marker: that Python cannot install the
# tested version, and gets what pip resolves for it.
"""


def _holds(marker: Marker | None, extras: frozenset[str]) -> bool:
    """Whether MARKER holds on Linux for some supported Python, with one of EXTRAS (or none)."""
    if marker is None:
        return True
    for version in PYTHON_VERSIONS:
        for extra in ("", *extras):
            env = {"python_version": version, "python_full_version": f"{version}.0",
                   "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                   "implementation_name": "cpython", "platform_python_implementation": "CPython",
                   "extra": extra}
            if marker.evaluate(env):
                return True
    return False


def walk(requirements: list[str]) -> tuple[dict[str, str], list[str]]:
    """({canonical name: installed version}, [needed but not installed]) for REQUIREMENTS' tree."""
    pins: dict[str, str] = {}
    missing: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(str(requirement))
            continue
        pins[name] = dist.version
        for text in dist.requires or []:
            child = Requirement(text)
            if _holds(child.marker, key[1]):
                todo.append(Requirement(str(child).split(";")[0]))
    return pins, sorted(set(missing))


def _installs(name: str, version: str, interpreter: str, options: LockOptions) -> bool:
    """Whether NAME==VERSION has a release file that INTERPRETER can install."""
    command = [*pip_command(interpreter), "install", "--dry-run", "--ignore-installed",
               "--no-deps", "-q", f"{name}=={version}"]
    done = subprocess.run(command, capture_output=True, text=True, env=pip_env(options),
                          check=False)
    return done.returncode == 0


def per_python(tested: dict[str, str], options: LockOptions) -> dict[str, dict[str, str]]:
    """{python: {name: version}} that pip resolves for each supported Python, under TESTED
    where it installs there."""
    requirements = runtime_dist.requirements()
    out: dict[str, dict[str, str]] = {}
    for python in PYTHON_VERSIONS:
        interpreter, _ = find_python(python)
        pins = tested
        try:
            found, _ = resolve(requirements, render_lines(tested), interpreter, python, options,
                               echo=lambda line: None)
        except KilnError:
            pins = {n: v for n, v in tested.items() if _installs(n, v, interpreter, options)}
            print(f"Python {python}: not installable there, resolved anew: "
                  f"{', '.join(sorted(tested.keys() - pins.keys()))}", file=sys.stderr)
            found, _ = resolve(requirements, render_lines(pins), interpreter, python, options,
                               echo=lambda line: None)
        out[python] = constraint_pins("\n".join(found))
    return out


def _marker(pythons: list[str]) -> str:
    """A python_version marker for PYTHONS (a subset of PYTHON_VERSIONS); "" for all of them."""
    if pythons == list(PYTHON_VERSIONS):
        return ""
    runs: list[list[str]] = []
    for python in pythons:
        index = PYTHON_VERSIONS.index(python)
        if runs and PYTHON_VERSIONS.index(runs[-1][-1]) == index - 1:
            runs[-1].append(python)
        else:
            runs.append([python])
    parts = []
    for run in runs:
        low, high = run[0], run[-1]
        if low == high:
            parts.append(f'python_version == "{low}"')
        elif low == PYTHON_VERSIONS[0]:
            parts.append(f'python_version <= "{high}"')
        elif high == PYTHON_VERSIONS[-1]:
            parts.append(f'python_version >= "{low}"')
        else:
            parts.append(f'python_version >= "{low}" and python_version <= "{high}"')
    return "; " + " or ".join(parts)


def render_lines(pins: dict[str, str]) -> str:
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def render(resolved: dict[str, dict[str, str]]) -> str:
    """The constraints file: one line per package and version, marked with its Pythons."""
    lines = []
    for name in sorted({n for pins in resolved.values() for n in pins}):
        versions: dict[str, list[str]] = {}
        for python, pins in resolved.items():
            if name in pins:
                versions.setdefault(pins[name], []).append(python)
        if len(versions) == 1:  # one version wherever it is needed: no marker
            lines.append(f"{name}=={next(iter(versions))}")
            continue
        for version, pythons in versions.items():
            lines.append(f"{name}=={version}{_marker(pythons)}")
    return HEADER.format(python=platform.python_version()) + "\n".join(lines) + "\n"


def _pins(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def target() -> Path:
    """images/constraints.txt of the checkout (this tool writes the source, not an install)."""
    return Path(str(files("images").joinpath("constraints.txt")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the file differs from what this venv gives")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="file to write [images/constraints.txt]")
    parser.add_argument("--index-url", help="pip index to resolve the other Pythons with")
    parser.add_argument("--ca-bundle", type=Path, help="CA bundle pip trusts")
    args = parser.parse_args(argv)
    pins, missing = walk(runtime_dist.requirements())
    for requirement in missing:
        print(f"not installed in this venv (resolved per Python): {requirement}",
              file=sys.stderr)
    options = LockOptions(index_url=args.index_url, ca_bundle=args.ca_bundle, quiet=True)
    try:
        text = render(per_python(pins, options))
    except KilnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = args.output or target()
    if args.check:
        current = out.read_text(encoding="utf-8") if out.is_file() else ""
        if _pins(current) != _pins(text):
            print(f"{out} is out of date: run python -m builder.refresh_constraints",
                  file=sys.stderr)
            return 1
        print(f"{out} is up to date ({len(_pins(text))} pins)")
        return 0
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({len(_pins(text))} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
