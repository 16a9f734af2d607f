"""Start, watch and stop the driver's processes (and other helpers) as real subprocesses,
and wait until they are ready (a socket answering Probe, an HTTP URL, a log line)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket as socketlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from grpclib.client import Channel

from services.common.proto import csi_grpc, csi_pb2

HEKETI_CSI = [sys.executable, "-m", "services.cli"]
READY_TIMEOUT = 60.0



async def terminate(proc: asyncio.subprocess.Process, timeout: float,
                    sig: int = signal.SIGTERM) -> int:
    """Send `sig` to a running `proc` and wait for it; SIGKILL it when it has not exited within
    `timeout`. Its exit code."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode

class ClusterError(RuntimeError):
    """The cluster could not start (the message carries the failing process's log tail)."""


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
        return await terminate(self.proc, timeout, sig)

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


def free_port() -> int:
    with socketlib.socket(socketlib.AF_INET, socketlib.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(proc: ManagedProcess, chars: int = 3000) -> str:
    text = proc.log_text()[-chars:]
    return f"--- last lines of {proc.log_path} ---\n{text}" if text else \
        f"--- {proc.log_path} is empty ---"


async def wait_http(proc: ManagedProcess, url: str, timeout: float = READY_TIMEOUT) -> None:
    """Wait until GET `url` answers 200 (while `proc` keeps running)."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if not proc.running:
                raise ClusterError(f"{proc.name} exited with {proc.proc and proc.proc.returncode}"
                                   f"\n{log_tail(proc)}")
            try:
                async with session.get(url) as reply:
                    if reply.status == 200:
                        return
                    last = f"HTTP {reply.status}: {(await reply.text())[:200]}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.1)
    raise ClusterError(f"{proc.name}: {url} not ready after {timeout:.0f} s ({last})\n"
                       f"{log_tail(proc)}")


async def wait_log_line(proc: ManagedProcess, predicate: Callable[[str], bool],
                        what: str, timeout: float = READY_TIMEOUT) -> str:
    """Wait until a line of `proc`'s log satisfies `predicate`; return that line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in proc.log_text().splitlines():
            if predicate(line):
                return line
        if not proc.running:
            raise ClusterError(f"{proc.name} exited with {proc.proc and proc.proc.returncode} "
                               f"before {what}\n{log_tail(proc)}")
        await asyncio.sleep(0.05)
    raise ClusterError(f"{proc.name}: no {what} after {timeout:.0f} s\n{log_tail(proc)}")


def json_line(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
