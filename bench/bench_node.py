"""Node plugin benchmark against a real glusterd (prints numbers; asserts nothing).

    python bench/bench_node.py [--rounds 15] [--volumes 50] [--stats-calls 2000]

1. Stage + publish latency through a running `heketi-csi node` over gRPC, against a shell
   script doing the same `mount -t glusterfs` + `mkdir` + `mount --bind` (ratio; target <= 1.2).
2. NodeGetVolumeStats p50/p99 on a published volume (sequential, then 50 concurrent callers).
3. RSS of the node process when idle and after staging and publishing `--volumes` volumes.

Everything it mounts and every `hcsitest_` volume it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grpclib.client import Channel

from devtools import glusterd
from devtools.localcluster.processes import HEKETI_CSI, ManagedProcess, wait_ready
from services.common.proto import csi_grpc, csi_pb2

Cap = csi_pb2.VolumeCapability
CAP = Cap(
    mount=Cap.MountVolume(), access_mode=Cap.AccessMode(mode=Cap.AccessMode.MULTI_NODE_MULTI_WRITER)
)

SHELL_UP = """\
set -e
mount -t glusterfs -o log-file="$4",log-level=ERROR "$1" "$2"
mkdir -p "$3"
mount --bind "$2" "$3"
"""
SHELL_DOWN = """\
umount "$2"
rmdir "$2"
umount "$1"
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f} ms"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def sh(script: str, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", script, "sh", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    if proc.returncode:
        raise RuntimeError(f"shell failed: {out.decode(errors='replace')}")


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = tmp / "kubelet"
        self.root.mkdir()
        self.host = glusterd.hostname()
        self.volumes: list[str] = []
        self.stub: csi_grpc.NodeStub

    def staging(self, v: str) -> str:
        # kubelet's shape: the directory is named by the sha256 of the volume id.
        digest = hashlib.sha256(v.encode()).hexdigest()
        return f"{self.root}/plugins/kubernetes.io/csi/glusterfs.heketi.csi.io/{digest}/globalmount"

    def target(self, v: str, pod: str = "pod") -> str:
        return f"{self.root}/pods/{pod}-{v}/volumes/kubernetes.io~csi/pv/mount"

    async def make_volumes(self, count: int) -> list[str]:
        names = [f"hcsitest_b{uuid.uuid4().hex[:8]}" for _ in range(count)]
        self.volumes.extend(names)
        for i in range(0, count, 10):
            await asyncio.gather(
                *(glusterd.create_volume(n, self.tmp / "bricks") for n in names[i : i + 10])
            )
        return names

    async def up(self, v: str, pod: str = "pod") -> None:
        os.makedirs(os.path.dirname(self.target(v, pod)), exist_ok=True)
        await self.stub.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=v, staging_target_path=self.staging(v), volume_capability=CAP,
                volume_context={"volume": v, "hosts": self.host},
            ), timeout=60,
        )
        await self.stub.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=v, staging_target_path=self.staging(v), target_path=self.target(v, pod),
                volume_capability=CAP,
            ), timeout=60,
        )

    async def down(self, v: str, pod: str = "pod") -> None:
        await self.stub.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=v, target_path=self.target(v, pod)),
            timeout=60,
        )
        await self.stub.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(volume_id=v, staging_target_path=self.staging(v)),
            timeout=60,
        )


async def main(args: argparse.Namespace) -> None:
    glusterd.ensure_glusterd()
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp_name:
        tmp = Path(tmp_name)
        b = Bench(tmp)
        sock = tmp / "csi.sock"
        proc = ManagedProcess(
            "node",
            [*HEKETI_CSI, "node", "--endpoint", f"unix://{sock}", "--node-id", "bench",
             "--kubelet-root", str(b.root), "--gluster-log-dir", str(tmp / "logs"),
             "--repair-interval", "0", "--log-level", "warning", "--log-format", "json"],
            tmp / "node.log",
        )
        channel: Channel | None = None
        try:
            await proc.start()
            await wait_ready(proc, sock)
            channel = Channel(path=str(sock))
            b.stub = csi_grpc.NodeStub(channel)
            idle_rss = rss_kib(proc.pid)
            volumes = await b.make_volumes(max(args.volumes, 2))
            v = volumes[0]
            shell_staging = f"{tmp}/shell/{v}/globalmount"
            shell_target = f"{tmp}/shell/pod/{v}/mount"
            os.makedirs(shell_staging)
            os.makedirs(tmp / "logs", exist_ok=True)

            # 1. stage + publish latency, interleaved so both see the same conditions.
            driver, shell = [], []
            await b.up(v)  # warm-up of both paths (first mount loads the client's caches)
            await b.down(v)
            for _ in range(args.rounds):
                t = time.perf_counter()
                await b.up(v)
                driver.append(time.perf_counter() - t)
                await b.down(v)
                t = time.perf_counter()
                await sh(SHELL_UP, f"{b.host}:{v}", shell_staging, shell_target,
                         f"{tmp}/logs/shell.log")
                shell.append(time.perf_counter() - t)
                await sh(SHELL_DOWN, shell_staging, shell_target)
            d50, s50 = statistics.median(driver), statistics.median(shell)
            print(f"stage+publish  driver p50 {ms(d50)}  p90 {ms(pct(driver, 90))}")
            print(f"mount+bind     shell  p50 {ms(s50)}  p90 {ms(pct(shell, 90))}")
            print(
                f"ratio driver/shell (p50): {d50 / s50:.2f}  (target <= 1.2; {args.rounds} rounds)"
            )

            # 2. NodeGetVolumeStats latency.
            await b.up(v)
            req = csi_pb2.NodeGetVolumeStatsRequest(volume_id=v, volume_path=b.target(v))
            for _ in range(50):
                await b.stub.NodeGetVolumeStats(req)
            lat = []
            for _ in range(args.stats_calls):
                t = time.perf_counter()
                await b.stub.NodeGetVolumeStats(req)
                lat.append(time.perf_counter() - t)
            print(f"NodeGetVolumeStats sequential x{args.stats_calls}: "
                  f"p50 {ms(pct(lat, 50))}  p99 {ms(pct(lat, 99))}")

            async def timed() -> float:
                t = time.perf_counter()
                await b.stub.NodeGetVolumeStats(req)
                return time.perf_counter() - t

            conc: list[float] = []
            for _ in range(max(1, args.stats_calls // 50)):
                conc.extend(await asyncio.gather(*(timed() for _ in range(50))))
            print(f"NodeGetVolumeStats 50 concurrent callers x{len(conc)}: "
                  f"p50 {ms(pct(conc, 50))}  p99 {ms(pct(conc, 99))}")

            # 3. RSS with many volumes staged and published (10 at a time, as kubelet would).
            rest = volumes[1 : args.volumes]
            t = time.perf_counter()
            for i in range(0, len(rest), 10):
                await asyncio.gather(*(b.up(x) for x in rest[i : i + 10]))
            took = time.perf_counter() - t
            print(f"{len(rest) + 1} volumes staged+published ({len(rest)} in {took:.1f} s, "
                  f"10 concurrent)")
            print(f"node RSS idle {idle_rss / 1024:.1f} MiB; with {len(rest) + 1} volumes "
                  f"{rss_kib(proc.pid) / 1024:.1f} MiB")
            for i in range(0, len(rest), 10):
                await asyncio.gather(*(b.down(x) for x in rest[i : i + 10]))
            await b.down(v)
        finally:
            if channel is not None:
                channel.close()
            await proc.stop()
            await glusterd.cleanup_mounts_under(tmp)
            for i in range(0, len(b.volumes), 10):
                await asyncio.gather(*(glusterd.delete_volume(n) for n in b.volumes[i : i + 10]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--volumes", type=int, default=50)
    parser.add_argument("--stats-calls", type=int, default=2000)
    asyncio.run(main(parser.parse_args()))
