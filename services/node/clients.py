"""Where the gluster FUSE clients run: cgroups of the node's own, outside the node container.

A process the node container starts is a member of the container's cgroups, and when the
container stops (a restart, an upgrade, a deleted pod) the runtime kills every member of
them: with the clients inside, every FUSE mount of the node would answer `Transport endpoint
is not connected` after each node plugin restart. So each client runs in a cgroup of its
own, one per staging path, beside the Kubernetes hierarchy in every cgroup hierarchy the host
mounts: `<root>/<hierarchy>/heketi-csi/<driver>/stage-<hash>`, where `<root>` is the host's
`/sys/fs/cgroup` as the node container sees it (`--client-cgroup-root`). Neither the runtime
nor kubelet looks there, and the client outlives the container; the node container shares
the host's PID namespace, so the next node finds it (docs/node-recovery.md).

The mount helper joins the cgroup before anything else: mount(8) runs under `cgexec.py`,
which writes its own pid to each `cgroup.procs` and then execs it, and mount.glusterfs and
the client it daemonizes inherit the membership. Nothing is started in the container and
moved out afterwards, so a client is never, not even briefly, one the runtime would kill.

The cgroup of a staging path also says which processes belong to that path (`pids`): a
restarted node finds its predecessor's clients and unfinished mount helpers there, and
`kill` + `remove` end them once their mount is gone. Every call here touches only cgroupfs
(in memory, never a mounted network filesystem); they block briefly and run in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from services.node import cgexec, mountinfo

GROUP_PREFIX = "stage-"
_CGROUP_FSTYPES = frozenset({"cgroup", "cgroup2"})
# v1 cpuset cgroups start with no CPUs and no memory nodes, and refuse members until both
# are set: a new one gets its parent's.
_CPUSET_FILES = ("cpuset.cpus", "cpuset.mems")


class CgroupError(OSError):
    """A cgroup of ours cannot be created, joined or removed."""


@dataclass(frozen=True)
class ClientCgroups:
    """The cgroups of the gluster clients: `<hierarchy>/<parent>/<group>` in each hierarchy."""

    hierarchies: tuple[Path, ...]
    parent: str  # e.g. heketi-csi/glusterfs.heketi.csi.io

    @classmethod
    def find(cls, root: str, driver_name: str, mounts_file: Path = mountinfo.MOUNTINFO
             ) -> ClientCgroups:
        """The cgroup hierarchies mounted at or below `root` (blocking; procfs only)."""
        prefix = root.rstrip("/") + "/"
        found = sorted(
            Path(m.mount_point)
            for m in mountinfo.read(mounts_file)
            if m.fstype in _CGROUP_FSTYPES
            and (m.mount_point == root.rstrip("/") or m.mount_point.startswith(prefix))
        )
        if not found:
            raise CgroupError(errno.ENOENT, f"no cgroup hierarchy is mounted at or below {root}")
        return cls(tuple(found), f"heketi-csi/{driver_name}")

    def _dirs(self, group: str) -> list[Path]:
        return [h / self.parent / group for h in self.hierarchies]

    def create(self, group: str) -> list[str]:
        """Create `group` in every hierarchy (idempotent); return its cgroup.procs files."""
        procs = []
        for hierarchy in self.hierarchies:
            path = hierarchy
            for part in (*self.parent.split("/"), group):
                child = path / part
                try:
                    child.mkdir()
                except FileExistsError:
                    pass
                else:
                    _inherit_cpuset(path, child)
                path = child
            procs.append(str(path / "cgroup.procs"))
        return procs

    def exec_prefix(self, group: str) -> list[str]:
        """argv prefix that runs a command as a member of `group` (creating it)."""
        return [sys.executable, "-I", "-S", cgexec.__file__, *self.create(group), "--"]

    def pids(self, group: str) -> list[int]:
        """Members of `group` in any hierarchy (zombies are no members)."""
        found: set[int] = set()
        for directory in self._dirs(group):
            try:
                text = (directory / "cgroup.procs").read_text()
            except FileNotFoundError:
                continue
            found.update(int(line) for line in text.split())
        return sorted(found)

    def groups(self) -> list[str]:
        """The groups that exist in any hierarchy."""
        names: set[str] = set()
        for hierarchy in self.hierarchies:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                names.update(
                    entry.name
                    for entry in (hierarchy / self.parent).iterdir()
                    if entry.is_dir() and entry.name.startswith(GROUP_PREFIX)
                )
        return sorted(names)

    def kill(self, group: str) -> list[int]:
        """SIGKILL every member of `group`; return their pids."""
        pids = self.pids(group)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def remove(self, group: str) -> None:
        """Remove `group` from every hierarchy; CgroupError while it has members."""
        for directory in self._dirs(group):
            try:
                directory.rmdir()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise CgroupError(exc.errno, f"cannot remove cgroup {directory}: "
                                  f"{exc.strerror}") from None


def _inherit_cpuset(parent: Path, child: Path) -> None:
    for name in _CPUSET_FILES:
        source = parent / name
        if (child / name).exists() and source.exists() and not (child / "cgroup.controllers"
                                                                 ).exists():
            (child / name).write_text(source.read_text())
