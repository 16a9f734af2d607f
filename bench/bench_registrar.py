"""Registrar benchmark: memory after registration and time from node-ready to registered.

Each run starts the registrar first (it waits for the driver, as in a DaemonSet pod whose
containers start together), then the node plugin (`heketi-csi node`). Measured from the
moment the node plugin's socket first answers GetPluginInfo:
  - socket: until the registrar's registration socket exists;
  - registered: until the kubelet simulator has registered the driver (GetInfo,
    NodeGetInfo, NotifyRegistrationStatus done). The simulator polls every 10 ms here,
    standing in for kubelet's inotify-based watcher.
Then the registrar's VmRSS is read from /proc.

    python -m bench.bench_registrar [--runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `services` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.kubelet_sim import KubeletSimulator
from devtools.localcluster.processes import HEKETI_CSI, ManagedProcess
from services.common.config import DEFAULT_DRIVER_NAME as DRIVER
from services.common.logging import configure_logging
from services.registrar.driver import NoAnswer, driver_name

NODE_ID = "bench-node"


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _exists(path: Path) -> bool:
    return os.path.exists(path)  # a local directory: a stat does not block


async def _until_answers(csi: Path) -> float:
    """Poll tightly until the driver answers; return the moment it first did."""
    while True:
        if _exists(csi):
            try:
                await driver_name(csi, 1.0)
                return time.monotonic()
            except NoAnswer:
                pass
        await asyncio.sleep(0.001)


async def _until_exists(path: Path) -> float:
    while True:
        if _exists(path):
            return time.monotonic()
        await asyncio.sleep(0.001)


async def one_run(root: Path) -> tuple[float, float, int]:
    csi = root / "plugins" / DRIVER / "csi.sock"
    reg_dir = root / "registry"
    reg_sock = reg_dir / f"{DRIVER}-reg.sock"
    csi.parent.mkdir(parents=True)
    procs: list[ManagedProcess] = []
    try:
        registrar = ManagedProcess(
            "registrar",
            [*HEKETI_CSI, "registrar", "--csi-address", f"unix://{csi}",
             "--kubelet-registration-path", str(csi), "--plugin-registration-dir",
             str(reg_dir), "--log-format", "json"],
            root / "registrar.log")
        procs.append(await registrar.start())
        async with KubeletSimulator(reg_dir, poll_interval=0.01) as sim:
            while "waiting for the CSI driver" not in registrar.log_text():
                if not registrar.running:
                    raise RuntimeError(registrar.log_text())
                await asyncio.sleep(0.01)
            # The node comes up at a random moment of the registrar's polling cycle.
            await asyncio.sleep(random.uniform(0.2, 1.2))
            sock_seen = asyncio.create_task(_until_exists(reg_sock))
            ready_seen = asyncio.create_task(_until_answers(csi))
            node = ManagedProcess(
                "node",
                [*HEKETI_CSI, "node", "--endpoint", f"unix://{csi}", "--node-id", NODE_ID,
                 "--kubelet-root", str(root / "kubelet"),
                 "--gluster-log-dir", str(root / "glusterlog"), "--log-format", "json"],
                root / "node.log")
            procs.append(await node.start())
            ready_at = await asyncio.wait_for(ready_seen, 30)
            await sim.wait_registered(DRIVER, 30)
            registered_at = next(e.at for e in sim.events if e.kind == "registered")
            for event in sim.events:
                if event.kind != "registered":
                    print(f"  (kubelet simulator: {event.as_dict()})")
            socket_at = await asyncio.wait_for(sock_seen, 1)
            await asyncio.sleep(0.2)  # let the registrar settle before reading its memory
            rss = vm_rss_kib(registrar.pid)
            assert await registrar.stop() == 0
        return socket_at - ready_at, registered_at - ready_at, rss
    finally:
        for proc in procs:
            await proc.kill()


async def main(runs: int) -> None:
    configure_logging("warning", "console")
    print(f"registrar + heketi-csi node + kubelet simulator, {runs} runs")
    sockets, registrations, rss = [], [], []
    for i in range(runs):
        root = Path(tempfile.mkdtemp(prefix="hcsi-bench-", dir="/tmp"))
        try:
            s, r, m = await one_run(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        sockets.append(s * 1000)
        registrations.append(r * 1000)
        rss.append(m / 1024)
        print(f"run {i + 1}: node ready -> registration socket {s * 1000:7.1f} ms, "
              f"-> registered {r * 1000:7.1f} ms; registrar VmRSS {m / 1024:5.1f} MiB")

    def summary(values: list[float]) -> str:
        return (f"median {statistics.median(values):.1f}, min {min(values):.1f}, "
                f"max {max(values):.1f}")

    print(f"node ready -> registration socket (ms): {summary(sockets)}")
    print(f"node ready -> registered (ms):          {summary(registrations)}")
    print(f"registrar VmRSS after registration (MiB): {summary(rss)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10)
    asyncio.run(main(parser.parse_args().runs))
