"""predict.timeout under each worker class: a sync worker's timer and gthread's pool both answer 504."""
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
