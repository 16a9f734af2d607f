"""NodeStage time with the first volfile server up, its glusterd dead (stopped), powered off
and partitioned, before (no probe: Heketi's order) and after (`volfile_servers`, 1 s).

    python bench/bench_volfile.py

On a pool of its own (`gpvol`, 10.231.6.0/24) with a replica 3 volume, through the real
NodeService and SystemMounter (a kubelet root in a temporary directory). Prints numbers,
asserts nothing; the pool is removed at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog

from devtools.gluster_pool import GlusterPool, PoolConfig
from services.common.keyed_operations import KeyedOperations
from services.common.proto import csi_pb2
from services.common.rpc import RpcContext
from services.node.fsstat import FsProbe
from services.node.mounter import SystemMounter
from services.node.repair import Repairer
from services.node.service import NodeConfig, NodeService
from services.node.state import StateStore
from services.node.volfile_servers import VolfileProber

DRIVER = "glusterfs.heketi.csi.io"
Cap = csi_pb2.VolumeCapability
RW = Cap(mount=Cap.MountVolume(),
         access_mode=Cap.AccessMode(mode=Cap.AccessMode.MULTI_NODE_MULTI_WRITER))


def node(work: Path, probe: bool) -> NodeService:
    root = work / "kubelet"
    config = NodeConfig(node_id="n1", driver_name=DRIVER, kubelet_root=str(root),
                        gluster_log_dir=str(work / "logs"), mount_timeout=120)
    mounter = SystemMounter(scratch=work / "scratch")
    store = StateStore(root / "plugins" / DRIVER / "state")
    fs = FsProbe(2.0, mounter.usage)
    locks = KeyedOperations()
    return NodeService(config, mounter, store, fs, locks,
                       Repairer(mounter, store, fs, locks, str(root), 120),
                       volfile=VolfileProber(1.0) if probe else None)


async def stage_time(service: NodeService, work: Path, hosts: str, tag: str) -> float:
    ctx = RpcContext(method="bench", request_id=tag, log=structlog.get_logger("bench"))
    digest = hashlib.sha256(tag.encode()).hexdigest()
    staging = f"{work}/kubelet/plugins/kubernetes.io/csi/{DRIVER}/{digest}/globalmount"
    started = time.monotonic()
    await service.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
        volume_id=tag, staging_target_path=staging, volume_capability=RW,
        volume_context={"volume": "bench", "hosts": hosts}), ctx)
    took = time.monotonic() - started
    await service.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
        volume_id=tag, staging_target_path=staging), ctx)
    return took


async def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    pool = GlusterPool(PoolConfig(name="gpvol", subnet="10.231.6"), log=lambda _: None)
    await pool.down()
    try:
        await pool.up()
        await pool.volume_create("bench", "replica", options={"network.ping-timeout": "5"})
        hosts = ",".join(pool.address(i) for i in pool.indexes)
        faults: list[tuple[str, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]]
        faults = [
            ("up", lambda: asyncio.sleep(0), lambda: asyncio.sleep(0)),
            ("glusterd dead (stopped)", lambda: pool.stop(1), lambda: pool.start(1)),
            ("powered off", lambda: pool.kill(1), lambda: pool.start(1)),
            ("partitioned", lambda: pool.partition(1), lambda: pool.restore(1)),
        ]
        with tempfile.TemporaryDirectory(prefix="bench-volfile-") as tmp:
            work = Path(tmp)
            for name, down, up in faults:
                await down()
                try:
                    times = [await stage_time(node(work, probe), work, hosts,
                                              f"{'after' if probe else 'before'}-{n}")
                             for n, probe in enumerate((False, True))]
                finally:
                    await up()
                    await pool.wait_connected(pool.indexes)
                print(f"first server {name}: NodeStage before {times[0]:.2f} s, "
                      f"after {times[1]:.2f} s", flush=True)
    finally:
        print("pool left:", await pool.down())


if __name__ == "__main__":
    asyncio.run(main())
