"""kiln's gevent worker (runtime/serving/workers.py) under real gunicorn: every connection in turn."""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.config import ServiceConfig, parse_service
from runtime.serving.settings import GEVENT_WORKER, options
from tests.support import Server, wait_for

LIVE = "/api/v1.0/health/live"
PREDICT = "/api/v1.0/predict"


def _config(tmp_path: Path, gunicorn: dict[str, object]) -> ServiceConfig:
    return ServiceConfig(tmp_path, parse_service({"id": "x", "gunicorn": gunicorn}))


def test_worker_class_gevent_runs_kiln_s_gevent_worker(tmp_path: Path) -> None:
    chosen = options(_config(tmp_path, {"worker_class": "gevent"}), "127.0.0.1", 8080, env={})
    assert chosen["worker_class"] == GEVENT_WORKER
    from_env = options(_config(tmp_path, {}), "127.0.0.1", 8080,
                       env={"GUNICORN_CMD_ARGS": "--worker-class gevent"})
    assert from_env["worker_class"] == GEVENT_WORKER
    kept = options(_config(tmp_path, {"worker_class": "gthread"}), "127.0.0.1", 8080, env={})
    assert kept["worker_class"] == "gthread"


def _request(rid: str, body: object = None) -> bytes:
    if body is None:
        return f"GET {LIVE} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: {rid}\r\n\r\n".encode()
    data = json.dumps(body).encode()
    return (f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: {rid}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
            ).encode() + data


def _read_answer(sock: socket.socket) -> bytes:
    """One whole response whose length is given (the health route's), its head returned."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def _access_ids(server: Server) -> list[str]:
    return [json.loads(line).get("request_id") for line in server.output().splitlines()
            if '"kiln.access"' in line]


def test_a_connection_with_requests_in_hand_lets_another_go_between_them(
        serve: Callable[..., Server]) -> None:
    """gunicorn's own gevent worker answers every request a connection has already sent
    before it lets another connection's greenlet run: a client that sends its next request
    quickly kept the others waiting (bench: p99 4 s at 64 connections). kiln's worker goes
    to the back of the line after each request."""
    pytest.importorskip("gevent")
    server = serve("basic", env={"GUNICORN_CMD_ARGS": "--worker-class gevent --workers 1"})
    assert f"Using worker: {GEVENT_WORKER}" in server.output()
    queued = 1000
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as busy, \
            socket.create_connection(("127.0.0.1", server.port), timeout=60) as other:
        for sock, rid in ((busy, "busy-warm"), (other, "other-warm")):  # both accepted, idle
            sock.sendall(_request(rid))
            assert b" 200 " in _read_answer(sock)
        drained = threading.Thread(target=_drain, args=(busy,), daemon=True)
        drained.start()  # busy's answers are read as they come: no full buffer makes it wait
        busy.sendall(b"".join(_request(f"busy-{i}") for i in range(queued)))
        # Once the worker is on busy's requests, with most of them still in hand:
        assert wait_for(lambda: "busy-0" in _access_ids(server), timeout=30, interval=0.01)
        other.sendall(_request("other"))
        assert b" 200 " in _read_answer(other)
        answered = wait_for(lambda: (ids := _access_ids(server)) and f"busy-{queued - 1}" in ids
                            and ids, timeout=60)
    assert answered, server.output()
    after = answered[answered.index("other") + 1:]
    # Not after all of them: busy's requests were still being answered after other's.
    assert sum(rid.startswith("busy-") for rid in after if rid) > queued // 4, answered


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def test_a_gevent_worker_stops_cleanly_on_sigterm(serve: Callable[..., Server]) -> None:
    """kiln's SIGTERM handler looks at the listen backlog; under gevent a patched select
    there crashed the worker (BlockingSwitchOutError) or left it running until SIGKILL."""
    pytest.importorskip("gevent")
    server = serve("basic", env={"GUNICORN_CMD_ARGS": "--worker-class gevent --workers 2"})
    assert server.get(LIVE).status_code == 200
    assert server.stop() == 0  # SIGTERM; a server still up after 20 s is SIGKILLed (-9)
    output = server.output()
    assert "Exception in worker process" not in output, output
    assert "BlockingSwitchOutError" not in output, output
    # gevent patches ssl after fork: the master imports nothing that took names from it.
    assert "MonkeyPatchWarning" not in output, output


def test_after_a_long_predict_the_other_connection_goes_before_the_queued_requests(
        serve: Callable[..., Server], tmp_path: Path) -> None:
    """A predict that holds the worker (no switch) while another connection's request
    arrives: that request is answered right after it, not after the 40 its connection queued."""
    pytest.importorskip("gevent")
    server = serve("basic", env={"GUNICORN_CMD_ARGS": "--worker-class gevent --workers 1"})
    spinning = tmp_path / "spinning"
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as busy, \
            socket.create_connection(("127.0.0.1", server.port), timeout=60) as other:
        for sock, rid in ((busy, "busy-warm"), (other, "other-warm")):
            sock.sendall(_request(rid))
            assert b" 200 " in _read_answer(sock)
        threading.Thread(target=_drain, args=(busy,), daemon=True).start()
        busy.sendall(_request("busy-spin", {"input": ["spin", 1, str(spinning)]})
                     + b"".join(_request(f"busy-{i}") for i in range(40)))
        assert wait_for(spinning.exists, timeout=30, interval=0.005), server.output()
        other.sendall(_request("other"))  # arrives while the predict spins
        assert b" 200 " in _read_answer(other)
        answered = wait_for(lambda: (ids := _access_ids(server)) and "busy-39" in ids and ids,
                            timeout=60)
    assert answered, server.output()
    after_spin = answered[answered.index("busy-spin") + 1:]
    assert after_spin.index("other") < 5, answered


def test_the_gevent_worker_keeps_gunicorn_s_settings_and_kiln_s_answers(
        serve: Callable[..., Server]) -> None:
    """gevent's HTTP server reads the requests; gunicorn's keep-alive limit and max_requests
    still hold, and streamed answers, chunked bodies and kiln's 413 are as under gunicorn's."""
    pytest.importorskip("gevent")
    server = serve("basic", env={"GUNICORN_CMD_ARGS":
                                 "--worker-class gevent --workers 1 --keep-alive 1 --max-requests 30"})
    streamed = server.post(PREDICT, json={"input": ["stream", 3]}, stream=True)
    assert streamed.status_code == 200
    assert streamed.headers["Content-Type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in streamed.iter_lines() if line] == [
        {"chunk": 0}, {"chunk": 1}, {"chunk": 2}]
    chunked = server.post(PREDICT, data=iter([b'{"input": ', b'[1, 2]}']),
                          headers={"Content-Type": "application/json"})
    assert chunked.status_code == 200, chunked.text
    assert chunked.json()["prediction"] == {"args": [1, 2]}
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 999999999999\r\n\r\n")
        assert b" 413 " in _read_answer(sock).split(b"\r\n")[0]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as idle:
        idle.sendall(_request("idle"))
        assert b" 200 " in _read_answer(idle)
        started = time.monotonic()
        assert idle.recv(1) == b""  # closed by the server once idle for --keep-alive 1 s
        assert 0.5 < time.monotonic() - started < 20, time.monotonic() - started
    for i in range(40):  # past --max-requests 30: a new worker takes over, nothing is lost
        assert server.get(LIVE, headers={"X-Request-ID": f"restart-{i}"}).status_code == 200
    assert wait_for(lambda: "Autorestarting worker" in server.output(), timeout=30), server.output()
    def served_by_two_workers() -> bool:  # the new one answers (and is past its start-up)
        assert server.get(LIVE).status_code == 200
        return len({json.loads(line)["pid"] for line in server.output().splitlines()
                    if '"kiln.access"' in line}) >= 2
    assert wait_for(served_by_two_workers, timeout=30, interval=0.2), server.output()


def test_the_gevent_worker_reads_headers_as_gunicorn_would(serve: Callable[..., Server]) -> None:
    """kiln's worker reads header lines with its own reader (not the email package's): the
    fields reach the app and gunicorn's access log, and what gunicorn's parser refuses, above
    all a body whose end is ambiguous (which gevent would take for the next request), answers
    400 and closes the connection."""
    pytest.importorskip("gevent")
    server = serve("basic", env={"GUNICORN_CMD_ARGS":
                                 "--worker-class gevent --workers 1 --access-logfile - "
                                 "--limit-request-fields 12 --limit-request-field_size 300"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_request("headers-reach-the-app", {"input": [1, 2]})
                     .replace(b"\r\n\r\n", b"\r\nUser-Agent: header-reader-test/1\r\n\r\n", 1))
        head = _read_answer(sock)
        assert b" 200 " in head.split(b"\r\n")[0]
        assert b"X-Request-ID: headers-reach-the-app" in head
    assert wait_for(lambda: "header-reader-test/1" in server.output(), timeout=10), (
        server.output())  # gunicorn's access line, from the request's headers
    smuggled = (b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"9;x /smuggled HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n")
    chunked_and_length = (b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                          b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                          b"0\r\n\r\n")
    chunked_in_1_0 = (b"POST " + PREDICT.encode() + b" HTTP/1.0\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    get = b"GET " + LIVE.encode() + b" HTTP/1.1\r\n"
    refused = [smuggled, chunked_and_length, chunked_in_1_0,
               get + b"Host: x\r\n folded: on\r\n\r\n",
               get + b"Host : x\r\n\r\n",
               get + b"Host: a\r\nHost: b\r\n\r\n",
               get + b"X: a\nContent-Length: 0\r\n\r\n",
               get + b"Content-Length: +0\r\n\r\n",
               get + b"".join(b"X-%d: v\r\n" % i for i in range(13)) + b"\r\n",
               get + b"X-Long: " + b"v" * 300 + b"\r\n\r\n"]
    for raw in refused:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(raw)
            answer = b""
            while chunk := sock.recv(65536):  # the server answers and closes
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 400 "), (raw, answer)
            assert answer.count(b"HTTP/1.1 ") == 1, (raw, answer)
    assert server.get(LIVE, headers={f"X-{i}": "v" for i in range(6)}).status_code == 200
    assert server.get(LIVE, headers={"X-Long": "v" * 280}).status_code == 200
    assert "/smuggled" not in server.output()


@pytest.mark.parametrize("worker", ["sync", "gthread", "gevent"])
def test_a_broken_or_oversized_chunked_body_answers_once_with_400_or_413(
        serve: Callable[..., Server], worker: str) -> None:
    """A chunked body the client broke is a 400 (not a 500 with gunicorn's parser error in the
    log), answered once; one longer than MAX_CONTENT_LENGTH is a 413, not a body cut short."""
    if worker == "gevent":
        pytest.importorskip("gevent")
    server = serve("basic", env={"GUNICORN_CMD_ARGS": f"--worker-class {worker} --workers 1",
                                 "FLASK_MAX_CONTENT_LENGTH": "1000"})
    head = (b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    part = b'{"input": [' + b"1, " * 200 + b"1]}"  # 609 bytes: valid JSON, twice is not
    cases = {400: head + b"zz\r\n{}\r\n0\r\n\r\n",
             413: head + (b"%x\r\n" % len(part) + part + b"\r\n") * 2 + b"0\r\n\r\n"}
    for status, raw in cases.items():
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(raw)
            answer = b""
            while chunk := sock.recv(65536):  # the server answers and closes
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer
        assert answer.count(b"HTTP/1.1 ") == 1, answer
        body = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert set(body) == {"error", "request_id"}, body
        if status == 400:
            assert body["error"].startswith("the request body could not be read"), body
    assert server.post(PREDICT, json={"input": [1, 2]}).status_code == 200
    assert "unhandled error" not in server.output(), server.output()
