"""Readiness of one worker and the health routes that report it.

Each gunicorn worker runs the service's load() after fork, in a thread, so that the health
routes answer (503, with the reason) while it runs, after it failed, or while the worker stops.
"""
from __future__ import annotations

import gc
import glob
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, current_app

from runtime.serving import API
from runtime.serving.lifecycle import lifecycle
from runtime.serving.responses import TAG, documented, json_doc

log = logging.getLogger("kiln.health")

HEALTH = f"{API}/health"
BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "service": {"type": "string"},
        "version": {"type": "string"},
        "reason": {"type": "string", "description": "Why the service is not ready."},
    },
    "required": ["status"],
}

routes = Blueprint("kiln_health", __name__)


class Health:
    """The load state of this process, read by the health routes and predict."""

    def __init__(self, load: Callable[[], Any] | None, describe: Callable[[BaseException], str]):
        self._load = load
        self._describe = describe
        self._lock = threading.Lock()
        self._started = False
        self.finished = threading.Event()
        self.error: str | None = None
        self.stopping = False
        self.load_seconds: float | None = None

    def start(self, *, background: bool = True) -> None:
        """Run load() once: in a thread (a gunicorn worker) or right here (tests, the CLI)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        if background:
            threading.Thread(target=self._run, args=(True,), name="kiln-load",
                             daemon=True).start()
        else:
            self._run()

    def _run(self, freeze: bool = False) -> None:
        began = time.monotonic()
        try:
            if self._load is not None:
                self._load()
        except BaseException as err:
            self.error = f"load() failed: {self._describe(err)}"
            log.exception("load() failed")
        finally:
            self.load_seconds = time.monotonic() - began
            if freeze:
                # What load() left (the app, the libraries, the model) lives as long as the
                # worker: frozen out of the collector's way, a full collection no longer
                # walks it, a pause of tens of milliseconds on whichever request it lands on.
                # Collect first, so that load()'s own garbage is not kept for good.
                gc.collect()
                gc.freeze()
            self.finished.set()

    def fail(self, reason: str) -> None:
        """Mark the service as not able to serve (its code did not import)."""
        self._started = True
        self.error = reason
        self.finished.set()

    @property
    def ready(self) -> bool:
        """Whether the status route says ready: loaded, and not stopping."""
        return self.finished.is_set() and self.error is None and not self.stopping

    def serving(self, wait: float = 0.0) -> bool:
        """Whether predictions are answered: load() finished without an error.

        A prediction that reaches a worker still loading (a respawned worker, or the first
        start) waits up to WAIT seconds for load() rather than answering 503 while other
        workers are ready; a stopping worker still answers the requests it has accepted.
        """
        if wait > 0 and not self.finished.is_set():
            self.finished.wait(wait)
        return self.finished.is_set() and self.error is None

    def reason(self) -> str:
        """Why the service is not ready; empty when it is."""
        if self.stopping:
            return "shutting down"
        if not self.finished.is_set():
            return "loading: load() has not finished"
        return self.error or ""


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


def _operations(name: str, summary: str, ok: str, unavailable: str | None = None
                ) -> dict[str, dict[str, Any]]:
    responses = {"200": json_doc(ok, BODY)}
    if unavailable:
        responses["503"] = json_doc(unavailable, BODY)
    return {"get": {"tags": [TAG], "summary": summary, "operationId": f"kiln_health_{name}",
                    "responses": responses}}


def _body(ok: bool, **extra: Any) -> dict[str, Any]:
    kiln = current_app.extensions["kiln"]
    body = {"status": "ok" if ok else "unavailable", "service": kiln.config.id,
            "version": kiln.config.version, **extra}
    if not ok:
        body["reason"] = kiln.health.reason()
    return body


@routes.get(f"{HEALTH}/status")
@routes.get(f"{HEALTH}/status/")
@documented(_operations("status", "Readiness: ok once load() has finished", "Ready.",
                        "Loading, failed to load, or shutting down."))
def status() -> Any:
    kiln = current_app.extensions["kiln"]
    ok = kiln.health.ready
    extra = {"gpu": kiln.gpu(), **kiln.status_extra()}
    return _body(ok, **extra), 200 if ok else 503


@routes.get(f"{HEALTH}/startup")
@routes.get(f"{HEALTH}/startup/")
@documented(_operations("startup", "Startup probe: ok once load() has finished, never flips back",
                        "load() has finished.", "load() is still running."))
def startup() -> Any:
    finished = current_app.extensions["kiln"].health.finished.is_set()
    return _body(finished, started=finished), 200 if finished else 503


@routes.get(f"{HEALTH}/live")
@routes.get(f"{HEALTH}/live/")
@documented(_operations("live", "Liveness: ok while the process answers", "Alive."))
def live() -> Any:
    return {"status": "ok"}


def init_app(app: Flask) -> None:
    """Serve the three health routes; they stay open whatever the auth mode."""
    app.register_blueprint(routes)
    hooks = lifecycle(app)
    for endpoint in ("status", "startup", "live"):
        hooks.mark(f"{routes.name}.{endpoint}", "health")
