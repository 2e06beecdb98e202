"""The app factory: a service folder in, a Flask app with the built-in and the user's routes out.

`create_app` imports the user's code but never runs `load()`: gunicorn calls
`Service.health.start()` in each worker after fork (see runtime/server.py), and the test
client helper calls it synchronously. When the user's code does not import, the app still
starts: health and predict answer 503 with the reason, so a failed start is visible.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Config, Flask

from runtime.config import ServiceConfig, load_service
from runtime.docs import ui as docs
from runtime.errors import ConfigError, UserCodeError
from runtime.observability import capture, logs, metrics
from runtime.security import auth
from runtime.serving import health as health_routes
from runtime.serving import predict, protocols, responses
from runtime.serving.contract import Contract
from runtime.serving.health import Health, detect_gpu
from runtime.serving.loader import UserCode, describe, load_user_code

log = logging.getLogger("kiln.app")

#: Defaults under service.yaml's flask: and FLASK_* variables.
FLASK_DEFAULTS: dict[str, Any] = {"MAX_CONTENT_LENGTH": 10 * 1024 * 1024}


@dataclass
class Service:
    """Everything the runtime knows about the service it serves, kept in app.extensions['kiln']."""

    config: ServiceConfig
    code: UserCode | None
    health: Health
    predictor: predict.Predictor | None
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
        from runtime.serving import model

        loaded = model.ModelPredictor(config.root, config.get("model"))
        code.predict, code.load = loaded.predict, loaded.load
        code.predict_batch = loaded.predict_batch
    return code


def create_app(root: str | Path, config: ServiceConfig | None = None) -> Flask:
    """Build the Flask app for the service folder ROOT (load() is not run here)."""
    root = Path(root).resolve()
    config = config or load_service(root)
    app = Flask("kiln_service", root_path=str(root), static_folder=None)
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
        predictor = predict.Predictor(code.predict, code.preprocess,
                                      config.get("predict.timeout"),
                                      config.get("predict.accepts_file"),
                                      predict_batch=code.predict_batch,
                                      contract=Contract.of(code.schemas))
    app.extensions["kiln"] = service = Service(config, code, health, predictor)
    auth.init_app(app, service)
    health_routes.init_app(app)
    predict.init_app(app)
    protocols.init_app(app)
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
