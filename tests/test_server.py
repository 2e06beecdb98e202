"""The runtime under a real gunicorn: predict semantics, health states, errors and configuration."""
from __future__ import annotations

import base64
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import wait_for

PREDICT = "/api/v1.0/predict"
STATUS = "/api/v1.0/health/status"
STARTUP = "/api/v1.0/health/startup"


@pytest.fixture
def basic(serve):
    return serve("basic")


@pytest.mark.parametrize(("body", "expected"), [
    ({"input": [1, 2]}, {"args": [1, 2]}),                     # a list spreads into predict(*X)
    ({"input": "x"}, {"args": ["x"]}),                         # anything else is one argument
    ({"input": {"a": 1}}, {"args": [{"a": 1}]}),
    ({"input": [[1, 2]]}, {"args": [[1, 2]]}),
    ({"input": ["pre", 1]}, {"args": ["preprocessed", 1]}),    # preprocess runs first
])
def test_predict_semantics(basic, body, expected):
    response = basic.post(PREDICT, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == expected
    assert response.json()["request_id"] == response.headers["X-Request-ID"]
    assert basic.post(PREDICT + "/", json=body).json()["prediction"] == expected


def test_generator_streams_ndjson_in_several_chunks(basic):
    response = basic.post(PREDICT, json={"input": ["stream", 5]}, stream=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    assert response.headers.get("Transfer-Encoding") == "chunked"
    chunks = [c for c in response.iter_content(chunk_size=None) if c]
    lines = b"".join(chunks).decode().splitlines()
    assert [json.loads(line) for line in lines] == [{"chunk": i} for i in range(5)]
    assert len(chunks) > 1


def test_timeout_answers_504_and_the_service_keeps_serving(basic):
    response = basic.post(PREDICT, json={"input": ["sleep", 5]})
    assert response.status_code == 504
    assert "predict.timeout (2 s)" in response.json()["error"]
    assert basic.post(PREDICT, json={"input": [1]}).json()["prediction"] == {"args": [1]}


def test_base64_input_becomes_a_file_removed_afterwards(serve):
    server = serve("files")
    encoded = [base64.b64encode(text).decode() for text in (b"first", b"second")]
    response = server.post(PREDICT, json={"input": encoded})
    assert response.status_code == 200, response.text
    files = response.json()["prediction"]
    assert [f["content"] for f in files] == ["first", "second"]
    assert not any(os.path.exists(f["path"]) for f in files)
    bad = server.post(PREDICT, json={"input": "not base64!"})
    assert bad.status_code == 400
    assert "base64" in bad.json()["error"]


def test_slow_load_is_503_then_200_and_startup_never_flips_back(serve, tmp_path):
    gate = tmp_path / "gate"
    server = serve("slow-load", env={"TEST_LOAD_GATE": str(gate)}, ready=False)
    status = server.get(STATUS)
    assert status.status_code == 503
    assert "loading" in status.json()["reason"]
    assert server.get(STARTUP).status_code == 503
    # A prediction sent while load() runs waits for it rather than answering 503.
    early: list[Any] = []
    waiting = threading.Thread(target=lambda: early.append(
        server.post(PREDICT, json={"input": 0}, timeout=60)))
    waiting.start()
    assert wait_for(lambda: "POST" not in server.output() and waiting.is_alive())
    gate.touch()
    waiting.join(60)
    assert early[0].status_code == 200
    assert early[0].json()["prediction"] == {"loaded": True, "x": 0}
    assert wait_for(lambda: server.get(STATUS).status_code == 200), server.output()
    # Every worker has loaded once ten calls in a row say so; from then on it never flips back.
    assert wait_for(lambda: all(server.get(STARTUP).status_code == 200 for _ in range(10)))
    for _ in range(5):
        assert server.get(STARTUP).status_code == 200
    assert server.post(PREDICT, json={"input": 1}).json()["prediction"] == {"loaded": True, "x": 1}


def test_failing_load_is_503_with_the_error(serve):
    server = serve("failing-load", ready=False)
    wait_for(lambda: server.get(STARTUP).status_code == 200)
    status = server.get(STATUS)
    assert status.status_code == 503
    reason = status.json()["reason"]
    assert "weights file is corrupt" in reason
    assert "app/predict.py:2" in reason
    assert "Traceback" in server.output()


def test_status_reports_service_and_gpu(basic):
    body = basic.get(STATUS).json()
    assert body["status"] == "ok"
    assert (body["service"], body["version"]) == ("basic", "1.2.3")
    assert body["gpu"] == {"visible": False}


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    from tests.support import SERVICES, Server

    log = tmp_path_factory.mktemp("configured") / "server.log"
    server = Server(["serve", str(SERVICES / "configured")], log,
                    env={"FLASK_OTHER_SETTING": '"env"', "GUNICORN_CMD_ARGS": "--threads 2"})
    server.wait_ready()
    yield server
    server.stop()


ERRORS = [
    ("post", PREDICT, {"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400,
     "malformed JSON"),
    ("post", PREDICT, {"json": {"no": "input"}}, 400, "input: is required"),
    ("post", PREDICT, {"data": "plain", "headers": {"Content-Type": "text/plain"}}, 415,
     "application/json"),
    ("post", PREDICT, {"json": {"input": "x" * 200}}, 413, "limit"),
    ("get", "/no/such/route", {}, 404, "not found"),
    ("get", PREDICT, {}, 405, "not allowed"),
    ("post", "/fail", {"json": {}}, 500, "the service's log has the details"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "message"), ERRORS)
@pytest.mark.parametrize("given_id", [None, "caller-id-42"])
def test_errors_are_json_with_the_request_id(configured, method, path, kwargs, status, message,
                                             given_id):
    headers = dict(kwargs.get("headers", {}))
    if given_id:
        headers["X-Request-ID"] = given_id
    response = requests.request(method, configured.url + path, headers=headers, timeout=10,
                                **{k: v for k, v in kwargs.items() if k != "headers"})
    assert response.status_code == status
    body = response.json()
    assert message.lower() in body["error"].lower()
    assert body["request_id"] == response.headers["X-Request-ID"]
    if given_id:
        assert body["request_id"] == given_id


def test_after_a_user_exception_the_same_worker_serves(configured):
    before = configured.get("/whoami").json()["pid"]
    assert configured.post("/fail", json={}).status_code == 500
    assert configured.get("/whoami").json()["pid"] == before
    assert "RuntimeError: user code failed on purpose" in configured.output()


def test_flask_config_from_yaml_then_env(configured):
    assert configured.get("/config/KILN_GREETING").json()["value"] == "from-yaml"
    assert configured.get("/config/OTHER_SETTING").json()["value"] == "env"
    assert configured.get("/config/MAX_CONTENT_LENGTH").json()["value"] == 100


def test_gunicorn_threads_from_yaml_and_env_wins(configured):
    output = configured.output()
    assert "Using worker: gthread" in output
    # Eight clients at once: every request is served by a thread of gthread's pool (the sync
    # worker would answer from MainThread), and by one of 2 threads (env), never of 4 (yaml).
    with ThreadPoolExecutor(8) as clients:
        threads = set(clients.map(lambda _: configured.get("/whoami").json()["thread"], range(40)))
    pools = {re.fullmatch(r"(ThreadPoolExecutor-\d+)_[01]", name) for name in threads}
    assert None not in pools, threads
    assert len({match.group(1) for match in pools if match}) == 1, threads
    from runtime.config import load_service
    from runtime.serving.settings import options
    from tests.support import SERVICES

    settings = options(load_service(SERVICES / "configured"), "127.0.0.1", 1,
                       env={"GUNICORN_CMD_ARGS": "--threads 2"}, cpus=2)
    assert settings["threads"] == 2
    assert settings["workers"] == 1


def test_trailing_slash_health_routes_do_not_redirect(basic):
    for route in (STATUS, STARTUP, "/api/v1.0/health/live"):
        for path in (route, route + "/"):
            response = basic.get(path, allow_redirects=False)
            assert response.status_code == 200, path


def test_stop_is_clean(serve):
    server = serve("basic")
    assert server.stop() == 0
    assert "Shutting down" in server.output() or "Handling signal" in server.output()


def test_served_from_another_directory(serve, tmp_path):
    server = serve(Path("tests/services/basic").resolve())
    assert server.post(PREDICT, json={"input": 1}).status_code == 200


def test_a_port_in_use_or_a_host_not_here_stops_serve_at_once_with_one_line() -> None:
    import socket
    import subprocess
    import sys

    from tests.support import ROOT, SERVICES

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_use = (f"cannot listen on 127.0.0.1:{port}: Address already in use; another "
                  "process listens there: choose another with --port")
        not_here = f"cannot listen on no-such-host.invalid:{port}: "
        for host, message in [("127.0.0.1", in_use), ("no-such-host.invalid", not_here)]:
            done = subprocess.run([sys.executable, "-m", "runtime.cli", "serve",
                                   str(SERVICES / "basic"), "--host", host, "--port", str(port)],
                                  cwd=ROOT, capture_output=True, text=True, timeout=60,
                                  check=False)
            assert done.returncode == 1, done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"Error: {message}"), done.stderr
            assert "gunicorn" not in done.stdout, done.stdout  # it never started
