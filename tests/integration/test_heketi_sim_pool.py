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
    VolumeCreateRequest,
)

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
