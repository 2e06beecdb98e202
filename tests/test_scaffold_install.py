"""kiln installed from its wheel (not editable) in a fresh venv: scaffold, test and serve both templates.

The wheel is built from a copy of this checkout and installed with pip's defaults (so pip
byte-compiles the templates, as it does for users). Its dependencies come from a folder
built once with `pip install --target` from the wheel's own requirements and reused across
runs (~/.cache/kiln/test-deps/<hash>), put on the venv's path by a .pth file: kiln itself is the
only thing installed into the venv.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support import ROOT, Server

pytestmark = pytest.mark.slow

#: Needed by the generated services' own tests and the model example, not by kiln.
TEST_REQUIREMENTS = ("pytest", "scikit-learn", "joblib")
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".cache", ".*_cache", "demo")
#: What the model template's README tells users to run.
SAVE_IRIS_MODEL = """
import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=1000).fit(X, y), "model.joblib")
"""
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@dataclass
class Installed:
    """A fresh venv with kiln installed from its wheel, and an empty folder to work in."""

    venv: Path
    wheel: Path
    work: Path
    env: dict[str, str]
    #: What building the wheel printed (pip -v shows the build backend's warnings).
    build_log: str

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), cwd=cwd or self.work, env=self.env, capture_output=True,
                              text=True, timeout=300, check=False)

    def ok(self, *args: str, cwd: Path | None = None) -> str:
        done = self.run(*args, cwd=cwd)
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout


def _pip(*args: str) -> str:
    """pip's output (stdout and stderr) once it has succeeded."""
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _requirements(wheel: Path) -> list[str]:
    """The wheel's install_requires (Requires-Dist without an extra), plus TEST_REQUIREMENTS."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    found = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
             if line.startswith("Requires-Dist:") and "extra ==" not in line]
    return sorted(found) + list(TEST_REQUIREMENTS)


def _dependencies(requirements: list[str]) -> Path:
    """A folder holding REQUIREMENTS, built once per set of requirements and Python version."""
    key = hashlib.sha256("\n".join([sys.version, *requirements]).encode()).hexdigest()[:16]
    # Shared by every checkout on the machine (a fresh clone's first run fills it, as the
    # base images' rootfs cache in tests/infra/base-images.sh): the key is all it depends on.
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kiln" / \
        "test-deps" / key
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(str(folder) + f".{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        _pip("install", "-q", "--target", str(staging), *requirements)
        try:
            staging.rename(folder)
        except OSError:  # another run finished the same folder first
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def _purelib(venv: Path) -> Path:
    """The venv's site-packages (the venv runs this Python's version)."""
    paths = sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})
    return Path(paths["purelib"])


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, base / "src", ignore=NOT_COPIED)
    build_log = _pip("wheel", "-v", "--no-deps", "-w", str(base / "dist"), str(base / "src"))
    wheel = next((base / "dist").glob("kiln-*.whl"))
    deps = _dependencies(_requirements(wheel))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    (_purelib(venv) / "kiln-test-deps.pth").write_text(f"{deps}\n")
    _pip("--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel))
    _pip("--python", str(python), "check")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = base / "work"
    work.mkdir()
    yield Installed(venv, wheel, work, env, build_log)


def test_the_wheel_carries_every_template_and_image_file(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as archive:
        names = set(archive.namelist())
    for package in ("templates", "images"):
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                assert path.relative_to(ROOT).as_posix() in names, f"{path} is not in the wheel"
    assert "templates/custom/{{cookiecutter.id}}/.gitignore" in names
    assert "runtime/service.schema.json" in names


def test_the_wheel_builds_without_setuptools_packaging_warnings(installed: Installed) -> None:
    # The template folders hold no __init__.py: under `packages = find:` setuptools warned that
    # it would stop shipping them ("Package 'templates.model' is absent from the `packages`
    # configuration"); setup.cfg finds them as namespace packages instead.
    assert "absent from the `packages` configuration" not in installed.build_log
    assert "Package would be ignored" not in installed.build_log


def test_kiln_comes_from_the_venv_not_the_checkout(installed: Installed) -> None:
    where = installed.ok(installed.bin("python"), "-c", "import runtime; print(runtime.__file__)")
    assert where.startswith(str(installed.venv)), where


def _no_debris(folder: Path) -> None:
    debris = [p for p in folder.rglob("*") if p.name == "__pycache__" or p.suffix == ".pyc"]
    assert debris == []


def test_custom_service_from_the_wheel(installed: Installed, tmp_path: Path) -> None:
    assert "new-service" in installed.ok(installed.bin("kiln"), "--help")
    assert "new-service" in installed.ok(installed.bin("scaffold"), "--help")
    installed.ok(installed.bin("scaffold"), "new-service", "demo-svc", "--no-input")
    folder = installed.work / "demo-svc"
    _no_debris(folder)
    assert (folder / ".gitignore").is_file() and (folder / ".kiln" / "service.schema.json").is_file()

    tested = installed.ok(installed.bin("python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          cwd=folder)
    assert "6 passed" in tested

    server = Server(["serve", "demo-svc"], tmp_path / "serve.log", cwd=installed.work,
                    env=installed.env, program=[installed.bin("kiln")])
    try:
        server.wait_ready()
        assert server.post("/api/v1.0/predict", json={"input": [2, 5]}).json()["prediction"] == 7
        assert server.post("/add-numbers", json={"num1": 2, "num2": 5}).json() == {"result": 7}
        status = server.get("/api/v1.0/health/status")
        assert status.status_code == 200 and status.json()["service"] == "demo-svc"
        _check_specs(server.get("/docs/specs.json"))
    finally:
        server.stop()


def _check_specs(response: requests.Response) -> None:
    from openapi_spec_validator import validate

    assert response.status_code == 200, response.text
    spec = response.json()
    validate(spec)
    operation = spec["paths"]["/add-numbers"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/AddNumbers"}
    assert "AddNumbers" in spec["components"]["schemas"]


def test_model_service_from_the_wheel(installed: Installed, tmp_path: Path) -> None:
    installed.ok(installed.bin("kiln"), "new-service", "iris", "--template", "model",
                 "--no-input")
    folder = installed.work / "iris"
    _no_debris(folder)
    assert "2 skipped" in installed.ok(installed.bin("python"), "-m", "pytest", "-q",
                                       "-p", "no:cacheprovider", cwd=folder)
    installed.ok(installed.bin("python"), "-c", SAVE_IRIS_MODEL, cwd=folder)
    assert "2 passed" in installed.ok(installed.bin("python"), "-m", "pytest", "-q",
                                      "-p", "no:cacheprovider", cwd=folder)

    server = Server(["serve", "iris"], tmp_path / "serve.log", cwd=installed.work,
                    env=installed.env, program=[installed.bin("kiln")])
    try:
        server.wait_ready()
        answer = server.post("/api/v1.0/predict", json={"input": IRIS_ROWS})
        assert answer.status_code == 200, answer.text
        assert answer.json()["prediction"] == [0, 2]
    finally:
        server.stop()
