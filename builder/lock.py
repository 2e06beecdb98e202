"""`kiln lock`: pin a service's packages, with the runtime's own, into requirements.lock.

pip resolves service.yaml `packages:` and the runtime's requirements against the constraints
CI tested (images/constraints.txt), with an interpreter of service.yaml's `python:`, and
writes every package it would install as `name==version`. `kiln build` installs exactly these
(`--no-deps`) when the file is there, so a rebuild next month gets the same versions.

The lock's header holds two digests: one of `packages:` and `python:`, one of the runtime's
requirements and constraints. A build whose digests differ refuses the lock rather than
install something else than service.yaml asks for.

Like `kiln build`, resolving ignores this machine's pip configuration (the image never sees
it): the index and the CA bundle come from --index-url and --ca-bundle only.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from builder import runtime_dist
from builder.errors import BuildError, LockError
from runtime.config import ServiceConfig, load_service

Echo = Callable[[str], None]
LOCK_FILE = "requirements.lock"
_HEADER_KEY = re.compile(r"^# (python|packages|runtime): (\S+)")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(==\S+| @ \S+)$")
_FULL_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


@dataclass(frozen=True)
class Lock:
    """A requirements.lock: what it was made for, and its pins (`name==version` lines)."""

    python: str
    packages_digest: str
    runtime_digest: str
    pins: tuple[str, ...]
    resolved_with: str = ""      # informative only: the interpreter pip resolved with

    def versions(self) -> dict[str, str]:
        """{canonical name: version (or ` @ url`)} of the pins."""
        return dict(_split(pin) for pin in self.pins)


@dataclass(frozen=True)
class LockOptions:
    """What `kiln lock` was asked for, beyond service.yaml."""

    python: str | None = None          # an interpreter to resolve with; None: find one
    index_url: str | None = None
    ca_bundle: Path | None = None
    quiet: bool = False


@dataclass
class LockResult:
    """A written requirements.lock and what changed in it (None: there was none before)."""

    path: Path
    lock: Lock
    changes: list[str] | None


def canonical(name: str) -> str:
    """A package name as PEP 503 compares them (`PyYAML`, `pyyaml` and `py_yaml` are one)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(pin: str) -> tuple[str, str]:
    match = _PIN.match(pin)
    if match is None:
        raise LockError(f"{pin!r} is not a `name==version` or `name @ url` line")
    return canonical(match.group(1)), match.group(2).removeprefix("==")


def service_packages(config: ServiceConfig) -> list[str]:
    """service.yaml `packages:`, each checked to be one requirement line."""
    packages: list[str] = config.get("packages")
    for requirement in packages:
        if "\n" in requirement or not requirement.strip():
            raise BuildError(f"{config.path}: packages: {requirement!r} is not one requirement")
    return packages


def constraints_text() -> str:
    """The constraints file every build applies (images/constraints.txt)."""
    return files("images").joinpath("constraints.txt").read_text(encoding="utf-8")


def constraint_pins(text: str) -> dict[str, str]:
    """{canonical name: version} of the `name==version` lines of TEXT (markers left out)."""
    lines = (line.split("#")[0].split(";")[0].strip() for line in text.splitlines())
    return dict(_split(line) for line in lines if line)


def _digest(data: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def packages_digest(python: str, packages: list[str]) -> str:
    """What a lock was made for, from service.yaml: its `python:` and its `packages:`."""
    return _digest({"python": python, "packages": sorted(p.strip() for p in packages)})


def runtime_digest(requirements: list[str], constraints: str) -> str:
    """What a lock was made for, from kiln: the runtime's requirements and their constraints."""
    lines = (" ".join(line.split("#")[0].split()) for line in constraints.splitlines())
    return _digest({"requirements": sorted(requirements),
                    "constraints": sorted(line for line in lines if line)})


def render_lock(lock: Lock, service_id: str) -> str:
    """The text of requirements.lock."""
    resolved = f" (resolved with {lock.resolved_with})" if lock.resolved_with else ""
    header = [
        f"# requirements.lock of {service_id}: written by `kiln lock`; `kiln build` installs",
        "# exactly these versions. Run `kiln lock` again after changing packages: or python:",
        "# in service.yaml, or after upgrading kiln.",
        f"# python: {lock.python}{resolved}",
        f"# packages: {lock.packages_digest}",
        f"# runtime: {lock.runtime_digest}",
    ]
    return "\n".join([*header, *lock.pins]) + "\n"


def parse_lock(text: str, path: Path | str = LOCK_FILE) -> Lock:
    """The Lock in TEXT (a requirements.lock written by render_lock)."""
    keys: dict[str, str] = {}
    pins: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        header = _HEADER_KEY.match(line)
        if header:
            keys[header.group(1)] = header.group(2)
        elif line and not line.startswith("#"):
            try:
                _split(line)
            except LockError as err:
                raise LockError(f"{path}:{number}: {err}; run `kiln lock` again") from err
            pins.append(line)
    missing = [key for key in ("python", "packages", "runtime") if key not in keys]
    if missing:
        raise LockError(f"{path}: no `# {missing[0]}:` line, so not written by `kiln lock`; "
                        f"run `kiln lock` again")
    return Lock(keys["python"], keys["packages"], keys["runtime"], tuple(pins))


def read_lock(config: ServiceConfig) -> Lock | None:
    """The service's requirements.lock, or None when it has none."""
    path = config.root / LOCK_FILE
    if not path.is_file():
        return None
    return parse_lock(path.read_text(encoding="utf-8"), path)


def check_lock(lock: Lock, config: ServiceConfig, runtime_requirements: list[str],
               constraints: str) -> None:
    """Raise LockError when LOCK was made for other packages, python or runtime than these."""
    path = config.root / LOCK_FILE
    again = f"run `kiln lock {config.root}` again"
    python = config.get("python")
    if lock.python != python:
        raise LockError(f"{path}: locked for Python {lock.python}, but service.yaml has python: "
                        f"{python}; {again}")
    if lock.packages_digest != packages_digest(python, service_packages(config)):
        raise LockError(f"{path}: service.yaml packages: changed since it was locked; {again}")
    if lock.runtime_digest != runtime_digest(runtime_requirements, constraints):
        raise LockError(f"{path}: locked for another version of the kiln runtime's "
                        f"dependencies; {again}")


def changes(old: Lock | None, new: Lock) -> list[str]:
    """`name old -> new`, `+ name version` and `- name version`, one per changed package."""
    before = old.versions() if old else {}
    after = new.versions()
    out = []
    for name in sorted(before.keys() | after.keys()):
        if name not in before:
            out.append(f"+ {name} {after[name]}")
        elif name not in after:
            out.append(f"- {name} {before[name]}")
        elif before[name] != after[name]:
            out.append(f"  {name} {before[name]} -> {after[name]}")
    return out


def pins_from_report(report: dict[str, Any]) -> list[str]:
    """The `name==version` (or `name @ url`) lines of what a pip installation report installs."""
    pins = []
    for item in report.get("install", []):
        name = canonical(item["metadata"]["name"])
        info = item.get("download_info") or {}
        if not item.get("is_direct"):
            pins.append(f"{name}=={item['metadata']['version']}")
        elif "vcs_info" in info:
            vcs = info["vcs_info"]
            pins.append(f"{name} @ {vcs['vcs']}+{info['url']}@{vcs['commit_id']}")
        elif "dir_info" in info:
            raise LockError(f"packages: {name} is a folder on this machine ({info['url']}); "
                            f"an image cannot install it: publish it to an index or a URL")
        else:
            pins.append(f"{name} @ {info['url']}")
    return sorted(pins, key=lambda pin: _split(pin)[0])


def _probe(command: str) -> tuple[str, str] | None:
    """(X.Y.Z, sys.executable) of the interpreter COMMAND, or None when it does not run."""
    code = "import platform, sys; print(platform.python_version(), sys.executable)"
    try:
        done = subprocess.run([command, "-c", code], capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = done.stdout.split(maxsplit=1)
    if done.returncode != 0 or len(parts) != 2:
        return None
    return parts[0], parts[1].strip()


def _pyenv_pythons(version: str) -> list[str]:
    """pyenv's X.Y.Z builds of VERSION (X.Y), newest first."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found = []
    for folder in root.glob(f"{version}.*"):
        match = _FULL_VERSION.match(folder.name)
        if match and (folder / "bin" / f"python{version}").is_file():
            found.append((int(match.group(3)), str(folder / "bin" / f"python{version}")))
    return [path for _, path in sorted(found, reverse=True)]


def find_python(version: str, explicit: str | None = None) -> tuple[str, str]:
    """(path, X.Y.Z) of a Python VERSION (X.Y): EXPLICIT, this one, pythonX.Y on PATH or pyenv's."""
    if explicit is not None:
        probed = _probe(explicit)
        if probed is None:
            raise LockError(f"--python: {explicit}: does not run as a Python interpreter")
        if not probed[0].startswith(f"{version}."):
            raise LockError(f"--python: {explicit} is Python {probed[0]}, but service.yaml has "
                            f"python: {version}")
        return probed[1], probed[0]
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable, ".".join(map(str, sys.version_info[:3]))
    for command in [f"python{version}", *_pyenv_pythons(version)]:
        probed = _probe(command)
        if probed is not None and probed[0].startswith(f"{version}."):
            return probed[1], probed[0]
    raise LockError(f"no Python {version} found to resolve service.yaml packages with "
                    f"(python: {version}); install it (e.g. `pyenv install {version}`) or pass "
                    f"--python PATH")


def pip_command(interpreter: str) -> list[str]:
    """This environment's pip, run for INTERPRETER; or INTERPRETER's own pip if we have none."""
    if importlib.util.find_spec("pip") is None:
        return [interpreter, "-m", "pip"]
    if interpreter == sys.executable:
        return [sys.executable, "-m", "pip"]
    return [sys.executable, "-m", "pip", "--python", interpreter]


def pip_env(options: LockOptions) -> dict[str, str]:
    """The environment pip resolves in: none of this machine's pip settings, only OPTIONS'."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    if options.index_url:
        env["PIP_INDEX_URL"] = options.index_url    # in the environment, not in `ps`
    if options.ca_bundle is not None:
        env["PIP_CERT"] = str(Path(options.ca_bundle).resolve())
    return env


def _block(lines: list[str], title: str) -> list[str]:
    """The indented lines under TITLE in pip's output."""
    if title not in lines:
        return []
    block = []
    for line in lines[lines.index(title) + 1:]:
        if not line.startswith("    "):
            break
        block.append(line.strip())
    return block


def pip_failure(lines: list[str], python: str) -> LockError:
    """One line on why pip could not resolve, from its output."""
    errors = [line.strip() for line in lines if line.startswith("ERROR:")]
    cause = errors[0] if errors else (lines[-1].strip() if lines else "no output")
    conflict = _block(lines, "The conflict is caused by:")
    if conflict:
        cause += f" ({'; '.join(conflict)})"
    unavailable = _block(lines, "Additionally, some packages in these conflicts have no "
                                "matching distributions available for your environment:")
    if unavailable:
        cause += f"; no release of {', '.join(unavailable)} installs on Python {python}"
    if any("CERTIFICATE_VERIFY_FAILED" in line for line in lines):
        cause += ("; TLS certificates were not trusted: pass the CA bundle of your network "
                  "(proxy) with --ca-bundle FILE")
    return LockError(f"pip could not resolve the packages for Python {python}: {cause}")


def resolve(requirements: list[str], constraints: str, interpreter: str, python: str,
            options: LockOptions, echo: Echo = print) -> tuple[list[str], dict[str, Any]]:
    """(pins, pip's report) of what pip would install for REQUIREMENTS under CONSTRAINTS."""
    with tempfile.TemporaryDirectory(prefix="kiln-lock-") as folder:
        work = Path(folder)
        (work / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
        (work / "constraints.txt").write_text(constraints, encoding="utf-8")
        command = [*pip_command(interpreter), "install", "--dry-run", "--ignore-installed",
                   "--progress-bar", "off", "--report", str(work / "report.json"),
                   "-r", str(work / "requirements.txt"), "-c", str(work / "constraints.txt")]
        lines: list[str] = []
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=pip_env(options), cwd=folder) as pip:
            assert pip.stdout is not None
            for raw in pip.stdout:
                line = raw.rstrip()
                lines.append(line)
                if not options.quiet and line.startswith("Collecting "):
                    echo(f"  {line.split(' (from ')[0]}")
        if pip.returncode != 0 or not (work / "report.json").is_file():
            raise pip_failure(lines, python)
        report = json.loads((work / "report.json").read_text(encoding="utf-8"))
    return pins_from_report(report), report


def lock(directory: str | Path, options: LockOptions, echo: Echo = print) -> LockResult:
    """Resolve DIRECTORY's service.yaml packages into DIRECTORY/requirements.lock."""
    config = load_service(directory)
    python = config.get("python")
    packages = service_packages(config)
    runtime_requirements = runtime_dist.requirements()
    constraints = constraints_text()
    if options.ca_bundle is not None and not Path(options.ca_bundle).is_file():
        raise LockError(f"--ca-bundle: {options.ca_bundle}: not a file")
    if sys.platform != "linux":
        echo(f"warning: resolving on {sys.platform}; images run Linux, so a package whose "
             f"requirements depend on the platform may lock differently from what it needs")
    interpreter, full_version = find_python(python, options.python)
    echo(f"Locking {len(packages)} service.yaml package(s) and the kiln runtime's "
         f"{len(runtime_requirements)} requirements for Python {python} "
         f"(pip with {interpreter}, Python {full_version})")
    pins, report = resolve([*packages, *runtime_requirements], constraints, interpreter, python,
                           options, echo)
    new = Lock(python, packages_digest(python, packages),
               runtime_digest(runtime_requirements, constraints), tuple(pins),
               resolved_with=f"Python {full_version}, pip {report.get('pip_version', '?')}")
    path = config.root / LOCK_FILE
    try:
        old = read_lock(config)
    except LockError:
        old = None  # unreadable: written over, as any lock is
    path.write_text(render_lock(new, config.id), encoding="utf-8")
    return LockResult(path, new, None if old is None else changes(old, new))
