"""A clone's source is hidden by Heketi while the clone runs: another clone, restore, snapshot
or delete of it is ABORTED (retry later), never NOT_FOUND, whether the clone is the
controller's own or someone else's; a source that does not exist is still NOT_FOUND.

The controller process runs against the in-process simulator, which hides a clone's source
from `GET /volumes/{id}` (but lists it in `GET /volumes`) as Heketi v10 does; `sim.hold`
keeps the first clone pending until the test releases it.
"""

from __future__ import annotations

import asyncio

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from services.common.proto import csi_pb2
from services.controller.heketi import HeketiClient
from tests.integration.test_snapshots import from_snapshot, from_volume, snapshot_request
from tests.support.conditions import pending_operations, until
from tests.support.controller_harness import KEY, NODE, cap, create_request, retry_while

MISSING = "hv1:default:" + "0" * 32


async def _status(call: object) -> GRPCError:
    with pytest.raises(GRPCError) as err:
        await call  # type: ignore[misc]
    return err.value


async def test_a_second_clone_of_a_source_our_clone_holds_is_aborted(ctl, sim):
    source = (await ctl.stub.CreateVolume(create_request("pvc-src"))).volume.volume_id
    release = sim.hold("clone")
    first = asyncio.create_task(ctl.stub.CreateVolume(from_volume("pvc-clone-1", source)))
    await until(lambda: pending_operations(sim, "clone") == 1, "the first clone is pending")

    second = await _status(ctl.stub.CreateVolume(from_volume("pvc-clone-2", source)))
    assert second.status is Status.ABORTED, second
    assert "in progress" in (second.message or "") and "pvc-clone-1" in (second.message or "")
    deleting = await _status(ctl.stub.DeleteVolume(
        csi_pb2.DeleteVolumeRequest(volume_id=source)))
    assert deleting.status is Status.ABORTED, deleting
    missing = await _status(ctl.stub.CreateVolume(from_volume("pvc-clone-3", MISSING)))
    assert missing.status is Status.NOT_FOUND, missing

    release.set()
    assert (await first).volume.content_source.volume.volume_id == source
    again = await retry_while({Status.ABORTED},
                              lambda: ctl.stub.CreateVolume(from_volume("pvc-clone-2", source)))
    assert again.volume.content_source.volume.volume_id == source
    assert pending_operations(sim, "clone") == 0


async def test_a_source_hidden_by_a_clone_not_ours_is_aborted_not_not_found(ctl, sim):
    source = (await ctl.stub.CreateVolume(create_request("pvc-src"))).volume.volume_id
    heketi_id = source.rsplit(":", 1)[-1]
    release = sim.hold("clone")
    async with HeketiClient(sim.url, key=KEY) as other:  # e.g. heketi-cli volume clone
        foreign = asyncio.create_task(other.clone_volume(heketi_id, "copy_by_hand"))
        await until(lambda: pending_operations(sim, "clone") == 1, "the other clone is pending")

        clone = await _status(ctl.stub.CreateVolume(from_volume("pvc-clone", source)))
        assert clone.status is Status.ABORTED, clone
        assert "operation in progress" in (clone.message or ""), clone.message
        snap = await _status(ctl.stub.CreateSnapshot(snapshot_request("snap-1", source)))
        assert snap.status is Status.ABORTED, snap
        # Not "already gone": the volume exists, so a delete must wait, not succeed.
        deleting = await _status(ctl.stub.DeleteVolume(
            csi_pb2.DeleteVolumeRequest(volume_id=source)))
        assert deleting.status is Status.ABORTED, deleting
        # A pod can start meanwhile: publish answers from the index.
        published = await ctl.stub.ControllerPublishVolume(
            csi_pb2.ControllerPublishVolumeRequest(volume_id=source, node_id=NODE,
                                                   volume_capability=cap()))
        assert published.publish_context["volume"]
        missing = await _status(ctl.stub.CreateVolume(from_volume("pvc-other", MISSING)))
        assert missing.status is Status.NOT_FOUND, missing

        release.set()
        copy = await foreign
        made = await retry_while({Status.ABORTED},
                                 lambda: ctl.stub.CreateVolume(from_volume("pvc-clone", source)))
        assert made.volume.content_source.volume.volume_id == source
        await other.delete_volume(copy.id)
    assert heketi_id in {v.id for v in sim.visible_volumes()}, "the source was never deleted"


async def test_a_restore_while_another_restore_of_the_snapshot_runs_is_aborted(ctl, sim):
    source = (await ctl.stub.CreateVolume(create_request("pvc-src"))).volume.volume_id
    snapshot = (await ctl.stub.CreateSnapshot(snapshot_request("snap-1", source))).snapshot
    release = sim.hold("clone")
    first = asyncio.create_task(
        ctl.stub.CreateVolume(from_snapshot("pvc-restore-1", snapshot.snapshot_id)))
    await until(lambda: pending_operations(sim, "clone") == 1, "the first restore is pending")

    second = await _status(
        ctl.stub.CreateVolume(from_snapshot("pvc-restore-2", snapshot.snapshot_id)))
    assert second.status is Status.ABORTED, second
    deleting = await _status(ctl.stub.DeleteSnapshot(
        csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id)))
    assert deleting.status is Status.ABORTED, deleting
    missing = await _status(
        ctl.stub.CreateVolume(from_snapshot("pvc-restore-3", "hs1:default:" + "0" * 32)))
    assert missing.status is Status.NOT_FOUND, missing

    release.set()
    await first
    again = await retry_while(
        {Status.ABORTED},
        lambda: ctl.stub.CreateVolume(from_snapshot("pvc-restore-2", snapshot.snapshot_id)))
    assert again.volume.content_source.snapshot.snapshot_id == snapshot.snapshot_id
