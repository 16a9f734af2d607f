"""devtools/host.py: mounts under a directory (real tmpfs mounts, names the old parsers
mangled), unmounting them newest first, and finding gluster clients comm-first."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import host


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "bäse with space"
    root.mkdir()
    yield root
    host.unmount_under([root], include_self=True, lazy_only=True)


def _tmpfs(at: Path) -> None:
    at.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(at)], check=True)


def test_nested_mounts_are_found_newest_first_and_all_unmounted(base: Path) -> None:
    outer, inner = base / "outer", base / "outer" / "ïnner\tdir"
    _tmpfs(outer)
    _tmpfs(inner)
    sibling = base.parent / (base.name + "-sibling")  # shares the prefix, not the directory
    _tmpfs(sibling)
    try:
        assert host.mount_points_under([base]) == [str(inner), str(outer)]
        assert host.is_mount_point(inner) and not host.is_mount_point(base)
        unmounted, left = host.unmount_under([base])
        assert unmounted == [str(inner), str(outer)] and left == []
        assert host.is_mount_point(sibling), "a directory beside base is not below it"
    finally:
        host.unmount_under([sibling], include_self=True)


def test_include_self_takes_the_base_itself(base: Path) -> None:
    _tmpfs(base)
    assert host.mount_points_under([base]) == []
    assert host.mount_points_under([base], include_self=True) == [str(base)]
    unmounted, left = host.unmount_under([base], include_self=True)
    assert unmounted == [str(base)] and left == []


def _process(proc: Path, pid: int, comm: bytes, argv: list[bytes]) -> None:
    entry = proc / str(pid)
    entry.mkdir()
    (entry / "comm").write_bytes(comm + b"\n")
    (entry / "cmdline").write_bytes(b"\0".join(argv) + b"\0")


def test_gluster_clients_are_the_glusterfs_processes_serving_mounts_below(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    client = [b"/usr/sbin/glusterfs", b"--volfile-server=a", b"--volfile-id=v"]
    _process(proc, 10, b"glusterfs", [*client, b"/k/pods/x"])
    _process(proc, 11, b"glusterfs", [*client, b"/k-other/x"])  # beside the base
    _process(proc, 12, b"python3", [b"glusterfs", b"/k/pods/y"])  # comm says not gluster
    entry = proc / "13"  # a process whose cmdline cannot be read: skipped, not fatal
    entry.mkdir()
    (entry / "comm").write_bytes(b"glusterfs\n")
    (proc / "self").mkdir()
    assert host.gluster_clients_under("/k", proc_root=proc) == [10]
