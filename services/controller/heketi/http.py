"""One HTTP request to Heketi: a pooled aiohttp session, a fresh JWT, a deadline.

`HeketiHttp.send` puts one signed request on the wire and returns Heketi's answer as it is,
or raises `TransportError` saying how no answer came (never connected, timed out, dropped).
What an answer means is the client's business (`client.py`, `queue.py`).
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from services.common.logging import get_logger
from services.controller.heketi.auth import authorization_header, make_token
from services.controller.heketi.errors import HeketiUnavailable
from services.controller.metrics import HEKETI_REQUESTS

_log = get_logger("heketi")


class _Secret:
    """Holds the key; prints as a placeholder so it cannot leak through repr or vars()."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    location: str | None
    retry_after: str | None


class TransportError(Exception):
    """The request got no HTTP answer. `kind`: connect (never sent), timeout or dropped."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class HeketiHttp:
    """The HTTP side of one backend. `requests_sent` counts requests put on the wire."""

    def __init__(self, url: str, user: str, key: str | None, *, name: str,
                 ca_file: str | None, request_timeout: float, pool_size: int) -> None:
        self.name = name
        self.user = user
        self.request_timeout = request_timeout
        self.prefix = urlsplit(url).path.rstrip("/")  # Heketi behind a path, e.g. a proxy
        self._base = url.rstrip("/")
        self._key = _Secret(key) if key else None
        self._ca_file = ca_file
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.requests_sent = 0

    @property
    def signs(self) -> bool:
        """Whether requests carry a token (a key is configured)."""
        return self._key is not None

    def open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise HeketiUnavailable(f"Heketi backend {self.name!r}: client is closed")
        if self._session is None:
            tls: ssl.SSLContext | bool = True
            if self._ca_file:
                tls = ssl.create_default_context(cafile=self._ca_file)
            connector = aiohttp.TCPConnector(limit=self._pool_size, ssl=tls)
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            )
            # aiohttp silently resends a GET once when the server drops the connection. For
            # a queue poll that would read the one-shot result's 404 instead of reporting
            # the drop, so this client decides about every retry itself. (The switch is
            # private; aiohttp's own test client flips it the same way.)
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
            self._session = session
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(self, method: str, path: str, body: Any = None, *,
                   auth: bool = True) -> Answer:
        """Send one signed request; raise `TransportError` when no answer arrives."""
        session = self.open()
        headers = {"Accept": "application/json"}
        if auth and self._key is not None:
            token = make_token(method, self.prefix + path, self.user, self._key.reveal())
            headers["Authorization"] = authorization_header(token)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.requests_sent += 1
        started = time.monotonic()
        try:
            async with session.request(method, self._base + path, data=data, headers=headers,
                                       allow_redirects=False) as resp:
                text = await resp.text(errors="replace")
                answer = Answer(resp.status, text, resp.headers.get("Location"),
                                resp.headers.get("Retry-After"))
        except TimeoutError:
            HEKETI_REQUESTS.labels(self.name, method, "timeout").inc()
            raise TransportError(
                "timeout", f"no answer within {self.request_timeout:g} s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TransportError(
                "connect", f"cannot connect: TLS certificate not trusted: "
                f"{exc.certificate_error}") from None
        except aiohttp.ClientConnectorError as exc:
            HEKETI_REQUESTS.labels(self.name, method, "connect-error").inc()
            raise TransportError("connect", f"cannot connect: {exc.os_error}") from None
        except (aiohttp.ClientError, OSError) as exc:
            HEKETI_REQUESTS.labels(self.name, method, "dropped").inc()
            raise TransportError(
                "dropped", f"connection lost: {type(exc).__name__}: {exc}") from None
        HEKETI_REQUESTS.labels(self.name, method, str(answer.status)).inc()
        _log.debug("heketi request", backend=self.name, method=method, path=path,
                   status=answer.status, ms=round((time.monotonic() - started) * 1000, 1))
        return answer
