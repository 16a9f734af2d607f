"""Read the mount table from /proc/self/mountinfo (never from the output of `mount`).

Line format (proc(5)):

    36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2)(3)   (4)   (5)         (6)      (7)...    (8)(9)  (10)      (11)

Paths and the source are written with octal escapes for space, tab, newline and backslash
(`\\040`, `\\011`, `\\012`, `\\134`). A bind mount shows the same device (major:minor) and the
same root as the mount it was made from, which is how the binds of a staging mount are found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
GLUSTER_FSTYPE = "fuse.glusterfs"

_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """Undo the kernel's octal escaping of a mountinfo field."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]
    # "shared:N" of the optional fields: the peer group whose members receive each other's
    # mounts and unmounts (None: not shared).
    peer_group: int | None = None

    @property
    def device(self) -> tuple[int, int]:
        return (self.major, self.minor)

    @property
    def readonly(self) -> bool:
        """Whether this mount (not the superblock) is read-only."""
        return "ro" in self.options

    def same_origin(self, other: Mount) -> bool:
        """Whether both show the same filesystem tree (one is a bind of the other, or both
        binds of a third)."""
        return self.device == other.device and self.root == other.root


class MountinfoError(ValueError):
    """A mountinfo line that does not follow the documented format."""


def parse_line(line: str) -> Mount:
    fields = line.rstrip("\n").split(" ")
    try:
        sep = fields.index("-", 6)
        major, minor = fields[2].split(":")
        return Mount(
            mount_id=int(fields[0]),
            parent_id=int(fields[1]),
            major=int(major),
            minor=int(minor),
            root=unescape(fields[3]),
            mount_point=unescape(fields[4]),
            options=tuple(fields[5].split(",")),
            fstype=fields[sep + 1],
            source=unescape(fields[sep + 2]),
            super_options=tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else (),
            peer_group=next(
                (int(f[7:]) for f in fields[6:sep] if f.startswith("shared:")), None
            ),
        )
    except (ValueError, IndexError) as exc:
        raise MountinfoError(f"unparseable mountinfo line: {line!r}") from exc


def parse(text: str) -> list[Mount]:
    return [parse_line(line) for line in text.splitlines() if line.strip()]


def read(path: Path = MOUNTINFO) -> list[Mount]:
    """The current mount table of this process's mount namespace, in mount order.

    Reading procfs does not touch the mounted filesystems, so this never hangs on a dead
    network mount.
    """
    return parse(path.read_text(encoding="utf-8", errors="surrogateescape"))


def mount_at(mounts: Iterable[Mount], path: str) -> Mount | None:
    """The mount visible at `path` when several are stacked there (the last one), or None."""
    found = None
    for mount in mounts:
        if mount.mount_point == path:
            found = mount
    return found


def count_at(mounts: Iterable[Mount], path: str) -> int:
    return sum(1 for mount in mounts if mount.mount_point == path)


def binds_of(mounts: Iterable[Mount], origin: Mount, under: str | None = None) -> list[Mount]:
    """Mounts showing the same tree as `origin` (its bind mounts), other than `origin`
    itself, optionally only those whose mount point lies below the directory `under`."""
    prefix = None if under is None else under.rstrip("/") + "/"
    return [
        mount
        for mount in mounts
        if mount.same_origin(origin)
        and mount.mount_id != origin.mount_id
        and (prefix is None or mount.mount_point.startswith(prefix))
    ]


def gluster_mounts_under(mounts: Iterable[Mount], directory: str) -> list[Mount]:
    prefix = directory.rstrip("/") + "/"
    return [m for m in mounts if m.fstype == GLUSTER_FSTYPE and m.mount_point.startswith(prefix)]
