"""The HTTP server of every process: /healthz for kubelet's livenessProbe, /metrics.

/healthz runs the process's own check on every request and answers its status and text. The
controller and the node check themselves the way the livenessprobe sidecar would (which we do
not ship): `csi_probe_check` calls Probe on the process's own CSI socket with a deadline, so a
missing socket, a gRPC server that no longer answers in time, or a plugin that says it is not
ready all answer 500. The registrar supplies checks of its own (services/registrar/health.py).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from services.common.config import add_flag
from services.common.errors import InvalidArgument
from services.common.logging import get_logger
from services.common.metrics import metrics_handler
from services.common.proto import csi_grpc, csi_pb2
from services.common.server import StartupError

_log = get_logger("health")

# Deadline of the call(s) a health check makes: inside kubelet's default probe timeout (1 s).
CHECK_TIMEOUT = 0.8

# A check answers the HTTP status and the text /healthz sends.
HealthCheck = Callable[[], Awaitable[tuple[int, str]]]


def parse_http_endpoint(value: str) -> tuple[str | None, int]:
    """`:9809` -> (None, 9809) meaning all addresses; `127.0.0.1:9809`, `[::1]:9809`."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidArgument(
            f"--http-endpoint {value!r} must be host:port or :port with a port 1-65535")
    host = host.removeprefix("[").removesuffix("]")
    return (host or None), int(port_text)


def add_http_endpoint_flag(parser: argparse.ArgumentParser) -> None:
    """--http-endpoint of the controller and node processes."""
    add_flag(parser, "--http-endpoint", env="HTTP_ENDPOINT", default="",
             help="host:port for the HTTP server with /healthz (Probe on this process's own "
                  "CSI socket: 200 when ready, else 500) and /metrics, e.g. :9808 (all "
                  "addresses) or 127.0.0.1:9808; empty turns it off")


async def start_http_server(endpoint: str, check: HealthCheck) -> web.AppRunner:
    """Serve /healthz (answered by `check`) and /metrics on `endpoint`; raises OSError when
    the address cannot be bound. The caller cleans up the returned runner."""
    host, port = parse_http_endpoint(endpoint)

    async def healthz(_request: web.Request) -> web.Response:
        status, text = await check()
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


async def serve_health(endpoint: str, check: HealthCheck) -> web.AppRunner | None:
    """`start_http_server` for a process's --http-endpoint: None when it is empty, a
    StartupError naming the flag when the address cannot be served."""
    if not endpoint:
        return None
    try:
        return await start_http_server(endpoint, check)
    except OSError as exc:
        raise StartupError(f"cannot serve --http-endpoint {endpoint}: {exc}") from None


async def csi_probe(path: Path, timeout: float = CHECK_TIMEOUT) -> tuple[int, str]:
    """Probe on the CSI socket at `path`, as the livenessprobe sidecar does: 200 `ok` when
    ready, else 500 and why."""
    channel = Channel(path=str(path))
    try:
        reply = await asyncio.wait_for(
            csi_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=timeout),
            timeout,
        )
    except GRPCError as exc:
        return 500, f"Probe on {path} failed: {exc.status.name} {exc.message or ''}".rstrip()
    except TimeoutError:
        return 500, f"Probe on {path} did not answer within {timeout:g} s"
    except (OSError, StreamTerminatedError) as exc:
        return 500, f"Probe on {path} failed: {type(exc).__name__}: {exc}"
    finally:
        channel.close()
    # An unset `ready` means ready (CSI spec).
    if reply.HasField("ready") and not reply.ready.value:
        return 500, "driver responded but is not ready"
    return 200, "ok"


def csi_probe_check(path: Path, timeout: float = CHECK_TIMEOUT) -> HealthCheck:
    """The /healthz check of a CSI process serving on `path`."""

    async def check() -> tuple[int, str]:
        return await csi_probe(path, timeout)

    return check
