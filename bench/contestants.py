"""The servers bench/run compares, and what they need before the first run.

(a) bare Flask under gunicorn, (b) the iris service under `kiln serve`, (c) rest-model-service
0.6.0 under gunicorn with uvicorn workers, in its own venv, (d) a plain WSGI callable under
gunicorn, (e) the iris service with adaptive batching (`predict.batch`) under `kiln serve`,
(f) a bare FastAPI app under gunicorn with uvicorn workers, in its own venv. (a) and (d) get the workers, worker class and threads kiln resolves for the
service, so the framework is the only difference; (c) gets the same number of workers.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import venv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procs import Process, free_port

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SERVICE = BENCH / "iris-service"
#: (e): the same service and model file with predict.batch.
BATCH_SERVICE = BENCH / "iris-batch-service"
VENVS = BENCH / ".venvs"
RMS_VENV = VENVS / "rest-model-service"
RMS_REQUIREMENT = "rest-model-service==0.6.0"
FASTAPI_VENV = VENVS / "fastapi"
#: Tokens for kiln's `auth.mode: token`, when the service turns auth on.
AUTH_TOKEN = "bench-token-0123456789"


@dataclass
class Contestant:
    """One server under test: how to start it, where it predicts, how to tell it is ready."""

    key: str
    name: str
    command: list[str]
    predict_path: str
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = BENCH
    auth: str | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def process(self, logs: Path) -> Process:
        return Process(self.name, self.command, self.env, self.cwd, logs / f"{self.key}.log")

    def describe(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items())
                       if k != "KILN_AUTH_TOKENS")
        return f"(cd {self.cwd.relative_to(ROOT) or '.'} && {env} {shlex.join(self.command)})"


def kiln_settings(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The gunicorn settings `kiln serve` resolves for the bench service (workers, class, threads)."""
    sys.path.insert(0, str(ROOT))
    from runtime.config import load_service
    from runtime.serving.settings import options

    merged = options(load_service(SERVICE), "127.0.0.1", 0, env=env)
    return {"workers": int(merged["workers"]), "worker_class": str(merged.get("worker_class", "sync")),
            "threads": int(merged.get("threads", 1))}


def auth_mode() -> str:
    """The bench service's auth.mode (`none` until the auth feature is merged and turned on)."""
    sys.path.insert(0, str(ROOT))
    from runtime.config import load_service

    return str(load_service(SERVICE).get("auth.mode"))


def _gunicorn(app: str, port: int, settings: dict[str, Any]) -> list[str]:
    command = [sys.executable, "-m", "gunicorn", "--no-control-socket",
               "--bind", f"127.0.0.1:{port}", "--workers", str(settings["workers"]),
               "--worker-class", settings["worker_class"], "--threads", str(settings["threads"]),
               "--timeout", "1800"]
    if os.path.isdir("/dev/shm"):
        command += ["--worker-tmp-dir", "/dev/shm"]
    return [*command, app]


def _uvicorn(venv: Path, app: str, port: int, settings: dict[str, Any]) -> list[str]:
    """gunicorn with uvicorn-worker's UvicornWorker from VENV: the ASGI contestants' server."""
    return [str(venv / "bin" / "gunicorn"), "--no-control-socket",
            "--worker-class", "uvicorn_worker.UvicornWorker", "--bind", f"127.0.0.1:{port}",
            "--workers", str(settings["workers"]), "--timeout", "1800", app]


def kiln(port: int, key: str = "b", name: str = "kiln serve (all features)",
         gunicorn_args: str | None = None, service: Path = SERVICE) -> Contestant:
    """(b): `kiln serve` on the bench service, optionally with GUNICORN_CMD_ARGS."""
    env = {"PYTHONPATH": str(ROOT), "BENCH_MODEL": str(SERVICE / "model.joblib"),
           "KILN_AUTH_TOKENS": f"bench:{AUTH_TOKEN}"}
    if gunicorn_args:
        env["GUNICORN_CMD_ARGS"] = gunicorn_args
    auth = f"Bearer {AUTH_TOKEN}" if auth_mode() == "token" else None
    return Contestant(key, name, [sys.executable, "-m", "runtime.cli", "serve", str(service),
                                  "--host", "127.0.0.1", "--port", str(port)],
                      "/api/v1.0/predict", "/api/v1.0/health/status", env, ROOT, auth, port)


def contestants(settings: dict[str, Any]) -> list[Contestant]:
    """(a) to (f), each on its own free port.

    (c) runs under gunicorn with uvicorn-worker's UvicornWorker, FastAPI's production setup:
    `uvicorn --workers 2` (uvicorn 0.54's own supervisor) stalled every request for ~50 ms
    here (20 req/s on one connection), which would flatter kiln.
    """
    apps_env = {"PYTHONPATH": str(BENCH), "BENCH_MODEL": str(SERVICE / "model.joblib")}
    a, b, c, d, e, f = (free_port() for _ in range(6))
    rms_env = {**apps_env, "REST_CONFIG": str(BENCH / "apps" / "rest_config.yaml")}
    return [
        Contestant("a", "bare Flask + gunicorn", _gunicorn("apps.flask_app:app", a, settings),
                   "/api/v1.0/predict", "/health", apps_env, port=a),
        kiln(b),
        Contestant("c", "rest-model-service 0.6.0",
                   _uvicorn(RMS_VENV, "rest_model_service.main:app", c, settings),
                   "/api/models/iris_model/prediction", "/api/health/ready", rms_env, port=c),
        Contestant("d", "plain WSGI + gunicorn", _gunicorn("apps.wsgi_app:app", d, settings),
                   "/", "/", apps_env, port=d),
        kiln(e, "e", "kiln serve, predict.batch", service=BATCH_SERVICE),
        Contestant("f", "bare FastAPI + uvicorn workers",
                   _uvicorn(FASTAPI_VENV, "apps.fastapi_app:app", f, settings),
                   "/api/v1.0/predict", "/health", apps_env, port=f),
    ]


def ensure_model() -> Path:
    """Train and save the iris model unless it is there already."""
    path = SERVICE / "model.joblib"
    if not path.is_file():
        sys.path.insert(0, str(BENCH))
        from apps.iris import train

        train(path)
    return path


def _ensure_venv(folder: Path, packages: list[str], log: Path) -> Path:
    """Create FOLDER as a venv with PACKAGES, gunicorn and scikit-learn at this Python's versions."""
    python = folder / "bin" / "python"
    stamp = folder / ".bench-installed"
    if stamp.is_file():
        return python
    if not python.exists():
        venv.create(folder, with_pip=True)
    import gunicorn
    import sklearn  # the same scikit-learn as the model was saved with

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages,
                        f"gunicorn=={gunicorn.__version__}", "uvicorn-worker",
                        f"scikit-learn=={sklearn.__version__}", "joblib"],
                       stdout=out, stderr=subprocess.STDOUT, check=True, timeout=900)
    stamp.write_text(" ".join(packages) + " gunicorn uvicorn-worker\n")
    return python


def ensure_rms_venv(log: Path) -> Path:
    """Create bench/.venvs/rest-model-service: rest-model-service 0.6.0, gunicorn, uvicorn-worker."""
    return _ensure_venv(RMS_VENV, [RMS_REQUIREMENT], log)


def ensure_fastapi_venv(log: Path) -> Path:
    """Create bench/.venvs/fastapi: fastapi, uvicorn, gunicorn, uvicorn-worker, the model's."""
    return _ensure_venv(FASTAPI_VENV, ["fastapi", "uvicorn"], log)


def rms_versions() -> dict[str, str]:
    """Versions inside the rest-model-service venv."""
    code = ("import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in "
            "['rest-model-service', 'ml-base', 'fastapi', 'starlette', 'uvicorn', 'pydantic', "
            "'gunicorn', 'uvicorn-worker', 'scikit-learn']}))")
    out = subprocess.run([str(RMS_VENV / "bin" / "python"), "-c", code], capture_output=True,
                         text=True, check=False, timeout=60)
    import json

    return json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr.strip()}
