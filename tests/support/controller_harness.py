"""Helpers for tests that drive the controller process against the Heketi simulator."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from devtools.heketi_sim.server import HeketiSimulator
from devtools.localcluster.processes import HEKETI_CSI, ManagedProcess
from services.common.proto import csi_grpc, csi_pb2
from services.controller.ids import parse_owned_name

T = TypeVar("T")
GIB = 1 << 30
# random per run: a real Heketi the tests start listens on every address of the host
KEY = f"controller-test-{secrets.token_urlsafe(16)}"
NODE = "node-a"
MODE = csi_pb2.VolumeCapability.AccessMode


def cap(mode: int = MODE.MULTI_NODE_MULTI_WRITER) -> csi_pb2.VolumeCapability:
    return csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume(),
                                    access_mode=csi_pb2.VolumeCapability.AccessMode(mode=mode))


def create_request(name: str, gib: int = 1, **params: str) -> csi_pb2.CreateVolumeRequest:
    return csi_pb2.CreateVolumeRequest(
        name=name, capacity_range=csi_pb2.CapacityRange(required_bytes=gib * GIB),
        volume_capabilities=[cap()], parameters=params)


@dataclass
class Controller:
    proc: ManagedProcess
    socket: Path
    channel: Channel
    stub: csi_grpc.ControllerStub


def our_volumes(sim: HeketiSimulator) -> Counter[str]:
    """Heketi volume names of ours, counted (a name counted twice is a duplicate)."""
    return Counter(v.name for v in sim.visible_volumes() if parse_owned_name(v.name))


async def start_controller(tmp_path: Path, sim_url: str, name: str = "controller",
                           *extra: str) -> Controller:
    key_file = tmp_path / "heketi.key"
    key_file.write_text(KEY)
    sock = tmp_path / "ctl" / "csi.sock"
    proc = ManagedProcess(
        name,
        [*HEKETI_CSI, "controller", "--endpoint", f"unix://{sock}", "--heketi-url", sim_url,
         "--heketi-key-file", str(key_file), "--node-check", "static",
         "--static-node-ids", NODE, "--log-format", "json", "--log-level", "debug",
         # Their Heketi's bricks are bookkeeping (the mock executor, the simulator's memory
         # mode): no server to ask. Brick health runs on the pool, in test_server_down.py.
         "--brick-health-timeout", "0", *extra],
        tmp_path / f"{name}.log")
    await proc.start()
    channel = Channel(path=str(sock))
    return Controller(proc, sock, channel, csi_grpc.ControllerStub(channel))


async def retry_while(statuses: Collection[Status], call: Callable[[], Awaitable[T]],
                      timeout: float = 30.0) -> T:
    """`call()` retried, as a sidecar retries, while it fails with one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except GRPCError as exc:
            if exc.status not in statuses or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)
