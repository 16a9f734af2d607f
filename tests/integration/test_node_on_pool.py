"""The real NodeService and SystemMounter on the real GlusterFS pool (`gpvol`, 10.231.6.0/24)
while its servers fail:

- NodeStage while the first volfile server is partitioned (link down, silent): the node asks
  the servers' glusterd first and mounts from one that answered, within a few seconds instead
  of gluster's ~45 s connect timeout; the log names the skipped server;
- NodeGetVolumeStats while servers are powered off (`pool_faults`, `make test-pool`): one down
  is "degraded" naming its brick, with the usage; two down (client quorum lost, writes fail)
  is abnormal naming both, within 2 s of the first failed write; healthy again once they are
  back, with the writer going on in the same mount."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from devtools.gluster_pool import GlusterPool, PoolConfig
from devtools.gluster_pool.writer_log import Writer
from services.common.keyed_operations import KeyedOperations
from services.common.proto import csi_pb2
from services.common.rpc import RpcContext
from services.node import mountinfo
from services.node.client_bricks import DUMP_DIR
from services.node.fsstat import FsProbe
from services.node.mounter import SystemMounter
from services.node.repair import Repairer
from services.node.service import NodeConfig, NodeService
from services.node.state import StateStore
from services.node.volfile_servers import TIMED_OUT, VolfileProber
from tests.support.conditions import until

pytestmark = [pytest.mark.gluster]

DRIVER = "glusterfs.heketi.csi.io"
Cap = csi_pb2.VolumeCapability
RW = Cap(mount=Cap.MountVolume(),
         access_mode=Cap.AccessMode(mode=Cap.AccessMode.MULTI_NODE_MULTI_WRITER))
STAGE_DEADLINE = 5.0  # the target: NodeStage with the first server's link down


@pytest.fixture(scope="module")
def pool() -> Iterator[GlusterPool]:
    mine = GlusterPool(PoolConfig(name="gpvol", subnet="10.231.6"), log=print)
    asyncio.run(mine.down())
    try:
        asyncio.run(mine.up())
        asyncio.run(mine.volume_create("vf", "replica",
                                       options={"network.ping-timeout": "5"}))
    except Exception:
        asyncio.run(mine.down())
        raise
    yield mine
    assert asyncio.run(mine.down()) == []


def _node(tmp: Path) -> NodeService:
    root = tmp / "kubelet"
    config = NodeConfig(node_id="n1", driver_name=DRIVER, kubelet_root=str(root),
                        gluster_log_dir=str(tmp / "logs"), mount_timeout=90)
    mounter = SystemMounter(scratch=tmp / "scratch")
    store = StateStore(root / "plugins" / DRIVER / "state")
    probe = FsProbe(2.0, mounter.usage)
    locks = KeyedOperations()
    repairer = Repairer(mounter, store, probe, locks, str(root), 90)
    return NodeService(config, mounter, store, probe, locks, repairer,
                       volfile=VolfileProber(1.0))


def _ctx(method: str = "NodeStageVolume") -> RpcContext:
    return RpcContext(method=method, request_id="r1", log=structlog.get_logger("test"))


def _staging(tmp_path: Path, volume_id: str) -> str:
    digest = hashlib.sha256(volume_id.encode()).hexdigest()
    return f"{tmp_path}/kubelet/plugins/kubernetes.io/csi/{DRIVER}/{digest}/globalmount"


async def test_stage_with_the_first_server_partitioned(pool: GlusterPool, tmp_path: Path) -> None:
    node = _node(tmp_path)
    staging = _staging(tmp_path, "id-vf")
    hosts = ",".join(pool.address(i) for i in pool.indexes)  # server 1 first
    await pool.partition(1)
    try:
        with capture_logs() as logs:
            started = time.monotonic()
            await node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
                volume_id="id-vf", staging_target_path=staging, volume_capability=RW,
                volume_context={"volume": "vf", "hosts": hosts}), _ctx())
            took = time.monotonic() - started
        print(f"[volfile] NodeStage with server 1 partitioned: {took:.2f} s")
        try:
            assert took <= STAGE_DEADLINE
            mount = mountinfo.mount_at(mountinfo.read(), staging)
            assert mount is not None and mount.source.startswith(f"{pool.address(2)}:")
            skipped = [e for e in logs if "skipped" in e["event"]]
            assert skipped and skipped[0]["skipped"] == [f"{pool.address(1)}: {TIMED_OUT}"]
            await asyncio.to_thread(Path(staging, "f").write_text, "written\n")
            assert await asyncio.to_thread(Path(staging, "f").read_text) == "written\n"
        finally:
            await node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
                volume_id="id-vf", staging_target_path=staging), _ctx())
        assert mountinfo.mount_at(mountinfo.read(), staging) is None
    finally:
        await pool.restore(1)
        await node.repairer.close()


async def _condition(node: NodeService, staging: str) -> csi_pb2.NodeGetVolumeStatsResponse:
    return await node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
        volume_id="id-vb", volume_path=staging), _ctx("NodeGetVolumeStats"))


@pytest.mark.pool_faults
async def test_stats_name_the_bricks_the_client_cannot_reach(
        pool: GlusterPool, tmp_path: Path) -> None:
    node = _node(tmp_path)
    staging = _staging(tmp_path, "id-vb")
    hosts = ",".join(pool.address(i) for i in pool.indexes)
    brick = {i: f"{pool.address(i)}:{pool.brick_path(i, 'vf')}" for i in pool.indexes}
    await node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
        volume_id="id-vb", staging_target_path=staging, volume_capability=RW,
        volume_context={"volume": "vf", "hosts": hosts}), _ctx())
    seen: list[csi_pb2.NodeGetVolumeStatsResponse] = []

    async def reports(*wanted: str) -> bool:
        seen.append(await _condition(node, staging))
        return all(w in seen[-1].volume_condition.message for w in wanted)

    try:
        healthy = await _condition(node, staging)
        assert not healthy.volume_condition.abnormal and healthy.usage
        async with Writer(Path(staging, "bricks.txt"), tmp_path / "writer.log") as writer:
            await until(lambda: len(writer.acked()) >= 10, "10 writes acknowledged")
            killed = time.time()
            await pool.kill(3)
            await until(lambda: reports("degraded: 1 of 3", brick[3]),
                        "stats say degraded, naming server 3's brick", timeout=60)
            print(f"[bricks] degraded reported {time.time() - killed:.2f} s after power-off")
            assert seen[-1].volume_condition.abnormal and seen[-1].usage
            assert brick[1] not in seen[-1].volume_condition.message
            await pool.kill(2)
            await until(lambda: bool(writer.errors()), "a write failed (quorum lost)", 60)
            failed = min(a.start + a.seconds for a in writer.errors())
            await until(lambda: reports("reaches only 1 of 3", brick[2], brick[3]),
                        "stats say quorum lost, naming both bricks", timeout=30)
            reported = time.time()
            print(f"[bricks] quorum loss reported {reported - failed:.2f} s after the "
                  f"first failed write: {seen[-1].volume_condition.message}")
            assert reported - failed <= 2.0
            assert seen[-1].volume_condition.abnormal and not seen[-1].usage
            await pool.start(2)
            await pool.start(3)
            back = time.time()
            await until(lambda: reports("volume is healthy"), "stats healthy again", 90)
            healthy_at = time.time()
            print(f"[bricks] healthy {healthy_at - back:.2f} s after both servers started")
            await until(lambda: writer.oks_after(healthy_at) > 0, "the writer went on", 60)
        assert {a.error for a in writer.errors()} == {"ENOTCONN"}
    finally:
        await node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
            volume_id="id-vb", staging_target_path=staging), _ctx("NodeUnstageVolume"))
        for i in pool.indexes:
            if pool.state.server(i).status in ("off", "stopped"):
                await pool.start(i)
        await node.repairer.close()
    assert mountinfo.mount_at(mountinfo.read(), staging) is None
    left = await asyncio.to_thread(lambda: list(DUMP_DIR.glob("glusterdump.*")))
    assert left == [], "a statedump was left"
