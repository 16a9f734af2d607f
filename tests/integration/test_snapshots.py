"""Snapshots, restore and clone through the controller process, against the simulator."""

from __future__ import annotations

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from devtools.localcluster.processes import wait_ready
from services.common.proto import csi_pb2
from services.controller.ids import Kind, parse_owned_name
from tests.support.controller_harness import GIB, KEY, create_request, our_volumes, start_controller


def snapshot_request(name: str, source: str) -> csi_pb2.CreateSnapshotRequest:
    return csi_pb2.CreateSnapshotRequest(name=name, source_volume_id=source)


def from_snapshot(name: str, snapshot_id: str, gib: int = 1) -> csi_pb2.CreateVolumeRequest:
    request = create_request(name, gib)
    request.volume_content_source.snapshot.snapshot_id = snapshot_id
    return request


def from_volume(name: str, volume_id: str, gib: int = 1) -> csi_pb2.CreateVolumeRequest:
    request = create_request(name, gib)
    request.volume_content_source.volume.volume_id = volume_id
    return request


async def test_snapshot_is_idempotent_and_listed_and_survives_restart(tmp_path, ctl, sim):
    source = (await ctl.stub.CreateVolume(create_request("pvc-src", 2))).volume.volume_id
    first = (await ctl.stub.CreateSnapshot(snapshot_request("snap-1", source))).snapshot
    again = (await ctl.stub.CreateSnapshot(snapshot_request("snap-1", source))).snapshot
    assert first == again
    assert first.ready_to_use and first.size_bytes == 2 * GIB
    assert first.source_volume_id == source
    assert first.creation_time.seconds > 0

    other = (await ctl.stub.CreateVolume(create_request("pvc-other"))).volume.volume_id
    with pytest.raises(GRPCError) as err:
        await ctl.stub.CreateSnapshot(snapshot_request("snap-1", other))
    assert err.value.status is Status.ALREADY_EXISTS

    listed = await ctl.stub.ListSnapshots(csi_pb2.ListSnapshotsRequest())
    assert [e.snapshot.snapshot_id for e in listed.entries] == [first.snapshot_id]
    by_source = await ctl.stub.ListSnapshots(csi_pb2.ListSnapshotsRequest(source_volume_id=other))
    assert not by_source.entries
    by_id = await ctl.stub.ListSnapshots(
        csi_pb2.ListSnapshotsRequest(snapshot_id=first.snapshot_id))
    assert [e.snapshot for e in by_id.entries] == [first]

    # Snapshot volumes are not volumes.
    volumes = await ctl.stub.ListVolumes(csi_pb2.ListVolumesRequest())
    assert {e.volume.volume_id for e in volumes.entries} == {source, other}
    with pytest.raises(GRPCError) as err:
        await ctl.stub.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
            volume_id=first.snapshot_id,
            capacity_range=csi_pb2.CapacityRange(required_bytes=5 * GIB)))
    assert err.value.status is Status.NOT_FOUND

    # A new controller reads the same snapshot back from Heketi's data alone.
    await ctl.proc.stop()
    ctl.channel.close()
    second = await start_controller(tmp_path, sim.url, "second")
    try:
        await wait_ready(second.proc, second.socket)
        relisted = await second.stub.ListSnapshots(csi_pb2.ListSnapshotsRequest())
        assert [e.snapshot for e in relisted.entries] == [first]
    finally:
        second.channel.close()
        await second.proc.stop()


async def test_unknown_source_and_missing_fields(ctl, sim):
    cases = [
        (snapshot_request("s", "hv1:default:" + "0" * 32), Status.NOT_FOUND),
        (snapshot_request("s", "garbage"), Status.NOT_FOUND),
        (snapshot_request("", "x"), Status.INVALID_ARGUMENT),
        (snapshot_request("s", ""), Status.INVALID_ARGUMENT),
    ]
    for request, status in cases:
        with pytest.raises(GRPCError) as err:
            await ctl.stub.CreateSnapshot(request)
        assert err.value.status is status


async def test_restore_and_clone_make_independent_volumes(ctl, sim):
    source = (await ctl.stub.CreateVolume(create_request("pvc-orig", 2))).volume.volume_id
    snap = (await ctl.stub.CreateSnapshot(snapshot_request("snap-r", source))).snapshot

    restored = (await ctl.stub.CreateVolume(from_snapshot("pvc-restored", snap.snapshot_id, 3)))
    assert restored.volume.capacity_bytes == 3 * GIB
    assert restored.volume.content_source.snapshot.snapshot_id == snap.snapshot_id
    again = await ctl.stub.CreateVolume(from_snapshot("pvc-restored", snap.snapshot_id, 3))
    assert again.volume.volume_id == restored.volume.volume_id

    clone = (await ctl.stub.CreateVolume(from_volume("pvc-clone", source, 2))).volume
    assert clone.content_source.volume.volume_id == source
    assert clone.volume_id not in (source, restored.volume.volume_id)

    with pytest.raises(GRPCError) as err:
        await ctl.stub.CreateVolume(from_snapshot("pvc-small", snap.snapshot_id, 1))
    assert err.value.status is Status.OUT_OF_RANGE

    counts = our_volumes(sim)
    assert set(counts.values()) == {1}
    kinds = sorted(parse_owned_name(n).kind.value for n in counts)  # type: ignore[union-attr]
    assert kinds == sorted([Kind.VOLUME.value] * 3 + [Kind.SNAPSHOT.value])

    # DeleteVolume never deletes a snapshot's Heketi volume, even when its id is forged.
    with pytest.raises(GRPCError) as err:
        await ctl.stub.DeleteVolume(csi_pb2.DeleteVolumeRequest(
            volume_id=snap.snapshot_id.replace("hs1:", "hv1:")))
    assert err.value.status is Status.FAILED_PRECONDITION
    # Deleting the source leaves snapshot and clones; deleting the snapshot is idempotent.
    await ctl.stub.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=source))
    await ctl.stub.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    await ctl.stub.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    assert len(our_volumes(sim)) == 2


async def test_volume_without_gluster_snapshots_cannot_be_snapshotted(ctl, sim):
    from services.controller.heketi import HeketiClient, VolumeCreateRequest
    from services.controller.ids import volume_name

    # A volume of ours whose Heketi record has snapshots disabled (made before this driver
    # enabled them, or by hand): Heketi's clone would fail, the driver says why first.
    async with HeketiClient(sim.url, "admin", KEY) as client:
        info = await client.create_volume(
            VolumeCreateRequest(size_gib=1, name=volume_name("pvc-nosnap")))
    with pytest.raises(GRPCError) as err:
        await ctl.stub.CreateSnapshot(snapshot_request("snap-x", f"hv1:default:{info.id}"))
    assert err.value.status is Status.FAILED_PRECONDITION
    assert "snapshots" in (err.value.message or "")


async def test_clone_with_other_layout_is_refused_before_anything_is_made(ctl, sim):
    source = (await ctl.stub.CreateVolume(create_request("pvc-layout", 1))).volume.volume_id
    before = our_volumes(sim)
    request = from_volume("pvc-layout-clone", source, 1)
    request.parameters["volumetype"] = "replicate:2"
    with pytest.raises(GRPCError) as err:
        await ctl.stub.CreateVolume(request)
    assert err.value.status is Status.INVALID_ARGUMENT
    assert "replicate:3" in (err.value.message or "")
    assert our_volumes(sim) == before


async def test_a_retry_with_another_content_source_is_already_exists(tmp_path, ctl, sim):
    source = (await ctl.stub.CreateVolume(create_request("pvc-cs-src"))).volume.volume_id
    other = (await ctl.stub.CreateVolume(create_request("pvc-cs-other"))).volume.volume_id
    snap = (await ctl.stub.CreateSnapshot(snapshot_request("snap-cs", source))).snapshot
    restored = (await ctl.stub.CreateVolume(from_snapshot("pvc-cs", snap.snapshot_id))).volume
    plain = (await ctl.stub.CreateVolume(create_request("pvc-cs-plain"))).volume
    before = our_volumes(sim)
    incompatible = [
        from_volume("pvc-cs", source),  # the same name, now "cloned from the volume"
        from_volume("pvc-cs", other),
        create_request("pvc-cs"),  # the same name, no source at all
        from_snapshot("pvc-cs-plain", snap.snapshot_id),  # a plain volume, now "restored"
    ]
    for request in incompatible:
        with pytest.raises(GRPCError) as err:
            await ctl.stub.CreateVolume(request)
        assert err.value.status is Status.ALREADY_EXISTS, request
        assert "content source" in (err.value.message or "")
    assert our_volumes(sim) == before
    # The compatible retries still answer with the volumes, also from a new controller.
    await ctl.proc.stop()
    ctl.channel.close()
    second = await start_controller(tmp_path, sim.url, "second")
    try:
        await wait_ready(second.proc, second.socket)
        again = await second.stub.CreateVolume(from_snapshot("pvc-cs", snap.snapshot_id))
        assert again.volume.volume_id == restored.volume_id
        again = await second.stub.CreateVolume(create_request("pvc-cs-plain"))
        assert again.volume.volume_id == plain.volume_id
        with pytest.raises(GRPCError) as err:
            await second.stub.CreateVolume(from_volume("pvc-cs", other))
        assert err.value.status is Status.ALREADY_EXISTS
    finally:
        second.channel.close()
        await second.proc.stop()
