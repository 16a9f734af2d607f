"""Teardown of a local cluster: what it did, and the machine-state helpers it needs.

Unmounting goes through the node service's own `Mounter.unmount` (a lazy umount through a
descriptor of the place, resolved below the cluster's directory; each with a deadline and a
process-group kill), so the tooling cleans up exactly the way the driver does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from services.common.commands import CommandTimeout, run_command
from services.node import mountinfo
from services.node.boundary import Tree
from services.node.mounter import SystemMounter
from services.node.offloop import Lane

UMOUNT_TIMEOUT = 15.0
GLUSTER_TIMEOUT = 60.0


@dataclass
class TeardownReport:
    """What the teardown did, and what it could not undo."""

    stopped: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    unmounted: list[str] = field(default_factory=list)
    deleted_volumes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Whether nothing was left behind (crashed processes do not count)."""
        return not self.problems

    def text(self) -> str:
        lines = [f"stopped: {', '.join(self.stopped) or '-'}"]
        if self.crashed:
            lines.append(f"had exited before (or failed at) SIGTERM: {', '.join(self.crashed)}")
        if self.unmounted:
            lines.append(f"unmounted leftovers: {', '.join(self.unmounted)}")
        if self.deleted_volumes:
            lines.append(f"deleted leftover gluster volumes: {', '.join(self.deleted_volumes)}")
        lines.extend(f"PROBLEM: {p}" for p in self.problems)
        return "\n".join(lines)


def _under(path: str, base: Path) -> bool:
    root = str(base)
    return path == root or path.startswith(root.rstrip("/") + "/")


def mounts_under(base: Path) -> list[mountinfo.Mount]:
    """Mounts whose mount point lies in `base` (or is it), newest first."""
    found = [m for m in mountinfo.read() if _under(m.mount_point, base)]
    return sorted(found, key=lambda m: m.mount_id, reverse=True)


async def unmount_all_under(base: Path, report: TeardownReport,
                            keep: Path | None = None) -> None:
    """Unmount everything mounted in `base` (except in `keep`), newest first, the way the
    node plugin does."""
    mounter = SystemMounter()
    tree = Tree(str(base), Lane("teardown", 4), UMOUNT_TIMEOUT)
    for mount in mounts_under(base):
        if keep is not None and _under(mount.mount_point, keep):
            continue
        try:
            async with tree.place(mount.mount_point, "mount point") as place:
                if await mounter.unmount(place, UMOUNT_TIMEOUT):
                    report.unmounted.append(mount.mount_point)
        except Exception as exc:
            report.problems.append(f"unmounting {mount.mount_point}: {exc}")
    left = [m for m in mounts_under(base)
            if keep is None or not _under(m.mount_point, keep)]
    if left:
        report.problems.append("still mounted: " + ", ".join(m.mount_point for m in left))


async def gluster_volumes_with_bricks_under(base: Path) -> list[str]:
    """Names of gluster volumes (on this glusterd) with at least one brick in `base`."""
    argv = ["gluster", "--mode=script", "--xml", "volume", "info"]
    try:
        result = await run_command(argv, GLUSTER_TIMEOUT)
    except CommandTimeout as exc:
        raise RuntimeError(f"gluster volume info: {exc}") from None
    if result.returncode != 0:
        raise RuntimeError(f"gluster volume info: {result.output}")
    root = ET.fromstring(result.output)
    names = []
    for volume in root.iterfind("volInfo/volumes/volume"):
        for brick in volume.iterfind("bricks/brick"):
            _host, _, path = (brick.findtext("name") or "").partition(":")
            if path and _under(path, base):
                names.append(volume.findtext("name") or "")
                break
    return [n for n in names if n]
