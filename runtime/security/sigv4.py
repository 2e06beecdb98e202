"""AWS Signature Version 4 verification: pure functions over a request's raw parts.

The canonical forms mirror what requests-aws4auth signs (see PITFALLS.md section 6): the
path comes from the raw request URI (never Werkzeug's decoded PATH_INFO), normalised and
quoted once more as AWS does for non-S3 services; the query is parsed, re-quoted and sorted;
each signed header is `name:value` with runs of whitespace folded. The body hash is
recomputed from the body, because the signature only covers the hash the client claims.
"""
from __future__ import annotations

import hashlib
import hmac
import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qs, quote

ALGORITHM = "AWS4-HMAC-SHA256"
#: Seconds a signature stays valid either side of the server's clock (AWS allows 5 minutes).
MAX_SKEW = 300
AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*$")


class SignatureError(Exception):
    """Raised when a request's SigV4 signature does not verify; the message is for the log only."""


@dataclass(frozen=True)
class SignedRequest:
    """The parts of an HTTP request a SigV4 signature covers, exactly as they arrived."""

    method: str
    raw_path: str  # still percent-encoded, without the query
    query: str  # raw QUERY_STRING
    headers: Mapping[str, str]  # looked up by lower-case name
    body: bytes


@dataclass(frozen=True)
class Authorization:
    """A parsed `Authorization: AWS4-HMAC-SHA256 ...` header."""

    key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def parse_authorization(value: str) -> Authorization:
    """Split a SigV4 Authorization header into its fields; raise SignatureError when malformed."""
    match = _AUTH.match(value or "")
    if not match:
        raise SignatureError("Authorization is not an AWS4-HMAC-SHA256 header")
    parts = match["credential"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not re.fullmatch(r"\d{8}", parts[1]):
        raise SignatureError("malformed credential scope")
    signed = tuple(match["signed"].lower().split(";"))
    return Authorization(parts[0], parts[1], parts[2], parts[3], signed, match["signature"])


def canonical_path(raw_path: str) -> str:
    """The path as the client signed it: normalised, '/' runs collapsed, quoted again."""
    path = posixpath.normpath(raw_path or "/")
    path = re.sub("/+", "/", path)
    if raw_path.endswith("/") and not path.endswith("/"):
        path += "/"
    return quote(path, safe="/~")


def canonical_query(query: str) -> str:
    """The query as the client signed it: decoded pairs re-quoted and sorted by name then value."""
    query = query.split(" ")[0].replace(";", "%3B")
    items: dict[str, list[str]] = {}
    for name, values in parse_qs(query, keep_blank_values=True).items():
        items[quote(name, safe="-_.~")] = [quote(v, safe="-_.~") for v in values]
    return "&".join(f"{name}={value}" for name in sorted(items) for value in sorted(items[name]))


def _fold_whitespace(text: str) -> str:
    if not re.search(r"\s", text):
        return text
    try:
        return " ".join(shlex.split(text, posix=False))
    except ValueError:  # an unbalanced quote: fold every run
        return " ".join(text.split())


def canonical_request(request: SignedRequest, auth: Authorization, body_hash: str) -> str:
    """The canonical request string for the headers the client said it signed."""
    lines = [f"{name}:{_fold_whitespace(request.headers.get(name, '')).strip()}\n"
             for name in auth.signed_headers]
    return "\n".join([request.method.upper(), canonical_path(request.raw_path),
                      canonical_query(request.query), "".join(lines),
                      ";".join(auth.signed_headers), body_hash])


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The derived key: HMAC chain 'AWS4'+secret -> date -> region -> service -> aws4_request."""
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(secret: str, request: SignedRequest, auth: Authorization, body_hash: str) -> str:
    """The hex signature the client must have sent for `request` under `auth`'s scope."""
    amz_date = request.headers.get("x-amz-date", "")
    digest = hashlib.sha256(canonical_request(request, auth, body_hash).encode()).hexdigest()
    to_sign = f"{ALGORITHM}\n{amz_date}\n{auth.scope}\n{digest}"
    key = signing_key(secret, auth.date, auth.region, auth.service)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _check_time(amz_date: str, scope_date: str, now: datetime) -> None:
    try:
        stamp = datetime.strptime(amz_date, AMZ_DATE).replace(tzinfo=timezone.utc)
    except ValueError as err:
        raise SignatureError("x-amz-date is missing or not YYYYMMDDTHHMMSSZ") from err
    if scope_date != amz_date[:8]:
        raise SignatureError("credential scope date differs from x-amz-date")
    skew = abs((now - stamp).total_seconds())
    if skew > MAX_SKEW:
        raise SignatureError(f"x-amz-date is {skew:.0f} s from the server clock "
                             f"(at most {MAX_SKEW} s)")


def verify(request: SignedRequest, keys: Mapping[str, str], *, service: str,
           region: str | None = None, now: datetime | None = None) -> str:
    """Check a SigV4-signed request against `keys` (key id -> secret); return the key id.

    `region` None accepts any region in the credential scope. Raises SignatureError with a
    reason meant for the server's log, never for the caller.
    """
    auth = parse_authorization(request.headers.get("authorization", ""))
    for required in ("host", "x-amz-date", "x-amz-content-sha256"):
        if required not in auth.signed_headers:
            raise SignatureError(f"{required} is not among the signed headers")
    if auth.service != service or (region is not None and auth.region != region):
        raise SignatureError(f"credential scope {auth.region}/{auth.service} is not accepted")
    _check_time(request.headers.get("x-amz-date", ""), auth.date,
                now or datetime.now(timezone.utc))
    claimed = request.headers.get("x-amz-content-sha256", "")
    actual = hashlib.sha256(request.body).hexdigest()
    if not hmac.compare_digest(claimed.encode(), actual.encode()):
        raise SignatureError("x-amz-content-sha256 does not match the body "
                             "(UNSIGNED-PAYLOAD is not accepted)")
    secret = keys.get(auth.key_id)
    # An unknown key id costs the same work as a known one.
    expected = signature(secret if secret is not None else "", request, auth, claimed)
    matches = hmac.compare_digest(expected.encode(), auth.signature.encode())
    if secret is None:
        raise SignatureError(f"unknown access key id {auth.key_id!r}")
    if not matches:
        raise SignatureError(f"signature mismatch for access key id {auth.key_id!r}")
    return auth.key_id
