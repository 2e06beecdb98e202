"""auth.mode sigv4: the canonical forms against requests-aws4auth's, and a real gunicorn."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from requests_aws4auth import AWS4Auth

from runtime.security import sigv4
from runtime.testing import client
from tests.support import SERVICES, Server, serving

KEYS = {"AK1": "s3cret-one", "AK2": "s3cret-two"}
KEYS_ENV = {"KILN_AUTH_KEYS": ",".join(f"{k}:{v}" for k, v in KEYS.items())}
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def signer(key_id: str = "AK1", secret: str = KEYS["AK1"], region: str = "eu-west-1",
           service: str = "execute-api") -> AWS4Auth:
    return AWS4Auth(key_id, secret, region, service)


@pytest.mark.parametrize("path", [
    "/", "/echo", "/items/a%20b", "/items/a%2Fb/", "/a//b/./c/../d", "/items/%C3%A9~x",
    "/items/a+b", "/items/it's(1)",
])
def test_canonical_path_matches_the_client(path: str) -> None:
    assert sigv4.canonical_path(path) == signer().amz_cano_path(path)


@pytest.mark.parametrize("query", [
    "", "a=1", "b=2&a=1", "a=x+y%2Bz", "a=&b", "a=2&a=1", "k%20ey=v%3Bw", "a=1;b=2", "é=ü",
])
def test_canonical_query_matches_the_client(query: str) -> None:
    assert sigv4.canonical_query(query) == AWS4Auth.amz_cano_querystring(query)


@pytest.mark.parametrize("header", [
    "", "Bearer abc", "AWS4-HMAC-SHA256 Credential=AK1/20260102/r/s/aws4_request",
    "AWS4-HMAC-SHA256 Credential=AK1/2026-01-02/r/s/aws4_request, SignedHeaders=host, "
    "Signature=" + "0" * 64,
    "AWS4-HMAC-SHA256 Credential=AK1/20260102/r/s/other, SignedHeaders=host, Signature=" + "0" * 64,
    "AWS4-HMAC-SHA256 Credential=AK1/20260102/r/s/aws4_request, SignedHeaders=host, Signature=xyz",
])
def test_malformed_authorization_is_refused(header: str) -> None:
    with pytest.raises(sigv4.SignatureError):
        sigv4.parse_authorization(header)


def signed(body: bytes = b'{"a": 1}', *, amz_date: datetime = NOW, claimed: str | None = None,
           scope_date: str | None = None, region: str = "eu-west-1",
           signed_headers: str = "host;x-amz-content-sha256;x-amz-date") -> sigv4.SignedRequest:
    """A request signed with our own functions, for cases requests-aws4auth cannot produce."""
    headers = {"host": "svc:8080", "x-amz-date": amz_date.strftime(sigv4.AMZ_DATE),
               "x-amz-content-sha256": claimed or hashlib.sha256(body).hexdigest()}
    request = sigv4.SignedRequest("POST", "/echo", "", headers, body)
    scope = f"{scope_date or amz_date.strftime('%Y%m%d')}/{region}/execute-api/aws4_request"
    auth = sigv4.parse_authorization(f"AWS4-HMAC-SHA256 Credential=AK1/{scope}, "
                                     f"SignedHeaders={signed_headers}, Signature={'0' * 64}")
    sig = sigv4.signature(KEYS["AK1"], request, auth, headers["x-amz-content-sha256"])
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential=AK1/{scope}, "
                                f"SignedHeaders={signed_headers}, Signature={sig}")
    return request


def test_our_own_signature_verifies() -> None:
    assert sigv4.verify(signed(), KEYS, service="execute-api", now=NOW) == "AK1"


@pytest.mark.parametrize("request_, region", [
    (signed(claimed="UNSIGNED-PAYLOAD"), None),
    (signed(scope_date="20260101"), None),
    (signed(amz_date=NOW - timedelta(seconds=301)), None),
    (signed(amz_date=NOW + timedelta(seconds=301)), None),
    (signed(signed_headers="x-amz-content-sha256;x-amz-date"), None),
    (signed(signed_headers="host;x-amz-date"), None),
    (signed(region="us-east-1"), "eu-west-1"),
], ids=["unsigned-payload", "scope-date", "old", "future", "host-unsigned", "hash-unsigned",
        "region"])
def test_refused_signatures(request_: sigv4.SignedRequest, region: str | None) -> None:
    with pytest.raises(sigv4.SignatureError):
        sigv4.verify(request_, KEYS, service="execute-api", region=region, now=NOW)


def test_other_service_in_scope_is_refused() -> None:
    with pytest.raises(sigv4.SignatureError, match="scope"):
        sigv4.verify(signed(), KEYS, service="kiln", now=NOW)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory, "sigv4", KEYS_ENV)


def _send(prepared: requests.PreparedRequest) -> requests.Response:
    with requests.Session() as session:
        return session.send(prepared, timeout=30)


def _dated(minutes: float) -> dict[str, str]:
    stamp = datetime.now(timezone.utc) - timedelta(minutes=minutes)
    return {"x-amz-date": stamp.strftime(sigv4.AMZ_DATE)}


def _body_changed(url: str) -> requests.Response:
    prepared = requests.Request("POST", url + "/echo", json={"a": 1}, auth=signer()).prepare()
    prepared.body = b'{"a": 2}'
    return _send(prepared)


def _query_changed(url: str) -> requests.Response:
    prepared = requests.Request("POST", url + "/echo?n=1", json={}, auth=signer()).prepare()
    prepared.url = prepared.url.replace("n=1", "n=2")
    return _send(prepared)


MISMATCH = "signature mismatch for access key id 'AK1'"
TOO_OLD = "from the server clock (at most 300 s)"
#: case -> (send it to the server's URL, the status, what the server logs on a 401)
CASES: dict[str, tuple[Callable[[str], requests.Response], int, str]] = {
    "signed": (lambda u: requests.post(u + "/echo", json={"a": 1}, auth=signer()), 200, ""),
    "signed-get-any-region": (
        lambda u: requests.get(u + "/items/x", auth=signer(region="x")), 200, ""),
    "signed-4-minutes-old": (
        lambda u: requests.post(u + "/echo", json={}, headers=_dated(4), auth=signer()), 200, ""),
    "encoded-path": (
        lambda u: requests.get(u + "/items/a%20b%2Fc%C3%A9", auth=signer()), 200, ""),
    "encoded-query": (
        lambda u: requests.post(u + "/echo?q=x+y%2Bz&e=&k%3B=v", json={}, auth=signer()), 200, ""),
    "no-signature": (lambda u: requests.post(u + "/echo", json={"a": 1}), 401,
                     "Authorization is not an AWS4-HMAC-SHA256 header"),
    "wrong-secret": (
        lambda u: requests.post(u + "/echo", json={}, auth=signer(secret=KEYS["AK2"])), 401,
        MISMATCH),
    "unknown-key-id": (lambda u: requests.post(u + "/echo", json={}, auth=signer("AK9")), 401,
                       "unknown access key id 'AK9'"),
    "other-service": (
        lambda u: requests.post(u + "/echo", json={}, auth=signer(service="s3")), 401,
        "credential scope eu-west-1/s3 is not accepted"),
    "body-changed": (_body_changed, 401, "x-amz-content-sha256 does not match the body"),
    "query-changed": (_query_changed, 401, MISMATCH),
    "10-minutes-old": (
        lambda u: requests.post(u + "/echo", json={}, headers=_dated(10), auth=signer()), 401,
        TOO_OLD),
    "10-minutes-ahead": (
        lambda u: requests.post(u + "/echo", json={}, headers=_dated(-10), auth=signer()), 401,
        TOO_OLD),
    "unknown-route": (lambda u: requests.get(u + "/nowhere"), 401,
                      "GET /nowhere: Authorization is not"),
}


@pytest.mark.parametrize("case", CASES)
def test_sigv4_on_gunicorn(server: Server, case: str) -> None:
    send, status, reason = CASES[case]
    response = send(server.url)
    assert response.status_code == status, response.text
    body = response.json()
    if status == 401:
        rid = response.headers["X-Request-ID"]
        logged = [line for line in server.output().splitlines()
                  if rid in line and "kiln.auth" in line]
        assert len(logged) == 1 and reason in logged[0], logged
        # One reason for every failure: the caller learns nothing about which part failed.
        assert body == {"error": "unauthorized: missing or invalid credentials",
                        "request_id": response.headers["X-Request-ID"]}
        assert response.headers["WWW-Authenticate"] == "AWS4-HMAC-SHA256"


def test_signed_request_reaches_user_code(server: Server) -> None:
    response = requests.post(server.url + "/echo?q=x+y%2Bz", json={"a": 1}, auth=signer(),
                             headers={"X-Forwarded-User": "root"})
    assert response.json() == {"body": {"a": 1}, "query": {"q": ["x y+z"]}, "user": "AK1"}
    response = requests.get(server.url + "/items/a%20b%2Fc%C3%A9", auth=signer())
    assert response.json() == {"name": "a b/cé"}


def test_health_is_open_and_secrets_stay_out_of_the_log(server: Server) -> None:
    assert server.get("/api/v1.0/health/status").status_code == 200
    requests.post(server.url + "/echo", json={}, auth=signer(secret="guess"))
    log = server.output()
    assert "401 POST /echo: signature mismatch for access key id 'AK1'" in log
    assert not any(secret in log for secret in [*KEYS.values(), "guess"])


def test_keys_from_a_file(serve: Callable[..., Server], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# rotated monthly\nAK7:from-file\n")
    started = serve("sigv4", env={"KILN_AUTH_KEYS_FILE": str(keys)})
    auth = signer("AK7", "from-file")
    assert requests.post(started.url + "/echo", json={}, auth=auth, timeout=30).status_code == 200


@pytest.mark.parametrize("trust, status", [("", 401), ("true", 200)])
def test_behind_a_proxy_that_rewrites_host_and_strips_a_prefix(
        monkeypatch: pytest.MonkeyPatch, trust: str, status: int) -> None:
    monkeypatch.setenv("KILN_AUTH_KEYS", KEYS_ENV["KILN_AUTH_KEYS"])
    monkeypatch.setenv("KILN_AUTH_TRUST_FORWARDED", trust)
    # Signed for the public URL; the proxy forwards /echo to the service with its own Host.
    prepared = requests.Request("POST", "https://api.example/svc/echo?n=1", json={"a": 1},
                                auth=signer()).prepare()
    headers = {**prepared.headers, "Host": "internal:8080",
               "X-Forwarded-Host": "api.example", "X-Forwarded-Prefix": "/svc/"}
    response = client(SERVICES / "sigv4").post("/echo?n=1", data=prepared.body,
                                                headers=headers)
    assert response.status_code == status, response.json
