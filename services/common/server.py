"""A grpclib server on a unix socket, with the lifecycle every process needs.

Start-up removes a stale socket left by a crash but refuses to take over a socket that a live
process still answers on. SIGTERM/SIGINT stop new calls (the socket file is removed first, so
no new connection can be made), let in-flight calls finish within a grace period, and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from grpclib.server import Server

from services.common.config import unix_socket_path
from services.common.logging import get_logger
from services.common.rpc import InFlight, Servable

_log = get_logger("server")


class StartupError(Exception):
    """The process cannot start; the message says why."""


async def socket_is_live(path: Path, timeout: float = 1.0) -> bool:
    """True when something accepts connections on the unix socket at `path`."""
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path)), timeout
        )
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except (TimeoutError, OSError):
        # A listener that does not accept in time is still somebody's socket.
        return True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _existing_socket(path: Path) -> bool:
    """Create the parent directory; True when a socket file is already at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() and not path.is_symlink():
        return False
    if not path.is_socket():
        raise StartupError(f"{path} exists and is not a socket; refusing to replace it")
    return True


async def prepare_socket_path(path: Path) -> None:
    """Create the parent directory and clear a stale socket; refuse a live one."""
    if not _existing_socket(path):
        return
    if await socket_is_live(path):
        raise StartupError(f"another process is already serving on {path}")
    _remove(path)
    _log.info("removed stale socket", path=str(path))


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


async def run_grpc_server(
    endpoint: str,
    servables: Sequence[Servable],
    *,
    on_start: Callable[[], Awaitable[None]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    grace: float = 10.0,
    socket_mode: int = 0o660,
    stop_event: asyncio.Event | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT (or `stop_event`); returns the process exit code."""
    path = unix_socket_path(endpoint)
    await prepare_socket_path(path)
    tracker = InFlight()
    for item in servables:
        item.tracker = tracker
    server = Server(list(servables))
    await server.start(path=str(path))
    os.chmod(path, socket_mode)
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _log.info("serving", endpoint=endpoint, services=[s.service for s in servables])
    try:
        if on_start is not None:
            await on_start()
        await stop.wait()
        _log.info("shutting down", in_flight=tracker.count, grace_s=grace)
        _remove(path)
        tracker.draining = True
        try:
            await asyncio.wait_for(tracker.wait_idle(), grace)
        except TimeoutError:
            _log.warning("grace period over; cancelling calls still running",
                         in_flight=tracker.count)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        server.close()
        await server.wait_closed()
        if on_stop is not None:
            await on_stop()
        _remove(path)
    _log.info("stopped")
    return 0
