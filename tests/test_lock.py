"""`kiln lock` and the constraints: the lock file, its checks, the Dockerfile with and without it,
and, on a real engine, two builds from one lock that install the same versions."""
from __future__ import annotations

import contextlib
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from builder import runtime_dist
from builder.build import Progress
from builder.context import write_context
from builder.dockerfile import BuildOptions, render_dockerfile
from builder.errors import LockError
from builder.lock import (
    LOCK_FILE,
    Lock,
    _pyenv_pythons,
    canonical,
    changes,
    check_lock,
    constraint_pins,
    constraints_text,
    packages_digest,
    parse_lock,
    pins_from_report,
    pip_failure,
    render_lock,
    runtime_digest,
)
from builder.refresh_constraints import _marker
from runtime.cli import cli
from runtime.config import PYTHON_VERSIONS, load_service
from tests.docker_fixtures import CA_BUNDLE
from tests.support import SERVICES

IMAGED = SERVICES / "imaged"
PINS = ("flask==3.1.3", "six==1.17.0")
OTHER_PYTHON = "3.13" if sys.version_info[:2] != (3, 13) else "3.12"


def service(tmp_path: Path, **settings: Any) -> Path:
    """A copy of the imaged test service with service.yaml settings replaced."""
    folder = tmp_path / f"svc-{uuid.uuid4().hex[:6]}"
    shutil.copytree(IMAGED, folder, ignore=shutil.ignore_patterns("__pycache__"))
    data = yaml.safe_load((folder / "service.yaml").read_text())
    data.update(settings)
    (folder / "service.yaml").write_text(yaml.safe_dump(data))
    return folder


def fitting_lock(folder: Path, changed: dict[str, str] | None = None) -> Lock:
    """A lock of PINS made for FOLDER's service.yaml and this kiln, with CHANGED fields, written
    there."""
    config = load_service(folder)
    lock = Lock(config.get("python"), packages_digest(config.get("python"), config.get("packages")),
                runtime_digest(runtime_dist.requirements(), constraints_text()), PINS)
    lock = Lock(**{**lock.__dict__, **(changed or {})})
    (folder / LOCK_FILE).write_text(render_lock(lock, config.id))
    return lock


# -- the lock file ---------------------------------------------------------------------------

def test_a_lock_reads_back_as_written() -> None:
    lock = Lock("3.11", "sha256:aa", "sha256:bb", PINS, resolved_with="Python 3.11.7, pip 26.3")
    text = render_lock(lock, "add-numbers")
    assert text.startswith("# requirements.lock of add-numbers: written by `kiln lock`; "
                           "`kiln build` installs\n")
    assert "# python: 3.11 (resolved with Python 3.11.7, pip 26.3)\n" in text
    assert text.endswith("flask==3.1.3\nsix==1.17.0\n")
    assert parse_lock(text) == Lock("3.11", "sha256:aa", "sha256:bb", PINS)


@pytest.mark.parametrize(("text", "message"), [
    ("flask==3.1.3\n", "requirements.lock: no `# python:` line, so not written by `kiln lock`"),
    ("# python: 3.11\n# packages: sha256:a\nsix==1\n", "no `# runtime:` line"),
    ("# python: 3.11\n# packages: a\n# runtime: b\n\nflask>=3\n",
     ("requirements.lock:5: 'flask>=3' is not a `name==version` or `name @ url` line; "
     "run `kiln lock` again")),
])
def test_a_broken_lock_is_named(text: str, message: str) -> None:
    with pytest.raises(LockError) as err:
        parse_lock(text, "requirements.lock")
    assert message in str(err.value)


def test_the_packages_digest_follows_python_and_packages_but_not_their_order() -> None:
    digest = packages_digest("3.11", ["six>=1.16", "numpy"])
    assert digest.startswith("sha256:")
    assert packages_digest("3.11", ["numpy", " six>=1.16"]) == digest
    assert packages_digest("3.12", ["six>=1.16", "numpy"]) != digest
    assert packages_digest("3.11", ["six>=1.17", "numpy"]) != digest


def test_the_runtime_digest_follows_requirements_and_constraints() -> None:
    digest = runtime_digest(["flask>=3"], "# a comment\nflask==3.1.3\n")
    assert runtime_digest(["flask>=3"], "flask==3.1.3  # tested\n") == digest
    assert runtime_digest(["flask>=3"], "flask==3.1.2\n") != digest
    assert runtime_digest(["flask>=3", "six"], "flask==3.1.3\n") != digest


@pytest.mark.parametrize(("changed", "message"), [
    ({}, None),
    ({"python": "3.12"}, "locked for Python 3.12, but service.yaml has python: 3.11"),
    ({"packages_digest": "sha256:0"}, "service.yaml packages: changed since it was locked"),
    ({"runtime_digest": "sha256:0"}, ("locked for another version of the kiln runtime's "
                                     "dependencies")),
])
def test_a_lock_that_does_not_fit_is_refused(tmp_path: Path, changed: dict[str, str],
                                             message: str | None) -> None:
    folder = service(tmp_path)
    lock = fitting_lock(folder, changed)
    config = load_service(folder)
    if message is None:
        check_lock(lock, config, runtime_dist.requirements(), constraints_text())
        return
    with pytest.raises(LockError) as err:
        check_lock(lock, config, runtime_dist.requirements(), constraints_text())
    assert str(err.value) == f"{folder / LOCK_FILE}: {message}; run `kiln lock {folder}` again"


@pytest.mark.parametrize(("before", "after", "expected"), [
    (PINS, PINS, []),
    (PINS, ("flask==3.1.4", "six==1.17.0"), ["  flask 3.1.3 -> 3.1.4"]),
    (PINS, ("Flask==3.1.3",), ["- six 1.17.0"]),
    (("six==1.17.0",), PINS, ["+ flask 3.1.3"]),
])
def test_changes(before: tuple[str, ...], after: tuple[str, ...], expected: list[str]) -> None:
    assert changes(Lock("3.11", "a", "b", before), Lock("3.11", "a", "b", after)) == expected


def test_pins_from_a_pip_report() -> None:
    report = {"install": [
        {"metadata": {"name": "PyYAML", "version": "6.0.4"}, "is_direct": False,
         "download_info": {"url": "https://index.example/pyyaml.whl", "archive_info": {}}},
        {"metadata": {"name": "my_tool", "version": "1.0"}, "is_direct": True,
         "download_info": {"url": "https://git.example/my-tool",
                           "vcs_info": {"vcs": "git", "commit_id": "abc123"}}},
        {"metadata": {"name": "flask", "version": "3.1.3"}, "is_direct": True,
         "download_info": {"url": "https://files.example/flask-3.1.3.tar.gz",
                           "archive_info": {}}},
    ]}
    assert pins_from_report(report) == ["flask @ https://files.example/flask-3.1.3.tar.gz",
                                        "my-tool @ git+https://git.example/my-tool@abc123",
                                        "pyyaml==6.0.4"]
    local = {"install": [{"metadata": {"name": "mine", "version": "1"}, "is_direct": True,
                          "download_info": {"url": "file:///home/me/mine", "dir_info": {}}}]}
    with pytest.raises(LockError, match="mine is a folder on this machine"):
        pins_from_report(local)


@pytest.mark.parametrize(("lines", "message"), [
    (["Collecting nopkg", "ERROR: Could not find a version that satisfies the requirement nopkg",
      "ERROR: No matching distribution found for nopkg"],
     "ERROR: Could not find a version that satisfies the requirement nopkg"),
    ([("ERROR: Cannot install apispec>=6.8.1 because these package versions have conflicting "
      "dependencies."), "", "The conflict is caused by:", "    The user requested apispec>=6.8.1",
      "    The user requested (constraint) apispec==6.10.1", "",
      ("Additionally, some packages in these conflicts have no matching distributions available "
      "for your environment:"), "    apispec", "", "ERROR: ResolutionImpossible: for help"],
     ("conflicting dependencies. (The user requested apispec>=6.8.1; The user requested "
     "(constraint) apispec==6.10.1); no release of apispec installs on Python 3.10")),
    (["WARNING: Retrying ... [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
      "ERROR: No matching distribution found for six"],
     "found for six; TLS certificates were not trusted: pass the CA bundle"),
])
def test_a_failed_resolve_says_why_in_one_line(lines: list[str], message: str) -> None:
    error = str(pip_failure(lines, "3.10"))
    assert error.startswith("pip could not resolve the packages for Python 3.10: ERROR: ")
    assert message in error and "\n" not in error


def test_pyenv_builds_newest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("3.12.1", "3.12.10", "3.12-dev", "3.1.2", "3.12.3"):
        (tmp_path / "versions" / name / "bin").mkdir(parents=True)
        if name != "3.12.3":  # a build without its interpreter is passed over
            (tmp_path / "versions" / name / "bin" / "python3.12").write_text("")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    assert _pyenv_pythons("3.12") == [str(tmp_path / f"versions/{v}/bin/python3.12")
                                      for v in ("3.12.10", "3.12.1")]


# -- the constraints -------------------------------------------------------------------------

def test_the_constraints_pin_every_runtime_requirement() -> None:
    pinned = constraint_pins(constraints_text())
    for requirement in runtime_dist.requirements():
        assert canonical(requirement.split("[")[0].split(">")[0].split("=")[0]) in pinned
    assert not {"docker", "cookiecutter"} & pinned.keys()


@pytest.mark.parametrize(("pythons", "marker"), [
    (list(PYTHON_VERSIONS), ""),
    (["3.10"], '; python_version == "3.10"'),
    (["3.11", "3.12", "3.13"], '; python_version >= "3.11"'),
    (["3.10", "3.11"], '; python_version <= "3.11"'),
    (["3.11", "3.12"], '; python_version >= "3.11" and python_version <= "3.12"'),
    (["3.10", "3.12"], '; python_version == "3.10" or python_version == "3.12"'),
])
def test_constraint_markers(pythons: list[str], marker: str) -> None:
    assert PYTHON_VERSIONS == ("3.10", "3.11", "3.12", "3.13")
    assert _marker(pythons) == marker


# -- the Dockerfile and the context ----------------------------------------------------------

@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_every_build_installs_under_the_constraints(tmp_path: Path, target: str) -> None:
    config = load_service(service(tmp_path))
    step = "COPY kiln-build/requirements.txt kiln-build/constraints.txt /tmp/kiln/\n"
    free = render_dockerfile(config, BuildOptions(target=target))
    assert (step + "RUN /opt/venv/bin/pip install -r /tmp/kiln/requirements.txt "
            "-c /tmp/kiln/constraints.txt\n") in free
    locked = render_dockerfile(config, BuildOptions(target=target), locked=True)
    assert (step + "RUN /opt/venv/bin/pip install --no-deps -r /tmp/kiln/requirements.txt "
            "-c /tmp/kiln/constraints.txt && /opt/venv/bin/pip check\n") in locked


def test_the_context_carries_the_constraints_and_the_lock(tmp_path: Path) -> None:
    folder = service(tmp_path)
    unlocked = write_context(load_service(folder), BuildOptions(), tmp_path / "a")
    assert unlocked.lock is None
    kit = unlocked.folder / "kiln-build"
    assert (kit / "constraints.txt").read_text() == constraints_text()
    assert "six>=1.16" in (kit / "requirements.txt").read_text().splitlines()
    fitting_lock(folder)
    locked = write_context(load_service(folder), BuildOptions(), tmp_path / "b")
    assert locked.lock is not None and locked.lock.pins == PINS
    assert (locked.folder / "kiln-build/requirements.txt").read_text() == (
        "# requirements.lock (kiln lock)\nflask==3.1.3\nsix==1.17.0\n")
    assert "--no-deps -r /tmp/kiln/requirements.txt" in locked.dockerfile


def test_a_build_that_conflicts_with_the_constraints_says_so() -> None:
    progress = Progress(lambda line: None, quiet=True)
    step = ("Step 10/23 : RUN /opt/venv/bin/pip install -r /tmp/kiln/requirements.txt "
            "-c /tmp/kiln/constraints.txt")
    for line in [step, ("ERROR: Cannot install flask<3 because these package versions have "
                 "conflicting dependencies."), "The conflict is caused by:",
                 "    The user requested (constraint) flask==3.1.3",
                 "ERROR: ResolutionImpossible: for help visit https://pip.example/topics"]:
        progress.feed({"stream": line + "\n"})
    error = str(progress.failure({"error": "The command returned a non-zero code: 1"}))
    assert error.endswith("-c /tmp/kiln/constraints.txt): ERROR: Cannot install flask<3 because "
                          "these package versions have conflicting dependencies.; service.yaml "
                          "packages conflict with the versions the kiln runtime was tested "
                          "with (kiln's images/constraints.txt)")


def test_build_refuses_a_stale_lock_in_one_line(tmp_path: Path) -> None:
    folder = service(tmp_path)
    fitting_lock(folder)
    data = yaml.safe_load((folder / "service.yaml").read_text())
    data["packages"] = ["six>=1.16", "numpy"]
    (folder / "service.yaml").write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(cli, ["build", str(folder), "--dockerfile-only",
                                      str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output == (f"Error: {folder / LOCK_FILE}: service.yaml packages: changed "
                             f"since it was locked; run `kiln lock {folder}` again\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "settings", "message"), [
    (["--python", "/no/such/python"], {},
     "Error: --python: /no/such/python: does not run as a Python interpreter"),
    (["--python", sys.executable], {"python": OTHER_PYTHON},
     (f"Error: --python: {sys.executable} is Python {'.'.join(map(str, sys.version_info[:3]))}, "
     f"but service.yaml has python: ")),
    (["--ca-bundle", "/no/such/ca.pem"], {}, "Error: --ca-bundle: /no/such/ca.pem: not a file"),
    ([], {"size": "huge"}, "size: 'huge' is not allowed"),
])
def test_lock_refuses_bad_options_in_one_line(tmp_path: Path, args: list[str],
                                              settings: dict[str, Any], message: str) -> None:
    folder = service(tmp_path, **settings)
    result = CliRunner().invoke(cli, ["lock", str(folder), *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: ")
    assert not (folder / LOCK_FILE).exists()


# -- for real: lock once, build twice -------------------------------------------------------

def _freeze(client: Any, tag: str) -> dict[str, str]:
    """{canonical name: version or ` @ url`} of `pip freeze` in the image TAG, pip's own tools
    left out."""
    out = client.containers.run(tag, entrypoint=["python", "-m", "pip", "freeze"], remove=True)
    versions = {}
    for line in out.decode().splitlines():
        name, version = line.split(" @ " if " @ " in line else "==", 1)
        if canonical(name) not in ("pip", "setuptools", "wheel"):
            versions[canonical(name)] = version
    return versions


@pytest.mark.docker
@pytest.mark.slow
def test_two_builds_from_one_lock_install_the_same_versions(
        tmp_path: Path, docker_engine: Any, standin_images: tuple[str, str]) -> None:
    folder = service(tmp_path)
    locked = CliRunner().invoke(cli, ["lock", str(folder), "--ca-bundle", str(CA_BUNDLE)])
    assert locked.exit_code == 0, locked.output
    assert "packages pinned (new)" in locked.output
    lock = parse_lock((folder / LOCK_FILE).read_text())
    assert lock.versions()["six"] == constraint_pins(constraints_text())["six"]
    again = CliRunner().invoke(cli, ["lock", str(folder), "--ca-bundle", str(CA_BUNDLE), "-q"])
    assert again.exit_code == 0 and "(nothing changed)" in again.output, again.output

    tags = [f"kiln-test/locked:{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        for tag in tags:
            built = CliRunner().invoke(cli, [
                "build", str(folder), "--tag", tag, "--no-cache", "--quiet",
                "--base-image", standin_images[0], "--ca-bundle", str(CA_BUNDLE)])
            assert built.exit_code == 0, built.output
            assert "packages from requirements.lock" in built.output
        first, second = (_freeze(docker_engine, tag) for tag in tags)
        assert first == second
        assert first.pop("kiln").endswith(".whl")  # the runtime itself, from its wheel
        assert first == lock.versions()
    finally:
        for tag in tags:
            with contextlib.suppress(Exception):  # a build that failed left no tag
                docker_engine.api.remove_image(tag, force=True)
