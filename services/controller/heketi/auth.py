"""Heketi's JWT: one HS256 token per request, bound to its method and path by `qsh`.

Heketi picks the key by the `iss` claim (`admin` or `user`), requires `exp`, accepts an
`iat` up to 120 s in the future, and compares `qsh` with the SHA-256 of `METHOD&path`
(the path only: no query string, no host). A token is therefore good for exactly one
method and path, so every request — each queue poll, the GET after a 303 — is signed anew.

The token is built here rather than with PyJWT's `encode`: Heketi keys are often short
phrases, and PyJWT warns on every HMAC key under 32 bytes, which would fire on every request.
The format is plain RFC 7519 (compact JWS, HS256); the unit tests check it against PyJWT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping

TOKEN_LIFETIME_S = 300  # what Heketi's own Go client uses
ALGORITHM = "HS256"
_HEADER = {"alg": ALGORITHM, "typ": "JWT"}


def qsh(method: str, path: str) -> str:
    """The `qsh` claim: lower-case hex SHA-256 of `METHOD&path` (query string dropped)."""
    bare_path = path.split("?", 1)[0]
    return hashlib.sha256(f"{method.upper()}&{bare_path}".encode()).hexdigest()


def claims(method: str, path: str, issuer: str, *, now: float | None = None,
           lifetime_s: int = TOKEN_LIFETIME_S) -> dict[str, object]:
    """The claims Heketi checks: `iss`, `iat`, `exp` (required) and `qsh`."""
    issued = int(time.time() if now is None else now)
    return {"iss": issuer, "iat": issued, "exp": issued + lifetime_s, "qsh": qsh(method, path)}


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _segment(obj: Mapping[str, object]) -> bytes:
    return _b64(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode())


def sign(payload: Mapping[str, object], key: str) -> str:
    """A compact HS256 JWS of `payload`."""
    signing_input = _segment(_HEADER) + b"." + _segment(payload)
    signature = hmac.new(key.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode("ascii")


def make_token(method: str, path: str, issuer: str, key: str, *, now: float | None = None,
               lifetime_s: int = TOKEN_LIFETIME_S) -> str:
    """A signed token for one request; `issuer` is the Heketi user (`admin` or `user`)."""
    return sign(claims(method, path, issuer, now=now, lifetime_s=lifetime_s), key)


def authorization_header(token: str) -> str:
    # Heketi's Go client writes the scheme in lower case; the server accepts either case.
    return f"bearer {token}"
