"""The registrar's HTTP server: /healthz for kubelet's livenessProbe, /metrics for Prometheus.

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

from services.common.errors import InvalidArgument
from services.common.logging import get_logger
from services.common.metrics import metrics_handler
from services.common.proto.pluginregistration import api_grpc, api_pb2
from services.registrar.driver import NoAnswer, driver_name
from services.registrar.listener import RegistrationSocket

_log = get_logger("registrar.health")

# Deadline of each gRPC call a health check makes; both calls run at once, so /healthz
# answers within about this long, inside kubelet's default probe timeout of 1 s.
CHECK_TIMEOUT = 0.8


def parse_http_endpoint(value: str) -> tuple[str | None, int]:
    """`:9809` -> (None, 9809) meaning all addresses; `127.0.0.1:9809`, `[::1]:9809`."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidArgument(
            f"--http-endpoint {value!r} must be host:port or :port with a port 1-65535")
    host = host.removeprefix("[").removesuffix("]")
    return (host or None), int(port_text)


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
    """Serve /healthz and /metrics on `endpoint`; the caller cleans up the returned runner."""
    host, port = parse_http_endpoint(endpoint)

    async def healthz(_request: web.Request) -> web.Response:
        status, text = await check(state)
        if status != 200:
            _log.warning("health check failed", status=status, reason=text.strip())
        return web.Response(status=status, text=text)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    _log.info("serving /healthz and /metrics", http_endpoint=endpoint)
    return runner
