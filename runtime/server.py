"""Serve a service folder under gunicorn, embedded through BaseApplication.

Settings come, lowest first, from `defaults()`, service.yaml `gunicorn:`, then the
GUNICORN_CMD_ARGS variable (which an embedded gunicorn would otherwise ignore). The master
never imports the user's code, so a SIGHUP loads new code in fresh workers.
"""
from __future__ import annotations

import functools
import math
import os
import shlex
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from gunicorn.app.base import BaseApplication
from gunicorn.config import Config

from runtime.config import ServiceConfig
from runtime.errors import ConfigError, KilnError

#: Settings the runtime owns or that would run arbitrary code or exit the server.
REFUSED: dict[str, str] = {
    "bind": "the port is set by `kiln serve --host/--port` (0.0.0.0:8080 in an image)",
    "daemon": "kiln runs gunicorn in the foreground",
    "pidfile": "kiln manages the server process",
    "user": "the image sets the user", "group": "the image sets the user",
    "umask": "the image sets the user", "initgroups": "the image sets the user",
    "chdir": "kiln serves from the service folder", "pythonpath": "kiln sets the import path",
    "raw_env": "use FLASK_* variables or service.yaml flask:",
    "config": "settings come from service.yaml gunicorn:", "wsgi_app": "kiln builds the app",
    "paste": "kiln builds the app", "check_config": "it exits the server",
    "print_config": "it exits the server", "reload": "use `kiln serve --reload`",
    "reload_engine": "use `kiln serve --reload`", "reload_extra_files": "use `kiln serve --reload`",
    "spew": "it traces every line", "preload_app": "load() must run after fork, in each worker",
    **dict.fromkeys(("logconfig", "logconfig_dict", "logconfig_json", "logger_class"),
                    "kiln logs JSON lines (KILN_LOG_FORMAT=text for people)"),
}
REFUSED_PREFIXES = ("control_socket", "dirty_", "statsd_")
WORKER_CLASSES = ("sync", "gthread")


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


def _setting_name(key: str) -> str:
    return key.lower().replace("-", "_")


def check_setting(key: str, value: Any, source: str, *, allow_bind: bool = False) -> None:
    """Refuse settings kiln owns, server hooks and unknown keys, naming `source` and the key."""
    settings = Config().settings
    if key not in settings:
        raise ConfigError(f"{source}: gunicorn.{key}: not a gunicorn setting")
    if key == "bind" and allow_bind:
        return
    if key in REFUSED:
        raise ConfigError(f"{source}: gunicorn.{key}: may not be set here: {REFUSED[key]}")
    if key.startswith(REFUSED_PREFIXES):
        raise ConfigError(f"{source}: gunicorn.{key}: may not be set here")
    if settings[key].section == "Server Hooks":
        raise ConfigError(f"{source}: gunicorn.{key}: server hooks may not be set")
    if key == "worker_class" and value not in WORKER_CLASSES:
        raise ConfigError(f"{source}: gunicorn.worker_class: {value!r} is not allowed; "
                          f"allowed: {', '.join(WORKER_CLASSES)}")
    try:
        Config().set(key, value)
    except Exception as err:  # gunicorn's validators raise TypeError or ValueError
        raise ConfigError(f"{source}: gunicorn.{key}: {err}") from err


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
    import sys

    value = (dict(os.environ) if env is None else env).get("GUNICORN_CMD_ARGS")
    if value:
        applied = ", ".join(f"{k}={v}" for k, v in env_options(value).items())
        print(f"kiln: GUNICORN_CMD_ARGS={value!r} applied: {applied}", file=sys.stderr, flush=True)


def options(config: ServiceConfig, host: str, port: int, env: dict[str, str] | None = None,
            cpus: int | None = None) -> dict[str, Any]:
    """gunicorn settings: defaults, then service.yaml `gunicorn:`, then GUNICORN_CMD_ARGS."""
    env = dict(os.environ) if env is None else env
    merged = defaults(host, port, available_cpus() if cpus is None else cpus)
    for key, value in config.get("gunicorn").items():
        name = _setting_name(str(key))
        check_setting(name, value, str(config.path))
        merged[name] = value
    for name, value in env_options(env.get("GUNICORN_CMD_ARGS", "")).items():
        check_setting(name, value, "GUNICORN_CMD_ARGS", allow_bind=True)
        merged[name] = value
    return merged


def merge_hooks(*hook_sets: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """gunicorn server hooks from several parts of the runtime; one name runs each in turn."""
    merged: dict[str, Callable[..., Any]] = {}
    for hooks in hook_sets:
        for name, hook in hooks.items():
            first = merged.get(name)
            merged[name] = hook if first is None else _in_turn(first, hook)
    return merged


def _in_turn(first: Callable[..., Any], then: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(first)  # gunicorn checks a hook's arity through its signature
    def both(*args: Any) -> None:
        first(*args)
        then(*args)

    return both


class ServiceApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn serving one service folder; the app is built in each worker."""

    _loaded = False  # whether load_config ran once: later runs are SIGHUPs
    _fixed: dict[str, Any]

    def __init__(self, root: Path, settings: dict[str, Any],
                 hooks: dict[str, Callable[..., Any]] | None = None):
        self.root = root
        self.settings = settings
        self.hooks = merge_hooks({"post_worker_init": _post_worker_init}, hooks or {})
        super().__init__()

    def load_config(self) -> None:
        # gunicorn runs this again on every SIGHUP: re-read service.yaml then, and keep the
        # settings in force when it has become invalid (a ConfigError here would exit gunicorn).
        if not self._loaded:
            self._fixed = self._not_from_files()
        else:
            try:
                self.settings = {**self._reread(), **self._fixed}
            except (KilnError, OSError) as err:
                import logging

                logging.getLogger("gunicorn.error").error(
                    "kiln: keeping the previous gunicorn settings: %s", err)
        self._loaded = True
        for key, value in {**self.settings, **self.hooks}.items():
            self.cfg.set(key, value)

    def _reread(self) -> dict[str, Any]:
        """The settings from service.yaml and GUNICORN_CMD_ARGS as they are now; same address."""
        from runtime.config import load_service

        fresh = options(load_service(self.root), "127.0.0.1", 0)
        if "bind" not in env_options(os.environ.get("GUNICORN_CMD_ARGS", "")):
            fresh["bind"] = self.settings["bind"]
        return fresh

    def _not_from_files(self) -> dict[str, Any]:
        """Settings the runtime added beside `options()` (a log format, say): kept on SIGHUP."""
        try:
            layered = self._reread()
        except (KilnError, OSError):
            return {}
        return {k: v for k, v in self.settings.items() if k not in layered}

    def load(self) -> Any:
        from runtime.app import create_app

        return create_app(self.root)


def _post_worker_init(worker: Any) -> None:
    """Start load() in this worker, and say 'shutting down' once it is asked to stop."""
    from runtime.reload import init_app as init_reload

    service = worker.wsgi.extensions["kiln"]
    init_reload(worker.wsgi, service)  # under --reload: reload_error in the status route
    previous = signal.getsignal(signal.SIGTERM)

    def stopping(signum: int, frame: Any) -> None:
        service.health.stopping = True
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, stopping)
    service.health.start(background=True)


def serve(root: str | Path, host: str = "127.0.0.1", port: int = 8080,
          hooks: dict[str, Callable[..., Any]] | None = None) -> None:
    """Check the service's settings, then run gunicorn in the foreground until it stops."""
    from runtime import logs, metrics
    from runtime.app import flask_config
    from runtime.auth import load_policy
    from runtime.config import load_service

    root = Path(root).resolve()
    announce_cmd_args()  # seen in `docker logs` when docker run -e GUNICORN_CMD_ARGS=... is used
    config = load_service(root)
    load_policy(config)  # a mode without keys stops here, before gunicorn starts
    flask_config(config)  # so does an unusable FLASK_* value
    settings = options(config, host, port)
    settings.update(logs.gunicorn_settings())
    ServiceApplication(root, settings, merge_hooks(metrics.server_hooks(), hooks or {})).run()
