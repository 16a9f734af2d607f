"""Node RPCs against the in-memory mounter: argument checks, operation locks, and what each
call leaves in the mount table."""

# Looking at the test's own local directories is fine on the test's loop.
# ruff: noqa: ASYNC240

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.fake_mounter import GIB, FakeMounter
from services.common.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from services.common.keyed_operations import KeyedOperations
from services.common.proto import csi_pb2
from services.common.rpc import RpcContext
from services.node import mountinfo
from services.node.fsstat import FsProbe
from services.node.repair import Repairer
from services.node.service import NodeConfig, NodeService
from services.node.state import StateStore
from tests.support.conditions import until

Cap = csi_pb2.VolumeCapability
MODE = Cap.AccessMode.MULTI_NODE_MULTI_WRITER


class Ctx(RpcContext):
    def __init__(self) -> None:
        import structlog

        super().__init__(method="test", request_id="r1", log=structlog.get_logger("test"))


def make(
    root: Path,
    mounter: FakeMounter | None = None,
    stats_timeout: float = 1,
    mount_timeout: float = 5,
    health_timeout: float | None = None,
) -> NodeService:
    config = NodeConfig(
        node_id="node-1",
        driver_name="drv",
        kubelet_root=str(root),
        gluster_log_dir=str(root.parent / "logs"),
        mount_timeout=mount_timeout,
        stats_timeout=stats_timeout,
    )
    mounter = mounter or FakeMounter()
    store = StateStore(root / "plugins" / "drv" / "state")
    probe = FsProbe(config.stats_timeout, mounter.usage)
    locks = KeyedOperations()
    repairer = Repairer(mounter, store, probe, locks, str(root), mount_timeout,
                        health_timeout=health_timeout)
    return NodeService(config, mounter, store, probe, locks, repairer)


def mount_cap(*flags: str, mode: int = MODE) -> Cap:
    return Cap(
        mount=Cap.MountVolume(mount_flags=list(flags)), access_mode=Cap.AccessMode(mode=mode)
    )  # type: ignore[arg-type]


def staging_path(root: Path, volume_id: str = "vol-id-1") -> str:
    """Where kubelet stages `volume_id` for driver `drv`."""
    digest = hashlib.sha256(volume_id.encode()).hexdigest()
    return f"{root}/plugins/kubernetes.io/csi/drv/{digest}/globalmount"


def stage_request(root: Path, **overrides: Any) -> csi_pb2.NodeStageVolumeRequest:
    fields: dict[str, Any] = {
        "volume_id": "vol-id-1",
        "staging_target_path": staging_path(root),
        "volume_capability": mount_cap(),
        "volume_context": {"volume": "vol_1", "hosts": "h1,h2"},
    }
    fields.update(overrides)
    return csi_pb2.NodeStageVolumeRequest(**fields)


def target_path(root: Path, pod: str) -> str:
    """A pod's target path; its parent exists, as kubelet makes it."""
    target = root / "pods" / pod / "volumes" / "kubernetes.io~csi" / "pv" / "mount"
    target.parent.mkdir(parents=True, exist_ok=True)
    return str(target)


async def publish(
    service: NodeService, root: Path, target: str, readonly: bool = False
) -> csi_pb2.NodePublishVolumeResponse:
    return await service.NodePublishVolume(
        csi_pb2.NodePublishVolumeRequest(
            volume_id="vol-id-1",
            staging_target_path=stage_request(root).staging_target_path,
            target_path=target,
            volume_capability=mount_cap(),
            readonly=readonly,
        ),
        Ctx(),
    )


async def unpublish(service: NodeService, target: str) -> None:
    await service.NodeUnpublishVolume(
        csi_pb2.NodeUnpublishVolumeRequest(volume_id="vol-id-1", target_path=target), Ctx()
    )


async def unstage(service: NodeService, root: Path) -> None:
    await service.NodeUnstageVolume(
        csi_pb2.NodeUnstageVolumeRequest(
            volume_id="vol-id-1", staging_target_path=stage_request(root).staging_target_path
        ),
        Ctx(),
    )


async def stats(service: NodeService, path: str) -> csi_pb2.NodeGetVolumeStatsResponse:
    return await service.NodeGetVolumeStats(
        csi_pb2.NodeGetVolumeStatsRequest(volume_id="vol-id-1", volume_path=path), Ctx()
    )


async def staged_and_published(service: NodeService, root: Path) -> tuple[str, str, str]:
    """Stage vol_1 and publish it read-write to pod `rw` and read-only to pod `ro`."""
    await service.NodeStageVolume(stage_request(root), Ctx())
    rw, ro = target_path(root, "rw"), target_path(root, "ro")
    await publish(service, root, rw)
    await publish(service, root, ro, readonly=True)
    return stage_request(root).staging_target_path, rw, ro


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
        volume_id="v", target_path=target_path(root, "p"), volume_capability=mount_cap()
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
        RPC.SINGLE_NODE_MULTI_WRITER,
    }
    info = await service.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), Ctx())
    assert info.node_id == "node-1"


async def test_stage_publish_unpublish_unstage_leave_the_table_as_they_found_it(root, fake):
    service = make(root, fake)
    staging, rw, ro = await staged_and_published(service, root)
    # Kubelet repeats calls after restarts and timeouts: each is idempotent.
    await service.NodeStageVolume(stage_request(root), Ctx())
    await publish(service, root, rw)
    await publish(service, root, ro, readonly=True)

    mounts = fake.mounts()
    assert [m.mount_point for m in mounts] == [staging, rw, ro]
    stage = mountinfo.mount_at(mounts, staging)
    assert stage is not None and stage.fstype == "fuse.glusterfs" and stage.source == "h1:vol_1"
    for target, readonly in ((rw, False), (ro, True)):
        bind = mountinfo.mount_at(mounts, target)
        assert bind is not None and bind.same_origin(stage) and bind.readonly is readonly
    record = service.store.get(staging)
    assert record is not None and record.targets == {rw: False, ro: True}
    # The read-only target asked for read-write: not what is mounted there.
    with pytest.raises(AlreadyExists, match="read-only"):
        await publish(service, root, ro, readonly=False)

    for target in (rw, ro):
        await unpublish(service, target)
        await unpublish(service, target)
        assert not Path(target).exists()
    await unstage(service, root)
    await unstage(service, root)
    assert fake.mounts() == []
    assert fake.clients == []
    assert service.store.all() == []
    assert Path(staging).is_dir()  # the CO's directory stays


async def test_concurrent_stage_of_one_volume_is_aborted_and_work_outlives_a_cancelled_caller(
    root, fake
):
    service = make(root, fake)
    staging = stage_request(root).staging_target_path
    fake.hold_mounts()  # a slow mount
    first = asyncio.create_task(service.NodeStageVolume(stage_request(root), Ctx()))
    await fake.wait_pending(staging)
    with pytest.raises(Aborted, match="in progress"):
        await service.NodeStageVolume(stage_request(root), Ctx())
    first.cancel()  # kubelet gave up on the call; the mount itself goes on
    with pytest.raises(asyncio.CancelledError):
        await first
    fake.release_mounts()
    await service.wait_idle()
    [mount] = fake.mounts()
    assert (mount.mount_point, mount.source) == (staging, "h1:vol_1")
    assert service.store.get(staging) is not None
    # The retry finds the finished mount and does not mount again.
    await service.NodeStageVolume(stage_request(root), Ctx())
    assert fake.mounts() == [mount]
    # Its client runs with the planned options: log file, level, the second host as backup
    # volfile server.
    [client] = fake.clients
    assert client.options[1:] == ("log-level=ERROR", "backup-volfile-servers=h2", "nosuid", "nodev")
    assert client.options[0].startswith(f"log-file={root.parent / 'logs'}/vol_1-")


async def test_a_mount_that_overruns_its_deadline_leaves_no_mount_and_no_record(root, fake):
    service = make(root, fake, mount_timeout=0.2)
    fake.hold_mounts()
    with pytest.raises(DeadlineExceeded, match=r"did not finish within 0\.2 s"):
        await service.NodeStageVolume(stage_request(root), Ctx())
    assert fake.mounts() == [] and fake.clients == []
    assert service.store.all() == []


async def test_a_failed_mount_reports_the_client_log_and_leaves_no_record(root, fake):
    service = make(root, fake)
    fake.refuse("vol_1", "failed to fetch volume file (key:/vol_1)")
    with pytest.raises(Internal, match="failed to fetch volume file") as exc:
        await service.NodeStageVolume(stage_request(root), Ctx())
    assert "gluster client log" in str(exc.value)
    assert fake.mounts() == []
    assert service.store.all() == []


async def test_publish_context_wins_over_volume_context(root, fake):
    service = make(root, fake)
    req = stage_request(
        root,
        publish_context={"hosts": "p1", "backupVolfileServers": "p2,p3"},
    )
    await service.NodeStageVolume(req, Ctx())
    [mount] = fake.mounts()
    assert mount.source == "p1:vol_1"
    [client] = fake.clients
    assert "backup-volfile-servers=p2:p3" in client.options


async def test_stage_over_a_different_mount_is_already_exists(root, fake):
    service = make(root, fake)
    req = stage_request(root)
    other = fake.add_mount("fuse.glusterfs", "h1:other", req.staging_target_path)
    with pytest.raises(AlreadyExists, match="other"):
        await service.NodeStageVolume(req, Ctx())
    assert fake.mounts() == [other]


async def test_publish_of_an_unstaged_volume_is_failed_precondition(root, fake):
    service = make(root, fake)
    with pytest.raises(FailedPrecondition, match="not staged"):
        await publish(service, root, target_path(root, "p"))
    assert fake.mounts() == []


async def test_stats_and_expand_show_the_volume_capacity(root, fake):
    service = make(root, fake)
    _staging, rw, _ro = await staged_and_published(service, root)
    fake.set_capacity("vol_1", 10 * GIB, 3 * GIB)  # the volume grew on its servers
    answer = await stats(service, rw)
    assert not answer.volume_condition.abnormal
    by_unit = {u.unit: u for u in answer.usage}
    assert (by_unit[csi_pb2.VolumeUsage.BYTES].total, by_unit[csi_pb2.VolumeUsage.BYTES].used) == (
        10 * GIB,
        3 * GIB,
    )
    expanded = await service.NodeExpandVolume(
        csi_pb2.NodeExpandVolumeRequest(volume_id="vol-id-1", volume_path=rw), Ctx()
    )
    assert expanded.capacity_bytes == 10 * GIB
    with pytest.raises(NotFound, match="holds volume vol-id-1"):
        await service.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id="other", volume_path=rw), Ctx()
        )


async def test_a_dead_client_is_abnormal_and_unpublish_unstage_still_clean_up(root, fake):
    service = make(root, fake)
    staging, rw, ro = await staged_and_published(service, root)
    fake.hold_mounts()  # the repair's new mount waits: the volume stays dead meanwhile
    fake.kill_client(staging)
    await fake.wait_pending(staging)
    for path in (rw, ro):  # the dead staging mount is gone already, its new one not there yet
        answer = await stats(service, path)
        assert answer.volume_condition.abnormal
        assert "not connected" in answer.volume_condition.message
        assert "mounts the volume again" in answer.volume_condition.message
    with pytest.raises(Unavailable, match="not connected"):
        await service.NodeExpandVolume(
            csi_pb2.NodeExpandVolumeRequest(volume_id="vol-id-1", volume_path=rw), Ctx()
        )
    fake.release_mounts()
    await until(lambda: len(fake.clients) == 1, "one client, mounted again", 5, 0.01)
    for target in (rw, ro):
        await unpublish(service, target)
    await unstage(service, root)
    assert fake.mounts() == [] and fake.clients == [] and fake.cgroups == set()


async def test_a_hung_mount_answers_promptly_with_one_probe_in_flight(root, fake):
    service = make(root, fake, stats_timeout=0.2)
    staging, rw, ro = await staged_and_published(service, root)
    fake.hang(staging)
    for _ in range(3):  # kubelet polls again: each answer is prompt
        started = time.monotonic()
        answer = await stats(service, rw)
        assert time.monotonic() - started < 1.0
        assert answer.volume_condition.abnormal
        assert "did not answer within 0.2 s" in answer.volume_condition.message
    assert service.probe.in_flight() == 1  # the hung statvfs is not called again and again
    for target in (rw, ro):
        await unpublish(service, target)
    await unstage(service, root)
    assert fake.mounts() == []
    # Unmounting let the hung call return.
    await until(lambda: service.probe.in_flight() == 0, "the hung probe returned", 5, 0.01)


async def test_restaging_a_staged_path_under_another_volume_id_is_already_exists(root, fake):
    service = make(root, fake)
    staging = stage_request(root).staging_target_path
    await service.NodeStageVolume(stage_request(root), Ctx())
    before = fake.mounts()
    with pytest.raises(AlreadyExists, match="vol-id-1"):
        await service.NodeStageVolume(stage_request(root, volume_id="vol-id-2"), Ctx())
    record = service.store.get(staging)
    assert record is not None and record.volume_id == "vol-id-1"
    assert fake.mounts() == before
    # A record of another volume whose mount is gone but whose targets are still recorded
    # keeps its path too: those targets belong to it.
    await publish(service, root, target_path(root, "p"))
    fake.vanish(staging)
    with pytest.raises(AlreadyExists, match="vol-id-1"):
        await service.NodeStageVolume(stage_request(root, volume_id="vol-id-2"), Ctx())
    record = service.store.get(staging)
    assert record is not None and record.volume_id == "vol-id-1"


@pytest.mark.parametrize(
    "volume_id", ["vol id", "vol\nid", "vol\0id", "x" * 129, "-rf", "völ", "a/../b", "'$(id)'"]
)
async def test_stage_and_publish_refuse_malformed_volume_ids(root, fake, volume_id):
    service = make(root, fake)
    with pytest.raises(InvalidArgument, match="volume_id"):
        await service.NodeStageVolume(stage_request(root, volume_id=volume_id), Ctx())
    assert fake.mounts() == [] and service.store.all() == []
    await service.NodeStageVolume(stage_request(root), Ctx())
    with pytest.raises(InvalidArgument, match="volume_id"):
        await service.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=volume_id,
                staging_target_path=stage_request(root).staging_target_path,
                target_path=target_path(root, "p"),
                volume_capability=mount_cap(),
            ),
            Ctx(),
        )
    assert len(fake.mounts()) == 1


def hang_lookups_under(monkeypatch: pytest.MonkeyPatch, directory: str) -> threading.Event:
    """Every existence check of a path below `directory` blocks until the returned event is
    set, as the kernel blocks lookups inside a FUSE mount whose client is stopped."""
    release = threading.Event()
    real = os.path.lexists

    def lexists(path: Any) -> bool:
        if os.fspath(path).startswith(directory + "/"):
            release.wait()
        return real(path)

    monkeypatch.setattr(os.path, "lexists", lexists)
    return release


async def test_hung_lookups_inside_a_mount_do_not_starve_the_other_rpcs(root, fake, monkeypatch):
    service = make(root, fake, stats_timeout=0.3)
    _staging, rw, _ro = await staged_and_published(service, root)
    fake.hang(rw)
    release = hang_lookups_under(monkeypatch, rw)
    try:
        started = time.monotonic()
        polls = [
            asyncio.create_task(
                service.NodeGetVolumeStats(
                    csi_pb2.NodeGetVolumeStatsRequest(
                        volume_id="vol-id-1", volume_path=f"{rw}/dir{i}"
                    ),
                    Ctx(),
                )
            )
            for i in range(12)
        ]
        polls.append(asyncio.create_task(stats(service, rw)))
        # A healthy volume is staged and published within its deadline meanwhile.
        other = staging_path(root, "vol-id-2")
        await asyncio.wait_for(
            service.NodeStageVolume(
                stage_request(
                    root,
                    volume_id="vol-id-2",
                    staging_target_path=other,
                    volume_context={"volume": "vol_2", "hosts": "h1"},
                ),
                Ctx(),
            ),
            2,
        )
        target = target_path(root, "healthy")
        await asyncio.wait_for(
            service.NodePublishVolume(
                csi_pb2.NodePublishVolumeRequest(
                    volume_id="vol-id-2",
                    staging_target_path=other,
                    target_path=target,
                    volume_capability=mount_cap(),
                ),
                Ctx(),
            ),
            2,
        )
        assert mountinfo.mount_at(fake.mounts(), target) is not None
        # Every poll of the hung mount answered by its deadline, none hangs.
        answers = await asyncio.wait_for(asyncio.gather(*polls, return_exceptions=True), 2)
        assert time.monotonic() - started < 3
        for answer in answers[:-1]:
            assert isinstance(answer, NotFound), answer
            assert "did not answer" in answer.message
        assert answers[-1].volume_condition.abnormal  # type: ignore[union-attr]
    finally:
        release.set()
        fake.unhang(rw)
