"""The simulator backed by the real glusterd: its volumes mount, clone and go away for real.

Storage: this host's glusterd, on purpose: this is the test of the simulator's glusterd mode
(`--storage glusterd` of the local cluster); pool mode is test_heketi_sim_pool.py's."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devtools import glusterd
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
from tests.support.host import require_gluster_root

pytestmark = pytest.mark.gluster


@pytest.fixture(autouse=True, scope="module")
def _needs_root_and_gluster() -> None:
    require_gluster_root("the simulator on glusterd needs root and GlusterFS (FUSE mounts)")


REPO = Path(__file__).resolve().parents[2]


async def _run(*argv: str, timeout: float = 60.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(errors="replace")


def _mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split()[4] == target for line in f)


def _write_sample(root: Path) -> None:
    (root / "data.txt").write_text("hello gluster\n")
    (root / "sub").mkdir()
    (root / "sub" / "more.bin").write_bytes(b"\x00" * 4096)


def _read_sample(root: Path) -> tuple[str, int]:
    return (root / "data.txt").read_text(), (root / "sub" / "more.bin").stat().st_size


def _owner_and_mode(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_gid, st.st_mode & 0o7777


async def _mount(device: str, mountpoint: Path, options: list[str]) -> None:
    await asyncio.to_thread(mountpoint.mkdir, parents=True, exist_ok=True)
    argv = ["mount", "-t", "glusterfs", device, str(mountpoint)]
    if options:
        argv += ["-o", ",".join(options)]
    code, out = await _run(*argv)
    assert code == 0, f"mount failed: {out}"


async def _umount(mountpoint: Path) -> None:
    if _mounted(mountpoint):
        code, _ = await _run("umount", str(mountpoint))
        if code != 0:
            await _run("umount", "-l", str(mountpoint))


@pytest.fixture
async def gluster_sim(tmp_path: Path) -> AsyncIterator[HeketiSimulator]:
    async with HeketiSimulator(op_latency=INSTANT, admin_key=TEST_ADMIN_KEY, glusterd=True,
                               brick_root=tmp_path / "bricks") as sim:
        yield sim


async def test_volume_mounts_clones_and_is_removed(gluster_sim: HeketiSimulator,
                                                   tmp_path: Path) -> None:
    sim = gluster_sim
    name, clone_name = unique_name("gl"), unique_name("glclone")
    mnt, clone_mnt = tmp_path / "mnt", tmp_path / "clone-mnt"
    async with HeketiClient(sim.url, "admin", TEST_ADMIN_KEY) as client:
        try:
            info = await client.create_volume(VolumeCreateRequest(
                size_gib=1, name=name, durability=Durability.replicate(3), gid=2001,
                snapshot=Snapshot(True, 1.5)))
            assert await glusterd.volume_exists(name)
            assert info.mount.device == f"{glusterd.hostname()}:{name}"
            assert len(info.bricks) == 3  # the recorded durability, not the real volume's
            brick = Path(sim.volume_by_name(name).real_brick or "")  # type: ignore[union-attr]
            assert await asyncio.to_thread(_owner_and_mode, brick) == (2001, 0o2775)

            await _mount(info.mount.device, mnt, info.mount.mount_options())
            await asyncio.to_thread(_write_sample, mnt)
            await _umount(mnt)
            assert await asyncio.to_thread(_read_sample, brick) == ("hello gluster\n", 4096)

            clone = await client.clone_volume(info.id, clone_name)
            assert await glusterd.volume_exists(clone_name)
            await _mount(clone.mount.device, clone_mnt, clone.mount.mount_options())
            assert await asyncio.to_thread(_read_sample, clone_mnt) == ("hello gluster\n", 4096)
            await _umount(clone_mnt)

            clone_brick = Path(sim.volume_by_name(clone_name).real_brick or "")  # type: ignore[union-attr]
            for volume_id in (clone.id, info.id):
                await client.delete_volume(volume_id)
            with pytest.raises(HeketiNotFound):
                await client.volume_info(info.id)
            listed = await glusterd.list_volumes()
            assert name not in listed and clone_name not in listed
            assert not await asyncio.to_thread(brick.exists)
            assert not await asyncio.to_thread(clone_brick.exists)
        finally:
            await _umount(mnt)
            await _umount(clone_mnt)
            for leftover in (clone_name, name):
                await glusterd.delete_volume(leftover)


async def test_simulator_process_removes_its_volumes_on_sigterm(tmp_path: Path) -> None:
    name = unique_name("glproc")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devtools.heketi_sim", "--port", "0",
        "--admin-key", TEST_ADMIN_KEY, "--user-key", "u", "--glusterd",
        "--brick-root", str(tmp_path / "bricks"),
        cwd=REPO, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        assert line.startswith("heketi-sim listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[-1]
        async with HeketiClient(url, "admin", TEST_ADMIN_KEY) as client:
            await client.create_volume(VolumeCreateRequest(size_gib=1, name=name))
        assert await glusterd.volume_exists(name)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        assert not await glusterd.volume_exists(name)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(glusterd.GlusterError):
            await glusterd.delete_volume(name)
