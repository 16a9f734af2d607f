"""The controller's volume lifecycle while a GlusterFS server of the pool is down.

A real pool (devtools/gluster_pool, "gplife"), the Heketi simulator in pool mode with its
node health monitor checking every 0.5 s (Heketi checks every 120 s: the window before it
notices is the same, only shorter), and the controller process:

* a DeleteVolume while a server is stopped is UNAVAILABLE (retryable) with gluster's reason,
  changes nothing, and succeeds once the server is back, leaving nothing in Heketi or gluster;
* a replica 3 CreateVolume while one of three servers is partitioned is RESOURCE_EXHAUSTED
  with Heketi's reason once Heketi knows the server is down, makes nothing, and succeeds
  once the server is back;
* ControllerGetVolume and ListVolumes say which bricks are down and why (a brick process
  killed, a server stopped, a server partitioned), degraded or quorum lost, within about
  the brick-health deadline; healthy again once they are back.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import yaml
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from devtools.gluster_pool import GlusterPool, PoolConfig
from devtools.gluster_pool.gluster import cli_xml
from devtools.gluster_pool.processes import processes_named, signal_all, wait_gone
from devtools.heketi_sim import HeketiSimulator
from devtools.heketi_sim.latency import INSTANT
from devtools.localcluster.processes import wait_ready
from services.common.proto import csi_pb2
from tests.support.conditions import until
from tests.support.controller_harness import (
    KEY,
    Controller,
    create_request,
    our_volumes,
    retry_while,
    start_controller,
)

pytestmark = [pytest.mark.gluster]

POOL = PoolConfig(name="gplife", subnet="10.231.3")
EXAMPLE_CLASS = Path(__file__).parents[2] / "k8s/examples/classes/storageclass-replica3.yaml"


@pytest.fixture(scope="module")
def pool() -> Iterator[GlusterPool]:
    mine = GlusterPool(POOL, log=print)
    asyncio.run(mine.down())
    try:
        asyncio.run(mine.up())
    except Exception:
        asyncio.run(mine.down())
        raise
    yield mine
    assert asyncio.run(mine.down()) == []


@pytest.fixture
async def sim(pool: GlusterPool) -> AsyncIterator[HeketiSimulator]:
    """Overrides the conftest's `sim`, so its `ctl` talks to this one."""
    async with HeketiSimulator(op_latency=INSTANT, admin_key=KEY, gluster_pool=POOL.name,
                               health_start=0, health_interval=0.5) as simulator:
        await until(lambda: all(n.up for n in simulator.topology.nodes.values()),
                    "the health monitor found every server up")
        yield simulator
    pool.reload()
    assert [fs for i in pool.indexes for fs in pool.state.server(i).filesystems] == []


async def _gluster_volumes(pool: GlusterPool) -> list[str]:
    root = await pool.gluster("volume", "list")
    return [v.text or "" for v in root.iterfind("volList/volume")]


def _peers_see_down(pool: GlusterPool, viewer: int,
                    down: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return pool.address(down) not in await pool.connected_peers(viewer)
    return check


def _known_down(sim: HeketiSimulator, address: str) -> bool:
    return any(n.storage == address and n.up is False for n in sim.topology.nodes.values())


@pytest.mark.parametrize("noticed", [True, False], ids=["noticed", "just-stopped"])
async def test_a_delete_while_a_server_is_down_is_retryable_and_completes_after_it_returns(
        pool: GlusterPool, sim: HeketiSimulator, ctl: Controller, noticed: bool) -> None:
    made = await ctl.stub.CreateVolume(create_request("pvc-down-del", 1, volumetype="replicate:3"))
    request = csi_pb2.DeleteVolumeRequest(volume_id=made.volume.volume_id)
    [name] = our_volumes(sim)
    await pool.stop(3)
    try:
        if noticed:
            # down for a while, as users meet it: its peers and Heketi know it is gone
            await until(lambda: _known_down(sim, pool.address(3)),
                        "Heketi's health check found server 3 down")
            await until(_peers_see_down(pool, 1, 3), "server 1 sees server 3 disconnected")
        with pytest.raises(GRPCError) as refused:
            await ctl.stub.DeleteVolume(request)
        assert refused.value.status is Status.UNAVAILABLE, refused.value
        said = refused.value.message or ""
        assert f"Unable to delete volume {name}" in said, said
        # `Some of the peers are down`; in the first instant, before the peers noticed,
        # gluster may say `Commit failed on <server 3>` instead (seen here)
        reasons = ["Some of the peers are down"]
        if not noticed:
            reasons.append(f"Commit failed on {pool.address(3)}")
        assert any(reason in said for reason in reasons), said
        assert our_volumes(sim) == {name: 1}
    finally:
        await pool.start(3)
    # as the provisioner does: retry while UNAVAILABLE (gluster may refuse for a few seconds
    # while the returning server's glusterd catches up)
    await retry_while({Status.UNAVAILABLE}, lambda: ctl.stub.DeleteVolume(request), timeout=60)
    assert not our_volumes(sim)
    # gone on every server, the returning one included, and it stays gone
    for index in pool.indexes:
        await until(_volume_gone(pool, index, name), f"volume {name} gone on server {index}",
                    timeout=30)


def _volume_gone(pool: GlusterPool, index: int, name: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        root = await cli_xml(pool.server_pid(index), "volume", "list")
        return name not in [v.text or "" for v in root.iterfind("volList/volume")]
    return check


async def test_a_create_needing_a_down_server_is_refused_with_heketis_reason_until_it_returns(
        pool: GlusterPool, sim: HeketiSimulator, ctl: Controller) -> None:
    address = pool.address(2)
    await pool.partition(2)
    try:
        await until(lambda: _known_down(sim, address), "Heketi's health check found server 2 down")
        with pytest.raises(GRPCError) as refused:
            await ctl.stub.CreateVolume(
                create_request("pvc-down-new", 1, volumetype="replicate:3"))
        assert refused.value.status is Status.RESOURCE_EXHAUSTED, refused.value
        assert "Failed to allocate new volume: No space" in (refused.value.message or "")
        assert not our_volumes(sim)
        assert not [v for v in await _gluster_volumes(pool) if v]
    finally:
        await pool.restore(2)
    await until(lambda: not _known_down(sim, address), "Heketi's health check found server 2 up")
    made = await ctl.stub.CreateVolume(create_request("pvc-down-new", 1, volumetype="replicate:3"))
    real = await pool.volume_info(next(iter(our_volumes(sim))))
    assert real.replica == 3 and len({b.host for b in real.bricks}) == 3
    await ctl.stub.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=made.volume.volume_id))
    assert not our_volumes(sim)


async def test_the_example_replica_3_class_makes_the_volume_it_promises(
        pool: GlusterPool, sim: HeketiSimulator, ctl: Controller) -> None:
    """k8s/examples/classes/storageclass-replica3.yaml: replica 3 on three servers, with
    client quorum, server quorum and a 10 s ping-timeout really set on the gluster volume."""
    params = yaml.safe_load(EXAMPLE_CLASS.read_text())["parameters"]
    wanted = {k: v for k, v in params.items() if k in ("volumetype", "volumeoptions")}
    made = await ctl.stub.CreateVolume(create_request("pvc-example-r3", 1, **wanted))
    try:
        real = await pool.volume_info(next(iter(our_volumes(sim))))
        assert real.type == "Replicate" and real.replica == 3
        assert len({b.host for b in real.bricks}) == 3
        assert {k: real.options.get(k) for k in ("cluster.quorum-type",
                                                  "cluster.server-quorum-type",
                                                  "network.ping-timeout")} == {
            "cluster.quorum-type": "auto", "cluster.server-quorum-type": "server",
            "network.ping-timeout": "10"}
    finally:
        await ctl.stub.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=made.volume.volume_id))
    assert not our_volumes(sim)


@pytest.fixture
async def ctl_bricks(tmp_path: Path, sim: HeketiSimulator) -> AsyncIterator[Controller]:
    """A controller that asks the bricks (the harness turns that off for storage-free tests)."""
    controller = await start_controller(tmp_path, sim.url, "controller",
                                        "--brick-health-timeout", "1")
    try:
        await wait_ready(controller.proc, controller.socket)
        yield controller
    finally:
        controller.channel.close()
        await controller.proc.stop()


async def test_the_volume_condition_names_the_bricks_that_are_down(
        pool: GlusterPool, sim: HeketiSimulator, ctl_bricks: Controller) -> None:
    ctl = ctl_bricks
    made = await ctl.stub.CreateVolume(create_request("pvc-bricks", 1, volumetype="replicate:3"))
    vid = made.volume.volume_id
    [name] = our_volumes(sim)
    brick = {i: f"{pool.address(i)}:{pool.fs_dir(i, b.id)}/brick"
             for i in pool.indexes for b in sim.topology.bricks.values()
             if sim.topology.nodes[b.node_id].storage == pool.address(i)}
    took: list[float] = []
    last: list[str] = []

    async def condition() -> csi_pb2.VolumeCondition:
        started = time.monotonic()
        got = await ctl.stub.ControllerGetVolume(csi_pb2.ControllerGetVolumeRequest(volume_id=vid))
        took.append(time.monotonic() - started)
        listed = await ctl.stub.ListVolumes(csi_pb2.ListVolumesRequest())
        [entry] = [e for e in listed.entries if e.volume.volume_id == vid]
        assert entry.status.volume_condition.abnormal == got.status.volume_condition.abnormal
        return got.status.volume_condition

    def says(*words: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            message = (await condition()).message
            last[:] = [message]
            return all(w in message for w in words)
        return check

    try:
        assert await condition() == csi_pb2.VolumeCondition(
            abnormal=False, message="all 3 bricks are up")
        # the brick process of server 1 dies; its glusterd lives
        server = pool.state.server(1)
        assert server.pid_ns is not None
        bricks = processes_named(server.pid_ns, "glusterfsd")
        await signal_all(bricks, signal.SIGKILL)
        await wait_gone(bricks, 10.0)
        await until(says("degraded: 1 of 3 bricks down", brick[1]),
                    "server 1's dead brick process reported", timeout=30)
        await pool.stop(3)
        await until(says("quorum lost: 2 of 3 bricks down", brick[1], brick[3]),
                    "quorum lost with server 3 stopped", timeout=30)
        await pool.partition(2)
        await until(says("quorum lost: 3 of 3 bricks down", brick[2]),
                    "server 2 partitioned reported", timeout=30)
        print(f"[bricks] ControllerGetVolume with a server partitioned took {took[-1]:.2f} s: "
              f"{(await condition()).message}")
        assert took[-1] < 2.0
    finally:
        for i in pool.indexes:
            status = pool.state.server(i).status
            if status == "partitioned":
                await pool.restore(i)
            elif status in ("off", "stopped"):
                await pool.start(i)
    await pool.gluster("volume", "start", name, "force")  # the killed brick process again
    try:
        await until(says("all 3 bricks are up"), "every brick back", timeout=60)
    finally:
        print(f"[bricks] last: {last}")
    await retry_while({Status.UNAVAILABLE}, lambda: ctl.stub.DeleteVolume(
        csi_pb2.DeleteVolumeRequest(volume_id=vid)), timeout=60)
    assert not our_volumes(sim)
