"""auth.mode jwt: tokens of an identity provider, checked against its published public keys.

Keys come from the provider's JWKS (`auth.jwt.jwks_url`) or a local file (`keys_file`: a JWKS
or one PEM public key). A `KeySet` keeps them by `kid`:

- the first fetch runs in a background thread, started by the first request, and retries
  with backoff until it succeeds: the service starts whatever the provider's state, and its
  status route answers 503 with the reason meanwhile;
- a token whose `kid` is unknown triggers a refetch (a rotation at the provider), at most once
  every `REFETCH_EVERY` seconds per process, so made-up kids cannot flood the provider;
- every fetch has a timeout, and a failed refetch keeps the keys already known.

Only public-key algorithms are accepted (service.yaml's validator refuses others), each token's
`alg` must be one of `auth.jwt.algorithms` (so never `none`, nor HMAC keyed with a public key),
and `exp`, `iss` and `aud` are required; PyJWT checks the signature, `exp`, `nbf`, `iat`, `iss`
and `aud`.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# PyJWT, requests and cryptography are imported where used: `kiln serve` imports this module
# in gunicorn's master, and gevent's worker patches ssl after fork; modules that had taken
# names from ssl by then (jwt.jwks_client, urllib3) keep blocking ones (MonkeyPatchWarning).

log = logging.getLogger("kiln.auth")

#: Seconds one JWKS request may take (connect, then read).
FETCH_TIMEOUT = (3.05, 5.0)
#: Seconds between two refetches caused by unknown kids.
REFETCH_EVERY = 5.0
#: Seconds after which known keys are fetched again at the next token (keys the provider dropped).
MAX_AGE = 600.0
#: Backoff of the first fetch: first and longest wait between attempts, in seconds.
BACKOFF = (0.5, 30.0)
#: The largest JWKS document read, in bytes.
MAX_JWKS_BYTES = 1 << 20


class JwtError(Exception):
    """Raised when a token does not verify; the message is for the log only."""


class KeysUnavailableError(Exception):
    """Raised when no key of the provider has been loaded yet; the message says why."""


class ScopeError(Exception):
    """Raised when a verified token lacks the scopes a route requires."""


@dataclass(frozen=True)
class Key:
    """One public key of the provider, and the algorithm its JWK pins, if any."""

    key: Any
    alg: str | None = None


def parse_jwks(data: Any) -> dict[str | None, Key]:
    """Signature keys of a JWKS document by kid; symmetric and encryption keys are left out."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('not a JWKS document: no "keys" list')  # noqa: TRY004 - bad data
    keys: dict[str | None, Key] = {}
    for entry in data["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") == "oct" or entry.get("use") == "enc":
            continue
        import jwt

        try:
            parsed = jwt.PyJWK(entry)
        except (jwt.PyJWTError, ValueError, TypeError) as err:
            log.warning("jwks: key %r skipped: %s", entry.get("kid"), err)
            continue
        alg = entry.get("alg")
        keys[entry.get("kid")] = Key(parsed.key, alg if isinstance(alg, str) else None)
    if not keys:
        raise ValueError("the JWKS holds no usable signature key")
    return keys


def parse_keys_text(text: str) -> dict[str | None, Key]:
    """A keys file: a JWKS document, or one PEM public key (used whatever the token's kid)."""
    if text.lstrip().startswith("-----BEGIN"):
        from cryptography.hazmat.primitives import serialization

        return {None: Key(serialization.load_pem_public_key(text.encode()))}
    return parse_jwks(json.loads(text))


def fetch_url(url: str) -> Callable[[], dict[str | None, Key]]:
    """A fetcher of the JWKS at URL (requests, with a timeout)."""
    def fetch() -> dict[str | None, Key]:
        import requests

        with requests.get(url, timeout=FETCH_TIMEOUT, stream=True,
                          headers={"Accept": "application/json"}) as response:
            response.raise_for_status()
            body = response.raw.read(MAX_JWKS_BYTES + 1, decode_content=True)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        return parse_jwks(json.loads(body))

    return fetch


def read_file(path: Path) -> Callable[[], dict[str | None, Key]]:
    """A fetcher of the keys in the file at PATH."""
    return lambda: parse_keys_text(path.read_text(encoding="utf-8"))


def _describe(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:300]


class KeySet:
    """The provider's keys by kid, fetched in the background first, then again on unknown kids."""

    def __init__(self, fetch: Callable[[], dict[str | None, Key]], source: str,
                 refetch_every: float = REFETCH_EVERY, max_age: float = MAX_AGE):
        self.fetch = fetch
        self.source = source
        self.refetch_every = refetch_every
        self.max_age = max_age
        self.fetches = 0
        self._keys: dict[str | None, Key] = {}
        self._loaded_at: float | None = None
        self._refetched_at = float("-inf")
        self._error = "keys not fetched yet"
        self._lock = threading.Lock()
        self._started = False
        self._attempted = threading.Event()

    @property
    def loaded(self) -> bool:
        return self._loaded_at is not None

    def reason(self) -> str:
        """Why no key is available; empty once keys are loaded."""
        if self.loaded:
            return ""
        return f"identity provider keys unavailable ({self.source}): {self._error}"

    def load_now(self) -> None:
        """Fetch once, here; raise what the fetch raised (a keys file checked at start)."""
        with self._lock:
            self._install(self.fetch())

    def start(self) -> None:
        """Begin the first fetch in a background thread, retried with backoff until it succeeds."""
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            self._started = True
        if self.loaded:  # a keys file, read at start
            self._attempted.set()
            return
        threading.Thread(target=self._warm, name="kiln-jwks", daemon=True).start()

    def wait_first(self, timeout: float) -> bool:
        """Wait (at most TIMEOUT seconds) for the first fetch to end; whether keys are loaded."""
        self.start()
        self._attempted.wait(timeout)
        return self.loaded

    def _warm(self) -> None:
        delay, longest = BACKOFF
        while not self.loaded:
            self._refresh()
            self._attempted.set()
            if self.loaded:
                return
            time.sleep(delay)
            delay = min(delay * 2, longest)

    def _install(self, keys: dict[str | None, Key]) -> None:
        self._keys = keys
        self._loaded_at = time.monotonic()

    def _refresh(self) -> bool:
        """Fetch now, holding no lock while the provider answers; whether it succeeded.

        Other requests go on with the keys in hand meanwhile (`_may_refetch` lets one caller
        at a time fetch): a slow provider delays only the request that asked for new keys.
        """
        with self._lock:
            self.fetches += 1
        try:
            keys = self.fetch()
        except Exception as err:  # noqa: BLE001 - any failure leaves the old keys in place
            self._error = _describe(err)
            log.warning("jwks: cannot fetch keys from %s: %s", self.source, self._error)
            return False
        with self._lock:
            self._install(keys)
            self._error = ""
        return True

    def get(self, kid: str | None) -> Key:
        """The key for KID; raises JwtError when the provider does not have it (after a refetch
        when allowed), KeysUnavailableError before the first fetch succeeded."""
        if not self.wait_first(sum(FETCH_TIMEOUT)):
            raise KeysUnavailableError(self.reason())
        loaded_at = self._loaded_at or 0.0
        stale = time.monotonic() - loaded_at > self.max_age
        if (stale or self._find(kid) is None) and self._may_refetch():
            self._refresh()
        found = self._find(kid)
        if found is None:
            raise JwtError(f"no key of the provider has kid {kid!r}")
        return found

    def _may_refetch(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._refetched_at < self.refetch_every:
                return False
            self._refetched_at = now
            return True

    def _find(self, kid: str | None) -> Key | None:
        keys = self._keys
        if kid in keys:
            return keys[kid]
        if None in keys and len(keys) == 1:  # one key without a kid (a PEM file) signs all
            return keys[None]
        return None


def token_scopes(claims: Mapping[str, Any]) -> set[str]:
    """Scopes a token grants: `scope` (space-separated) and `scp` (a list, or a string)."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return found


def check_scopes(claims: Mapping[str, Any], required: list[list[str]]) -> None:
    """Pass when the token holds every scope of one of the REQUIRED alternatives (none: pass)."""
    if not required:
        return
    granted = token_scopes(claims)
    if not any(set(alternative) <= granted for alternative in required):
        wanted = " or ".join(" ".join(a) for a in required)
        raise ScopeError(f"the token lacks scope {wanted}")


class Verifier:
    """Checks bearer JWTs against auth.jwt (settings with defaults, see config.jwt_settings)."""

    def __init__(self, settings: Mapping[str, Any], keys: KeySet):
        self.issuer: str = settings["issuer"]
        audience = settings["audience"]
        self.audience: str | list[str] = audience if isinstance(audience, str) else list(audience)
        self.algorithms: list[str] = list(settings["algorithms"])
        self.leeway: float = float(settings["leeway"])
        self.user_claim: str = settings["user_claim"]
        self.predict_scopes: list[str] = list(settings["predict_scopes"])
        self.keys = keys

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims once its signature, exp, nbf, iss and aud check out."""
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as err:
            raise JwtError(f"not a JWT: {err}") from err
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise JwtError(f"alg {alg!r} is not accepted; accepted: {', '.join(self.algorithms)}")
        kid = header.get("kid")
        key = self.keys.get(kid if isinstance(kid, str) else None)
        if key.alg is not None and key.alg != alg:
            raise JwtError(f"kid {kid!r} is a {key.alg} key, the token says {alg}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options={"require": ["exp", "iss", "aud"]})
        except (jwt.PyJWTError, TypeError, ValueError) as err:
            raise JwtError(_describe(err)) from err
        return claims

    def user(self, claims: Mapping[str, Any]) -> str:
        """The caller's name: the user claim, which must be a non-empty string or a number."""
        value = claims.get(self.user_claim)
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise JwtError(f"the token has no usable {self.user_claim!r} claim")
        return str(value)


def make_verifier(settings: Mapping[str, Any], root: Path) -> Verifier:
    """A Verifier for auth.jwt SETTINGS of the service in ROOT; a keys file is read now."""
    if settings.get("keys_file"):
        path = root / settings["keys_file"]
        keys = KeySet(read_file(path), str(path))
        keys.load_now()
    else:
        keys = KeySet(fetch_url(settings["jwks_url"]), settings["jwks_url"])
    return Verifier(settings, keys)


def scope_alternatives(security: Any, scheme: str = "jwt") -> list[list[str]]:
    """The scope sets of an OpenAPI `security` list for SCHEME; any one of them suffices.

    An alternative that does not name SCHEME needs no scope: `[{jwt: [a]}, {}]` needs none.
    """
    if not isinstance(security, list):
        return []
    alternatives: list[list[str]] = []
    for requirement in security:
        if not isinstance(requirement, dict):
            continue
        scopes = requirement.get(scheme, [])
        if not isinstance(scopes, Iterable) or isinstance(scopes, str):
            scopes = [scopes]
        alternatives.append([str(s) for s in scopes])
    if any(not a for a in alternatives):
        return []
    return alternatives
