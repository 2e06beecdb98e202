"""Serve a service folder under gunicorn, embedded through BaseApplication.

The settings are runtime/serving/settings.py's. The master never imports the user's code,
so a SIGHUP loads new code in fresh workers.
"""
from __future__ import annotations

import errno
import functools
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from runtime.errors import ConfigError, KilnError
from runtime.serving.settings import announce_cmd_args, env_options, options


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
    """Start load() in this worker; on SIGTERM, answer not ready and drain before stopping.

    gunicorn's graceful stop ends a worker once its current request is answered, and the
    connections the kernel had already accepted for the listener (its backlog) are reset when
    the last worker closes it. Here a worker asked to stop goes on taking connections while any
    waits in the backlog (`_stop_once_drained` watches it), then stops as gunicorn would;
    gunicorn's graceful_timeout still bounds the whole.
    """
    service = worker.wsgi.extensions["kiln"]
    previous = signal.getsignal(signal.SIGTERM)
    watching = threading.Lock()

    def stopping(signum: int, frame: Any) -> None:
        service.health.stopping = True  # the status route answers 503 "shutting down" at once
        if not _waiting(worker):
            if callable(previous):
                previous(signum, frame)
        elif watching.acquire(blocking=False):  # one watcher at a time
            threading.Thread(target=_stop_once_drained, args=(worker, watching),
                             name="kiln-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, stopping)
    service.health.start(background=True)


#: How often a stopping worker looks whether its listeners' backlog has emptied.
DRAIN_POLL_SECONDS = 0.05


def _stop_once_drained(worker: Any, watching: threading.Lock) -> None:
    """SIGTERM this worker again once no connection waits for it.

    The one place a draining worker is told to stop, busy or idle: several workers share the
    listeners, so the connection it waited for may be taken by another, and a check after its
    own requests would leave it asleep in accept until gunicorn's graceful_timeout killed it.
    The second SIGTERM wakes it (gunicorn's workers wake on any signal) and, the backlog
    empty, stops it as gunicorn's own handler does: after the request in hand.
    """
    try:
        while worker.alive and _waiting(worker):
            time.sleep(DRAIN_POLL_SECONDS)
    finally:
        watching.release()
    if worker.alive:
        os.kill(os.getpid(), signal.SIGTERM)


#: select() as the standard library has it, taken before any worker starts: gevent's worker
#: patches the module's, and a patched select called from the SIGTERM handler (which gevent
#: runs in its hub) raised BlockingSwitchOutError and crashed the worker.
_select = select.select


def _waiting(worker: Any) -> bool:
    """Whether a connection waits in the backlog of one of the worker's listeners."""
    if not worker.alive:  # stopping already (a second SIGTERM, the interpreter's exit)
        return False
    try:
        readable, _, _ = _select(list(worker.sockets), [], [], 0)
    except (OSError, ValueError, TypeError):  # a listener closed already
        return False
    return bool(readable)


def check_bind(bind: str | list[str]) -> None:
    """Refuse in one line an address no listener can take (gunicorn would retry it for 5 s,
    logging each try, then stop): a port another process has, a host that is not here."""
    for address in [bind] if isinstance(bind, str) else bind:
        host, colon, port = address.rpartition(":")
        if address.startswith(("unix:", "fd://")) or not colon or not port.isdigit():
            continue  # gunicorn's own forms and errors
        try:
            family, kind, proto, _, where = socket.getaddrinfo(
                host.strip("[]") or None, int(port), type=socket.SOCK_STREAM)[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn
                probe.bind(where)
        except OSError as err:  # socket.gaierror too
            hint = "; another process listens there: choose another with --port" if (
                err.errno == errno.EADDRINUSE) else ""
            raise ConfigError(f"cannot listen on {address}: {err.strerror or err}{hint}") from err


def serve(root: str | Path, host: str = "127.0.0.1", port: int = 8080,
          hooks: dict[str, Callable[..., Any]] | None = None) -> None:
    """Check the service's settings, then run gunicorn in the foreground until it stops."""
    from runtime.app import flask_config
    from runtime.config import load_service
    from runtime.observability import logs, metrics
    from runtime.security.auth import load_policy

    root = Path(root).resolve()
    announce_cmd_args()  # seen in `docker logs` when docker run -e GUNICORN_CMD_ARGS=... is used
    config = load_service(root)
    load_policy(config)  # a mode without keys stops here, before gunicorn starts
    flask_config(config)  # so does an unusable FLASK_* value
    settings = options(config, host, port)
    settings.update(logs.gunicorn_settings())
    check_bind(settings["bind"])
    ServiceApplication(root, settings, merge_hooks(metrics.server_hooks(), hooks or {})).run()
