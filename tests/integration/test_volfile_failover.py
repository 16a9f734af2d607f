"""NodeStage on the real GlusterFS pool (`gpvol`, 10.231.6.0/24) while the first volfile server
is partitioned (link down, silent): the real NodeService and SystemMounter ask the servers'
glusterd first and mount from one that answered, within a few seconds instead of gluster's
~45 s connect timeout; the log names the skipped server."""

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
from services.common.keyed_operations import KeyedOperations
from services.common.proto import csi_pb2
from services.common.rpc import RpcContext
from services.node import mountinfo
from services.node.fsstat import FsProbe
from services.node.mounter import SystemMounter
from services.node.repair import Repairer
from services.node.service import NodeConfig, NodeService
from services.node.state import StateStore
from services.node.volfile_servers import TIMED_OUT, VolfileProber

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


def _ctx() -> RpcContext:
    return RpcContext(method="NodeStageVolume", request_id="r1",
                      log=structlog.get_logger("test"))


async def test_stage_with_the_first_server_partitioned(pool: GlusterPool, tmp_path: Path) -> None:
    node = _node(tmp_path)
    digest = hashlib.sha256(b"id-vf").hexdigest()
    staging = f"{tmp_path}/kubelet/plugins/kubernetes.io/csi/{DRIVER}/{digest}/globalmount"
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
