"""The registrar's health checks, served at /healthz by the shared HTTP server
(services/common/health.py) beside /metrics.

/healthz answers 404 while the registration socket is missing (not created yet, or removed
and not yet re-created), 500 when GetInfo over that socket fails or names another driver or
when the driver's own socket does not answer GetPluginInfo with the same name, else 200 `ok`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from services.common import health
from services.common.health import CHECK_TIMEOUT
from services.common.health import parse_http_endpoint as parse_http_endpoint
from services.common.proto.pluginregistration import api_grpc, api_pb2
from services.registrar.driver import NoAnswer, driver_name
from services.registrar.listener import RegistrationSocket


@dataclass
class HealthState:
    """What the checks look at; filled in once the driver has answered."""

    csi_path: Path
    driver_name: str | None = None
    registration: RegistrationSocket | None = None


async def registration_name(path: Path, timeout: float) -> str:
    """The driver name GetInfo answers on the registration socket at `path`."""
    channel = Channel(path=str(path))
    try:
        reply = await asyncio.wait_for(
            api_grpc.RegistrationStub(channel).GetInfo(api_pb2.InfoRequest(), timeout=timeout),
            timeout,
        )
    except GRPCError as exc:
        raise NoAnswer(f"GetInfo failed: {exc.status.name} {exc.message or ''}") from None
    except TimeoutError:
        raise NoAnswer(f"GetInfo did not answer within {timeout:g} s") from None
    except (OSError, StreamTerminatedError) as exc:
        raise NoAnswer(f"GetInfo failed: {type(exc).__name__}: {exc}") from None
    finally:
        channel.close()
    return reply.name


async def check(state: HealthState, timeout: float = CHECK_TIMEOUT) -> tuple[int, str]:
    """The HTTP status and text /healthz answers."""
    registration = state.registration
    if registration is None or state.driver_name is None:
        return 404, f"registration socket not created yet: waiting for {state.csi_path}\n"
    if not registration.present():
        return 404, f"registration socket {registration.path} is missing\n"
    expected = state.driver_name

    async def via_registration() -> str | None:
        try:
            name = await registration_name(registration.path, timeout)
        except NoAnswer as exc:
            return f"registration socket {registration.path}: {exc}"
        if name != expected:
            return f"registration socket {registration.path} names driver {name!r}, " \
                   f"expected {expected!r}"
        return None

    async def via_driver() -> str | None:
        try:
            name = await driver_name(state.csi_path, timeout)
        except NoAnswer as exc:
            return f"driver socket {state.csi_path}: {exc}"
        if name != expected:
            return f"driver socket {state.csi_path} names driver {name!r}, expected {expected!r}"
        return None

    problems = [p for p in await asyncio.gather(via_registration(), via_driver()) if p]
    if problems:
        return 500, "".join(p + "\n" for p in problems)
    return 200, "ok"


async def start_http_server(endpoint: str, state: HealthState) -> web.AppRunner:
    """Serve /healthz (the checks above) and /metrics on `endpoint`; raises OSError when the
    address cannot be bound. The caller cleans up the returned runner."""

    async def registrar_check() -> tuple[int, str]:
        return await check(state)

    return await health.start_http_server(endpoint, registrar_check)
