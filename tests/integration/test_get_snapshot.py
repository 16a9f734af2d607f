"""GetSnapshot (GET_SNAPSHOT) through the controller process, against the simulator."""

from __future__ import annotations

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from services.common.proto import csi_pb2
from tests.integration.test_snapshots import snapshot_request
from tests.support.controller_harness import create_request

_Cap = csi_pb2.ControllerServiceCapability.RPC


async def _error(ctl, snapshot_id: str) -> GRPCError:
    with pytest.raises(GRPCError) as err:
        await ctl.stub.GetSnapshot(csi_pb2.GetSnapshotRequest(snapshot_id=snapshot_id))
    return err.value


async def test_get_snapshot_answers_what_create_snapshot_made(ctl, sim):
    caps = await ctl.stub.ControllerGetCapabilities(csi_pb2.ControllerGetCapabilitiesRequest())
    assert _Cap.GET_SNAPSHOT in {c.rpc.type for c in caps.capabilities}
    source = (await ctl.stub.CreateVolume(create_request("pvc-src", 2))).volume.volume_id
    made = (await ctl.stub.CreateSnapshot(snapshot_request("snap-1", source))).snapshot
    await ctl.stub.CreateSnapshot(snapshot_request("snap-2", source))  # not the one asked for

    got = await ctl.stub.GetSnapshot(csi_pb2.GetSnapshotRequest(snapshot_id=made.snapshot_id))
    assert got.snapshot == made

    assert (await _error(ctl, "")).status is Status.INVALID_ARGUMENT
    assert (await _error(ctl, "none-exist-id")).status is Status.NOT_FOUND
    assert (await _error(ctl, source)).status is Status.NOT_FOUND, "a volume id is no snapshot"
    await ctl.stub.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(snapshot_id=made.snapshot_id))
    assert (await _error(ctl, made.snapshot_id)).status is Status.NOT_FOUND
