"""Simulated volumes have their real size: statfs through a gluster mount shows it, an
expansion grows it, a clone (what a restore is) gets its source's size and then the size it
is expanded to, and writing beyond it fails. Each of these fails with directory bricks,
which report the size of the disk under the brick root.

Storage: this host's glusterd, on purpose: the sized bricks of glusterd mode are what is
tested; pool mode's bricks (one XFS each) are test_heketi_sim_pool.py's."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devtools import glusterd
from devtools.heketi_sim import HeketiSimulator
from devtools.heketi_sim.brick_fs import unsupported_reason
from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.testing import TEST_ADMIN_KEY, unique_name
from services.common.commands import run_command
from services.controller.heketi import (
    Durability,
    HeketiClient,
    Snapshot,
    VolumeCreateRequest,
    VolumeInfo,
)
from services.node import mountinfo
from tests.support.host import require_gluster_root

pytestmark = pytest.mark.gluster


@pytest.fixture(autouse=True, scope="module")
def _needs_root_and_gluster() -> None:
    require_gluster_root("sized bricks need root, loop devices and GlusterFS")


GIB = 1024**3
# XFS keeps its 64 MiB log and some metadata inside the brick, as on a real Heketi brick.
XFS_OVERHEAD = 0.08


def _total(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def assert_size(path: Path, gib: int) -> None:
    total = _total(path)
    assert gib * GIB * (1 - XFS_OVERHEAD) <= total <= gib * GIB, \
        f"statfs shows {total / GIB:.3f} GiB, the volume has {gib} GiB"


class Mounts:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.points: list[Path] = []

    async def mount(self, info: VolumeInfo) -> Path:
        point = self.base / f"mnt-{len(self.points)}"
        point.mkdir()
        result = await run_command(["mount", "-t", "glusterfs", info.mount.device, str(point)],
                                   60)
        assert result.returncode == 0, result.output
        self.points.append(point)
        return point

    async def close(self) -> None:
        for point in reversed(self.points):
            await run_command(["umount", "-l", str(point)], 30)


@pytest.fixture
async def sized(tmp_path: Path) -> AsyncIterator[tuple[HeketiSimulator, HeketiClient, Mounts]]:
    reason = unsupported_reason()
    if reason is not None:
        pytest.fail(f"this machine cannot make sized bricks: {reason}")
    mounts = Mounts(tmp_path)
    async with (HeketiSimulator(op_latency=INSTANT, admin_key=TEST_ADMIN_KEY, glusterd=True,
                                brick_root=tmp_path / "bricks") as sim,
                HeketiClient(sim.url, "admin", TEST_ADMIN_KEY) as client):
        try:
            yield sim, client, mounts
        finally:
            await mounts.close()
    # The simulator took its file systems, images and loop devices with it.
    assert [m.mount_point for m in mountinfo.read()
            if m.mount_point.startswith(str(tmp_path))] == []
    assert not (tmp_path / "bricks" / ".images").exists()
    attached = (await run_command(["losetup", "-a"], 30)).output
    assert str(tmp_path) not in attached


async def test_statfs_expand_and_restore_to_larger_size(sized: tuple[
        HeketiSimulator, HeketiClient, Mounts]) -> None:
    sim, client, mounts = sized
    name, clone_name = unique_name("size"), unique_name("sizeclone")
    info = await client.create_volume(VolumeCreateRequest(
        size_gib=1, name=name, durability=Durability.replicate(3),
        snapshot=Snapshot(True, 1.5)))
    mnt = await mounts.mount(info)
    await asyncio.to_thread(assert_size, mnt, 1)
    await asyncio.to_thread((mnt / "data.txt").write_text, "before the clone\n")

    info = await client.expand_volume(info.id, 2)
    assert info.size_gib == 3
    await asyncio.to_thread(assert_size, mnt, 3)  # the mounted volume grew in place

    # A restore is a clone (the source's size), expanded to the size asked for.
    clone = await client.clone_volume(info.id, clone_name)
    assert clone.size_gib == 3
    clone_mnt = await mounts.mount(clone)
    await asyncio.to_thread(assert_size, clone_mnt, 3)
    clone = await client.expand_volume(clone.id, 2)
    await asyncio.to_thread(assert_size, clone_mnt, 5)
    assert await asyncio.to_thread((clone_mnt / "data.txt").read_text) == "before the clone\n"
    await asyncio.to_thread(assert_size, mnt, 3)  # the source is unchanged
    await mounts.close()
    for volume_id in (clone.id, info.id):
        await client.delete_volume(volume_id)
    assert sim.gluster is not None and sim.gluster.sized is not None
    assert sim.gluster.sized.mounted == set()


def _fill(path: Path) -> int:
    """Write until the volume is full (most of it reserved first, to write less); then ask
    for more than it holds."""
    written = 0
    chunk = b"\xa5" * (4 * 1024 * 1024)
    with open(path / "fill", "wb", buffering=0) as f:
        os.posix_fallocate(f.fileno(), 0, 850 * 1024 * 1024)
        f.seek(850 * 1024 * 1024)
        with pytest.raises(OSError) as full:
            while written < 2 * GIB:
                written += f.write(chunk) or 0
                os.fsync(f.fileno())
    assert full.value.errno in (errno.ENOSPC, errno.EDQUOT), full.value
    (path / "fill").unlink()
    with pytest.raises(OSError) as too_big, open(path / "more", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 2 * GIB)
    assert too_big.value.errno in (errno.ENOSPC, errno.EDQUOT)
    return written


async def test_writing_beyond_the_size_fails(sized: tuple[
        HeketiSimulator, HeketiClient, Mounts]) -> None:
    _, client, mounts = sized
    info = await client.create_volume(VolumeCreateRequest(size_gib=1, name=unique_name("full")))
    mnt = await mounts.mount(info)
    written = await asyncio.wait_for(asyncio.to_thread(_fill, mnt), 120)
    assert written < 200 * 1024 * 1024  # past 850 MiB reserved, less than the rest of 1 GiB
    await mounts.close()
    await client.delete_volume(info.id)


async def test_directory_bricks_report_the_host_disk(tmp_path: Path) -> None:
    """The opt-out lies, as it says: a 1 GiB volume shows the disk under the brick root."""
    name = unique_name("unsized")
    mounts = Mounts(tmp_path)
    async with HeketiSimulator(op_latency=INSTANT, admin_key=TEST_ADMIN_KEY, glusterd=True,
                               sized_bricks=False,
                               brick_root=tmp_path / "bricks") as sim:
        try:
            async with HeketiClient(sim.url, "admin", TEST_ADMIN_KEY) as client:
                info = await client.create_volume(VolumeCreateRequest(size_gib=1, name=name))
                mnt = await mounts.mount(info)
                disk = await asyncio.to_thread(_total, tmp_path)
                seen = await asyncio.to_thread(_total, mnt)
                assert abs(seen - disk) < 0.05 * disk
        finally:
            await mounts.close()
            with contextlib.suppress(glusterd.GlusterError):
                await glusterd.delete_volume(name)
