"""Token checks as Heketi's JWT middleware and `App.Auth` make them, with Heketi's texts.

Order and wording follow heketi middleware/jwt.go (v10) and the jwt-go library under it:
a missing token is 401 `Required authorization token not found`; a malformed header is 400;
then the key is chosen by `iss`, the claims are checked (`exp` required, `iat` at most
`iat_leeway` s ahead, optional `nbf`), then the HMAC signature (whose failure replaces any
claim error); then `qsh`; then `iss=user` may only use the path `/volumes`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


@dataclass(frozen=True)
class AuthFailure:
    status: int
    text: str


def go_duration(seconds: int) -> str:
    """`time.Duration.String()` for whole seconds: 45s, 5m0s, 2h0m3s."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def _b64decode(segment: str) -> bytes:
    padded = segment + "=" * (-len(segment) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def qsh(method: str, path: str) -> str:
    return hashlib.sha256(f"{method}&{path}".encode()).hexdigest()


def _number(claims: dict[str, Any], key: str) -> int:
    value = claims.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                         f"HeketiJwtClaims.{key} of type int64")
    return int(value)


def check(header: str | None, method: str, path: str, keys: dict[str, str],
          *, iat_leeway: int = 120, now: float | None = None) -> AuthFailure | str:
    """The issuer (`admin`/`user`) when the request may pass, else the failure to send."""
    if not header:
        return AuthFailure(401, "Required authorization token not found")
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return AuthFailure(400, "Authorization header format must be Bearer {token}")
    error = _parse(parts[1], keys, iat_leeway, int(time.time() if now is None else now))
    if isinstance(error, str):
        text = f"Invalid JWT token: {error}"
        if error == "signature is invalid":
            text += " (client and server secrets may not match)"
        if "used before issued" in error:
            text += " (client and server clocks may differ)"
        return AuthFailure(401, text)
    issuer, claimed_qsh = error
    if claimed_qsh != qsh(method, path):
        return AuthFailure(401, "Invalid qsh claim in token")
    if issuer == "user" and path != "/volumes":
        return AuthFailure(401, "Administrator access required")
    return issuer


def _parse(token: str, keys: dict[str, str], leeway: int,
           now: int) -> str | tuple[str, str]:
    """(issuer, qsh) of a valid token, or jwt-go's error text."""
    segments = token.split(".")
    if len(segments) != 3:
        return "token contains an invalid number of segments"
    try:
        header = json.loads(_b64decode(segments[0]))
        claims = json.loads(_b64decode(segments[1]))
        signature = _b64decode(segments[2])
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        return f"illegal base64 data or JSON in token: {exc}"
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return "token header and claims must be JSON objects"
    alg = header.get("alg")
    if alg not in _HASHES:
        return f"Unexpected signing method: {alg}"
    issuer = claims.get("iss") or ""
    if not issuer:
        return "Token missing iss claim"
    if issuer not in ("admin", "user"):
        return "Unknown user"
    try:
        exp, iat, nbf = _number(claims, "exp"), _number(claims, "iat"), _number(claims, "nbf")
    except ValueError as exc:
        return str(exc)
    problem: str | None = None
    if exp == 0 or now > exp:
        problem = f"Token is expired by {go_duration(now - exp)}"
    if now < iat - leeway:
        problem = "Token used before issued"
    if nbf and now < nbf:
        problem = "token is not valid yet"
    signing_input = f"{segments[0]}.{segments[1]}".encode()
    expected = hmac.new(keys[issuer].encode(), signing_input, _HASHES[alg]).digest()
    if not hmac.compare_digest(expected, signature):
        problem = "signature is invalid"
    if problem is not None:
        return problem
    claimed = claims.get("qsh")
    return issuer, claimed if isinstance(claimed, str) else ""
