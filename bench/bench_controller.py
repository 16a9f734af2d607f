"""Controller benchmarks: a burst of creates, requests per create, index build, retry storm.

Each scenario starts the real controller process against the Heketi simulator (in this
process, over HTTP) and prints what it measured. Numbers, not assertions.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

from grpclib.client import Channel
from grpclib.exceptions import GRPCError

from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.server import HeketiSimulator
from devtools.localcluster.processes import HEKETI_CSI, ManagedProcess, wait_ready
from services.common.logging import configure_logging
from services.common.proto import csi_grpc, csi_pb2
from services.controller.heketi import HeketiClient, VolumeCreateRequest
from services.controller.ids import parse_owned_name

KEY = "bench-admin-key"
GIB = 1 << 30


def _request(name: str) -> csi_pb2.CreateVolumeRequest:
    return csi_pb2.CreateVolumeRequest(
        name=name, capacity_range=csi_pb2.CapacityRange(required_bytes=GIB),
        volume_capabilities=[csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(),
            access_mode=csi_pb2.VolumeCapability.AccessMode(
                mode=csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER))])


class _Controller:
    def __init__(self, base: Path, url: str, *extra: str) -> None:
        (base / "key").write_text(KEY)
        self.socket = base / "csi.sock"
        self.proc = ManagedProcess("controller", [
            *HEKETI_CSI, "controller", "--endpoint", f"unix://{self.socket}",
            "--heketi-url", url, "--heketi-key-file", str(base / "key"),
            "--node-check", "none", "--log-format", "json", *extra], base / "controller.log")
        self.channel = Channel(path=str(self.socket))
        self.stub = csi_grpc.ControllerStub(self.channel)

    async def __aenter__(self) -> _Controller:
        await self.proc.start()
        await wait_ready(self.proc, self.socket, timeout=120)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.channel.close()
        await self.proc.stop()


def _ours(sim: HeketiSimulator) -> Counter[str]:
    return Counter(v.name for v in sim.visible_volumes() if parse_owned_name(v.name))


async def burst(count: int = 200, latency: float = 1.0, limit: int = 8) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with HeketiSimulator(op_latency=INSTANT, admin_key=KEY, max_inflight=limit) as sim, \
                _Controller(Path(tmp), sim.url, "--heketi-max-inflight", str(limit)) as ctl:
            sim.set_latency(latency, "create")
            started = time.monotonic()
            results = await asyncio.gather(
                *(ctl.stub.CreateVolume(_request(f"pvc-burst-{i}"), timeout=600)
                  for i in range(count)), return_exceptions=True)
            wall = time.monotonic() - started
            failed = [r for r in results if isinstance(r, BaseException)]
            ideal = count / limit * latency
            counts = _ours(sim)
            print(f"burst: {count} concurrent CreateVolume, Heketi {latency:g} s/op, limit {limit}")
            print(f"  wall {wall:.2f} s, ideal {ideal:.2f} s, ratio {wall / ideal:.3f} "
                  "(target <= 1.15)")
            print(f"  errors to callers: {len(failed)}; 429 answered by Heketi: "
                  f"{sim.stats.throttled}; Heketi volumes: {sum(counts.values())} "
                  f"({len(counts)} names, max {max(counts.values(), default=0)} per name)")


async def requests_per_create(existing: int = 1000, creates: int = 20) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with HeketiSimulator(op_latency=INSTANT, admin_key=KEY, devices_per_node=8,
                                   clusters=2) as sim:
            async with HeketiClient(sim.url, "admin", KEY, max_inflight=64) as client:
                await asyncio.gather(*(
                    client.create_volume(VolumeCreateRequest(size_gib=1, name=f"other_{i}"))
                    for i in range(existing)))
            sim.stats.request_counts.clear()
            started = time.monotonic()
            async with _Controller(Path(tmp), sim.url) as ctl:
                build = time.monotonic() - started
                build_requests = sum(sim.stats.request_counts.values())
                sim.stats.request_counts.clear()
                for i in range(creates):
                    await ctl.stub.CreateVolume(_request(f"pvc-count-{i}"))
                per = sim.stats.request_counts
                total = sum(per.values())
            print(f"requests per CreateVolume with {existing} existing volumes:")
            print(f"  {total / creates:.1f} Heketi requests per create "
                  f"({', '.join(f'{k}: {v / creates:.1f}' for k, v in sorted(per.items()))})")
            print(f"  cold start to ready (index of {existing} volumes): {build:.2f} s, "
                  f"{build_requests} requests")


async def retry_storm(latency: float = 5.0, deadline: float = 1.0, names: int = 5) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with HeketiSimulator(op_latency=INSTANT, admin_key=KEY) as sim, \
                _Controller(Path(tmp), sim.url) as ctl:
            sim.set_latency(latency, "create")

            async def caller(name: str) -> tuple[float, int]:
                started = time.monotonic()
                attempts = 0
                while True:
                    attempts += 1
                    tried = time.monotonic()
                    try:
                        await ctl.stub.CreateVolume(_request(name), timeout=deadline)
                        return time.monotonic() - started, attempts
                    except (GRPCError, TimeoutError):
                        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tried)))

            outcomes = await asyncio.gather(*(caller(f"pvc-storm-{i}") for i in range(names)))
            counts = _ours(sim)
            times = sorted(t for t, _ in outcomes)
            print(f"retry storm: deadline {deadline:g} s, Heketi {latency:g} s/op, "
                  f"{names} names retried every second")
            print(f"  Heketi volumes per name: {sorted(set(counts.values()))}; creates started "
                  f"in Heketi: {sim.stats.ops_started['create']}")
            print(f"  time to success: min {times[0]:.2f} s, max {times[-1]:.2f} s; attempts "
                  f"{[a for _, a in outcomes]}")


async def _main() -> None:
    await burst()
    await requests_per_create()
    await retry_storm()


def main() -> None:
    configure_logging("warning", "console")
    asyncio.run(_main())


if __name__ == "__main__":
    main()
