"""Clean-up on this host for the devtools: what is mounted under a directory, the gluster
clients serving it, and unmounting all of it.

One implementation for the local cluster's glusterd helpers (`devtools.glusterd`), the gluster
pool and the real-Kubernetes harness (`devtools.k8s.cluster`). Mount points come from
`services.node.mountinfo` (the product's parser: octal escapes, non-ASCII names), and gluster
clients are found as the product finds them: `comm` before `cmdline`, since reading the
command line of a process stuck on a hung mount can hang the reader.

Everything here blocks: call it from async code through `asyncio.to_thread`.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from services.node import mountinfo

# Seconds one umount(8) may take before it counts as failed.
UMOUNT_TIMEOUT = 10.0


def _within(point: str, base: str, include_self: bool) -> bool:
    base = base.rstrip("/") or "/"
    if point == base:
        return include_self
    return point.startswith(base if base.endswith("/") else base + "/")


def mount_points_under(bases: Sequence[Path | str], *, include_self: bool = False) -> list[str]:
    """Mount points below any of `bases` (and the bases themselves with `include_self`),
    newest first: a nested mount comes before the one it sits on."""
    found = [m for m in mountinfo.read()
             if any(_within(m.mount_point, str(b), include_self) for b in bases)]
    found.sort(key=lambda m: m.mount_id, reverse=True)
    points: list[str] = []
    for mount in found:
        if mount.mount_point not in points:
            points.append(mount.mount_point)
    return points


def is_mount_point(path: Path | str) -> bool:
    return mountinfo.mount_at(mountinfo.read(), str(path)) is not None


def gluster_clients_under(base: Path | str, proc_root: Path = Path("/proc")) -> list[int]:
    """Pids of glusterfs client processes whose mount point (their last argument) lies
    below `base`."""
    prefix = os.fsencode(str(base).rstrip("/") + "/")
    pids = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_bytes().strip() != b"glusterfs":
                continue
            argv = (entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) == b"glusterfs" and argv[-1].startswith(prefix):
            pids.append(int(entry.name))
    return pids


def kill_gluster_clients_under(base: Path | str) -> list[int]:
    """SIGKILL the gluster clients serving mounts below `base` (their mounts then answer
    ENOTCONN at once instead of hanging); the pids signalled."""
    killed = []
    for pid in gluster_clients_under(base):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(pid)
    return killed


def _umount(point: str, *flags: str) -> bool:
    try:
        # -c: no stat of the path (it may sit on a dead mount)
        done = subprocess.run(["umount", "-c", *flags, point], capture_output=True,
                              timeout=UMOUNT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def unmount_under(bases: Sequence[Path | str], *, include_self: bool = False,
                  lazy_only: bool = False, rounds: int = 5) -> tuple[list[str], list[str]]:
    """Unmount everything below `bases` (and the bases with `include_self`), newest first:
    a plain umount, then a lazy one for what is busy (`lazy_only`: lazy at once), for up to
    `rounds` rounds while something is left. Returns (unmounted, still mounted)."""
    unmounted: list[str] = []
    for _round in range(rounds):
        points = mount_points_under(bases, include_self=include_self)
        if not points:
            break
        for point in points:
            if (not lazy_only and _umount(point)) or _umount(point, "-l"):
                unmounted.append(point)
    return unmounted, mount_points_under(bases, include_self=include_self)
