"""/metrics: bounded labels, correct sums over gunicorn workers, and runtime.log_metric."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import runtime
from runtime.observability import metrics
from runtime.server import merge_hooks
from runtime.testing import client, make_app
from tests.support import SERVICES, Server, wait_for

ITEMS = "/items/<int:item_id>"


def samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Samples called NAME whose labels include LABELS, parsed with prometheus_client's parser."""
    return [(s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and labels.items() <= s.labels.items()]


def total(text: str, name: str, **labels: str) -> float:
    return sum(value for _, value in samples(text, name, **labels))


def test_metrics_without_gunicorn_label_by_route_rule() -> None:
    app = client(SERVICES / "observed")
    before = total(app.get("/metrics").text, "kiln_http_requests_total", route=ITEMS)
    for item in (1, 2, 3):
        assert app.get(f"/items/{item}").status_code == 200
    assert app.get("/no/such/path").status_code == 404
    text = app.get("/metrics").text
    assert total(text, "kiln_http_requests_total", route=ITEMS, method="GET", status="2xx") \
        == before + 3
    assert total(text, "kiln_http_requests_total", route="<unmatched>", status="4xx") >= 1
    routes = {labels["route"] for labels, _ in samples(text, "kiln_http_requests_total")}
    assert not [r for r in routes if r.startswith("/items/") and r != ITEMS]
    assert "/no/such/path" not in text
    # /metrics itself is not counted: scraping does not change what it reports.
    assert "/metrics" not in routes


def test_predict_is_counted_and_timed() -> None:
    app = client(SERVICES / "observed")
    text = app.get("/metrics").text
    before_ok = total(text, "kiln_predictions_total", status="2xx")
    before_error = total(text, "kiln_predictions_total", status="5xx")
    assert app.post("/api/v1.0/predict", json={"input": 2}).status_code == 200
    assert app.post("/api/v1.0/predict", json={"input": "boom"}).status_code == 500
    text = app.get("/metrics").text
    assert total(text, "kiln_predictions_total", status="2xx") == before_ok + 1
    assert total(text, "kiln_predictions_total", status="5xx") == before_error + 1
    assert total(text, "kiln_predict_duration_seconds_count") >= 2
    assert samples(text, "kiln_model_load_seconds")
    assert total(text, "kiln_http_requests_in_progress") == 0


def test_request_and_predict_metrics_are_exactly_the_latency_histograms_series() -> None:
    app = client(SERVICES / "observed")
    for body in ({"input": 2}, {"input": "boom"}, {"nope": 1}):
        app.post("/api/v1.0/predict", json=body)
    app.post("/api/v1.0/predict/", json={"input": 3})
    app.get("/items/7")
    text = app.get("/metrics").text
    counts = samples(text, "kiln_http_request_duration_seconds_count")
    assert counts
    for labels, value in counts:
        assert total(text, "kiln_http_requests_total", **labels) == value
    assert {tuple(sorted(lb.items())) for lb, _ in samples(text, "kiln_http_requests_total")} \
        == {tuple(sorted(lb.items())) for lb, _ in counts}
    for status in ("2xx", "4xx", "5xx"):
        predict = sum(v for lb, v in counts if lb["method"] == "POST" and lb["status"] == status
                      and lb["route"] in ("/api/v1.0/predict", "/api/v1.0/predict/"))
        assert predict >= 1
        assert total(text, "kiln_predictions_total", status=status) == predict
        assert total(text, "kiln_predict_duration_seconds_count", status=status) == predict
        # One histogram per version: other tests' services share this process's registry.
        ours = sum(v for lb, v in counts if lb["method"] == "POST" and lb["status"] == status
                   and lb["version"] == "2.0.0"
                   and lb["route"] in ("/api/v1.0/predict", "/api/v1.0/predict/"))
        buckets = [v for lb, v in samples(text, "kiln_predict_duration_seconds_bucket",
                                          status=status, version="2.0.0")]
        assert buckets == sorted(buckets) and buckets[-1] == ours
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["kiln_http_requests"] == "counter"
    assert families["kiln_predictions"] == "counter"
    assert families["kiln_predict_duration_seconds"] == "histogram"


def test_collectors_added_by_other_parts_are_served() -> None:
    from prometheus_client.core import GaugeMetricFamily

    app = make_app(SERVICES / "observed")
    family = GaugeMetricFamily("kiln_test_extra", "A figure another process keeps.")
    family.add_metric([], 3)
    metrics.add_collector(app, lambda: [family])
    assert total(app.test_client().get("/metrics").text, "kiln_test_extra") == 3


def test_log_metric_is_a_gauge_with_labels() -> None:
    app = client(SERVICES / "observed")
    runtime.log_metric("single_accuracy", 0.5, model="a")
    runtime.log_metric("single_accuracy", 0.75, model="a")
    runtime.log_metric("kiln_user_single_rows", 12)
    text = app.get("/metrics").text
    assert samples(text, "kiln_user_single_accuracy") == [({"model": "a"}, 0.75)]
    assert samples(text, "kiln_user_single_rows") == [({}, 12.0)]


@pytest.mark.parametrize(("name", "value", "labels", "message"), [
    ("bad-name", 1, {}, "name 'bad-name' is not a metric name"),
    ("9lives", 1, {}, "name '9lives' is not a metric name"),
    ("fine", "high", {}, "value of 'fine' must be a number, got 'high'"),
    ("fine", None, {}, "value of 'fine' must be a number, got None"),
    ("fine", 1, {"__reserved": "x"}, "label '__reserved' of 'fine' is not a label name"),
    ("twice", 1, {"other": "x"},
     "'kiln_user_twice' was logged with labels ['model'], now with ['other']"),
])
def test_log_metric_refuses_bad_input(name: str, value: object, labels: dict[str, str],
                                      message: str) -> None:
    runtime.log_metric("twice", 1, model="m")
    with pytest.raises(metrics.MetricError, match="^log_metric: " + message.replace("[", r"\[")):
        runtime.log_metric(name, value, **labels)  # type: ignore[arg-type]


def test_multiprocess_dir_named_by_the_user_is_emptied(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "keep.txt").write_text("not ours")
    monkeypatch.setenv(metrics.ENV, str(tmp_path))
    assert metrics.prepare_multiprocess_dir() == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_folders_of_dead_servers_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"kiln-metrics-{dead.pid}").mkdir()
    (tmp_path / f"kiln-metrics-{os.getpid()}").mkdir()
    metrics._remove_orphans(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f"kiln-metrics-{os.getpid()}"]


def _pids(server: Server, count: int) -> set[int]:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: server.get(f"/items/{i}").json(), range(count)))
    assert [a["item"] for a in answers] == list(range(count))
    return {a["pid"] for a in answers}


def test_two_workers_count_exactly_what_was_sent(serve: Callable[..., Server]) -> None:
    server = serve("observed", env={"GUNICORN_CMD_ARGS": "--workers 2 --threads 4"})
    pids = _pids(server, 100)
    assert len(pids) == 2, "both workers should have answered some of the 100 requests"
    for pid in pids:  # each worker logs a value; the gauge shows one of them, not a sum
        assert server.post("/metric", json={"name": "served_by", "value": pid,
                                            "labels": {"kind": "pid"}}).status_code == 200
    # Scrape several times: any worker may answer, each must see both workers' counts.
    for _ in range(4):
        text = server.get("/metrics").text
        assert total(text, "kiln_http_requests_total", route=ITEMS) == 100
        assert total(text, "kiln_http_request_duration_seconds_count", route=ITEMS) == 100
        assert total(text, "kiln_http_requests_in_progress") == 0
        labels = {s[0]["route"] for s in samples(text, "kiln_http_requests_total")}
        assert not [r for r in labels if r.startswith("/items/") and r != ITEMS]
        [(gauge_labels, value)] = samples(text, "kiln_user_served_by")
        assert gauge_labels == {"kind": "pid"} and int(value) in pids
        assert len(samples(text, "kiln_model_load_seconds")) == 1


def test_a_killed_worker_keeps_its_counts_and_drops_its_in_flight(
        serve: Callable[..., Server]) -> None:
    server = serve("observed", env={"GUNICORN_CMD_ARGS": "--workers 2 --threads 4"})
    _pids(server, 20)

    def call_slow() -> None:
        with contextlib.suppress(requests.RequestException):
            server.get("/slow?seconds=30", timeout=40)

    caller = threading.Thread(target=call_slow)
    caller.start()
    started = wait_for(lambda: next((json.loads(line)["pid"] for line in
                                     server.output().splitlines()
                                     if "slow request started" in line), None), timeout=10)
    assert started, server.output()
    assert total(server.get("/metrics").text, "kiln_http_requests_in_progress") == 1
    os.kill(started, signal.SIGKILL)  # a worker of the server this test started
    caller.join(45)
    # gunicorn's child_exit hook marks it dead: its in-flight request no longer counts.
    assert wait_for(lambda: total(server.get("/metrics").text,
                                  "kiln_http_requests_in_progress") == 0, timeout=20)
    text = server.get("/metrics").text
    assert total(text, "kiln_http_requests_total", route=ITEMS) == 20


def test_metrics_folder_is_on_tmpfs_and_removed_at_exit(serve: Callable[..., Server]) -> None:
    server = serve("observed")
    folder = Path("/dev/shm") / f"kiln-metrics-{server.proc.pid}"
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm on this machine")
    assert wait_for(lambda: list(folder.glob("*.db")), timeout=10)
    server.stop()
    assert not folder.exists()


def test_hooks_of_one_name_run_in_turn_with_the_arity_gunicorn_checks() -> None:
    from gunicorn.config import Config

    calls: list[str] = []
    merged = merge_hooks({"child_exit": lambda server, worker: calls.append("metrics")},
                         {"child_exit": lambda server, worker: calls.append("reload"),
                          "on_exit": lambda server: calls.append("exit")})
    config = Config()
    for name, hook in merged.items():
        config.set(name, hook)  # raises TypeError on a wrong arity
    config.child_exit(None, None)
    assert calls == ["metrics", "reload"]


def test_predict_with_and_without_a_trailing_slash_is_one_series() -> None:
    app = client(SERVICES / "observed")
    before = total(app.get("/metrics").text, "kiln_http_requests_total", method="POST",
                   route="/api/v1.0/predict")
    assert app.post("/api/v1.0/predict", json={"input": 1}).status_code == 200
    assert app.post("/api/v1.0/predict/", json={"input": 2}).status_code == 200
    text = app.get("/metrics").text
    routes = {labels["route"] for labels, _ in samples(text, "kiln_http_requests_total",
                                                      method="POST")}
    assert "/api/v1.0/predict/" not in routes and "/api/v1.0/predict" in routes
    assert total(text, "kiln_http_requests_total", method="POST",
                 route="/api/v1.0/predict") == before + 2
    assert total(text, "kiln_predictions_total") >= 2


def test_requests_and_predictions_are_labelled_by_the_service_version() -> None:
    app = client(SERVICES / "observed")  # version 2.0.0
    assert app.post("/api/v1.0/predict", json={"input": 3}).status_code == 200
    text = app.get("/metrics").text
    assert total(text, "kiln_http_requests_total", route="/api/v1.0/predict",
                 version="2.0.0") >= 1
    assert total(text, "kiln_predictions_total", status="2xx", version="2.0.0") >= 1
    assert total(text, "kiln_predict_duration_seconds_count", version="2.0.0") >= 1
