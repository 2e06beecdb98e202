"""auth.mode jwt against a stand-in identity provider (tests/idp.py): the test client for the
cases, a real `kiln serve` for rotation, a flood of made-up kids and an unreachable provider."""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
import requests
import yaml
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from runtime.config import parse_service
from runtime.errors import ConfigError
from runtime.security import auth
from runtime.security.jwt import KeySet, check_scopes, scope_alternatives, token_scopes
from runtime.specs import service_document
from runtime.testing import make_app
from tests.idp import AUDIENCE, Provider, service
from tests.support import SERVICES, Server

PREDICT = "/api/v1.0/predict"
STATUS = "/api/v1.0/health/status"
INVALID = 'Bearer error="invalid_token"'


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    found = Provider()
    found.add_key("RSA")
    found.add_key("EC")
    yield found
    found.close()


@pytest.fixture(scope="module")
def client(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> FlaskClient:
    return make_app(service(tmp_path_factory.mktemp("jwt"), provider)).test_client()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _tampered(token: str) -> str:
    header, _, signature = token.split(".")
    payload = pyjwt.decode(token, options={"verify_signature": False})
    return ".".join([header, _b64({**payload, "sub": "mallory"}), signature])


def _alg_none(provider: Provider, kid: str) -> str:
    now = int(time.time())
    claims = {"iss": "https://idp.test/realms/ml", "aud": AUDIENCE, "sub": "alice",
              "exp": now + 300, "scope": "predict"}
    return f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_b64(claims)}."


def _hs256_with_public_key(provider: Provider, kid: str) -> str:
    now = int(time.time())
    claims = {"iss": "https://idp.test/realms/ml", "aud": AUDIENCE, "sub": "alice",
              "exp": now + 300, "scope": "predict"}
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": kid})
    body = _b64(claims)
    import hashlib
    import hmac

    mac = hmac.new(provider.public_pem(kid), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _rsa(p: Provider) -> str:
    return p.published[0]


def _ec(p: Provider) -> str:
    return p.published[1]


#: case -> a function of the provider giving the Authorization header's token (None: no header)
REFUSED: dict[str, Callable[[Provider], str | None]] = {
    "no-token": lambda p: None,
    "not-a-jwt": lambda p: "not.a.jwt",
    "expired": lambda p: p.token(_rsa(p), exp=int(time.time()) - 120),
    "not-yet-valid": lambda p: p.token(_rsa(p), nbf=int(time.time()) + 600),
    "wrong-issuer": lambda p: p.token(_rsa(p), iss="https://evil.test/"),
    "wrong-audience": lambda p: p.token(_ec(p), aud="another-service"),
    "no-audience": lambda p: p.token(_rsa(p), drop=("aud",)),
    "no-exp": lambda p: p.token(_rsa(p), drop=("exp",)),
    "unknown-kid": lambda p: p.token(_rsa(p), headers={"kid": "nobody-knows"}),
    "other-key-same-kid": lambda p: p.token(p.add_key("RSA", publish=False),
                                            headers={"kid": _rsa(p)}),
    "tampered": lambda p: _tampered(p.token(_rsa(p))),
    "alg-none": lambda p: _alg_none(p, _rsa(p)),
    "hs256-with-public-key": lambda p: _hs256_with_public_key(p, _rsa(p)),
    "no-user-claim": lambda p: p.token(_rsa(p), drop=("sub",)),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_bad_token_is_401_invalid_token(client: FlaskClient, provider: Provider,
                                          case: str) -> None:
    token = REFUSED[case](provider)
    response = client.post(PREDICT, json={"input": [1, 2]},
                           headers=_bearer(token) if token is not None else {})
    assert response.status_code == 401, response.json
    assert response.headers["WWW-Authenticate"] == INVALID
    assert response.json["error"] == "unauthorized: missing or invalid credentials"


@pytest.mark.parametrize("kind", ["RSA", "EC"])
def test_a_valid_token_reaches_predict_and_user_code(client: FlaskClient, provider: Provider,
                                                     kind: str) -> None:
    kid = _rsa(provider) if kind == "RSA" else _ec(provider)
    token = provider.token(kid, sub=f"user-{kind}")
    response = client.post(PREDICT, json={"input": [1, 2]}, headers=_bearer(token))
    assert response.status_code == 200, response.json
    assert response.json["prediction"] == 3
    forged = {**_bearer(token), "X-Forwarded-User": "admin"}
    assert client.get("/whoami", headers=forged).json == {"user": f"user-{kind}"}


@pytest.mark.parametrize("claims, path, status", [
    ({"scope": "predict"}, PREDICT, 200),
    ({"scope": "other predictions"}, PREDICT, 403),
    ({"scope": None}, PREDICT, 403),
    ({"scope": None, "scp": ["predict"]}, PREDICT, 200),
    ({"scope": None, "scp": "read predict"}, PREDICT, 200),
    ({"scope": "predict"}, "/reports", 403),
    ({"scope": "reports:write"}, "/reports", 200),
    ({"scope": None}, "/whoami", 200),
])
def test_scopes(client: FlaskClient, provider: Provider, claims: dict[str, Any], path: str,
                status: int) -> None:
    token = provider.token(_rsa(provider), **claims)
    headers = _bearer(token)
    if path == "/whoami":
        response = client.get(path, headers=headers)
    else:
        response = client.post(path, json={"input": [1, 2]}, headers=headers)
    assert response.status_code == status, response.json
    if status == 403:
        assert response.json["error"].startswith("forbidden: the token lacks scope")


def test_health_stays_open_and_docs_follow_docs_public(client: FlaskClient) -> None:
    assert client.get(STATUS).status_code == 200
    assert client.get("/api/v1.0/health/live").status_code == 200
    assert client.get("/docs/specs.json").status_code == 200
    assert client.get("/metrics").status_code == 401


@pytest.mark.parametrize("claims, required, ok", [
    ({"scope": "a b"}, [["a"]], True),
    ({"scope": "a b"}, [["a", "c"]], False),
    ({"scope": "a b"}, [["a", "c"], ["b"]], True),
    ({"scp": ["c"]}, [["c"]], True),
    ({"scp": "c d"}, [["d"]], True),
    ({}, [], True),
    ({}, [["x"]], False),
])
def test_check_scopes(claims: dict[str, Any], required: list[list[str]], ok: bool) -> None:
    try:
        check_scopes(claims, required)
    except Exception:  # noqa: BLE001 - the table says whether it should pass
        assert not ok
    else:
        assert ok
    assert token_scopes({"scope": "a  b", "scp": ["c", 3]}) == {"a", "b", "c"}


@pytest.mark.parametrize("security, expected", [
    ([{"jwt": ["a"]}], [["a"]]),
    ([{"jwt": ["a", "b"]}, {"jwt": ["c"]}], [["a", "b"], ["c"]]),
    ([{"jwt": ["a"]}, {}], []),
    ([{"jwt": []}], []),
    (None, []),
])
def test_scope_alternatives(security: Any, expected: list[list[str]]) -> None:
    assert scope_alternatives(security) == expected


def test_a_rotated_key_is_picked_up_without_a_restart(tmp_path: Path) -> None:
    provider = Provider()
    try:
        old = provider.add_key("RSA")
        app_client = make_app(service(tmp_path, provider)).test_client()
        assert app_client.get("/whoami", headers=_bearer(provider.token(old))).status_code == 200
        new = provider.rotate("EC")
        response = app_client.get("/whoami", headers=_bearer(provider.token(new, sub="bob")))
        assert response.status_code == 200, response.json
        assert response.json == {"user": "bob"}
    finally:
        provider.close()


def test_a_flood_of_made_up_kids_fetches_the_jwks_a_few_times(tmp_path: Path) -> None:
    provider = Provider()
    try:
        kid = provider.add_key("RSA")
        app_client = make_app(service(tmp_path, provider)).test_client()
        assert app_client.get("/whoami", headers=_bearer(provider.token(kid))).status_code == 200
        before = provider.fetches
        for _ in range(1000):
            token = provider.token(kid, headers={"kid": uuid.uuid4().hex})
            assert app_client.get("/whoami", headers=_bearer(token)).status_code == 401
        assert provider.fetches - before <= 3
    finally:
        provider.close()


def test_a_slow_refetch_delays_only_the_request_that_asked_for_it() -> None:
    """Keys past max_age are fetched again by one request; the others go on with the keys in
    hand instead of waiting on the provider (they used to wait on the fetch's lock)."""
    answering = threading.Event()
    fetching = threading.Event()
    answers = iter([{"a": "key-a"}, {"a": "key-a2", "b": "key-b"}])

    def fetch() -> dict[str | None, Any]:
        keys = next(answers)
        if "b" in keys:  # the second fetch: the provider is slow
            fetching.set()
            assert answering.wait(30)
        return keys  # type: ignore[return-value]

    keys = KeySet(fetch, "test provider", refetch_every=60.0, max_age=0.0)
    keys.load_now()
    keys.start()  # loaded already: no background fetch
    refetching = threading.Thread(target=keys.get, args=("a",), daemon=True)
    refetching.start()  # keys are stale (max_age 0): this request fetches and waits
    assert fetching.wait(30)
    found: list[Any] = []
    other = threading.Thread(target=lambda: found.append(keys.get("a")), daemon=True)
    other.start()
    other.join(20)
    assert found == ["key-a"], "a request waited on another request's fetch"
    answering.set()
    refetching.join(20)
    assert keys.get("b") == "key-b"


def test_keys_file_jwks_or_pem(tmp_path: Path) -> None:
    provider = Provider()
    try:
        kid = provider.add_key("EC")
        (tmp_path / "jwks.json").write_text(json.dumps(provider.jwks()))
        (tmp_path / "key.pem").write_bytes(provider.public_pem(kid))
        for name in ("jwks.json", "key.pem"):
            root = service(tmp_path, None, jwks_url=None, keys_file=str(tmp_path / name))
            app_client = make_app(root).test_client()
            ok = app_client.get("/whoami", headers=_bearer(provider.token(kid)))
            assert ok.status_code == 200, (name, ok.json)
            other = provider.token(provider.add_key("EC", publish=False), headers={"kid": kid})
            assert app_client.get("/whoami", headers=_bearer(other)).status_code == 401
        assert provider.fetches == 0
    finally:
        provider.close()


def test_an_unreadable_keys_file_stops_the_start(tmp_path: Path) -> None:
    root = service(tmp_path, None, jwks_url=None, keys_file="missing.json")
    from runtime.config import load_service

    with pytest.raises(ConfigError, match=r"auth.jwt.keys_file: cannot use missing.json"):
        auth.load_policy(load_service(root))


@pytest.mark.parametrize("jwt_section, message", [
    (None, "auth.jwt: is required when auth.mode is jwt"),
    ({"issuer": "i", "audience": "a"}, ("auth.jwt: set one of jwks_url (the provider's keys) "
                                        "or keys_file (a local copy)")),
    ({"issuer": "i", "audience": "a", "jwks_url": "u", "keys_file": "k"},
     "auth.jwt.jwks_url: 'u' is not an http(s) URL"),
    ({"issuer": "i", "audience": "a", "jwks_url": "https://x", "keys_file": "k"},
     "auth.jwt: set one of jwks_url"),
    ({"audience": "a", "jwks_url": "https://x"}, "auth.jwt.issuer: is required"),
    ({"issuer": "i", "audience": [], "jwks_url": "https://x"},
     "auth.jwt.audience: must be a string or a non-empty list of strings"),
    ({"issuer": "i", "audience": "a", "jwks_url": "https://x", "algorithms": ["HS256"]},
     "auth.jwt.algorithms: 'HS256' is not allowed; allowed: RS256"),
    ({"issuer": "i", "audience": "a", "jwks_url": "https://x", "algorithms": ["none"]},
     "auth.jwt.algorithms: 'none' is not allowed"),
    ({"issuer": "i", "audience": "a", "jwks_url": "https://x", "leeway": -1},
     "auth.jwt.leeway: must be 0 or more, got -1"),
    ({"issuer": "i", "audience": "a", "jwks_url": "https://x", "predict_scopes": "predict"},
     "auth.jwt.predict_scopes: must be a list, got 'predict'"),
    ({"issuer": "i", "audience": "a", "jwks_url": "https://x", "scopes": []},
     "auth.jwt.scopes: unknown key; allowed in auth.jwt: issuer, audience, jwks_url"),
])
def test_auth_jwt_settings_are_checked(jwt_section: Any, message: str) -> None:
    auth_section: dict[str, Any] = {"mode": "jwt"}
    if jwt_section is not None:
        auth_section["jwt"] = jwt_section
    with pytest.raises(ConfigError) as caught:
        parse_service({"id": "svc", "auth": auth_section})
    assert str(caught.value).startswith(f"service.yaml: {message}")
    assert "\n" not in str(caught.value)


def test_auth_jwt_defaults() -> None:
    from runtime.config import jwt_settings

    values = parse_service({"id": "svc", "auth": {"mode": "jwt", "jwt": {
        "issuer": "i", "audience": ["a", "b"], "jwks_url": "https://x"}}})
    assert jwt_settings(values["auth.jwt"]) == {
        "issuer": "i", "audience": ["a", "b"], "jwks_url": "https://x", "keys_file": None,
        "algorithms": ["RS256", "ES256"], "leeway": 0, "user_claim": "sub",
        "predict_scopes": []}


@pytest.mark.parametrize("mode, env, schemes", [
    ("jwt", {}, {"jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}),
    ("token", {"KILN_AUTH_TOKENS": "a:b"}, {"bearer": {"type": "http", "scheme": "bearer"},
                                           "basic": {"type": "http", "scheme": "basic"}}),
    ("sigv4", {"KILN_AUTH_KEYS": "AK:s"}, {"sigv4": {"type": "apiKey", "in": "header",
                                                    "name": "Authorization"}}),
])
def test_the_document_declares_the_security_of_each_mode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, env: dict[str, str],
        schemes: dict[str, dict[str, str]]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    root = service(tmp_path)
    data = yaml.safe_load((root / "service.yaml").read_text())
    if mode != "jwt":
        data["auth"] = {"mode": mode}
    (root / "service.yaml").write_text(yaml.safe_dump(data))
    spec = service_document(root).spec
    validate(spec)
    declared = spec["components"]["securitySchemes"]
    assert {k: {f: v[f] for f in schemes[k]} for k, v in declared.items()} == schemes
    paths = spec["paths"]
    for path in ("/api/v1.0/health/status", "/api/v1.0/health/live", "/api/v1.0/health/startup"):
        assert "security" not in paths[path]["get"]
    assert "security" in paths["/metrics"]["get"]
    predict = paths[PREDICT]["post"]["security"]
    if mode == "jwt":
        assert predict == [{"jwt": ["predict"]}]
        assert paths["/reports"]["post"]["security"] == [{"jwt": ["reports:write"]}]
        assert paths["/whoami"]["get"]["security"] == [{"jwt": []}]
    else:
        assert predict == [{name: []} for name in schemes]


def test_mode_none_declares_no_security() -> None:
    spec = service_document(SERVICES / "basic").spec
    assert "securitySchemes" not in spec.get("components", {})
    assert not any("security" in op for item in spec["paths"].values() for op in item.values()
                   if isinstance(op, dict))


# On a real server.

def _serve(serve: Any, root: Path, ready: bool = True) -> Server:
    # Two workers, each with its own key cache: what the fetch counts below allow for.
    server: Server = serve(root, env={"GUNICORN_CMD_ARGS": "--workers 2"}, ready=ready)
    return server


def test_jwt_on_a_real_server(serve: Any, tmp_path: Path) -> None:
    provider = Provider()
    try:
        kid = provider.add_key("RSA")
        server = _serve(serve, service(tmp_path, provider))
        ok = server.post(PREDICT, json={"input": [2, 3]}, headers=_bearer(provider.token(kid)))
        assert ok.status_code == 200, ok.text
        assert ok.json()["prediction"] == 5
        expired = provider.token(kid, exp=int(time.time()) - 120)
        refused = server.post(PREDICT, json={"input": [2, 3]}, headers=_bearer(expired))
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == INVALID
        no_scope = provider.token(kid, scope="other")
        assert server.post(PREDICT, json={"input": [1, 1]},
                           headers=_bearer(no_scope)).status_code == 403

        new = provider.rotate("EC")
        rotated = _bearer(provider.token(new, sub="carol"))
        # Each worker refetches on the new kid; ask enough times to reach both.
        for _ in range(6):
            answer = server.get("/whoami", headers=rotated)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"user": "carol"}

        before = provider.fetches
        with requests.Session() as session:
            for _ in range(1000):
                token = provider.token(new, headers={"kid": uuid.uuid4().hex})
                response = session.get(server.url + "/whoami", headers=_bearer(token), timeout=30)
                assert response.status_code == 401
        assert provider.fetches - before <= 6, provider.fetches - before
        log = server.output()
        assert "no key of the provider has kid" in log
        assert expired not in log
    finally:
        provider.close()


def test_an_unreachable_provider_does_not_stop_the_start(serve: Any, tmp_path: Path) -> None:
    provider = Provider()
    try:
        kid = provider.add_key("RSA")
        provider.available = False
        server = _serve(serve, service(tmp_path, provider), ready=False)
        status = server.get(STATUS)
        assert status.status_code == 503
        assert "identity provider keys unavailable" in status.json()["reason"]
        assert provider.url in status.json()["reason"]
        answer = server.post(PREDICT, json={"input": [1, 2]}, headers=_bearer(provider.token(kid)))
        assert answer.status_code == 503
        provider.available = True
        server.wait_ready()
        answer = server.post(PREDICT, json={"input": [1, 2]}, headers=_bearer(provider.token(kid)))
        assert answer.status_code == 200, answer.text
    finally:
        provider.close()
