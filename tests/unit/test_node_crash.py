"""A node process killed at any point of stage, publish, unpublish, unstage or a repair, then
started again: it adopts the clients that exist, starts none twice, and leaves no client,
mount, client group or record without an owner once kubelet's retries are through.

The machine (the in-memory mounter: mounts, clients, client groups) and the state directory
outlive the node process. The process sees them through a `Mortal` door that lets it make a
given number of changes and then kills it: before the change, or after the change was made
but before the process heard of it (the mount helper runs on in the client group).
Everything the dead process tries afterwards fails, as nothing a killed process does happens.
Each scenario is run for every such point."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from devtools.fake_mounter import FakeMounter
from services.common.keyed_operations import KeyedOperations
from services.node import mountinfo
from services.node.adopt import adopt
from services.node.boundary import Place
from services.node.fsstat import FsProbe, Usage
from services.node.mounter import Mounter
from services.node.mountinfo import Mount
from services.node.repair import Repairer
from services.node.service import NodeConfig, NodeService
from services.node.state import StageRecord, StateStore
from tests.support.conditions import until
from tests.unit.test_node_service import (
    Ctx,
    publish,
    stage_request,
    target_path,
    unpublish,
    unstage,
)

T = TypeVar("T")


class Killed(BaseException):
    """The node process was killed here."""


@dataclass
class Life:
    """How many changes the process still makes; `after`: the last one happens, and the
    process dies before it hears of it."""

    left: int
    after: bool
    dead: bool = False

    def change(self) -> bool:
        """Before a change: raises Killed now, or returns True (make the change, then die)."""
        if self.dead:
            raise Killed
        if self.left == 0:
            self.dead = True
            if not self.after:
                raise Killed
            return True
        self.left -= 1
        return False


class MortalMounter:
    """The shared machine as one node process sees it (a `Mounter`)."""

    def __init__(self, machine: FakeMounter, life: Life) -> None:
        self.machine = machine
        self.life = life

    async def _change(self, call: Callable[[], Awaitable[T]]) -> T:
        last = self.life.change()
        result = await call()
        if last or self.life.dead:  # died meanwhile: it never hears of the result
            raise Killed
        return result

    def mounts(self) -> list[Mount]:
        if self.life.dead:
            raise Killed
        return self.machine.mounts()

    async def mount_glusterfs(self, source: str, target: Place, options: Sequence[str],
                              log_file: str, seconds: float, group: str | None = None) -> Mount:
        return await self._change(lambda: self.machine.mount_glusterfs(
            source, target, options, log_file, seconds, group))

    async def bind(self, source: Place, target: Place, readonly: bool, seconds: float) -> Mount:
        return await self._change(lambda: self.machine.bind(source, target, readonly, seconds))

    async def unmount(self, target: Place, seconds: float) -> bool:
        return await self._change(lambda: self.machine.unmount(target, seconds))

    async def end_group(self, group: str, grace: float) -> None:
        await self._change(lambda: self.machine.end_group(group, grace))

    async def client_pids(self, mount_point: str) -> list[int]:
        return await self.machine.client_pids(mount_point)

    async def group_pids(self, group: str) -> list[int]:
        return await self.machine.group_pids(group)

    async def groups(self) -> list[str]:
        return await self.machine.groups()

    async def process_state(self, pid: int) -> str | None:
        return await self.machine.process_state(pid)

    async def wait_exit(self, pid: int) -> None:
        await self.machine.wait_exit(pid)

    def usage(self, path: str) -> Usage:
        return self.machine.usage(path)


class MortalStore(StateStore):
    def __init__(self, directory: Path, life: Life) -> None:
        super().__init__(directory)
        self.life = life

    async def _write(self, record: StageRecord) -> None:
        last = self.life.change()
        await super()._write(record)
        if last:
            raise Killed

    async def delete(self, staging_path: str) -> None:
        last = self.life.change()
        await super().delete(staging_path)
        if last:
            raise Killed


def node(root: Path, mounter: Mounter, store: StateStore) -> NodeService:
    config = NodeConfig(node_id="node-1", driver_name="drv", kubelet_root=str(root),
                        gluster_log_dir=str(root.parent / "logs"), mount_timeout=5,
                        stats_timeout=1)
    probe = FsProbe(1, mounter.usage)
    locks = KeyedOperations()
    repairer = Repairer(mounter, store, probe, locks, str(root), 5, health_timeout=0.5)
    return NodeService(config, mounter, store, probe, locks, repairer)


def state(root: Path) -> Path:
    return root / "plugins" / "drv" / "state"


async def restarted(root: Path, machine: FakeMounter, old: NodeService) -> NodeService:
    """The container of `old` stopped (its tasks with it); a new node process starts."""
    await old.repairer.close()
    assert machine.restart_container() == [], "a client died with the node container"
    store = StateStore(state(root))
    await store.load()
    new = node(root, machine, store)
    await adopt(store, machine, new.repairer.watch)
    await new.repairer.health_pass()
    return new


def assert_one_client_per_stage(machine: FakeMounter) -> None:
    points = [c.mount_point for c in machine.clients]
    assert len(points) == len(set(points)), f"two clients serve one path: {points}"
    for point in points:
        assert mountinfo.count_at(machine.mounts(), point) == 1


async def assert_nothing_left(root: Path, machine: FakeMounter) -> None:
    assert machine.mounts() == []
    assert machine.clients == []
    assert machine.cgroups == set()
    assert list(state(root).glob("*.json")) == []


async def tear_down(service: NodeService, root: Path, targets: Sequence[str]) -> None:
    for target in targets:
        await unpublish(service, target)
    await unstage(service, root)


# Enough changes for every scenario below to run to its end; the tests check they do.
MOST_CHANGES = 12


def points() -> list[tuple[int, bool]]:
    return list(itertools.product(range(MOST_CHANGES), (False, True)))


async def killed_during(root: Path, machine: FakeMounter, left: int, after: bool,
                        steps: object, setup: object = None) -> tuple[NodeService, bool]:
    """Run `setup(service)` untouched, then `steps(service)` with a process that dies after
    `left` changes; return the restarted node and whether the process died."""
    life = Life(10**6, False)
    store = MortalStore(state(root), life)
    first = node(root, MortalMounter(machine, life), store)
    if setup is not None:
        await setup(first)  # type: ignore[operator]
    life.left, life.after = left, after
    died = False
    try:
        await steps(first)  # type: ignore[operator]
    except Killed:
        died = True
    # Every point of the scenario is covered: the first change kills it, the last does not.
    assert died or left > 0
    assert not died or left < MOST_CHANGES - 1, "raise MOST_CHANGES"
    return await restarted(root, machine, first), died


@pytest.fixture
def machine() -> FakeMounter:
    return FakeMounter()


@pytest.mark.parametrize("left, after", points())
async def test_killed_while_staging(tmp_path: Path, machine: FakeMounter, left: int,
                                   after: bool) -> None:
    root = tmp_path / "kubelet"

    async def steps(service: NodeService) -> None:
        await service.NodeStageVolume(stage_request(root), Ctx())

    service, _ = await killed_during(root, machine, left, after, steps)
    assert_one_client_per_stage(machine)
    await service.NodeStageVolume(stage_request(root), Ctx())  # kubelet's retry
    assert_one_client_per_stage(machine)
    assert len(machine.clients) == 1
    await tear_down(service, root, [])
    await assert_nothing_left(root, machine)


@pytest.mark.parametrize("left, after", points())
async def test_killed_while_staging_then_the_pod_is_gone(tmp_path: Path, machine: FakeMounter,
                                                         left: int, after: bool) -> None:
    """Kubelet gives up the stage (the pod was deleted) and unstages instead."""
    root = tmp_path / "kubelet"

    async def steps(service: NodeService) -> None:
        await service.NodeStageVolume(stage_request(root), Ctx())

    service, _ = await killed_during(root, machine, left, after, steps)
    await unstage(service, root)
    await assert_nothing_left(root, machine)


@pytest.mark.parametrize("left, after", points())
async def test_killed_while_publishing(tmp_path: Path, machine: FakeMounter, left: int,
                                       after: bool) -> None:
    root = tmp_path / "kubelet"
    target = target_path(root, "pod")

    async def setup(service: NodeService) -> None:
        await service.NodeStageVolume(stage_request(root), Ctx())

    async def steps(service: NodeService) -> None:
        await publish(service, root, target, readonly=True)

    service, _ = await killed_during(root, machine, left, after, steps, setup)
    await publish(service, root, target, readonly=True)  # kubelet's retry
    top = mountinfo.mount_at(machine.mounts(), target)
    assert top is not None and top.readonly
    assert len(machine.clients) == 1
    await tear_down(service, root, [target])
    await assert_nothing_left(root, machine)


@pytest.mark.parametrize("left, after", points())
async def test_killed_while_unpublishing_and_unstaging(tmp_path: Path, machine: FakeMounter,
                                                       left: int, after: bool) -> None:
    root = tmp_path / "kubelet"
    target = target_path(root, "pod")

    async def setup(service: NodeService) -> None:
        await service.NodeStageVolume(stage_request(root), Ctx())
        await publish(service, root, target)

    async def steps(service: NodeService) -> None:
        await tear_down(service, root, [target])

    service, _ = await killed_during(root, machine, left, after, steps, setup)
    await tear_down(service, root, [target])  # kubelet's retries
    await assert_nothing_left(root, machine)


@pytest.mark.parametrize("left, after", points())
async def test_killed_while_repairing(tmp_path: Path, machine: FakeMounter, left: int,
                                      after: bool) -> None:
    root = tmp_path / "kubelet"
    targets = [target_path(root, "a"), target_path(root, "b")]

    async def setup(service: NodeService) -> None:
        await service.NodeStageVolume(stage_request(root), Ctx())
        await publish(service, root, targets[0])
        await publish(service, root, targets[1], readonly=True)
        service.repairer.watch.forget(stage_request(root).staging_target_path)

    async def steps(service: NodeService) -> None:
        machine.kill_client(stage_request(root).staging_target_path)
        await service.repairer.repair_all()

    service, _ = await killed_during(root, machine, left, after, steps, setup)
    staging = stage_request(root).staging_target_path
    stage = mountinfo.mount_at(machine.mounts(), staging)
    assert stage is not None and len(machine.clients) == 1
    for target, readonly in zip(targets, (False, True), strict=True):
        top = mountinfo.mount_at(machine.mounts(), target)
        assert top is not None and top.same_origin(stage) and top.readonly is readonly
    await tear_down(service, root, targets)
    await assert_nothing_left(root, machine)


async def test_a_restart_between_calls_adopts_the_clients_it_finds(tmp_path: Path,
                                                                   machine: FakeMounter) -> None:
    root = tmp_path / "kubelet"
    target = target_path(root, "pod")
    life = Life(10**6, False)
    first = node(root, MortalMounter(machine, life), MortalStore(state(root), life))
    await first.NodeStageVolume(stage_request(root), Ctx())
    await publish(first, root, target)
    pids = [c.pid for c in machine.clients]

    second = await restarted(root, machine, first)

    assert [c.pid for c in machine.clients] == pids
    staging = stage_request(root).staging_target_path
    assert second.repairer.watch.pids(staging) == pids
    await second.NodeStageVolume(stage_request(root), Ctx())  # kubelet after its own restart
    await publish(second, root, target)
    assert [c.pid for c in machine.clients] == pids and machine.started == 1
    machine.kill_client(staging)  # the adopted client is followed: a repair follows at once
    await until(lambda: machine.started == 2 and len(machine.clients) == 1,
                "the client started again, one client", 5, 0.01)
    await tear_down(second, root, [target])
    await assert_nothing_left(root, machine)


@pytest.mark.parametrize("finishes", [False, True])
async def test_killed_while_its_mount_helper_runs_on(tmp_path: Path, machine: FakeMounter,
                                                     finishes: bool) -> None:
    """The node dies while mount.glusterfs runs; the helper, in the client group, runs on
    and may finish before the next node process starts. Never two clients for the path."""
    root = tmp_path / "kubelet"
    staging = stage_request(root).staging_target_path
    life = Life(10**6, False)
    first = node(root, MortalMounter(machine, life), MortalStore(state(root), life))
    machine.hold_mounts()
    stage = asyncio.create_task(first.NodeStageVolume(stage_request(root), Ctx()))
    await machine.wait_pending(staging)
    life.dead = True
    if finishes:
        machine.release_mounts()
        with pytest.raises(Killed):
            await stage

    second = await restarted(root, machine, first)
    if not finishes:
        with pytest.raises(Killed):
            await stage  # its helper was ended by the new process's adoption
        machine.release_mounts()
    await second.NodeStageVolume(stage_request(root), Ctx())  # kubelet's retry

    assert len(machine.clients) == 1 and machine.started == 1
    assert_one_client_per_stage(machine)
    await tear_down(second, root, [])
    await assert_nothing_left(root, machine)


async def test_a_second_stage_never_starts_a_second_client_beside_a_stray_one(
        tmp_path: Path, machine: FakeMounter) -> None:
    """The staging mount went (a lazy unmount something still holds) but its client lives:
    staging again ends that client before it starts the new one."""
    root = tmp_path / "kubelet"
    staging = stage_request(root).staging_target_path
    service = node(root, machine, StateStore(state(root)))
    await service.NodeStageVolume(stage_request(root), Ctx())
    service.repairer.watch.forget(staging)
    machine.vanish(staging, keep_clients=True)

    await service.NodeStageVolume(stage_request(root), Ctx())

    assert len(machine.clients) == 1 and machine.started == 2
    await tear_down(service, root, [])
    await assert_nothing_left(root, machine)
