"""The GlusterFS pool of devtools/gluster_pool: real servers in namespaces of their own, real
FUSE mounts from the host through the host's veth, and the faults users meet.

One pool (`gptest`, 10.231.1.0/24) is shared by the tests of this module; the tests of
teardown make pools of their own (`gpdown`, `gpkill`). The measured numbers (writer pause
per fault, heal time, mount time with the first server partitioned) are printed (`-s`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devtools.gluster_pool import GlusterPool, PoolConfig
from devtools.gluster_pool.processes import MARKER_PREFIX
from devtools.gluster_pool.state import PoolState, root
from devtools.gluster_pool.writer_log import Writer
from services.common.commands import run_command
from tests.support.conditions import until

pytestmark = [pytest.mark.gluster]

PING_TIMEOUT = 5
FAULT_SECONDS = 8.0  # how long a fault lasts while the writer writes (past the ping-timeout)


def report(line: str) -> None:
    print(f"[gluster-pool] {line}", flush=True)


def _pool(name: str, subnet: str) -> GlusterPool:
    return GlusterPool(PoolConfig(name=name, subnet=subnet), log=report)


@pytest.fixture(scope="module")
def pool() -> Iterator[GlusterPool]:
    mine = _pool("gptest", "10.231.1")
    asyncio.run(mine.down())  # what an earlier, killed run may have left
    start = time.monotonic()
    try:
        asyncio.run(mine.up())
    except Exception:
        asyncio.run(mine.down())
        raise
    report(f"pool of 3 up in {time.monotonic() - start:.2f} s")
    yield mine
    left = asyncio.run(mine.down())
    assert left == [], f"the pool's teardown left: {left}"


@pytest.fixture(scope="module")
def faults_volume(pool: GlusterPool) -> Iterator[Path]:
    """A replica 3 volume (ping-timeout 5 s) mounted on the host, for the fault tests."""
    asyncio.run(pool.volume_create("faults", "replica",
                                   options={"network.ping-timeout": str(PING_TIMEOUT)}))
    target = pool.mounts_dir / "faults"
    asyncio.run(pool.mount("faults", target))
    yield target
    asyncio.run(pool.unmount(target))
    # A server that a fault test restored may not be a connected peer again yet, and gluster
    # refuses a delete while any peer is down ("Some of the peers are down").
    asyncio.run(pool.wait_connected(pool.indexes))
    asyncio.run(pool.volume_delete("faults"))


@pytest.fixture
async def all_running(pool: GlusterPool) -> AsyncIterator[None]:
    """Every server back up (and linked) after the test, whatever it did."""
    yield
    for i in pool.indexes:
        status = pool.state.server(i).status
        if status == "partitioned":
            await pool.restore(i)
        elif status in ("off", "stopped"):
            await pool.start(i)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _check_after_fault(pool: GlusterPool, writer: Writer, name: str) -> None:
    """Heal; the file byte-identical on the three bricks; every acknowledged line in it."""
    heal = await pool.heal("faults")
    digests = {i: await asyncio.to_thread(_sha, pool.brick_file(i, "faults", name))
               for i in pool.indexes}
    assert len(set(digests.values())) == 1, f"bricks differ after heal: {digests}"
    lines = (await asyncio.to_thread(pool.brick_file(1, "faults", name).read_text)).split()
    acked = writer.acked()
    assert acked, "the writer acknowledged nothing"
    missing = sorted(set(acked) - {int(x) for x in lines})
    assert missing == [], f"acknowledged writes missing from the file: {missing[:20]}"
    report(f"{name}: {len(acked)} acknowledged writes all present, bricks identical, "
           f"heal {heal:.2f} s")


async def _connected(pool: GlusterPool, mount: Path) -> None:
    """The client is connected to all three bricks again (before a fault, after a return)."""
    seconds = await pool.wait_client_connected(mount)
    if seconds > 0.05:
        report(f"client reconnected to every brick after {seconds:.2f} s")


async def _writing(writer: Writer, count: int = 10) -> None:
    seen = len(writer.acked())
    await until(lambda: len(writer.acked()) >= seen + count, f"{count} writes acknowledged")


async def test_the_pool_is_three_connected_servers_of_their_own(pool: GlusterPool) -> None:
    for i in pool.indexes:
        assert await pool.connected_peers(i) == {pool.address(j) for j in pool.indexes}
        pid_ns = pool.state.server(i).pid_ns
        assert pid_ns is not None and pid_ns != os.readlink("/proc/self/ns/pid")
        assert os.readlink(f"/proc/{pool.server_pid(i)}/ns/net") != \
            os.readlink("/proc/self/ns/net")
    # the host's glusterd still owns the host's socket and answers there
    host = await run_command(["gluster", "--mode=script", "--xml", "pool", "list"], 30)
    assert "<opRet>0</opRet>" in host.output
    assert pool.address(1) not in host.output


async def test_replica_3_has_one_brick_on_each_server(pool: GlusterPool) -> None:
    info = await pool.volume_create("r3", "replica")
    try:
        assert (info.type, info.replica, info.status) == ("Replicate", 3, "Started")
        assert [b.host for b in info.bricks] == [pool.address(i) for i in pool.indexes]
        target = pool.mounts_dir / "r3"
        await pool.mount("r3", target)
        try:
            await asyncio.to_thread((target / "hello").write_bytes, b"on three servers\n")
        finally:
            await pool.unmount(target)
        for i in pool.indexes:
            data = await asyncio.to_thread(pool.brick_file(i, "r3", "hello").read_bytes)
            assert data == b"on three servers\n"
    finally:
        await pool.volume_delete("r3")


@pytest.mark.parametrize("kind", ["arbiter", "disperse"])
async def test_arbiter_and_disperse_volumes_are_really_made(pool: GlusterPool,
                                                            kind: str) -> None:
    name = f"k{kind[:3]}"
    info = await pool.volume_create(name, kind)
    try:
        if kind == "arbiter":
            assert (info.type, info.replica, info.arbiter) == ("Replicate", 3, 1)
        else:
            assert (info.type, info.disperse, info.redundancy) == ("Disperse", 3, 1)
        assert len({b.host for b in info.bricks}) == 3
        target = pool.mounts_dir / name
        await pool.mount(name, target)
        payload = os.urandom(256 * 1024)
        try:
            await asyncio.to_thread((target / "data").write_bytes, payload)
            assert await asyncio.to_thread((target / "data").read_bytes) == payload
        finally:
            await pool.unmount(target)
        sizes = [(await asyncio.to_thread(pool.brick_file(i, name, "data").stat)).st_size
                 for i in pool.indexes]
        if kind == "arbiter":  # two full copies and an arbiter holding metadata only
            assert sizes == [len(payload), len(payload), 0]
        else:  # fragments of half the data each
            assert all(0 < s < len(payload) for s in sizes), sizes
    finally:
        await pool.volume_delete(name)


@pytest.mark.pool_faults
async def test_a_partitioned_server_costs_no_write(pool: GlusterPool, faults_volume: Path,
                                                   all_running: None, tmp_path: Path) -> None:
    await _connected(pool, faults_volume)
    async with Writer(faults_volume / "partition.txt", tmp_path / "writer.log") as writer:
        await _writing(writer)
        fault = time.time()
        await pool.partition(2)
        await until(lambda: writer.oks_after(fault + FAULT_SECONDS) > 0,
                    f"a write that began {FAULT_SECONDS:g} s into the partition succeeded",
                    timeout=60)
        await pool.restore(2)
        await _connected(pool, faults_volume)
        await _writing(writer)
    assert writer.errors() == []
    report(f"partition: longest write {writer.longest(fault):.2f} s "
           f"(ping-timeout {PING_TIMEOUT} s)")
    await _check_after_fault(pool, writer, "partition.txt")


@pytest.mark.pool_faults
async def test_a_server_powered_off_and_restarted_costs_no_write(
        pool: GlusterPool, faults_volume: Path, all_running: None, tmp_path: Path) -> None:
    await _connected(pool, faults_volume)
    async with Writer(faults_volume / "poweroff.txt", tmp_path / "writer.log") as writer:
        await _writing(writer)
        fault = time.time()
        await pool.kill(3)
        await until(lambda: writer.oks_after(fault + FAULT_SECONDS) > 0,
                    f"a write that began {FAULT_SECONDS:g} s after the power-off succeeded",
                    timeout=60)
        await pool.start(3)
        await _connected(pool, faults_volume)
        await _writing(writer)
    assert writer.errors() == []
    report(f"power-off: longest write {writer.longest(fault):.2f} s "
           f"(ping-timeout {PING_TIMEOUT} s)")
    await _check_after_fault(pool, writer, "poweroff.txt")


@pytest.mark.pool_faults
async def test_two_servers_down_fail_writes_until_they_return(
        pool: GlusterPool, faults_volume: Path, all_running: None, tmp_path: Path) -> None:
    await _connected(pool, faults_volume)
    async with Writer(faults_volume / "quorum.txt", tmp_path / "writer.log") as writer:
        await _writing(writer)
        fault = time.time()
        await pool.kill(2)
        await pool.kill(3)
        await until(lambda: len(writer.errors()) > 0, "a write failed (quorum lost)",
                    timeout=60)
        first_error = min(a.start + a.seconds for a in writer.errors())
        await pool.start(2)
        back = time.time()  # quorum (2 of 3) is possible again from here
        await until(lambda: writer.oks_after(back) > 0, "the writer resumed", timeout=60)
        resumed = min(a.start + a.seconds for a in writer.attempts()
                      if a.ok and a.start >= back)
        await pool.start(3)
        await _connected(pool, faults_volume)
        await _writing(writer)
    kinds = {a.error for a in writer.errors()}
    assert kinds == {"ENOTCONN"}, f"failed writes: {kinds}"
    report(f"two down: first failure {first_error - fault:.2f} s after the power-off "
           f"(ping-timeout {PING_TIMEOUT} s), {len(writer.errors())} failed writes, the "
           f"writer resumed {resumed - back:.2f} s after the second server was back")
    await _check_after_fault(pool, writer, "quorum.txt")


@pytest.mark.pool_faults
async def test_mount_with_the_first_volfile_server_partitioned(
        pool: GlusterPool, faults_volume: Path, all_running: None) -> None:
    target = pool.mounts_dir / "first-partitioned"
    await asyncio.to_thread((faults_volume / "before-partition").write_text, "seen\n")
    await pool.partition(1)
    try:
        seconds = await pool.mount("faults", target, first=1)
        assert await asyncio.to_thread(os.path.ismount, target)
        seen = await asyncio.to_thread((target / "before-partition").read_text)
        assert seen == "seen\n"
    finally:
        await pool.unmount(target)
    report(f"mount with the first volfile server partitioned: {seconds:.2f} s "
           "(backup-volfile-servers)")


# --- teardown leaves nothing -----------------------------------------------------------

def _machine_leftovers(name: str, pool_dir: Path, pid_namespaces: list[str]) -> list[str]:
    """What of pool `name` the machine still holds, found without the pool's own code."""
    found = []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True,
                           timeout=30).stdout
    if f"hcsi-{name}" in links:
        found.append("host veth")
    loops = subprocess.run(["losetup", "-J", "-l"], capture_output=True, text=True,
                           check=True, timeout=30).stdout
    for dev in json.loads(loops or '{"loopdevices": []}')["loopdevices"]:
        if (dev.get("back-file") or "").startswith(str(pool_dir) + "/"):
            found.append(f"loop device {dev['name']}")
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        for line in info:
            if str(pool_dir) in line.split()[4]:
                found.append(f"mount {line.split()[4]}")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
            pid_ns = os.readlink(entry / "ns" / "pid")
        except OSError:
            continue
        if f"{MARKER_PREFIX}{name}:".encode() in argv or pid_ns in pid_namespaces:
            found.append(f"process {entry.name}: {argv[:120]!r}")
        elif str(pool_dir).encode() in argv and b"glusterfs" in argv:
            found.append(f"gluster client {entry.name}")
    return found


async def test_down_leaves_nothing() -> None:
    mine = _pool("gpdown", "10.231.2")
    await mine.down()
    try:
        await mine.up()
        await mine.volume_create("d3", "replica")
        await mine.mount("d3", mine.mounts_dir / "d3")
        await asyncio.to_thread((mine.mounts_dir / "d3" / "f").write_text, "x\n")
        await mine.kill(2)  # a namespace that may linger on orphaned sockets
    finally:
        pid_namespaces = list(mine.state.pid_namespaces)
        assert len(pid_namespaces) == 3
        left = await mine.down()
    assert left == []
    assert _machine_leftovers("gpdown", mine.dir, pid_namespaces) == []
    assert not mine.dir.exists()


@pytest.mark.parametrize("state_dir", ["kept", "removed"])
async def test_down_cleans_up_after_up_was_killed_midway(tmp_path: Path,
                                                         state_dir: str) -> None:
    name, pool_dir = "gpkill", root() / "gpkill"
    await _pool(name, "10.231.3").down()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devtools.gluster_pool", "--name", name, "--subnet",
            "10.231.3", "up", stdout=out, stderr=out, start_new_session=True,
            cwd=Path(__file__).parents[2])

    def midway() -> bool:
        state = PoolState.load(pool_dir / "state.json")
        return state is not None and any(s.pid for s in state.members.values())

    try:
        await until(midway, "`up` started a server's namespaces", timeout=60)
    finally:
        up.send_signal(signal.SIGKILL)
        await up.wait()
    state = PoolState.load(pool_dir / "state.json")
    assert state is not None
    pid_namespaces = list(state.pid_namespaces)
    assert _machine_leftovers(name, pool_dir, pid_namespaces) != [], \
        "the killed `up` left nothing to clean: the test proves nothing"
    if state_dir == "removed":  # `down` must then go by names alone
        await asyncio.to_thread(shutil.rmtree, pool_dir)
    down = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devtools.gluster_pool", "--name", name, "down",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=Path(__file__).parents[2])
    output, _ = await asyncio.wait_for(down.communicate(), 120)
    report(output.decode(errors="replace").strip())
    assert down.returncode == 0
    await until(lambda: _machine_leftovers(name, pool_dir, pid_namespaces) == [],
                "nothing of the killed pool left", timeout=30)
    assert not pool_dir.exists()
