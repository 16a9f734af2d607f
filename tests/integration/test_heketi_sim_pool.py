"""The Heketi simulator in pool mode: volumes made across a real GlusterFS pool as Heketi makes
them (a brick of each set on a different server, each brick an XFS file system of its own,
replica 3, arbiter and disperse really made, glustervolumeoptions really applied)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devtools.gluster_pool import GlusterPool, PoolConfig
from devtools.heketi_sim import HeketiSimulator
from devtools.heketi_sim.latency import INSTANT
from devtools.heketi_sim.testing import TEST_ADMIN_KEY, unique_name
from services.controller.heketi import (
    Durability,
    HeketiClient,
    HeketiNotFound,
    Snapshot,
    VolumeCreateRequest,
)
from tests.support.conditions import until

pytestmark = [pytest.mark.gluster]


@pytest.fixture(scope="module")
def pool() -> Iterator[GlusterPool]:
    mine = GlusterPool(PoolConfig(name="gpsim", subnet="10.231.5"), log=print)
    asyncio.run(mine.down())
    try:
        asyncio.run(mine.up())
    except Exception:
        asyncio.run(mine.down())
        raise
    yield mine
    assert asyncio.run(mine.down()) == []


@pytest.fixture
async def sim(pool: GlusterPool) -> AsyncIterator[HeketiSimulator]:
    async with HeketiSimulator(op_latency=INSTANT, admin_key=TEST_ADMIN_KEY,
                               gluster_pool="gpsim") as sim:
        yield sim
    pool.reload()
    assert [fs for i in pool.indexes for fs in pool.state.server(i).filesystems] == []


async def _volume_names(pool: GlusterPool) -> list[str]:
    root = await pool.gluster("volume", "list")
    return [v.text or "" for v in root.iterfind("volList/volume")]


# disperse 2+1 of 2 GiB: 1 GiB bricks (1 GiB is Heketi's smallest brick)
@pytest.mark.parametrize("durability,size,options,want", [
    (Durability.replicate(3), 1, (), ("Replicate", 3, 0, 0)),
    (Durability.replicate(3), 1, ("user.heketi.arbiter true",), ("Replicate", 3, 1, 0)),
    (Durability.disperse(2, 1), 2, (), ("Disperse", 0, 0, 3)),
], ids=["replica3", "arbiter", "disperse2+1"])
async def test_a_volume_is_made_across_the_pool(
        pool: GlusterPool, sim: HeketiSimulator, durability: Durability, size: int,
        options: tuple[str, ...], want: tuple[str, int, int, int]) -> None:
    name = unique_name("pool")
    async with HeketiClient(sim.url, "admin", TEST_ADMIN_KEY) as client:
        info = await client.create_volume(VolumeCreateRequest(
            size_gib=size, name=name, durability=durability, gid=2001,
            gluster_volume_options=("performance.readdir-ahead off", *options)))
        try:
            real = await pool.volume_info(name)
            kind, replica, arbiter, disperse = want
            assert real.type == kind and real.arbiter == arbiter
            if replica:
                assert real.replica == replica
            if disperse:
                assert (real.disperse, real.redundancy) == (disperse, 1)
            assert real.options.get("performance.readdir-ahead") == "off"
            # one brick per server, each on a file system of its own
            assert sorted(b.host for b in real.bricks) == \
                sorted(pool.address(i) for i in pool.indexes)
            # Heketi lists the mount hosts in node-id order: the first is any of the servers
            assert info.mount.device in {f"{pool.address(i)}:{name}" for i in pool.indexes}
            for brick in real.bricks:
                index = pool.index_of(brick.host)
                fs = Path(f"/proc/{pool.server_pid(index)}/root{brick.path}").parent
                assert await asyncio.to_thread(os.path.ismount, fs)
                stat = await asyncio.to_thread(
                    os.stat, f"/proc/{pool.server_pid(index)}/root{brick.path}")
                assert (stat.st_gid, stat.st_mode & 0o7777) == (2001, 0o2775)
            target = pool.mounts_dir / name
            await pool.mount(name, target)
            try:
                await asyncio.to_thread((target / "f").write_text, "across the pool\n")
                assert await asyncio.to_thread((target / "f").read_text) == \
                    "across the pool\n"
            finally:
                await pool.unmount(target)
        finally:
            await client.delete_volume(info.id)
        with pytest.raises(HeketiNotFound):
            await client.volume_info(info.id)
    assert name not in await _volume_names(pool)


async def test_an_option_gluster_refuses_fails_the_create_with_its_text(
        pool: GlusterPool, sim: HeketiSimulator) -> None:
    name = unique_name("badopt")
    async with HeketiClient(sim.url, "admin", TEST_ADMIN_KEY) as client:
        with pytest.raises(Exception) as failed:
            await client.create_volume(VolumeCreateRequest(
                size_gib=1, name=name, durability=Durability.replicate(3),
                gluster_volume_options=("no.such.option on",)))
    assert "no.such.option" in str(failed.value)
    assert name not in await _volume_names(pool)
    pool.reload()
    assert [fs for i in pool.indexes for fs in pool.state.server(i).filesystems] == []


async def _bricks_on_filesystems(pool: GlusterPool, name: str) -> list[tuple[str, str]]:
    """(server address, the brick's own file system) of every brick of `name`."""
    found = []
    for brick in (await pool.volume_info(name)).bricks:
        index = pool.index_of(brick.host)
        fs = Path(f"/proc/{pool.server_pid(index)}/root{brick.path}").parent
        assert await asyncio.to_thread(os.path.ismount, fs), f"{brick} on its own file system"
        found.append((brick.host, str(fs)))
    return found


async def _size_gib(path: Path) -> float:
    st = await asyncio.to_thread(os.statvfs, path)
    return st.f_blocks * st.f_frsize / 1024 ** 3


async def test_an_expansion_adds_a_brick_set_and_the_mounted_volume_grows(
        pool: GlusterPool, sim: HeketiSimulator) -> None:
    name = unique_name("grow")
    async with HeketiClient(sim.url, "admin", TEST_ADMIN_KEY) as client:
        info = await client.create_volume(VolumeCreateRequest(
            size_gib=1, name=name, durability=Durability.replicate(3), gid=2002))
        target = pool.mounts_dir / name
        try:
            await pool.mount(name, target)
            try:
                await asyncio.to_thread((target / "before").write_text, "1\n")
                assert 0.8 < await _size_gib(target) < 1.0
                expanded = await client.expand_volume(info.id, 1)
                assert expanded.size_gib == 2
                real = await pool.volume_info(name)
                assert (real.type, real.replica, len(real.bricks)) == \
                    ("Distributed-Replicate", 3, 6)
                bricks = await _bricks_on_filesystems(pool, name)
                assert len({fs for _host, fs in bricks}) == 6
                # each set of three on the three servers (add-brick takes whole sets)
                for first in (0, 3):
                    assert sorted(h for h, _fs in bricks[first:first + 3]) == \
                        sorted(pool.address(i) for i in pool.indexes)
                await until(lambda: _grown(target), "the mounted volume shows 2 GiB",
                            timeout=60)
                assert await asyncio.to_thread((target / "before").read_text) == "1\n"
                await asyncio.to_thread((target / "after").write_text, "2\n")
            finally:
                await pool.unmount(target)
        finally:
            await client.delete_volume(info.id)
    assert name not in await _volume_names(pool)
    pool.reload()
    assert [fs for i in pool.indexes for fs in pool.state.server(i).filesystems] == []


async def _grown(target: Path) -> bool:
    return 1.8 < await _size_gib(target) < 2.0


@pytest.mark.parametrize("durability,size,want", [
    (Durability.replicate(3), 1, ("Replicate", 3)),
    (Durability.disperse(2, 1), 2, ("Disperse", 3)),
], ids=["replica3", "disperse2+1"])
async def test_a_clone_has_the_sources_layout_size_and_files(
        pool: GlusterPool, sim: HeketiSimulator, durability: Durability, size: int,
        want: tuple[str, int]) -> None:
    name = unique_name("src")
    async with HeketiClient(sim.url, "admin", TEST_ADMIN_KEY) as client:
        info = await client.create_volume(VolumeCreateRequest(
            size_gib=size, name=name, durability=durability, gid=2003,
            snapshot=Snapshot(enable=True, factor=1.0)))
        clone_id = ""
        src, dst = pool.mounts_dir / name, pool.mounts_dir / f"{name}-c"
        try:
            await pool.mount(name, src)
            try:
                await asyncio.to_thread(_write_tree, src)
                source_size = await _size_gib(src)
            finally:
                await pool.unmount(src)
            clone = await client.clone_volume(info.id, f"{name}_c")
            clone_id = clone.id
            assert clone.size_gib == size
            real = await pool.volume_info(clone.name)
            kind, bricks = want
            assert (real.type, len(real.bricks)) == (kind, bricks)
            assert sorted(h for h, _fs in await _bricks_on_filesystems(pool, clone.name)) == \
                sorted(pool.address(i) for i in pool.indexes)
            source_fs = {fs for _h, fs in await _bricks_on_filesystems(pool, name)}
            assert source_fs.isdisjoint(
                fs for _h, fs in await _bricks_on_filesystems(pool, clone.name))
            await pool.mount(clone.name, dst)
            try:
                assert await asyncio.to_thread(_read_tree, dst) == _TREE
                assert abs(await _size_gib(dst) - source_size) < 0.01
                # the clone is a volume of its own: writing to it leaves the source alone
                await asyncio.to_thread((dst / "only-in-clone").write_text, "c\n")
                st = await asyncio.to_thread(os.stat, dst / "dir")
                assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 2003, 0o2750)
            finally:
                await pool.unmount(dst)
            await pool.mount(name, src)
            try:
                assert not await asyncio.to_thread((src / "only-in-clone").exists)
            finally:
                await pool.unmount(src)
        finally:
            if clone_id:
                await client.delete_volume(clone_id)
            await client.delete_volume(info.id)
    left = await _volume_names(pool)
    assert name not in left and f"{name}_c" not in left
    assert not any(p.name.startswith("clone-") for p in pool.mounts_dir.iterdir())


_TREE = {"top.txt": "top\n", "dir/inner.bin": "x" * 300_000, "dir/deeper/last": "end\n"}


def _write_tree(root: Path) -> None:
    for relative, text in _TREE.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    os.chown(root / "dir", 1234, 2003)
    os.chmod(root / "dir", 0o2750)


def _read_tree(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            found[str(path.relative_to(root))] = path.read_text()
    return found
