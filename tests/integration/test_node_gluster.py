"""The node plugin against a real glusterd and real FUSE mounts, driven over gRPC.

Each test starts `heketi-csi node` on a unix socket with its own kubelet root under tmp_path,
creates `hcsitest_` gluster volumes with directory bricks, and calls the Node service as
kubelet does. Everything (mounts, clients, volumes, processes) is removed in `finally`.

Storage: this host's glusterd, on purpose (not the pool the local cluster uses): these
tests exercise the node's mount, stats and repair logic on one-brick volumes they make and
break themselves, in milliseconds; replication is not what they test.
"""

# Checks of local test directories after unmounting are fine on the test's loop.
# ruff: noqa: ASYNC240

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from devtools import glusterd
from devtools.localcluster.processes import HEKETI_CSI, ManagedProcess, wait_ready
from services.common.commands import run_command
from services.common.identity import plugin_capabilities
from services.common.proto import csi_grpc, csi_pb2
from services.node import mountinfo, mountopts
from services.node.boundary import Tree
from services.node.mounter import gluster_clients_of
from services.node.offloop import Lane
from tests.support.conditions import until

pytestmark = pytest.mark.gluster

Cap = csi_pb2.VolumeCapability
RW_CAP = Cap(
    mount=Cap.MountVolume(), access_mode=Cap.AccessMode(mode=Cap.AccessMode.MULTI_NODE_MULTI_WRITER)
)
STATS_TIMEOUT = 2.0


@pytest.fixture(scope="session", autouse=True)
def _glusterd() -> None:
    glusterd.ensure_glusterd()


def vol_name() -> str:
    return f"hcsitest_{uuid.uuid4().hex[:10]}"


@dataclass
class Node:
    """A running node process and what the test made, for clean-up."""

    tmp: Path
    root: Path
    sock: Path
    proc: ManagedProcess
    channel: Channel
    stub: csi_grpc.NodeStub
    volumes: list[str] = field(default_factory=list)
    bricks: Path = Path()
    old_procs: list[ManagedProcess] = field(default_factory=list)

    async def restart(self, repair_interval: float = 0) -> None:
        """Kill the node process as a dying container would (SIGKILL) and start a new one."""
        self.channel.close()
        await self.proc.kill()
        self.old_procs.append(self.proc)
        self.proc, self.sock = await start_node(
            self.tmp, self.root, repair_interval, tag=str(len(self.old_procs) + 1)
        )
        self.channel = Channel(path=str(self.sock))
        self.stub = csi_grpc.NodeStub(self.channel)

    def staging(self, name: str) -> str:
        """Where kubelet stages volume `name` (id `id-<name>`): the sha256 of the id."""
        digest = hashlib.sha256(f"id-{name}".encode()).hexdigest()
        return f"{self.root}/plugins/kubernetes.io/csi/glusterfs.heketi.csi.io/{digest}/globalmount"

    def target(self, pod: str, name: str) -> str:
        return f"{self.root}/pods/{pod}/volumes/kubernetes.io~csi/{name}/mount"

    async def new_volume(self) -> str:
        name = vol_name()
        self.volumes.append(name)
        await glusterd.create_volume(name, self.bricks)
        return name

    async def stage(self, volume: str, *, staging: str | None = None, cap: Cap = RW_CAP) -> str:
        path = staging or self.staging(volume)
        await self.stub.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=f"id-{volume}",
                staging_target_path=path,
                volume_capability=cap,
                volume_context={"volume": volume, "hosts": glusterd.hostname()},
            ),
            timeout=60,
        )
        return path

    async def publish(self, volume: str, target: str, readonly: bool = False) -> None:
        # Kubelet creates the parent of the target; the driver the target itself.
        os.makedirs(os.path.dirname(target), exist_ok=True)
        await self.stub.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=f"id-{volume}",
                staging_target_path=self.staging(volume),
                target_path=target,
                volume_capability=RW_CAP,
                readonly=readonly,
            ),
            timeout=60,
        )

    async def unpublish(self, volume: str, target: str) -> None:
        await self.stub.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=f"id-{volume}", target_path=target),
            timeout=60,
        )

    async def unstage(self, volume: str) -> None:
        await self.stub.NodeUnstageVolume(
            csi_pb2.NodeUnstageVolumeRequest(
                volume_id=f"id-{volume}", staging_target_path=self.staging(volume)
            ),
            timeout=60,
        )

    async def stats(self, volume: str, path: str) -> csi_pb2.NodeGetVolumeStatsResponse:
        return await self.stub.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id=f"id-{volume}", volume_path=path),
            timeout=30,
        )

    def brick(self, volume: str) -> Path:
        return self.bricks / volume / "brick0"

    def our_mounts(self) -> list[mountinfo.Mount]:
        prefix = str(self.root) + "/"
        return [m for m in mountinfo.read() if m.mount_point.startswith(prefix)]


def node_process(
    tmp: Path, root: Path, sock: Path, repair_interval: float, tag: str
) -> ManagedProcess:
    return ManagedProcess(
        f"node-{tag}",
        [
            *HEKETI_CSI, "node",
            "--endpoint", f"unix://{sock}",
            "--node-id", "test-node",
            "--kubelet-root", str(root),
            "--gluster-log-dir", str(tmp / "gluster-logs"),
            "--stats-timeout", str(STATS_TIMEOUT),
            "--mount-timeout", "30",
            "--repair-interval", str(repair_interval),
            "--log-format", "json",
            "--log-level", "debug",
        ],
        tmp / f"node-{tag}.log",
    )


async def start_node(
    tmp: Path, root: Path, repair_interval: float = 0, tag: str = "1"
) -> tuple[ManagedProcess, Path]:
    sock = tmp / "sock" / "csi.sock"
    proc = await node_process(tmp, root, sock, repair_interval, tag).start()
    try:
        await wait_ready(proc, sock, timeout=30)
    except BaseException:
        await proc.kill()
        raise
    return proc, sock


@contextlib.asynccontextmanager
async def running_node(tmp: Path, repair_interval: float = 0) -> AsyncIterator[Node]:
    """A node process on a fresh kubelet root; on exit everything it made is removed."""
    root = tmp / "kubelet"
    root.mkdir()
    n: Node | None = None
    try:
        proc, sock = await start_node(tmp, root, repair_interval)
        channel = Channel(path=str(sock))
        n = Node(tmp, root, sock, proc, channel, csi_grpc.NodeStub(channel))
        n.bricks = tmp / "bricks"
        yield n
    finally:
        if n is not None:
            n.channel.close()
            await n.proc.stop(timeout=15)
            for old in n.old_procs:
                await old.kill()
        await glusterd.cleanup_mounts_under(root)
        if n is not None:
            await asyncio.gather(*(glusterd.delete_volume(v) for v in n.volumes))


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with running_node(tmp_path) as n:
        yield n


def clients_of(path: str) -> list[int]:
    return gluster_clients_of(path)


def off_loop(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """`predicate` run in a thread: it reads /proc or a FUSE mount, which may block."""
    return lambda: asyncio.to_thread(predicate)


# ---- tests ---------------------------------------------------------------------------------


async def test_stage_publish_write_reaches_the_brick_and_unstage_leaves_nothing(node: Node) -> None:
    volume = await node.new_volume()
    staging = await node.stage(volume)
    target = node.target("pod-a", "pv-a")
    await node.publish(volume, target)

    # Kubelet repeats calls after restarts and timeouts: both are idempotent.
    await node.stage(volume)
    await node.publish(volume, target)

    data = b"written through the pod's path\n"
    await asyncio.to_thread(Path(target, "hello.txt").write_bytes, data)
    assert (node.brick(volume) / "hello.txt").read_bytes() == data

    stage_mount = mountinfo.mount_at(mountinfo.read(), staging)
    target_mount = mountinfo.mount_at(mountinfo.read(), target)
    assert stage_mount is not None and stage_mount.fstype == "fuse.glusterfs"
    assert target_mount is not None and target_mount.same_origin(stage_mount)
    for mount in (stage_mount, target_mount):
        assert {"nosuid", "nodev"} <= set(mount.options), mount
    assert mountinfo.count_at(mountinfo.read(), target) == 1  # not bound twice

    stats = await node.stats(volume, target)
    assert not stats.volume_condition.abnormal
    by_unit = {u.unit: u for u in stats.usage}
    assert by_unit[csi_pb2.VolumeUsage.BYTES].total > 0
    assert by_unit[csi_pb2.VolumeUsage.INODES].used > 0

    expanded = await node.stub.NodeExpandVolume(
        csi_pb2.NodeExpandVolumeRequest(volume_id=f"id-{volume}", volume_path=target)
    )
    assert expanded.capacity_bytes == by_unit[csi_pb2.VolumeUsage.BYTES].total

    log_files = list((node.tmp / "gluster-logs").iterdir())
    assert [p.name.startswith(volume) for p in log_files] == [True]

    await node.unpublish(volume, target)
    await node.unpublish(volume, target)  # idempotent
    await node.unstage(volume)
    await node.unstage(volume)  # idempotent

    assert node.our_mounts() == []
    assert not Path(target).exists()
    assert Path(staging).is_dir()  # the CO's directory stays
    assert list((node.root / "plugins" / "glusterfs.heketi.csi.io" / "state").iterdir()) == []
    await until(off_loop(lambda: not clients_of(staging)), "no client left", 10, 0.1)
    # The data stays on the volume.
    assert (node.brick(volume) / "hello.txt").read_bytes() == data


async def test_read_only_publish_refuses_writes(node: Node) -> None:
    volume = await node.new_volume()
    await node.stage(volume)
    rw = node.target("pod-rw", "pv")
    ro = node.target("pod-ro", "pv")
    await node.publish(volume, rw)
    await node.publish(volume, ro, readonly=True)
    await node.publish(volume, ro, readonly=True)

    await asyncio.to_thread(Path(rw, "a.txt").write_text, "a")
    assert await asyncio.to_thread(Path(ro, "a.txt").read_text) == "a"
    ro_mount = mountinfo.mount_at(mountinfo.read(), ro)
    assert ro_mount is not None and {"ro", "nosuid", "nodev"} <= set(ro_mount.options)
    with pytest.raises(OSError) as exc:
        await asyncio.to_thread(Path(ro, "b.txt").write_text, "b")
    assert exc.value.errno == errno.EROFS
    assert not (node.brick(volume) / "b.txt").exists()

    # The same target asked for read-write now: not what is mounted there.
    with pytest.raises(GRPCError) as grpc_exc:
        await node.publish(volume, ro, readonly=False)
    assert grpc_exc.value.status is Status.ALREADY_EXISTS

    for target in (rw, ro):
        await node.unpublish(volume, target)
    await node.unstage(volume)
    assert node.our_mounts() == []


async def test_something_else_mounted_is_already_exists(node: Node) -> None:
    first, second = await node.new_volume(), await node.new_volume()
    staging = await node.stage(first)
    with pytest.raises(GRPCError) as exc:
        await node.stage(second, staging=staging)
    assert exc.value.status is Status.ALREADY_EXISTS
    assert first in (exc.value.message or "") or "already has" in (exc.value.message or "")

    target = node.target("pod", "pv")
    await node.publish(first, target)
    await node.stage(second)
    with pytest.raises(GRPCError) as exc:
        await node.publish(second, target)
    assert exc.value.status is Status.ALREADY_EXISTS

    await node.unpublish(first, target)
    await node.unstage(first)
    await node.unstage(second)
    assert node.our_mounts() == []


async def test_a_volume_that_does_not_exist_is_not_found_with_the_client_log(node: Node) -> None:
    missing = vol_name()  # never created
    staging = node.staging(missing)
    with pytest.raises(GRPCError) as exc:
        await node.stage(missing)
    message = exc.value.message or ""
    assert exc.value.status is Status.NOT_FOUND, message
    assert f"gluster volume {missing} does not exist" in message
    assert "gluster client log" in message
    assert "failed to fetch volume file" in message or "failed to get the 'volume file'" in message
    assert node.our_mounts() == []
    assert clients_of(staging) == []
    assert list((node.root / "plugins" / "glusterfs.heketi.csi.io" / "state").glob("*")) == []


async def test_a_volume_whose_bricks_are_down_is_unavailable_with_the_client_log(
    node: Node,
) -> None:
    volume = await node.new_volume()
    stopped = await run_command([glusterd.GLUSTER, "--mode=script", "volume", "stop", volume], 60)
    assert stopped.returncode == 0, stopped.output
    staging = node.staging(volume)
    with pytest.raises(GRPCError) as exc:
        await node.stage(volume)
    message = exc.value.message or ""
    assert exc.value.status is Status.UNAVAILABLE, message
    assert f"bricks of volume {volume} do not answer" in message
    assert "first lookup on root failed" in message
    assert node.our_mounts() == []
    assert clients_of(staging) == []


async def test_a_killed_client_is_replaced_at_once_and_teardown_leaves_nothing(
    node: Node,
) -> None:
    volume = await node.new_volume()
    staging = await node.stage(volume)
    target = node.target("pod", "pv")
    await node.publish(volume, target)
    pids = clients_of(staging)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    started = time.monotonic()

    await until(off_loop(lambda: bool(clients_of(staging)) and clients_of(staging) != pids),
                "another client", 5, 0.1)
    await until(off_loop(lambda: _answers(target)), "the target answering", 5, 0.1)
    print(f"client replaced and target answering after {time.monotonic() - started:.2f} s")
    stats = await node.stats(volume, target)
    assert not stats.volume_condition.abnormal

    await node.unpublish(volume, target)
    await node.unstage(volume)
    assert node.our_mounts() == []
    assert not Path(target).exists()


def _answers(path: str) -> bool:
    try:
        os.statvfs(path)
    except OSError:
        return False
    return True


async def test_hung_mount_stats_answer_promptly(node: Node, tmp_path: Path) -> None:
    """A gluster client that never gets its volfile leaves a FUSE mount whose stat hangs."""
    from services.node.mounter import MountTimeout, SystemMounter

    silent = await asyncio.start_server(lambda r, w: None, host="0.0.0.0", port=0)
    port = silent.sockets[0].getsockname()[1]
    target = node.target("pod-hung", "pv")
    os.makedirs(target)
    mounter = SystemMounter()
    tree = Tree(str(node.root), Lane("test", 2), 10)
    # The place stays open while the mount task may still use it.
    async with tree.place(target, "target") as place:
        hung = asyncio.create_task(
            mounter.mount_glusterfs(
                f"{glusterd.hostname()}:nothing", place,
                [f"server-port={port}", f"log-file={tmp_path}/hung.log"], f"{tmp_path}/hung.log",
                20,
            )
        )
        try:
            await until(off_loop(lambda: mountinfo.mount_at(mountinfo.read(), target) is not None),
                        "the hung mount in the mount table", 10, 0.1)
            for _ in range(3):  # kubelet polls again: each answer is prompt
                started = time.monotonic()
                stats = await node.stats("x", target)
                assert time.monotonic() - started < STATS_TIMEOUT + 1
                assert stats.volume_condition.abnormal
                assert "did not answer" in stats.volume_condition.message
            # Unpublish works on the hung mount and removes the directory.
            await node.unpublish("x", target)
            assert mountinfo.mount_at(mountinfo.read(), target) is None
            assert not Path(target).exists()
        finally:
            hung.cancel()
            with pytest.raises((asyncio.CancelledError, MountTimeout)):
                await hung
            silent.close()


async def test_a_stopped_gluster_client_does_not_starve_the_node(node: Node) -> None:
    """SIGSTOP the client of one mount: every lookup inside it hangs in the kernel. A dozen
    stats calls on paths inside it answer by their deadline, and a healthy volume is staged
    and published meanwhile within a deadline far below kubelet's."""
    stopped, healthy = await node.new_volume(), await node.new_volume()
    await node.stage(stopped)
    target = node.target("pod-stopped", "pv")
    await node.publish(stopped, target)
    [pid] = clients_of(node.staging(stopped))
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        polls = [asyncio.create_task(node.stats(stopped, f"{target}/dir{i}")) for i in range(12)]
        polls.append(asyncio.create_task(node.stats(stopped, target)))
        healthy_target = node.target("pod-healthy", "pv")
        os.makedirs(os.path.dirname(healthy_target))
        await node.stub.NodeStageVolume(
            csi_pb2.NodeStageVolumeRequest(
                volume_id=f"id-{healthy}",
                staging_target_path=node.staging(healthy),
                volume_capability=RW_CAP,
                volume_context={"volume": healthy, "hosts": glusterd.hostname()},
            ),
            timeout=15,
        )
        await node.stub.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=f"id-{healthy}",
                staging_target_path=node.staging(healthy),
                target_path=healthy_target,
                volume_capability=RW_CAP,
            ),
            timeout=15,
        )
        published = time.monotonic() - started
        await asyncio.to_thread(Path(healthy_target, "ok").write_text, "ok")
        assert (node.brick(healthy) / "ok").read_text() == "ok"
        answers = await asyncio.gather(*polls, return_exceptions=True)
        polled = time.monotonic() - started
        print(
            f"healthy volume staged and published in {published:.2f} s; "
            f"13 polls of the stopped mount answered within {polled:.2f} s"
        )
        assert polled < STATS_TIMEOUT + 5
        for answer in answers[:-1]:
            assert isinstance(answer, GRPCError), answer
            assert answer.status is Status.NOT_FOUND and "did not answer" in (answer.message or "")
        stats = answers[-1]
        assert isinstance(stats, csi_pb2.NodeGetVolumeStatsResponse), stats
        assert stats.volume_condition.abnormal
    finally:
        os.kill(pid, signal.SIGCONT)
    await node.unpublish(healthy, healthy_target)
    await node.unstage(healthy)
    await node.unpublish(stopped, target)
    await node.unstage(stopped)
    assert node.our_mounts() == []


async def test_mount_timeout_kills_the_client_and_leaves_nothing_mounted(tmp_path: Path) -> None:
    from services.node.mounter import MountTimeout, SystemMounter

    silent = await asyncio.start_server(lambda r, w: None, host="0.0.0.0", port=0)
    port = silent.sockets[0].getsockname()[1]
    target = tmp_path / "kubelet" / "hang"
    target.mkdir(parents=True)
    log = tmp_path / "hang.log"
    tree = Tree(str(tmp_path / "kubelet"), Lane("test", 2), 10)
    try:
        started = time.monotonic()
        with pytest.raises(MountTimeout) as exc:
            async with tree.place(str(target), "target") as place:
                await SystemMounter().mount_glusterfs(
                    f"{glusterd.hostname()}:nothing", place,
                    [f"server-port={port}", f"log-file={log}"], str(log), 2,
                )
        assert time.monotonic() - started < 8
        assert "gluster client" in exc.value.message
        assert mountinfo.mount_at(mountinfo.read(), str(target)) is None
        assert clients_of(str(target)) == []
        # The path is usable again at once: the next mount is not poisoned.
        assert await asyncio.to_thread(os.listdir, target) == []
    finally:
        silent.close()
        await glusterd.cleanup_mounts_under(tmp_path)


async def test_twenty_volumes_staged_and_published_concurrently(node: Node) -> None:
    volumes = await asyncio.gather(*(node.new_volume() for _ in range(20)))
    targets = {v: node.target(f"pod-{v}", "pv") for v in volumes}

    async def up(volume: str) -> None:
        await node.stage(volume)
        await node.publish(volume, targets[volume])

    started = time.monotonic()
    await asyncio.gather(*(up(v) for v in volumes))
    elapsed = time.monotonic() - started
    print(f"20 volumes staged and published in {elapsed:.2f} s")

    for volume in volumes:
        await asyncio.to_thread(Path(targets[volume], "id").write_text, volume)
    for volume in volumes:
        assert (node.brick(volume) / "id").read_text() == volume

    async def down(volume: str) -> None:
        await node.unpublish(volume, targets[volume])
        await node.unstage(volume)

    await asyncio.gather(*(down(v) for v in volumes))
    assert node.our_mounts() == []


# ---- repair -------------------------------------------------------------------------------


async def kill_client(staging: str) -> None:
    pids = clients_of(staging)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    # (A running node replaces it at once: wait for this one to be gone, not for none.)
    await until(off_loop(lambda: pids[0] not in clients_of(staging)), "the client gone", 5, 0.1)


def readable(path: str, name: str, expected: str) -> bool:
    try:
        return Path(path, name).read_text() == expected
    except OSError:
        return False


async def assert_broken(path: str) -> None:
    with pytest.raises(OSError) as exc:
        await asyncio.to_thread(os.statvfs, path)
    assert exc.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)


async def staged_with_targets(node: Node) -> tuple[str, str, str, str]:
    volume = await node.new_volume()
    staging = await node.stage(volume)
    rw, ro = node.target("pod-rw", "pv"), node.target("pod-ro", "pv")
    await node.publish(volume, rw)
    await node.publish(volume, ro, readonly=True)
    await asyncio.to_thread(Path(rw, "before.txt").write_text, "before")
    return volume, staging, rw, ro


async def assert_repaired(node: Node, volume: str, staging: str, rw: str, ro: str) -> None:
    # Reads and writes work again through the original target paths ...
    await until(off_loop(lambda: readable(rw, "before.txt", "before")),
                lambda: f"{rw} readable\n{node.proc.log_text()[-3000:]}", 15, 0.2)
    await until(off_loop(lambda: readable(ro, "before.txt", "before")), f"{ro} readable", 5, 0.2)
    await asyncio.to_thread(Path(rw, "after.txt").write_text, "after")
    assert (node.brick(volume) / "after.txt").read_text() == "after"
    assert await asyncio.to_thread(readable, ro, "after.txt", "after")
    # ... the read-only target is still read-only, one client serves the volume, and on top
    # of each target is a bind of the new mount (over the dead one, where running
    # containers that receive mounts see it) ...
    with pytest.raises(OSError) as exc:
        await asyncio.to_thread(Path(ro, "x.txt").write_text, "x")
    assert exc.value.errno == errno.EROFS
    mounts = mountinfo.read()
    assert mountinfo.count_at(mounts, staging) == 1
    assert len(clients_of(staging)) == 1
    for path in (rw, ro):
        assert mountinfo.count_at(mounts, path) <= 2, path
    stage = mountinfo.mount_at(mounts, staging)
    assert stage is not None
    assert all(mountinfo.mount_at(mounts, t).same_origin(stage) for t in (rw, ro))  # type: ignore[union-attr]
    stats = await node.stats(volume, rw)
    assert not stats.volume_condition.abnormal
    # ... and the usual tear-down still leaves nothing behind.
    await node.unpublish(volume, rw)
    await node.unpublish(volume, ro)
    await node.unstage(volume)
    assert node.our_mounts() == []


async def test_periodic_repair_restores_a_killed_client(tmp_path: Path) -> None:
    async with running_node(tmp_path, repair_interval=1) as node:
        volume, staging, rw, ro = await staged_with_targets(node)
        await kill_client(staging)
        await assert_repaired(node, volume, staging, rw, ro)
        assert "repaired staged volume" in node.proc.log_text()


async def test_repair_at_start_up_after_the_node_container_died(tmp_path: Path) -> None:
    """The node process and its gluster client die together (container restart); the new
    node process knows nothing in memory and repairs from its state files and mountinfo."""
    async with running_node(tmp_path, repair_interval=0) as node:
        volume, staging, rw, ro = await staged_with_targets(node)
        await node.proc.kill()
        await kill_client(staging)
        await assert_broken(rw)
        await node.restart(repair_interval=0)
        await assert_repaired(node, volume, staging, rw, ro)


async def test_stage_again_repairs_a_broken_stage(node: Node) -> None:
    """Kubelet re-stages after its own restart: a dead stage is re-mounted and re-bound (or
    already is: the node replaces a client that dies at once; meanwhile ABORTED, which
    kubelet retries)."""
    volume, staging, rw, ro = await staged_with_targets(node)
    await kill_client(staging)
    for _ in range(50):
        try:
            await node.stage(volume)
            break
        except GRPCError as exc:
            assert exc.status is Status.ABORTED, exc
            await asyncio.sleep(0.1)
    await assert_repaired(node, volume, staging, rw, ro)


async def test_mount_flags_reach_the_mount_and_bad_ones_are_refused(node: Node) -> None:
    volume = await node.new_volume()
    ro_cap = Cap(
        mount=Cap.MountVolume(mount_flags=["ro", "noatime"]),
        access_mode=Cap.AccessMode(mode=Cap.AccessMode.MULTI_NODE_READER_ONLY),
    )
    staging = await node.stage(volume, cap=ro_cap)
    await node.stage(volume, cap=ro_cap)  # idempotent with the same flags
    mount = mountinfo.mount_at(mountinfo.read(), staging)
    assert mount is not None and mount.readonly and "noatime" in mount.options
    assert {"nosuid", "nodev"} <= set(mount.options)
    # The same staging path asked for read-write: incompatible with what is mounted.
    with pytest.raises(GRPCError) as exc:
        await node.stage(volume)
    assert exc.value.status is Status.ALREADY_EXISTS
    with pytest.raises(OSError) as os_exc:
        await asyncio.to_thread(Path(staging, "x").write_text, "x")
    assert os_exc.value.errno == errno.EROFS
    await node.unstage(volume)

    other = await node.new_volume()
    refused = (["suid"], ["noatime,dev"], ["context=system_u:object_r:container_file_t:s0"])
    for flags in (["bind"], ["noatime,log-file=/tmp/x"], ["ro rw"], *refused):
        bad = Cap(
            mount=Cap.MountVolume(mount_flags=flags),
            access_mode=Cap.AccessMode(mode=Cap.AccessMode.MULTI_NODE_MULTI_WRITER),
        )
        with pytest.raises(GRPCError) as exc:
            await node.stage(other, cap=bad)
        assert exc.value.status is Status.INVALID_ARGUMENT, flags
    assert node.our_mounts() == []


async def test_every_plain_mount_flag_the_driver_accepts_mounts(node: Node) -> None:
    """A flag the driver accepts but the gluster client or the kernel refuses made the stage
    fail as INTERNAL (relatime: the FUSE mount was refused, the helper still said success)."""
    volume = await node.new_volume()
    for flag in sorted(mountopts._PLAIN):
        cap = Cap(mount=Cap.MountVolume(mount_flags=[flag]), access_mode=RW_CAP.access_mode)
        staging = await node.stage(volume, cap=cap)
        assert mountinfo.mount_at(mountinfo.read(), staging) is not None, flag
        await node.unstage(volume)
    assert node.our_mounts() == []


async def test_mount_flags_the_gluster_client_refuses_are_invalid_argument(node: Node) -> None:
    volume = await node.new_volume()
    for flag, why in (("reader-thread-count=0", "Invalid reader thread count 0"),
                      ("lru-limit=9999999999", "unknown LRU limit option")):
        cap = Cap(mount=Cap.MountVolume(mount_flags=[flag]), access_mode=RW_CAP.access_mode)
        with pytest.raises(GRPCError) as exc:
            await node.stage(volume, cap=cap)
        assert exc.value.status is Status.INVALID_ARGUMENT, exc.value.message
        assert why in (exc.value.message or "")
    assert node.our_mounts() == []


async def test_identity_and_node_info_over_the_socket(node: Node) -> None:
    identity = csi_grpc.IdentityStub(node.channel)
    assert (await identity.Probe(csi_pb2.ProbeRequest())).ready.value is True
    caps = await identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest())
    # Every instance of a plugin reports the same capabilities (CSI spec), whatever it serves.
    assert list(caps.capabilities) == plugin_capabilities()
    info = await node.stub.NodeGetInfo(csi_pb2.NodeGetInfoRequest())
    assert info.node_id == "test-node"
    with pytest.raises(GRPCError) as exc:
        await node.stub.NodeGetVolumeStats(
            csi_pb2.NodeGetVolumeStatsRequest(volume_id="v", volume_path="some/path")
        )
    assert exc.value.status is Status.NOT_FOUND


async def test_node_id_is_required_at_start_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBE_NODE_NAME"}
    proc = await asyncio.create_subprocess_exec(
        *HEKETI_CSI, "node", "--endpoint", f"unix://{tmp_path}/csi.sock",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode != 0
    assert b"--node-id" in out
