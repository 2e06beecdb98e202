"""Readiness of one worker: whether load() is running, finished, failed, or the worker is stopping.

Each gunicorn worker runs the service's load() after fork, in a thread, so that the health
routes answer (503, with the reason) while it runs.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("kiln.health")


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
        return self.finished.is_set() and self.error is None and not self.stopping

    def reason(self) -> str:
        """Why the service is not ready; empty when it is."""
        if self.stopping:
            return "shutting down"
        if not self.finished.is_set():
            return "loading: load() has not finished"
        return self.error or ""
