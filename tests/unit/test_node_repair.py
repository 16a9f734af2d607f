"""Repair of staged volumes whose gluster client died, against the in-memory mounter: what
the mount table looks like after a repair, and when it happens."""

from __future__ import annotations

import errno
import time

from devtools.fake_mounter import FakeMounter
from services.node import mountinfo
from services.node.repair import entangled
from services.node.state import stage_key
from tests.support.conditions import until
from tests.unit.test_node_service import (
    Ctx,
    make,
    publish,
    stage_request,
    staged_and_published,
    stats,
    target_path,
    unpublish,
    unstage,
)


def healthy_again(fake: FakeMounter, staging: str, rw: str, ro: str, old: mountinfo.Mount
                  ) -> bool:
    """The stage is a new mount with one client of its own, and on top of each target is a
    bind of it (over the dead one: that is what reaches running containers)."""
    mounts = fake.mounts()
    stage = mountinfo.mount_at(mounts, staging)
    if stage is None or stage.device == old.device or mountinfo.count_at(mounts, staging) != 1:
        return False
    for target, readonly in ((rw, False), (ro, True)):
        top = mountinfo.mount_at(mounts, target)
        if top is None or not top.same_origin(stage) or top.readonly is not readonly:
            return False
    return [c.mount_point for c in fake.clients] == [staging]


def kill_stage_client(fake: FakeMounter, staging: str) -> mountinfo.Mount:
    """Kill the gluster client of the staging mount; return that (now dead) mount."""
    old = mountinfo.mount_at(fake.mounts(), staging)
    assert old is not None
    fake.kill_client(staging)
    return old


async def test_a_client_that_dies_is_replaced_at_once_without_waiting_for_a_pass(root, fake):
    service = make(root, fake)
    staging, rw, ro = await staged_and_published(service, root)
    old = kill_stage_client(fake, staging)

    started = time.monotonic()
    await until(lambda: healthy_again(fake, staging, rw, ro, old), "the client replaced", 2,
                0.01)
    assert time.monotonic() - started < 1
    # The dead binds stay under the new ones until the pods go.
    for target in (rw, ro):
        assert mountinfo.count_at(fake.mounts(), target) == 2
    assert not (await stats(service, rw)).volume_condition.abnormal
    assert await service.repairer.repair_all() == []  # nothing left to do
    assert fake.started == 2

    for target in (rw, ro):
        await unpublish(service, target)
    await unstage(service, root)
    assert fake.mounts() == [] and fake.clients == [] and fake.cgroups == set()


async def test_the_new_client_is_followed_too(root, fake):
    service = make(root, fake)
    staging, rw, ro = await staged_and_published(service, root)
    for _ in range(3):
        old = kill_stage_client(fake, staging)
        await until(lambda old=old: healthy_again(fake, staging, rw, ro, old),
                    "the client replaced", 2, 0.01)
    assert fake.started == 4
    assert mountinfo.count_at(fake.mounts(), rw) == 4


async def test_a_pass_remounts_a_stage_whose_client_died_unseen(root, fake):
    """A client the node did not follow (it died while no node process ran)."""
    service = make(root, fake)
    staging, rw, ro = await staged_and_published(service, root)
    service.repairer.watch.forget(staging)
    old = kill_stage_client(fake, staging)

    [result] = await service.repairer.repair_all()

    assert result.remounted and result.rebound == (ro, rw) and result.replaced == ()
    assert healthy_again(fake, staging, rw, ro, old)


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
    service.repairer.watch.forget(staging)
    old = kill_stage_client(fake, staging)
    fake.vanish(staging)  # e.g. someone unmounted the staging path

    [result] = await service.repairer.repair_all()

    assert result.remounted and result.rebound == (ro, rw)
    assert healthy_again(fake, staging, rw, ro, old)


async def test_stage_again_repairs_a_broken_stage(root, fake):
    """Kubelet re-stages after its own restart: a dead stage is re-mounted and re-bound."""
    service = make(root, fake)
    staging, rw, ro = await staged_and_published(service, root)
    service.repairer.watch.forget(staging)
    old = kill_stage_client(fake, staging)

    await service.NodeStageVolume(stage_request(root), Ctx())

    assert healthy_again(fake, staging, rw, ro, old)
    assert len(await fake.group_pids(stage_key(staging))) == 1


async def test_publish_again_binds_on_top_of_a_stale_target(root, fake):
    """Kubelet re-publishes after its restart a target still bound to a dead mount."""
    service = make(root, fake)
    staging, rw, _ro = await staged_and_published(service, root)
    service.repairer.watch.forget(staging)
    kill_stage_client(fake, staging)
    await service.NodeStageVolume(stage_request(root), Ctx())  # re-mounts and re-binds
    other = target_path(root, "later")
    await publish(service, root, other)
    assert mountinfo.count_at(fake.mounts(), other) == 1
    stage = mountinfo.mount_at(fake.mounts(), staging)
    assert stage is not None
    top = mountinfo.mount_at(fake.mounts(), rw)
    assert top is not None and top.same_origin(stage)


async def test_a_stage_that_holds_another_volume_is_not_touched(root, fake):
    service = make(root, fake)
    staging, rw, ro = await staged_and_published(service, root)
    service.repairer.watch.forget(staging)
    for path in (rw, ro, staging):
        fake.vanish(path)
    fake.add_mount("fuse.glusterfs", "h1:other", staging)
    fake.kill_client(staging)
    before = fake.mounts()

    assert await service.repairer.repair_all() == []
    assert fake.mounts() == before


async def test_a_stopped_client_is_abnormal_at_once_and_healthy_when_it_continues(root, fake):
    service = make(root, fake, stats_timeout=30)
    staging, rw, _ro = await staged_and_published(service, root)
    fake.stop_client(staging)

    started = time.monotonic()
    answer = await stats(service, rw)
    assert time.monotonic() - started < 0.5
    assert answer.volume_condition.abnormal
    assert "is stopped" in answer.volume_condition.message
    await service.repairer.health_pass()
    assert staging in service.repairer.abnormal
    assert fake.started == 1  # a stopped client is never replaced

    fake.continue_client(staging)
    assert not (await stats(service, rw)).volume_condition.abnormal
    await service.repairer.health_pass()
    assert service.repairer.abnormal == {}


async def test_a_hung_mount_is_abnormal_within_the_health_timeout(root, fake):
    service = make(root, fake, stats_timeout=30, health_timeout=0.5)
    staging, rw, _ro = await staged_and_published(service, root)
    fake.hang(staging)  # the client runs but does not answer (its bricks are unreachable)

    started = time.monotonic()
    answer = await stats(service, rw)
    assert time.monotonic() - started < 2
    assert answer.volume_condition.abnormal and "did not answer" in answer.volume_condition.message
    fake.unhang(staging)
    await until(lambda: service.probe.in_flight() == 0, "the hung probe returned", 5, 0.01)
    assert not (await stats(service, rw)).volume_condition.abnormal


async def test_clients_in_their_groups_survive_a_node_container_restart(root, fake):
    service = make(root, fake)
    _staging, rw, _ro = await staged_and_published(service, root)
    pids = [c.pid for c in fake.clients]

    assert fake.restart_container() == []

    assert [c.pid for c in fake.clients] == pids
    assert not (await stats(service, rw)).volume_condition.abnormal
    assert await fake.group_pids(fake.clients[0].group or "") == pids


def test_the_peer_group_of_a_mount_is_read_from_mountinfo():
    shared = mountinfo.parse_line(
        "373 46 0:138 / /k/pods/a/mount rw,relatime shared:7 master:3 - fuse.glusterfs "
        "h:v rw,user_id=0")
    private = mountinfo.parse_line("42 46 0:39 / /k/stage rw,relatime - fuse.glusterfs h:v rw")
    assert shared.peer_group == 7 and private.peer_group is None


def test_a_target_sharing_its_peer_group_with_one_of_other_readonlyness_is_entangled():
    def bind(point: str, group: int | None, readonly: bool) -> mountinfo.Mount:
        return mountinfo.Mount(1, 1, 0, 40, "/", point, ("ro" if readonly else "rw",),
                               "fuse.glusterfs", "h:v", ("rw",), group)

    rw, ro = bind("/k/pods/a/mount", 7, False), bind("/k/pods/b/mount", 7, True)
    alone = bind("/k/pods/c/mount", 9, False)
    assert entangled(rw, [rw, ro, alone], readonly=False)  # a rw mount on it would reach ro
    assert not entangled(alone, [rw, ro, alone], readonly=False)
    assert not entangled(rw, [rw, bind("/k/pods/d/mount", 7, False)], readonly=False)
    assert not entangled(bind("/k/pods/e/mount", None, False), [ro], readonly=False)
