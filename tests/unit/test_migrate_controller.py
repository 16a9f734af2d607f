"""What the controller does with volumes it did not create: adopted in-tree volumes are
published, expanded, snapshotted, cloned and deleted only with a valid adoption mark, and
no GID of any volume on the Heketi is handed out again.

The controller service runs in-process against the in-memory Heketi simulator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import structlog

from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.server import HeketiSimulator
from services.common.errors import FailedPrecondition, NotFound
from services.common.proto import csi_pb2
from services.common.rpc import RpcContext
from services.controller.backends import BackendConfig, BackendRegistry, ClientSettings
from services.controller.heketi import (
    Durability,
    HeketiClient,
    HeketiNotFound,
    Snapshot,
    VolumeCreateRequest,
)
from services.controller.ids import (
    MAX_ID_BYTES,
    Kind,
    ObjectRef,
    adoption_mark,
    backend_token_for_url,
    make_ref,
    parse_ref,
)
from services.controller.nodes import AnyNode
from services.controller.service import ControllerService
from tests.support.controller_harness import GIB, cap, create_request

KEY = "migrate-test-admin-key"
HID = "0123456789abcdef0123456789abcdef"


def ctx() -> RpcContext:
    return RpcContext(method="test", request_id="r1", log=structlog.get_logger("test"))


# --- the adopted id format -----------------------------------------------------------------
def test_adopted_ids_round_trip_say_adopted_and_fit_in_128_bytes() -> None:
    for backend in ("default", "b" * 40, backend_token_for_url("http://10.0.0.1:8080")):
        ref = make_ref(Kind.VOLUME, backend, HID, adoption_mark(KEY, HID))
        encoded = ref.encode()
        assert encoded.startswith("ha1:") and len(encoded) <= MAX_ID_BYTES
        assert parse_ref(encoded, Kind.VOLUME) == ref and ref.adopted


def test_the_mark_depends_on_key_and_volume() -> None:
    other = "f" * 32
    assert adoption_mark(KEY, HID) != adoption_mark("another key", HID)
    assert adoption_mark(KEY, HID) != adoption_mark(KEY, other)
    assert adoption_mark(None, HID) == adoption_mark("", HID)


def test_malformed_adopted_ids_are_not_found() -> None:
    mark = adoption_mark(KEY, HID)
    for junk in (f"ha1:default:{HID}", f"ha1:default:{HID}:{mark}:x", f"ha1:default:{HID}:XYZ",
                 f"ha2:default:{HID}:{mark}", f"hv1:default:{HID}:{mark}"):
        with pytest.raises(NotFound):
            parse_ref(junk, Kind.VOLUME)
    with pytest.raises(NotFound):  # never a snapshot id
        parse_ref(f"ha1:default:{HID}:{mark}", Kind.SNAPSHOT)


# --- the controller with adopted volumes -----------------------------------------------------
@dataclass
class Rig:
    sim: HeketiSimulator
    heketi: HeketiClient
    service: ControllerService

    async def intree_volume(self, gid: int, name: str | None = None) -> str:
        """A volume as the in-tree provisioner made it: `vol_<id>` (or the given name)."""
        info = await self.heketi.create_volume(VolumeCreateRequest(
            size_gib=1, name=name, durability=Durability.replicate(3), gid=gid,
            snapshot=Snapshot(enable=True, factor=1.0)))
        return info.id

    async def exists(self, heketi_id: str) -> bool:
        try:
            await self.heketi.volume_info(heketi_id)
        except HeketiNotFound:
            return False
        return True


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with HeketiSimulator(op_latency=INSTANT, admin_key=KEY) as sim, \
            HeketiClient(sim.url, "admin", KEY) as heketi:
        registry = BackendRegistry([BackendConfig("default", sim.url, key=KEY)],
                                   ClientSettings())
        try:
            yield Rig(sim, heketi, ControllerService(registry, AnyNode()))
        finally:
            await registry.close()


def adopted(heketi_id: str, key: str = KEY) -> str:
    return make_ref(Kind.VOLUME, "default", heketi_id, adoption_mark(key, heketi_id)).encode()


async def publish(rig: Rig, volume_id: str) -> dict[str, str]:
    response = await rig.service.ControllerPublishVolume(
        csi_pb2.ControllerPublishVolumeRequest(volume_id=volume_id, node_id="n",
                                               volume_capability=cap()), ctx())
    return dict(response.publish_context)


async def test_adopted_volume_publishes_expands_snapshots_clones(rig: Rig) -> None:
    heketi_id = await rig.intree_volume(gid=2001)
    name = (await rig.heketi.volume_info(heketi_id)).name
    assert name == f"vol_{heketi_id}"
    with pytest.raises(NotFound):  # not ours and not adopted: unknown, as before
        await publish(rig, make_ref(Kind.VOLUME, "default", heketi_id).encode())

    volume_id = adopted(heketi_id)
    context = await publish(rig, volume_id)
    assert context["volume"] == name and context["hosts"]

    expanded = await rig.service.ControllerExpandVolume(csi_pb2.ControllerExpandVolumeRequest(
        volume_id=volume_id, capacity_range=csi_pb2.CapacityRange(required_bytes=2 * GIB)),
        ctx())
    assert expanded.capacity_bytes == 2 * GIB
    assert (await rig.heketi.volume_info(heketi_id)).size_gib == 2

    snap = (await rig.service.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
        name="snapshot-1", source_volume_id=volume_id), ctx())).snapshot
    assert snap.source_volume_id == volume_id and snap.snapshot_id.startswith("hs1:")
    listed = await rig.service.ListSnapshots(
        csi_pb2.ListSnapshotsRequest(source_volume_id=volume_id), ctx())
    assert [e.snapshot.snapshot_id for e in listed.entries] == [snap.snapshot_id]

    clone_request = create_request("pvc-clone", 2, gidMin="2001", gidMax="2001")
    clone_request.volume_content_source.volume.volume_id = volume_id
    clone = (await rig.service.CreateVolume(clone_request, ctx())).volume
    assert clone.volume_id.startswith("hv1:") and clone.volume_context["gid"] == "2001"

    got = await rig.service.ControllerGetVolume(
        csi_pb2.ControllerGetVolumeRequest(volume_id=volume_id), ctx())
    assert got.volume.capacity_bytes == 2 * GIB
    listed_volumes = await rig.service.ListVolumes(csi_pb2.ListVolumesRequest(), ctx())
    assert volume_id not in {e.volume.volume_id for e in listed_volumes.entries}


async def test_an_adopted_volume_is_deleted_only_with_its_mark(rig: Rig) -> None:
    heketi_id = await rig.intree_volume(gid=2001, name="gluster_ns_data_3f1c")
    for refused in (make_ref(Kind.VOLUME, "default", heketi_id).encode(),
                    adopted(heketi_id, key="not the Heketi key")):
        with pytest.raises(FailedPrecondition, match="refusing to delete"):
            await rig.service.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=refused),
                                           ctx())
        assert await rig.exists(heketi_id)
    # A wrong mark does not stop the volume from being used.
    assert (await publish(rig, adopted(heketi_id, key="not the Heketi key")))["volume"]

    await rig.service.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=adopted(heketi_id)),
                                   ctx())
    assert not await rig.exists(heketi_id)
    # Idempotent: gone is done.
    await rig.service.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=adopted(heketi_id)),
                                   ctx())


async def test_an_adopted_id_never_reaches_a_snapshot_volume(rig: Rig) -> None:
    heketi_id = await rig.intree_volume(gid=0)
    snap = (await rig.service.CreateSnapshot(csi_pb2.CreateSnapshotRequest(
        name="snapshot-2", source_volume_id=adopted(heketi_id)), ctx())).snapshot
    snap_heketi_id = parse_ref(snap.snapshot_id, Kind.SNAPSHOT).heketi_id
    with pytest.raises(NotFound):
        await publish(rig, adopted(snap_heketi_id))
    with pytest.raises(FailedPrecondition):
        await rig.service.DeleteVolume(
            csi_pb2.DeleteVolumeRequest(volume_id=adopted(snap_heketi_id)), ctx())
    assert await rig.exists(snap_heketi_id)


# --- GIDs ------------------------------------------------------------------------------------
async def test_no_gid_of_any_volume_on_the_heketi_is_handed_out_again(rig: Rig) -> None:
    await rig.intree_volume(gid=2000)  # in-tree, named vol_<id>
    await rig.intree_volume(gid=2001, name="someone_elses_volume")  # foreign
    first = (await rig.service.CreateVolume(
        create_request("pvc-a", gidMin="2000", gidMax="2010"), ctx())).volume
    assert first.volume_context["gid"] == "2002"
    # Made outside the driver after its index was built: seen before the next GID is chosen.
    await rig.intree_volume(gid=2003)
    second = (await rig.service.CreateVolume(
        create_request("pvc-b", gidMin="2000", gidMax="2010"), ctx())).volume
    assert second.volume_context["gid"] == "2004"


def test_ref_equality_keeps_plain_and_adopted_ids_apart() -> None:
    plain = ObjectRef(Kind.VOLUME, "default", HID)
    assert plain != make_ref(Kind.VOLUME, "default", HID, adoption_mark(KEY, HID))
    assert not plain.adopted
