"""Call a kiln service from Python: `invoke(...)` once, or a `Client` for repeated calls.

    from runtime.sdk import invoke
    invoke("post", "/add-numbers", "add-numbers", {"num1": 2, "num2": 5})   # -> {"result": 7}

The service's root URL is `url=`, else KILN_SERVICE_URL_<ID> (id upper-cased, '-' as '_'),
else KILN_GATEWAY_URL + /user-services/invoke/<id>. Credentials are `auth=(key_id, secret)`
or KILN_ACCESS_KEY_ID/KILN_SECRET_ACCESS_KEY (signed with SigV4 by requests-aws4auth, scope
region KILN_AUTH_REGION, else AWS_REGION, else us-east-1; service KILN_AUTH_SERVICE, else
execute-api), else KILN_TOKEN (a bearer token). Each call sends an X-Request-ID, reused by its
retries, and `Client.request` returns it in the `Reply`. A non-2xx answer raises InvokeError.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests_aws4auth import AWS4Auth

from runtime.config import ID_RULE, check_id
from runtime.errors import ConfigError, KilnError

log = logging.getLogger("kiln.sdk")

GATEWAY_PREFIX = "/user-services/invoke"
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_BACKOFF = 5.0


class InvokeError(KilnError):
    """Raised when a service answers non-2xx or cannot be reached; carries status, message, request id."""

    def __init__(self, message: str, status: int | None = None, request_id: str | None = None,
                 url: str | None = None):
        self.status = status
        self.message = message
        self.request_id = request_id
        self.url = url
        where = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{where}: {message} (request id {request_id})")


class BearerAuth(requests.auth.AuthBase):
    """`Authorization: Bearer <token>` on every request."""

    def __init__(self, token: str):
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r

    def __repr__(self) -> str:
        return "BearerAuth(<token>)"  # never show the token


@dataclass(frozen=True)
class Reply:
    """A service's 2xx answer: the decoded body, the status and the request id of the call."""

    data: Any
    status: int
    request_id: str
    headers: Mapping[str, str]


def service_url(service_id: str, url: str | None = None,
                environ: Mapping[str, str] | None = None) -> str:
    """The service's root URL: url=, else KILN_SERVICE_URL_<ID>, else the gateway's prefix."""
    environ = os.environ if environ is None else environ
    if url:
        return url.rstrip("/")
    if check_id(service_id):
        raise ConfigError(f"{service_id!r} is not a service id ({ID_RULE}); pass service.yaml's "
                          f"id, or url= (kiln invoke --url)")
    own = "KILN_SERVICE_URL_" + service_id.upper().replace("-", "_")
    if environ.get(own):
        return environ[own].rstrip("/")
    if environ.get("KILN_GATEWAY_URL"):
        return f"{environ['KILN_GATEWAY_URL'].rstrip('/')}{GATEWAY_PREFIX}/{service_id}"
    raise ConfigError(f"no URL for service {service_id!r}: pass url= (kiln invoke --url), "
                      f"or set {own} or KILN_GATEWAY_URL")


def sigv4_auth(key_id: str, secret: str, environ: Mapping[str, str] | None = None) -> AWS4Auth:
    """A requests auth that signs with SigV4 under the scope the service accepts."""
    environ = os.environ if environ is None else environ
    region = (environ.get("KILN_AUTH_REGION") or environ.get("AWS_REGION")
              or environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    return AWS4Auth(key_id, secret, region, environ.get("KILN_AUTH_SERVICE") or "execute-api")


def resolve_auth(auth: Any = None, environ: Mapping[str, str] | None = None) -> Any:
    """requests auth from `auth=` ((key_id, secret), a token string, False for none, or a
    requests AuthBase), else KILN_ACCESS_KEY_ID/KILN_SECRET_ACCESS_KEY, else KILN_TOKEN."""
    environ = os.environ if environ is None else environ
    if auth is False:
        return None
    if isinstance(auth, tuple) and len(auth) == 2:
        return sigv4_auth(str(auth[0]), str(auth[1]), environ)
    if isinstance(auth, str):
        return BearerAuth(auth)
    if auth is not None:
        return auth
    key_id, secret = environ.get("KILN_ACCESS_KEY_ID"), environ.get("KILN_SECRET_ACCESS_KEY")
    if bool(key_id) != bool(secret):
        missing = "KILN_SECRET_ACCESS_KEY" if key_id else "KILN_ACCESS_KEY_ID"
        raise InvokeError(f"{missing} is not set: SigV4 needs both KILN_ACCESS_KEY_ID and "
                          f"KILN_SECRET_ACCESS_KEY")
    if key_id and secret:
        return sigv4_auth(key_id, secret, environ)
    if environ.get("KILN_TOKEN"):
        return BearerAuth(environ["KILN_TOKEN"])
    return None


def decode(response: requests.Response) -> Any:
    """The body as JSON (NDJSON as a list); text when it is not JSON; None when empty."""
    if not response.content:
        return None
    kind = response.headers.get("Content-Type", "").split(";")[0].strip()
    try:
        if kind == "application/x-ndjson":
            return [json.loads(line) for line in response.text.splitlines() if line.strip()]
        return response.json()
    except ValueError:
        return response.text


def error_message(response: requests.Response) -> str:
    """The service's `error` message, else the start of its body, else the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    text = response.text.strip()
    return text[:200] if text else (response.reason or "error")


class Client:
    """Calls to kiln services over one HTTP session (connections are reused)."""

    def __init__(self, *, auth: Any = None, timeout: float = 30, retries: int = 2,
                 backoff: float = 0.25, session: requests.Session | None = None):
        self.session = session or requests.Session()
        self.auth = auth
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, service_id: str, payload: Any = None, *,
                url: str | None = None, auth: Any = None, timeout: float | None = None,
                retries: int | None = None, idempotent: bool | None = None,
                request_id: str | None = None) -> Reply:
        """Call the service and return its Reply; raise InvokeError on a non-2xx answer.

        Retries (`retries` more tries, with exponential backoff) follow a connection error or
        a 502/503/504, only when the method is idempotent or `idempotent=True` marks a POST
        as safe to repeat (a predict without side effects, say).
        """
        method = method.upper()
        target = f"{service_url(service_id, url)}/{path.lstrip('/')}"
        rid = request_id or uuid.uuid4().hex
        safe = method in IDEMPOTENT if idempotent is None else idempotent
        tries = 1 + max(0, self.retries if retries is None else retries) if safe else 1
        kwargs: dict[str, Any] = {
            "headers": {"X-Request-ID": rid, "Accept": "application/json"},
            "auth": resolve_auth(self.auth if auth is None else auth),
            "timeout": self.timeout if timeout is None else timeout,
        }
        if payload is not None:
            kwargs["params" if method in ("GET", "HEAD") else "json"] = payload
        for attempt in range(tries):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF))
            try:
                response = self.session.request(method, target, **kwargs)
            except requests.ConnectionError as err:
                log.info("%s %s: cannot connect (try %d of %d) [request_id=%s]",
                         method, target, attempt + 1, tries, rid)
                if attempt + 1 < tries:
                    continue
                raise InvokeError(f"cannot reach {target}: {type(err).__name__}",
                                  request_id=rid, url=target) from err
            except requests.Timeout as err:
                raise InvokeError(f"no answer from {target} within {kwargs['timeout']} s",
                                  request_id=rid, url=target) from err
            except requests.RequestException as err:  # a malformed URL, too many redirects...
                raise InvokeError(f"cannot call {target}: {err}", request_id=rid,
                                  url=target) from err
            if response.status_code in RETRY_STATUSES and attempt + 1 < tries:
                log.info("%s %s: HTTP %d (try %d of %d) [request_id=%s]", method, target,
                         response.status_code, attempt + 1, tries, rid)
                continue
            break
        answered = response.headers.get("X-Request-ID") or rid
        if not response.ok:
            raise InvokeError(error_message(response), response.status_code, answered, target)
        return Reply(decode(response), response.status_code, answered, response.headers)

    def invoke(self, method: str, path: str, service_id: str, payload: Any = None,
               **kwargs: Any) -> Any:
        """Call the service and return its decoded JSON answer (see `request`)."""
        return self.request(method, path, service_id, payload, **kwargs).data


def invoke(method: str, path: str, service_id: str, payload: Any = None, *,
           url: str | None = None, auth: Any = None, timeout: float = 30, retries: int = 2,
           idempotent: bool | None = None, request_id: str | None = None) -> Any:
    """Call one service once and return its decoded JSON answer; raise InvokeError on non-2xx."""
    with Client(auth=auth, timeout=timeout, retries=retries) as client:
        return client.invoke(method, path, service_id, payload, url=url,
                             idempotent=idempotent, request_id=request_id)


def invoke_command(service_id: str, path: str, method: str, data: str | None,
                   file: Any, url: str | None) -> str:
    """What `kiln invoke` prints: the answer as indented JSON (`data` and `file` exclude each other)."""
    if data is not None and file is not None:
        raise KilnError("--data and --file exclude each other: give one")
    text = file.read() if file is not None else data
    payload = None
    if text is not None:
        try:
            payload = json.loads(text)
        except ValueError as err:
            source = "--file" if file is not None else "--data"
            raise KilnError(f"{source}: not valid JSON: {err}") from err
    answer = invoke(method, path, service_id, payload, url=url)
    return json.dumps(answer, indent=2, ensure_ascii=False)


#: The predict route and where its docs hold the request example.
PREDICT_PATH = "/api/v1.0/predict"
SPECS_PATH = "/docs/specs.json"


def predict_example(spec: Any, path: str = PREDICT_PATH) -> Any:
    """The request example an OpenAPI document gives for POST PATH (PredictInput's, for predict)."""
    try:
        media = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        return media["example"]
    except (KeyError, TypeError):
        raise KilnError(f"the service documents no request example for POST {path}: define "
                        f"PredictInput in app/schemas.py, with metadata={{'example': ...}} on "
                        f"its fields") from None


def invoke_example(service_id: str, path: str | None, url: str | None) -> str:
    """What `kiln invoke --example` prints: predict's answer to its documented example."""
    path = "/" + (path or PREDICT_PATH).lstrip("/")
    spec = invoke("get", SPECS_PATH, service_id, url=url)
    answer = invoke("post", path, service_id, predict_example(spec, path), url=url)
    return json.dumps(answer, indent=2, ensure_ascii=False)
