"""gunicorn's settings for a service, as data: kiln's defaults, service.yaml, GUNICORN_CMD_ARGS.

Settings come, lowest first, from `defaults()` (with `batching_defaults()` under
`predict.batch`), service.yaml `gunicorn:` (checked when the file
is loaded, runtime/config.py), then the GUNICORN_CMD_ARGS variable, which an embedded gunicorn
would otherwise ignore.
"""
from __future__ import annotations

import importlib.util
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

from gunicorn.config import Config

from runtime.config import ServiceConfig, gunicorn_problem
from runtime.errors import ConfigError
from runtime.serving.batching import batch_settings


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may really use: its affinity, capped by a cgroup v2 or v1 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota(root: Path) -> float | None:
    v2 = root / "cpu.max"
    try:
        if v2.is_file():
            fields = v2.read_text().split()
            if not fields or fields[0] == "max":
                return None
            return int(fields[0]) / int(fields[1] if len(fields) > 1 else 100000)
        quota_file, period_file = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            quota = int(quota_file.read_text())
            return None if quota <= 0 else quota / int(period_file.read_text())
    except (OSError, ValueError):
        return None
    return None


def defaults(host: str, port: int, cpus: int) -> dict[str, Any]:
    """The runtime's own gunicorn settings, under service.yaml and GUNICORN_CMD_ARGS."""
    out: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": cpus,
        "timeout": 1800,
        "graceful_timeout": 30,
        "control_socket_disable": True,
        "accesslog": None,
    }
    if os.path.isdir("/dev/shm"):
        out["worker_tmp_dir"] = "/dev/shm"
    return out


#: What `worker_class: gevent` runs: gunicorn's gevent_pywsgi worker, fair to every connection.
GEVENT_WORKER = "runtime.serving.workers.GeventWorker"


def batching_defaults(max_size: int) -> dict[str, Any]:
    """The worker model under service.yaml `predict.batch`: gevent where installed, else gthread.

    A sync worker answers one request at a time, so its batches would hold one. gevent keeps
    every connection alive in one thread: a request's greenlet parses its body and waits for
    the batcher, which runs once the others have queued theirs, with no thread hand-off
    (README "Adaptive batching" has the figures beside gthread's). Without gevent, gthread
    with threads enough to fill a batch.
    """
    if importlib.util.find_spec("gevent") is not None:
        return {"worker_class": "gevent"}
    return {"worker_class": "gthread", "threads": max(BATCH_THREADS, max_size)}


#: Request threads per gthread worker under batching, at least (more when max_size is larger).
BATCH_THREADS = 32


def check_setting(key: str, value: Any, source: str, *, allow_bind: bool = False) -> None:
    """Refuse settings kiln owns, server hooks and unknown keys, naming `source` and the key."""
    problem = gunicorn_problem(key, value, allow_bind=allow_bind)
    if problem:
        raise ConfigError(f"{source}: gunicorn.{key}: {problem}")


def env_options(value: str) -> dict[str, Any]:
    """Parse GUNICORN_CMD_ARGS the way the gunicorn command line does."""
    parser = Config().parser()

    def refuse(message: str) -> NoReturn:  # argparse would print its usage and exit
        raise ConfigError(f"GUNICORN_CMD_ARGS: {message}")

    parser.error = refuse  # type: ignore[method-assign]
    try:
        args = parser.parse_args(shlex.split(value))
    except ValueError as err:  # an unbalanced quote
        raise ConfigError(f"GUNICORN_CMD_ARGS: cannot parse {value!r}: {err}") from err
    return {k: v for k, v in vars(args).items() if v is not None and k != "args"}


def announce_cmd_args(env: dict[str, str] | None = None) -> None:
    """Say on stderr which GUNICORN_CMD_ARGS settings apply: gunicorn does not log its settings."""
    value = (dict(os.environ) if env is None else env).get("GUNICORN_CMD_ARGS")
    if value:
        applied = ", ".join(f"{k}={v}" for k, v in env_options(value).items())
        print(f"kiln: GUNICORN_CMD_ARGS={value!r} applied: {applied}", file=sys.stderr, flush=True)


def options(config: ServiceConfig, host: str, port: int, env: dict[str, str] | None = None,
            cpus: int | None = None) -> dict[str, Any]:
    """gunicorn settings: defaults, then service.yaml `gunicorn:`, then GUNICORN_CMD_ARGS."""
    env = dict(os.environ) if env is None else env
    merged = defaults(host, port, available_cpus() if cpus is None else cpus)
    batching = batch_settings(config)
    if batching is not None:
        merged.update(batching_defaults(batching[0]))
    # service.yaml's settings were checked when it was loaded.
    merged.update((str(k).lower().replace("-", "_"), v) for k, v in config.get("gunicorn").items())
    for name, value in env_options(env.get("GUNICORN_CMD_ARGS", "")).items():
        check_setting(name, value, "GUNICORN_CMD_ARGS", allow_bind=True)
        merged[name] = value
    if merged.get("worker_class") == "gevent":
        merged["worker_class"] = GEVENT_WORKER  # runtime/serving/workers.py
    return merged
