"""The node's filesystem boundary against planted symbolic links: no RPC mounts, creates or
unmounts anything outside the kubelet root, and a failed RPC leaves no mount behind.

The node runs with the in-memory mounter; directories are real (under tmp_path), so what is
created where is what the node really did. `scratch` stands for a directory outside the
kubelet root an attacker points at (/etc, another pod's data)."""

# Looking at the test's own local directories is fine on the test's loop.
# ruff: noqa: ASYNC240

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devtools.fake_mounter import FakeMounter
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.proto import csi_pb2
from services.node import mountinfo
from services.node.boundary import Tree
from services.node.offloop import Lane
from tests.unit.test_node_service import (
    Ctx,
    make,
    mount_cap,
    publish,
    stage_request,
    staging_path,
    target_path,
    unpublish,
    unstage,
)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    (path / "keep.txt").write_text("precious")
    return path


def untouched(scratch: Path) -> bool:
    return sorted(os.listdir(scratch)) == ["keep.txt"]


def mount_points(fake: FakeMounter) -> list[str]:
    return [m.mount_point for m in fake.mounts()]


async def test_publish_onto_a_symlink_to_outside_is_refused(root, fake, scratch):
    service = make(root, fake)
    await service.NodeStageVolume(stage_request(root), Ctx())
    target = target_path(root, "x")
    os.symlink(scratch, target)
    with pytest.raises(InvalidArgument, match="symbolic link") as exc:
        await publish(service, root, target)
    assert "target_path" in exc.value.message
    assert mount_points(fake) == [stage_request(root).staging_target_path]
    assert untouched(scratch)


async def test_publish_below_a_symlinked_parent_creates_nothing_outside(root, fake, scratch):
    service = make(root, fake)
    await service.NodeStageVolume(stage_request(root), Ctx())
    (root / "pods").mkdir(parents=True, exist_ok=True)
    os.symlink(scratch, root / "pods" / "y")
    target = f"{root}/pods/y/volumes/kubernetes.io~csi/pv/mount"
    with pytest.raises(InvalidArgument, match="outside the kubelet root") as exc:
        await publish(service, root, target)
    assert f"{root}/pods/y" in exc.value.message
    assert mount_points(fake) == [stage_request(root).staging_target_path]
    assert untouched(scratch)


async def test_stage_below_a_symlinked_parent_creates_and_mounts_nothing(root, fake, scratch):
    service = make(root, fake)
    staging = Path(stage_request(root).staging_target_path)
    drv = staging.parent.parent
    drv.mkdir(parents=True)
    os.symlink(scratch, staging.parent)  # the staging path is .../drv/<sha256>/globalmount
    with pytest.raises(InvalidArgument, match="outside the kubelet root"):
        await service.NodeStageVolume(stage_request(root), Ctx())
    up = drv / ("0" * 64)
    os.symlink("../../../../..", up)  # a relative link that climbs out
    with pytest.raises(InvalidArgument, match="outside the kubelet root"):
        await service.NodeStageVolume(
            stage_request(root, staging_target_path=f"{up}/globalmount"), Ctx()
        )
    assert fake.mounts() == [] and fake.clients == []
    assert service.store.all() == []
    assert untouched(scratch)
    assert not (root.parent / "globalmount").exists()


async def test_a_staging_path_that_is_a_symlink_is_refused(root, fake, scratch):
    service = make(root, fake)
    staging = Path(stage_request(root).staging_target_path)
    staging.parent.mkdir(parents=True)
    os.symlink(scratch, staging)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        await service.NodeStageVolume(stage_request(root), Ctx())
    assert fake.mounts() == [] and untouched(scratch)


async def test_unpublish_and_unstage_of_a_symlink_do_not_answer_ok(root, fake, scratch):
    """The symlink points at a directory where something is mounted: unmounting through
    it would unmount someone else's mount, answering OK would leave it there."""
    service = make(root, fake)
    fake.add_mount("fuse.glusterfs", "h1:vol_1", str(scratch))
    target = target_path(root, "x")
    os.symlink(scratch, target)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        await unpublish(service, target)
    staging = Path(stage_request(root).staging_target_path)
    staging.parent.mkdir(parents=True)
    os.symlink(scratch, staging)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        await unstage(service, root)
    assert mount_points(fake) == [str(scratch)]
    assert os.path.islink(target) and os.path.islink(staging)


async def test_links_that_stay_inside_the_root_are_followed(root, fake):
    service = make(root, fake)
    staging = stage_request(root).staging_target_path
    await service.NodeStageVolume(stage_request(root), Ctx())
    real = Path(target_path(root, "real")).parent
    os.symlink("real", root / "pods" / "alias")  # relative
    os.symlink(root / "pods" / "real", root / "pods" / "absolute")  # absolute, inside
    for alias in ("alias", "absolute"):
        via = f"{root}/pods/{alias}/volumes/kubernetes.io~csi/pv/mount"
        await publish(service, root, via)
        # The mount is where the link really leads, and is found there again.
        assert mount_points(fake) == [staging, str(real / "mount")]
        await unpublish(service, via)
        assert mount_points(fake) == [staging]
        assert not (real / "mount").exists()


async def test_a_symlink_loop_is_refused(root, fake):
    service = make(root, fake)
    await service.NodeStageVolume(stage_request(root), Ctx())
    (root / "pods").mkdir(parents=True)
    os.symlink("b", root / "pods" / "a")
    os.symlink("a", root / "pods" / "b")
    with pytest.raises(InvalidArgument, match="links"):
        await publish(service, root, f"{root}/pods/a/volumes/kubernetes.io~csi/pv/mount")


async def test_a_publish_that_fails_after_binding_leaves_no_mount(root, fake, monkeypatch):
    service = make(root, fake)
    await service.NodeStageVolume(stage_request(root), Ctx())
    target = target_path(root, "p")

    async def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(service.store, "add_target", fail)
    with pytest.raises(OSError):
        await publish(service, root, target)
    assert mount_points(fake) == [stage_request(root).staging_target_path]


async def test_a_stage_that_fails_after_mounting_leaves_no_mount(root, fake, monkeypatch):
    service = make(root, fake)
    staging = stage_request(root).staging_target_path
    await service.NodeStageVolume(stage_request(root), Ctx())
    await publish(service, root, target_path(root, "p"))
    fake.vanish(staging)  # the stage is gone, its target recorded: stage again re-binds it

    async def fail(*args: object) -> None:
        raise FailedPrecondition("re-binding failed")

    monkeypatch.setattr(service.repairer, "repair", fail)
    with pytest.raises(FailedPrecondition):
        await service.NodeStageVolume(stage_request(root), Ctx())
    assert mountinfo.mount_at(fake.mounts(), staging) is None
    record = service.store.get(staging)
    assert record is not None and record.targets  # what it knew is kept for the next try


async def test_publish_when_the_parent_of_the_target_is_missing(root, fake):
    service = make(root, fake)
    await service.NodeStageVolume(stage_request(root), Ctx())
    with pytest.raises(FailedPrecondition, match="does not exist"):
        await service.NodePublishVolume(
            csi_pb2.NodePublishVolumeRequest(
                volume_id="vol-id-1",
                staging_target_path=stage_request(root).staging_target_path,
                target_path=f"{root}/pods/nothing/volumes/kubernetes.io~csi/pv/mount",
                volume_capability=mount_cap(),
            ),
            Ctx(),
        )
    assert not (root / "pods" / "nothing").exists()


async def test_kubelets_own_directories_are_never_mounted_on_or_unmounted(root, fake):
    """`<root>/pods` as a target once bind-mounted the volume over every pod's directory."""
    service = make(root, fake)
    await service.NodeStageVolume(stage_request(root), Ctx())
    staging = stage_request(root).staging_target_path
    (root / "pods" / "uid").mkdir(parents=True)
    for target in (f"{root}/pods", f"{root}/pods/uid", f"{root}/plugins", staging_path(root, "v2")):
        with pytest.raises(InvalidArgument, match="target_path") as exc:
            await publish(service, root, target)
        assert "not a kubelet target path" in exc.value.message or (
            "is a staging path, not a target path" in exc.value.message
        )
        with pytest.raises(InvalidArgument, match="target_path"):
            await unpublish(service, target)
    fake.add_mount("tmpfs", "tmpfs", f"{root}/pods")  # e.g. kubelet's pods on their own disk
    for staging_target in (f"{root}/pods", target_path(root, "p")):
        with pytest.raises(InvalidArgument, match="staging_target_path"):
            await service.NodeStageVolume(
                stage_request(root, staging_target_path=staging_target), Ctx()
            )
        with pytest.raises(InvalidArgument, match="staging_target_path"):
            await service.NodeUnstageVolume(
                csi_pb2.NodeUnstageVolumeRequest(
                    volume_id="vol-id-1", staging_target_path=staging_target
                ),
                Ctx(),
            )
    assert mount_points(fake) == [staging, f"{root}/pods"]
    assert sorted(os.listdir(root / "pods")) == ["p", "uid"]


async def test_a_link_inside_the_root_cannot_turn_a_target_into_another_path(root, fake):
    service = make(root, fake)
    await service.NodeStageVolume(stage_request(root), Ctx())
    staging = Path(stage_request(root).staging_target_path)
    pod = Path(target_path(root, "p")).parent.parent  # <root>/pods/p/volumes/kubernetes.io~csi
    os.symlink(staging.parent, pod / "to-staging")  # .../to-staging/mount -> <sha256>/mount
    os.symlink("../../..", pod / "to-pods")  # .../to-pods/mount -> <root>/pods/mount
    for link in ("to-staging", "to-pods"):
        with pytest.raises(InvalidArgument, match="resolved through symbolic links") as exc:
            await publish(service, root, f"{pod}/{link}/mount")
        assert "not a kubelet target path" in exc.value.message
    assert mount_points(fake) == [str(staging)]
    assert not (staging.parent / "mount").exists() and not (root / "pods" / "mount").exists()


# ---- the resolver itself --------------------------------------------------------------------


def tree_of(root: Path) -> Tree:
    return Tree(str(root), Lane("test", 4), 5)


async def test_resolution_follows_links_inside_and_names_the_canonical_path(root, scratch):
    (root / "a" / "b").mkdir(parents=True)
    os.symlink("a/b", root / "rel")  # relative, inside
    os.symlink(f"{root}/a/../a", root / "dots")  # absolute with `..`, stays inside
    os.symlink("../rel", root / "a" / "up")  # `..` back to the root, then another link
    tree = tree_of(root)
    for via, canonical in (
        ("rel/x", "a/b/x"),
        ("dots/b/x", "a/b/x"),
        ("a/up/x", "a/b/x"),
    ):
        async with tree.place(f"{root}/{via}", "p") as place:
            assert place.path == f"{root}/{canonical}" and not place.exists
    async with tree.place(f"{root}/rel/new/deeper/x", "p", make_parents=True) as place:
        assert place.path == f"{root}/a/b/new/deeper/x"
        await tree.mkdir(place, "p")
    assert (root / "a" / "b" / "new" / "deeper" / "x").is_dir()
    assert untouched(scratch)


async def test_resolution_refuses_what_leads_out_or_is_no_directory(root, scratch):
    root.mkdir()
    (root / "file").write_text("x")
    os.symlink(scratch / "not-yet", root / "dangling")  # would be created outside
    os.symlink("..", root / "parent")
    tree = tree_of(root)
    for via, error, text in (
        ("dangling/x", InvalidArgument, "outside the kubelet root"),
        ("parent/kubelet/x", InvalidArgument, "outside the kubelet root"),
        ("file/x", FailedPrecondition, "not a directory"),
        ("file", FailedPrecondition, "not a directory"),
        ("dangling", InvalidArgument, "symbolic link"),
    ):
        with pytest.raises(error, match=text):
            async with tree.place(f"{root}/{via}", "p", make_parents=True):
                pass
    assert untouched(scratch)
    assert sorted(os.listdir(root)) == ["dangling", "file", "parent"]


async def test_rmdir_removes_only_an_empty_directory(root):
    (root / "d").mkdir(parents=True)
    (root / "full").mkdir()
    (root / "full" / "f").write_text("x")
    tree = tree_of(root)
    async with tree.place(f"{root}/d", "p") as place:
        await tree.rmdir(place, "p")
        await tree.rmdir(place, "p")  # gone already: fine
    with pytest.raises(FailedPrecondition, match="not empty"):
        async with tree.place(f"{root}/full", "p") as place:
            await tree.rmdir(place, "p")
    assert not (root / "d").exists() and (root / "full" / "f").exists()
