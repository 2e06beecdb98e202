"""Adaptive batching (service.yaml predict.batch): its settings, the batcher, real workers."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime.config import ServiceConfig, parse_service
from runtime.errors import ConfigError
from runtime.serving.batching import Batcher, FutureTimeout, item_of
from runtime.serving.settings import BATCH_THREADS, GEVENT_WORKER, batching_defaults, options
from tests.support import SERVICES, Server, wait_for, write_service

PREDICT = "/api/v1.0/predict"


# -- service.yaml ----------------------------------------------------------------------------

@pytest.mark.parametrize(("batch", "size", "latency"), [
    ({"max_size": 8, "max_latency_ms": 2.5}, 8, 2.5),
    ({"max_size": 1}, 1, 5),
    ({"max_latency_ms": 0}, 32, 0),
    ({}, 32, 5),
    (None, 32, 5),
])
def test_batch_settings_and_their_defaults(batch: Any, size: int, latency: float) -> None:
    values = parse_service({"id": "x", "predict": {"batch": batch}})
    assert (values["predict.batch.max_size"], values["predict.batch.max_latency_ms"]) == (
        size, latency)


def test_without_predict_batch_there_is_no_batching() -> None:
    values = parse_service({"id": "x", "predict": {"timeout": 3}})
    assert values["predict.batch.max_size"] is None
    assert values["predict.batch.max_latency_ms"] is None


@pytest.mark.parametrize(("batch", "message"), [
    ({"max_size": 0}, "service.yaml: predict.batch.max_size: must be 1 or more, got 0"),
    ({"max_size": 2.5}, "service.yaml: predict.batch.max_size: must be an integer, got 2.5"),
    ({"max_size": True}, "service.yaml: predict.batch.max_size: must be an integer, got True"),
    ({"max_latency_ms": -1}, ("service.yaml: predict.batch.max_latency_ms: must be 0 or more, "
                             "got -1")),
    ({"max_latency_ms": "5"}, ("service.yaml: predict.batch.max_latency_ms: must be an integer or "
                              "a number, got '5'")),
    ({"size": 4}, ("service.yaml: predict.batch.size: unknown key; allowed in predict.batch: "
                  "max_size, max_latency_ms")),
    (4, "service.yaml: predict.batch: must be a mapping with keys max_size, max_latency_ms"),
])
def test_bad_batch_settings_are_one_line_errors(batch: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_service({"id": "x", "predict": {"batch": batch}})
    assert str(caught.value) == message


def test_the_schema_describes_predict_batch() -> None:
    from runtime.config import json_schema

    batch = json_schema()["properties"]["predict"]["properties"]["batch"]
    assert batch["additionalProperties"] is False
    assert batch["properties"]["max_size"]["type"] == "integer"
    assert batch["properties"]["max_latency_ms"]["type"] == "number"


def _config(tmp_path: Path, data: dict[str, Any]) -> ServiceConfig:
    return ServiceConfig(tmp_path, parse_service({"id": "x", **data}))


def test_batching_changes_the_default_worker_and_service_yaml_still_wins(tmp_path: Path) -> None:
    plain = options(_config(tmp_path, {}), "127.0.0.1", 8080, env={}, cpus=2)
    assert "worker_class" not in plain  # gunicorn's sync
    batched = options(_config(tmp_path, {"predict": {"batch": {"max_size": 8}}}),
                      "127.0.0.1", 8080, env={}, cpus=2)
    assert batched["worker_class"] in (GEVENT_WORKER, "gthread")  # `gevent` runs kiln's own
    assert batched.get("threads") == batching_defaults(8).get("threads")
    latency_only = options(_config(tmp_path, {"predict": {"batch": {"max_latency_ms": 3}}}),
                           "127.0.0.1", 8080, env={}, cpus=2)
    assert latency_only["worker_class"] == batched["worker_class"]  # batching on: not sync
    chosen = options(_config(tmp_path, {"predict": {"batch": {}},
                                        "gunicorn": {"worker_class": "gthread", "threads": 4}}),
                     "127.0.0.1", 8080, env={}, cpus=2)
    assert (chosen["worker_class"], chosen["threads"]) == ("gthread", 4)


def test_gthread_gets_threads_enough_for_a_batch() -> None:
    assert BATCH_THREADS >= 8
    fallback = {"worker_class": "gthread", "threads": max(BATCH_THREADS, 100)}
    assert batching_defaults(100) in ({"worker_class": "gevent"}, fallback)


# -- The batcher, with plain functions as the model ------------------------------------------

@pytest.mark.parametrize(("args", "item"), [([[6.3, 3.3]], [6.3, 3.3]), ([1, 2], (1, 2)),
                                            (["text"], "text")])
def test_an_item_is_the_one_argument_or_the_tuple_of_them(args: list[Any], item: Any) -> None:
    assert item_of(args) == item


def _submit_all(batcher: Batcher, inputs: list[Any]) -> list[tuple[str, Any]]:
    """Submit every input from its own thread at once; ("ok", answer) or ("error", exception)."""
    start = threading.Barrier(len(inputs))

    def one(given: Any) -> tuple[str, Any]:
        start.wait(timeout=10)
        try:
            return "ok", batcher.submit(given)
        except BaseException as err:  # noqa: BLE001 - the outcome under test
            return "error", err

    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(one, inputs))


def test_a_failing_batch_is_split_until_only_the_bad_items_fail() -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def call(items: list[int]) -> list[int]:
        calls.append(list(items))
        if items == [-100]:
            gate.wait(timeout=10)  # holds the batcher while the others queue up
        if any(i < 0 and i != -100 for i in items):
            raise ValueError("negative input")
        return [i * 10 for i in items]

    batcher = Batcher(call, max_size=16, max_latency=0.0, timeout=30)
    first = threading.Thread(target=batcher.submit, args=(-100,))
    first.start()
    assert wait_for(lambda: calls, timeout=10)
    inputs = [1, 2, -3, 4, 5, 6, -7, 8]
    done: list[list[tuple[str, Any]]] = []
    others = threading.Thread(target=lambda: done.append(_submit_all(batcher, inputs)))
    others.start()
    assert wait_for(lambda: batcher.queued() == len(inputs), timeout=10)
    gate.set()
    others.join(timeout=30)
    first.join(timeout=30)
    outcomes = done[0]
    for given, (kind, value) in zip(inputs, outcomes):
        if given < 0:
            assert kind == "error" and str(value) == "negative input"
        else:
            assert (kind, value) == ("ok", given * 10)
    assert sorted(calls[1]) == sorted(inputs)  # one call for all of them, then the splits
    assert [-3] in calls and [-7] in calls


def test_a_wrong_number_of_answers_fails_the_callers() -> None:
    batcher = Batcher(lambda items: [1], max_size=4, max_latency=0.0, timeout=30)
    kind, err = _submit_all(batcher, ["a"])[0]
    assert (kind, err) == ("ok", 1)
    outcomes = _submit_all(Batcher(lambda items: [], 4, 0.0, 30), ["a", "b"])
    assert all(kind == "error" and "answered 0 predictions for 1 inputs" in str(err)
               for kind, err in outcomes)


def test_a_batch_past_the_timeout_raises_and_the_batcher_goes_on() -> None:
    release = threading.Event()

    def call(items: list[str]) -> list[str]:
        if "slow" in items:
            release.wait(timeout=30)
        return [f"{i}!" for i in items]

    batcher = Batcher(call, max_size=4, max_latency=0.0, timeout=0.2)
    try:
        with pytest.raises(FutureTimeout):
            batcher.submit("slow")
        assert batcher.submit("next") == "next!"  # while the slow call still runs
    finally:
        release.set()


def test_observers_hear_each_batch_size_and_wait() -> None:
    seen: list[tuple[int, int]] = []
    batcher = Batcher(lambda items: items, max_size=4, max_latency=0.0, timeout=30)
    batcher.observers.append(lambda size, waits: seen.append((size, len(waits))))
    assert batcher.submit("x") == "x"
    assert seen == [(1, 1)]


# -- The model template, in process ----------------------------------------------------------

def test_the_model_template_batches_rows_and_answers_as_without_batching(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.linear_model import LogisticRegression

    from runtime.app import create_app

    data = datasets.load_iris()
    joblib.dump(LogisticRegression(max_iter=500).fit(data.data, data.target),
                tmp_path / "model.joblib")
    answers = {}
    for batched in (False, True):
        yaml = "id: iris\nmodel: {path: model.joblib}\n"
        if batched:
            yaml += "predict: {batch: {max_size: 8, max_latency_ms: 0}}\n"
        (tmp_path / "service.yaml").write_text(yaml)
        app = create_app(tmp_path)
        app.extensions["kiln"].health.start(background=False)
        assert (app.extensions["kiln"].predictor.batcher is not None) == batched
        client = app.test_client()
        answers[batched] = [client.post(PREDICT, json={"input": given}).get_json()["prediction"]
                            for given in ([[6.3, 3.3, 6.0, 2.5]],
                                          [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]],
                                          [6.3, 3.3, 6.0, 2.5])]
        bad = client.post(PREDICT, json={"input": [[1, 2]]})
        assert bad.status_code == 500
    assert answers[True] == answers[False] == [[2], [0, 2], [2]]


# -- Real gunicorn workers -------------------------------------------------------------------

def _metrics(server: Server) -> dict[str, float]:
    """Samples of kiln's batch histograms and the in-flight gauge, summed over labels."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(server.get("/metrics").text):
        for sample in family.samples:
            if sample.name.startswith(("kiln_batch_", "kiln_http_requests_in_progress")):
                key = sample.name + (f"{{le={sample.labels['le']}}}" if "le" in sample.labels
                                     else "")
                out[key] = out.get(key, 0.0) + sample.value
    return out


def _in_flight(server: Server) -> float:
    return _metrics(server).get("kiln_http_requests_in_progress", 0.0)


def _post(server: Server, given: Any) -> tuple[int, Any]:
    answer = server.post(PREDICT, json={"input": given}, timeout=60)
    return answer.status_code, answer.json()


def _held(server: Server, tmp_path: Path, inputs: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    """Send INPUTS at once while a first request holds the batcher; release it once all wait."""
    gate = tmp_path / f"gate-{uuid.uuid4().hex[:6]}"
    with ThreadPoolExecutor(len(inputs) + 1) as pool:
        first = pool.submit(_post, server, {"marker": "gate", "wait_for": str(gate)})
        assert wait_for(lambda: _in_flight(server) >= 1, timeout=30)
        futures = [pool.submit(_post, server, given) for given in inputs]
        waiting = wait_for(lambda: _in_flight(server) >= len(inputs) + 1, timeout=30)
        gate.touch()
        assert waiting, f"the requests never all reached the server:\n{server.output()}"
        assert first.result(timeout=60)[0] == 200
        return [future.result(timeout=60) for future in futures]


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = Server(["serve", str(SERVICES / "batching")],
                    tmp_path_factory.mktemp("batching") / "server.log")
    yield server.wait_ready()
    server.stop()


def test_concurrent_requests_share_calls_and_each_gets_its_own_answer(
        batching_server: Server, tmp_path: Path) -> None:
    before = _metrics(batching_server)
    markers = [f"m-{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    answers = _held(batching_server, tmp_path, [{"marker": m} for m in markers])
    assert [status for status, _ in answers] == [200] * len(markers)
    assert [body["prediction"]["marker"] for _, body in answers] == markers
    assert len({body["request_id"] for _, body in answers}) == len(markers)
    assert max(body["prediction"]["size"] for _, body in answers) > 1
    after = _metrics(batching_server)
    calls = after["kiln_batch_size_count"] - before.get("kiln_batch_size_count", 0.0)
    items = after["kiln_batch_size_sum"] - before.get("kiln_batch_size_sum", 0.0)
    assert items == len(markers) + 1 and calls < items  # some call held more than one request
    singles = after["kiln_batch_size_bucket{le=1.0}"] - before.get(
        "kiln_batch_size_bucket{le=1.0}", 0.0)
    assert singles < calls
    waited = after["kiln_batch_wait_seconds_count"] - before.get("kiln_batch_wait_seconds_count",
                                                                 0.0)
    assert waited == items
    log = batching_server.output()
    assert all(body["request_id"] in log for _, body in answers)  # a log line for each


def test_a_poisoned_input_fails_alone(batching_server: Server, tmp_path: Path) -> None:
    inputs: list[dict[str, Any]] = [{"marker": f"ok-{i}"} for i in range(5)]
    inputs.insert(2, {"marker": "bad", "poison": True})
    answers = _held(batching_server, tmp_path, inputs)
    for given, (status, body) in zip(inputs, answers):
        if given.get("poison"):
            assert status == 500 and "request_id" in body
        else:
            assert (status, body["prediction"]["marker"]) == (200, given["marker"])
    assert "poisoned input bad" in batching_server.output()


def test_a_bad_body_answers_400_before_any_batch(batching_server: Server) -> None:
    answer = batching_server.post(PREDICT, json={"inputs": 1})
    assert answer.status_code == 400


def test_a_slow_batch_answers_504_while_the_next_request_is_served(
        batching_server: Server, tmp_path: Path) -> None:
    never = tmp_path / "released-after-the-test"
    try:
        status, body = _post(batching_server, {"marker": "slow", "wait_for": str(never)})
        assert status == 504 and "predict.timeout (2 s)" in body["error"]
        status, body = _post(batching_server, {"marker": "next"})
        assert not never.exists()  # the slow call is still waiting for its file
        assert (status, body["prediction"]["marker"]) == (200, "next")
    finally:
        never.touch()


def test_the_batching_server_runs_the_worker_batching_chose(batching_server: Server) -> None:
    worker = batching_defaults(32)["worker_class"]
    worker = GEVENT_WORKER if worker == "gevent" else worker
    assert f"Using worker: {worker}" in batching_server.output()


def test_without_gevent_gthread_batches_too(serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve("batching", env={"GUNICORN_CMD_ARGS": "--worker-class gthread --threads 16"})
    assert "Using worker: gthread" in server.output()
    answers = _held(server, tmp_path, [{"marker": f"t-{i}"} for i in range(6)])
    assert [body["prediction"]["marker"] for _, body in answers] == [f"t-{i}" for i in range(6)]
    assert max(body["prediction"]["size"] for _, body in answers) > 1


def test_input_the_batcher_does_not_take_is_preprocessed_once() -> None:
    from runtime.serving.predict import Predictor

    calls: list[tuple[Any, ...]] = []

    def preprocess(*args: Any) -> Any:
        calls.append(args)
        return {"x": 1}

    predictor = Predictor(lambda value: ("alone", value), preprocess, 5, False,
                          predict_batch=lambda rows: [("batch", row) for row in rows])
    predictor.enable_batching(4, 0.0, rows=True)  # the model template's rows
    assert predictor.run([{"x": 0}]) == ("alone", {"x": 1})  # an object is not a row
    assert calls == [({"x": 0},)]


def test_rows_reach_predict_batch_preprocessed_as_predict_would_get_them() -> None:
    """The inference protocols and `kiln batch` hand rows to run_rows: with predict_batch
    defined, each row goes through preprocess first, as a batched /predict request does."""
    from runtime.serving.predict import Predictor

    def preprocess(row: Any) -> Any:
        return ("pre", row)  # a tuple: predict(*it) would get two arguments

    batched = Predictor(lambda *args: args, preprocess, 5, False,
                        predict_batch=lambda items: [("batch", item) for item in items])
    one_by_one = Predictor(lambda *args: ("batch", args), preprocess, 5, False)
    assert batched.run_rows([1, 2]) == one_by_one.run_rows([1, 2]) == [
        ("batch", ("pre", 1)), ("batch", ("pre", 2))]


def test_predict_batch_set_without_predict_batch_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """predict.batch with no predict_batch in app/predict.py: a warning, and predict alone."""
    from runtime.testing import make_app

    root = write_service(tmp_path / "svc", {"id": "svc", "predict": {"batch": {"max_size": 4}}},
                         {"app/predict.py": "def predict(x):\n    return x * 2\n"})
    with caplog.at_level("WARNING", logger="kiln.predict"):
        client = make_app(root).test_client()
    assert any("defines no predict_batch" in r.getMessage() for r in caplog.records), caplog.text
    answer = client.post("/api/v1.0/predict", json={"input": 21})
    assert answer.status_code == 200 and answer.json["prediction"] == 42
