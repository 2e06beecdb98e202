"""predict.timeout under each worker class, and which worker class and threads kiln picks."""
from __future__ import annotations

import time

import pytest

from runtime.testing import client
from tests.support import SERVICES

PREDICT = "/api/v1.0/predict"


@pytest.mark.parametrize("gunicorn_args", ["--worker-class sync",
                                           "--worker-class gthread --threads 2"])
def test_timeout_is_504_and_the_worker_serves_on(serve, gunicorn_args):
    server = serve("basic", env={"GUNICORN_CMD_ARGS": f"--workers 1 {gunicorn_args}"})
    started = time.monotonic()
    response = server.post(PREDICT, json={"input": ["sleep", 10]})
    assert response.status_code == 504, response.text
    assert time.monotonic() - started < 8  # the 2 s timeout, not the 10 s sleep
    for n in range(3):
        assert server.post(PREDICT, json={"input": [n]}).json()["prediction"] == {"args": [n]}


def test_timeout_in_the_main_thread_of_the_test_client():
    with client(SERVICES / "basic") as http:
        assert http.post(PREDICT, json={"input": ["sleep", 10]}).status_code == 504
        assert http.post(PREDICT, json={"input": [1]}).json["prediction"] == {"args": [1]}


@pytest.mark.parametrize(("yaml", "cmd_args", "expected"), [
    ("", "", ("gthread", 4)),                                             # the default
    ("gunicorn:\n  threads: 2\n", "", ("gthread", 2)),
    ("gunicorn:\n  worker_class: sync\n", "", ("sync", 1)),               # not gunicorn's gthread
    ("", "--worker-class sync", ("sync", 1)),
    ("gunicorn:\n  worker_class: sync\n", "--threads 3", ("sync", 3)),    # asked for: kept
    ("gunicorn:\n  worker_class: sync\n", "--worker-class gthread", ("gthread", 4)),
])
def test_worker_class_and_threads(tmp_path, yaml, cmd_args, expected):
    from runtime.config import load_service
    from runtime.server import options

    (tmp_path / "service.yaml").write_text("id: workers\n" + yaml)
    settings = options(load_service(tmp_path), "127.0.0.1", 8080,
                       env={"GUNICORN_CMD_ARGS": cmd_args}, cpus=2)
    assert (settings["worker_class"], settings["threads"]) == expected
