"""The registrar process: wait for the driver, serve the registration socket, keep it alive.

1. Serve /healthz and /metrics (when --http-endpoint is set): 404 until registered.
2. Wait for the node plugin's CSI socket to answer GetPluginInfo; its name is the driver
   name (checked against --driver-name when given). Give up after --wait-timeout: exit 1.
3. Serve pluginregistration.Registration on <registration dir>/<driver>-reg.sock. Kubelet
   finds it, asks GetInfo, calls the plugin's NodeGetInfo, and reports its verdict.
4. Re-create the socket whenever it disappears. SIGTERM removes it and exits 0; a rejected
   registration is answered, then the socket is removed and the process exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
from pathlib import Path

from aiohttp import web

from services.common.config import unix_socket_path
from services.common.logging import get_logger
from services.common.proto.pluginregistration import api_grpc
from services.common.rpc import servable
from services.common.server import StartupError
from services.registrar.driver import wait_for_driver
from services.registrar.health import HealthState, start_http_server
from services.registrar.listener import RegistrationSocket
from services.registrar.service import RegistrationService

_log = get_logger("registrar")

# Registration calls are instant; this only bounds a stuck one at shutdown.
SHUTDOWN_GRACE = 5.0
# CSI driver names are DNS-like (CSI spec: at most 63 characters); the name becomes a file
# name here, so anything else is refused rather than joined into a path.
_DRIVER_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?")


def registration_socket_path(registration_dir: Path, driver: str) -> Path:
    """`<dir>/<driver>-reg.sock`, the name kubelet's plugin watcher expects."""
    if not _DRIVER_NAME.fullmatch(driver):
        raise StartupError(f"driver name {driver!r} is not a valid CSI driver name")
    return registration_dir / f"{driver}-reg.sock"


async def serve(args: argparse.Namespace) -> int:
    csi_path = unix_socket_path(args.csi_address)
    host_endpoint = str(unix_socket_path(args.kubelet_registration_path))
    registration_dir = Path(args.plugin_registration_dir)
    stop = asyncio.Event()
    rejected: list[str] = []

    def on_rejected(error: str) -> None:
        rejected.append(error)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    state = HealthState(csi_path)
    runner: web.AppRunner | None = None
    listener: RegistrationSocket | None = None
    watcher: asyncio.Task[None] | None = None
    try:
        if args.http_endpoint:
            try:
                runner = await start_http_server(args.http_endpoint, state)
            except OSError as exc:
                raise StartupError(
                    f"cannot serve --http-endpoint {args.http_endpoint}: {exc}") from None
        name = await wait_for_driver(csi_path, args.wait_timeout, stop)
        if name is None:
            _log.info("stopped while waiting for the CSI driver")
            return 0
        if args.driver_name and name != args.driver_name:
            raise StartupError(
                f"the CSI driver at {csi_path} calls itself {name!r}, but --driver-name "
                f"(CSI_DRIVER_NAME) is {args.driver_name!r}; point --csi-address at the "
                "right driver or fix the name")
        path = registration_socket_path(registration_dir, name)
        service = RegistrationService(name, host_endpoint, on_rejected)
        listener = RegistrationSocket(path, [servable(service, api_grpc.RegistrationBase)])
        await listener.open()
        state.driver_name, state.registration = name, listener
        watcher = asyncio.create_task(listener.watch(args.socket_check_interval))
        _log.info("waiting for kubelet to register the plugin", driver=name,
                  registration_socket=str(path), endpoint=host_endpoint)
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if listener is not None:
            await listener.close(SHUTDOWN_GRACE)
        if runner is not None:
            await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if rejected:
        _log.error("stopped after kubelet rejected the registration", kubelet_error=rejected[0])
        return 1
    _log.info("stopped; registration socket removed")
    return 0
