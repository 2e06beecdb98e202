"""A stand-in identity provider for the JWT tests: real RSA and EC keys, minted tokens, and a
JWKS served over HTTP on 127.0.0.1 by a thread, counting its fetches."""
from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support import SERVICES

ISSUER = "https://idp.test/realms/ml"
AUDIENCE = "jwt-svc"


class Provider:
    """Keys by kid, the kids it publishes, and its JWKS at `url`; `available` False answers 503."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.published: list[str] = []
        self.available = True
        self.fetches = 0
        self.lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with provider.lock:
                    provider.fetches += 1
                    body = json.dumps(provider.jwks()).encode()
                    status = 200 if provider.available else 503
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_key(self, kind: str = "RSA", publish: bool = True) -> str:
        """A new key pair of KIND (RSA or EC); returns its kid."""
        kid = f"{kind.lower()}-{uuid.uuid4().hex[:8]}"
        if kind == "RSA":
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        if publish:
            with self.lock:
                self.published.append(kid)
        return kid

    def rotate(self, kind: str = "RSA") -> str:
        """Publish a new key only, as a provider does after rotating; returns its kid."""
        kid = self.add_key(kind, publish=False)
        with self.lock:
            self.published = [kid]
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            key = self.keys[kid]
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
                alg = "RS256"
            else:
                jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
                alg = "ES256"
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": alg})
        return {"keys": keys}

    def public_pem(self, kid: str) -> bytes:
        return self.keys[kid].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def token(self, kid: str, *, drop: tuple[str, ...] = (), headers: dict[str, Any] | None = None,
              **claims: Any) -> str:
        """A token signed with KID's key: valid claims, overridden by CLAIMS, less DROP."""
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300,
                "scope": "predict reports:write", **claims}
        for name in drop:
            body.pop(name, None)
        key = self.keys[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid, **(headers or {})})


def service(tmp_path: Path, provider: Provider | None = None, **jwt_settings: Any) -> Path:
    """A copy of tests/services/jwt whose auth.jwt points at PROVIDER, with JWT_SETTINGS over it."""
    root = tmp_path / f"jwt-svc-{uuid.uuid4().hex[:6]}"
    shutil.copytree(SERVICES / "jwt", root)
    data = yaml.safe_load((root / "service.yaml").read_text())
    if provider is not None:
        data["auth"]["jwt"]["jwks_url"] = provider.url
    data["auth"]["jwt"].update(jwt_settings)
    for key in [k for k, v in data["auth"]["jwt"].items() if v is None]:
        del data["auth"]["jwt"][key]
    (root / "service.yaml").write_text(yaml.safe_dump(data))
    return root
