"""The client's JWT (qsh, claims, HS256) and the simulator's check of it, Heketi's way."""

from __future__ import annotations

import base64
import json
import time
import warnings

import jwt
import pytest

from devtools.heketi_sim import jwtcheck
from services.controller.heketi import auth

KEYS = {"admin": "My Secret", "user": "user-key"}
NOW = 1_700_000_000

# Reference values computed outside Python: printf 'GET&/volumes' | sha256sum, etc.
QSH_GET_VOLUMES = "c162acc9024272120bacfff7709c932cc252337d0a30fa15b025010066662bea"
QSH_POST_VOLUMES = "3a9831a9908924e3f78fe948585f41849e92724522f5153cb91aff7f8ea48eac"
QSH_GET_QUEUE = "b80553bdac677f840f0062dafe1ba0ff7db6ff7ed9ef974a14600f968f5f4c9a"


def _decode(token: str, key: str) -> dict[str, object]:
    with warnings.catch_warnings():  # PyJWT warns about short HMAC keys; Heketi's often are
        warnings.simplefilter("ignore")
        claims: dict[str, object] = jwt.decode(
            token, key, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False})
    return claims


def _raw(claims: dict[str, object], key: str, alg: str = "HS256") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jwt.encode(claims, key, algorithm=alg)


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/volumes", QSH_GET_VOLUMES),
    ("POST", "/volumes", QSH_POST_VOLUMES),
    ("get", "/volumes", QSH_GET_VOLUMES),  # the method is upper-cased
    ("GET", "/volumes?verbose=1", QSH_GET_VOLUMES),  # the query string is not part of it
    ("GET", "/queue/0123456789abcdef0123456789abcdef", QSH_GET_QUEUE),
])
def test_qsh_is_sha256_of_method_and_path(method: str, path: str, expected: str) -> None:
    assert auth.qsh(method, path) == expected


def test_claims_carry_issuer_times_and_qsh() -> None:
    claims = auth.claims("POST", "/volumes", "admin", now=NOW)
    assert claims == {"iss": "admin", "iat": NOW, "exp": NOW + 300, "qsh": QSH_POST_VOLUMES}


def test_token_is_standard_hs256_readable_by_pyjwt() -> None:
    token = auth.make_token("GET", "/volumes", "admin", KEYS["admin"], now=NOW)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert _decode(token, KEYS["admin"]) == {
        "iss": "admin", "iat": NOW, "exp": NOW + 300, "qsh": QSH_GET_VOLUMES}
    with pytest.raises(jwt.InvalidSignatureError):
        _decode(token, "another key")


def test_every_request_gets_its_own_token() -> None:
    poll = auth.make_token("GET", "/queue/0123456789abcdef0123456789abcdef", "admin", "k",
                           now=NOW)
    follow = auth.make_token("GET", "/volumes/0123456789abcdef0123456789abcdef", "admin", "k",
                             now=NOW)
    assert poll != follow


def test_authorization_header_uses_lower_case_bearer() -> None:
    assert auth.authorization_header("abc") == "bearer abc"


# --- the simulator checks tokens as Heketi does --------------------------------------


def _check(token: str | None, method: str = "GET", path: str = "/volumes",
           now: float = NOW) -> jwtcheck.AuthFailure | str:
    header = None if token is None else f"bearer {token}"
    return jwtcheck.check(header, method, path, KEYS, now=now)


def test_sim_accepts_client_tokens_for_admin_and_user() -> None:
    admin = auth.make_token("DELETE", "/volumes/abc", "admin", KEYS["admin"], now=NOW)
    assert _check(admin, "DELETE", "/volumes/abc") == "admin"
    user = auth.make_token("POST", "/volumes", "user", KEYS["user"], now=NOW)
    assert _check(user, "POST", "/volumes") == "user"


def test_sim_accepts_the_upper_case_scheme_too() -> None:
    token = auth.make_token("GET", "/volumes", "admin", KEYS["admin"], now=NOW)
    assert jwtcheck.check(f"Bearer {token}", "GET", "/volumes", KEYS, now=NOW) == "admin"


@pytest.mark.parametrize(("header", "status", "text"), [
    (None, 401, "Required authorization token not found"),
    ("Basic abc", 400, "Authorization header format must be Bearer {token}"),
    ("bearer a.b", 401, "Invalid JWT token: token contains an invalid number of segments"),
])
def test_sim_rejects_missing_or_malformed_tokens(header: str | None, status: int,
                                                 text: str) -> None:
    assert jwtcheck.check(header, "GET", "/volumes", KEYS, now=NOW) == \
        jwtcheck.AuthFailure(status, text)


def test_sim_rejects_wrong_key_with_heketis_hint() -> None:
    token = auth.make_token("GET", "/volumes", "admin", "not the key", now=NOW)
    assert _check(token) == jwtcheck.AuthFailure(
        401, "Invalid JWT token: signature is invalid (client and server secrets may not match)")


def test_sim_rejects_expired_token() -> None:
    token = auth.make_token("GET", "/volumes", "admin", KEYS["admin"], now=NOW - 3600)
    assert _check(token) == jwtcheck.AuthFailure(
        401, "Invalid JWT token: Token is expired by 55m0s")


def test_sim_requires_exp() -> None:
    token = _raw({"iss": "admin", "iat": NOW, "qsh": QSH_GET_VOLUMES}, KEYS["admin"])
    verdict = _check(token)
    assert isinstance(verdict, jwtcheck.AuthFailure)
    assert verdict.text.startswith("Invalid JWT token: Token is expired by ")


def test_sim_allows_iat_up_to_120s_ahead() -> None:
    ahead = auth.make_token("GET", "/volumes", "admin", KEYS["admin"], now=NOW + 120)
    assert _check(ahead) == "admin"
    too_far = auth.make_token("GET", "/volumes", "admin", KEYS["admin"], now=NOW + 121)
    assert _check(too_far) == jwtcheck.AuthFailure(
        401, "Invalid JWT token: Token used before issued (client and server clocks may differ)")


def test_sim_binds_token_to_method_and_path() -> None:
    token = auth.make_token("GET", "/volumes", "admin", KEYS["admin"], now=NOW)
    assert _check(token, "POST", "/volumes") == jwtcheck.AuthFailure(
        401, "Invalid qsh claim in token")
    assert _check(token, "GET", "/clusters") == jwtcheck.AuthFailure(
        401, "Invalid qsh claim in token")


def test_sim_limits_user_to_volumes_path() -> None:
    token = auth.make_token("GET", "/clusters", "user", KEYS["user"], now=NOW)
    assert _check(token, "GET", "/clusters") == jwtcheck.AuthFailure(
        401, "Administrator access required")
    poll = auth.make_token("GET", "/queue/abc", "user", KEYS["user"], now=NOW)
    assert _check(poll, "GET", "/queue/abc") == jwtcheck.AuthFailure(
        401, "Administrator access required")


@pytest.mark.parametrize(("claims", "text"), [
    ({"iss": "root"}, "Invalid JWT token: Unknown user"),
    ({}, "Invalid JWT token: Token missing iss claim"),
])
def test_sim_rejects_unknown_or_missing_issuer(claims: dict[str, object], text: str) -> None:
    token = _raw({**claims, "iat": NOW, "exp": NOW + 60, "qsh": QSH_GET_VOLUMES}, "k")
    assert _check(token) == jwtcheck.AuthFailure(401, text)


def test_sim_rejects_non_hmac_algorithm() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(
        {"iss": "admin", "iat": NOW, "exp": NOW + 60, "qsh": QSH_GET_VOLUMES}).encode()
    ).rstrip(b"=").decode()
    assert _check(f"{header}.{body}.") == jwtcheck.AuthFailure(
        401, "Invalid JWT token: Unexpected signing method: none")


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (45, "45s"), (300, "5m0s"), (3603, "1h0m3s"), (-5, "-5s")])
def test_go_duration_format(seconds: int, text: str) -> None:
    assert jwtcheck.go_duration(seconds) == text


def test_default_lifetime_is_five_minutes() -> None:
    before = int(time.time())
    claims = auth.claims("GET", "/volumes", "admin")
    assert before <= claims["iat"] <= int(time.time())  # type: ignore[operator]
    assert claims["exp"] == claims["iat"] + 300  # type: ignore[operator]
