"""Node RPC argument checks, locks and answers that need no real mount."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from services.common.errors import Aborted, InvalidArgument, NotFound
from services.common.proto import csi_pb2
from services.common.rpc import RpcContext
from services.node.fsstat import FsProbe
from services.node.locks import OperationLocks
from services.node.mounter import Mounter
from services.node.mountinfo import Mount
from services.node.repair import Repairer
from services.node.service import NodeConfig, NodeService
from services.node.state import StateStore

Cap = csi_pb2.VolumeCapability
MODE = Cap.AccessMode.MULTI_NODE_MULTI_WRITER


class SlowMounter(Mounter):
    """Mounts nothing; a glusterfs mount takes `delay` seconds and is then reported."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.mounted: dict[str, Mount] = {}
        self.calls: list[tuple[str, ...]] = []

    def mounts(self) -> list[Mount]:
        return list(self.mounted.values())

    async def mount_glusterfs(self, source, target, options, log_file, seconds) -> Mount:  # type: ignore[no-untyped-def]
        self.calls.append(("mount", source, target, *options))
        await asyncio.sleep(self.delay)
        m = Mount(1, 0, 0, 99, "/", target, ("rw",), "fuse.glusterfs", source, ())
        self.mounted[target] = m
        return m


class Ctx(RpcContext):
    def __init__(self) -> None:
        import structlog

        super().__init__(method="test", request_id="r1", log=structlog.get_logger("test"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "kubelet"


def make(root: Path, mounter: Mounter | None = None) -> NodeService:
    config = NodeConfig(
        node_id="node-1",
        driver_name="drv",
        kubelet_root=str(root),
        gluster_log_dir=str(root.parent / "logs"),
        mount_timeout=5,
        stats_timeout=1,
    )
    mounter = mounter or Mounter()
    store = StateStore(root / "plugins" / "drv" / "state")
    probe = FsProbe(1)
    locks = OperationLocks()
    repairer = Repairer(mounter, store, probe, locks, str(root), 5)
    return NodeService(config, mounter, store, probe, locks, repairer)


def mount_cap(*flags: str, mode: int = MODE) -> Cap:
    return Cap(
        mount=Cap.MountVolume(mount_flags=list(flags)), access_mode=Cap.AccessMode(mode=mode)
    )  # type: ignore[arg-type]


def stage_request(root: Path, **overrides: Any) -> csi_pb2.NodeStageVolumeRequest:
    fields: dict[str, Any] = {
        "volume_id": "vol-id-1",
        "staging_target_path": f"{root}/plugins/kubernetes.io/csi/drv/abc/globalmount",
        "volume_capability": mount_cap(),
        "volume_context": {"volume": "vol_1", "hosts": "h1,h2"},
    }
    fields.update(overrides)
    return csi_pb2.NodeStageVolumeRequest(**fields)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"volume_id": ""}, "volume_id is required"),
        ({"staging_target_path": ""}, "staging_target_path is required"),
        ({"staging_target_path": "relative/path"}, "absolute"),
        ({"staging_target_path": "/etc/x"}, "not below the kubelet root"),
        ({"volume_capability": None}, "volume_capability is required"),
        (
            {
                "volume_capability": Cap(
                    block=Cap.BlockVolume(), access_mode=Cap.AccessMode(mode=MODE)
                )
            },
            "block access is not supported",
        ),
        ({"volume_capability": Cap(mount=Cap.MountVolume())}, "access_mode is required"),
        (
            {
                "volume_capability": Cap(
                    mount=Cap.MountVolume(fs_type="ext4"), access_mode=Cap.AccessMode(mode=MODE)
                )
            },
            "fs_type",
        ),
        ({"volume_capability": mount_cap("bind")}, "other mounts"),
        ({"volume_context": {"hosts": "h1"}}, "'volume'"),
        ({"volume_context": {"volume": "v"}}, "'hosts'"),
        ({"volume_context": {"volume": "v", "hosts": "h1", "gid": "abc"}}, "'gid'"),
        ({"volume_context": {"volume": "v x", "hosts": "h1"}}, "volume name"),
    ],
)
async def test_stage_refuses_bad_requests(root, overrides, message):
    service = make(root)
    with pytest.raises(InvalidArgument) as exc:
        await service.NodeStageVolume(stage_request(root, **overrides), Ctx())
    assert message in exc.value.message


async def test_publish_and_unpublish_validate_paths(root):
    service = make(root)
    req = csi_pb2.NodePublishVolumeRequest(
        volume_id="v", target_path=f"{root}/pods/p/mount", volume_capability=mount_cap()
    )
    with pytest.raises(InvalidArgument, match="staging_target_path is required"):
        await service.NodePublishVolume(req, Ctx())
    with pytest.raises(InvalidArgument, match="target_path is required"):
        await service.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(volume_id="v"), Ctx())
    with pytest.raises(InvalidArgument, match="volume_id"):
        await service.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(target_path=f"{root}/x"), Ctx()
        )
    with pytest.raises(InvalidArgument, match="normalized"):
        await service.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id="v", target_path=f"{root}/pods/../../x"),
            Ctx(),
        )
    with pytest.raises(InvalidArgument, match="staging_target_path is required"):
        await service.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(volume_id="v"), Ctx())


async def test_stats_and_expand_not_found_and_missing_fields(root):
    service = make(root)
    with pytest.raises(InvalidArgument, match="volume_id"):
        await service.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_path="some/path"), Ctx()
        )
    with pytest.raises(InvalidArgument, match="volume_path"):
        await service.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(volume_id="v"), Ctx())
    with pytest.raises(NotFound):
        await service.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id="v", volume_path="some/path"), Ctx()
        )
    (root / "pods" / "p").mkdir(parents=True)
    with pytest.raises(NotFound, match="nothing is mounted"):
        await service.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id="v", volume_path=f"{root}/pods/p"), Ctx()
        )
    with pytest.raises(NotFound, match="does not exist"):
        await service.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id="v", volume_path=f"{root}/pods/q"), Ctx()
        )
    with pytest.raises(NotFound):
        await service.NodeExpandVolume(
            csi_pb2.NodeExpandVolumeRequest(volume_id="v", volume_path="some/path"), Ctx()
        )
    with pytest.raises(InvalidArgument, match="volume_path"):
        await service.NodeExpandVolume(csi_pb2.NodeExpandVolumeRequest(volume_id="v"), Ctx())


async def test_capabilities_and_info(root):
    service = make(root)
    caps = await service.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest(), Ctx())
    RPC = csi_pb2.NodeServiceCapability.RPC
    assert {c.rpc.type for c in caps.capabilities} == {
        RPC.STAGE_UNSTAGE_VOLUME,
        RPC.GET_VOLUME_STATS,
        RPC.VOLUME_CONDITION,
        RPC.EXPAND_VOLUME,
    }
    info = await service.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), Ctx())
    assert info.node_id == "node-1"


async def test_concurrent_stage_of_one_volume_is_aborted_and_work_outlives_a_cancelled_caller(root):
    mounter = SlowMounter(0.3)
    service = make(root, mounter)
    first = asyncio.create_task(service.NodeStageVolume(stage_request(root), Ctx()))
    await asyncio.sleep(0.05)
    with pytest.raises(Aborted, match="in progress"):
        await service.NodeStageVolume(stage_request(root), Ctx())
    first.cancel()  # kubelet gave up on the call; the mount itself goes on
    with pytest.raises(asyncio.CancelledError):
        await first
    await service.wait_idle()
    staging = stage_request(root).staging_target_path
    assert staging in mounter.mounted
    assert service.store.get(staging) is not None
    # The retry finds the finished mount and does not mount again.
    await service.NodeStageVolume(stage_request(root), Ctx())
    assert len([c for c in mounter.calls if c[0] == "mount"]) == 1
    # The planned options: log file, level, the second host as backup volfile server.
    options = mounter.calls[0][3:]
    assert options[1:] == ("log-level=ERROR", "backup-volfile-servers=h2")
    assert options[0].startswith(f"log-file={root.parent / 'logs'}/vol_1-")


async def test_publish_context_wins_over_volume_context(root):
    mounter = SlowMounter(0)
    service = make(root, mounter)
    req = stage_request(
        root,
        publish_context={"hosts": "p1", "backupVolfileServers": "p2,p3"},
    )
    await service.NodeStageVolume(req, Ctx())
    assert mounter.calls[0][1] == "p1:vol_1"
    assert "backup-volfile-servers=p2:p3" in mounter.calls[0]


async def test_stage_over_a_different_mount_is_already_exists(root):
    from services.common.errors import AlreadyExists

    mounter = SlowMounter(0)
    service = make(root, mounter)
    req = stage_request(root)
    mounter.mounted[req.staging_target_path] = Mount(
        1, 0, 0, 5, "/", req.staging_target_path, ("rw",), "fuse.glusterfs", "h1:other", ()
    )
    with pytest.raises(AlreadyExists, match="other"):
        await service.NodeStageVolume(req, Ctx())
