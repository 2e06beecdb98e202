"""auth.mode token on a real gunicorn, which routes stay open, and refusing to start without keys."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from click.testing import CliRunner

from runtime.app import create_app
from runtime.cli import cli
from runtime.errors import ConfigError
from runtime.security import auth
from runtime.testing import client
from tests.support import SERVICES, Server, serving

TOKENS = {"alice": "tok-alice-1", "bob": "tok-bob-2"}
TOKENS_ENV = {"KILN_AUTH_TOKENS": ",".join(f"{k}:{v}" for k, v in TOKENS.items())}
DENIED = "unauthorized: missing or invalid credentials"


@pytest.mark.parametrize("text, expected", [
    ("a:1", {"a": "1"}),
    (" a:1 , b:2:3 ,", {"a": "1", "b": "2:3"}),
    ("# keys\na:1\n\nb:2  # second\n", {"a": "1", "b": "2"}),
    ("", {}),
])
def test_parse_pairs(text: str, expected: dict[str, str]) -> None:
    assert auth.parse_pairs(text, "KILN_AUTH_TOKENS", "client") == expected


@pytest.mark.parametrize("text, entry", [("a", 1), ("a:1,b:", 2), ("a:1,:secret", 2)])
def test_parse_pairs_names_the_entry_not_the_secret(text: str, entry: int) -> None:
    with pytest.raises(ConfigError) as caught:
        auth.parse_pairs(text, "KILN_AUTH_KEYS", "id")
    assert str(caught.value) == f"KILN_AUTH_KEYS: entry {entry} is not id:secret"


@pytest.mark.parametrize("service, env, message", [
    ("sigv4", {}, ("auth.mode: sigv4 needs key pairs: set KILN_AUTH_KEYS=id:secret,... or "
                   "KILN_AUTH_KEYS_FILE to a file of them")),
    ("sigv4", {"KILN_AUTH_KEYS_FILE": "/nonexistent/keys"},
     "KILN_AUTH_KEYS_FILE: cannot read /nonexistent/keys: No such file or directory"),
    ("sigv4", {"KILN_AUTH_KEYS": "AK1"}, "KILN_AUTH_KEYS: entry 1 is not id:secret"),
    ("token", {}, "auth.mode: token needs tokens: set KILN_AUTH_TOKENS=client:token,..."),
])
def test_a_mode_without_secrets_refuses_to_start(service: str, env: dict[str, str],
                                                 message: str) -> None:
    result = CliRunner().invoke(cli, ["serve", str(SERVICES / service)], env=env)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1


def _service(tmp_path: Path, mode: str, **settings: object) -> Path:
    """A copy of the sigv4 test service with its auth and metrics settings replaced."""
    root = tmp_path / f"svc-{mode}"
    shutil.copytree(SERVICES / "sigv4", root)
    data = yaml.safe_load((root / "service.yaml").read_text())
    data["auth"] = {"mode": mode, **settings}
    if "metrics_public" in settings:
        data["metrics"] = {"public": data["auth"].pop("metrics_public")}
    (root / "service.yaml").write_text(yaml.safe_dump(data))
    return root


@pytest.mark.parametrize("settings, path, is_open", [
    ({}, "/api/v1.0/health/live", True),
    ({}, "/api/v1.0/health/status/", True),
    ({}, "/api/v1.0/health/startup", True),
    ({}, "/api/v1.0/health/other", False),
    ({}, "/docs", True),
    ({}, "/docs/specs.json", True),
    ({}, "/docsx", False),
    ({}, "/metrics", False),
    ({}, "/echo", False),
    ({"docs_public": False}, "/docs", False),
    ({"docs_public": False}, "/docs/specs.json", False),
    ({"metrics_public": True}, "/metrics", True),
])
def test_open_routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     settings: dict[str, object], path: str, is_open: bool) -> None:
    monkeypatch.setenv("KILN_AUTH_TOKENS", TOKENS_ENV["KILN_AUTH_TOKENS"])
    root = _service(tmp_path, "token", **settings)
    response = client(root).get(path)
    # Open routes answer as they would without auth (404 where docs or metrics are absent).
    assert (response.status_code != 401) is is_open


def test_mode_none_passes_x_forwarded_user(tmp_path: Path) -> None:
    response = client(_service(tmp_path, "none")).post(
        "/echo", json={}, headers={"X-Forwarded-User": "proxy-user"})
    assert response.json["user"] == "proxy-user"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory, "token", TOKENS_ENV)


#: case -> (requests keyword arguments, the user the route sees, or None for a 401)
CASES: dict[str, tuple[dict[str, object], str | None]] = {
    "bearer": ({"headers": {"Authorization": "Bearer tok-alice-1"}}, "alice"),
    "bearer-other-client": ({"headers": {"Authorization": "bearer  tok-bob-2 "}}, "bob"),
    "basic": ({"auth": ("alice", "tok-alice-1")}, "alice"),
    "forged-user-with-token": ({"headers": {"Authorization": "Bearer tok-bob-2",
                                            "X-Forwarded-User": "alice"}}, "bob"),
    "no-credentials": ({}, None),
    "forged-user-alone": ({"headers": {"X-Forwarded-User": "alice"}}, None),
    "wrong-bearer": ({"headers": {"Authorization": "Bearer tok-alice-2"}}, None),
    "token-prefix": ({"headers": {"Authorization": "Bearer tok-alice"}}, None),
    "wrong-basic-token": ({"auth": ("alice", "nope")}, None),
    "right-token-wrong-client": ({"auth": ("bob", "tok-alice-1")}, None),
    "unknown-client": ({"auth": ("eve", "tok-alice-1")}, None),
    "basic-not-base64": ({"headers": {"Authorization": "Basic %%%"}}, None),
    "other-scheme": ({"headers": {"Authorization": "Digest tok-alice-1"}}, None),
}


@pytest.mark.parametrize("case", CASES)
def test_token_on_gunicorn(server: Server, case: str) -> None:
    kwargs, user = CASES[case]
    response = requests.get(server.url + "/whoami", timeout=30, **kwargs)  # type: ignore[arg-type]
    if user is None:
        assert response.status_code == 401
        assert response.json() == {"error": DENIED,
                                   "request_id": response.headers["X-Request-ID"]}
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="kiln"'
    else:
        assert response.status_code == 200, response.text
        assert response.json() == {"user": user}


def test_token_service_routes_and_log(server: Server) -> None:
    assert server.get("/api/v1.0/health/live").status_code == 200
    assert server.get("/docs").status_code == 401  # docs_public: false
    log = server.output()
    assert "401 GET /whoami: basic credentials do not match client 'bob'" in log
    assert not any(token in log for token in TOKENS.values())


def test_an_app_built_without_secrets_documents_itself_and_lets_no_one_in() -> None:
    # `kiln serve` refuses to start (test below); kiln specs and the test client build it.
    from runtime.specs import service_document

    assert "/api/v1.0/predict" in service_document(SERVICES / "token").spec["paths"]
    client = create_app(SERVICES / "token").test_client()
    assert client.post("/api/v1.0/predict", json={"input": [1]},
                       headers={"Authorization": "Bearer anything"}).status_code == 401
