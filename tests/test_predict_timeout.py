"""predict.timeout under each worker class: a sync worker's timer, gthread's pool and gevent's
timer in the request's greenlet all answer 504."""
from __future__ import annotations

import json

import pytest

from runtime.testing import client
from tests.support import SERVICES, Server, wait_for

PREDICT = "/api/v1.0/predict"


def worker_pid(server: Server, request_id: str) -> int | None:
    """The pid on the access line of the request REQUEST_ID, once it is logged."""
    for line in server.output().splitlines():
        if request_id in line:
            record = json.loads(line)
            if record.get("logger") == "kiln.access":
                return int(record["pid"])
    return None


@pytest.mark.parametrize("gunicorn_args", ["--worker-class sync",
                                           "--worker-class gthread --threads 2",
                                           "--worker-class gevent"])
def test_timeout_is_504_and_the_worker_serves_on(serve, gunicorn_args):
    if "gevent" in gunicorn_args:
        pytest.importorskip("gevent")
    server = serve("basic", env={"GUNICORN_CMD_ARGS": f"--workers 1 {gunicorn_args}"})
    # An hour's sleep: only predict.timeout (2 s) can answer before the client gives up (60 s).
    response = server.post(PREDICT, json={"input": ["sleep", 3600]}, timeout=60)
    assert response.status_code == 504, response.text
    assert "predict.timeout (2 s)" in response.json()["error"]
    pid = wait_for(lambda: worker_pid(server, response.headers["X-Request-ID"]))
    assert pid, server.output()
    for n in range(3):
        answer = server.post(PREDICT, json={"input": [n]})
        assert answer.json()["prediction"] == {"args": [n]}
        # served by the worker that timed out: it was neither killed nor replaced
        request_id = answer.headers["X-Request-ID"]
        assert wait_for(lambda rid=request_id: worker_pid(server, rid)) == pid


def test_timeout_in_the_main_thread_of_the_test_client():
    with client(SERVICES / "basic") as http:
        assert http.post(PREDICT, json={"input": ["sleep", 10]}).status_code == 504
        assert http.post(PREDICT, json={"input": [1]}).json["prediction"] == {"args": [1]}
