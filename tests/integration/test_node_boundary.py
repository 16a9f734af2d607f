"""The node's filesystem boundary with real GlusterFS mounts: symbolic links planted inside
the kubelet root never get a mount, a directory or an unmount outside it.

`scratch` is a directory outside the kubelet root (standing in for /etc or another pod's
data). The first tests drive the node process over gRPC as kubelet would; the last ones
drive the real mounter in-process and swap a path component for a link while mount(8) runs,
which no check before the mount can see.

Storage: one-brick volumes of this host's glusterd, on purpose: the boundary is the node's
own paths, whatever serves the volume.
"""

# Checks of local test directories are fine on the test's loop.
# ruff: noqa: ASYNC240

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from devtools import glusterd
from services.common.errors import Internal
from services.common.proto import csi_pb2
from services.node import mountinfo
from services.node.boundary import Tree
from services.node.mounter import MountFailed, SystemMounter
from services.node.mountinfo import GLUSTER_FSTYPE
from services.node.offloop import Lane
from tests.integration.test_node_gluster import (  # noqa: F401 (_glusterd: a fixture)
    RW_CAP,
    Node,
    _glusterd,
    clients_of,
    running_node,
    vol_name,
)

pytestmark = pytest.mark.gluster


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with running_node(tmp_path) as n:
        yield n


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    (path / "keep.txt").write_text("precious")
    return path


def tree_listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def mounts_under(path: Path) -> list[mountinfo.Mount]:
    prefix = f"{path}/"
    return [m for m in mountinfo.read() if m.mount_point.startswith(prefix)]


def gluster_mounts_of(volume: str) -> list[mountinfo.Mount]:
    return [
        m
        for m in mountinfo.read()
        if m.fstype == GLUSTER_FSTYPE and m.source.rpartition(":")[2].lstrip("/") == volume
    ]


async def test_publish_onto_a_symlink_to_outside_mounts_nothing(node: Node, scratch: Path) -> None:
    volume = await node.new_volume()
    staging = await node.stage(volume)
    target = node.target("pod-x", "pv")
    os.makedirs(os.path.dirname(target))
    os.symlink(scratch, target)
    before = tree_listing(scratch)

    with pytest.raises(GRPCError) as exc:
        await node.publish(volume, target)
    assert exc.value.status is Status.INVALID_ARGUMENT
    assert "symbolic link" in (exc.value.message or "")
    assert [m.mount_point for m in gluster_mounts_of(volume)] == [staging]
    assert mounts_under(scratch) == []
    # Unpublish of the link neither unmounts through it nor answers OK.
    with pytest.raises(GRPCError) as exc:
        await node.unpublish(volume, target)
    assert exc.value.status is Status.INVALID_ARGUMENT
    assert os.path.islink(target) and tree_listing(scratch) == before

    os.unlink(target)  # kubelet's own directory again: publish works
    await node.publish(volume, target)
    await node.unpublish(volume, target)
    await node.unstage(volume)
    assert node.our_mounts() == []


async def test_publish_below_a_symlinked_parent_creates_nothing_outside(
    node: Node, scratch: Path
) -> None:
    volume = await node.new_volume()
    await node.stage(volume)
    (scratch / "volumes" / "kubernetes.io~csi" / "pv").mkdir(parents=True)
    (node.root / "pods").mkdir(exist_ok=True)
    os.symlink(scratch, node.root / "pods" / "pod-y")
    before = tree_listing(scratch)

    with pytest.raises(GRPCError) as exc:
        await node.stub.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id=f"id-{volume}",
                staging_target_path=node.staging(volume),
                target_path=node.target("pod-y", "pv"),
                volume_capability=RW_CAP,
            ),
            timeout=30,
        )
    assert exc.value.status is Status.INVALID_ARGUMENT
    assert "outside the kubelet root" in (exc.value.message or "")
    assert tree_listing(scratch) == before  # no `mount` directory made in it
    assert mounts_under(scratch) == []
    await node.unstage(volume)
    assert node.our_mounts() == []


async def test_stage_below_a_symlinked_parent_mounts_and_creates_nothing(
    node: Node, scratch: Path
) -> None:
    volume = await node.new_volume()
    staging = Path(node.staging(volume))
    staging.parent.parent.mkdir(parents=True)
    os.symlink(scratch, staging.parent)  # .../<volume> -> scratch; staging is below it
    before = tree_listing(scratch)

    with pytest.raises(GRPCError) as exc:
        await node.stage(volume)
    assert exc.value.status is Status.INVALID_ARGUMENT
    assert "outside the kubelet root" in (exc.value.message or "")
    assert gluster_mounts_of(volume) == []
    assert clients_of(str(staging)) == [] and clients_of(str(scratch / "globalmount")) == []
    assert tree_listing(scratch) == before
    state = node.root / "plugins" / "glusterfs.heketi.csi.io" / "state"
    assert not state.exists() or list(state.iterdir()) == []


# ---- a component swapped for a link while mount(8) runs ------------------------------------


@pytest.fixture
async def volume(tmp_path: Path) -> AsyncIterator[str]:
    name = vol_name()
    await glusterd.create_volume(name, tmp_path / "bricks")
    try:
        yield name
    finally:
        await glusterd.cleanup_mounts_under(tmp_path)
        await glusterd.delete_volume(name)


def swapping_mount(tmp_path: Path, swap: Path, to: Path) -> str:
    """A mount(8) that first (once) moves `swap` aside and puts a link to `to` in its
    place: what an attacker racing the node would do between its checks and the mount."""
    script = tmp_path / f"swapping-mount-{uuid.uuid4().hex[:6]}"
    done = tmp_path / f"{script.name}.done"
    script.write_text(
        "#!/bin/sh\n"
        f"if [ ! -e '{done}' ]; then\n"
        f"  touch '{done}' && mv '{swap}' '{swap}.moved' && ln -s '{to}' '{swap}'\n"
        "fi\n"
        'exec mount "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


async def test_a_link_swapped_in_while_mounting_leaves_no_mount_outside(
    tmp_path: Path, scratch: Path, volume: str
) -> None:
    root = tmp_path / "kubelet"
    staging = root / "plugins" / "csi" / "vol" / "globalmount"
    staging.mkdir(parents=True)
    (scratch / "globalmount").mkdir()  # where the swapped path leads
    mounter = SystemMounter(mount_bin=swapping_mount(tmp_path, staging.parent, scratch))
    tree = Tree(str(root), Lane("test", 4), 10)
    log = tmp_path / "client.log"

    async with tree.place(str(staging), "staging_target_path") as place:
        with pytest.raises(MountFailed) as exc:
            await mounter.mount_glusterfs(
                f"{glusterd.hostname()}:{volume}", place, [f"log-file={log}"], str(log), 30
            )
    print(exc.value.message)
    assert "appeared at" in exc.value.message and str(scratch) in exc.value.message
    assert gluster_mounts_of(volume) == []
    assert clients_of(str(staging)) == []


async def test_a_bind_whose_target_was_moved_meanwhile_is_undone(
    tmp_path: Path, scratch: Path, volume: str
) -> None:
    root = tmp_path / "kubelet"
    staging = root / "plugins" / "csi" / "vol" / "globalmount"
    target = root / "pods" / "p" / "volumes" / "pv" / "mount"
    staging.mkdir(parents=True)
    target.mkdir(parents=True)
    (scratch / "mount").mkdir()
    tree = Tree(str(root), Lane("test", 4), 10)
    log = tmp_path / "client.log"
    async with tree.place(str(staging), "staging_target_path") as staged:
        await SystemMounter().mount_glusterfs(
            f"{glusterd.hostname()}:{volume}", staged, [f"log-file={log}"], str(log), 30
        )
        mounter = SystemMounter(mount_bin=swapping_mount(tmp_path, target.parent, scratch))
        async with tree.place(str(target), "target_path") as place:
            with pytest.raises(Internal, match="moved"):
                await mounter.bind(staged, place, True, 30)
        # The bind went where the verified directory really was, not through the link,
        # and was taken down again.
        assert [m.mount_point for m in gluster_mounts_of(volume)] == [str(staging)]
        assert mounts_under(scratch) == []
        await SystemMounter().unmount(staged, 30)
    assert gluster_mounts_of(volume) == []
