"""Turns plain service classes into grpclib handlers.

A service implementation is an ordinary class whose RPCs look like
`async def CreateVolume(self, request, ctx) -> response`. `servable()` wraps each one so
that every call gets its request checked against the size bounds of `services.common.bounds`
(before anything reads it), a request id, one log line (method, duration, code, volume id),
metrics, secret-safe and size-bounded error reporting through
`services.common.errors.status_for`, and UNIMPLEMENTED for methods the class does not define.
No answer and no error text carries a credential the request did (its secrets, a
`restuserkey` parameter, a URL's password): they are taken out before the answer is sent
(`services.common.redact.without_credentials`), whatever the service copied into it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message
from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from services.common.bounds import check_request, receive_request
from services.common.errors import (
    DriverError,
    InvalidArgument,
    Unavailable,
    Unimplemented,
    clip_message,
    status_for,
)
from services.common.logging import get_logger
from services.common.metrics import RPC_SECONDS, RPC_TOTAL
from services.common.redact import (
    credentials_in,
    redact_urls,
    redacted_dict,
    text_without,
    without_credentials,
)

_log = get_logger("rpc")

# Calls that health checks and sidecars repeat all day: a success is logged at debug only.
_ROUTINE = frozenset({"Probe", "GetPluginInfo", "GetPluginCapabilities", "GetInfo",
                      "ControllerGetCapabilities", "NodeGetCapabilities"})

# Fields, in order of preference, that name the object an RPC is about.
_ID_FIELDS = ("volume_id", "snapshot_id", "source_volume_id", "name")
_ID_SHOWN = 256  # an id longer than any valid one is cut short in logs


@dataclass
class InFlight:
    """Counts calls being served, so that shutdown can wait for them (and refuse new ones)."""

    draining: bool = False
    count: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


@dataclass
class RpcContext:
    """What a service method gets besides its request."""

    method: str
    request_id: str
    log: Any


def object_id(request: Message) -> str | None:
    """The volume/snapshot id (or name) a request is about, for logs."""
    for name in _ID_FIELDS:
        if name in request.DESCRIPTOR.fields_by_name:
            value = getattr(request, name)
            if value:
                text = redact_urls(str(value))  # before cutting: the cut may hide an `@`
                return text if len(text) <= _ID_SHOWN else text[:_ID_SHOWN] + "..."
    return None


class Servable:
    """A grpclib-servable wrapper of one service implementation."""

    def __init__(self, impl: object, base: type[Any], tracker: InFlight | None = None) -> None:
        self.impl = impl
        self.service = base.__name__.removesuffix("Base")
        self.tracker = tracker or InFlight()
        # The generated base's __mapping__ only reads `self.<Method>`; hand it our wrappers.
        wrapper = self

        class _Collector:
            def __getattr__(self, method: str) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
                return wrapper._handler(method)

        self._mapping: dict[str, Handler] = base.__mapping__(_Collector())

    def __mapping__(self) -> dict[str, Handler]:
        return self._mapping

    def _handler(self, method: str) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
        func = getattr(self.impl, method, None)

        async def handle(stream: Stream[Any, Any]) -> None:
            await self._serve(stream, method, func)

        return handle

    async def _serve(self, stream: Stream[Any, Any], method: str, func: Any) -> None:
        try:
            request = await receive_request(stream)
        except InvalidArgument as exc:
            RPC_TOTAL.labels(method, Status.INVALID_ARGUMENT.name).inc()
            _log.warning("rpc", method=method, code=Status.INVALID_ARGUMENT.name,
                         error=str(exc))
            raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
        request_id = uuid.uuid4().hex[:12]
        oid = object_id(request)
        log = _log.bind(method=method, request_id=request_id)
        if oid:
            log = log.bind(volume_id=oid)
        ctx = RpcContext(method=method, request_id=request_id, log=log)
        started = time.monotonic()
        code = Status.OK
        message = ""
        credentials: frozenset[str] = frozenset()
        self.tracker.enter()
        try:
            check_request(request)
            credentials = credentials_in(request)
            if log_debug_enabled(log):
                log.debug("rpc request", request=redacted_dict(request))
            if self.tracker.draining:
                raise Unavailable("the driver is shutting down; retry")
            if func is None:
                raise Unimplemented(f"{self.service}.{method} is not implemented by this driver")
            response = await func(request, ctx)
            if (clean := without_credentials(response, credentials)) is not None:
                log.error("the answer carried a credential of the request; it was taken out "
                          "(a driver bug: please report it)")
                response = clean
            await stream.send_message(response)
        except asyncio.CancelledError:
            code, message = Status.CANCELLED, "cancelled by the caller or shutdown"
            raise
        except GRPCError as exc:
            code = exc.status
            message = clip_message(text_without(exc.message or "", credentials))
            raise GRPCError(code, message, exc.details) from None
        except Exception as exc:
            code, message = status_for(exc, request_id)
            message = clip_message(text_without(message, credentials))
            if code is Status.INTERNAL and not isinstance(exc, DriverError):
                log.exception("unexpected error")
            raise GRPCError(code, message) from None
        finally:
            self.tracker.leave()
            duration = time.monotonic() - started
            RPC_TOTAL.labels(method, code.name).inc()
            RPC_SECONDS.labels(method).observe(duration)
            fields: dict[str, Any] = {"code": code.name, "duration_ms": round(duration * 1000, 1)}
            if message:
                fields["error"] = message
            if code is Status.OK and method in _ROUTINE:
                log.debug("rpc", **fields)
            elif code in (Status.OK, Status.CANCELLED):
                log.info("rpc", **fields)
            else:
                log.warning("rpc", **fields)


def log_debug_enabled(log: Any) -> bool:
    is_enabled = getattr(log, "is_enabled_for", None)
    if is_enabled is None:
        return False
    return bool(is_enabled(10))


def servable(impl: object, base: type[Any]) -> Servable:
    """Wrap a service implementation for `grpclib.server.Server`."""
    return Servable(impl, base)
