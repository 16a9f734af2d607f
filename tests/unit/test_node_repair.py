"""Repair of staged volumes whose gluster client died, against the in-memory mounter: what
the mount table looks like after a repair pass."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.fake_mounter import FakeMounter
from services.node import mountinfo
from tests.unit.test_node_service import Ctx, make, stage_request, staged_and_published, stats


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "kubelet"


@pytest.fixture
def fake() -> Iterator[FakeMounter]:
    mounter = FakeMounter()
    yield mounter
    mounter.close()


def assert_healthy_again(
    fake: FakeMounter, staging: str, rw: str, ro: str, old: mountinfo.Mount
) -> None:
    mounts = fake.mounts()
    for path in (staging, rw, ro):
        assert mountinfo.count_at(mounts, path) == 1, path
    stage = mountinfo.mount_at(mounts, staging)
    assert stage is not None and stage.source == old.source
    assert stage.device != old.device  # a new FUSE connection, with a client of its own
    for target, readonly in ((rw, False), (ro, True)):
        bind = mountinfo.mount_at(mounts, target)
        assert bind is not None and bind.same_origin(stage) and bind.readonly is readonly
    assert [c.mount_point for c in fake.clients] == [staging]


def kill_stage_client(fake: FakeMounter, staging: str) -> mountinfo.Mount:
    """Kill the gluster client of the staging mount; return that (now dead) mount."""
    old = mountinfo.mount_at(fake.mounts(), staging)
    assert old is not None
    fake.kill_client(staging)
    return old


async def test_a_pass_remounts_a_stage_whose_client_died_and_rebinds_its_targets(root, fake):
    service = make(root, fake)
    staging, rw, ro = await staged_and_published(service, root)
    old = kill_stage_client(fake, staging)

    [result] = await service.repairer.repair_all()

    assert result.remounted and result.rebound == (ro, rw) and result.skipped == ()
    assert_healthy_again(fake, staging, rw, ro, old)
    assert not (await stats(service, rw)).volume_condition.abnormal
    assert await service.repairer.repair_all() == []  # nothing left to do


async def test_a_client_that_lost_its_servers_is_left_to_reconnect(root, fake):
    service = make(root, fake)
    staging, _rw, _ro = await staged_and_published(service, root)
    before = fake.mounts()
    fake.break_mount(staging, errno.ENOTCONN)  # the client lives on

    assert await service.repairer.repair_all() == []
    assert fake.mounts() == before


async def test_targets_of_a_stage_that_is_gone_are_mounted_again(root, fake):
    service = make(root, fake)
    staging, rw, ro = await staged_and_published(service, root)
    old = kill_stage_client(fake, staging)
    fake.vanish(staging)  # e.g. a container restart took the staging mount with it

    [result] = await service.repairer.repair_all()

    assert result.remounted and result.rebound == (ro, rw)
    assert_healthy_again(fake, staging, rw, ro, old)


async def test_stage_again_repairs_a_broken_stage(root, fake):
    """Kubelet re-stages after its own restart: a dead stage is re-mounted and re-bound."""
    service = make(root, fake)
    staging, rw, ro = await staged_and_published(service, root)
    old = kill_stage_client(fake, staging)

    await service.NodeStageVolume(stage_request(root), Ctx())

    assert_healthy_again(fake, staging, rw, ro, old)


async def test_a_stage_that_holds_another_volume_is_not_touched(root, fake):
    service = make(root, fake)
    staging, rw, ro = await staged_and_published(service, root)
    for path in (rw, ro, staging):
        fake.vanish(path)
    fake.add_mount("fuse.glusterfs", "h1:other", staging)
    fake.kill_client(staging)
    before = fake.mounts()

    assert await service.repairer.repair_all() == []
    assert fake.mounts() == before
