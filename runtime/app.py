"""The app factory: a service folder in, a Flask app with the built-in and the user's routes out.

`create_app` imports the user's code but never runs `load()`: gunicorn calls
`Service.health.start()` in each worker after fork (see runtime/server.py), and the test
client helper calls it synchronously. When the user's code does not import, the app still
starts: health and predict answer 503 with the reason, so a failed start is visible.
"""
from __future__ import annotations

import glob
import inspect
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Config, Flask, Request
from werkzeug.routing import MapAdapter

from runtime import auth, capture, docs, logs, metrics, responses, routes
from runtime.config import ServiceConfig, load_service
from runtime.errors import ConfigError, UserCodeError
from runtime.health import Health
from runtime.loader import UserCode, describe, load_user_code

log = logging.getLogger("kiln.app")

#: Defaults under service.yaml's flask: and FLASK_* variables.
FLASK_DEFAULTS: dict[str, Any] = {"MAX_CONTENT_LENGTH": 10 * 1024 * 1024}
#: How many views and hooks KilnFlask remembers as plain functions.
SYNC_CACHE = 1024
#: How many Host headers KilnFlask remembers the URL adapter's server name for.
HOST_CACHE = 64


@dataclass
class Service:
    """Everything the runtime knows about the service it serves, kept in app.extensions['kiln']."""

    config: ServiceConfig
    code: UserCode | None
    health: Health
    predictor: routes.Predictor | None
    status_hooks: list[Callable[[], dict[str, Any]]] = field(default_factory=list)
    _gpu: dict[str, Any] | None = None

    def status_extra(self) -> dict[str, Any]:
        """Extra fields for the status route (a reload error, say), from registered hooks."""
        extra: dict[str, Any] = {}
        for hook in self.status_hooks:
            extra.update(hook())
        return extra

    def gpu(self) -> dict[str, Any]:
        """Whether this process sees a GPU; asked once, after load() (never before fork)."""
        if self._gpu is None and self.health.finished.is_set():
            self._gpu = detect_gpu()
        return self._gpu or {"visible": False}


class KilnFlask(Flask):
    """Flask, remembering what it works out again on every request.

    - Flask's `ensure_sync` asks `inspect.iscoroutinefunction` of every hook and view on every
      request, a few microseconds each. The answer is kept per function object, for at most
      SYNC_CACHE of them: a MethodView hands over a new bound method on every request.
    - `create_url_adapter` reads the host twice and IDNA-encodes it (werkzeug's
      `bind_to_environ`), about 30k instructions per request. The adapter's host part is kept
      per Host header (at most HOST_CACHE of them); the path, method and query are the
      request's own. Anything unusual (SERVER_NAME, trusted hosts, host or
      subdomain matching, an Upgrade header) goes the way Flask goes.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sync: dict[Callable[..., Any], bool] = {}
        # (scheme, Host header, SERVER_NAME, SERVER_PORT) -> (request.host, adapter's server name)
        self._hosts: dict[tuple[Any, ...], tuple[str, str]] = {}

    def create_url_adapter(self, request: Request | None) -> MapAdapter | None:
        if (request is None or request.trusted_hosts is not None
                or self.config["SERVER_NAME"] is not None
                or self.config.get("TRUSTED_HOSTS") is not None
                or self.url_map.host_matching or self.subdomain_matching
                or "HTTP_UPGRADE" in request.environ):  # a websocket upgrade changes the scheme
            return super().create_url_adapter(request)
        environ = request.environ
        key = (environ["wsgi.url_scheme"], environ.get("HTTP_HOST"), environ.get("SERVER_NAME"),
               environ.get("SERVER_PORT"))
        known = self._hosts.get(key)
        if known is None:
            adapter = super().create_url_adapter(request)
            if adapter is not None:
                if len(self._hosts) >= HOST_CACHE:
                    self._hosts.clear()  # Host headers come from clients: keep a few
                self._hosts[key] = (request.host, adapter.server_name)
            return adapter
        request.host = known[0]  # type: ignore[misc]  # as Flask 3.1 does, from the same header
        # The arguments werkzeug's Map.bind would pass, once the host part is known.
        script_name = _wsgi_str(environ.get("SCRIPT_NAME"))
        path_info = _wsgi_str(environ.get("PATH_INFO"))
        return MapAdapter(self.url_map, known[1], "/" if script_name is None else script_name,
                          self.url_map.default_subdomain or "", key[0],
                          "/" if path_info is None else path_info, environ["REQUEST_METHOD"],
                          _wsgi_str(environ.get("QUERY_STRING")))

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            if self._sync[func]:
                return func
        except (KeyError, TypeError):  # not seen yet, or unhashable
            plain = not inspect.iscoroutinefunction(func)
            if len(self._sync) < SYNC_CACHE:
                try:
                    self._sync[func] = plain
                except TypeError:
                    pass
            if plain:
                return func
        return super().ensure_sync(func)


def _wsgi_str(value: str | None) -> str | None:
    """A WSGI environ string as werkzeug decodes it (latin-1 bytes read as UTF-8)."""
    if value is None or value.isascii():
        return value
    return value.encode("latin1").decode(errors="replace")


def detect_gpu() -> dict[str, Any]:
    """GPUs visible to this process: through torch when the service uses it, else /dev/nvidia*."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                count = torch.cuda.device_count()
                names = [torch.cuda.get_device_name(i) for i in range(count)]
                return {"visible": True, "count": count, "names": names, "cuda": torch.version.cuda}
        except Exception as err:  # noqa: BLE001 - a broken driver is reported, not raised
            return {"visible": False, "error": str(err)}
    devices = sorted(glob.glob("/dev/nvidia[0-9]*"))
    visible = os.environ.get("NVIDIA_VISIBLE_DEVICES", "")
    if devices and visible not in ("void", "none"):
        return {"visible": True, "count": len(devices)}
    return {"visible": False}


def flask_config(config: ServiceConfig) -> Config:
    """Flask settings: FLASK_DEFAULTS, then service.yaml `flask:`, then FLASK_* variables.

    Raises ConfigError when a setting the runtime relies on has an unusable value.
    """
    settings = Config(str(config.root), {**FLASK_DEFAULTS, **config.get("flask")})
    settings.from_prefixed_env("FLASK")
    limit = settings.get("MAX_CONTENT_LENGTH")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"MAX_CONTENT_LENGTH (service.yaml flask: or FLASK_MAX_CONTENT_LENGTH): "
                          f"must be a whole number of bytes, got {limit!r}")
    return settings


def _user_code(config: ServiceConfig) -> UserCode:
    needs_predict = config.get("model") is None
    code = load_user_code(config.root, needs_predict=needs_predict)
    if code.predict is None and config.get("model") is not None:
        from runtime import model

        loaded = model.ModelPredictor(config.root, config.get("model")["path"])
        code.predict, code.load = loaded.predict, loaded.load
    return code


def create_app(root: str | Path, config: ServiceConfig | None = None) -> Flask:
    """Build the Flask app for the service folder ROOT (load() is not run here)."""
    root = Path(root).resolve()
    config = config or load_service(root)
    app = KilnFlask("kiln_service", root_path=str(root), static_folder=None)
    app.config.update(flask_config(config))
    responses.init_app(app)

    code: UserCode | None = None
    try:
        code = _user_code(config)
    except UserCodeError as err:
        log.error("%s", err)
        health = Health(None, lambda e: describe(e, root))
        health.fail(str(err))
    else:
        health = Health(code.load, lambda e: describe(e, root))
    predictor = None
    if code is not None and code.predict is not None:
        predictor = routes.Predictor(code.predict, code.preprocess,
                                     config.get("predict.timeout"),
                                     config.get("predict.accepts_file"))
    app.extensions["kiln"] = service = Service(config, code, health, predictor)
    auth.init_app(app, service)
    routes.init_app(app)
    for observer in (logs, metrics, capture):
        observer.init_app(app, service)
    if code is not None and code.blueprint is not None:
        app.register_blueprint(code.blueprint)
    docs.init_app(app, service)
    return app


def service_of(app: Flask) -> Service:
    """The Service an app was built for."""
    service: Service = app.extensions["kiln"]
    return service
