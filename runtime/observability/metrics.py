"""Prometheus metrics at /metrics, correct across every gunicorn worker.

prometheus_client decides once, when it is first imported, whether values live in memory or in
mmap'd files under PROMETHEUS_MULTIPROC_DIR (one set per process, summed at scrape time). So
this module imports it lazily: the gunicorn master calls `on_starting` (a server hook the
runtime sets) to point that variable at a fresh tmpfs folder before any worker forks, and only
then does anything import prometheus_client. Without gunicorn (the Flask test client) the same
metrics live in the default in-memory registry.

Labels never carry raw paths: a request is labelled with its route rule
(`/items/<int:item_id>`), or `<unmatched>`, so label sets stay bounded.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, request

from runtime.errors import KilnError
from runtime.serving.lifecycle import Current, lifecycle, route_label
from runtime.serving.predict import PREDICT
from runtime.serving.responses import TAG, documented

log = logging.getLogger("kiln.metrics")

ENV = "PROMETHEUS_MULTIPROC_DIR"
ROUTE = "/metrics"
ENDPOINT = "kiln_metrics"
COLLECTORS = "kiln_metrics_collectors"
USER_PREFIX = "kiln_user_"
MAX_USER_METRICS = 200
#: Latency buckets (seconds): from a fast in-memory predict to a slow model.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           float("inf"))
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
LABELS = ("route", "method", "status", "version")
LATENCY = "kiln_http_request_duration_seconds"
#: Adaptive batching: requests per predict_batch call, and each request's wait for its call.
BATCH_SIZE = "kiln_batch_size"
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, float("inf"))
BATCH_WAIT = "kiln_batch_wait_seconds"
BATCH_WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                      float("inf"))
#: Metrics derived from LATENCY at scrape time: (name, help).
REQUESTS = ("kiln_http_requests_total",
            "HTTP requests answered, by route rule, method and status class.")
PREDICTIONS = ("kiln_predictions_total", "Calls of the predict route, by status class.")
PREDICT_LATENCY = ("kiln_predict_duration_seconds", "Time to answer the predict route.")
PREDICT_ROUTE = route_label(PREDICT)
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class MetricError(KilnError, ValueError):
    """Raised when `log_metric` gets a bad name, value or set of labels."""


# -- The gunicorn master: the multiprocess folder and the hooks that keep it right --------------

_created: Path | None = None


def prepare_multiprocess_dir(pid: int | None = None) -> Path:
    """Point PROMETHEUS_MULTIPROC_DIR at an empty folder (on tmpfs), before workers fork.

    A folder the user named is emptied of metric files; otherwise kiln makes
    /dev/shm/kiln-metrics-<master pid> (and removes it on exit).
    """
    global _created
    given = os.environ.get(ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return path
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    _remove_orphans(base)
    path = base / f"kiln-metrics-{pid or os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True)
    os.environ[ENV] = str(path)
    _created = path
    return path


def _remove_orphans(base: Path) -> None:
    """Remove the folders of kiln servers that died without cleaning up (SIGKILL, OOM)."""
    for folder in base.glob("kiln-metrics-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # alive, but another user's process
            continue


def on_starting(server: Any) -> None:
    """gunicorn hook, in the master before any worker forks: a fresh metrics folder."""
    if "prometheus_client" in sys.modules and not os.environ.get(ENV):
        log.warning("prometheus_client was imported before %s was set: metrics of the "
                    "master process stay in memory", ENV)
    prepare_multiprocess_dir()


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: drop a dead worker's live gauges (its in-flight count, its load time)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """gunicorn hook: remove the folder kiln made."""
    if _created is not None:
        shutil.rmtree(_created, ignore_errors=True)


def server_hooks() -> dict[str, Callable[..., Any]]:
    """The gunicorn server hooks metrics need; runtime/server.py sets them (users cannot)."""
    return {"on_starting": on_starting, "child_exit": child_exit, "on_exit": on_exit}


# -- Every process: the metrics themselves ----------------------------------------------------

class Metrics:
    """kiln's own metrics, created once per process after PROMETHEUS_MULTIPROC_DIR is known."""

    def __init__(self) -> None:
        from prometheus_client import Gauge, Histogram, values

        #: prometheus_client chose file-backed values when it was first imported with ENV set.
        self.multiprocess = values.ValueClass is not values.MutexValue
        # kiln_http_requests_total and the predict route's metrics are derived from this
        # histogram at scrape time (_Derived): one observation per request.
        self.latency = Histogram(LATENCY, "Time to answer an HTTP request, by route rule.",
                                 LABELS, buckets=BUCKETS)
        self.in_flight = Gauge("kiln_http_requests_in_progress",
                               "HTTP requests being answered now, over all workers.",
                               multiprocess_mode="livesum")
        self.load_seconds = Gauge("kiln_model_load_seconds",
                                  "Seconds the service's load() took, the slowest live worker.",
                                  multiprocess_mode="livemax")
        self.batch_size = Histogram(BATCH_SIZE, "Requests answered by one predict_batch "
                                    "call (predict.batch).", buckets=BATCH_SIZE_BUCKETS)
        self.batch_wait = Histogram(BATCH_WAIT, "Seconds a request waited for its "
                                    "predict_batch call to start (predict.batch).",
                                    buckets=BATCH_WAIT_BUCKETS)
        #: full name -> (gauge, its label names): log_metric's gauges.
        self.user: dict[str, tuple[Any, tuple[str, ...]]] = {}
        self.lock = threading.Lock()
        #: (route, method, status class, version) -> its latency child: labels() looks it up
        #: under a lock.
        self.series: dict[tuple[str, str, str, str], Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float,
                version: str = "") -> None:
        key = (route, method if method in METHODS else "other", f"{status // 100}xx", version)
        child = self.series.get(key)
        if child is None:
            child = self.series[key] = self.latency.labels(*key)
        child.observe(seconds)


_metrics: Metrics | None = None
_create_lock = threading.Lock()


def metrics() -> Metrics:
    """This process's Metrics (created on first use)."""
    global _metrics
    if _metrics is None:
        with _create_lock:
            if _metrics is None:
                _metrics = Metrics()
    return _metrics


def add_collector(app: Flask, collect: Callable[[], Iterable[Any]]) -> None:
    """Serve the metric families COLLECT yields at scrape time in /metrics, beside kiln's own.

    For figures another process keeps (the reloader in the gunicorn master, say): the
    collector reads them when /metrics is asked, in the worker that answers.
    """
    app.extensions.setdefault(COLLECTORS, []).append(collect)


def log_metric(name: str, value: float, **labels: Any) -> None:
    """Set the gauge `kiln_user_<name>{labels}` to VALUE; /metrics shows the latest over workers.

    NAME and label names are Prometheus names (letters, digits, `_`); one name always takes
    the same label names.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise MetricError(f"log_metric: name {name!r} is not a metric name: letters, digits "
                          "and '_', not starting with a digit")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError) as err:
            raise MetricError(f"log_metric: value of {name!r} must be a number, got {value!r}") \
                from err
    bad = [k for k in labels if not _NAME.fullmatch(k) or k.startswith("__")]
    if bad:
        raise MetricError(f"log_metric: label {bad[0]!r} of {name!r} is not a label name: "
                          "letters, digits and '_', not starting with '__'")
    full = name if name.startswith(USER_PREFIX) else USER_PREFIX + name
    names = tuple(sorted(labels))
    gauge = _user_gauge(full, names)
    if names:
        gauge = gauge.labels(*(str(labels[k]) for k in names))
    gauge.set(float(value))


def _user_gauge(full: str, names: tuple[str, ...]) -> Any:
    from prometheus_client import Gauge

    m = metrics()
    with m.lock:
        known = m.user.get(full)
        if known is None:
            if len(m.user) >= MAX_USER_METRICS:
                raise MetricError(f"log_metric: more than {MAX_USER_METRICS} metric names; "
                                  "use labels for variants of one metric")
            # mostrecent: the value the service logged last, whichever worker logged it.
            known = m.user[full] = (Gauge(full, "Set by the service's code with "
                                          "runtime.log_metric.", names,
                                          multiprocess_mode="mostrecent"), names)
    gauge, first = known
    if first != names:
        raise MetricError(f"log_metric: {full!r} was logged with labels {list(first)}, "
                          f"now with {list(names)}; use the same label names every time")
    return gauge


# -- The Flask side --------------------------------------------------------------------------

class _Derived:
    """A collector: SOURCE's metrics, those the request latency histogram implies, and EXTRA's.

    `kiln_http_requests_total` is the histogram's count by the same labels;
    `kiln_predictions_total` and `kiln_predict_duration_seconds` are its series for POST on
    the predict rules, by status class. Counted apart, they cost a request four more
    writes to the metrics files; derived here, the same figures cost nothing until a scrape.
    """

    def __init__(self, source: Any, extra: Iterable[Callable[[], Iterable[Any]]] = ()):
        self.source = source
        self.extra = list(extra)

    def collect(self) -> Iterator[Any]:
        for family in self.source.collect():
            yield family
            if family.name == LATENCY:
                yield from derived(family.samples)
        for collect in self.extra:
            yield from collect()


def derived(samples: Iterable[Any]) -> list[Any]:
    """The request counter and the predict route's counter and histogram, from LATENCY's samples."""
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    requests = CounterMetricFamily(*REQUESTS, labels=LABELS)
    # (status class, version) -> le -> count, and -> sum: a canary's figures beside the rest.
    buckets: dict[tuple[str, str], dict[str, float]] = {}
    sums: dict[tuple[str, str], float] = {}
    for sample in samples:
        labels = sample.labels
        kind = sample.name[len(LATENCY):]
        if kind == "_count":
            requests.add_metric([labels.get(k, "") for k in LABELS], sample.value)
        if labels.get("method") != "POST" or labels.get("route") != PREDICT_ROUTE:
            continue
        key = (labels["status"], labels.get("version", ""))
        if kind == "_bucket":
            by_bound = buckets.setdefault(key, {})
            by_bound[labels["le"]] = by_bound.get(labels["le"], 0.0) + sample.value
        elif kind == "_sum":
            sums[key] = sums.get(key, 0.0) + sample.value
    predictions = CounterMetricFamily(*PREDICTIONS, labels=("status", "version"))
    latency = HistogramMetricFamily(*PREDICT_LATENCY, labels=("status", "version"))
    for key in sorted(buckets):
        bounds = sorted(buckets[key].items(), key=lambda item: float(item[0]))
        predictions.add_metric(list(key), bounds[-1][1])
        latency.add_metric(list(key), bounds, sums.get(key, 0.0))
    return [requests, predictions, latency]


@documented({"get": {
    "tags": [TAG],
    "summary": "Prometheus metrics of all workers",
    "operationId": "kiln_metrics",
    "responses": {"200": {"description": "Prometheus text format.",
                          "content": {"text/plain": {"schema": {"type": "string"}}}}},
}})
def exposition() -> Response:
    """/metrics: everything, from all workers' files (multiprocess) or this process."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    source: Any = REGISTRY
    if metrics().multiprocess:
        from prometheus_client.multiprocess import MultiProcessCollector

        # Not the default registry: it holds this process's metrics, twice-counted.
        source = MultiProcessCollector(None)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Derived(source, current_app.extensions.get(COLLECTORS, ())))
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(registry), headers={"Content-Type": content_type})


def _started(current: Current) -> None:
    if current.endpoint != ENDPOINT:
        metrics().in_flight.inc()


def _observe(version: str, current: Current, status: int) -> None:
    if current.endpoint == ENDPOINT:
        return
    seconds = current.seconds()
    m = metrics()
    m.in_flight.dec()
    m.observe(current.route, current.method, status, seconds, version)


def _finished(version: str, current: Current, response: Response) -> None:
    _observe(version, current, response.status_code)


def _aborted(version: str, current: Current) -> None:
    # An error escaped every handler, and gunicorn answers 500.
    _observe(version, current, 500)


def _record_load(health: Any) -> None:
    health.finished.wait()
    if health.load_seconds is not None:
        metrics().load_seconds.set(health.load_seconds)


def _observe_batch(size: int, waits: Any) -> None:
    m = metrics()
    m.batch_size.observe(size)
    for seconds in waits:
        m.batch_wait.observe(seconds)


def init_app(app: Flask, service: Any) -> None:
    """Count and time every request, record load() time, batch sizes, and serve /metrics."""
    metrics()
    batcher = getattr(service.predictor, "batcher", None)
    if batcher is not None:
        batcher.observers.append(_observe_batch)
    hooks = lifecycle(app)
    hooks.started.append(_started)
    # Labelled by the service's version, so a canary's figures show beside the previous one's.
    hooks.finished.append(functools.partial(_finished, service.config.version))
    hooks.aborted.append(functools.partial(_aborted, service.config.version))
    app.add_url_rule(ROUTE, ENDPOINT, exposition, methods=["GET"])
    hooks.mark(ENDPOINT, "metrics")
    if not service.health.finished.is_set() or service.health.load_seconds is not None:
        threading.Thread(target=_record_load, args=(service.health,), name="kiln-load-metric",
                         daemon=True).start()
