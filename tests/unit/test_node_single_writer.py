"""SINGLE_NODE_SINGLE_WRITER (ReadWriteOncePod): the node publishes such a volume at one
target only, and advertises SINGLE_NODE_MULTI_WRITER, which says it knows the mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.fake_mounter import FakeMounter
from services.common.errors import FailedPrecondition
from services.common.proto import csi_pb2
from services.node import mountinfo
from services.node.service import NodeService
from tests.unit.test_node_service import (
    Ctx,
    make,
    mount_cap,
    stage_request,
    target_path,
    unpublish,
)

Mode = csi_pb2.VolumeCapability.AccessMode
Rpc = csi_pb2.NodeServiceCapability.RPC


async def _publish(service: NodeService, root: Path, target: str, mode: int) -> None:
    await service.NodePublishVolume(
        csi_pb2.NodePublishVolumeRequest(
            volume_id="vol-id-1", staging_target_path=stage_request(root).staging_target_path,
            target_path=target, volume_capability=mount_cap(mode=mode)),
        Ctx())


async def test_the_node_advertises_single_node_multi_writer(root: Path) -> None:
    reply = await make(root).NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest(), Ctx())
    assert Rpc.SINGLE_NODE_MULTI_WRITER in {c.rpc.type for c in reply.capabilities}


async def test_a_single_writer_volume_is_published_at_one_target_only(
        root: Path, fake: FakeMounter) -> None:
    service = make(root, fake)
    await service.NodeStageVolume(stage_request(root), Ctx())
    first, second = target_path(root, "pod-a"), target_path(root, "pod-b")
    await _publish(service, root, first, Mode.SINGLE_NODE_SINGLE_WRITER)
    await _publish(service, root, first, Mode.SINGLE_NODE_SINGLE_WRITER)  # idempotent

    with pytest.raises(FailedPrecondition) as err:
        await _publish(service, root, second, Mode.SINGLE_NODE_SINGLE_WRITER)
    assert first in err.value.message
    assert mountinfo.mount_at(fake.mounts(), second) is None, "nothing mounted at the second"

    await unpublish(service, first)
    await _publish(service, root, second, Mode.SINGLE_NODE_SINGLE_WRITER)
    assert mountinfo.mount_at(fake.mounts(), second) is not None


@pytest.mark.parametrize("mode", [Mode.SINGLE_NODE_MULTI_WRITER, Mode.SINGLE_NODE_WRITER])
async def test_other_single_node_modes_publish_at_many_targets(
        root: Path, fake: FakeMounter, mode: int) -> None:
    service = make(root, fake)
    await service.NodeStageVolume(stage_request(root), Ctx())
    for pod in ("pod-a", "pod-b"):
        await _publish(service, root, target_path(root, pod), mode)
        assert mountinfo.mount_at(fake.mounts(), target_path(root, pod)) is not None
