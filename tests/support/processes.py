"""Start and stop the driver's processes (and other helpers) as real subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from grpclib.client import Channel

from services.common.proto import csi_grpc, csi_pb2

HEKETI_CSI = [sys.executable, "-m", "services.cli"]


class ManagedProcess:
    """A child process whose output goes to a log file; stopped (and reaped) by `stop()`."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL,
                env=self.env, start_new_session=True,
            )
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the process and wait; SIGKILL it when it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def probe(socket: Path, timeout: float = 2.0) -> bool:
    """True when the CSI Identity service on `socket` answers Probe with ready."""
    channel = Channel(path=str(socket))
    try:
        reply = await csi_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(),
                                                           timeout=timeout)
        return reply.ready.value
    except Exception:  # any failure (refused, timeout, gRPC error) means not ready
        return False
    finally:
        channel.close()


def _exists(path: Path) -> bool:
    return path.exists()


async def wait_for_path(path: Path, timeout: float = 5.0) -> None:
    """Wait until `path` exists (a socket a server is about to create)."""
    deadline = time.monotonic() + timeout
    while not _exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        await asyncio.sleep(0.02)


async def wait_ready(proc: ManagedProcess, socket: Path, timeout: float = 30.0,
                     need_ready: bool = True) -> None:
    """Wait until `socket` answers Probe (ready, unless need_ready is False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.running:
            raise RuntimeError(f"{proc.name} exited with {proc.proc and proc.proc.returncode}:"
                               f"\n{proc.log_text()[-3000:]}")
        if _exists(socket):
            if not need_ready:
                return
            if await probe(socket):
                return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{proc.name} not ready on {socket} after {timeout} s:\n"
                       f"{proc.log_text()[-3000:]}")
