"""Who may call a service: the `auth.mode` check that runs before every request.

`init_app` adds a gate to the request's lifecycle (runtime/serving/lifecycle.py), so a 401 carries a
request id and is logged and counted. Health routes are always open; /docs follows
`auth.docs_public` and /metrics follows `metrics.public`. Every other route, unknown ones
included, answers 401 with one reason that does not say which part of the credentials failed;
the precise reason goes to the server's log, never a secret.

Credentials come from the environment, never from the image:
- sigv4: KILN_AUTH_KEYS (`id:secret,...`) or the file named by KILN_AUTH_KEYS_FILE (the same
  entries, commas or new lines, `#` comments). The credential scope's service must be
  KILN_AUTH_SERVICE (default `execute-api`); its region must be KILN_AUTH_REGION when set,
  any region otherwise. Behind a proxy that rewrites Host or strips a path prefix, set
  KILN_AUTH_TRUST_FORWARDED=true to verify against X-Forwarded-Host and X-Forwarded-Prefix
  (only when that proxy always sets or overwrites them: otherwise callers choose them).
- token: KILN_AUTH_TOKENS (`client:token,...`) and/or the file KILN_AUTH_TOKENS_FILE names
  (`client:sha256:<hex>` lines of `kiln token new`, re-read when it changes: see tokens.py),
  sent as `Authorization: Bearer <token>` or basic `client:token`.
- jwt: `auth.jwt` in service.yaml: bearer JWTs of an identity provider (see jwt.py). A bad
  token answers 401 with `WWW-Authenticate: Bearer error="invalid_token"`, a token without
  the route's scopes 403 (predict: `auth.jwt.predict_scopes`; a user route: its docstring's
  `security: [{jwt: [scope]}]`), and while the provider's keys were never fetched, the status
  route and every locked route answer 503 with the reason.
On success the caller's name (the client, the SigV4 access key id, or the JWT's user claim)
replaces any incoming X-Forwarded-User before user code runs.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hmac
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from flask import Flask, Response, current_app

from runtime.config import ServiceConfig, jwt_settings
from runtime.docs.openapi import AUTH_KEY, split_docstring
from runtime.errors import ConfigError
from runtime.security import jwt, sigv4, tokens
from runtime.serving.health import routes as health_routes
from runtime.serving.lifecycle import Current, lifecycle
from runtime.serving.responses import error

if TYPE_CHECKING:
    from runtime.app import Service

log = logging.getLogger("kiln.auth")

KEYS_VAR = "KILN_AUTH_KEYS"
KEYS_FILE_VAR = "KILN_AUTH_KEYS_FILE"
TOKENS_VAR = "KILN_AUTH_TOKENS"
TOKENS_FILE_VAR = tokens.TOKENS_FILE_VAR
REGION_VAR = "KILN_AUTH_REGION"
SERVICE_VAR = "KILN_AUTH_SERVICE"
FORWARDED_VAR = "KILN_AUTH_TRUST_FORWARDED"
DEFAULT_SERVICE = "execute-api"
USER_ENVIRON = "HTTP_X_FORWARDED_USER"
UNAUTHORIZED = "unauthorized: missing or invalid credentials"
INVALID_TOKEN = 'Bearer error="invalid_token"'
STATUS_ENDPOINT = f"{health_routes.name}.status"
#: The name of each mode's security schemes in the OpenAPI document (jwt: what docstrings name).
SCHEMES: dict[str, dict[str, dict[str, Any]]] = {
    "token": {"bearer": {"type": "http", "scheme": "bearer",
                         "description": "A client token: `Authorization: Bearer <token>`."},
              "basic": {"type": "http", "scheme": "basic",
                        "description": "The client's name and token as user name and password."}},
    "sigv4": {"sigv4": {"type": "apiKey", "in": "header", "name": "Authorization",
                        "description": "An AWS Signature Version 4 `Authorization` header "
                                       "(the SDK helper and requests-aws4auth sign requests)."}},
    "jwt": {"jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "A JWT of the service's identity provider."}},
}


@dataclass(frozen=True)
class Policy:
    """What a service accepts: its mode, the secrets of that mode and which routes stay open."""

    mode: str
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    docs_public: bool = True
    metrics_public: bool = False
    service: str = DEFAULT_SERVICE
    region: str | None = None
    trust_forwarded: bool = False
    tokens_file: tokens.TokenFile | None = None
    verifier: jwt.Verifier | None = None

    def is_open(self, kind: str | None) -> bool:
        """Whether a route of this kind (runtime/serving/lifecycle.py `mark`) needs no credentials."""
        if self.mode == "none" or kind == "health":
            return True
        if kind == "docs":
            return self.docs_public
        if kind == "metrics":
            return self.metrics_public
        return False

    def schemes(self) -> dict[str, dict[str, Any]]:
        """The OpenAPI `components.securitySchemes` of this mode (none: empty)."""
        return SCHEMES.get(self.mode, {})

    def requirement(self, kind: str | None) -> list[dict[str, list[str]]] | None:
        """The OpenAPI `security` of a route of this kind; None for an open route."""
        if self.is_open(kind) or not self.schemes():
            return None
        scopes = self.verifier.predict_scopes if self.verifier is not None and kind == "predict" else []
        return [{name: list(scopes)} for name in self.schemes()]


def parse_pairs(text: str, source: str, what: str) -> dict[str, str]:
    """`name:secret` entries split by commas or new lines (`#` starts a comment) as a dict.

    Errors name `source` and the entry's position, never the secret.
    """
    pairs: dict[str, str] = {}
    entries = [e.strip() for line in text.splitlines()
               for e in line.split("#", 1)[0].split(",")]
    for number, entry in enumerate((e for e in entries if e), start=1):
        name, sep, secret = entry.partition(":")
        name, secret = name.strip(), secret.strip()
        if not sep or not name or not secret:
            raise ConfigError(f"{source}: entry {number} is not {what}:secret")
        pairs[name] = secret
    return pairs


def load_keys(environ: Mapping[str, str]) -> dict[str, str]:
    """SigV4 key pairs from KILN_AUTH_KEYS, else from the file KILN_AUTH_KEYS_FILE names."""
    if environ.get(KEYS_VAR, "").strip():
        return parse_pairs(environ[KEYS_VAR], KEYS_VAR, "id")
    name = environ.get(KEYS_FILE_VAR, "").strip()
    if not name:
        return {}
    try:
        text = Path(name).read_text()
    except OSError as err:
        raise ConfigError(f"{KEYS_FILE_VAR}: cannot read {name}: {err.strerror}") from err
    return parse_pairs(text, f"{KEYS_FILE_VAR} ({name})", "id")


def load_policy(config: ServiceConfig, environ: Mapping[str, str] | None = None) -> Policy:
    """The service's Policy from service.yaml and the environment; refuse a mode without secrets."""
    environ = os.environ if environ is None else environ
    mode = config.get("auth.mode")
    secrets: dict[str, str] = {}
    if mode == "sigv4":
        secrets = load_keys(environ)
        if not secrets:
            raise ConfigError(f"{config.path}: auth.mode: sigv4 needs key pairs: set {KEYS_VAR}="
                              f"id:secret,... or {KEYS_FILE_VAR} to a file of them")
    tokens_file = verifier = None
    if mode == "token":
        secrets = parse_pairs(environ.get(TOKENS_VAR, ""), TOKENS_VAR, "client")
        if environ.get(TOKENS_FILE_VAR, "").strip():
            try:
                tokens_file = tokens.TokenFile(environ[TOKENS_FILE_VAR].strip())
            except tokens.TokenFileError as err:
                raise ConfigError(str(err)) from err
        if not secrets and tokens_file is None:
            raise ConfigError(f"{config.path}: auth.mode: token needs tokens: set {TOKENS_VAR}="
                              f"client:token,... or {TOKENS_FILE_VAR} to a file of "
                              f"`kiln token new CLIENT`")
    elif mode == "jwt":
        settings = jwt_settings(config.get("auth.jwt"))
        try:
            verifier = jwt.make_verifier(settings, config.root)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{config.path}: auth.jwt.keys_file: cannot use "
                              f"{settings['keys_file']}: {err}") from err
    trust = environ.get(FORWARDED_VAR, "").strip().lower()
    if trust not in ("", "0", "false", "1", "true"):
        raise ConfigError(f"{FORWARDED_VAR}: {trust!r} is not allowed; allowed: true, false")
    return Policy(mode, secrets, config.get("auth.docs_public"), config.get("metrics.public"),
                  environ.get(SERVICE_VAR) or DEFAULT_SERVICE, environ.get(REGION_VAR) or None,
                  trust in ("1", "true"), tokens_file, verifier)


class TokenError(Exception):
    """Raised when a request's token does not verify; the message is for the log only."""


def bearer(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, None for any other."""
    scheme, _, value = authorization.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def verify_token(authorization: str, tokens: Mapping[str, str],
                 tokens_file: tokens.TokenFile | None = None) -> str:
    """Check `Bearer <token>` or `Basic base64(client:token)`; return the client's name.

    TOKENS are plain `client: token` pairs; TOKENS_FILE holds hashes of more.
    """
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        found = None
        for client, token in tokens.items():  # compare with every token: no early exit
            if hmac.compare_digest(token.encode(), value.encode()):
                found = client
        if tokens_file is not None:
            found = tokens_file.match(value) or found
        if found is None:
            raise TokenError("bearer token matches no client")
        return found
    if scheme.lower() == "basic" and value:
        try:
            client, sep, given = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as err:
            raise TokenError("basic credentials are not base64 of client:token") from err
        expected = tokens.get(client)
        matches = hmac.compare_digest((expected or "\0").encode(), given.encode())
        if sep and tokens_file is not None and tokens_file.match(given, client):
            return client
        if expected is None or not sep or not matches:
            raise TokenError(f"basic credentials do not match client {client!r}")
        return client
    raise TokenError("no Bearer or Basic credentials")


def signed_request(environ: Mapping[str, Any], body: bytes,
                   trust_forwarded: bool = False) -> sigv4.SignedRequest:
    """The parts SigV4 covers, from the WSGI environ: the raw URI, not the decoded path.

    With `trust_forwarded`, Host and the path are the ones the caller sent to the proxy:
    X-Forwarded-Host (its first value) and X-Forwarded-Prefix + the raw path.
    """
    raw = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
    if "://" in raw.split("?", 1)[0]:  # absolute-form request target
        raw = "/" + raw.split("://", 1)[1].partition("/")[2]
    raw_path = raw.split("?", 1)[0] or "/"
    headers = {k[5:].replace("_", "-").lower(): str(v)
               for k, v in environ.items() if k.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = str(environ[key])
    if trust_forwarded:
        forwarded_host = headers.get("x-forwarded-host", "").split(",")[0].strip()
        if forwarded_host:
            headers["host"] = forwarded_host
        prefix = headers.get("x-forwarded-prefix", "").split(",")[0].strip().rstrip("/")
        raw_path = prefix + raw_path
    return sigv4.SignedRequest(str(environ.get("REQUEST_METHOD", "GET")), raw_path,
                               str(environ.get("QUERY_STRING", "")), headers, body)


def authenticate(policy: Policy, environ: Mapping[str, Any], body: bytes) -> str:
    """The caller's name for this request; raises SignatureError or TokenError."""
    if policy.mode == "sigv4":
        return sigv4.verify(signed_request(environ, body, policy.trust_forwarded), policy.secrets,
                            service=policy.service, region=policy.region)
    return verify_token(str(environ.get("HTTP_AUTHORIZATION", "")), policy.secrets,
                        policy.tokens_file)


def route_scopes(app: Flask, endpoint: str | None, method: str) -> list[list[str]]:
    """The `jwt` scope alternatives a user route's docstring declares for METHOD (`security:`)."""
    view = app.view_functions.get(endpoint or "")
    if view is None:
        return []
    view_class = getattr(view, "view_class", None)
    source = getattr(view_class, method.lower(), None) if view_class is not None else view
    _, _, text = split_docstring(getattr(source, "__doc__", None))
    try:
        loaded = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return []  # /docs reports the broken docstring
    if isinstance(loaded, dict) and view_class is None:
        loaded = {str(k).lower(): v for k, v in loaded.items()}.get(method.lower())
    return jwt.scope_alternatives(loaded.get("security") if isinstance(loaded, dict) else None)


def _scopes(policy: Policy, current: Current) -> list[list[str]]:
    verifier = cast(jwt.Verifier, policy.verifier)
    if current.kind == "predict":
        return [verifier.predict_scopes] if verifier.predict_scopes else []
    if current.kind is not None:
        return []
    cache: dict[tuple[str | None, str], list[list[str]]]
    cache = current_app.extensions.setdefault("kiln_auth_scopes", {})
    key = (current.endpoint, current.method)
    if key not in cache:
        cache[key] = route_scopes(current_app, current.endpoint, current.method)
    return cache[key]


def _unavailable(current: Current, reason: str) -> Response:
    log.warning("503 %s %s: %s [request_id=%s]", current.method, current.request.path, reason,
                current.id)
    if current.endpoint == STATUS_ENDPOINT:
        config = current_app.extensions["kiln"].config
        response = cast(Response, current_app.json.response(
            {"status": "unavailable", "service": config.id, "version": config.version,
             "reason": reason}))
        response.status_code = 503
        return response
    return error(503, f"unavailable: {reason}", {"Retry-After": "5"})


def _check_jwt(policy: Policy, current: Current) -> Response | None:
    verifier = cast(jwt.Verifier, policy.verifier)
    request = current.request
    if current.endpoint == STATUS_ENDPOINT and not verifier.keys.wait_first(
            sum(jwt.FETCH_TIMEOUT)):
        return _unavailable(current, verifier.keys.reason())
    if policy.is_open(current.kind):
        return None
    token = bearer(str(request.environ.get("HTTP_AUTHORIZATION", "")))
    try:
        if token is None:
            raise jwt.JwtError("no Bearer token")
        claims = verifier.verify(token)
        caller = verifier.user(claims)
        jwt.check_scopes(claims, _scopes(policy, current))
    except jwt.KeysUnavailableError as err:
        return _unavailable(current, str(err))
    except jwt.JwtError as err:
        log.warning("401 %s %s: %s [request_id=%s]", current.method, request.path, err,
                    current.id)
        return error(401, UNAUTHORIZED, {"WWW-Authenticate": INVALID_TOKEN})
    except jwt.ScopeError as err:
        log.warning("403 %s %s: %s [request_id=%s]", current.method, request.path, err,
                    current.id)
        return error(403, f"forbidden: {err}",
                     {"WWW-Authenticate": 'Bearer error="insufficient_scope"'})
    request.environ[USER_ENVIRON] = caller
    return None


def _check(policy: Policy, current: Current) -> Response | None:
    request = current.request
    # Only this hook may say who the caller is.
    request.environ.pop(USER_ENVIRON, None)
    if policy.mode == "jwt" and policy.verifier is not None:
        return _check_jwt(policy, current)
    if policy.is_open(current.kind):
        return None
    body = request.get_data(cache=True) if policy.mode == "sigv4" else b""
    try:
        caller = authenticate(policy, request.environ, body)
    except (sigv4.SignatureError, TokenError) as err:
        log.warning("401 %s %s: %s [request_id=%s]", current.method, request.path, err,
                    current.id)
        challenge = sigv4.ALGORITHM if policy.mode == "sigv4" else 'Bearer realm="kiln"'
        if policy.mode == "jwt":
            challenge = INVALID_TOKEN
        return error(401, UNAUTHORIZED, {"WWW-Authenticate": challenge})
    request.environ[USER_ENVIRON] = caller
    return None


def init_app(app: Flask, service: Service) -> None:
    """Check credentials before every request (auth.mode); without secrets, refuse every caller."""
    try:
        policy = load_policy(service.config)
    except ConfigError as err:
        # `kiln serve` refuses to start without secrets; an app built anyway (kiln specs, the
        # test client, the reload check) needs none to be documented, and lets no one in.
        log.warning("%s: every request of this mode answers 401", err)
        policy = Policy(service.config.get("auth.mode"), {}, service.config.get("auth.docs_public"),
                        service.config.get("metrics.public"))
    app.extensions[AUTH_KEY] = policy
    if policy.mode != "none":
        lifecycle(app).gates.append(functools.partial(_check, policy))
