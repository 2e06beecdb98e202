"""runtime.sdk.invoke and `kiln invoke` against real servers: URLs, credentials, errors, retries."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.cli import cli
from runtime.errors import ConfigError
from runtime.sdk import Client, InvokeError, invoke, service_url
from tests.support import SERVICES, Server, serving
from tests.test_auth import TOKENS_ENV
from tests.test_sigv4 import KEYS_ENV

SIGV4_ID, TOKEN_ID = "sigv4-svc", "token-svc"
ADD = {"num1": 2, "num2": 5}


@pytest.mark.parametrize("url, env, expected", [
    ("http://h:1/", {"KILN_SERVICE_URL_ADD_NUMBERS": "http://x"}, "http://h:1"),
    (None, {"KILN_SERVICE_URL_ADD_NUMBERS": "http://x/", "KILN_GATEWAY_URL": "http://g"},
     "http://x"),
    (None, {"KILN_GATEWAY_URL": "https://g/api/"},
     "https://g/api/user-services/invoke/add-numbers"),
])
def test_service_url(url: str | None, env: dict[str, str], expected: str) -> None:
    assert service_url("add-numbers", url, env) == expected


def test_an_id_that_is_not_a_service_id_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'Bad ID' is not a service id"):
        service_url("Bad ID", None, {"KILN_GATEWAY_URL": "http://127.0.0.1:1"})
    assert service_url("Bad ID", "http://127.0.0.1:1/", {}) == "http://127.0.0.1:1"


def test_no_url_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="set KILN_SERVICE_URL_ADD_NUMBERS or KILN_GATEWAY_URL"):
        service_url("add-numbers", None, {})


@pytest.fixture(scope="module")
def sigv4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory, "sigv4", KEYS_ENV)


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory, "token", TOKENS_ENV)


@pytest.fixture
def signing_env(monkeypatch: pytest.MonkeyPatch) -> None:
    key_id, secret = KEYS_ENV["KILN_AUTH_KEYS"].split(",")[0].split(":")
    monkeypatch.setenv("KILN_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("KILN_SECRET_ACCESS_KEY", secret)


def test_invoke_url_and_explicit_key_pair(sigv4: Server) -> None:
    key_id, secret = KEYS_ENV["KILN_AUTH_KEYS"].split(",")[1].split(":")
    assert invoke("post", "/add", SIGV4_ID, ADD, url=sigv4.url, auth=(key_id, secret)) == {
        "result": 7}


@pytest.mark.usefixtures("signing_env")
def test_invoke_service_url_from_env_signed_from_env(
        sigv4: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_SERVICE_URL_SIGV4_SVC", sigv4.url)
    with Client() as client:
        reply = client.request("post", "echo?q=a+b", SIGV4_ID, {"x": 1}, request_id="call-1")
    assert reply.data == {"body": {"x": 1}, "query": {"q": ["a b"]}, "user": "AK1"}
    assert (reply.status, reply.request_id) == (200, "call-1")


def test_invoke_with_token_from_env(token: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_SERVICE_URL_TOKEN_SVC", token.url)
    monkeypatch.setenv("KILN_TOKEN", "tok-bob-2")
    assert invoke("get", "/whoami", TOKEN_ID) == {"user": "bob"}


@pytest.mark.usefixtures("signing_env")
def test_invoke_through_the_gateway_prefix(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = Server([str(SERVICES / "sigv4")], tmp_path / "gateway.log", env=KEYS_ENV,
                     module="tests.gateway")
    try:
        gateway.wait_ready()
        monkeypatch.setenv("KILN_GATEWAY_URL", gateway.url)
        assert invoke("post", "/add", SIGV4_ID, ADD) == {"result": 7}
        # The service is only reachable under the prefix, and signed over the whole path.
        assert gateway.post("/add", json=ADD).status_code == 404
        assert gateway.post(f"/user-services/invoke/{SIGV4_ID}/add", json=ADD).status_code == 401
    finally:
        gateway.stop()


@pytest.mark.usefixtures("signing_env")
def test_a_400_raises_with_status_message_and_request_id(sigv4: Server) -> None:
    with pytest.raises(InvokeError) as caught:
        invoke("post", "/add", SIGV4_ID, {"num1": "x", "num2": 1}, url=sigv4.url,
               request_id="bad-numbers-1")
    err = caught.value
    assert (err.status, err.message, err.request_id) == (
        400, "num1 and num2 must be numbers", "bad-numbers-1")
    assert str(err) == "HTTP 400: num1 and num2 must be numbers (request id bad-numbers-1)"


def test_a_401_carries_the_services_request_id(sigv4: Server) -> None:
    with pytest.raises(InvokeError) as caught:
        invoke("post", "/add", SIGV4_ID, ADD, url=sigv4.url, auth=("AK1", "wrong"))
    assert caught.value.status == 401
    assert caught.value.message == "unauthorized: missing or invalid credentials"
    assert len(caught.value.request_id or "") == 32


class Flaky:
    """A real HTTP server on 127.0.0.1 that answers 503 to the first `failures` requests."""

    def __init__(self, failures: int):
        self.failures = failures
        self.seen: list[tuple[str, str | None]] = []
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                flaky.seen.append((self.command, self.headers.get("X-Request-ID")))
                failing = len(flaky.seen) <= flaky.failures
                body = json.dumps({"error": "warming up"} if failing else {"ok": True}).encode()
                self.send_response(503 if failing else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def flaky(request: pytest.FixtureRequest) -> Iterator[Flaky]:
    server = Flaky(request.param)
    yield server
    server.close()


@pytest.mark.parametrize("flaky, method, idempotent, tries, ok", [
    (1, "get", None, 2, True),
    (1, "post", True, 2, True),
    (1, "post", None, 1, False),
    (5, "get", None, 3, False),
], indirect=["flaky"], ids=["get-retried", "safe-post-retried", "post-not-retried",
                            "gives-up-after-retries"])
def test_retries_after_503(flaky: Flaky, method: str, idempotent: bool | None, tries: int,
                           ok: bool) -> None:
    client = Client(auth=False, backoff=0.01)
    try:
        answer = client.invoke(method, "/x", "any", {"a": 1}, url=flaky.url,
                               idempotent=idempotent)
    except InvokeError as err:
        assert not ok
        assert (err.status, err.message) == (503, "warming up")
    else:
        assert ok and answer == {"ok": True}
    assert len(flaky.seen) == tries
    # Every try of one call carries the same request id.
    assert len({rid for _, rid in flaky.seen}) == 1


def test_connection_refused_is_one_error() -> None:
    port = Flaky(0)
    port.close()  # a port nothing listens on any more
    with pytest.raises(InvokeError, match=r"^no answer: cannot reach http://127\.0\.0\.1:\d+/x"):
        Client(auth=False, backoff=0.01).invoke("get", "/x", "any", url=port.url)


@pytest.mark.usefixtures("signing_env")
def test_kiln_invoke_data_and_file(sigv4: Server, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["invoke", SIGV4_ID, "/add", "--data", json.dumps(ADD),
                                 "--url", sigv4.url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"result": 7}
    (tmp_path / "request.json").write_text(json.dumps({"num1": 1.5, "num2": 2}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KILN_SERVICE_URL_SIGV4_SVC", sigv4.url)
    result = runner.invoke(cli, ["invoke", SIGV4_ID, "/add", "--file", "request.json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"result": 3.5}


@pytest.mark.parametrize("args, message", [
    (["--data", "{nope"], "Error: --data: not valid JSON: "),
    (["--data", "{}", "--file", "-"], "Error: --data and --file exclude each other: give one"),
])
def test_kiln_invoke_bad_input(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["invoke", SIGV4_ID, "/add", *args, "--url", "http://x"])
    assert result.exit_code == 1 and result.stderr.startswith(message)


def test_kiln_invoke_says_401_in_one_line(sigv4: Server) -> None:
    result = CliRunner().invoke(cli, ["invoke", SIGV4_ID, "/add", "--data", "{}",
                                      "--url", sigv4.url])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "Error: HTTP 401: unauthorized: missing or invalid credentials (request id ")


@pytest.mark.parametrize(("url", "message"), [
    ("notaurl", "cannot call notaurl/add"),
    ("ftp://127.0.0.1:1", "cannot call ftp://127.0.0.1:1/add"),
])
def test_kiln_invoke_bad_url_is_one_line(url: str, message: str) -> None:
    result = CliRunner().invoke(cli, ["invoke", SIGV4_ID, "/add", "--data", "{}", "--url", url])
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr


def test_kiln_invoke_without_a_url_says_where_to_set_one() -> None:
    result = CliRunner().invoke(cli, ["invoke", "add-numbers", "/add-numbers", "--data", "{}"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: no URL for service 'add-numbers': pass url= (kiln invoke --url), or set "
        "KILN_SERVICE_URL_ADD_NUMBERS or KILN_GATEWAY_URL")
