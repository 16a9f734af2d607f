"""Asking the node plugin who it is: GetPluginInfo over its CSI socket, once or until it answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from services.common.logging import get_logger
from services.common.proto import csi_grpc, csi_pb2
from services.common.server import StartupError

_log = get_logger("registrar.driver")

# Between attempts while the socket exists but does not answer: doubles up to the cap.
FIRST_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 1.0
# While the socket file does not exist yet, looking again is just a stat: stay quick.
MISSING_SOCKET_POLL = 0.1
# How often a still-waiting registrar says so at info level.
WAITING_LOG_EVERY = 10.0
# Deadline of one GetPluginInfo call during start-up.
CALL_TIMEOUT = 5.0


class NoAnswer(Exception):
    """A socket did not answer a call (in time, or at all); the message says how."""


async def driver_name(path: Path, timeout: float) -> str:
    """The name GetPluginInfo answers on the CSI socket at `path`, within `timeout` seconds."""
    channel = Channel(path=str(path))
    try:
        reply = await asyncio.wait_for(
            csi_grpc.IdentityStub(channel).GetPluginInfo(
                csi_pb2.GetPluginInfoRequest(), timeout=timeout),
            timeout,
        )
    except FileNotFoundError:
        raise NoAnswer("socket does not exist") from None
    except ConnectionRefusedError:
        raise NoAnswer("connection refused") from None
    except GRPCError as exc:
        raise NoAnswer(
            f"GetPluginInfo failed: {exc.status.name} {exc.message or ''}".rstrip()) from None
    except TimeoutError:
        raise NoAnswer(f"GetPluginInfo did not answer within {timeout:g} s") from None
    except (OSError, StreamTerminatedError) as exc:
        raise NoAnswer(f"{type(exc).__name__}: {exc}") from None
    finally:
        channel.close()
    if not reply.name:
        raise NoAnswer("GetPluginInfo answered an empty driver name")
    return reply.name


def _exists(path: Path) -> bool:
    # A stat in a local directory (the plugin's socket dir), not on a network mount.
    return os.path.exists(path)


async def wait_for_driver(path: Path, wait_timeout: float, stop: asyncio.Event) -> str | None:
    """Wait until the driver at `path` answers GetPluginInfo; return its name.

    Returns None when `stop` is set first (SIGTERM while waiting). Raises StartupError when
    the driver has not answered within `wait_timeout` seconds.
    """
    started = time.monotonic()
    deadline = started + wait_timeout
    delay = FIRST_RETRY_DELAY
    last_reason = ""
    last_logged = 0.0
    while not stop.is_set():
        now = time.monotonic()
        if now >= deadline:
            raise StartupError(
                f"the CSI driver socket {path} did not answer GetPluginInfo within "
                f"{wait_timeout:g} s (last: {last_reason}); is the node plugin running?")
        if not _exists(path):
            reason, pause = "socket does not exist", MISSING_SOCKET_POLL
        else:
            try:
                name = await driver_name(path, min(CALL_TIMEOUT, deadline - now))
            except NoAnswer as exc:
                reason, pause = str(exc), delay
                delay = min(delay * 2, MAX_RETRY_DELAY)
            else:
                _log.info("driver answered", csi_address=str(path), driver=name,
                          waited_s=round(time.monotonic() - started, 3))
                return name
        now = time.monotonic()
        if reason != last_reason or now - last_logged >= WAITING_LOG_EVERY:
            _log.info("waiting for the CSI driver", csi_address=str(path), reason=reason,
                      waited_s=round(now - started, 1),
                      gives_up_in_s=round(deadline - now, 1))
            last_reason, last_logged = reason, now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(pause, max(0.0, deadline - now)))
    return None
